#!/usr/bin/env bash
# How much still single-steps on the patched kernel, measured in the guest:
#  1. the executable probe sites of kernel/tests (xoltest's calls[]): each called
#     once with a probe, boosting on then off (two boots); the #DB exceptions
#     (v=01) qemu logs with "-d int" are the single-steps, checked against the
#     kernel's own hits_single_step;
#  2. every function entry of the host's libc, libstdc++, libgrpc, libssl and
#     libpython3.11 (those present): a uprobe on each (offsets from the
#     dynamic and static symbol tables), placement as the kernel reports it
#     (debugfs placements), share single-stepped, boosting on and off.
# Writes bench/kernel/sstep.txt.  XOL_CACHE as for kernel/build.sh.
#
#   bench/kernel/sstep.sh --series-upto N
# measures the same on the kernel with only patches 1..N of the series
# (kernel/build.sh --upto N; e.g. 10: before patches 11 and 12; sstep-upto7.txt
# was measured with the 9-patch numbering, its patches 1-7 are today's 2-10) and writes
# bench/kernel/sstep-upto<N>.txt instead.  That kernel is built in its own
# cache, XOL_CACHE or else /var/cache/xolfleet/kernel-upto<N>, so the full
# series' build is left alone; compiles still go through the default cache's
# ccache unless CCACHE_DIR says otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
upto=
while (($#)); do
  case $1 in
  --series-upto)
    [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "sstep.sh: --series-upto needs a patch number" >&2; exit 2; }
    upto=$((10#$2)); shift 2 ;;
  *) echo "sstep.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
out=$root/bench/kernel/sstep.txt
build=()
if [[ -n $upto ]]; then
  export XOL_CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel-upto$upto}
  export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
  out=$root/bench/kernel/sstep-upto$upto.txt
  build=(--upto "$upto")
fi
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
nice -n 10 bash "$root/kernel/build.sh" "${build[@]}" >/dev/null

# 1. #DB per executable site
for b in on off; do
  bash "$root/kernel/run-vm.sh" --mode dbcount-$b --log "$tmp/db-$b.log" --qemu-log "$tmp/int-$b.log" \
    --timeout "${XOL_TIMEOUT:-900}" >/dev/null
  printf '%s %s %s\n' "$b" "$(grep -c ' v=01 ' "$tmp/int-$b.log" || true)" \
    "$(grep -a '^DBCOUNT boost' "$tmp/db-$b.log" | tr -d '\r')" >>"$tmp/db.txt"
done

# 2. function entries of the libraries
adds=()
for name in libc.so.6 libstdc++.so.6 libgrpc.so libssl.so.3 libpython3.11.so.1.0; do
  # awk reads all of ldconfig's output: an early exit gets ldconfig a SIGPIPE, and with
  # pipefail and set -e that ended the script.
  lib=$(ldconfig -p | awk -v n="$name" '$1 == n && /x86-64/ && !found { print $NF; found = 1 }')
  [[ -n $lib && -f $lib ]] || continue
  real=$(readlink -f "$lib")
  cp "$real" "$tmp/"
  python3 - "$real" >"$tmp/$(basename "$real").offs" <<'PY'
import re, subprocess, sys
lib = sys.argv[1]
loads = []
for l in subprocess.run(["readelf", "-lW", lib], capture_output=True, text=True).stdout.splitlines():
    f = l.split()
    if f and f[0] == "LOAD":
        loads.append((int(f[2], 16), int(f[1], 16), int(f[5], 16), "E" in f[6:-1]))
seen = set()
syms = subprocess.run(["readelf", "-sW", "--dyn-syms", lib], capture_output=True, text=True).stdout
for l in syms.splitlines():
    f = l.split()
    if len(f) < 8 or f[3] != "FUNC" or f[6] == "UND" or not re.match(r"^[0-9a-f]+$", f[1]):
        continue
    va = int(f[1], 16)
    for vaddr, off, memsz, x in loads:
        if x and vaddr <= va < vaddr + memsz:
            o = va - vaddr + off
            if o not in seen:
                seen.add(o)
                print("%x" % o)
PY
  adds+=(--add "$tmp/$(basename "$real")")
done
bash "$root/kernel/run-vm.sh" --mode libplace "${adds[@]}" --log "$tmp/lib.log" \
  --timeout "${XOL_TIMEOUT:-1800}" >/dev/null || true

{
  echo "# bench/kernel/sstep.sh${upto:+ --series-upto $upto}, $(date -u +%Y-%m-%dT%H:%MZ), guest $(grep -ao 'kernel=[^ ]*' "$tmp/lib.log" | head -1 | tr -d '\r'), qemu TCG -smp 2"
  [[ -z $upto ]] || echo "# series: $(cd "$root/kernel/patches" && ls | awk -v n="$upto" '/^[0-9]+-.*\.patch$/ && $0 + 0 <= n' | sed -n '1s/-.*//p;$s/-.*//p' | paste -sd- ) only (kernel/build.sh --upto $upto)"
  echo "# 1. executable probe sites of kernel/tests (xoltest calls[]), each called once:"
  echo "#    boost  #DB(qemu -d int)  kernel stats"
  sed 's/^/   /' "$tmp/db.txt"
  echo "# 2. function entries (dynamic symbols) per library, placement reported by the kernel:"
  grep -a '^LIBPLACE' "$tmp/lib.log" | tr -d '\r' | sed 's/^LIBPLACE /   /'
} >"$out"
cat "$out"
