#!/usr/bin/env bash
# Build the xolfleet guest kernel: Debian's linux-source-6.1 + kernel/patches/*.patch.
#
#   kernel/build.sh            patched kernel -> $XOL_CACHE/build-patched/arch/x86/boot/bzImage
#   kernel/build.sh --stock    pristine 6.1   -> $XOL_CACHE/build-stock/...
#   kernel/build.sh --distro   distribution-like configuration (config.fragment, then
#                              config.distro: IA32_EMULATION, NR_CPUS=512, CPU hotplug)
#                              -> $XOL_CACHE/build-patched-distro/... (or build-stock-distro)
#   kernel/build.sh --upto N   only the patches numbered 1..N of the series (a prefix,
#                              e.g. --upto 10 for the kernel before patches 11 and 12); same
#                              output directory, so use a separate XOL_CACHE to keep both
#
# Idempotent and incremental: the tarball is extracted once into a git tree (commit
# "pristine"); the series is re-applied with `git am` only when the patches changed, and
# since git rewrites only files whose content differs, make rebuilds only what the series
# touches.  Objects go to a separate O= directory, compiles go through ccache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
TARBALL=${XOL_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
JOBS=${JOBS:-$(nproc)}
variant=patched suffix= upto=
while (($#)); do
  case $1 in
  --stock) variant=stock; shift ;;
  --distro) suffix=-distro; shift ;;
  --upto)
    [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "kernel/build.sh: --upto needs a patch number" >&2; exit 2; }
    upto=$((10#$2)); shift 2 ;;
  *) echo "kernel/build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { printf '[kernel/build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
mkdir -p "$CACHE"
export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache} CCACHE_BASEDIR=$CACHE CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-4G}

gitq() { git -c user.name=xolfleet -c user.email=xolfleet@localhost -c advice.detachedHead=false "$@"; }

src=$CACHE/linux-$variant
if [[ ! -d $src/.git ]]; then
  log "extracting $TARBALL into $src (once, ~1 min)"
  rm -rf "$src.tmp" && mkdir -p "$src.tmp"
  tar -xJf "$TARBALL" -C "$src.tmp" --strip-components=1
  (cd "$src.tmp" && gitq init -q && gitq add -A -f && gitq commit -qm pristine && gitq tag pristine)
  mv "$src.tmp" "$src"
fi

out=$CACHE/build-$variant$suffix
mkdir -p "$out"
if [[ $variant == patched ]]; then
  # The series, or its prefix 1..N with --upto N (patch files are named NNNN-*.patch).
  patches=()
  for p in "$here"/patches/*.patch; do
    [[ -f $p ]] || continue
    b=${p##*/}
    if [[ -z $upto || ( $b =~ ^[0-9]+- && $((10#${b%%-*})) -le $upto ) ]]; then patches+=("$p"); fi
  done
  want=$(cat "${patches[@]}" </dev/null 2>/dev/null | sha256sum | cut -c1-16)
  have=$(cat "$out/.series" 2>/dev/null || true)
  if [[ $want != "$have" ]]; then
    n=${#patches[@]}
    log "applying $n patches${upto:+ (--upto $upto)}"
    # Build the target tree in a scratch index (this also proves the series applies to
    # pristine with plain `git apply`, i.e. patch -p1), then move the work tree to it:
    # only files whose content differs are rewritten, so make stays incremental.
    idx=$(mktemp) && trap 'rm -f "$idx"' EXIT
    (
      cd "$src"
      export GIT_INDEX_FILE=$idx
      gitq read-tree pristine
      for p in "${patches[@]}"; do
        gitq apply --cached "$p" || { echo "patch does not apply: $p" >&2; exit 1; }
      done
      tree=$(gitq write-tree)
      unset GIT_INDEX_FILE
      commit=$(gitq commit-tree "$tree" -p pristine -m "pristine + kernel/patches ($want)")
      gitq checkout -q -f "$commit"
      gitq clean -qfd
    )
    echo "$want" >"$out/.series"
  fi
fi

# The distribution-like configuration is config.fragment with config.distro on top
# (merge_config.sh: later fragments override earlier ones).
frags=("$here/config.fragment")
[[ -n $suffix ]] && frags+=("$here/config.distro")
stale=0
[[ -f $out/.config ]] || stale=1
for f in "${frags[@]}"; do [[ $f -nt $out/.config ]] && stale=1; done
if ((stale)); then
  log "configuring (tinyconfig + ${frags[*]##*/})"
  make -s -C "$src" O="$out" tinyconfig >/dev/null
  "$src"/scripts/kconfig/merge_config.sh -m -O "$out" "$out/.config" "${frags[@]}" >/dev/null
  make -s -C "$src" O="$out" olddefconfig >/dev/null
  # Report fragment options that did not stick (typo or unmet dependency).  A line
  # of config.fragment overridden by config.distro is not a failure.
  for f in "${frags[@]}"; do
    while IFS= read -r l; do
      [[ $l =~ ^CONFIG_ ]] || continue
      if [[ -n $suffix && $f != */config.distro ]] &&
        grep -q "^${l%%=*}=" "$here/config.distro"; then
        continue
      fi
      grep -qxF "$l" "$out/.config" || log "warning: $(basename "$f") line not honoured: $l"
    done <"$f"
  done
fi

log "building bzImage ($variant, -j$JOBS, ccache)"
start=$SECONDS
# Progress: one line per directory-ish milestone instead of thousands of CC lines.
make -C "$src" O="$out" -j"$JOBS" CC="ccache gcc" bzImage 2>&1 \
  | awk '/^  (CC|LD|AR)/ { n++; if (n % 250 == 0) { print "[kernel/build] " n " objects"; fflush() } }
         /error|Error|warning:/ { print; fflush() }' >&2
rc=${PIPESTATUS[0]}
((rc == 0)) || { log "build failed (rc=$rc)"; exit "$rc"; }
log "done in $((SECONDS - start))s: $out/arch/x86/boot/bzImage"
echo "$out/arch/x86/boot/bzImage"
