#!/usr/bin/env bash
# Tier "unit": Bazel tests that are not tagged "integration" (classifier tables, ELF
# resolution, stores, fuzz-corpus regressions, fakes).
exec "$(dirname "$0")/bazel_tier.sh" unit 'tests(//...) except attr(tags, "integration", tests(//...))'
