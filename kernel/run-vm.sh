#!/usr/bin/env bash
# Boot the xolfleet guest kernel under qemu (TCG, 2 vCPUs) with an initramfs
# holding busybox and the statically linked in-guest tests, and run them.
#
#   kernel/run-vm.sh [--mode test|bench|xmc|dbcount] [--kernel bzImage] [--log file]
#                    [--timeout seconds] [--smp n] [--distro]
#                    [--tcg-thread multi|single] [--qemu-log file]
#                    [--cmdline "extra kernel args"] [--workdir dir]
#
# --distro boots the distribution-like kernel (kernel/build.sh --distro) with
# -smp 2,maxcpus=64 (64 possible CPUs, 2 online) and adds the 32-bit test
# binary xoltest32 (gcc -m32, gcc-multilib) to the initramfs.
#
# --mode xmc runs kernel/tests/xmctest.c (cross-modifying code done by user
# space alone, no uprobes: tells an emulator artefact from a kernel bug);
# --mode dbcount-on|dbcount-off calls every executable probe site of xoltest
# once, boosting on or off (count the #DB exceptions with --qemu-log);
# --mode libplace probes every offset of each --add FILE listed in FILE.offs.
# --add FILE copies FILE (and FILE.offs if present) into the guest's /lib/xl/.
# --tcg-thread picks qemu's TCG threading (default multi: one host thread per
# vCPU, as CI runs; single: round-robin), also XOL_TCG_THREAD.
# --mode kvm runs the KVM_RUN test alone (needs the --distro kernel: KVM, AMD SVM,
# which qemu's TCG emulates under -cpu max).
# --mode soak runs "xoltest soak" (kernel/soak.sh); --cmdline appends kernel
# arguments (e.g. xolsoak=hits,migrations,seconds,signal_us, read by init);
# --workdir puts the initramfs there instead of the kernel cache (also XOL_WORK).
# --mode genbench runs "xoltest genbench" (bench/kernel/slotgen.sh; --cmdline
# xolgenbench=seconds,rounds).
# --one-insn-per-tb runs qemu with -singlestep (7.2's name for one guest
# instruction per translation block): TCG takes interrupts only between blocks,
# so without it an interrupt never lands between two instructions of one block,
# e.g. inside a slot program.  Several times slower.
# --qemu-log FILE adds "-d int -D FILE": every exception the guest takes
# (v=01 is #DB, v=03 #BP), to count single-steps exactly.
#
# The guest console goes to the log file (and to stdout).  Exit status 0 only
# if the guest printed "XOL-DONE rc=0" and the console shows no kernel splat
# (WARNING, BUG, Oops, Call Trace, panic, lockdep or sleep-in-atomic reports).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
mode=test kernel= log= timeout=${XOL_TIMEOUT:-900} smp= distro=0
tcg_thread=${XOL_TCG_THREAD:-multi} qlog= adds=() cmdline= work=${XOL_WORK:-} one_insn=0
while (($#)); do
  case $1 in
  --mode) mode=$2; shift 2 ;;
  --kernel) kernel=$2; shift 2 ;;
  --log) log=$2; shift 2 ;;
  --timeout) timeout=$2; shift 2 ;;
  --smp) smp=$2; shift 2 ;;
  --distro) distro=1; shift ;;
  --tcg-thread) tcg_thread=$2; shift 2 ;;
  --qemu-log) qlog=$2; shift 2 ;;
  --add) adds+=("$2"); shift 2 ;;
  --cmdline) cmdline=$2; shift 2 ;;
  --workdir) work=$2; shift 2 ;;
  --one-insn-per-tb) one_insn=1; shift ;;
  *) echo "run-vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
sfx=
((distro)) && sfx=-distro
[[ -n $kernel ]] || kernel=$CACHE/build-patched$sfx/arch/x86/boot/bzImage
[[ -n $smp ]] || { ((distro)) && smp=2,maxcpus=64 || smp=2; }
[[ -n $log ]] || log=${XOL_LOG:-$CACHE/console-$mode$sfx.log}
log() { printf '[kernel/run-vm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[[ -f $kernel ]] || { log "no kernel at $kernel (run kernel/build.sh)"; exit 2; }

# initramfs: busybox + tests, rebuilt each run (a second or two)
[[ -n $work ]] || work=$CACHE
mkdir -p "$work"
root=$work/initramfs
rm -rf "$root" && mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
# The placement corpus shared with the userspace classifier, when present.
corpus=${XOL_CORPUS:-$here/../tests/corpus/placement_corpus.tsv}
gen=$work/gen && rm -rf "$gen" && mkdir -p "$gen"
extra=()
if [[ -f $corpus ]]; then
  bash "$here/tests/gen-corpus.sh" "$corpus" "$gen"
  extra=(-DHAVE_CORPUS -I"$gen" "$gen/corpus.S")
else
  log "no placement corpus at $corpus: hand-written sites only"
fi
gcc -static -O2 -pthread -Wall -Wno-missing-field-initializers \
  -o "$root/bin/xoltest" "$here/tests/xoltest.c" "$here/tests/sites.S" "${extra[@]}"
if ((distro)); then
  # 32-bit tasks: the distribution-like kernel has IA32_EMULATION (init runs it if present)
  gcc -m32 -static -O2 -pthread -Wall -o "$root/bin/xoltest32" "$here/tests/xoltest32.c" || {
    log "cannot build the 32-bit test (gcc-multilib missing? scripts/setup.sh installs it)"
    exit 2
  }
fi
gcc -static -O2 -pthread -Wall -o "$root/bin/xmctest" "$here/tests/xmctest.c"
install -m 0755 "$here/tests/init" "$root/init"
if ((${#adds[@]})); then
  mkdir -p "$root/lib/xl"
  for f in "${adds[@]}"; do
    cp -L "$f" "$root/lib/xl/" && [[ ! -f $f.offs ]] || cp "$f.offs" "$root/lib/xl/"
  done
fi
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"

mkdir -p "$(dirname "$log")"
qopt=()
[[ -n $qlog ]] && qopt=(-d int -D "$qlog")
((one_insn)) && qopt+=(-singlestep)
log "booting $(basename "$kernel") mode=$mode smp=$smp tcg=$tcg_thread${qopt[*]:+ ${qopt[*]}} timeout=${timeout}s, console -> $log"
set +e
timeout --foreground -k 10 "$timeout" qemu-system-x86_64 "${qopt[@]}" \
  -accel tcg,thread="$tcg_thread" -smp "$smp" -m 2048 -cpu max \
  -kernel "$kernel" -initrd "$work/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 xolmode=$mode${cmdline:+ $cmdline}" \
  -display none -monitor none -serial stdio -no-reboot </dev/null 2>&1 | tee "$log"
qrc=${PIPESTATUS[0]}
set -e
((qrc == 124)) && log "TIMEOUT after ${timeout}s"

rc=0
if ! grep -q 'XOL-DONE rc=0' "$log"; then
  log "guest did not report success (qemu rc=$qrc)"
  rc=1
fi
splat='WARNING:|BUG:|Oops|Call Trace|Kernel panic|general protection fault|INFO: task .* blocked|sleeping function called|possible recursive locking|inconsistent lock state|circular locking'
if grep -Eq "$splat" "$log"; then
  log "kernel splat in console:"
  grep -En "$splat" "$log" | head -5 >&2
  rc=1
fi
exit $rc
