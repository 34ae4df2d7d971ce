#!/usr/bin/env bash
# Tier "security": authentication and authorization of the agent's API, with real non-root
# users created by the test, real sockets and real uprobes (tests/security/agent_auth.py).
# Needs root. Prints RESULT lines.
set -uo pipefail
cd "$(dirname "$0")/../.."
TMP=$(mktemp -d /tmp/xolfleet-security-bin.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
for b in services/agent/xolfleet-agent services/cli/xolctl services/controller/xolfleet-controller \
  tests/workloads/hit_workload; do
  cp "bazel-bin/$b" "$TMP/" || { echo "RESULT FAIL security-setup missing bazel-bin/$b"; exit 1; }
  # The agent and xolctl run on private libraries kept beside them (services/agent/README.md).
  if [ -d "bazel-bin/$b.private" ]; then cp -rL "bazel-bin/$b.private" "$TMP/"; fi
done
exec python3 tests/security/agent_auth.py "$TMP" scripts/make-test-ca.sh
