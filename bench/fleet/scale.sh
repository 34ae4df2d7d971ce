#!/usr/bin/env bash
# Scale benchmark (issue 13): one controller and thousands of simulated agents in one
# process (bench/fleet:simagents: the real AgentLink protocol over gRPC + mTLS, one TCP
# connection and TLS session per agent, the agent side in memory). Not part of CI.
#
#   bench/fleet/scale.sh [SMALL] [LARGE] [ROUNDS]     (defaults 1000 10000 30; STANDING=20)
#
# LARGE=0 runs phase 1 only. BINARIES=DIR takes simagents, fleet_bench and
# xolfleet-controller from DIR instead of building them (to compare two commits). PERF=FILE records the controller's CPU profile (perf record -g,
# user space) during phase 1's attach rounds into FILE (`perf report -i FILE`).
#
# Phase 1, SMALL agents: registration time; attach fan-out latency (AttachFleet with
#   wait=true to every agent, STANDING other sets standing, p50/p99 over ROUNDS rounds, each
#   set detached after, untimed); controller CPU per heartbeat (CPU over a 20 s window
#   of heartbeats every 1 s, divided by the heartbeats it counted); controller memory per
#   agent ((RSS with the agents - RSS before) / agents).
# Phase 2, LARGE agents on a fresh controller: registration time, controller RSS,
#   heartbeats handled per second (xolfleet_controller_heartbeats_total over 20 s, every
#   agent heartbeating every 1 s, then every 250 ms) and the CPU that took.
# Appends the figures to bench/fleet/results.txt (OUT=... to change) with the date and
# the load average. Raises the open-files limit for both processes; every agent holds a
# loopback connection, i.e. an ephemeral port (checked against ip_local_port_range).
set -euo pipefail
cd "$(dirname "$0")/../.."
SMALL=${1:-1000}
LARGE=${2:-10000}
ROUNDS=${3:-30}
OUT=${OUT:-bench/fleet/results.txt}
STANDING=${STANDING:-20}  # probe sets on every agent during the attach rounds
TMP=$(mktemp -d /tmp/xolfleet-scale.XXXXXX)
CTL_PID= SIM_PID=
cleanup() {
  local rc=$?
  for p in $SIM_PID $CTL_PID; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in $SIM_PID $CTL_PID; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((rc != 0)); then
    mkdir -p "$TMP.logs" && cp "$TMP"/*.log "$TMP"/sim.* "$TMP.logs/" 2>/dev/null
    echo "scale.sh: failed; logs in $TMP.logs" >&2
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Every agent is a socket in the simulator and one in the controller (each process needs
# one descriptor per agent, plus gRPC's and the store's own).
MOST=$((LARGE > SMALL ? LARGE : SMALL))
want_fds=$((MOST + 2048))
if (($(ulimit -n) < want_fds)); then
  ulimit -Hn "$want_fds" 2>/dev/null || true
  ulimit -n "$(( $(ulimit -Hn) < want_fds ? $(ulimit -Hn) : want_fds ))"
fi
if (($(ulimit -n) < want_fds)); then
  echo "scale.sh: open files limit $(ulimit -n) (hard $(ulimit -Hn)) < $want_fds for $MOST agents" >&2
  exit 1
fi
read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
ports=$((port_hi - port_lo + 1))
log "open files limit $(ulimit -n); ephemeral ports $port_lo-$port_hi ($ports)"
if ((ports < MOST + 1000)); then
  echo "scale.sh: only $ports ephemeral ports for $MOST agents" >&2
  exit 1
fi

mkdir -p "$TMP/bin"
if [[ -n ${BINARIES:-} ]]; then  # a directory with the three binaries (e.g. of another commit)
  cp "$BINARIES"/{simagents,fleet_bench,xolfleet-controller} "$TMP/bin/"
else
  log "building"
  nice -n 5 bazel build --jobs=2 //bench/fleet:simagents //bench/fleet:fleet_bench \
    //services/controller:xolfleet-controller >/dev/null 2>&1
  cp bazel-bin/bench/fleet/simagents bazel-bin/bench/fleet/fleet_bench \
    bazel-bin/services/controller/xolfleet-controller "$TMP/bin/"
fi
BIN=$TMP/bin
CA=$TMP/ca
scripts/make-test-ca.sh "$CA" --agents 1 --clients admin >/dev/null
printf 'admin cn:admin\nagent cn:node-*\n' >"$TMP/authz.conf"
read -r PORT MPORT <<<"$(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')"
CTL=127.0.0.1:$PORT
HZ=$(getconf CLK_TCK)

start_controller() {  # HEARTBEAT_INTERVAL
  rm -f "$TMP"/c.db*
  # One certificate for every simulated agent (simagents --tls_cert): CN checks off.
  "$BIN/xolfleet-controller" --listen=$CTL --metrics_listen=127.0.0.1:$MPORT \
    --state_db="$TMP/c.db" --init --tls_ca="$CA/ca.crt" --tls_cert="$CA/controller.crt" \
    --tls_key="$CA/controller.key" --authz_config="$TMP/authz.conf" \
    --agent_cn_must_match_node=false --heartbeat_interval="$1" --heartbeat_timeout=60s \
    --config_reload_interval=0 >>"$TMP/controller.log" 2>&1 &
  CTL_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MPORT/metrics" >/dev/null && return; sleep 0.1; done
  echo "controller did not start: $(tail -3 "$TMP/controller.log")" >&2
  exit 1
}
stop_all() {
  kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=
  kill "$CTL_PID" 2>/dev/null || true; wait "$CTL_PID" 2>/dev/null || true; CTL_PID=
}
start_sim() {  # N
  "$BIN/simagents" --controller=$CTL --agents="$1" --tls_ca="$CA/ca.crt" \
    --tls_cert="$CA/node-1.crt" --tls_key="$CA/node-1.key" --connect_rate=200 \
    --max_pending_dials=200 --keepalive_timeout=60s \
    --stats_file="$TMP/sim.json" --stats_interval=1s >>"$TMP/sim.out" 2>>"$TMP/sim.log" &
  SIM_PID=$!
}
bench() {  # N ARGS...
  local n=$1; shift
  "$BIN/fleet_bench" --controller=$CTL --tls_ca="$CA/ca.crt" --tls_cert="$CA/admin.crt" \
    --tls_key="$CA/admin.key" --agents="$n" --attach_deadline=120 --settle_poll=200ms "$@"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$1/status"; }
hb_total() {
  curl -s "http://127.0.0.1:$MPORT/metrics" |
    awk '$1 == "xolfleet_controller_heartbeats_total" {printf "%d", $2}'
}
# The controller's heartbeats and CPU over S seconds, and the simulator's CPU ->
#   "HB_PER_S CTL_CPU_PCT US_PER_HB SIM_CPU_PCT"
hb_window() {
  local s=$1 c0 c1 h0 h1 s0 s1
  c0=$(cpu_ticks $CTL_PID); s0=$(cpu_ticks $SIM_PID); h0=$(hb_total)
  sleep "$s"
  c1=$(cpu_ticks $CTL_PID); s1=$(cpu_ticks $SIM_PID); h1=$(hb_total)
  python3 -c "
c = ($c1 - $c0) / $HZ; h = $h1 - $h0
print(f'{h / $s:.0f} {c / $s * 100:.1f} {c / max(h, 1) * 1e6:.1f} {($s1 - $s0) / $HZ / $s * 100:.0f}')"
}

# A fresh controller (heartbeats every INTERVAL) and N simulated agents, all of them up.
# Sets RSS_BEFORE (the controller's RSS before any agent) and UP_S (seconds until all up).
bring_up() {  # N INTERVAL TIMEOUT
  local t0
  : >"$TMP/sim.out"
  start_controller "$2"
  sleep 1
  RSS_BEFORE=$(rss_kib $CTL_PID)
  t0=$(date +%s.%N)
  start_sim "$1"
  bench "$1" --mode=wait_agents --timeout="$3" >/dev/null
  UP_S=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
}

# --- phase 1: SMALL agents ---
log "phase 1: $SMALL simulated agents"
bring_up "$SMALL" 1s 300
rss0=$RSS_BEFORE reg1=$UP_S
log "all $SMALL up in ${reg1}s (controller RSS before: $rss0 KiB)"
sleep 3
read -r hb_rate1 hb_cpu1 us_hb1 sim_pct1 <<<"$(hb_window 20)"
rss1=$(rss_kib $CTL_PID)
thr1=$(threads $CTL_PID)
mem_per_agent1=$(python3 -c "print(f'{($rss1 - $rss0) / $SMALL:.1f}')")
log "idle: $hb_rate1 heartbeats/s, controller CPU $hb_cpu1% of one core, $us_hb1 us per heartbeat; RSS $rss1 KiB ($mem_per_agent1 KiB per agent), $thr1 threads"
log "$STANDING standing sets on every agent"
if ((STANDING > 0)); then
  bench "$SMALL" --mode=attach --rounds="$STANDING" --detach_after=false --timeout=600 >/dev/null
fi
sleep 2
read -r hb_rate1s hb_cpu1s us_hb1s sim_pct1s <<<"$(hb_window 20)"
rss1s=$(rss_kib $CTL_PID)
log "with $STANDING sets: $hb_rate1s heartbeats/s, CPU $hb_cpu1s%, $us_hb1s us per heartbeat; RSS $rss1s KiB"
log "attach rounds: $ROUNDS to all $SMALL agents, no canary"
PERF_PID=
if [[ -n ${PERF:-} ]]; then
  perf record -q -g -e cpu-clock:u -F 499 -p "$CTL_PID" -o "$PERF" >/dev/null 2>&1 &
  PERF_PID=$!
fi
c0=$(cpu_ticks $CTL_PID)
attach1=$(bench "$SMALL" --mode=attach --rounds="$ROUNDS" --timeout=1200 || echo failed)
c1=$(cpu_ticks $CTL_PID)
if [[ -n $PERF_PID ]]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
cpu_round1=$(python3 -c "print(f'{($c1 - $c0) / $HZ / $ROUNDS * 1000:.1f}')")
log "$attach1 (controller CPU $cpu_round1 ms per round: attach + detach)"
rss1a=$(rss_kib $CTL_PID)
sim_rss1=$(rss_kib $SIM_PID)
sim_cpu1=$(python3 -c "print(f'{$(cpu_ticks $SIM_PID) / $HZ:.1f}')")
stop_all
sim1=$(tail -1 "$TMP/sim.out")

if ((LARGE > 0)); then
  # --- phase 2: LARGE agents ---
  log "phase 2: $LARGE simulated agents"
  bring_up "$LARGE" 1s 900
  rss0l=$RSS_BEFORE reg2=$UP_S
  log "all $LARGE up in ${reg2}s"
  sleep 5
  read -r hb_rate2 hb_cpu2 us_hb2 sim_pct2 <<<"$(hb_window 20)"
  rss2=$(rss_kib $CTL_PID)
  thr2=$(threads $CTL_PID)
  sim_rss2=$(rss_kib $SIM_PID)
  sim_cpu2=$(python3 -c "print(f'{$(cpu_ticks $SIM_PID) / $HZ:.1f}')")
  log "1 s interval: $hb_rate2 heartbeats/s, CPU $hb_cpu2%, $us_hb2 us per heartbeat; RSS $rss2 KiB, $thr2 threads"
  log "one attach to all $LARGE agents"
  attach2=$(bench "$LARGE" --mode=attach --rounds=3 --timeout=600 || echo failed)
  log "$attach2"
  stop_all
  sim2=$(tail -1 "$TMP/sim.out")
  # The same with heartbeats every 250 ms: the rate the controller sustains when offered
  # four times as many.
  bring_up "$LARGE" 250ms 900
  sleep 5
  read -r hb_rate3 hb_cpu3 us_hb3 sim_pct3 <<<"$(hb_window 20)"
  rss3=$(rss_kib $CTL_PID)
  log "250 ms interval: $hb_rate3 heartbeats/s, CPU $hb_cpu3%, $us_hb3 us per heartbeat; RSS $rss3 KiB"
  stop_all
  sim3=$(tail -1 "$TMP/sim.out")

fi

{
  echo
  echo "# xolfleet scale benchmark, bench/fleet/scale.sh $SMALL $LARGE $ROUNDS ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD))"
  echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work shares this machine)"
  echo "# machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); open files $(ulimit -n), ephemeral ports $ports"
  echo "# agents: bench/fleet:simagents, one process, one gRPC channel (TCP + mTLS) per agent,"
  echo "#   heartbeats every 1 s (deltas; every probe gains a hit per heartbeat, so every"
  echo "#   probe travels in each); controller on the callback API (no thread per stream)"
  echo "scale_${SMALL}_registration_all_up_s    $reg1"
  echo "scale_${SMALL}_attach_no_canary         $attach1   ($STANDING other sets standing)"
  echo "scale_${SMALL}_cpu_per_attach_round_ms  $cpu_round1   (controller; attach + detach pushed to every agent)"
  echo "scale_${SMALL}_heartbeats_idle          rate=${hb_rate1}/s cpu=${hb_cpu1}% us_per_heartbeat=$us_hb1 simagents_cpu=${sim_pct1}%   (no sets)"
  echo "scale_${SMALL}_heartbeats_${STANDING}_sets       rate=${hb_rate1s}/s cpu=${hb_cpu1s}% us_per_heartbeat=$us_hb1s simagents_cpu=${sim_pct1s}%"
  echo "scale_${SMALL}_controller_rss_kib       before=$rss0 agents_up=$rss1 with_${STANDING}_sets=$rss1s after_attaches=$rss1a threads=$thr1"
  echo "scale_${SMALL}_controller_kib_per_agent $mem_per_agent1   ((agents_up - before) / agents)"
  echo "scale_${SMALL}_simagents                $sim_rss1 KiB RSS, ${sim_cpu1} s CPU in all"
  if ((LARGE > 0)); then
    echo "scale_${LARGE}_registration_all_up_s   $reg2   (dialling at 200 agents/s)"
    echo "scale_${LARGE}_controller_rss_kib      before=$rss0l agents_up=$rss2 ($(python3 -c "print(f'{$rss2 / 1048576:.2f}')") GiB) threads=$thr2"
    echo "scale_${LARGE}_controller_kib_per_agent $(python3 -c "print(f'{($rss2 - $rss0l) / $LARGE:.1f}')")"
    echo "scale_${LARGE}_heartbeats_1s           rate=${hb_rate2}/s cpu=${hb_cpu2}% us_per_heartbeat=$us_hb2 simagents_cpu=${sim_pct2}%   (one core at that cost: $(python3 -c "print(f'{1e6 / max($us_hb2, 1):.0f}')")/s)"
    echo "scale_${LARGE}_heartbeats_250ms        rate=${hb_rate3}/s cpu=${hb_cpu3}% us_per_heartbeat=$us_hb3 simagents_cpu=${sim_pct3}%   (asked for $((LARGE * 4))/s: the simulator shares the 2 CPUs) rss_kib=$rss3"
    echo "scale_${LARGE}_attach_no_canary        $attach2"
    echo "scale_${LARGE}_simagents               $sim_rss2 KiB RSS, ${sim_cpu2} s CPU until the 1 s window ended"
  fi
  echo "# simulator at the end of each run: $sim1"
  if ((LARGE > 0)); then
    echo "#   $sim2"
    echo "#   $sim3"
  fi
} | tee -a "$OUT"
