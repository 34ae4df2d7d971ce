#!/usr/bin/env bash
# Tier "fleet": a controller and 3 real agents in network namespaces over mTLS; the checks
# are in tests/fleet/run.py (and reload.py), on the harness in tests/harness/. Needs root.
# Prints RESULT lines; exits non-zero on failure.
cd "$(dirname "$0")/../.." && exec python3 -u tests/fleet/run.py "$@"
