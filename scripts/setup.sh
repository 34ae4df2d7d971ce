#!/usr/bin/env bash
# Installs every Debian package xolfleet needs (build, tests, kernel, VM, benchmarks).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail
PKGS=(
  # build
  bazel-bootstrap clang libclang-rt-14-dev llvm lld libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler libabsl-dev prometheus-cpp-dev libbpf-dev libelf-dev zlib1g-dev bpftool
  libzydis-dev libsqlite3-dev libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  # kernel + VM
  linux-source-6.1 bc flex bison cpio busybox-static qemu-system-x86 ccache xz-utils
  gcc-multilib  # 32-bit in-guest tests (kernel/tests/xoltest32.c)
  # kernel packages (kernel/package.sh)
  linux-config-6.1 dpkg-dev fakeroot rsync kmod
  # tests + benchmarks
  prometheus bpftrace iproute2 openssl curl python3 python3-yaml procps
  # etcd: the replicated store (server, etcdctl, and the v3 API .proto files)
  etcd-server etcd-client golang-etcd-server-dev
  # google.rpc.Status / BadRequest .proto files (protos/google_rpc)
  golang-github-grpc-ecosystem-grpc-gateway-dev
  # the image and the container tier (deploy/image/build.sh, tests/container/tier.py)
  podman buildah runc
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/xolfleet-apt.log 2>&1 \
    || { tail -40 /tmp/xolfleet-apt.log; exit 1; }
  # The prometheus package starts a system service on :9090; tests run their own server.
  systemctl disable --now prometheus prometheus-node-exporter 2>/dev/null || true
  pkill -x prometheus 2>/dev/null || true
else
  echo "setup: all ${#PKGS[@]} packages present"
fi
# The Kubernetes schema validator (tests/k8s, unit tier): from the npm registry, exactly
# the versions of tests/k8s/package-lock.json. Node.js from Debian if the machine has none.
if ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm \
    >>/tmp/xolfleet-apt.log 2>&1 || { tail -20 /tmp/xolfleet-apt.log; exit 1; }
fi
k8s=$(dirname "$(readlink -f "$0")")/../tests/k8s
if ! cmp -s "$k8s/package-lock.json" "$k8s/node_modules/.installed-lock.json"; then
  (cd "$k8s" && npm ci --no-audit --no-fund --loglevel=error &&
    cp package-lock.json node_modules/.installed-lock.json) || exit 1
fi
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
