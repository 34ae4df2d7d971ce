#!/usr/bin/env bash
# Tier "prometheus": a real Prometheus scrapes a controller and two agents; PromQL checks,
# alert rules, Grafana queries, --version. The checks are in tests/prometheus/run.py, on the
# harness in tests/harness/. Needs root. Prints RESULT lines; exits non-zero on failure.
cd "$(dirname "$0")/../.." && exec python3 -u tests/prometheus/run.py "$@"
