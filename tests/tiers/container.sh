#!/usr/bin/env bash
# Tier "container": builds the image (deploy/image/build.sh, buildah, nothing pulled) and
# runs the controller and the agent with podman exactly as deploy/kubernetes/ says
# (tests/container/run.py derives every podman flag from the pod templates: user,
# capabilities, seccomp, read-only root, hostPID, mounts, args; it fails when the manifest
# and the image disagree). Both share one network namespace made here (loopback only), the
# agent dials the controller's Service name (mapped to 127.0.0.1) over mTLS.
#
# From inside the agent container (its own xolctl, on its unix socket):
#   - a host process, named by its host path (resolved under --host-root=/host): exact hits
#   - a process in another container, named by container id and a path inside that
#     container (which does not exist on the host): exact hits
#   - a path outside --host-root (the image's own file; a /proc magic link), a pid that exits
#     in the middle of the request, a container id that does not exist: each a precise gRPC
#     code and message, and nothing attached
# Container storage, configuration and network namespace are private to the run. Root only.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SUF=$$
TMP=$(mktemp -d /tmp/xolfleet-container.XXXXXX)
NS=xfct-$SUF
AGENT=xfc-agent-$SUF CTL=xfc-controller-$SUF WLC=xfc-workload-$SUF
NODE=ctnode-$SUF
FAILED=0
PIDS=()
START=$SECONDS

log() { printf '[container %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { echo "RESULT PASS container-$1"; }
fail() { echo "RESULT FAIL container-$1 $2"; FAILED=1; }
wait_for() {  # SECONDS CMD...: polls CMD every 0.2 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS >= end)) && return 1; sleep 0.2; done
}

export CONTAINERS_CONF=$TMP/containers.conf CONTAINERS_STORAGE_CONF=$TMP/storage.conf
cleanup() {
  exec 7>&- 8>&- 9>&-
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if ((FAILED)); then
    for c in "$AGENT" "$CTL"; do
      echo "--- podman logs $c" >&2; podman logs "$c" 2>&1 | tail -n 20 >&2
    done
  fi
  # Only this run's storage: every container and image in it is ours.
  podman rm -a -f -t 0 >/dev/null 2>&1
  podman rmi -a -f >/dev/null 2>&1
  ip netns del "$NS" 2>/dev/null
  grep -o " $TMP/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$TMP"
  log "done in $((SECONDS - START))s"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if [ "$(id -u)" != 0 ]; then fail setup "needs root"; exit 1; fi
for t in podman buildah runc; do
  command -v $t >/dev/null || { fail setup "$t is not installed (scripts/setup.sh)"; exit 1; }
done
# runc: this host's cgroup v1 hierarchy is not one crun handles; no container may ask for
# more open files than the hard limit allows.
cat >"$CONTAINERS_CONF" <<EOF
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
default_ulimits = []
EOF
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$TMP/storage"
runroot = "$TMP/storage-run"
EOF

# --- the image ---
log "building the image"
if ! TAG=$(deploy/image/build.sh 2>"$TMP/build.log"); then
  fail image-build "deploy/image/build.sh failed: $(tail -n 3 "$TMP/build.log" | tr '\n' ' ')"
  exit 1
fi
SIZE=$(podman image inspect "$TAG" --format '{{.Size}}')
log "image $TAG: $((SIZE / 1048576)) MiB"
if ((SIZE > 0 && SIZE < 120 * 1048576)); then pass image-build; else
  fail image-build "image $TAG is $SIZE bytes (expected under 120 MiB)"; fi
bad=$(grep -h '^ *image:' deploy/kubernetes/*.yaml | sed 's/^ *image: *//' | sort -u | grep -vx "$TAG")
if [ -z "$bad" ]; then pass manifests-name-the-image; else
  fail manifests-name-the-image "manifests name $bad, the image built is $TAG"; fi

# --- certificates, volumes, network ---
BIN=$TMP/bin
mkdir -p "$BIN" "$TMP/pvc" "$TMP/run" "$TMP/wlio" "$TMP/secret-agent" "$TMP/secret-ctl"
cp bazel-bin/services/cli/xolctl "$BIN/" && cp -rL bazel-bin/services/cli/xolctl.private "$BIN/" &&
  cp bazel-bin/tests/workloads/hit_workload "$BIN/" || { fail setup "missing bazel-bin outputs"; exit 1; }
chmod -R u+w "$BIN"
scripts/make-test-ca.sh "$TMP/ca" --agents 0 --clients "xolfleet-agent xolfleet-admin" \
  --server-san xolfleet-controller,xolfleet-controller.xolfleet.svc >/dev/null 2>&1 ||
  { fail setup "make-test-ca.sh failed"; exit 1; }
cp "$TMP/ca/ca.crt" "$TMP/secret-agent/ca.crt"
cp "$TMP/ca/xolfleet-agent.crt" "$TMP/secret-agent/tls.crt"
cp "$TMP/ca/xolfleet-agent.key" "$TMP/secret-agent/tls.key"
cp "$TMP/ca/ca.crt" "$TMP/secret-ctl/ca.crt"
cp "$TMP/ca/controller.crt" "$TMP/secret-ctl/tls.crt"
cp "$TMP/ca/controller.key" "$TMP/secret-ctl/tls.key"
chmod 0644 "$TMP"/secret-*/*   # Kubernetes secret volumes' default mode
chmod 0755 "$TMP"/secret-*
chown 65532:65532 "$TMP/pvc"    # the controller's fsGroup
ip netns add "$NS" && ip -n "$NS" link set lo up || { fail setup "ip netns add"; exit 1; }
NET="ns:/run/netns/$NS"

# --- controller and agent, as the manifests say ---
log "starting the controller and the agent"
tests/container/run.py deploy/kubernetes/controller.yaml --kind Deployment --container controller \
  --name "$CTL" --network "$NET" --workdir "$TMP" \
  --secret xolfleet-controller-tls="$TMP/secret-ctl" --pvc xolfleet-controller-state="$TMP/pvc" \
  >/dev/null 2>"$TMP/run-ctl.log" || { fail controller-starts "$(cat "$TMP/run-ctl.log")"; exit 1; }
tests/container/run.py deploy/kubernetes/agent-daemonset.yaml --kind DaemonSet --container agent \
  --name "$AGENT" --node-name "$NODE" --network "$NET" --workdir "$TMP" \
  --add-host xolfleet-controller.xolfleet.svc:127.0.0.1 \
  --secret xolfleet-agent-tls="$TMP/secret-agent" --host-path /run/xolfleet="$TMP/run" \
  >/dev/null 2>"$TMP/run-agent.log" || { fail agent-starts "$(cat "$TMP/run-agent.log")"; exit 1; }

actl() { podman exec "$AGENT" /usr/local/bin/xolctl "$@"; }
if wait_for 30 actl info >/dev/null 2>&1; then pass agent-starts; else
  fail agent-starts "no answer on the agent's socket: $(podman logs "$AGENT" 2>&1 | tail -n 3 | tr '\n' ' ')"
  exit 1
fi

# The agent runs with exactly what the manifest grants: uid 0, CAP_BPF, CAP_PERFMON,
# CAP_SYS_PTRACE and nothing else, no new privileges, seccomp off, read-only root.
APID=$(podman inspect "$AGENT" --format '{{.State.Pid}}')
want_caps=$(printf '%016x' $(((1 << 39) | (1 << 38) | (1 << 19))))
caps=$(awk '/^CapEff/{print $2}' "/proc/$APID/status")
uid=$(awk '/^Uid/{print $3}' "/proc/$APID/status")
nnp=$(awk '/^NoNewPrivs/{print $2}' "/proc/$APID/status")
ro=$(podman inspect "$AGENT" --format '{{.HostConfig.ReadonlyRootfs}}')
if [ "$caps" = "$want_caps" ] && [ "$uid" = 0 ] && [ "$nnp" = 1 ] && [ "$ro" = true ]; then
  pass agent-least-privilege
else
  fail agent-least-privilege "CapEff $caps (want $want_caps), euid $uid, NoNewPrivs $nnp, read-only root $ro"
fi
cpid=$(podman inspect "$CTL" --format '{{.State.Pid}}')
if [ "$(awk '/^Uid/{print $3}' "/proc/$cpid/status")" = 65532 ] &&
   [ "$(awk '/^CapEff/{print $2}' "/proc/$cpid/status")" = 0000000000000000 ]; then
  pass controller-non-root
else
  fail controller-non-root "controller runs as $(awk '/^Uid/{print $3}' "/proc/$cpid/status") with $(awk '/^CapEff/{print $2}' "/proc/$cpid/status")"
fi

fleet() {
  ip netns exec "$NS" "$BIN/xolctl" fleet --controller=127.0.0.1:7443 --tls-ca="$TMP/ca/ca.crt" \
    --tls-cert="$TMP/ca/xolfleet-admin.crt" --tls-key="$TMP/ca/xolfleet-admin.key" --timeout=10 "$@"
}
registered() {
  fleet agents --json 2>/dev/null | tests/fleet/fleetq.py agents | grep -q "^$NODE AGENT_HEALTH_UP "
}
if wait_for 30 registered; then pass agent-registers-with-controller; else
  fail agent-registers-with-controller "no $NODE AGENT_HEALTH_UP: $(fleet agents --json 2>&1 | tr '\n' ' ' | cut -c1-300)"
fi

# --- probes from inside the agent container ---
hits() {  # ID: hits of probe ID from the agent's List
  actl list --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(int(p.get("hits", 0)) for p in d.get("probes", []) if p["id"] == sys.argv[1]))' "$1"
}
nprobes() { actl list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("probes", [])))'; }
attach_id() {  # ARGS...: attaches, prints the probe id
  actl --json attach "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["probes"][0]["id"])'
}
start_host_workload() {  # FD BINARY OUT: hit_workload on the host, driven through fd FD
  local fd=$1 bin=$2 out=$3
  rm -f "$out.in"; mkfifo "$out.in"
  "$bin" <"$out.in" >"$out" 2>&1 &
  PIDS+=($!)
  eval "exec $fd>\"$out.in\""
  wait_for 10 grep -q '^ready' "$out"
}
more_done() { (($(grep -c '^done' "$1") > $2)); }
run_workload() {  # FD OUT N: run N calls, wait for the workload's "done N"
  local before; before=$(grep -c '^done' "$2")
  echo "run $3 0" >&"$1"
  wait_for 20 more_done "$2" "$before"
}

# (a) A host process by its host path.
start_host_workload 7 "$BIN/hit_workload" "$TMP/host-wl.out" || { fail setup "host workload"; exit 1; }
HOST_ID=$(attach_id "$BIN/hit_workload:xol_target_add" 2>"$TMP/err") || true
if [ -n "$HOST_ID" ] && run_workload 7 "$TMP/host-wl.out" 1234 && [ "$(hits "$HOST_ID")" = 1234 ]; then
  pass host-process-exact-hits
else
  fail host-process-exact-hits "probe '${HOST_ID}' hits $( [ -n "$HOST_ID" ] && hits "$HOST_ID") (want 1234) $(tr '\n' ' ' <"$TMP/err")"
fi

# (b) A process in another container, by container id and its path in that container.
WLROOT=$TMP/wlroot
mkdir -p "$WLROOT/bin" "$WLROOT/io"
cp "$BIN/hit_workload" "$WLROOT/hit_workload"
cp /bin/sh "$WLROOT/bin/sh"
for f in $( (ldd "$BIN/hit_workload"; ldd /bin/sh) | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$WLROOT$(dirname "$f")"; cp -L "$f" "$WLROOT$f"
done
mkfifo "$TMP/wlio/in"
CID=$(podman run -d --name "$WLC" --network none --cap-drop all -v "$TMP/wlio:/io" \
  --rootfs "$WLROOT" /bin/sh -c 'exec /hit_workload </io/in >/io/out 2>&1' 2>"$TMP/err")
exec 8>"$TMP/wlio/in"
if ! [[ $CID =~ ^[0-9a-f]{64}$ ]] || ! wait_for 20 grep -q '^ready' "$TMP/wlio/out"; then
  fail other-container-exact-hits "workload container did not start: $CID $(tr '\n' ' ' <"$TMP/err")"
else
  [ ! -e /hit_workload ] || log "warning: /hit_workload exists on the host"
  CT_ID=$(attach_id --container "${CID:0:12}" /hit_workload:xol_target_add 2>"$TMP/err") || true
  # Hits in the container's file only: the host's copy of the workload is another file.
  if [ -n "$CT_ID" ] && run_workload 8 "$TMP/wlio/out" 777 && run_workload 7 "$TMP/host-wl.out" 5 &&
     [ "$(hits "$CT_ID")" = 777 ] && [ "$(hits "$HOST_ID")" = 1239 ]; then
    pass other-container-exact-hits
  else
    fail other-container-exact-hits "probe '${CT_ID}' hits $( [ -n "$CT_ID" ] && hits "$CT_ID") (want 777), host probe $(hits "$HOST_ID") (want 1239) $(tr '\n' ' ' <"$TMP/err")"
  fi
fi

# (c) Refusals: exact code and message, nothing attached.
refused() {  # NAME CODE MESSAGE ARGS...: attach fails with CODE and MESSAGE; no new probe
  local name=$1 code=$2 msg=$3; shift 3
  local before out rc=0
  before=$(nprobes)
  out=$(actl attach "$@" 2>&1) || rc=$?
  if ((rc != 0)) && grep -q "attach: $code: nothing attached" <<<"$out" &&
     grep -qF -- "$msg" <<<"$out" && [ "$(nprobes)" = "$before" ]; then
    pass "$name"
  else
    fail "$name" "rc=$rc probes $before -> $(nprobes); want $code '$msg'; got: $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
  fi
}
refused path-outside-host-root NOT_FOUND \
  "no such file /usr/local/bin/xolctl.private/xolctl.bin under the host root /host" \
  /usr/local/bin/xolctl.private/xolctl.bin:main
refused magic-link-out-of-host-root PERMISSION_DENIED "magic link" \
  "/proc/$APID/root/usr/local/bin/xolctl.private/xolctl.bin:main"
refused unknown-container NOT_FOUND "no container 0123456789abcdef on this node" \
  --container 0123456789abcdef /hit_workload:xol_target_add
# A process that exits when the agent opens its binary, before that open returns (a copy of
# the workload, so that no other open triggers it).
cp "$BIN/hit_workload" "$BIN/hit_workload_exit"
if start_host_workload 9 "$BIN/hit_workload_exit" "$TMP/exit-wl.out"; then
  EPID=$(awk '/^ready/{print $2}' "$TMP/exit-wl.out")
  echo exit-when-opened >&9
  if wait_for 10 grep -q '^armed' "$TMP/exit-wl.out"; then
    refused pid-exits-mid-request NOT_FOUND "process $EPID exited during the request" \
      --pid "$EPID" "$BIN/hit_workload_exit:xol_target_add"
  else
    fail pid-exits-mid-request "workload not armed: $(cat "$TMP/exit-wl.out")"
  fi
else
  fail pid-exits-mid-request "exit workload did not start"
fi

# Each capability the manifest adds is needed: the agent started without it (everything
# else as the manifest says) cannot place a probe filtered to a root process on the host
# (perf/BPF need BPF and PERFMON; /proc/PID/root of a process with capabilities the agent
# lacks needs SYS_PTRACE). The full agent can (the control).
HPID=$(awk '/^ready/{print $2}' "$TMP/host-wl.out")
needs=()
if id=$(attach_id --pid "$HPID" "$BIN/hit_workload:xol_target_other" 2>"$TMP/err"); then
  actl detach "$id" >/dev/null 2>&1
  for cap in $(python3 -c 'import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "DaemonSet":
        for c in d["spec"]["template"]["spec"]["containers"]:
            print(" ".join(c["securityContext"]["capabilities"]["add"]))' deploy/kubernetes/agent-daemonset.yaml); do
    name=$AGENT-no-$cap
    mkdir -p "$TMP/run-$cap"
    tests/container/run.py deploy/kubernetes/agent-daemonset.yaml --kind DaemonSet --container agent \
      --name "$name" --node-name "$NODE-$cap" --network none --workdir "$TMP" --without-cap "$cap" \
      --secret xolfleet-agent-tls="$TMP/secret-agent" --host-path /run/xolfleet="$TMP/run-$cap" \
      >/dev/null 2>&1
    ok=0
    for _ in $(seq 1 25); do  # up to 5 s for it to serve (or to have exited)
      [ "$(podman inspect "$name" --format '{{.State.Running}}' 2>/dev/null)" = true ] || break
      podman exec "$name" /usr/local/bin/xolctl info >/dev/null 2>&1 && break
      sleep 0.2
    done
    if out=$(podman exec "$name" /usr/local/bin/xolctl attach --pid "$HPID" \
         "$BIN/hit_workload:xol_target_other" 2>&1); then
      ok=1
    fi
    log "without CAP_$cap: $( ((ok)) && echo "still attaches" || echo "cannot attach:") $(
      podman logs "$name" 2>&1 | grep -m1 -E 'Operation not permitted' | cut -c1-120) $(
      tail -n 1 <<<"$out" | cut -c1-200)"
    ((ok)) && needs+=("$cap")
    podman rm -f -t 0 "$name" >/dev/null 2>&1
  done
  if ((${#needs[@]} == 0)); then pass each-capability-needed; else
    fail each-capability-needed "the agent attaches without: ${needs[*]}"; fi
else
  fail each-capability-needed "the agent as deployed cannot attach to pid $HPID: $(tr '\n' ' ' <"$TMP/err")"
fi

# The probes still count exactly after the refusals.
if run_workload 7 "$TMP/host-wl.out" 11 && [ "$(hits "$HOST_ID")" = 1250 ]; then
  pass probes-unaffected-by-refusals
else
  fail probes-unaffected-by-refusals "host probe hits $(hits "$HOST_ID") (want 1250)"
fi
actl detach --all >/dev/null 2>&1
log "tier ran in $((SECONDS - START))s"
exit $FAILED
