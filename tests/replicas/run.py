#!/usr/bin/env python3
"""Tier "replicas": controller replicas on etcd (issue 13). A three-member etcd cluster on
loopback that serves its clients over TLS and requires client certificates (https client
URLs, --client-cert-auth; peer traffic stays plaintext on loopback) and three controller
replicas (--store=etcd://..., --etcd_tls_*, --leader_lease=3s) in one network namespace,
all certificates from the test CA (scripts/make-test-ca.sh); three real agents, each in its
own network and mount namespace as in the fleet tier (tests/harness/fleet.py), over mTLS,
each given every replica's address (starting with a different one, so the agents spread
over the replicas).

Checks: a replica without --etcd_tls_* is refused by the cluster and exits with an error
that names the store and the TLS flags; one leader; every agent seen UP from every
replica; kill -9 of the leader in the middle of a canary rollout: another replica takes
over, the rollout completes exactly once, every agent reconnected, each node runs each
fleet probe exactly once and counts exact hits; a WatchFleetHits stream on one replica
counts exactly the hits of agents connected to the others, and every replica's hit
counters agree with the fleet view; a replica holding an agent killed -9: the stream is
told and keeps counting exactly; kill -9 of one etcd member: rollouts and
reads go on; kill -9 of a second (the majority gone): every replica refuses writes with
UNAVAILABLE and a message naming the store, and keeps serving reads; members restarted:
writes and a leader come back by themselves; the replicas' etcd client certificate
replaced by one of a new CA and the members restarted trusting only that CA: every replica
reloads it and keeps writing, without a restart.

Every assertion reads `xolctl ... --json` or /metrics, never table columns; nothing is
timed: every wait polls with a generous timeout. Needs root. Prints RESULT lines
(tests/harness/tier.py); exits non-zero on failure."""
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import Fatal, Tier, run, wait_for  # noqa: E402
from harness.certs import make_test_ca, new_leaf, replace  # noqa: E402
from harness.fleet import FleetLab, probe_rows  # noqa: E402
from harness.metrics import metric_sum  # noqa: E402
from harness.netns import BridgeNet, netns_exec  # noqa: E402
from harness.xolctl import Xolctl, parse_json_stream  # noqa: E402

N = 3  # agents
R = 3  # controller replicas
MEMBERS = (1, 2, 3)  # etcd
ETCD_URL = "etcd://" + ",".join(f"127.0.0.1:{m}2379" for m in MEMBERS)


class ReplicaLab(FleetLab):
    """FleetLab with R controller replicas on a three-member etcd cluster, all in the hub
    namespace (10.233.0.1; etcd on its loopback). Replica k listens on port 7442+k and
    serves /metrics on 9464+k; node i lists every replica, starting with replica i."""

    def __init__(self, tier, n, r):
        super().__init__(tier, n=n, subnet="10.233.0")
        suf = os.getpid()
        self.suf = suf
        self.net = BridgeNet(f"xrc-{suf}", [f"xra{i}-{suf}" for i in range(1, n + 1)],
                             prefix="10.233.0", bridge="xrbr0", veth="xrh")
        self.r = r
        self.ctls = {}   # replica k -> Proc, live ones only
        self.etcd_trusted_ca = None  # the CA etcd trusts for clients (default: the test CA)
        self.etcds = {}  # member m -> Proc, live ones only

    def setup(self):
        super().setup()
        # The controllers' client certificate for etcd (etcd serves controller.crt, whose
        # SANs include 127.0.0.1, and trusts the test CA).
        try:
            new_leaf(self.ca, self.ca, "etcd-client", "etcd-client", "clientAuth")
        except Exception as e:
            raise Fatal("setup", f"cannot make the etcd client certificate: {e}")
        return self

    def etcd_client_tls(self):
        """The controller flags of client TLS to etcd."""
        return [f"--etcd_tls_ca={self.ca}/ca.crt", f"--etcd_tls_cert={self.ca}/etcd-client.crt",
                f"--etcd_tls_key={self.ca}/etcd-client.key"]

    # --- etcd ---
    def start_etcd(self, m):
        """Member m (a restarted member keeps its data directory): clients over TLS with
        certificates of the test CA only; peers in plaintext on loopback."""
        cluster = ",".join(f"e{x}=http://127.0.0.1:{x}2380" for x in MEMBERS)
        self.etcds[m] = self.t.procs.start(f"etcd{m}", netns_exec(self.nsc, [
            "etcd", "--name", f"e{m}", "--data-dir", self.t.path(f"etcd{m}"),
            "--listen-client-urls", f"https://127.0.0.1:{m}2379",
            "--advertise-client-urls", f"https://127.0.0.1:{m}2379",
            "--cert-file", f"{self.ca}/controller.crt", "--key-file", f"{self.ca}/controller.key",
            "--trusted-ca-file", self.etcd_trusted_ca or f"{self.ca}/ca.crt", "--client-cert-auth",
            "--listen-peer-urls", f"http://127.0.0.1:{m}2380",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m}2380",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"xr-{self.suf}"]), self.t.path(f"etcd{m}.log"))

    def kill_etcd(self, m):
        self.etcds.pop(m).kill9()

    def etcd_healthy(self, want, cert=None):
        """At least `want` members answer as healthy to a client with `cert`.{crt,key}
        (default: the controllers' etcd client certificate)."""
        cert = cert or f"{self.ca}/etcd-client"
        n = 0
        for m in MEMBERS:
            r = run(netns_exec(self.nsc, [
                "env", "ETCDCTL_API=3", "etcdctl", f"--endpoints=https://127.0.0.1:{m}2379",
                f"--cacert={self.ca}/ca.crt", f"--cert={cert}.crt", f"--key={cert}.key",
                "--command-timeout=3s", "endpoint", "health"]), timeout=30)
            n += r.rc == 0
        return n >= want

    # --- controller replicas ---
    def ctl_addr_of(self, k):
        return f"{self.net.hub_addr}:{7442 + k}"

    def controller_argv(self, k, etcd_tls=True):
        return netns_exec(self.nsc, [
            self.b("xolfleet-controller"), f"--listen={self.ctl_addr_of(k)}",
            f"--metrics_listen={self.net.hub_addr}:{9464 + k}", f"--store={ETCD_URL}",
            f"--replica_name=r{k}", "--leader_lease=3s", f"--tls_ca={self.ca}/ca.crt",
            f"--tls_cert={self.ca}/controller.crt", f"--tls_key={self.ca}/controller.key",
            f"--authz_config={self.authz}", "--heartbeat_interval=250ms",
            "--config_reload_interval=1s",
            "--heartbeat_timeout=5s", "--canary_timeout=120s"] +
            (self.etcd_client_tls() if etcd_tls else []))

    def start_controller(self, k):
        self.ctls[k] = self.t.procs.start(f"controller{k}", self.controller_argv(k),
                                          self.t.path(f"controller{k}.log"))
        return self.ctls[k]

    def start_plaintext_controller(self, k):
        """Replica k without --etcd_tls_*: the cluster refuses it (not kept in self.ctls)."""
        return self.t.procs.start(f"plaintext-controller{k}",
                                  self.controller_argv(k, etcd_tls=False),
                                  self.t.path(f"plaintext-controller{k}.log"))

    def kill_controller(self, k):
        self.ctls.pop(k).kill9()

    def live(self):
        return sorted(self.ctls)

    def replica_metrics(self, k):
        r = run(netns_exec(self.nsc, ["curl", "-s", "--max-time", "5",
                                      f"http://{self.net.hub_addr}:{9464 + k}/metrics"]),
                timeout=30)
        return r.out if r.rc == 0 else ""

    def is_leader(self, k):
        for line in self.replica_metrics(k).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "xolfleet_controller_leader":
                return float(parts[1]) == 1
        return False

    def leader(self):
        """The leading live replica, or None unless exactly one leads."""
        found = [k for k in self.live() if self.is_leader(k)]
        return found[0] if len(found) == 1 else None

    def leaders(self):
        return [f"r{k}" for k in self.live() if self.is_leader(k)]

    def rollouts_counted(self):
        """xolfleet_controller_rollouts_total summed over the live replicas."""
        return sum(metric_sum(self.replica_metrics(k), "xolfleet_controller_rollouts_total")
                   for k in self.live())

    # --- agents ---
    def start_agent(self, i):
        targets = ",".join(self.ctl_addr_of((i - 1 + k) % self.r + 1) for k in range(self.r))
        p = self.t.procs.start(f"agent{i}", self.in_node(i, [
            self.b("xolfleet-agent"), f"--unix-socket={self.node_dir(i)}/agent.sock",
            "--metrics_address=", f"--node_name=node-{i}", f"--controller={targets}",
            f"--controller_tls_ca={self.ca}/ca.crt",
            f"--controller_tls_cert={self.ca}/node-{i}.crt",
            f"--controller_tls_key={self.ca}/node-{i}.key"]), self.t.path(f"agent{i}.log"))
        self.agents[i] = p
        return p

    def holders(self, k):
        """{node: replica holding its stream} as replica k lists them; {} on error."""
        r = self.fleet_at(k, "admin", "agents")
        return {a["registration"]["node_name"]: a.get("replica", "")
                for a in (r.data or {}).get("agents", [])}

    def node_hits_counted(self, k):
        """{node: xolfleet_controller_node_hits_total summed over placements} of replica k."""
        out = {}
        for line in self.replica_metrics(k).splitlines():
            m = re.match(r'xolfleet_controller_node_hits_total\{(.*)\} (\S+)$', line)
            if m:
                node = re.search(r'node="([^"]*)"', m.group(1)).group(1)
                out[node] = out.get(node, 0) + int(float(m.group(2)))
        return out

    # --- clients, per replica ---
    def client(self, who, k=1, timeout=30):
        return Xolctl(self.b("xolctl"), self.nsc, [
            f"--controller={self.ctl_addr_of(k)}", f"--tls-ca={self.ca}/ca.crt",
            f"--tls-cert={self.ca}/{who}.crt", f"--tls-key={self.ca}/{who}.key",
            f"--timeout={timeout}"], timeout=timeout)

    def fleet_at(self, k, who, *args):
        return self.client(who, k)("fleet", *args)

    def agents_at(self, k):
        """[(node, health)] replica k lists; None on error."""
        r = self.fleet_at(k, "admin", "agents")
        if r.data is None:
            return None
        return [(a["registration"]["node_name"], a.get("health"))
                for a in r.data.get("agents", [])]

    def agents_up_at(self, k, n):
        a = self.agents_at(k)
        return a is not None and sum(1 for _, h in a if h == "AGENT_HEALTH_UP") == n

    def all_agents_up_everywhere(self):
        return all(self.agents_up_at(k, self.n) for k in self.live())

    def agents_everywhere(self):
        return " | ".join(f"r{k}: {self.agents_at(k)}" for k in self.live())

    def rollout_state_at(self, k, set_id):
        d = self.fleet_at(k, "admin", "rollout", set_id).data or {}
        return d.get("rollout", d).get("state", "")

    def probes_at(self, k, *filters):
        """The fleet's probes as replica k lists them (as FleetLab.probes); None on error."""
        return probe_rows(self.fleet_at(k, "admin", "list", *filters))

    def exactly_once_on_every_node(self, set_id, nspecs):
        """Every node runs each of the set's fleet probes exactly once (ATTACHED) and nothing
        else of it (no detached leftovers re-attached, no duplicates)."""
        for i in range(1, self.n + 1):
            lp = self.local_probes(i)
            if lp is None:
                return False
            mine = [f for _, s, f in lp
                    if s == "PROBE_STATE_ATTACHED" and f.startswith(set_id + "/")]
            if len(mine) != nspecs or len(set(mine)) != len(mine):
                return False
        return True

    def local_everywhere(self):
        return " | ".join(f"node-{i}: {self.local_probes(i)}" for i in range(1, self.n + 1))


def main():
    with Tier("replicas") as t:
        if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
            raise Fatal("setup", "etcd not installed (scripts/setup.sh: etcd-server, etcd-client)")
        lab = ReplicaLab(t, N, R).setup()
        t.log(f"starting a 3-member etcd cluster, {R} controller replicas and {N} agents")
        for m in MEMBERS:
            lab.start_etcd(m)
        if not wait_for(90, lab.etcd_healthy, 3):
            raise Fatal("setup", f"etcd cluster not healthy: {lab.etcds[1].log_text()[-300:]}")
        plaintext_replica_refused(t, lab)
        for k in range(1, R + 1):
            lab.start_controller(k)
        for i in range(1, N + 1):
            lab.start_agent(i)
            lab.start_workload(i)
        scenarios(t, lab)


def plaintext_replica_refused(t, lab):
    """A replica started without --etcd_tls_* against the TLS cluster exits non-zero, with
    an error naming the store and the TLS flags, before it serves anything."""
    p = lab.start_plaintext_controller(R + 1)
    rc = p.wait(timeout=90)
    if rc is None:
        p.kill9()
    log = p.log_text()
    t.check("plaintext-replica-refused",
            rc not in (None, 0) and "desired-state store unavailable" in log
            and "--etcd_tls_ca" in log and "xolfleet-controller: replica" not in log,
            f"exit status {rc}, log: {log[-600:]}")


def scenarios(t, lab):
    wl = lab.wl

    # 1. One leader; every agent up as seen from every replica (statuses shared via etcd).
    t.check("one-leader", wait_for(60, lab.leader), lambda: f"leaders: {lab.leaders()}")
    t.check("agents-seen-from-every-replica", wait_for(60, lab.all_agents_up_everywhere),
            lab.agents_everywhere)

    # 2. kill -9 the leader in the middle of a canary rollout (the soak keeps the canary
    #    stage open); the set is created through another replica.
    old = lab.leader()
    if old is None:
        raise Fatal("leader-kill9-mid-rollout", f"no single leader: {lab.leaders()}")
    via = old % R + 1
    base_rollouts = lab.rollouts_counted()
    r = lab.fleet_at(via, "counter", "attach", "--all", "--canary=0.3", "--canary-soak=8",
                     "--no-wait", f"{wl}:xol_target_add", f"{wl}:xol_target_other")
    set_a = (r.data or {}).get("set_id", "")
    state_at_kill = lab.rollout_state_at(via, set_a) if set_a else ""
    t.log(f"leader r{old}, set {set_a} ({state_at_kill}) through r{via}; kill -9 r{old}")
    lab.kill_controller(old)
    t.check("leader-kill9-mid-rollout", set_a and state_at_kill == "ROLLOUT_STATE_CANARY",
            f"set '{set_a}' was '{state_at_kill}' when the leader was killed: {r!r}")
    if not set_a:
        raise Fatal("rollout-completes-after-failover", "no set to follow")
    t.check("new-leader", wait_for(60, lambda: lab.leader() not in (None, old)),
            lambda: f"leaders after r{old} was killed: {lab.leaders()}")
    # Poll to the end and remember every state seen: complete, never rolled back on the way.
    seen = []

    def completed():
        s = lab.rollout_state_at(via, set_a)
        if s:
            seen.append(s)
        return s == "ROLLOUT_STATE_COMPLETE"
    t.check("rollout-completes-after-failover", wait_for(120, completed),
            lambda: f"states seen: {seen}")
    t.check("rollout-never-rolled-back", not any("ROLLED_BACK" in s for s in seen),
            f"states seen: {seen}")
    time.sleep(2)  # a few more ticks: a second outcome would show here
    counted = lab.rollouts_counted()
    t.check("rollout-finished-once", counted == base_rollouts + 1,
            f"rollouts counted by live replicas: {counted} (before: {base_rollouts})")
    for k in lab.live():
        st = lab.rollout_state_at(k, set_a)
        t.check(f"rollout-state-r{k}", st == "ROLLOUT_STATE_COMPLETE", f"r{k} says {st}")
    t.check("agents-reconnected", wait_for(60, lab.all_agents_up_everywhere),
            lab.agents_everywhere)
    t.check("no-probe-lost-or-duplicated",
            wait_for(30, lab.exactly_once_on_every_node, set_a, 2), lab.local_everywhere)

    # Exact hits per node, read through any replica: node i calls each target 1000*i times.
    for i in range(1, N + 1):
        lab.workloads[i].write(f"run {1000 * i} 0")

    def exact_hits(k):
        ps = lab.probes_at(k, f"--set={set_a}")
        if ps is None:
            return False
        for i in range(1, N + 1):
            for s in (0, 1):
                m = [p for p in ps if p["node"] == f"node-{i}" and p["id"] == f"{set_a}/{s}"]
                if len(m) != 1 or (m[0]["actual"], m[0]["hits"], m[0]["copies"],
                                   m[0]["desired"]) != ("PROBE_STATE_ATTACHED", 1000 * i, 1, True):
                    return False
        return True
    for k in lab.live():
        t.check(f"exact-hits-via-r{k}", wait_for(30, exact_hits, k),
                lambda k=k: f"{lab.probes_at(k, f'--set={set_a}')}")
    # The killed replica comes back as a follower and sees everything.
    lab.start_controller(old)
    t.check("killed-replica-rejoins", wait_for(60, lab.all_agents_up_everywhere),
            lambda: f"r{old} does not see the fleet: {lab.agents_everywhere()}")
    t.check("still-one-leader", wait_for(30, lab.leader), lambda: f"leaders: {lab.leaders()}")

    # 2b. Hits across replicas: a stream on the replica set_a was attached through sees the
    #     hits of the agents connected to the others, exactly; counters agree everywhere;
    #     a peer killed -9 is reported and the stream goes on.
    fleet_wide_hits(t, lab, set_a, via)

    # 3. kill -9 one etcd member: rollouts and reads go on.
    lab.kill_etcd(1)
    r = lab.fleet_at(2, "counter", "attach", "--all", f"{wl}:xol_target_spin")
    set_b = (r.data or {}).get("set_id", "")
    t.check("one-etcd-member-down-attach",
            r.rc == 0 and set_b and r.data.get("state") == "ROLLOUT_STATE_COMPLETE", repr(r))
    t.check("one-etcd-member-down-exactly-once",
            set_b and wait_for(30, lab.exactly_once_on_every_node, set_b, 1),
            lambda: f"set {set_b}: {lab.local_everywhere()}")
    t.check("one-etcd-member-down-leader", wait_for(60, lab.leader),
            lambda: f"leaders: {lab.leaders()}")

    # 4. kill -9 a second member: no majority. Writes are refused, with UNAVAILABLE and the
    #    store named, by every replica; reads are served; the agents keep their probes.
    lab.kill_etcd(2)
    refusals = {}

    def refuses_writes(k):
        r = lab.fleet_at(k, "counter", "attach", "--all", f"{wl}:xol_target_fast")
        refusals[k] = r
        return r.rc != 0 and re.search(r"UNAVAILABLE.*desired-state store unavailable", r.text)
    for k in range(1, R + 1):
        t.check(f"no-majority-write-refused-r{k}", wait_for(60, refuses_writes, k),
                lambda k=k: repr(refusals.get(k)))
        d = lab.fleet_at(k, "counter", "detach", set_b)
        t.check(f"no-majority-detach-refused-r{k}", d.rc != 0, f"detach went through: {d!r}")
        ps = lab.probes_at(k, f"--set={set_a}")
        t.check(f"no-majority-reads-r{k}",
                ps is not None and any(p["node"] == "node-1" and p["id"] == f"{set_a}/0"
                                       for p in ps), f"r{k} lists {ps}")
        a = lab.fleet_at(k, "admin", "agents")
        t.check(f"no-majority-agents-read-r{k}", a.rc == 0, f"list agents failed: {a!r}")
    t.check("no-majority-no-leader", wait_for(60, lambda: not lab.leaders()),
            lambda: f"still acting as leader: {lab.leaders()}")
    t.check("no-majority-probes-kept", lab.exactly_once_on_every_node(set_a, 2),
            lab.local_everywhere)

    # 5. The members come back: a leader, writes and every agent, with nobody restarting
    #    anything.
    lab.start_etcd(1)
    lab.start_etcd(2)
    t.check("etcd-recovers", wait_for(90, lab.etcd_healthy, 3), "etcd not healthy")
    t.check("recovery-leader", wait_for(90, lab.leader), "no leader after etcd recovered")
    last = {}

    def attach_works():
        r = lab.fleet_at(3, "counter", "attach", "--all", f"{wl}:xol_target_fast")
        last["r"] = r
        return r.rc == 0 and (r.data or {}).get("state") == "ROLLOUT_STATE_COMPLETE"
    t.check("recovery-writes", wait_for(90, attach_works), lambda: repr(last.get("r")))
    t.check("recovery-agents", wait_for(60, lab.all_agents_up_everywhere), lab.agents_everywhere)
    t.check("recovery-exactly-once", wait_for(30, lab.exactly_once_on_every_node, set_a, 2),
            lab.local_everywhere)

    # 6. The replicas' etcd client certificate rotated to one of a new CA, then the members
    #    trust only the new CA: the replicas go on without a restart.
    etcd_cert_rotation(t, lab)


def etcd_cert_rotation(t, lab):
    """The file --etcd_tls_cert/--etcd_tls_key name is replaced (mv) by a certificate of a
    new CA; every replica reloads it (xolfleet_config_reloads_total{config="etcd_tls",
    result="applied"}); the three members are restarted trusting only the new CA; the old
    certificate is refused and the same replica processes write, lead and see every agent."""
    wl = lab.wl
    ca2 = t.path("ca2")
    try:
        make_test_ca(t.root, ca2, agents=1, clients=["etcd-client"])
    except Exception as e:
        raise Fatal("etcd-cert-rotation", f"cannot make the second CA: {e}")
    old = t.path("old-etcd-client")
    shutil.copyfile(f"{lab.ca}/etcd-client.crt", f"{old}.crt")
    shutil.copyfile(f"{lab.ca}/etcd-client.key", f"{old}.key")
    procs = dict(lab.ctls)

    def applied(k):
        n = 0
        for line in lab.replica_metrics(k).splitlines():
            if (line.startswith("xolfleet_config_reloads_total{") and 'config="etcd_tls"' in line
                    and 'result="applied"' in line):
                n += int(float(line.split()[1]))
        return n
    before = {k: applied(k) for k in lab.live()}
    replace(f"{ca2}/etcd-client.key", f"{lab.ca}/etcd-client.key")
    replace(f"{ca2}/etcd-client.crt", f"{lab.ca}/etcd-client.crt")
    t.check("etcd-cert-reloaded", wait_for(60, lambda: all(applied(k) > before[k]
                                                           for k in lab.live())),
            lambda: f"applied before {before}, now { {k: applied(k) for k in lab.live()} }")
    for m in MEMBERS:
        lab.kill_etcd(m)
    lab.etcd_trusted_ca = f"{ca2}/ca.crt"
    for m in MEMBERS:
        lab.start_etcd(m)
    t.check("etcd-new-ca-only", wait_for(90, lab.etcd_healthy, 3), "etcd not healthy")
    t.check("etcd-old-cert-refused", not lab.etcd_healthy(1, cert=old),
            "a member still takes the old client certificate")
    for k in lab.live():
        last = {}

        def writes(k=k):
            r = lab.fleet_at(k, "counter", "attach", "--all", f"{wl}:xol_target_fast")
            last["r"] = r
            return r.rc == 0 and (r.data or {}).get("state") == "ROLLOUT_STATE_COMPLETE"
        t.check(f"etcd-cert-rotated-writes-r{k}", wait_for(90, writes),
                lambda: repr(last.get("r")))
    t.check("etcd-cert-rotated-leader", wait_for(60, lab.leader), lambda: f"{lab.leaders()}")
    t.check("etcd-cert-rotated-agents", wait_for(60, lab.all_agents_up_everywhere),
            lab.agents_everywhere)
    t.check("etcd-cert-rotated-no-restart",
            all(p.alive() and lab.ctls.get(k) is p for k, p in procs.items()),
            f"replicas restarted or gone: {sorted(procs)} -> {lab.live()}")


def fleet_wide_hits(t, lab, set_a, a):
    """Replica `a` (set_a was attached through it) serves a WatchFleetHits stream; real
    workloads hit set_a's probes on every node, among them nodes whose agents are connected
    to other replicas: the stream counts each node's hits exactly (dropped 0) and names the
    replica each came through; every replica's node_hits_total equals the node's totals in
    the fleet view. Then a replica holding an agent is killed -9: the stream says it is
    gone and keeps serving, exactly, the hits of every node (the orphaned agent's too,
    once it reconnects elsewhere). The killed replica is restarted at the end."""
    out = t.path("watch-fleet-wide.json")
    watch = t.procs.start("watch-fleet-wide", lab.client("viewer", a).argv(
        ["fleet", "watch", f"--set={set_a}"]), out, append=False)

    def watching():
        return metric_sum(lab.replica_metrics(a), "xolfleet_controller_hit_watchers") == 1
    if not wait_for(30, watching):
        t.log(f"the watch stream is not open on r{a} yet (check fleet-wide-watch-exact)")
    held = {}

    def everyone_held():
        held.clear()
        held.update(lab.holders(a))
        return len(held) == lab.n and all(held.values())
    wait_for(60, everyone_held)
    others = sorted(n for n, r in held.items() if r != f"r{a}")
    t.log(f"watch on r{a}; streams held: {held}")
    t.check("fleet-wide-agent-on-another-replica", bool(others),
            f"every agent is on r{a}: {held}")
    if not others:
        watch.stop()
        return

    def watch_state():
        with open(out, errors="replace") as f:
            objs = parse_json_stream(f.read())
        sums, via, notices, dropped = {}, {}, [], 0
        for o in objs:
            dropped = max(dropped, int(o.get("dropped_total", 0)))
            notices += o.get("notices", [])
            for u in o.get("updates", []):
                n = u["node_name"]
                sums[n] = sums.get(n, 0) + int(u.get("hits_delta", 0))
                via.setdefault(n, set()).add(u.get("replica", ""))
        return sums, via, notices, dropped

    want = {f"node-{i}": 2 * 500 * i for i in range(1, lab.n + 1)}
    for i in range(1, lab.n + 1):
        lab.workloads[i].write(f"run {500 * i} 0")
    wait_for(60, lambda: watch_state()[0] == want)
    time.sleep(1.5)  # a few more syncs into the stream: nothing counted twice
    sums, via, notices, dropped = watch_state()
    t.check("fleet-wide-watch-exact", (sums, dropped) == (want, 0),
            f"watch on r{a} saw {sorted(sums.items())} dropped={dropped}, "
            f"want {sorted(want.items())} dropped=0")
    t.check("fleet-wide-watch-via-other-replicas",
            all(via.get(n) == {held[n]} for n in others),
            f"updates of {others} came through {via}, their agents are on "
            f"{ {n: held[n] for n in others} }")
    # The first notice names the replicas merged when the stream opened; one that advertised
    # itself in etcd only after that is named by a "joined" notice instead.
    names = [f"r{k}" for k in lab.live()]
    merging = [n for n in notices if n.startswith("merging the hits")]
    named = lambda r: (any(re.search(rf"\b{r}\b", n) for n in merging) or
                       any(n.startswith(f"replica {r} joined") for n in notices))
    t.check("fleet-wide-watch-names-replicas",
            len(merging) == 1 and all(named(r) for r in names), f"notices: {notices}")

    # Counters: every replica counts every node's hits, which the fleet view totals.
    def totals():
        ps = lab.probes_at(a)
        if ps is None:
            return None
        out = {}
        for p in ps:
            out[p["node"]] = out.get(p["node"], 0) + p["hits"]
        return out
    seen = {}

    def counters_agree():
        want_c = totals()
        seen["want"] = want_c
        for k in lab.live():
            seen[k] = lab.node_hits_counted(k)
            if want_c is None or seen[k] != want_c:
                return False
        return True
    t.check("fleet-wide-counters-agree", wait_for(30, counters_agree), lambda: f"{seen}")
    text = lab.replica_metrics(a)
    cnt = metric_sum(text, "xolfleet_controller_remote_hits_delay_seconds_count")
    tot = metric_sum(text, "xolfleet_controller_remote_hits_delay_seconds_sum")
    if cnt:
        t.log(f"r{a}: {int(cnt)} heartbeats of other replicas' agents counted, "
              f"{1000 * tot / cnt:.0f} ms after their replica received them (mean)")

    # kill -9 a replica holding one of the agents (not r{a}).
    victim = int(held[others[0]][1:])
    t.log(f"kill -9 r{victim} (it holds {[n for n in others if held[n] == f'r{victim}']})")
    lab.kill_controller(victim)

    def told():
        return any(f"replica r{victim} is gone" in n for n in watch_state()[2])
    t.check("fleet-wide-peer-kill9-reported", wait_for(60, told),
            lambda: f"notices: {watch_state()[2]}")
    t.check("fleet-wide-stream-survives-peer", watch.alive(),
            f"the watch ended: {watch.log_text()[-300:]}")
    t.check("fleet-wide-agents-move", wait_for(60, lab.all_agents_up_everywhere),
            lab.agents_everywhere)
    for i in range(1, lab.n + 1):
        want[f"node-{i}"] += 2 * 300 * i
        lab.workloads[i].write(f"run {300 * i} 0")
    wait_for(60, lambda: watch_state()[0] == want)
    time.sleep(1.5)
    sums, via, notices, dropped = watch_state()
    t.check("fleet-wide-exact-after-peer-kill9", (sums, dropped) == (want, 0) and watch.alive(),
            f"watch on r{a} saw {sorted(sums.items())} dropped={dropped} "
            f"alive={watch.alive()}, want {sorted(want.items())} dropped=0")
    t.check("fleet-wide-counters-agree-after-peer-kill9", wait_for(30, counters_agree),
            lambda: f"{seen}")
    watch.stop()
    lab.start_controller(victim)
    t.check("fleet-wide-peer-rejoins", wait_for(60, lab.all_agents_up_everywhere),
            lab.agents_everywhere)
    t.check("fleet-wide-one-leader", wait_for(30, lab.leader), lambda: f"leaders: {lab.leaders()}")


if __name__ == "__main__":
    main()
