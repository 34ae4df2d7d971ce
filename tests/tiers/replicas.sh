#!/usr/bin/env bash
# Tier "replicas": controller replicas on etcd (issue 13): a three-member etcd cluster,
# three controller replicas and three real agents in network namespaces over mTLS; the
# checks are in tests/replicas/run.py, on the harness in tests/harness/. Needs root.
# Prints RESULT lines; exits non-zero on failure.
cd "$(dirname "$0")/../.." && exec python3 -u tests/replicas/run.py "$@"
