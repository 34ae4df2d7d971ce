#!/usr/bin/env bash
# Concurrent boosted hits of one process on every vCPU, two kernels compared in
# alternating boots (issue 8 item 9: the per-mm slot generation array).
#
#   bench/kernel/slotgen.sh --before BZIMAGE [--after BZIMAGE] [--pairs N]
#                           [--seconds S] [--rounds R] [--tcg-thread multi|single]
#                           [--out FILE]
#
# --after defaults to the cached series kernel (kernel/build.sh, built if needed);
# --before is the kernel to compare with, e.g. one built with kernel/build.sh
# --upto 12 in another XOL_CACHE (the series without patch 13).  Boots are ordered before, after, after, before,
# before, after, ... (N pairs), so a drift of the host load weighs on both kernels
# alike.  Each boot runs "xoltest genbench S R" (kernel/tests/xoltest.c): R rounds
# of S seconds each of one thread on CPU 0 ("one"), a thread per vCPU of one
# process ("threads") and a process per vCPU ("procs"), one boosted probe, hits/s.
# qemu runs thread=multi by default: each vCPU is a host thread, so guest
# cache-line sharing is host cache-line sharing.  Prints per boot the medians and
# per pair the after/before ratios; the summary (median and min-max over pairs)
# goes to --out (default bench/kernel/slotgen.txt).  TCG figures: compare ratios
# of one run, not absolutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
before= after= pairs=3 secs=2 rounds=4 tcg=multi out=$root/bench/kernel/slotgen.txt
while (($#)); do
  case $1 in
  --before) before=$2; shift 2 ;;
  --after) after=$2; shift 2 ;;
  --pairs) pairs=$2; shift 2 ;;
  --seconds) secs=$2; shift 2 ;;
  --rounds) rounds=$2; shift 2 ;;
  --tcg-thread) tcg=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  *) echo "slotgen.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -f $before ]] || { echo "slotgen.sh: --before BZIMAGE is required" >&2; exit 2; }
if [[ -z $after ]]; then
  nice -n 10 bash "$root/kernel/build.sh" >&2
  after=$CACHE/build-patched/arch/x86/boot/bzImage
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/xolslotgen.XXXXXX")
trap 'rm -rf "$work"' EXIT
log() { printf '[bench/slotgen %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# qemu_ticks PID: user+system clock ticks of the qemu process, all its threads (the
# vCPU threads are nearly all of it: qemu 7.2 names them only with -name debug-threads=on)
qemu_ticks() {
  sed 's/^.*) //' /proc/"$1"/stat | awk '{ print $12 + $13 }'
}

# boot KIND N: one genbench run.  While it runs, qemu's CPU time is read
# at each "GENBENCH mark start/stop" the guest prints around a measured phase, so
# every phase has its hits, its wall time and the host CPU time qemu used (a vCPU
# thread waiting for a host core uses none: the CPU time per hit is what host load
# disturbs least).  Appends to medians.txt "KIND" and the medians over rounds of
# hits/s and of host CPU us per hit, for one, threads and procs.
boot() {
  local kind=$1 n=$2 img console vm q line t0=0 rc
  [[ $kind == before ]] && img=$before || img=$after
  console=$work/console-$kind-$n.log
  : >"$console"
  : >"$work/ticks"
  log "boot $n: $kind ($img), load $(cut -d' ' -f1-3 /proc/loadavg)"
  bash "$root/kernel/run-vm.sh" --mode genbench --kernel "$img" --tcg-thread "$tcg" \
    --workdir "$work/vm" --log "$console" --timeout $((300 + 6 * secs * rounds)) \
    --cmdline "xolgenbench=$secs,$rounds" >/dev/null &
  vm=$!
  q=
  while [[ -z $q ]] && kill -0 "$vm" 2>/dev/null; do
    q=$(pgrep -f "^qemu-system-x86_64 .*-initrd $work/vm/initramfs" | head -1) || true
    sleep 0.2
  done
  if [[ -n $q ]]; then
    while IFS= read -r line; do
      case ${line%$'\r'} in
      "GENBENCH mark start") t0=$(qemu_ticks "$q") ;;
      "GENBENCH mark stop") echo $(($(qemu_ticks "$q") - t0)) >>"$work/ticks" ;;
      esac
    done < <(tail --pid="$vm" -s 0.02 -F -n +1 "$console" 2>/dev/null)
  fi
  rc=0
  wait "$vm" || rc=$?
  if ((rc != 0)); then
    log "boot $n ($kind) failed, console: $root/bench/kernel/$(basename "$console")"
    cp "$console" "$root/bench/kernel/"
    exit 1
  fi
  grep -a '^GENBENCH' "$console" | tr -d '\r' | grep -v 'mark' | sed "s/^/$kind /" >>"$work/all.txt"
  # phase lines in order, paired with the CPU ticks read around them
  paste <(grep -a '^GENBENCH phase' "$console" | tr -d '\r' | awk '{ print $3, $5, $7 }') \
    "$work/ticks" |
    awk -v k="$kind" -v hz="$(getconf CLK_TCK)" '
      function med(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      NF == 4 { m = $1; n[m]++; w[m, n[m]] = $2 / $3; c[m, n[m]] = $4 / hz * 1e6 / $2
                printf "%s phase %s hits %d secs %s qemu_cpu_s %.2f hits/s %.0f cpu_us/hit %.2f\n", k, m, $2, $3, $4 / hz, $2 / $3, $4 / hz * 1e6 / $2 >"/dev/stderr" }
      END {
        for (m = 0; m < 3; m++) { for (i = 1; i <= n[m]; i++) { x[i] = w[m, i]; y[i] = c[m, i] }
                                  mw[m] = med(x, n[m]); mc[m] = med(y, n[m]) }
        printf "%s %.0f %.0f %.0f %.2f %.2f %.2f\n", k, mw[0], mw[1], mw[2], mc[0], mc[1], mc[2]
      }' 2>>"$work/phases.txt" >>"$work/medians.txt"
}

loads=()
for ((p = 1; p <= pairs; p++)); do
  if ((p % 2)); then order=(before after); else order=(after before); fi
  for k in "${order[@]}"; do
    loads+=("$(cut -d' ' -f1 /proc/loadavg)")
    boot "$k" "$p"
  done
done

{
  echo "# bench/kernel/slotgen.sh, $(date -u +%Y-%m-%dT%H:%MZ), $pairs pairs of boots (before/after alternated), genbench $secs s x $rounds rounds per mode, qemu TCG thread=$tcg -smp 2, host $(nproc) cores"
  echo "# before: $before"
  echo "# after:  $after"
  echo "# host 1-min load average at each boot: ${loads[*]} (other sessions' work; runs niced)"
  echo "# per boot, medians over rounds: kind, hits/s (one threads procs), host CPU us of qemu per hit (one threads procs)"
  cat "$work/medians.txt"
  awk '
    { k[NR] = $1; for (i = 2; i <= 7; i++) v[NR, i] = $i }
    function stat(name, a, n,   i, j, t, s) {
      for (i = 1; i <= n; i++) s[i] = a[i]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
      printf "%-52s median %.3f  min %.3f  max %.3f  (n=%d)\n", name, (n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2, s[1], s[n], n
    }
    END {
      n = 0
      for (i = 1; i < NR; i += 2) {
        b = (k[i] == "before") ? i : i + 1; a = (k[i] == "before") ? i + 1 : i
        n++
        for (c = 2; c <= 7; c++) r[c, n] = v[a, c] / v[b, c]
        eb[n] = v[b, 6] / v[b, 5]; ea[n] = v[a, 6] / v[a, 5]
      }
      split("x one threads procs one threads procs", nm, " ")
      for (c = 2; c <= 7; c++) {
        for (j = 1; j <= n; j++) x[j] = r[c, j]
        stat(sprintf("after/before, %s %s", c <= 4 ? "hits/s" : "CPU us per hit", nm[c]), x, n)
      }
      stat("CPU per hit threads/one, before", eb, n)
      stat("CPU per hit threads/one, after", ea, n)
    }' "$work/medians.txt"
  echo "# every phase: kind, mode (0 one, 1 threads, 2 procs), hits, wall s, qemu CPU s"
  cat "$work/phases.txt"
  echo "# raw GENBENCH lines"
  cat "$work/all.txt"
} >"$out"
cat "$out"
