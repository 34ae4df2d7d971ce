#!/usr/bin/env bash
# Unit tier: deploy/ files parse and pass promtool (see check_deploy.py).
set -euo pipefail
root=${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-xolfleet}
[ -d "$root/deploy" ] || root=.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec "$py" "$root/tests/fleet/check_deploy.py" "$root"
