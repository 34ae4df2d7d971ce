"""Many agents on one controller (issue 13), run by tests/fleet/run.py on its FleetLab.

A second controller in the controller's namespace, on its loopback, and SIM_AGENTS
simulated agents in one process (bench/fleet:simagents: the real link protocol over
gRPC + mTLS, one connection per agent, agent side in memory). Exact counts only, no
timing:
  - every agent registers, and the controller counts as many connections as the agents
    received acknowledgements;
  - the controller holds them without a thread per stream (fewer threads than agents);
  - a fleet attach reaches every agent (rollout COMPLETE on all of them, every agent holds
    the set and reported it), a detach removes it from every agent;
  - after every agent half-closed its stream (the controller then handled everything it
    sent), the controller counted exactly the heartbeats the agents sent, every stream
    ended with OK, and heartbeats after each stream's first were deltas."""
import json
import os

from harness import run, wait_for
from harness.metrics import metric_sum
from harness.netns import netns_exec
from harness.xolctl import Xolctl

SIM_AGENTS = int(os.environ.get("SIM_AGENTS", "300"))
ADDR = "127.0.0.1:7543"
METRICS = "127.0.0.1:9565"


def scenarios(t, lab):
    bindir = t.binaries(["bench/fleet/simagents"])
    stats_file = t.path("sim.json")
    authz = t.path("sim-authz.conf")
    with open(authz, "w") as f:
        f.write("admin cn:admin\nagent cn:node-*\n")
    ca = lab.ca
    # One certificate (node-1's) for every simulated agent: the controller allows it with
    # --agent_cn_must_match_node=false (the flag for deliberately shared certificates).
    ctl = t.procs.start("sim-controller", netns_exec(lab.nsc, [
        lab.b("xolfleet-controller"), f"--listen={ADDR}", f"--metrics_listen={METRICS}",
        f"--state_db={t.path('sim-controller.db')}", "--init", f"--tls_ca={ca}/ca.crt",
        f"--tls_cert={ca}/controller.crt", f"--tls_key={ca}/controller.key",
        f"--authz_config={authz}", "--agent_cn_must_match_node=false",
        "--heartbeat_interval=1s", "--heartbeat_timeout=30s", "--config_reload_interval=0"]),
        t.path("sim-controller.log"))

    def metrics():
        r = run(netns_exec(lab.nsc, ["curl", "-s", "--max-time", "10",
                                     f"http://{METRICS}/metrics"]), timeout=20)
        return r.out if r.rc == 0 else ""

    def metric(name):
        return int(metric_sum(metrics(), name))

    wait_for(30, lambda: metrics() != "")
    sim = t.procs.start("simagents", netns_exec(lab.nsc, [
        os.path.join(bindir, "simagents"), f"--controller={ADDR}", f"--agents={SIM_AGENTS}",
        "--name_prefix=sim-", f"--tls_ca={ca}/ca.crt", f"--tls_cert={ca}/node-1.crt",
        f"--tls_key={ca}/node-1.key", f"--stats_file={stats_file}", "--stats_interval=200ms"]),
        t.path("sim.log"))

    def stats():
        try:
            with open(stats_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    client = Xolctl(lab.b("xolctl"), lab.nsc, [
        f"--controller={ADDR}", f"--tls-ca={ca}/ca.crt", f"--tls-cert={ca}/admin.crt",
        f"--tls-key={ca}/admin.key", "--timeout=60"], timeout=60)

    def fleet(*args):
        return client("fleet", *args)

    def up_count():
        r = fleet("agents")
        if not r.data:
            return -1
        return sum(1 for a in r.data.get("agents", []) if a.get("health") == "AGENT_HEALTH_UP")

    t.check("sim-all-registered",
            wait_for(120, lambda: up_count() == SIM_AGENTS and
                     stats().get("registered") == SIM_AGENTS),
            lambda: f"controller: {up_count()} up; simulator: {stats()}")
    t.check("sim-connections-counted",
            wait_for(20, lambda: metric("xolfleet_controller_agent_connections_total") ==
                     stats().get("registrations")),
            lambda: f"controller {metric('xolfleet_controller_agent_connections_total')}, "
                    f"simulator {stats().get('registrations')}")
    threads = -1
    with open(f"/proc/{ctl.pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
    t.check("sim-no-thread-per-agent", 0 < threads < SIM_AGENTS,
            f"controller has {threads} threads for {SIM_AGENTS} agents")

    r = fleet("attach", "--all", "/bin/sh:main")
    set_id = (r.data or {}).get("set_id", "")

    def attached():
        ro = fleet("rollout", set_id).data or {}
        ro = ro.get("rollout", ro)
        return (ro.get("state") == "ROLLOUT_STATE_COMPLETE" and
                int(ro.get("nodes_attached", 0)) == SIM_AGENTS and
                int(ro.get("nodes_failed", 0)) == 0 and
                stats().get("sets", {}).get(set_id) == SIM_AGENTS)
    t.check("sim-attach-reaches-every-agent", bool(set_id) and wait_for(60, attached),
            lambda: f"set {set_id!r} ({r!r}): {fleet('rollout', set_id)!r}; "
                    f"simulator holds it on {stats().get('sets', {}).get(set_id)}")
    fleet("detach", set_id)
    t.check("sim-detach-reaches-every-agent",
            wait_for(60, lambda: stats().get("without_sets") == SIM_AGENTS),
            lambda: f"{stats().get('without_sets')} of {SIM_AGENTS} agents without sets")

    sim.signal(15)
    rc = sim.wait(timeout=60)
    final = stats()
    t.check("sim-streams-ended-ok",
            rc == 0 and final.get("stream_errors") == 0 and
            final.get("stream_ends") == final.get("registrations"),
            f"exit {rc}: {final}")
    sent = final.get("heartbeats_sent", 0)
    counted = metric("xolfleet_controller_heartbeats_total")
    t.check("sim-heartbeats-counted", sent > 0 and counted == sent,
            f"controller counted {counted}, agents sent {sent}")
    # Heartbeats after the first on each stream travel as deltas (the counts above were
    # exact with them): at least one per agent.
    t.check("sim-delta-heartbeats", final.get("delta_heartbeats", 0) >= SIM_AGENTS,
            f"{final.get('delta_heartbeats')} delta heartbeats of {sent}")
    ctl.stop()
