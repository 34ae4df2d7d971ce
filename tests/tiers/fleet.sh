#!/usr/bin/env bash
# Tier "fleet": a controller and 3 real agents on this machine, each in its own network
# namespace (veth pairs on a bridge, private subnet 10.231.0.0/24 that exists only inside
# the namespaces), talking mTLS. Each agent and its workload also run in a private mount
# namespace where the same path (…/mnt/hit_workload) is that node's own copy of the
# workload, so one fleet-wide probe spec hits a different file (inode) on every node and
# hit totals are exact per node.
#
# Checks: registration over mTLS, canary rollout with a selector, exact hits per node,
# label selectors, kill -9 of an agent mid-rollout (restart converges: no duplicates, no
# leftovers), heartbeat timeout (agent DOWN, probes UNKNOWN, not deleted), kill -9 of the
# controller (everything comes back), canary failure rolls back, authorization per
# capability, clients without a valid certificate rejected, plaintext refused off
# loopback, request validation, certificates and authorization files reloaded without a
# restart (tests/fleet/reload.sh). Needs root. Prints RESULT lines; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=3
SUF=$$
NSC=xfc-$SUF
TMP=$(mktemp -d /tmp/xolfleet-fleet.XXXXXX)
FAILED=0
PIDS=()
declare -A AGENT_PID WL_FD

log() { printf '[fleet %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { echo "RESULT PASS fleet-$1"; }
fail() { echo "RESULT FAIL fleet-$1 $2"; FAILED=1; }
check() { local name=$1 why=$2; shift 2; if "$@"; then pass "$name"; else fail "$name" "$why"; fi; }
wait_for() {  # SECONDS CMD...: polls CMD every 0.2 s
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS >= end)) && return 1; sleep 0.2; done
}

cleanup() {
  for fd in "${WL_FD[@]}"; do eval "exec $fd>&-" 2>/dev/null; done
  for p in "${PIDS[@]}" "${AGENT_PID[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}" "${AGENT_PID[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$NSC" 2>/dev/null
  for i in $(seq 1 $N); do ip netns del "xfa$i-$SUF" 2>/dev/null; done
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

# --- binaries (copied: other builds may replace bazel-bin while this runs) ---
mkdir -p "$TMP/bin" "$TMP/mnt"
for b in services/controller/xolfleet-controller services/agent/xolfleet-agent \
         services/cli/xolctl tests/workloads/hit_workload; do
  if [ ! -x "bazel-bin/$b" ]; then
    bazel build "//${b%/*}:${b##*/}" >"$TMP/build.log" 2>&1 || { fail setup "cannot build $b"; exit 1; }
  fi
  cp "bazel-bin/$b" "$TMP/bin/" || { fail setup "missing $b"; exit 1; }
  # The agent and xolctl run on private libraries kept beside them (services/agent/README.md).
  if [ -d "bazel-bin/$b.private" ]; then cp -rL "bazel-bin/$b.private" "$TMP/bin/"; fi
done
BIN=$TMP/bin
CA=$TMP/ca
scripts/make-test-ca.sh "$CA" --server-san 10.231.0.1 --agents $N >/dev/null 2>&1 ||
  { fail setup "make-test-ca.sh failed"; exit 1; }
cat >"$TMP/authz.conf" <<EOF2
admin          cn:admin
read-only      cn:viewer
attach-counts  cn:counter
attach-capture cn:capturer
agent          cn:node-*
EOF2

# --- network: bridge in the controller's namespace, one veth per agent namespace ---
setup_net() {
  ip netns add "$NSC" || return 1
  ip -n "$NSC" link set lo up
  ip -n "$NSC" link add xfbr0 type bridge || return 1
  ip -n "$NSC" addr add 10.231.0.1/24 dev xfbr0
  ip -n "$NSC" link set xfbr0 up
  for i in $(seq 1 $N); do
    local ns=xfa$i-$SUF
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip -n "$NSC" link add "xfh$i" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$NSC" link set "xfh$i" master xfbr0 up
    ip -n "$ns" addr add "10.231.0.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}
setup_net || { fail setup "cannot create network namespaces"; exit 1; }

CTL_ADDR=10.231.0.1:7443
start_controller() {
  ip netns exec "$NSC" "$BIN/xolfleet-controller" --listen=$CTL_ADDR \
    --metrics_listen=10.231.0.1:9465 --state_db="$TMP/controller.db" --init \
    --tls_ca="$CA/ca.crt" --tls_cert="$CA/controller.crt" --tls_key="$CA/controller.key" \
    --authz_config="$TMP/authz.conf" --heartbeat_interval=250ms --heartbeat_timeout=3s \
    --canary_timeout=30s --config_reload_interval=1s >>"$TMP/controller.log" 2>&1 &
  CTL_PID=$!
}

# Node i's private view: $TMP/mnt is bind-mounted from $TMP/node$i in a mount namespace.
in_node() {  # i CMD...
  local i=$1; shift
  # exec: started with `&`, the job's pid ($!) is then the process itself (for kill -9).
  exec ip netns exec "xfa$i-$SUF" unshare -m --propagation private \
    sh -c 'mount --bind "$0" "$1" && shift && exec "$@"' "$TMP/node$i" "$TMP/mnt" "$@"
}
start_agent() {  # i
  local i=$1 labels=zone=a
  ((i == N)) && labels=zone=b
  in_node "$i" "$BIN/xolfleet-agent" --unix-socket="$TMP/node$i/agent.sock" \
    --metrics_address="10.231.0.$((10 + i)):9464" --node_name="node-$i" --labels="$labels" \
    --controller=$CTL_ADDR --controller_tls_ca="$CA/ca.crt" \
    --controller_tls_cert="$CA/node-$i.crt" --controller_tls_key="$CA/node-$i.key" \
    --config_reload_interval=1s >>"$TMP/agent$i.log" 2>&1 &
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

fleet() {  # WHO ARGS...: xolctl fleet as client WHO, from the controller's namespace
  local who=$1; shift
  ip netns exec "$NSC" "$BIN/xolctl" fleet --controller=$CTL_ADDR --tls-ca="$CA/ca.crt" \
    --tls-cert="$CA/$who.crt" --tls-key="$CA/$who.key" --timeout=30 "$@"
}
agents_up() { [ "$(fleet admin agents --json 2>/dev/null | tests/fleet/fleetq.py agents | grep -c ' AGENT_UP ')" = "$1" ]; }
probes() { fleet admin list --json "$@" 2>/dev/null | tests/fleet/fleetq.py probes; }
local_probes() {  # i: the agent's own List (include inactive), fleet probes only
  ip netns exec "xfa$1-$SUF" "$BIN/xolctl" --agent="unix:$TMP/node$1/agent.sock" list --all --json |
    tests/fleet/fleetq.py local | awk '$3 != "-"'
}
rollout_state() { fleet admin rollout "$1" --json 2>/dev/null | tests/fleet/fleetq.py rollout | awk '{print $2}'; }

WL=$TMP/mnt/hit_workload
for i in $(seq 1 $N); do mkdir -p "$TMP/node$i"; cp "$BIN/hit_workload" "$TMP/node$i/"; done

log "starting controller and $N agents in network namespaces"
start_controller
for i in $(seq 1 $N); do start_agent "$i"; start_workload "$i"; done
PIDS+=("$CTL_PID")

# 1. Registration over mTLS, identities from the agents' certificates.
if wait_for 20 agents_up $N; then
  ids=$(fleet admin agents --json | tests/fleet/fleetq.py agents | awk '{print $3}' | grep -c 'CN=node-')
  check register "identities not from certificates" [ "$ids" = $N ]
else
  fail register "not all $N agents up: $(fleet admin agents 2>&1 | tr '\n' ' ')"
  exit 1
fi

# 2. Fleet attach with a canary rollout (1 canary node, then the rest).
out=$(fleet counter attach --all --canary=0.3 "$WL:xol_target_add" "$WL:xol_target_other" 2>"$TMP/attach1.err")
rc=$?
SET_A=$(echo "$out" | awk 'NR==2 {print $1}')
if ((rc == 0)) && grep -q CANARY "$TMP/attach1.err" && echo "$out" | grep -q COMPLETE; then
  canaries=$(fleet admin rollout "$SET_A" --json | tests/fleet/fleetq.py rollout | awk '{print $6}')
  check canary-rollout "canary was '$canaries'" [ "$canaries" = node-1 ]
else
  fail canary-rollout "rc=$rc out=$(echo "$out" "$(cat "$TMP/attach1.err")" | tr '\n' ' ')"
fi

# 3. Exact hits per node: node i calls each target 1000*i times. A read-only client
#    watches the merged hit stream meanwhile.
(exec ip netns exec "$NSC" "$BIN/xolctl" fleet --controller=$CTL_ADDR --tls-ca="$CA/ca.crt" \
  --tls-cert="$CA/viewer.crt" --tls-key="$CA/viewer.key" watch --set="$SET_A" --json) \
  >"$TMP/watch.json" 2>"$TMP/watch.log" &
WATCH_PID=$!
PIDS+=("$WATCH_PID")
sleep 0.5
for i in $(seq 1 $N); do echo "run $((1000 * i)) 0" >&"${WL_FD[$i]}"; done
exact_hits() {
  local p; p=$(probes --set="$SET_A")
  for i in $(seq 1 $N); do
    for k in 0 1; do
      echo "$p" | grep -q "^node-$i $SET_A/$k ATTACHED $((1000 * i)) 1 yes$" || return 1
    done
  done
}
check exact-hits "per-node totals wrong: $(probes --set="$SET_A" | tr '\n' ';')" wait_for 15 exact_hits

sleep 1.5  # one more heartbeat round into the watch stream
kill "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null
watch_sums=$(python3 -c '
import json, sys
text, dec, pos, sums, dropped = open(sys.argv[1]).read(), json.JSONDecoder(), 0, {}, 0
while True:
    while pos < len(text) and text[pos].isspace(): pos += 1
    if pos >= len(text): break
    obj, pos = dec.raw_decode(text, pos)
    dropped = max(dropped, int(obj.get("dropped_total", 0)))
    for u in obj.get("updates", []):
        sums[u["node_name"]] = sums.get(u["node_name"], 0) + int(u.get("hits_delta", 0))
print(" ".join(f"{k}={v}" for k, v in sorted(sums.items())), f"dropped={dropped}")' "$TMP/watch.json" 2>&1)
want_sums="$(for i in $(seq 1 $N); do printf 'node-%d=%d ' "$i" $((2000 * i)); done)dropped=0"
check watch-merged-hits "watch saw '$watch_sums', want '$want_sums'" [ "$watch_sums" = "$want_sums" ]

# 4. Label selector: zone=a is node-1 and node-2.
out=$(fleet counter attach --labels=zone=a "$WL:xol_target_spin" 2>/dev/null)
SET_B=$(echo "$out" | awk 'NR==2 {print $1}')
labels_ok() {
  local p; p=$(probes --set="$SET_B")
  echo "$p" | grep -q "^node-1 $SET_B/0 ATTACHED" && echo "$p" | grep -q "^node-2 $SET_B/0 ATTACHED" &&
    ! echo "$p" | grep -q "^node-3 "
}
check label-selector "$(probes --set="$SET_B" | tr '\n' ';')" wait_for 10 labels_ok

# 5. kill -9 the canary agent in the middle of a rollout; restarted, it converges.
out=$(fleet counter attach --all --canary=0.3 --no-wait "$WL:xol_target_other" 2>/dev/null)
SET_C=$(echo "$out" | awk 'NR==2 {print $1}')
old_pid=${AGENT_PID[1]}
kill -9 "$old_pid"; wait "$old_pid" 2>/dev/null
state_mid=$(rollout_state "$SET_C")
if kill -0 "$old_pid" 2>/dev/null || [ "$(cat /proc/"$old_pid"/comm 2>/dev/null)" = xolfleet-agent ]; then
  fail agent-kill9 "agent pid $old_pid survived kill -9"
fi
sleep 0.5
start_agent 1
converged() {
  [ "$(rollout_state "$SET_C")" = ROLLOUT_COMPLETE ] || return 1
  for i in $(seq 1 $N); do
    local want=2  # A/0, A/1
    ((i <= 2)) && want=$((want + 1))  # B/0
    want=$((want + 1))  # C/0
    local l; l=$(local_probes "$i" | awk '$2 == "ATTACHED"')
    [ "$(echo "$l" | grep -c .)" = $want ] || return 1
    # no fleet probe id twice
    [ -z "$(echo "$l" | awk '{print $3}' | sort | uniq -d)" ] || return 1
  done
}
if wait_for 30 converged; then
  pass "agent-kill9-mid-rollout"
else
  fail "agent-kill9-mid-rollout" "state at kill: $state_mid; now $(rollout_state "$SET_C"); node-1 local: $(local_probes 1 | tr '\n' ';')"
fi

# 6. Heartbeat timeout: a stopped agent is marked DOWN, its probes UNKNOWN (not deleted).
kill -STOP "${AGENT_PID[2]}"
down_unknown() {
  fleet admin agents --json | tests/fleet/fleetq.py agents | grep -q '^node-2 AGENT_DOWN' &&
    probes --node=node-2 | grep -q "^node-2 $SET_A/0 UNKNOWN [0-9]* [0-9]* yes$"
}
check heartbeat-timeout "$(probes --node=node-2 | tr '\n' ';')" wait_for 10 down_unknown
kill -CONT "${AGENT_PID[2]}"
check agent-recovers "node-2 did not come back" wait_for 15 agents_up $N

# 7. kill -9 the controller and restart it: every set and agent comes back, nothing
#    is duplicated on the nodes and the hit totals carry on.
before=$(probes | sort)
kill -9 "$CTL_PID"; wait "$CTL_PID" 2>/dev/null
start_controller
PIDS+=("$CTL_PID")
restored() {
  agents_up $N || return 1
  local now; now=$(probes | sort)
  [ "$(echo "$now" | awk '{print $1, $2, $3, $5, $6}')" = "$(echo "$before" | awk '{print $1, $2, $3, $5, $6}')" ] || return 1
  echo "$now" | grep -q "^node-2 $SET_A/0 ATTACHED 2000 1 yes$"
}
t0=$SECONDS
if wait_for 30 restored; then
  pass "controller-kill9-restart"
  log "controller restart: fleet restored in $((SECONDS - t0)) s"
else
  fail "controller-kill9-restart" "before=$(echo "$before" | tr '\n' ';') after=$(probes | tr '\n' ';')"
fi
for s in "$SET_A" "$SET_B" "$SET_C"; do
  [ "$(rollout_state "$s")" = ROLLOUT_COMPLETE ] || fail controller-restart-rollouts "$s is $(rollout_state "$s")"
done

# 8. Canary failure: one spec names a missing binary; the canary fails, the rollout stops
#    and rolls back, and no node keeps any probe of the set.
out=$(fleet counter attach --all --canary=0.3 "$WL:xol_target_add" /nonexistent/xolfleet/bin:main 2>&1)
rc=$?
SET_F=$(echo "$out" | awk '$1 ~ /^ps-/ {print $1}' | tail -1)
rolled_back() {
  [ "$(rollout_state "$SET_F")" = ROLLOUT_ROLLED_BACK ] || return 1
  [ -z "$(probes --set="$SET_F" | grep ATTACHED)" ] || return 1
  for i in $(seq 1 $N); do local_probes "$i" | awk '$2 == "ATTACHED"' | grep -q "$SET_F" && return 1; done
  return 0
}
if ((rc != 0)) && [ -n "$SET_F" ] && wait_for 15 rolled_back; then
  pass canary-failure-rollback
else
  fail canary-failure-rollback "rc=$rc set=$SET_F state=$(rollout_state "$SET_F") out=$(echo "$out" | tr '\n' ' ')"
fi

# 9. Authorization: each capability allowed and denied as configured.
denied() {  # EXPECTED_CAPABILITY WHO ARGS...
  local cap=$1; shift
  local err; err=$(fleet "$@" 2>&1 >/dev/null)
  echo "$err" | grep -q "PERMISSION_DENIED: missing capability $cap"
}
allowed() { fleet "$@" >/dev/null 2>&1; }
check authz-readonly-list "viewer cannot list" allowed viewer list
check authz-readonly-no-attach "viewer could attach" denied attach-counts viewer attach --all "$WL:xol_target_add"
check authz-nobody-no-read "nobody could list" denied read-only nobody agents
check authz-counts-no-capture "counter could capture" denied attach-capture counter attach --all --capture=rdi "$WL:xol_target_add"
out=$(fleet capturer attach --all --capture=rdi,rsi "$WL:xol_target_add" 2>&1)
SET_CAP=$(echo "$out" | awk '$1 ~ /^ps-/ {print $1}' | tail -1)
check authz-capture-allowed "capturer could not capture: $(echo "$out" | tr '\n' ' ')" [ -n "$SET_CAP" ]
check authz-counts-detach "counter could not detach" allowed counter detach "$SET_CAP"
check authz-forget-needs-admin "capturer could forget" denied admin capturer forget node-1
err=$(fleet admin forget node-1 2>&1)
check authz-admin-forget "admin not authorized: $err" grep -q FAILED_PRECONDITION <<<"$err"
denials=$(ip netns exec "$NSC" curl -s http://10.231.0.1:9465/metrics |
  awk '/^xolfleet_controller_authz_denials_total/ {s += $2} END {print s + 0}')
check authz-denials-counted "denials metric is $denials" [ "$denials" -ge 4 ]

# 10. Clients without a valid certificate are rejected.
err=$(fleet rogue-admin agents 2>&1)
check reject-foreign-ca "a certificate from another CA was accepted" grep -q UNAVAILABLE <<<"$err"
grpc_http() {  # CURL_ARGS...: a raw gRPC ListAgents call over HTTP/2; prints the HTTP status
  ip netns exec "$NSC" curl -sS --max-time 10 --http2 --cacert "$CA/ca.crt" "$@" \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @<(printf '\0\0\0\0\0') \
    -o /dev/null -w '%{http_code}' "https://$CTL_ADDR/xolfleet.v1.FleetService/ListAgents" 2>&1
}
with_cert=$(grpc_http --cert "$CA/admin.crt" --key "$CA/admin.key")
without=$(grpc_http)
no_cert_rejected() { [ "$with_cert" = 200 ] && ! [[ "$without" =~ ^200 ]]; }
check reject-no-cert "no cert: '$without'; with cert: '$with_cert'" no_cert_rejected
err=$(ip netns exec "$NSC" "$BIN/xolctl" fleet --controller=$CTL_ADDR --insecure-plaintext agents 2>&1)
check client-plaintext-off-loopback-refused "$err" grep -q "refusing plaintext" <<<"$err"
err=$(ip netns exec "$NSC" timeout 10 "$BIN/xolfleet-controller" --listen=10.231.0.1:7444 --insecure_plaintext \
  --metrics_listen=10.231.0.1:9466 --state_db="$TMP/other.db" --authz_config="$TMP/authz.conf" 2>&1)
check server-plaintext-off-loopback-refused "$err" grep -q "refusing plaintext" <<<"$err"
# One identity cannot take every WatchFleetHits slot (8 per identity by default).
wpids=()
for _ in $(seq 1 8); do
  fleet viewer watch >/dev/null 2>&1 &
  wpids+=($!)
done
sleep 3
err=$(timeout 10 ip netns exec "$NSC" "$BIN/xolctl" fleet --controller=$CTL_ADDR --tls-ca="$CA/ca.crt" \
  --tls-cert="$CA/viewer.crt" --tls-key="$CA/viewer.key" watch 2>&1)
other_rc=0
other=$(timeout 3 ip netns exec "$NSC" "$BIN/xolctl" fleet --controller=$CTL_ADDR --tls-ca="$CA/ca.crt" \
  --tls-cert="$CA/admin.crt" --tls-key="$CA/admin.key" watch 2>&1) || other_rc=$?
kill "${wpids[@]}" 2>/dev/null; wait "${wpids[@]}" 2>/dev/null
check watchers-per-identity-limited "$err" grep -q "RESOURCE_EXHAUSTED.*--max_watchers_per_identity" <<<"$err"
other_streams() { [ "$other_rc" = 124 ] && ! grep -q RESOURCE_EXHAUSTED <<<"$other"; }
check watchers-other-identity-unaffected "rc=$other_rc: $other" other_streams
# A mistyped state database is an error, not a new empty fleet (--init creates one).
err=$(ip netns exec "$NSC" timeout 10 "$BIN/xolfleet-controller" --listen=10.231.0.1:7444 \
  --tls_ca="$CA/ca.crt" --tls_cert="$CA/controller.crt" --tls_key="$CA/controller.key" \
  --metrics_listen=10.231.0.1:9466 --state_db="$TMP/contoller.db" --authz_config="$TMP/authz.conf" 2>&1)
no_new_db() { grep -q "does not exist.*--init" <<<"$err" && [ ! -e "$TMP/contoller.db" ]; }
check missing-state-db-refused "$err" no_new_db
# A consistent copy of the live database, while the controller runs.
err=$("$BIN/xolfleet-controller" --state_db="$TMP/controller.db" --backup="$TMP/backup.db" 2>&1)
backup_sets() {
  python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from probe_sets").fetchone()[0])' "$TMP/backup.db"
}
live_sets=$(fleet admin list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("rollouts", [])))')
backup_ok() { [ "$(backup_sets 2>&1)" = "$live_sets" ] && [ "$live_sets" -gt 0 ]; }
check backup-while-running "$err; backup sets: $(backup_sets 2>&1), live: $live_sets" backup_ok

# 11. Validation: the right code, nothing half applied.
nsets=$(fleet admin list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("rollouts", [])))')
err=$(fleet counter attach --all relative/path:main 2>&1)
check invalid-path "$err" grep -q "INVALID_ARGUMENT.*must be absolute" <<<"$err"
err=$(fleet counter attach --nodes=node-1,node-9 "$WL:xol_target_add" 2>&1)
check unknown-node "$err" grep -q "NOT_FOUND.*node-9" <<<"$err"
err=$(fleet counter detach "$SET_A" ps-doesnotexist 2>&1)
check detach-unknown "$err" grep -q "NOT_FOUND.*nothing detached" <<<"$err"
nsets2=$(fleet admin list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("rollouts", [])))')
check nothing-half-applied "sets $nsets -> $nsets2" [ "$nsets" = "$nsets2" ]

# 12. Detach removes the set from every node.
fleet counter detach "$SET_B" >/dev/null 2>&1
gone_b() { for i in $(seq 1 $N); do local_probes "$i" | awk '$2 == "ATTACHED"' | grep -q "$SET_B" && return 1; done; return 0; }
check detach-everywhere "set B still on a node" wait_for 10 gone_b

# 13. TTLs are fleet-wide: the set expires everywhere at once, nothing stays attached.
out=$(fleet counter attach --all --ttl=3 "$WL:xol_target_spin" 2>/dev/null)
SET_T=$(echo "$out" | awk '$1 ~ /^ps-/ {print $1}' | tail -1)
expired_everywhere() {
  [ "$(rollout_state "$SET_T")" = ROLLOUT_EXPIRED ] || return 1
  for i in $(seq 1 $N); do local_probes "$i" | awk '$2 == "ATTACHED"' | grep -q "$SET_T" && return 1; done
  return 0
}
if [ -n "$SET_T" ] && wait_for 15 expired_everywhere; then
  pass ttl-fleet-wide
else
  fail ttl-fleet-wide "set=$SET_T state=$(rollout_state "$SET_T")"
fi

# 14. A node certificate registers only its own node name (the controller's default): node-1's
#     certificate cannot become node-2 and receive node-2's desired set.
ip netns exec "xfa1-$SUF" timeout 8 "$BIN/xolfleet-agent" --unix-socket="$TMP/impostor.sock" \
  --metrics_address= --node_name=node-2 --controller=$CTL_ADDR --controller_tls_ca="$CA/ca.crt" \
  --controller_tls_cert="$CA/node-1.crt" --controller_tls_key="$CA/node-1.key" >"$TMP/impostor.log" 2>&1
impostor_refused() {
  grep -q 'PERMISSION_DENIED.*CN "node-1" may not register as node "node-2"' "$TMP/impostor.log" &&
    ! grep -q "registered" "$TMP/impostor.log"
}
check impersonation-refused-by-default "$(tail -2 "$TMP/impostor.log")" impostor_refused
# node-2 is still the real node-2 (its own certificate), and every agent is up. Polled: one
# `fleet admin agents` call can time out on a loaded machine (seen once in CI, all three up).
real_node_2() {
  fleet admin agents --json 2>/dev/null | tests/fleet/fleetq.py agents |
    grep -q '^node-2 AGENT_UP .*CN=node-2$' && agents_up $N
}
check real-node-2-still-up "agents up: $(fleet admin agents --json 2>/dev/null | tests/fleet/fleetq.py agents | tr '\n' ' ')" \
  wait_for 10 real_node_2

# 15a. A fleet dry run predicts the cost per node and kernel profile and attaches nothing.
#     The controller classifies on its own copy of the binary ($BIN/hit_workload here: the
#     nodes' $WL is only visible inside their mount namespaces).
sets_before=$(fleet admin list --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("rollouts", [])))')
out=$(fleet counter attach --dry-run --calls-per-sec=1000 --all "$BIN/hit_workload:xol_target_fast" 2>&1)
sets_after=$(fleet admin list --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("rollouts", [])))')
dry_ok() {
  grep -q "dry run: nothing attached" <<<"$out" || return 1
  [ "$(grep -cE '^node-[0-9]+ +UP +linux-[0-9.]+ +EMULATED +0\.[0-9]+us' <<<"$out")" = $N ] || return 1
  [ "$sets_before" = "$sets_after" ]
}
check dry-run-predicts-per-node "sets $sets_before -> $sets_after: $(echo "$out" | tr '\n' ';')" dry_ok

# 15. A canary over its node's budget (issue 14) rolls the set back: the agents run with the
#     default budget (1% of one CPU, alert only) and the default 10 s window; the canary's
#     workload calls the probed function as fast as it can through the soak.
out=$(fleet counter attach --all --canary=0.3 --canary-soak=40 --no-wait "$WL:xol_target_fast" 2>/dev/null)
SET_K=$(echo "$out" | awk '$1 ~ /^ps-/ {print $1}' | tail -1)
on_canary() { local_probes 1 | awk '$2 == "ATTACHED"' | grep -q "$SET_K"; }
if [ -n "$SET_K" ] && wait_for 15 on_canary; then
  echo "fast 25" >&"${WL_FD[1]}"
  budget_rolled_back() {
    [ "$(rollout_state "$SET_K")" = ROLLOUT_ROLLED_BACK ] || return 1
    fleet admin rollout "$SET_K" 2>/dev/null | grep -q "over budget" || return 1
    for i in $(seq 1 $N); do local_probes "$i" | awk '$2 == "ATTACHED"' | grep -q "$SET_K" && return 1; done
    return 0
  }
  never_beyond_canary() {
    for i in $(seq 2 $N); do local_probes "$i" | grep -q "$SET_K" && return 1; done
    return 0
  }
  check canary-budget-breach-rollback \
    "state=$(rollout_state "$SET_K"): $(fleet admin rollout "$SET_K" 2>&1 | tr '\n' ' ')" \
    wait_for 35 budget_rolled_back
  check canary-budget-breach-only-canary "set $SET_K reached another node" never_beyond_canary
  check canary-budget-breach-metric "no budget action counted on node-1" \
    grep -q 'budget: probe' "$TMP/agent1.log"
else
  fail canary-budget-breach-rollback "set=$SET_K never attached on node-1: $out"
fi

# 16. Certificates and authorization files reloaded without a restart (tests/fleet/reload.sh).
# shellcheck source=tests/fleet/reload.sh
source tests/fleet/reload.sh

exit $FAILED
