#!/usr/bin/env bash
# The main job: a mixed fleet on this machine. A controller and an agent on this host's
# stock kernel (node-1), and an agent in a qemu guest running the patched kernel of
# kernel/ (node-2), all inside a network namespace this script creates. One fleet attach
# of the same workload and libc functions on both nodes; their placements side by side
# (the patched kernel confirming its own), live hit rates and slot migrations.
# Run through `./xolfleet demo` (which builds first). Options: --seconds N (live rates,
# default 8). `./xolfleet demo --stock` is the fast host-only demo (tests/demo/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_TO_WATCH=8
[ "${1:-}" = --seconds ] && SECONDS_TO_WATCH=$2
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespace, qemu tap, uprobes)" >&2; exit 1; }
source tests/node/lib.sh
T0=$SECONDS
TMP=$(mktemp -d /tmp/xolfleet-demo.XXXXXX)
NS=xfdemo-$$
PIDS=()
WL_FD=
cleanup() {
  set +e
  [ -n "$WL_FD" ] && eval "exec $WL_FD>&-"
  node_down
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m  (%ds)\n' "$*" $((SECONDS - T0)); }

say "the patched kernel (kernel/build.sh: cached after the first build, which takes 5-30 min)"
bash kernel/build.sh >/dev/null

mkdir -p "$TMP/bin"
for b in services/controller/xolfleet-controller services/agent/xolfleet-agent \
         services/cli/xolctl tests/workloads/node_workload; do
  cp "bazel-bin/$b" "$TMP/bin/"
  # The agent and xolctl run on private libraries kept beside them (services/agent/README.md).
  if [ -d "bazel-bin/$b.private" ]; then cp -rL "bazel-bin/$b.private" "$TMP/bin/"; fi
done
BIN=$TMP/bin
WL=$BIN/node_workload
LIBC=/lib/x86_64-linux-gnu/libc.so.6
CA=$TMP/ca
scripts/make-test-ca.sh "$CA" --server-san "$NODE_HOST_IP" --agents 2 >/dev/null
printf 'admin cn:admin\nagent cn:node-*\n' >"$TMP/authz.conf"

say "guest image: the agent, xolctl, the workload and the host's own Debian libraries"
node_image "$TMP/node.cpio.gz" "$BIN/xolfleet-agent" "$BIN/xolctl" "$WL" \
  /lib/x86_64-linux-gnu/libstdc++.so.6 "$CA/ca.crt" "$CA/node-2.crt" "$CA/node-2.key"
ls -la "$TMP/node.cpio.gz" | awk '{print $5 " bytes"}'

say "network namespace $NS: controller and host agent on $NODE_HOST_IP, guest on $NODE_GUEST_IP"
node_net_up "$NS"
CTL=$NODE_CTL
node_start_fleet "$NS" "$TMP" "$BIN" "$CA"
PIDS+=("${NODE_PIDS[@]}")

say "booting the patched guest (qemu TCG, $NODE_SMP vCPUs; console in $TMP/console.log)"
node_boot "$NS" "$TMP/node.cpio.gz" "$TMP/console.log"
PIDS+=("$NODE_QEMU_PID")
NODE_TIMEOUT=10
until guest true >/dev/null 2>&1; do
  kill -0 "$NODE_QEMU_PID" 2>/dev/null || { echo "guest died:"; tail "$TMP/console.log"; exit 1; }
  sleep 1
done
NODE_TIMEOUT=120
grep -a XOL-NODE-BOOT "$TMP/console.log" | tr -d '\r'
node_start_guest_agent "$BIN" "$CA"

fleet() {
  ip netns exec "$NS" "$BIN/xolctl" fleet --controller=$CTL --tls-ca="$CA/ca.crt" \
    --tls-cert="$CA/admin.crt" --tls-key="$CA/admin.key" --timeout=60 "$@"
}
say "both agents registered over mTLS"
for _ in $(seq 1 240); do
  [ "$(fleet agents 2>/dev/null | grep -c ' UP ')" = 2 ] && break
  sleep 1
done
fleet agents

say "the same workload on both nodes ($WL)"
mkfifo "$TMP/wl.in"
"$WL" <"$TMP/wl.in" >"$TMP/wl.out" 2>&1 &
PIDS+=($!)
exec {WL_FD}>"$TMP/wl.in"
guest "mkfifo /tmp/wl.in; (sleep 1000000 >/tmp/wl.in &); ($WL </tmp/wl.in >/tmp/wl.out 2>&1 &)"

say "one fleet attach: three workload sites and three libc functions, on both nodes"
fleet attach --all --canary=0.5 "$WL:node_boosted" "$WL:node_riprel" "$WL:node_emulated" \
  "$LIBC:memfrob" "$LIBC:a64l" "$LIBC:l64a" | tee "$TMP/attach.out"
SET=$(awk 'NR==2 {print $1}' "$TMP/attach.out")
for _ in $(seq 1 120); do
  [ "$(fleet list --set="$SET" 2>/dev/null | grep -c '^node-.* ATTACHED ')" = 12 ] && break
  sleep 1
done

say "placements side by side: predicted by each node's classifier, confirmed by the patched kernel"
sleep 2  # one heartbeat with the kernel's placements
fleet list --set="$SET" --json | python3 -c '
import json, sys
rows = {}
for p in json.load(sys.stdin).get("probes", []):
    s = p["spec"]
    site = "%s:%s" % (s["binary_path"].rsplit("/", 1)[-1], s.get("symbol", ""))
    pred = p.get("predicted_placement", "-").removeprefix("PLACEMENT_")
    kern = p.get("kernel_placement", "PLACEMENT_UNSPECIFIED")
    kern = ("(not reported)" if kern == "PLACEMENT_UNSPECIFIED"
            else ("kernel: " + kern.removeprefix("PLACEMENT_")))
    rows.setdefault(p["fleet_probe_id"], {"site": site})[p["node_name"]] = (
        p.get("kernel_profile", "-"), pred, kern)
print("%-22s | %-44s | %-48s" % ("SITE", "node-1 (stock)", "node-2 (patched)"))
for fid in sorted(rows, key=lambda f: int(f.rsplit("/", 1)[1])):
    r = rows[fid]
    cell = lambda n: "%s %s %s" % r.get(n, ("-", "-", ""))
    print("%-22s | %-44s | %-48s" % (r["site"], cell("node-1"), cell("node-2")))'

say "live: 4 threads on each node hopping between CPUs, calling the probed functions"
echo "migrate 4 $SECONDS_TO_WATCH" >&"$WL_FD"
guest "echo 'migrate 4 $SECONDS_TO_WATCH' >/tmp/wl.in"
snapshot() {
  { fleet list --set="$SET" --json; echo; fleet agents --json; } 2>/dev/null
}
prev=$(snapshot)
printf '%-5s %-28s %-28s %s\n' "t" "node-1 hits/s (SINGLE_STEP)" "node-2 hits/s (BOOSTED)" "node-2 slot migrations/s"
for i in $(seq 1 "$SECONDS_TO_WATCH"); do
  sleep 1
  cur=$(snapshot)
  python3 - "$prev" "$cur" "$i" "$SET/0" <<'PY'
import json, sys
def parse(text):
    dec, pos, objs = json.JSONDecoder(), 0, []
    while pos < len(text):
        while pos < len(text) and text[pos].isspace(): pos += 1
        if pos >= len(text): break
        o, pos = dec.raw_decode(text, pos); objs.append(o)
    hits = {(p["node_name"]): int(p.get("hits", 0)) for p in objs[0].get("probes", []) if p["fleet_probe_id"] == sys.argv[4]}
    mig = {a["registration"]["node_name"]: int(a.get("slot_stats", {}).get("slot_migrations", 0)) for a in objs[1].get("agents", [])}
    return hits, mig
(h0, m0), (h1, m1) = parse(sys.argv[1]), parse(sys.argv[2])
print("%-5s %-28d %-28d %d" % (sys.argv[3] + "s", h1.get("node-1", 0) - h0.get("node-1", 0),
      h1.get("node-2", 0) - h0.get("node-2", 0), m1.get("node-2", 0) - m0.get("node-2", 0)))
PY
  prev=$cur
done
sleep 2

say "fleet view: per node profile, placements (predicted / kernel), hits"
fleet list --set="$SET"
fleet agents
say "controller /metrics (excerpt)"
ip netns exec "$NS" curl -s "http://$NODE_HOST_IP:9465/metrics" |
  grep -E '^xolfleet_controller_(node_info|node_slot_migrations_total|node_kernel_uprobe_hits_total)' | head -14
say "done in $((SECONDS - T0)) s"
