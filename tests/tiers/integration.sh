#!/usr/bin/env bash
# Tier "integration": Bazel tests tagged "integration": the real agent over real gRPC
# sockets, real uprobes and BPF on this machine's kernel (root).
exec "$(dirname "$0")/bazel_tier.sh" integration 'attr(tags, "integration", tests(//...))'
