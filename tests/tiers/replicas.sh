#!/usr/bin/env bash
# Tier "replicas": controller replicas on etcd (issue 13). A three-member etcd cluster on
# loopback and three controller replicas (--store=etcd://..., --leader_lease=3s) in one
# network namespace; three real agents, each in its own network and mount namespace as in
# the fleet tier (tests/tiers/fleet.sh), over mTLS, each given every replica's address
# (starting with a different one, so the agents spread over the replicas).
#
# Checks: one leader; every agent seen UP from every replica; kill -9 of the leader in the
# middle of a canary rollout: another replica takes over, the rollout completes exactly
# once, every agent reconnected, each node runs each fleet probe exactly once and counts
# exact hits; kill -9 of one etcd member: rollouts and reads go on; kill -9 of a second
# (the majority gone): every replica refuses writes with UNAVAILABLE and a message naming
# the store, and keeps serving reads; members restarted: writes and a leader come back by
# themselves. No timing thresholds: every wait polls with a generous timeout.
# Needs root. Prints RESULT lines; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=3      # agents
R=3      # controller replicas
SUF=$$
NSC=xrc-$SUF
TMP=$(mktemp -d /tmp/xolfleet-replicas.XXXXXX)
FAILED=0
PIDS=()
declare -A AGENT_PID WL_FD CTL_PID ETCD_PID

log() { printf '[replicas %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { echo "RESULT PASS replicas-$1"; }
fail() { echo "RESULT FAIL replicas-$1 $2"; FAILED=1; }
check() { local name=$1 why=$2; shift 2; if "$@"; then pass "$name"; else fail "$name" "$why"; fi; }
wait_for() {  # SECONDS CMD...: polls CMD every 0.2 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS >= end)) && return 1; sleep 0.2; done
}

cleanup() {
  for fd in "${WL_FD[@]}"; do eval "exec $fd>&-" 2>/dev/null; done
  local all=("${PIDS[@]}" "${AGENT_PID[@]}" "${CTL_PID[@]}" "${ETCD_PID[@]}")
  for p in "${all[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${all[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$NSC" 2>/dev/null
  for i in $(seq 1 $N); do ip netns del "xra$i-$SUF" 2>/dev/null; done
  if ((FAILED)); then
    log "logs kept in $TMP"
    for f in "$TMP"/*.log; do echo "--- $f"; tail -n 15 "$f"; done >&2
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if [ "$(id -u)" != 0 ]; then fail setup "needs root (network namespaces, uprobes)"; exit 1; fi
command -v etcd >/dev/null || { fail setup "etcd not installed (scripts/setup.sh: etcd-server)"; exit 1; }

# --- binaries (copied: other builds may replace bazel-bin while this runs) ---
mkdir -p "$TMP/bin" "$TMP/mnt"
for b in services/controller/xolfleet-controller services/agent/xolfleet-agent \
         services/cli/xolctl tests/workloads/hit_workload; do
  if [ ! -x "bazel-bin/$b" ]; then
    bazel build "//${b%/*}:${b##*/}" >"$TMP/build.log" 2>&1 || { fail setup "cannot build $b"; exit 1; }
  fi
  cp "bazel-bin/$b" "$TMP/bin/" || { fail setup "missing $b"; exit 1; }
  if [ -d "bazel-bin/$b.private" ]; then cp -rL "bazel-bin/$b.private" "$TMP/bin/"; fi
done
BIN=$TMP/bin
CA=$TMP/ca
scripts/make-test-ca.sh "$CA" --server-san 10.233.0.1 --agents $N >/dev/null 2>&1 ||
  { fail setup "make-test-ca.sh failed"; exit 1; }
cat >"$TMP/authz.conf" <<EOF2
admin          cn:admin
read-only      cn:viewer
attach-counts  cn:counter
agent          cn:node-*
EOF2

# --- network: as in the fleet tier, on 10.233.0.0/24 (exists only in the namespaces) ---
setup_net() {
  ip netns add "$NSC" || return 1
  ip -n "$NSC" link set lo up
  ip -n "$NSC" link add xrbr0 type bridge || return 1
  ip -n "$NSC" addr add 10.233.0.1/24 dev xrbr0
  ip -n "$NSC" link set xrbr0 up
  for i in $(seq 1 $N); do
    local ns=xra$i-$SUF
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip -n "$NSC" link add "xrh$i" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$NSC" link set "xrh$i" master xrbr0 up
    ip -n "$ns" addr add "10.233.0.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}
setup_net || { fail setup "cannot create network namespaces"; exit 1; }

# --- etcd: three members on the controllers' namespace's loopback ---
CLUSTER=""
for m in 1 2 3; do CLUSTER+="${CLUSTER:+,}e$m=http://127.0.0.1:${m}2380"; done
ETCD_URL="etcd://127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379"
start_etcd() {  # m (a restarted member keeps its data directory)
  local m=$1
  ip netns exec "$NSC" etcd --name "e$m" --data-dir "$TMP/etcd$m" \
    --listen-client-urls "http://127.0.0.1:${m}2379" --advertise-client-urls "http://127.0.0.1:${m}2379" \
    --listen-peer-urls "http://127.0.0.1:${m}2380" --initial-advertise-peer-urls "http://127.0.0.1:${m}2380" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "xr-$SUF" \
    >>"$TMP/etcd$m.log" 2>&1 &
  ETCD_PID[$m]=$!
}
etcd_healthy() {  # how many members answer as healthy
  local n=0
  for m in 1 2 3; do
    ip netns exec "$NSC" env ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:${m}2379" \
      --command-timeout=3s endpoint health >/dev/null 2>&1 && n=$((n + 1))
  done
  [ "$n" -ge "$1" ]
}

# --- controller replicas: same address, ports 7443.. (one certificate serves all) ---
ctl_addr() { echo "10.233.0.1:$((7442 + $1))"; }
start_controller() {  # k
  local k=$1
  ip netns exec "$NSC" "$BIN/xolfleet-controller" --listen="$(ctl_addr "$k")" \
    --metrics_listen="10.233.0.1:$((9464 + k))" --store="$ETCD_URL" --replica_name="r$k" \
    --leader_lease=3s --tls_ca="$CA/ca.crt" --tls_cert="$CA/controller.crt" \
    --tls_key="$CA/controller.key" --authz_config="$TMP/authz.conf" \
    --heartbeat_interval=250ms --heartbeat_timeout=5s --canary_timeout=120s \
    >>"$TMP/controller$k.log" 2>&1 &
  CTL_PID[$k]=$!
}
is_leader() {  # k
  ip netns exec "$NSC" curl -s --max-time 5 "http://10.233.0.1:$((9464 + $1))/metrics" 2>/dev/null |
    grep -q '^xolfleet_controller_leader 1'
}
leader() {  # prints the leading replica's number; fails unless exactly one leads
  local found=() k
  for k in $(seq 1 $R); do
    [ -n "${CTL_PID[$k]:-}" ] && is_leader "$k" && found+=("$k")
  done
  ((${#found[@]} == 1)) && echo "${found[0]}"
}
one_leader() { leader >/dev/null; }
rollouts_counted() {  # sum of xolfleet_controller_rollouts_total over live replicas
  local k s=0 v
  for k in $(seq 1 $R); do
    [ -n "${CTL_PID[$k]:-}" ] || continue
    v=$(ip netns exec "$NSC" curl -s --max-time 5 "http://10.233.0.1:$((9464 + k))/metrics" |
      awk '/^xolfleet_controller_rollouts_total/ {s += $2} END {print s + 0}')
    s=$((s + v))
  done
  echo "$s"
}

# --- agents: node i lists every replica, starting with replica i ---
in_node() {  # i CMD...
  local i=$1; shift
  exec ip netns exec "xra$i-$SUF" unshare -m --propagation private \
    sh -c 'mount --bind "$0" "$1" && shift && exec "$@"' "$TMP/node$i" "$TMP/mnt" "$@"
}
start_agent() {  # i
  local i=$1 k targets=""
  for k in $(seq 0 $((R - 1))); do targets+="${targets:+,}$(ctl_addr $(((i - 1 + k) % R + 1)))"; done
  in_node "$i" "$BIN/xolfleet-agent" --unix-socket="$TMP/node$i/agent.sock" --metrics_address= \
    --node_name="node-$i" --controller="$targets" --controller_tls_ca="$CA/ca.crt" \
    --controller_tls_cert="$CA/node-$i.crt" --controller_tls_key="$CA/node-$i.key" \
    >>"$TMP/agent$i.log" 2>&1 &
  AGENT_PID[$i]=$!
}
start_workload() {  # i
  local i=$1
  mkfifo "$TMP/wl$i.in"
  in_node "$i" "$TMP/mnt/hit_workload" <"$TMP/wl$i.in" >"$TMP/wl$i.out" 2>&1 &
  PIDS+=($!)
  local fd
  exec {fd}>"$TMP/wl$i.in"
  WL_FD[$i]=$fd
}

fleet_at() {  # K WHO ARGS...: xolctl fleet against replica K as client WHO
  local k=$1 who=$2; shift 2
  ip netns exec "$NSC" "$BIN/xolctl" fleet --controller="$(ctl_addr "$k")" --tls-ca="$CA/ca.crt" \
    --tls-cert="$CA/$who.crt" --tls-key="$CA/$who.key" --timeout=30 "$@"
}
agents_up_at() {  # K N: replica K sees N agents up
  [ "$(fleet_at "$1" admin agents --json 2>/dev/null | tests/fleet/fleetq.py agents | grep -c ' AGENT_UP ')" = "$2" ]
}
all_agents_up_everywhere() {
  local k
  for k in $(seq 1 $R); do
    [ -n "${CTL_PID[$k]:-}" ] || continue
    agents_up_at "$k" $N || return 1
  done
}
rollout_state_at() { fleet_at "$1" admin rollout "$2" --json 2>/dev/null | tests/fleet/fleetq.py rollout | awk '{print $2}'; }
probes_at() { local k=$1; shift; fleet_at "$k" admin list --json "$@" 2>/dev/null | tests/fleet/fleetq.py probes; }
local_probes() {  # i: the agent's own List (inactive too), fleet probes only
  ip netns exec "xra$1-$SUF" "$BIN/xolctl" --agent="unix:$TMP/node$1/agent.sock" list --all --json |
    tests/fleet/fleetq.py local | awk '$3 != "-"'
}
# Every node runs each of the set's fleet probes exactly once (ATTACHED) and nothing else
# of it (no detached leftovers re-attached, no duplicates).
exactly_once_on_every_node() {  # SET NSPECS
  local set=$1 nspecs=$2 i k l
  for i in $(seq 1 $N); do
    l=$(local_probes "$i" | awk -v s="$set/" '$2 == "ATTACHED" && index($3, s) == 1 {print $3}' | sort)
    [ "$(echo "$l" | grep -c .)" = "$nspecs" ] || return 1
    [ -z "$(echo "$l" | uniq -d)" ] || return 1
  done
}

WL=$TMP/mnt/hit_workload
for i in $(seq 1 $N); do mkdir -p "$TMP/node$i"; cp "$BIN/hit_workload" "$TMP/node$i/"; done

log "starting a 3-member etcd cluster, $R controller replicas and $N agents"
for m in 1 2 3; do start_etcd "$m"; done
wait_for 90 etcd_healthy 3 || { fail setup "etcd cluster not healthy: $(tail -3 "$TMP/etcd1.log")"; exit 1; }
for k in $(seq 1 $R); do start_controller "$k"; done
for i in $(seq 1 $N); do start_agent "$i"; start_workload "$i"; done

# 1. One leader; every agent up as seen from every replica (statuses shared via etcd).
check one-leader "leaders: $(for k in $(seq 1 $R); do is_leader $k && echo -n "r$k "; done)" \
  wait_for 60 one_leader
check agents-seen-from-every-replica \
  "$(for k in $(seq 1 $R); do echo -n "r$k: $(fleet_at $k admin agents --json 2>&1 | tests/fleet/fleetq.py agents 2>&1 | tr '\n' ' ')| "; done)" \
  wait_for 60 all_agents_up_everywhere

# 2. kill -9 the leader in the middle of a canary rollout (the soak keeps the canary stage
#    open); the set is created through another replica.
L=$(leader)
F=$(((L % R) + 1))
base_rollouts=$(rollouts_counted)
out=$(fleet_at "$F" counter attach --all --canary=0.3 --canary-soak=8 --no-wait \
  "$WL:xol_target_add" "$WL:xol_target_other" 2>&1)
SET_A=$(echo "$out" | awk '$1 ~ /^ps-/ {print $1}' | tail -1)
state_at_kill=$(rollout_state_at "$F" "$SET_A")
log "leader r$L, set $SET_A ($state_at_kill) through r$F; kill -9 r$L"
kill -9 "${CTL_PID[$L]}"; wait "${CTL_PID[$L]}" 2>/dev/null
unset "CTL_PID[$L]"
if [ -z "$SET_A" ] || [ "$state_at_kill" != ROLLOUT_CANARY ]; then
  fail leader-kill9-mid-rollout "set '$SET_A' was '$state_at_kill' when the leader was killed: $out"
fi
check new-leader "no single leader among the rest" wait_for 60 one_leader
NL=$(leader)
[ -n "$NL" ] && [ "$NL" != "$L" ] || fail new-leader "leader is '$NL' after r$L was killed"
# Poll to the end and remember every state seen: complete, never rolled back on the way.
SEEN=""
completed() {
  local s; s=$(rollout_state_at "$F" "$SET_A")
  [ -n "$s" ] && SEEN+="$s "
  [ "$s" = ROLLOUT_COMPLETE ]
}
if wait_for 120 completed; then
  pass rollout-completes-after-failover
else
  fail rollout-completes-after-failover "states seen: $SEEN"
fi
check rollout-never-rolled-back "states seen: $SEEN" eval '! grep -q ROLLED_BACK <<<"$SEEN"'
sleep 2  # a few more ticks: a second outcome would show here
check rollout-finished-once "rollouts counted by live replicas: $(rollouts_counted) (before: $base_rollouts)" \
  [ "$(rollouts_counted)" = $((base_rollouts + 1)) ]
for k in $(seq 1 $R); do
  [ -n "${CTL_PID[$k]:-}" ] || continue
  st=$(rollout_state_at "$k" "$SET_A")
  [ "$st" = ROLLOUT_COMPLETE ] || fail "rollout-state-r$k" "r$k says $st"
done
check agents-reconnected "$(for k in $(seq 1 $R); do [ -n "${CTL_PID[$k]:-}" ] && echo -n "r$k: $(fleet_at $k admin agents --json 2>&1 | tests/fleet/fleetq.py agents 2>&1 | tr '\n' ' ')| "; done)" \
  wait_for 60 all_agents_up_everywhere
check no-probe-lost-or-duplicated "$(for i in $(seq 1 $N); do echo -n "node-$i: $(local_probes $i | tr '\n' ' ')| "; done)" \
  wait_for 30 exactly_once_on_every_node "$SET_A" 2
# Exact hits per node, read through any replica: node i calls each target 1000*i times.
for i in $(seq 1 $N); do echo "run $((1000 * i)) 0" >&"${WL_FD[$i]}"; done
exact_hits() {  # K
  local p; p=$(probes_at "$1" --set="$SET_A")
  for i in $(seq 1 $N); do
    for s in 0 1; do
      echo "$p" | grep -q "^node-$i $SET_A/$s ATTACHED $((1000 * i)) 1 yes$" || return 1
    done
  done
}
for k in $(seq 1 $R); do
  [ -n "${CTL_PID[$k]:-}" ] || continue
  check "exact-hits-via-r$k" "$(probes_at $k --set="$SET_A" | tr '\n' ';')" wait_for 30 exact_hits "$k"
done
# The killed replica comes back as a follower and sees everything.
start_controller "$L"
check killed-replica-rejoins "r$L does not see the fleet" wait_for 60 all_agents_up_everywhere
check still-one-leader "leaders changed" wait_for 30 one_leader

# 3. kill -9 one etcd member: rollouts and reads go on.
kill -9 "${ETCD_PID[1]}"; wait "${ETCD_PID[1]}" 2>/dev/null
unset "ETCD_PID[1]"
out=$(fleet_at 2 counter attach --all "$WL:xol_target_spin" 2>&1)
rc=$?
SET_B=$(echo "$out" | awk '$1 ~ /^ps-/ {print $1}' | tail -1)
check one-etcd-member-down-attach "rc=$rc: $(echo "$out" | tr '\n' ' ')" \
  eval '((rc == 0)) && echo "$out" | grep -q COMPLETE'
check one-etcd-member-down-exactly-once "set $SET_B" wait_for 30 exactly_once_on_every_node "$SET_B" 1
check one-etcd-member-down-leader "no leader" wait_for 60 one_leader

# 4. kill -9 a second member: no majority. Writes are refused, with UNAVAILABLE and the
#    store named, by every replica; reads are served; the agents keep their probes.
kill -9 "${ETCD_PID[2]}"; wait "${ETCD_PID[2]}" 2>/dev/null
unset "ETCD_PID[2]"
refuses_writes() {  # K
  local err; err=$(fleet_at "$1" counter attach --all "$WL:xol_target_fast" 2>&1)
  grep -q "UNAVAILABLE.*desired-state store unavailable" <<<"$err"
}
for k in $(seq 1 $R); do
  check "no-majority-write-refused-r$k" "$(fleet_at $k counter attach --all "$WL:xol_target_fast" 2>&1 | tr '\n' ' ')" \
    wait_for 60 refuses_writes "$k"
  check "no-majority-detach-refused-r$k" "detach went through" \
    eval '! fleet_at '"$k"' counter detach '"$SET_B"' >/dev/null 2>&1'
  check "no-majority-reads-r$k" "$(fleet_at $k admin list 2>&1 | tail -2 | tr '\n' ' ')" \
    eval 'probes_at '"$k"' --set='"$SET_A"' | grep -q "^node-1 $SET_A/0 "'
  check "no-majority-agents-read-r$k" "list agents failed" \
    eval 'fleet_at '"$k"' admin agents >/dev/null 2>&1'
done
no_leader() {
  local k
  for k in $(seq 1 $R); do is_leader "$k" && return 1; done
  return 0
}
check no-majority-no-leader "a replica still acts as leader" wait_for 60 no_leader
check no-majority-probes-kept "$(for i in $(seq 1 $N); do echo -n "node-$i: $(local_probes $i | tr '\n' ' ')| "; done)" \
  exactly_once_on_every_node "$SET_A" 2

# 5. The members come back: a leader, writes and every agent, with nobody restarting anything.
start_etcd 1
start_etcd 2
check etcd-recovers "etcd not healthy" wait_for 90 etcd_healthy 3
check recovery-leader "no leader after etcd recovered" wait_for 90 one_leader
attach_works() {
  out=$(fleet_at 3 counter attach --all "$WL:xol_target_fast" 2>&1) && echo "$out" | grep -q COMPLETE
}
check recovery-writes "$(echo "${out:-}" | tr '\n' ' ')" wait_for 90 attach_works
check recovery-agents "$(for k in $(seq 1 $R); do echo -n "r$k: $(fleet_at $k admin agents --json 2>&1 | tests/fleet/fleetq.py agents 2>&1 | tr '\n' ' ')| "; done)" \
  wait_for 60 all_agents_up_everywhere
check recovery-exactly-once "set $SET_A" wait_for 30 exactly_once_on_every_node "$SET_A" 2

exit $FAILED
