#!/usr/bin/env bash
# Runs the Bazel test targets matching a query and prints one RESULT line per test case.
#   bazel_tier.sh NAME QUERY
set -uo pipefail
cd "$(dirname "$0")/../.."
name=$1 query=$2
targets=$(bazel query "$query" 2>/dev/null | sort)
[ -n "$targets" ] || { echo "RESULT FAIL $name no test targets match $query"; exit 1; }
# Never reuse cached results: integration tests observe the running kernel.
bazel test --nocache_test_results --test_output=errors $targets 2>&1 |
  grep -vE '^(INFO: (From|Analyzed|Found)|Loading|Analyzing)' | tail -n 60
python3 tests/lib/bazel_results.py "$(bazel info bazel-testlogs 2>/dev/null)" $targets
