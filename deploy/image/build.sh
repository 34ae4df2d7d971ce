#!/usr/bin/env bash
# Builds the xolfleet image (agent, controller, xolctl) with buildah from scratch: nothing
# is pulled from a registry, no base image, no package manager in the image. What goes in:
#   /usr/local/bin/xolfleet-agent + xolfleet-agent.private/   static launcher + private
#   /usr/local/bin/xolctl + xolctl.private/                     copies of every library
#                                                               (services/agent/README.md)
#   /usr/local/bin/xolfleet-controller                          dynamic, with its ldd closure
#   /lib, /usr/lib, /lib64: the controller's libraries, copied from this Debian 12 host
#   /var/lib/xolfleet (the controller's state; a volume in Kubernetes), /run/xolfleet
# The tag is the image the manifests name (deploy/kubernetes/agent-daemonset.yaml), so the
# image built is the image deployed; the container tier (tests/container/tier.py) runs it
# as the manifest says.
#
#   deploy/image/build.sh [--tag IMAGE] [--oci-archive FILE]
# Needs root, buildah, and the Bazel build of the three programs (run here). Storage
# follows buildah's configuration (CONTAINERS_STORAGE_CONF).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
tag=$(sed -n 's/^ *image: *//p' deploy/kubernetes/agent-daemonset.yaml | head -n 1)
archive=
while (($#)); do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --oci-archive) archive=$2; shift 2 ;;
    *) echo "usage: $0 [--tag IMAGE] [--oci-archive FILE]" >&2; exit 2 ;;
  esac
done
[ -n "$tag" ] || { echo "build.sh: no image in deploy/kubernetes/agent-daemonset.yaml" >&2; exit 1; }
command -v buildah >/dev/null || { echo "build.sh: needs buildah (apt-get install buildah)" >&2; exit 1; }

bazel build --jobs=2 //services/agent:xolfleet-agent //services/controller:xolfleet-controller \
  //services/cli:xolctl >&2
bin=$(bazel info bazel-bin 2>/dev/null)

stage=$(mktemp -d /tmp/xolfleet-image.XXXXXX)
ctr=
cleanup() {
  [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$stage"
}
trap cleanup EXIT

mkdir -p "$stage/usr/local/bin" "$stage/var/lib/xolfleet" "$stage/run/xolfleet" "$stage/tmp" \
  "$stage/etc" "$stage/host" "$stage/proc" "$stage/sys" "$stage/dev"
chmod 1777 "$stage/tmp"
chown 65532:65532 "$stage/var/lib/xolfleet"
for p in services/agent/xolfleet-agent services/cli/xolctl; do
  cp -L "$bin/$p" "$stage/usr/local/bin/"
  cp -rL "$bin/$p.private" "$stage/usr/local/bin/"
done
cp -L "$bin/services/controller/xolfleet-controller" "$stage/usr/local/bin/"
chmod -R u+w "$stage/usr/local/bin"
# The controller's libraries at their own paths (it is the one program here that uses the
# image's shared libraries; the agent's and xolctl's are in their .private directories).
ldd "$bin/services/controller/xolfleet-controller" | grep -o '/[^ ]*' | sort -u |
  while read -r lib; do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done
printf 'root:x:0:0:root:/:/nonexistent\nxolfleet:x:65532:65532:xolfleet:/var/lib/xolfleet:/nonexistent\n' \
  >"$stage/etc/passwd"
printf 'root:x:0:\nxolfleet:x:65532:\n' >"$stage/etc/group"

ctr=$(buildah from scratch)
buildah copy --quiet "$ctr" "$stage" / >/dev/null
buildah config \
  --entrypoint '["/usr/local/bin/xolfleet-controller"]' --cmd '' \
  --user 65532:65532 --workingdir /var/lib/xolfleet \
  --label org.opencontainers.image.title=xolfleet \
  --label org.opencontainers.image.version="${tag##*:}" "$ctr"
buildah commit --quiet --rm "$ctr" "$tag" >/dev/null
ctr=
if [ -n "$archive" ]; then
  rm -f "$archive"
  buildah push --quiet "$tag" "oci-archive:$archive:$tag"
fi
echo "$tag"
