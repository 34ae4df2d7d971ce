#!/usr/bin/env bash
# Tier "kernel": builds the patched 6.1 kernel (test and distribution-like configurations)
# and runs the in-guest tests under qemu.
exec "$(dirname "$0")/../kernel/run.sh"
