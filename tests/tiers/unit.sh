#!/usr/bin/env bash
# Tier "unit": every Bazel test target (unit tests, fuzz regression runs), one RESULT line
# per test case.
set -uo pipefail
cd "$(dirname "$0")/../.."
targets=$(bazel query 'tests(//...)' 2>/dev/null | sort)
[ -n "$targets" ] || { echo "RESULT FAIL unit no test targets found"; exit 1; }
bazel test --test_output=errors $targets 2>&1 | grep -vE '^(INFO: (From|Analyzed|Found)|Loading|Analyzing)' | tail -n 40
python3 tests/lib/bazel_results.py "$(bazel info bazel-testlogs 2>/dev/null)" $targets
