#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address) straight from the
# sources (Bazel's toolchain here is gcc) and runs each for a bounded time, starting from the
# committed seed corpus. Prints one RESULT line per target.
#   tests/fuzz/run.sh [seconds per target, default 30]
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
out=${XOLFLEET_FUZZ_OUT:-/tmp/xolfleet-fuzz}
mkdir -p "$out"
CXX=${CXX:-clang++}
# Abseil libraries: the same list Bazel links (//third_party:absl), one source of truth.
absl_libs=$(grep -o -- '-labsl_[a-z0-9_]*' third_party/BUILD.bazel | tr '\n' ' ')
common=(services/common/placement.cc services/common/x86_classifier.cc
        services/common/open_file.cc services/common/elf_file.cc
        services/common/site_resolver.cc)
flags=(-std=c++17 -O1 -g -I. -fsanitize=fuzzer,address -fno-omit-frame-pointer)
libs=(-lZydis -lZycore -lelf -lz $absl_libs -lrt -latomic -lpthread)

status=0
for name in classifier elf; do
  bin="$out/fuzz-$name"
  log="$out/fuzz-$name.log"
  if ! $CXX "${flags[@]}" -o "$bin" "tests/fuzz/${name}_fuzzer.cc" "${common[@]}" "${libs[@]}" \
      >"$log.build" 2>&1; then
    echo "RESULT FAIL fuzz-$name build failed: $(grep -m1 -E 'error' "$log.build")"
    status=1
    continue
  fi
  work="$out/corpus-$name"
  mkdir -p "$work"
  # New inputs go to $work; the committed seeds are read only.
  "$bin" "$work" "tests/fuzz/corpus/$name" -max_total_time="$secs" -timeout=5 \
    -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$out/$name-" -print_final_stats=1 \
    >"$log" 2>&1
  rc=$?
  execs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  if [ $rc -eq 0 ]; then
    echo "RESULT PASS fuzz-$name (${secs}s, ${execs:-?} executions, corpus $(ls "$work" | wc -l) new)"
  else
    crash=$(ls -t "$out/$name-"* 2>/dev/null | head -1)
    echo "RESULT FAIL fuzz-$name exit $rc: $(grep -m1 -E 'ERROR|SUMMARY|deadly' "$log") ${crash:+artifact $crash}"
    status=1
  fi
done
exit $status
