#!/usr/bin/env bash
# Fleet benchmark: one controller and AGENTS (default 100) agent processes on this
# machine, all over mTLS on loopback. Measures
#   - registration: time until every agent is UP
#   - fleet attach latency to all agents (p50/p99): AttachFleet with wait=true, i.e. from
#     the request until every agent reported the set attached (rollout COMPLETE)
#   - reconvergence after kill -9 of the controller: from the new process's start until
#     every agent is UP again with all its desired sets attached
#   - controller RSS and CPU (idle with heartbeats, and during the attach rounds)
# The agents are bench/fleet:sim_agent: the real controller link (gRPC, mTLS, heartbeats,
# reconciliation) over an in-memory AgentApi, no BPF: this measures the controller and
# the protocol, not uprobe attach cost (see the agent's benchmark for that).
#   bench/fleet/run.sh [AGENTS] [ROUNDS]     results: bench/fleet/results.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
AGENTS=${1:-100}
ROUNDS=${2:-200}
OUT=${OUT:-bench/fleet/results.txt}
TMP=$(mktemp -d /tmp/xolfleet-bench.XXXXXX)
PIDS=()
CTL_PID=
cleanup() {
  for p in "${PIDS[@]}" $CTL_PID; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}" $CTL_PID; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "building"
bazel build //bench/fleet:sim_agent //bench/fleet:fleet_bench \
  //services/controller:xolfleet-controller >/dev/null 2>&1
mkdir -p "$TMP/bin"
cp bazel-bin/bench/fleet/sim_agent bazel-bin/bench/fleet/fleet_bench \
  bazel-bin/services/controller/xolfleet-controller "$TMP/bin/"
BIN=$TMP/bin
CA=$TMP/ca
log "making a test CA and $AGENTS agent certificates"
scripts/make-test-ca.sh "$CA" --agents "$AGENTS" --clients admin >/dev/null
printf 'admin cn:admin\nagent cn:node-*\n' >"$TMP/authz.conf"
read -r PORT MPORT <<<"$(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')"
CTL=127.0.0.1:$PORT

start_controller() {
  "$BIN/xolfleet-controller" --listen=$CTL --metrics_listen=127.0.0.1:$MPORT \
    --state_db="$TMP/c.db" --init --tls_ca="$CA/ca.crt" --tls_cert="$CA/controller.crt" \
    --tls_key="$CA/controller.key" --authz_config="$TMP/authz.conf" \
    --heartbeat_interval=1s --heartbeat_timeout=10s >>"$TMP/controller.log" 2>&1 &
  CTL_PID=$!
}
bench() {
  "$BIN/fleet_bench" --controller=$CTL --tls_ca="$CA/ca.crt" --tls_cert="$CA/admin.crt" \
    --tls_key="$CA/admin.key" --agents="$AGENTS" "$@"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

start_controller
sleep 0.5
log "starting $AGENTS agents"
t0=$(date +%s.%N)
for i in $(seq 1 "$AGENTS"); do
  "$BIN/sim_agent" --controller=$CTL --node_name="node-$i" --labels="zone=z$((i % 4))" \
    --tls_ca="$CA/ca.crt" --tls_cert="$CA/node-$i.crt" --tls_key="$CA/node-$i.key" \
    2>>"$TMP/agents.log" &
  PIDS+=($!)
done
bench --mode=wait_agents --timeout=180 >/dev/null
reg=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
log "all $AGENTS agents up ${reg}s after the first agent process was started"

sleep 2
c0=$(cpu_ticks $CTL_PID); sleep 10; c1=$(cpu_ticks $CTL_PID)
idle_cpu=$(python3 -c "print(f'{($c1 - $c0) / $HZ / 10 * 100:.1f}')")
idle_rss=$(rss_kib $CTL_PID)
log "idle: controller CPU ${idle_cpu}% of one core, RSS ${idle_rss} KiB"

BASE_SETS=20
log "$BASE_SETS standing probe sets on every agent (kept through the restarts)"
bench --mode=attach --rounds=$BASE_SETS --detach_after=false --timeout=600 >/dev/null
log "attach rounds: $ROUNDS to all $AGENTS agents, no canary (each set detached after, untimed)"
agents_ticks() { for p in "${PIDS[@]}"; do cpu_ticks "$p"; done | awk '{s += $1} END {print s}'; }
c0=$(cpu_ticks $CTL_PID); a0=$(agents_ticks); w0=$(date +%s.%N)
attach=$(bench --mode=attach --rounds="$ROUNDS" --timeout=600)
c1=$(cpu_ticks $CTL_PID); a1=$(agents_ticks); w1=$(date +%s.%N)
per_round=$(python3 -c "print(f'controller {($c1 - $c0) / $HZ / $ROUNDS * 1000:.1f} ms, all agents {($a1 - $a0) / $HZ / $ROUNDS * 1000:.1f} ms')")
attach_cpu=$(python3 -c "print(f'{($c1 - $c0) / $HZ / ($w1 - $w0) * 100:.1f}')")
log "$attach (controller CPU ${attach_cpu}% of one core)"
log "attach rounds: 20 with a 10% canary"
canary=$(bench --mode=attach --rounds=20 --canary=0.1 --timeout=600)
log "$canary"
busy_rss=$(rss_kib $CTL_PID)
sets=$BASE_SETS

reconv=()
for r in 1 2 3; do
  log "kill -9 controller (run $r); restart; wait for reconvergence ($sets sets per agent)"
  kill -9 $CTL_PID; wait $CTL_PID 2>/dev/null || true
  sleep 1
  start_controller
  s=$(bench --mode=converge --timeout=120 2>>"$TMP/converge.log")
  reconv+=("$s")
  log "reconverged in ${s}s"; tail -n 4 "$TMP/converge.log" >&2; : >"$TMP/converge.log"
done
final_rss=$(rss_kib $CTL_PID)
agent_rss=$(for p in "${PIDS[@]:0:5}"; do rss_kib "$p"; done | awk '{s += $1} END {printf "%d", s / NR}')

{
  echo "# xolfleet fleet benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work shares this machine)"
  echo "# machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
  echo "# agents: $AGENTS processes of bench/fleet:sim_agent (real controller link, gRPC + mTLS,"
  echo "#   heartbeats every 1 s; in-memory AgentApi, no BPF: controller + protocol cost only)"
  echo "registration_all_up_s            $reg"
  echo "attach_all_nodes_no_canary       $attach   ($BASE_SETS other sets standing)"
  echo "attach_all_nodes_canary_10pct    $canary"
  echo "reconverge_after_kill9_s         ${reconv[*]}   (3 runs; controller start -> all $AGENTS up and converged, $sets sets each)"
  echo "controller_cpu_idle_pct          $idle_cpu   (of one core; $AGENTS agents heartbeating)"
  echo "controller_cpu_attach_pct        $attach_cpu   (of one core, during the $ROUNDS attach rounds)"
  echo "cpu_per_attach_round             $per_round   (each round: attach + detach, both pushed to every agent; wall time includes the untimed detach)"
  echo "controller_rss_kib               idle=$idle_rss after_attaches=$busy_rss after_restarts=$final_rss"
  echo "sim_agent_rss_kib_avg            $agent_rss"
} | tee "$OUT"
