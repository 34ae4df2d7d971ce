#!/usr/bin/env bash
# Unit tier: every manifest in deploy/kubernetes validates against the Kubernetes schema,
# and a manifest with schema errors does not (the validator can fail).
set -euo pipefail
root=${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-xolfleet}
[ -d "$root/deploy" ] || root=.
# node_modules is installed beside the sources (npm ci), not declared to Bazel: find them
# through the runfile's link to the source tree.
src=$(dirname "$(readlink -f "$root/tests/k8s/validate.mjs")")
if [ ! -d "$src/node_modules/kubernetes-models" ]; then
  echo "tests/k8s/node_modules is missing: scripts/setup.sh installs it (npm ci in tests/k8s)"
  exit 1
fi
cd "$src"
node validate.mjs --self-test
manifests=("$root"/deploy/kubernetes/*.yaml)
((${#manifests[@]} >= 4)) || { echo "expected the 4 manifests of deploy/kubernetes"; exit 1; }
node validate.mjs "${manifests[@]}"
