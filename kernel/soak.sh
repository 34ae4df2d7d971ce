#!/usr/bin/env bash
# Soak of the xolfleet uprobes series (issue 8), not part of CI.
#
#   kernel/soak.sh [--hits N] [--migrations N] [--seconds S] [--signal-us US]
#                  [--tcg-thread single|multi] [--smp N] [--one-insn-per-tb]
#                  [--out FILE]
#
# Boots the cached patched kernel (kernel/build.sh returns at once when it is
# cached) with kernel/run-vm.sh --mode soak: "xoltest soak" in the guest runs
# worker threads re-pinned across the vCPUs plus a migrator, calling boosted
# and boosted rip-relative probe sites and a boosted rep movsb (short and
# long), each worker interrupted by its own timer_create() signal every US
# microseconds, every result checked against the unprobed run, until both
# targets are reached (boosted+riprel hits, slot_migrations) or S seconds pass.
# It prints the /sys/kernel/debug/uprobes/stats deltas, the wrong-result count
# and "SOAK PASS"/"SOAK FAIL".  Defaults: 10^7 hits, 10^4 migrations, at most
# 3600 s, a signal every 200 us per worker, qemu thread=single (the qemu 7.2
# MTTCG artefact, kernel/README.md "Known gaps"), 2 vCPUs.  PASS also needs
# forward translations (signals_translated > 0).  qemu's TCG takes interrupts
# only between translation blocks, and a slot program is one block up to its
# jump back, unless its instruction ends the block (rep does): without
# --one-insn-per-tb (qemu -singlestep) the forward translations all come after a
# boosted rep, and the window after any other displaced instruction (the
# rip-relative restore of the scratch register included) is reached only by
# ptrace and watchpoint traps.  The SOAK lines go
# to --out (default: kernel/soak-results.txt is NOT overwritten unless named).
# Exit status 0 only on SOAK PASS with a clean console.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hits=10000000 migr=10000 secs=3600 sig_us=200 tcg=single smp=2 out= one_insn=()
while (($#)); do
  case $1 in
  --hits) hits=$2; shift 2 ;;
  --migrations) migr=$2; shift 2 ;;
  --seconds) secs=$2; shift 2 ;;
  --signal-us) sig_us=$2; shift 2 ;;
  --tcg-thread) tcg=$2; shift 2 ;;
  --smp) smp=$2; shift 2 ;;
  --one-insn-per-tb) one_insn=(--one-insn-per-tb); shift ;;
  --out) out=$2; shift 2 ;;
  *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { printf '[kernel/soak %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

bash "$here/build.sh" >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/xolsoak.XXXXXX")
trap 'rm -rf "$work"' EXIT
console=$work/console.log
start=$(date +%s)
log "soak: $hits hits, $migr migrations, <= ${secs}s, signal every ${sig_us}us, tcg=$tcg smp=$smp${one_insn[*]:+ ${one_insn[*]}}"
set +e
bash "$here/run-vm.sh" --mode soak --tcg-thread "$tcg" --smp "$smp" "${one_insn[@]}" --workdir "$work" \
  --log "$console" --timeout $((secs + 600)) \
  --cmdline "xolsoak=$hits,$migr,$secs,$sig_us" >/dev/null
rc=$?
set -e
end=$(date +%s)
summary() {
  echo "# kernel/soak.sh --hits $hits --migrations $migr --seconds $secs --signal-us $sig_us --tcg-thread $tcg --smp $smp${one_insn[*]:+ ${one_insn[*]}}"
  echo "# run $(date -u -d @"$start" '+%Y-%m-%d %H:%M:%S') UTC, wall time $((end - start)) s (boot and build included), run-vm.sh rc=$rc"
  grep -a '^XOL-BOOT\|^SOAK\|^XOL-DONE' "$console" || echo "# no SOAK output (guest died?)"
}
if [[ -n $out ]]; then summary | tee "$out"; else summary; fi
((rc == 0)) && grep -q '^SOAK PASS' "$console"
