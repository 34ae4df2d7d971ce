#!/usr/bin/env bash
# The main job, end to end on this machine (run through `./xolfleet demo`, which builds
# first): a controller and an agent on loopback talking mTLS, a demo workload, the
# placement table the classifier predicts for this kernel (and for the patched kernel),
# probes attached through the controller and directly, live hit rates, and metrics.
# Options: --seconds N (how long to watch hit rates, default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_TO_WATCH=5
[ "${1:-}" = --seconds ] && SECONDS_TO_WATCH=$2
[ "$(id -u)" = 0 ] || { echo "demo: needs root (uprobes, BPF)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/xolfleet-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

mkdir -p "$TMP/bin"
for b in services/controller/xolfleet-controller services/agent/xolfleet-agent \
         services/cli/xolctl tests/workloads/hit_workload; do
  cp "bazel-bin/$b" "$TMP/bin/"
  # The agent and xolctl run on private libraries kept beside them (services/agent/README.md).
  if [ -d "bazel-bin/$b.private" ]; then cp -rL "bazel-bin/$b.private" "$TMP/bin/"; fi
done
BIN=$TMP/bin
XOLCTL=$BIN/xolctl
AGENT=unix:$TMP/agent.sock
CTL=127.0.0.1:7463

say "test CA (mTLS between agent, controller and xolctl)"
scripts/make-test-ca.sh "$TMP/ca" --server-san 127.0.0.1 --agents 1 >/dev/null
printf 'admin cn:admin\nagent cn:node-*\n' >"$TMP/authz.conf"
ls "$TMP/ca"

say "controller on $CTL (SQLite state in $TMP/controller.db)"
"$BIN/xolfleet-controller" --listen=$CTL --metrics_listen=127.0.0.1:9475 \
  --state_db="$TMP/controller.db" --init --tls_ca="$TMP/ca/ca.crt" --tls_cert="$TMP/ca/controller.crt" \
  --tls_key="$TMP/ca/controller.key" --authz_config="$TMP/authz.conf" \
  >"$TMP/controller.log" 2>&1 &
PIDS+=($!)

say "agent on $AGENT (root only: the kernel identifies callers), dialing the controller"
"$BIN/xolfleet-agent" --unix-socket="$TMP/agent.sock" --metrics_address=127.0.0.1:9474 --node_name=node-1 \
  --labels=demo=yes --controller=$CTL --controller_tls_ca="$TMP/ca/ca.crt" \
  --controller_tls_cert="$TMP/ca/node-1.crt" --controller_tls_key="$TMP/ca/node-1.key" \
  >"$TMP/agent.log" 2>&1 &
PIDS+=($!)
fleet() {
  "$XOLCTL" fleet --controller=$CTL --tls-ca="$TMP/ca/ca.crt" --tls-cert="$TMP/ca/admin.crt" \
    --tls-key="$TMP/ca/admin.key" "$@"
}
for _ in $(seq 1 100); do
  fleet agents 2>/dev/null | grep -q node-1 && break
  sleep 0.2
done
"$XOLCTL" --agent=$AGENT info
fleet agents

say "demo workload"
mkfifo "$TMP/wl.in"
"$BIN/hit_workload" <"$TMP/wl.in" >"$TMP/wl.out" 2>&1 &
WL_PID=$!
PIDS+=($WL_PID)
exec 9>"$TMP/wl.in"
echo "pid $WL_PID: $BIN/hit_workload"

say "placement of the workload's functions on this kernel, and on the patched kernel"
"$XOLCTL" --agent=$AGENT classify "$BIN/hit_workload:xol_target_add" \
  "$BIN/hit_workload:xol_target_other" "$BIN/hit_workload:xol_target_spin" \
  "$BIN/hit_workload:xol_refused_site+1"
"$XOLCTL" classify --local --profile=xolfleet-6.1 "$BIN/hit_workload:xol_target_add" \
  "$BIN/hit_workload:xol_target_other" "$BIN/hit_workload:xol_target_spin"

say "every function entry of libc, per kernel profile (totals)"
LIBC=/lib/x86_64-linux-gnu/libc.so.6
for p in linux-6.1 linux-6.18 xolfleet-6.1 xolfleet-6.1-noboost; do
  printf '%-21s ' "$p"
  "$XOLCTL" classify --local --all-functions "$LIBC" --profile=$p --json |
    python3 -c 'import json,sys; t=json.load(sys.stdin).get("totals",{}); print("  ".join("%s=%s" % (k.removeprefix("PLACEMENT_"), v) for k,v in sorted(t.items())))'
done

say "attach through the controller (fleet-wide, selector --all, canary 50%)"
fleet attach --all --canary=0.5 "$BIN/hit_workload:xol_target_other" "$BIN/hit_workload:xol_target_spin"
say "attach directly on the agent, capturing %rdi (the first argument)"
"$XOLCTL" --agent=$AGENT attach "$BIN/hit_workload:xol_target_add" --capture=rdi --pid=$WL_PID

say "workload: 'run 100000 1000' (xol_target_add(1000+i, 7) and xol_target_other(i))"
"$XOLCTL" --agent=$AGENT watch --count=3 --duration=30 >"$TMP/watch.out" 2>&1 &
WATCH_PID=$!
sleep 0.5
echo "run 100000 1000" >&9
until grep -q '^done' "$TMP/wl.out"; do sleep 0.1; done
"$XOLCTL" --agent=$AGENT list
wait $WATCH_PID || true
echo "first hit events (rdi = 1000 + i):"
cat "$TMP/watch.out"

say "live hit rates for ${SECONDS_TO_WATCH}s (workload spinning on xol_target_spin)"
echo "spin $SECONDS_TO_WATCH" >&9
prev=""
for i in $(seq 1 "$SECONDS_TO_WATCH"); do
  sleep 1
  cur=$("$XOLCTL" --agent=$AGENT list --json | python3 -c '
import json,sys
for p in json.load(sys.stdin).get("probes",[]):
    print(p["id"], p["spec"].get("symbol",""), p.get("site",{}).get("placement","").removeprefix("PLACEMENT_"), p.get("hits","0"))')
  python3 - "$prev" "$cur" "$i" <<'PY'
import sys
prev = {l.split()[0]: int(l.split()[3]) for l in sys.argv[1].splitlines() if l.strip()}
print(f"t={sys.argv[3]:>2}s", end="")
for l in sys.argv[2].splitlines():
    pid, sym, pl, hits = l.split()
    rate = int(hits) - prev.get(pid, int(hits))
    print(f"  {sym}[{pl}] {int(hits):>9} hits {rate:>8}/s", end="")
print()
PY
  prev=$cur
done

say "fleet view (desired vs actual)"
fleet list
say "agent /metrics (excerpt)"
curl -s http://127.0.0.1:9474/metrics | grep -E '^xolfleet_agent_(probes|probe_hits_total)' | head -12
say "controller /metrics (excerpt)"
curl -s http://127.0.0.1:9475/metrics | grep -E '^xolfleet_controller_(agents|probes)' | head -12
echo quit >&9
say "done"
