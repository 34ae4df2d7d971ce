#!/usr/bin/env bash
# Build a full bzImage for every prefix 1..N of the series: `kernel/build.sh --upto K` for
# K = 1..N, in one object directory of its own (default $XOL_CACHE/../kernel-prefixes), so
# each step rebuilds what patch K changed (ccache shared with the normal builds).
#
#   kernel/build-prefixes.sh [--distro] [--from K] [--to K] [--out FILE]
#
# Prints one line per prefix, "PREFIX K/N rc=R seconds=S patch=NAME", and a summary line
# "PREFIXES built=B failed=F of N"; exits non-zero if any prefix failed. Logs of the
# failed steps are kept next to --out (default $cache/prefixes.txt).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
main_cache=${XOL_CACHE:-/var/cache/xolfleet/kernel}
cache=${XOL_PREFIX_CACHE:-$(dirname "$main_cache")/kernel-prefixes}
distro=() from=1 to= out=
while (($#)); do
  case $1 in
  --distro) distro=(--distro); shift ;;
  --from) from=$2; shift 2 ;;
  --to) to=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  *) echo "kernel/build-prefixes.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
mapfile -t patches < <(cd "$here/patches" && ls [0-9]*-*.patch)
n=${#patches[@]}
to=${to:-$n}
mkdir -p "$cache"
out=${out:-$cache/prefixes${distro:+-distro}.txt}
: >"$out"
built=0 failed=0
for ((k = from; k <= to; k++)); do
  log=$cache/prefix-$k${distro:+-distro}.log
  start=$SECONDS
  XOL_CACHE=$cache CCACHE_DIR=${CCACHE_DIR:-$main_cache/ccache} \
    bash "$here/build.sh" "${distro[@]}" --upto "$k" >"$log" 2>&1
  rc=$?
  line="PREFIX $k/$n rc=$rc seconds=$((SECONDS - start)) patch=${patches[k - 1]}"
  echo "$line" | tee -a "$out"
  if ((rc == 0)); then
    built=$((built + 1))
    rm -f "$log"
  else
    failed=$((failed + 1))
    tail -20 "$log" | sed 's/^/  /' | tee -a "$out"
  fi
done
echo "PREFIXES built=$built failed=$failed of $((to - from + 1))${distro:+ (distro)}" | tee -a "$out"
((failed == 0))
