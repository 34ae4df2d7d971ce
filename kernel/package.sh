#!/usr/bin/env bash
# Installable Debian packages of the patched kernel (`make bindeb-pkg`): how the series
# gets onto a real host. See kernel/README.md ("Installing on a host") for install and
# rollback.
#
#   kernel/package.sh [--config debian|small] [--out DIR]
#
#   --config debian  Debian's own 6.1 configuration (package linux-config-6.1,
#                    config.amd64_none_amd64) with the series applied: what a Debian 12
#                    host runs, modules and all. Debug info is turned off (Debian builds it
#                    into separate -dbg packages; it would triple the build time) and the
#                    module signing keys are Debian's, which we do not have: modules are
#                    signed with a key generated at build time instead.
#   --config small   the test configuration (config.fragment on tinyconfig): what CI
#                    packages to prove the packaging works (a few minutes with ccache).
#
# Output: linux-image-<release>_*.deb (and linux-headers, linux-libc-dev) in DIR (default
# $XOL_CACHE/packages/<config>), names printed on stdout. The release is 6.1.x-xolfleet
# (make's LOCALVERSION), so it installs next to Debian's kernel, never over it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${XOL_CACHE:-/var/cache/xolfleet/kernel}
JOBS=${JOBS:-$(nproc)}
config=small out=
while (($#)); do
  case $1 in
    --config) config=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "package.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $config == debian || $config == small ]] || { echo "package.sh: --config debian|small" >&2; exit 2; }
out=${out:-$CACHE/packages/$config}
log() { printf '[kernel/package %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache} CCACHE_BASEDIR=$CACHE CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-4G}

# The source tree with the series applied (and the small kernel built: cached).
log "preparing the patched source tree (kernel/build.sh)"
bash "$here/build.sh" >/dev/null
src=$CACHE/linux-patched
obj=$CACHE/pkg-$config
mkdir -p "$obj"

want=$(cat "$here"/patches/*.patch "$here/config.fragment" | sha256sum | cut -c1-16)-$config
if [[ $(cat "$obj/.xolfleet-config" 2>/dev/null) != "$want" ]]; then
  log "configuring ($config)"
  if [[ $config == small ]]; then
    cp "$CACHE/build-patched/.config" "$obj/.config"
  else
    cfg=/usr/src/linux-config-6.1/config.amd64_none_amd64.xz
    [[ -f $cfg ]] || { log "no $cfg: apt-get install linux-config-6.1"; exit 1; }
    xzcat "$cfg" >"$obj/.config"
    "$src/scripts/config" --file "$obj/.config" \
      --disable DEBUG_INFO --disable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT \
      --disable DEBUG_INFO_DWARF4 --disable DEBUG_INFO_DWARF5 --disable DEBUG_INFO_BTF \
      --enable DEBUG_INFO_NONE \
      --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS "" \
      --set-str MODULE_SIG_KEY "certs/signing_key.pem"
  fi
  "$src/scripts/config" --file "$obj/.config" --disable LOCALVERSION_AUTO
  make -s -C "$src" O="$obj" olddefconfig >/dev/null
  grep -q '^CONFIG_UPROBES=y' "$obj/.config" || { log "CONFIG_UPROBES is off in this config"; exit 1; }
  echo "$want" >"$obj/.xolfleet-config"
fi

# The release suffix goes on make's command line, not into .config: the small
# configuration then stays identical to build.sh's, and ccache serves every object.
export LOCALVERSION=-xolfleet
release=$(make -s -C "$src" O="$obj" kernelrelease)
log "building linux-image-$release (bindeb-pkg, -j$JOBS, ccache)"
start=$SECONDS
rm -f "$CACHE"/linux-*.deb "$CACHE"/linux-*.buildinfo "$CACHE"/linux-*.changes
# bindeb-pkg writes the packages next to the object directory ($CACHE).
make -C "$src" O="$obj" -j"$JOBS" CC="ccache gcc" KDEB_PKGVERSION="${release}-1" bindeb-pkg 2>&1 |
  awk '/^  (CC|LD|AR)/ { n++; if (n % 500 == 0) { print "[kernel/package] " n " objects"; fflush() } }
       /error:|Error [0-9]|dpkg-deb: building/ { print; fflush() }' >&2
rc=${PIPESTATUS[0]}
((rc == 0)) || { log "bindeb-pkg failed (rc=$rc)"; exit "$rc"; }
mkdir -p "$out"
rm -f "$out"/linux-*.deb
mv "$CACHE"/linux-*.deb "$out/"
rm -f "$CACHE"/linux-*.buildinfo "$CACHE"/linux-*.changes
log "done in $((SECONDS - start)) s: $out"
ls "$out"/linux-*.deb
