#!/usr/bin/env python3
"""Tier "prometheus": a real Prometheus server (Debian's /usr/bin/prometheus, our own
config and data dir on a loopback port) scrapes the controller and two real agents
(mTLS between them); PromQL over Prometheus's HTTP API must return the expected series
and exact values. The deploy/ alert rules are loaded too and must evaluate cleanly, their
unit tests pass, every Grafana query is valid PromQL, every binary names the release.

deploy/prometheus/prometheus.yml itself is used, its kubernetes_sd replaced by static
targets with the same __meta_ labels (tests/fleet/prom_static_config.py: Debian's
Prometheus lacks kubernetes_sd), so the relabelling that gives agent series `node` and
`pod` is the deployed one. Needs root (uprobes). Prints RESULT lines (tests/harness);
exits non-zero on failure."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import Fatal, Tier, Xolctl, in_mount_ns, make_test_ca, run, wait_for  # noqa: E402
from harness.fleet import BINARIES  # noqa: E402

N = 2


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main():
    with Tier("prometheus") as t:
        prom = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not os.access(prom, os.X_OK):
            raise Fatal("setup", "no prometheus binary (apt-get install prometheus)")
        bindir = t.binaries(BINARIES)

        def b(name):
            return os.path.join(bindir, name)

        # Every shipped binary names the release in VERSION (and the commit when built in git).
        with open("VERSION") as f:
            want_version = "".join(f.read().split())
        bad = []
        for name in ("xolfleet-controller", "xolfleet-agent", "xolctl"):
            r = run([b(name), "--version"], timeout=30)
            if r.rc != 0 or not r.text.startswith(f"{name} {want_version}"):
                bad.append(f"{name}:{r.text.strip()!r}")
        t.check("version-flag", not bad, f"want {want_version}: {' '.join(bad)}")

        ca = t.path("ca")
        try:
            make_test_ca(t.root, ca, agents=N, clients=["admin"])
        except Exception as e:
            raise Fatal("setup", f"make-test-ca.sh: {e}")
        with open(t.path("authz.conf"), "w") as f:
            f.write("admin cn:admin\nagent cn:node-*\n")

        # Free loopback ports: controller gRPC, controller metrics, agent metrics, Prometheus.
        ports = free_ports(4 + 2 * N)
        ctl, ctl_metrics, prom_addr = (f"127.0.0.1:{p}" for p in ports[:3])
        t.procs.start("controller", [
            b("xolfleet-controller"), f"--listen={ctl}", f"--metrics_listen={ctl_metrics}",
            f"--state_db={t.path('c.db')}", "--init", f"--tls_ca={ca}/ca.crt",
            f"--tls_cert={ca}/controller.crt", f"--tls_key={ca}/controller.key",
            f"--authz_config={t.path('authz.conf')}", "--heartbeat_interval=250ms"],
            t.path("controller.log"))
        # Node i's mount namespace: TMP/mnt is its own copy of the workload.
        os.makedirs(t.path("mnt"), exist_ok=True)
        agent_procs, workloads, targets = {}, {}, []
        for i in range(1, N + 1):
            node = t.path(f"node{i}")
            os.makedirs(node, exist_ok=True)
            shutil.copy2(b("hit_workload"), node)
            met = f"127.0.0.1:{ports[2 + 2 * i]}"
            agent_procs[i] = t.procs.start(f"agent{i}", in_mount_ns(node, t.path("mnt"), [
                b("xolfleet-agent"), f"--unix-socket={node}/agent.sock",
                f"--metrics_address={met}", f"--node_name=node-{i}", f"--controller={ctl}",
                f"--controller_tls_ca={ca}/ca.crt", f"--controller_tls_cert={ca}/node-{i}.crt",
                f"--controller_tls_key={ca}/node-{i}.key"]), t.path(f"agent{i}.log"))
            targets.append(f"xolfleet-agent={met},node-{i},xolfleet-agent-{i}")
            workloads[i] = t.procs.start(f"wl{i}", in_mount_ns(
                node, t.path("mnt"), [t.path("mnt", "hit_workload")]), t.path(f"wl{i}.out"),
                stdin=True)

        alerts = t.path("alerts.yml")
        if os.path.exists("deploy/prometheus/alerts.yml"):
            shutil.copyfile("deploy/prometheus/alerts.yml", alerts)
        else:
            open(alerts, "w").close()
        conf = t.path("prometheus.yml")
        r = run([sys.executable, "tests/fleet/prom_static_config.py",
                 "deploy/prometheus/prometheus.yml", conf,
                 f"xolfleet-controller={ctl_metrics},ctl-node,xolfleet-controller-0", *targets,
                 f"--rules={alerts}", "--interval=1s"], timeout=60)
        if r.rc != 0:
            raise Fatal("config", "static substitution of deploy/prometheus/prometheus.yml: "
                        + " ".join(r.text.strip().splitlines()[-3:]))
        r = run(["promtool", "check", "config", conf], timeout=60)
        if r.rc != 0:
            raise Fatal("config", "promtool rejected the test config: "
                        + " ".join(r.text.strip().splitlines()[-3:]))
        t.passed("config")
        # The alert rules' unit tests (labels and rendered annotations, absent targets, skew).
        r = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"],
                           cwd="deploy/prometheus", capture_output=True, text=True)
        t.check("alert-rules-unit-tests", r.returncode == 0,
                lambda: " ".join([line for line in (r.stdout + r.stderr).splitlines()
                                  if any(w in line for w in ("FAILED", "alertname", "Error"))][:3]))
        t.procs.start("prometheus", [prom, f"--config.file={conf}",
                                     f"--storage.tsdb.path={t.path('data')}",
                                     f"--web.listen-address={prom_addr}"],
                      t.path("prometheus.log"))

        fleet = Xolctl(b("xolctl"), None, [f"--controller={ctl}", f"--tls-ca={ca}/ca.crt",
                                           f"--tls-cert={ca}/admin.crt",
                                           f"--tls-key={ca}/admin.key", "--timeout=30"])

        def http_json(path, **params):
            url = f"http://{prom_addr}{path}"
            if params:
                url += "?" + urllib.parse.urlencode(params)
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    return json.load(resp)
            except Exception:
                return None

        def ready():
            try:
                with urllib.request.urlopen(f"http://{prom_addr}/-/ready", timeout=5) as resp:
                    return resp.status == 200
            except Exception:
                return False

        def agents():
            r = fleet("fleet", "agents")
            return (r.data or {}).get("agents", [])

        def agents_up():
            return sum(a.get("health") == "AGENT_HEALTH_UP" for a in agents()) == N
        if not wait_for(60, ready):
            raise Fatal("setup", "prometheus not ready")
        if not wait_for(40, agents_up):
            raise Fatal("setup", "agents did not register")

        # The fleet: one set of two probes on every node; node i calls each 1000*i times.
        wl = t.path("mnt", "hit_workload")
        r = fleet("fleet", "attach", "--all", "--canary=0.5", f"{wl}:xol_target_add",
                  f"{wl}:xol_target_other")
        if r.rc != 0 or (r.data or {}).get("state") != "ROLLOUT_STATE_COMPLETE":
            raise Fatal("setup", f"fleet attach: {r!r}")
        for i in range(1, N + 1):
            workloads[i].write(f"run {1000 * i} 0")

        def query(q, label):
            """PromQL -> "labelvalue=value" joined by spaces, sorted by the label ("-": none);
            None if the query failed."""
            d = http_json("/api/v1/query", query=q)
            if not d or d.get("status") != "success":
                return None
            res = sorted(d["data"]["result"], key=lambda x: x["metric"].get(label, ""))
            return " ".join("%s=%g" % (x["metric"].get(label, "-"), float(x["value"][1]))
                            for x in res)

        def expect(name, q, label, want):
            got = [None]

            def now():
                got[0] = query(q, label)
                return got[0] == want
            t.check(name, wait_for(60, now, interval=0.5), lambda: f"{q}: got '{got[0]}', want '{want}'")

        profiles = sorted({a["registration"]["kernel_profile"] for a in agents()})
        expect("targets-up", "up", "job", "xolfleet-agent=1 xolfleet-agent=1 xolfleet-controller=1")
        expect("agents-by-state", "sum by (state) (xolfleet_controller_agents)", "state",
               f"down=0 up={N}")
        expect("agents-by-profile",
               'sum by (kernel_profile) (xolfleet_controller_agents{state="up"})',
               "kernel_profile", f"{profiles[0] if len(profiles) == 1 else profiles}={N}")
        expect("node-hits-exact", "sum by (node) (xolfleet_controller_node_hits_total)", "node",
               "node-1=2000 node-2=4000")
        expect("fleet-hits-exact", "sum(xolfleet_controller_fleet_hits_total)", "-", "-=6000")
        expect("agent-series-node",
               'count by (node) (xolfleet_agent_hits_total{pod=~"xolfleet-agent-.+"})', "node",
               "node-1=1 node-2=1")
        expect("agent-series-pod",
               'count by (pod) (xolfleet_agent_hits_total{node=~"node-.+"})', "pod",
               "xolfleet-agent-1=1 xolfleet-agent-2=1")
        expect("controller-series-own-node",
               'count(xolfleet_controller_agent_up{exported_node!=""}) or vector(0)', "-", "-=0")
        expect("agent-hits-exact", "sum by (node) (xolfleet_agent_hits_total)", "node",
               "node-1=2000 node-2=4000")
        expect("probes-per-node", 'sum by (node) (xolfleet_controller_probes{state="ATTACHED"})',
               "node", "node-1=2 node-2=2")
        expect("probes-by-placement",
               'count(count by (placement) (xolfleet_controller_probes{placement!="UNKNOWN"}))',
               "-", "-=1")
        expect("rollout-outcomes", 'xolfleet_controller_rollouts_total{outcome="complete"}',
               "outcome", "complete=1")
        expect("request-latency",
               'sum(xolfleet_controller_request_duration_seconds_count{method="AttachFleet"})',
               "-", "-=1")
        expect("latency-buckets",
               'count(xolfleet_controller_request_duration_seconds_bucket{method="AttachFleet"})',
               "-", "-=17")
        expect("build-info", "count by (version) (xolfleet_build_info == 1)", "version",
               f"{want_version}={N + 1}")
        expect("config-in-force", "count by (config) (xolfleet_config_in_force == 1)", "config",
               f"authz=1 controller_tls={N} tls=1")
        expect("agent-up-series", "count(xolfleet_controller_agent_up == 1)", "-", f"-={N}")
        # Issue 14: each agent's calibration, in the order the kernel dictates (single-step
        # above emulated on a stock kernel), from the agents and through the controller's
        # heartbeats.
        expect("agent-calibration-ordered",
               'count(xolfleet_agent_calibration_seconds_per_hit{placement="SINGLE_STEP",'
               'capture="false"} > on(instance) xolfleet_agent_calibration_seconds_per_hit'
               '{placement="EMULATED",capture="false"})', "-", f"-={N}")
        expect("node-calibration-ordered",
               'count by (node) (xolfleet_controller_node_calibration_seconds_per_hit'
               '{placement="SINGLE_STEP"} > on(node) '
               'xolfleet_controller_node_calibration_seconds_per_hit{placement="EMULATED"})',
               "node", "node-1=1 node-2=1")
        expect("node-cost-and-budget",
               "count(xolfleet_controller_node_budget_cpu == 0.01) and "
               "count(xolfleet_controller_node_cpu_seconds_per_second >= 0)", "-", f"-={N}")

        d = http_json("/api/v1/rules")
        rules = [r for g in (d or {}).get("data", {}).get("groups", []) for r in g["rules"]]
        bad = [r["name"] for r in rules if r.get("health") != "ok"]
        t.check("alert-rules-evaluate", d is not None and len(rules) > 0 and not bad,
                f"rules={len(rules)} unhealthy={','.join(bad) or '-'}")

        # Every query of the Grafana dashboard is valid PromQL for this Prometheus (and the
        # new panels have data: versions and reloads).
        with open("deploy/grafana/xolfleet-fleet.json") as f:
            panels = json.load(f)["panels"]
        bad = []
        for p in panels:
            for tg in p.get("targets", []):
                q = tg["expr"].replace("$__rate_interval", "1m").replace("$__interval", "1m")
                r = http_json("/api/v1/query", query=q)
                ok = bool(r) and r.get("status") == "success"
                if ok and p["id"] in (16,) and not r["data"]["result"]:
                    ok = False
                if not ok:
                    bad.append(f"{p['id']}/{tg.get('refId')}")
        t.check("grafana-queries", not bad, f"invalid or empty: {' '.join(bad)}")

        # An agent going away shows up as down in the controller's series (and the alert's
        # expr).
        agent_procs[1].signal(signal.SIGTERM)
        expect("agent-down-visible", "sum by (state) (xolfleet_controller_agents)", "state",
               f"down=1 up={N - 1}")


if __name__ == "__main__":
    main()
