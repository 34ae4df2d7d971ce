#!/usr/bin/env bash
# Tier "container": builds the image and runs the controller and the agent with podman
# exactly as deploy/kubernetes/ says, on a private container store; the checks are in
# tests/container/tier.py, on the harness in tests/harness/. Needs root.
# Prints RESULT lines; exits non-zero on failure.
cd "$(dirname "$0")/../.." && exec python3 -u tests/container/tier.py "$@"
