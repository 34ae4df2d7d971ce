#!/usr/bin/env bash
# Tier "node": the mixed fleet. A controller, an agent on this host's stock kernel and one in
# a qemu guest booted from the packaged patched kernel of kernel/, a real Prometheus, in a
# network namespace with the guest's tap device. The checks are in tests/node/run.py, on the
# harness in tests/harness/ (qemu.py: the guest). Needs root. Prints RESULT lines; exits
# non-zero on failure.
cd "$(dirname "$0")/../.." && exec python3 -u tests/node/run.py "$@"
