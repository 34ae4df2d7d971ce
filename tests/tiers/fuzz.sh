#!/usr/bin/env bash
# Tier "fuzz": libFuzzer (clang) on the classifier and the ELF reader, bounded time each.
exec "$(dirname "$0")/../fuzz/run.sh" "$@"
