#!/usr/bin/env bash
# Tier "prometheus": a real Prometheus server (Debian's /usr/bin/prometheus, our own
# config and data dir on a loopback port) scrapes the controller and two real agents
# (mTLS between them); PromQL over Prometheus's HTTP API must return the expected series
# and exact values. The deploy/ alert rules are loaded too and must evaluate cleanly.
# Needs root (uprobes). Prints RESULT lines; exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
N=2
TMP=$(mktemp -d /tmp/xolfleet-prom.XXXXXX)
FAILED=0
PIDS=()
declare -A WL_FD

log() { printf '[prometheus %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { echo "RESULT PASS prometheus-$1"; }
fail() { echo "RESULT FAIL prometheus-$1 $2"; FAILED=1; }
wait_for() { local end=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS >= end)) && return 1; sleep 0.5; done; }
cleanup() {
  for fd in "${WL_FD[@]}"; do eval "exec $fd>&-" 2>/dev/null; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if ((FAILED)); then
    log "logs kept in $TMP"
    for f in "$TMP"/*.log; do echo "--- $f"; tail -n 15 "$f"; done >&2
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" = 0 ] || { fail setup "needs root"; exit 1; }
PROM=$(command -v prometheus || echo /usr/bin/prometheus)
[ -x "$PROM" ] || { fail setup "no prometheus binary (apt-get install prometheus)"; exit 1; }

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
# Every shipped binary names the release in VERSION (and the commit when built in git).
want_version=$(tr -d ' \n' <VERSION)
bad_version=""
for b in xolfleet-controller xolfleet-agent xolctl; do
  out=$("$BIN/$b" --version 2>&1) && [[ "$out" == "$b $want_version"* ]] || bad_version+="$b:'$out' "
done
if [ -z "$bad_version" ]; then pass version-flag; else fail version-flag "want $want_version: $bad_version"; fi
CA=$TMP/ca
scripts/make-test-ca.sh "$CA" --agents $N --clients admin >/dev/null 2>&1 || { fail setup "make-test-ca.sh"; exit 1; }
printf 'admin cn:admin\nagent cn:node-*\n' >"$TMP/authz.conf"

# Free loopback ports: controller gRPC, controller metrics, N agent APIs + metrics, Prometheus.
read -r -a PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(4 + 2 * '"$N"')]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()')"
CTL=127.0.0.1:${PORTS[0]} CTL_METRICS=127.0.0.1:${PORTS[1]} PROM_ADDR=127.0.0.1:${PORTS[2]}

"$BIN/xolfleet-controller" --listen=$CTL --metrics_listen=$CTL_METRICS --state_db="$TMP/c.db" --init \
  --tls_ca="$CA/ca.crt" --tls_cert="$CA/controller.crt" --tls_key="$CA/controller.key" \
  --authz_config="$TMP/authz.conf" --heartbeat_interval=250ms >"$TMP/controller.log" 2>&1 &
PIDS+=($!)
in_node() {  # i CMD...: node i's mount namespace ($TMP/mnt is its own copy of the workload)
  local i=$1; shift
  exec unshare -m --propagation private \
    sh -c 'mount --bind "$0" "$1" && shift && exec "$@"' "$TMP/node$i" "$TMP/mnt" "$@"
}
AGENT_TARGETS=""
for i in $(seq 1 $N); do
  mkdir -p "$TMP/node$i"; cp "$BIN/hit_workload" "$TMP/node$i/"
  met=127.0.0.1:${PORTS[$((2 + 2 * i))]}
  in_node "$i" "$BIN/xolfleet-agent" --unix-socket="$TMP/node$i/agent.sock" --metrics_address="$met" \
    --node_name="node-$i" --controller=$CTL --controller_tls_ca="$CA/ca.crt" \
    --controller_tls_cert="$CA/node-$i.crt" --controller_tls_key="$CA/node-$i.key" \
    >"$TMP/agent$i.log" 2>&1 &
  PIDS+=($!)
  AGENT_TARGETS+=" xolfleet-agent=$met,node-$i,xolfleet-agent-$i"
  mkfifo "$TMP/wl$i.in"
  in_node "$i" "$TMP/mnt/hit_workload" <"$TMP/wl$i.in" >"$TMP/wl$i.out" 2>&1 &
  PIDS+=($!)
  exec {fd}>"$TMP/wl$i.in"
  WL_FD[$i]=$fd
done

# deploy/prometheus/prometheus.yml itself, its kubernetes_sd replaced by static targets with
# the same __meta_ labels (Debian's Prometheus lacks kubernetes_sd): the relabelling that
# gives agent series `node` and `pod` is the deployed one.
cp deploy/prometheus/alerts.yml "$TMP/alerts.yml" 2>/dev/null || : >"$TMP/alerts.yml"
# shellcheck disable=SC2086
if ! python3 tests/fleet/prom_static_config.py deploy/prometheus/prometheus.yml \
    "$TMP/prometheus.yml" xolfleet-controller=$CTL_METRICS,ctl-node,xolfleet-controller-0 \
    $AGENT_TARGETS --rules="$TMP/alerts.yml" --interval=1s >"$TMP/promconf.log" 2>&1; then
  fail config "static substitution of deploy/prometheus/prometheus.yml: $(tail -3 "$TMP/promconf.log" | tr '\n' ' ')"
  exit 1
fi
if ! promtool check config "$TMP/prometheus.yml" >"$TMP/promtool.log" 2>&1; then
  fail config "promtool rejected the test config: $(tail -3 "$TMP/promtool.log" | tr '\n' ' ')"
  exit 1
fi
pass config
# The alert rules' unit tests (labels and rendered annotations, absent targets, skew).
if (cd deploy/prometheus && promtool test rules alerts_test.yml) >"$TMP/promtest.log" 2>&1; then
  pass alert-rules-unit-tests
else
  fail alert-rules-unit-tests "$(grep -m3 -E 'FAILED|alertname|Error' "$TMP/promtest.log" | tr '\n' ' ')"
fi
"$PROM" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/data" \
  --web.listen-address=$PROM_ADDR >"$TMP/prometheus.log" 2>&1 &
PIDS+=($!)

fleet() {
  "$BIN/xolctl" fleet --controller=$CTL --tls-ca="$CA/ca.crt" --tls-cert="$CA/admin.crt" \
    --tls-key="$CA/admin.key" --timeout=30 "$@"
}
ready() { curl -sf "http://$PROM_ADDR/-/ready" >/dev/null; }
agents_up() { [ "$(fleet agents 2>/dev/null | grep -c ' UP ')" = $N ]; }
wait_for 30 ready || { fail setup "prometheus not ready"; exit 1; }
wait_for 20 agents_up || { fail setup "agents did not register"; exit 1; }

# The fleet: one set of two probes on every node; node i calls each 1000*i times.
WL=$TMP/mnt/hit_workload
fleet attach --all --canary=0.5 "$WL:xol_target_add" "$WL:xol_target_other" >"$TMP/attach.log" 2>&1 ||
  { fail setup "fleet attach: $(tr '\n' ' ' <"$TMP/attach.log")"; exit 1; }
for i in $(seq 1 $N); do echo "run $((1000 * i)) 0" >&"${WL_FD[$i]}"; done

# query PROMQL -> "labelvalue=value" lines (label given by LABEL, or "-" for none)
query() {  # PROMQL LABEL
  curl -sf --get "http://$PROM_ADDR/api/v1/query" --data-urlencode "query=$1" |
    python3 -c '
import json, sys
label = sys.argv[1]
d = json.load(sys.stdin)
for r in sorted(d["data"]["result"], key=lambda r: r["metric"].get(label, "")):
    v = float(r["value"][1])
    print("%s=%g" % (r["metric"].get(label, "-"), v))' "$2"
}
expect() {  # NAME PROMQL LABEL EXPECTED (lines joined by spaces)
  local name=$1 q=$2 label=$3 want=$4 got=""
  got_now() { got=$(query "$q" "$label" | tr '\n' ' ' | sed 's/ $//'); [ "$got" = "$want" ]; }
  if wait_for 30 got_now; then pass "$name"; else fail "$name" "$q: got '$got', want '$want'"; fi
}

expect targets-up 'up' job "xolfleet-agent=1 xolfleet-agent=1 xolfleet-controller=1"
expect agents-by-state 'sum by (state) (xolfleet_controller_agents)' state "down=0 up=$N"
expect agents-by-profile 'sum by (kernel_profile) (xolfleet_controller_agents{state="up"})' \
  kernel_profile "$(fleet agents --json | python3 -c '
import json,sys; print(json.load(sys.stdin)["agents"][0]["registration"]["kernel_profile"])')=$N"
expect node-hits-exact 'sum by (node) (xolfleet_controller_node_hits_total)' node "node-1=2000 node-2=4000"
expect fleet-hits-exact 'sum(xolfleet_controller_fleet_hits_total)' - "-=6000"
expect agent-series-node 'count by (node) (xolfleet_agent_hits_total{pod=~"xolfleet-agent-.+"})' node \
  "node-1=1 node-2=1"
expect agent-series-pod 'count by (pod) (xolfleet_agent_hits_total{node=~"node-.+"})' pod \
  "xolfleet-agent-1=1 xolfleet-agent-2=1"
expect controller-series-own-node 'count(xolfleet_controller_agent_up{exported_node!=""}) or vector(0)' - "-=0"
expect agent-hits-exact 'sum by (node) (xolfleet_agent_hits_total)' node "node-1=2000 node-2=4000"
expect probes-per-node 'sum by (node) (xolfleet_controller_probes{state="ATTACHED"})' node "node-1=2 node-2=2"
expect probes-by-placement 'count(count by (placement) (xolfleet_controller_probes{placement!="UNKNOWN"}))' - "-=1"
expect rollout-outcomes 'xolfleet_controller_rollouts_total{outcome="complete"}' outcome "complete=1"
expect request-latency 'sum(xolfleet_controller_request_duration_seconds_count{method="AttachFleet"})' - "-=1"
expect latency-buckets 'count(xolfleet_controller_request_duration_seconds_bucket{method="AttachFleet"})' - "-=17"
expect build-info 'count by (version) (xolfleet_build_info == 1)' version "$want_version=$((N + 1))"
expect config-in-force 'count by (config) (xolfleet_config_in_force == 1)' config \
  "authz=1 controller_tls=$N tls=1"
expect agent-up-series 'count(xolfleet_controller_agent_up == 1)' - "-=$N"
# Issue 14: each agent's calibration, in the order the kernel dictates (single-step above
# emulated on a stock kernel), from the agents and through the controller's heartbeats.
expect agent-calibration-ordered \
  'count(xolfleet_agent_calibration_seconds_per_hit{placement="SINGLE_STEP",capture="false"} > on(instance) xolfleet_agent_calibration_seconds_per_hit{placement="EMULATED",capture="false"})' \
  - "-=$N"
expect node-calibration-ordered \
  'count by (node) (xolfleet_controller_node_calibration_seconds_per_hit{placement="SINGLE_STEP"} > on(node) xolfleet_controller_node_calibration_seconds_per_hit{placement="EMULATED"})' \
  node "node-1=1 node-2=1"
expect node-cost-and-budget 'count(xolfleet_controller_node_budget_cpu == 0.01) and count(xolfleet_controller_node_cpu_seconds_per_second >= 0)' \
  - "-=$N"

rules=$(curl -sf "http://$PROM_ADDR/api/v1/rules" | python3 -c '
import json, sys
d = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in d for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") != "ok"]
print(len(rules), ",".join(bad) or "-")')
read -r nrules bad <<<"$rules"
if [ "${nrules:-0}" -gt 0 ] && [ "$bad" = "-" ]; then
  pass alert-rules-evaluate
else
  fail alert-rules-evaluate "rules=$nrules unhealthy=$bad"
fi

# Every query of the Grafana dashboard is valid PromQL for this Prometheus (and the new
# panels have data: versions and reloads).
bad_queries=$(python3 - "$PROM_ADDR" deploy/grafana/xolfleet-fleet.json <<'PY'
import json, sys, urllib.parse, urllib.request
addr, path = sys.argv[1], sys.argv[2]
bad = []
for p in json.load(open(path))["panels"]:
    for t in p.get("targets", []):
        q = t["expr"].replace("$__rate_interval", "1m").replace("$__interval", "1m")
        url = "http://%s/api/v1/query?%s" % (addr, urllib.parse.urlencode({"query": q}))
        try:
            r = json.load(urllib.request.urlopen(url, timeout=10))
            ok = r.get("status") == "success"
            if ok and p["id"] in (16,) and not r["data"]["result"]:
                ok = False
        except Exception as e:
            ok = False
        if not ok:
            bad.append("%s/%s" % (p["id"], t.get("refId")))
print(" ".join(bad))
PY
)
if [ -z "$bad_queries" ]; then pass grafana-queries; else fail grafana-queries "invalid or empty: $bad_queries"; fi

# An agent going away shows up as down in the controller's series (and the alert's expr).
kill "${PIDS[1]}"
expect agent-down-visible 'sum by (state) (xolfleet_controller_agents)' state "down=1 up=$((N - 1))"

exit $FAILED
