#!/usr/bin/env bash
# Agent benchmarks (root, this machine's kernel): attach+detach of 100 / 1,000 libc and
# 10,000 libc+libstdc+++libgrpc function-entry probes against bpftrace 0.17 on the same
# sites, WatchHits throughput with every event accounted for, agent RSS with 10,000 probes.
# Prints a table and writes bench/agent/results.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //bench/agent:agent_bench //services/agent:xolfleet-agent //tests/workloads:hit_workload \
  2>&1 | grep -vE '^(INFO|Loading|Analyzing)' || true
export RUNFILES_DIR=$PWD/bazel-bin/bench/agent/agent_bench.runfiles
exec bazel-bin/bench/agent/agent_bench --out=bench/agent/results.txt "$@"
