#!/usr/bin/env bash
# Estimated vs measured cost of a probe hit per placement class (issue 14): builds the agent,
# xolctl and the hit workload, then runs bench/cost/run.py (root), which writes
# bench/cost/results.txt. Arguments go to run.py (--rounds=N, --seconds=S).
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build --jobs=2 //services/agent:xolfleet-agent //services/cli:xolctl \
  //tests/workloads:hit_workload 2>&1 | grep -vE '^(INFO|Loading|Analyzing)' || true
exec python3 bench/cost/run.py --no-build "$@"
