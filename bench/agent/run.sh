#!/usr/bin/env bash
# Agent benchmarks (root, this machine's kernel): attach+detach of 1,000 libc function-entry
# probes against bpftrace 0.17 on the same sites; 10,000 libc+libstdc+++libgrpc probes through
# xolctl with the agent and xolctl on private libraries and, in the same run, on the system's
# (the baseline); the traps a pid-scoped libc probe costs an unrelated process; WatchHits
# throughput with every event accounted for; agent RSS with 10,000 probes.
# Prints a table and writes bench/agent/results.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //bench/agent:agent_bench //services/agent:xolfleet-agent //services/cli:xolctl \
  //tests/workloads:hit_workload \
  2>&1 | grep -vE '^(INFO|Loading|Analyzing)' || true
export RUNFILES_DIR=$PWD/bazel-bin/bench/agent/agent_bench.runfiles
exec bazel-bin/bench/agent/agent_bench --out=bench/agent/results.txt "$@"
