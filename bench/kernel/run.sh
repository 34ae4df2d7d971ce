#!/usr/bin/env bash
# Uprobe per-hit cost by placement, boosting on and off, in one boot of the
# patched 6.1 guest (qemu TCG): emulated, boosted, boosted rip-relative and
# single-stepped sites, as ratios against the emulated site of the same run;
# then hits per second with 64 threads on one site, boost on vs off.
# Prints the table and saves it to bench/kernel/results.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
out=$root/bench/kernel/results.txt
log=$CACHE/console-bench.log
nice -n 10 bash "$root/kernel/build.sh" >/dev/null
bash "$root/kernel/run-vm.sh" --mode bench --log "$log" --timeout "${XOL_TIMEOUT:-900}" >/dev/null
{
  echo "# bench/kernel/run.sh, $(date -u +%Y-%m-%dT%H:%MZ), guest $(grep -ao 'kernel=[^ ]*' "$log" | head -1 | tr -d '\r'), qemu TCG -smp 2, host $(nproc) cores"
  echo "# Per-hit cost = (time of N probed calls - time of N unprobed calls) / N, uprobe_events consumer."
  echo "# TCG timings are not hardware timings: compare rows of one run, not runs."
  grep -a '^BENCH' "$log" | tr -d '\r' | sed 's/^BENCH //'
} >"$out"
# Optional reference: the same program on pristine 6.1 (kernel/build.sh --stock), where
# both columns are stock behaviour (no sysctl) and each hit rewrites a bitmap-allocated slot.
stock=$CACHE/build-stock/arch/x86/boot/bzImage
if [[ ${XOL_BENCH_STOCK:-auto} != 0 && -f $stock ]]; then
  bash "$root/kernel/run-vm.sh" --mode bench --kernel "$stock" --log "$CACHE/console-bench-stock.log" \
    --timeout "${XOL_TIMEOUT:-900}" >/dev/null || true
  {
    echo
    echo "# Reference run on pristine Debian 6.1 (kernel/build.sh --stock), separate boot: both columns are stock."
    grep -a '^BENCH' "$CACHE/console-bench-stock.log" | tr -d '\r' | sed 's/^BENCH /stock-6.1 /'
  } >>"$out"
fi
cat "$out"
