#!/usr/bin/env bash
# Failover benchmark (issue 13; a separate command, not CI): a three-member etcd cluster,
# three controller replicas (--store=etcd://..., --leader_lease=LEASE) and AGENTS (default
# 60) bench/fleet:sim_agent processes (the real controller link over mTLS, in-memory
# AgentApi), each listing every replica, all in a network namespace of its own (loopback
# only). Per run it kills -9 the leader and measures from the kill:
#   - leader:     until a surviving replica reports itself leader (xolfleet_controller_leader)
#   - first_step: until the new leader's first rollout step: a fleet attach to every agent
#                 sent through a surviving replica right after the kill reaches COMPLETE
#                 (only the leader can move it there)
#   - reconverged: until every agent whose stream was on the killed replica registered
#                 with another one and every agent is UP with all its sets attached
# then restarts the killed replica (it rejoins as a follower) before the next run.
#   bench/fleet/failover.sh [AGENTS] [RUNS] [LEASE]   appends to bench/fleet/results.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
AGENTS=${1:-60}
RUNS=${2:-3}
LEASE=${3:-3s}
OUT=${OUT:-bench/fleet/results.txt}
[ "$(id -u)" = 0 ] || { echo "needs root (a network namespace)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/xolfleet-failover.XXXXXX)
NS=xfo-$$
PIDS=()
declare -A CTL_PID
cleanup() {
  for p in "${PIDS[@]}" "${CTL_PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
log() { printf '[failover %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

log "building"
bazel build //bench/fleet:sim_agent //bench/fleet:fleet_bench \
  //services/controller:xolfleet-controller >/dev/null 2>&1
mkdir -p "$TMP/bin"
cp bazel-bin/bench/fleet/sim_agent bazel-bin/bench/fleet/fleet_bench \
  bazel-bin/services/controller/xolfleet-controller "$TMP/bin/"
BIN=$TMP/bin
CA=$TMP/ca
scripts/make-test-ca.sh "$CA" --agents "$AGENTS" --clients admin >/dev/null
printf 'admin cn:admin\nagent cn:node-*\n' >"$TMP/authz.conf"
ip netns add "$NS"
ip -n "$NS" link set lo up
# Foreground commands only: started with `&` a function runs in a subshell, and $! would be
# that shell, not the process (kill -9 would leave the process running).
inns() { ip netns exec "$NS" "$@"; }

CLUSTER=""
for m in 1 2 3; do CLUSTER+="${CLUSTER:+,}e$m=http://127.0.0.1:${m}2380"; done
for m in 1 2 3; do
  ip netns exec "$NS" etcd --name "e$m" --data-dir "$TMP/etcd$m" \
    --listen-client-urls "http://127.0.0.1:${m}2379" --advertise-client-urls "http://127.0.0.1:${m}2379" \
    --listen-peer-urls "http://127.0.0.1:${m}2380" --initial-advertise-peer-urls "http://127.0.0.1:${m}2380" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new >>"$TMP/etcd$m.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 300); do
  inns env ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379 \
    endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done

addr() { echo "127.0.0.1:$((7442 + $1))"; }
start_controller() {  # k
  local k=$1
  ip netns exec "$NS" "$BIN/xolfleet-controller" --listen="$(addr "$k")" --metrics_listen="127.0.0.1:$((9464 + k))" \
    --store=etcd://127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379 --replica_name="r$k" \
    --leader_lease="$LEASE" --tls_ca="$CA/ca.crt" --tls_cert="$CA/controller.crt" \
    --tls_key="$CA/controller.key" --authz_config="$TMP/authz.conf" \
    --heartbeat_interval=1s --heartbeat_timeout=10s >>"$TMP/controller$k.log" 2>&1 &
  CTL_PID[$k]=$!
}
is_leader() { inns curl -s --max-time 2 "http://127.0.0.1:$((9464 + $1))/metrics" 2>/dev/null | grep -q '^xolfleet_controller_leader 1'; }
leader() { local k; for k in 1 2 3; do is_leader "$k" && { echo "$k"; return 0; }; done; return 1; }
bench() {  # K ARGS...
  local k=$1; shift
  inns "$BIN/fleet_bench" --controller="$(addr "$k")" --tls_ca="$CA/ca.crt" --tls_cert="$CA/admin.crt" \
    --tls_key="$CA/admin.key" --agents="$AGENTS" "$@"
}

for k in 1 2 3; do start_controller "$k"; done
log "starting $AGENTS agents (agent i lists replica (i mod 3)+1 first)"
for i in $(seq 1 "$AGENTS"); do
  first=$(((i % 3) + 1))
  targets="$(addr $first),$(addr $((first % 3 + 1))),$(addr $(((first + 1) % 3 + 1)))"
  ip netns exec "$NS" "$BIN/sim_agent" --controller="$targets" --node_name="node-$i" \
    --tls_ca="$CA/ca.crt" --tls_cert="$CA/node-$i.crt" --tls_key="$CA/node-$i.key" \
    2>>"$TMP/agent$i.log" &
  PIDS+=($!)
done
for k in 1 2 3; do bench "$k" --mode=wait_agents --timeout=180 >/dev/null; done
sleep 2  # every replica (the leader too) has synced every agent's status
log "all agents up on every replica; 5 standing probe sets"
bench 1 --mode=attach --rounds=5 --detach_after=false --timeout=300 >/dev/null

# The replica each agent's stream is on now (its log's last "registered" line).
on_replica() {  # k: agents whose stream is on replica k
  local i n=0
  for i in $(seq 1 "$AGENTS"); do
    grep 'registered (connect' "$TMP/agent$i.log" | tail -1 | grep -q "to $(addr "$1"):" && n=$((n + 1))
  done
  echo "$n"
}
registrations() { cat "$TMP"/agent*.log | grep -c 'registered (connect' || true; }

results=()
for run in $(seq 1 "$RUNS"); do
  for _ in $(seq 1 300); do L=$(leader) && break; sleep 0.2; done
  S=$((L % 3 + 1))
  moved=$(on_replica "$L")
  regs0=$(registrations)
  log "run $run: leader r$L holds $moved agent streams; kill -9"
  t0=$(now)
  kill -9 "${CTL_PID[$L]}"
  ( for _ in $(seq 1 1500); do
      for k in 1 2 3; do [ "$k" != "$L" ] && is_leader "$k" && { now >"$TMP/leader.t"; exit 0; }; done
      sleep 0.05
    done ) &
  poller=$!
  # Returns when the rollout ended (fleet_bench then also insists every agent counted as
  # attached, which the killed replica's agents may not be yet: that verdict is ignored).
  # A connection refused by a replica that has only just restarted is retried.
  for _ in 1 2 3 4 5; do
    bench "$S" --mode=attach --rounds=1 --detach_after=false --timeout=120 >"$TMP/step.out" 2>&1 || true
    grep -q 'failed to connect' "$TMP/step.out" || break
    sleep 0.2
  done
  t_step=$(now)
  grep -q ROLLOUT_STATE_COMPLETE "$TMP/step.out" || grep -q p50_ms "$TMP/step.out" ||
    { log "run $run: the attach did not complete: $(cat "$TMP/step.out")"; exit 1; }
  wait "$poller" || true
  t_leader=$(cat "$TMP/leader.t" 2>/dev/null || echo "$t0")
  for _ in $(seq 1 1200); do (($(registrations) >= regs0 + moved)) && break; sleep 0.1; done
  bench "$S" --mode=converge --timeout=120 >/dev/null 2>&1
  t_conv=$(now)
  r="leader=$(since "$t0" "$t_leader")s first_step=$(since "$t0" "$t_step")s reconverged=$(since "$t0" "$t_conv")s moved=$moved"
  log "run $run: $r"
  results+=("$r")
  wait "${CTL_PID[$L]}" 2>/dev/null || true
  start_controller "$L"
  bench "$L" --mode=converge --timeout=120 >/dev/null 2>&1
  sleep 3
done

{
  echo
  echo "# xolfleet failover benchmark, bench/fleet/failover.sh ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work shares this machine)"
  echo "# machine: $(nproc) CPUs, kernel $(uname -r); etcd $(etcd --version | awk 'NR==1 {print $3}') x3 on loopback"
  echo "# 3 controller replicas, --leader_lease=$LEASE, heartbeats 1 s; $AGENTS sim_agent processes"
  echo "#   listing every replica; 5 standing sets + 1 attached per run. From kill -9 of the leader:"
  echo "#   leader = a survivor reports itself leader; first_step = an attach sent right after the"
  echo "#   kill reaches COMPLETE (the new leader's first rollout step); reconverged = the killed"
  echo "#   replica's agents (moved) registered elsewhere and every agent up and converged"
  for i in "${!results[@]}"; do
    echo "failover_run_$((i + 1))                   ${results[$i]}"
  done
} | tee -a "$OUT"
