"""A controller and N real agents, each agent in its own network namespace (BridgeNet:
controller on the hub at 10.231.0.1, node i at 10.231.0.(10+i)), over mTLS with a test
CA, each agent and its workload in a mount namespace where TMP/mnt is the node's own copy
of the workload (TMP/node<i>/). The fleet tier uses it; another tier that needs "a real
fleet in namespaces" can too (tests/harness/README.md).

    lab = FleetLab(tier, n=3).setup()          # binaries, CA, authz, network
    lab.start_controller(); lab.start_agent(i); lab.start_workload(i)
    lab.fleet("admin", "agents")               # -> Out with .data (JSON)
"""
import os
import shutil

from .certs import make_test_ca
from .netns import BridgeNet, in_mount_ns, netns_exec
from .poll import wait_for
from .procs import run
from .tier import Fatal
from .xolctl import Xolctl

BINARIES = ["services/controller/xolfleet-controller", "services/agent/xolfleet-agent",
            "services/cli/xolctl", "tests/workloads/hit_workload"]

# Capabilities per client certificate (services/controller/README.md, authorization).
AUTHZ = """admin          cn:admin
read-only      cn:viewer
attach-counts  cn:counter
attach-capture cn:capturer
agent          cn:node-*
"""

FLEET_LABEL = "xolfleet.io/fleet-probe"


def probe_rows(r):
    """The probes of a `fleet list --json` result, each a dict with node, id, actual, hits,
    copies, desired; None if the call failed."""
    if r.data is None:
        return None
    return [{"node": p.get("node_name"), "id": p.get("fleet_probe_id"),
             "actual": p.get("actual", "PROBE_STATE_UNSPECIFIED"), "hits": int(p.get("hits", 0)),
             "copies": int(p.get("local_copies", 0)), "desired": bool(p.get("desired"))}
            for p in r.data.get("probes", [])]


class FleetLab:
    def __init__(self, tier, n=3, subnet="10.231.0", controller_args=(), agent_args=()):
        self.t, self.n = tier, n
        suf = os.getpid()
        self.net = BridgeNet(f"xfc-{suf}", [f"xfa{i}-{suf}" for i in range(1, n + 1)],
                             prefix=subnet)
        self.ctl_addr = f"{self.net.hub_addr}:7443"
        self.metrics_addr = f"{self.net.hub_addr}:9465"
        self.controller_args, self.agent_args = list(controller_args), list(agent_args)
        self.ctl = None
        self.agents, self.workloads = {}, {}

    # --- paths and namespaces ---
    @property
    def nsc(self):
        return self.net.hub

    def ns(self, i):
        return self.net.members[i - 1]

    def node_addr(self, i):
        return self.net.addr(i - 1)

    def node_dir(self, i):
        return self.t.path(f"node{i}")

    @property
    def wl(self):
        """The workload's path as every node sees it (its own copy)."""
        return self.t.path("mnt", "hit_workload")

    def setup(self):
        t = self.t
        self.bin = t.binaries(BINARIES)
        os.makedirs(t.path("mnt"), exist_ok=True)
        self.ca = t.path("ca")
        try:
            make_test_ca(t.root, self.ca, server_san=self.net.hub_addr, agents=self.n)
        except Exception as e:
            raise Fatal("setup", f"make-test-ca.sh failed: {e}")
        self.authz = t.path("authz.conf")
        with open(self.authz, "w") as f:
            f.write(AUTHZ)
        t.on_cleanup(self.net.delete)
        try:
            self.net.create()
        except Exception as e:
            raise Fatal("setup", f"cannot create network namespaces: {getattr(e, 'stderr', e)}")
        for i in range(1, self.n + 1):
            os.makedirs(self.node_dir(i), exist_ok=True)
            shutil.copy2(os.path.join(self.bin, "hit_workload"), self.node_dir(i))
        return self

    def b(self, name):
        return os.path.join(self.bin, name)

    def in_node(self, i, argv):
        return in_mount_ns(self.node_dir(i), self.t.path("mnt"), argv, netns=self.ns(i))

    # --- processes ---
    def start_controller(self):
        self.ctl = self.t.procs.start("controller", netns_exec(self.nsc, [
            self.b("xolfleet-controller"), f"--listen={self.ctl_addr}",
            f"--metrics_listen={self.metrics_addr}", f"--state_db={self.t.path('controller.db')}",
            "--init", f"--tls_ca={self.ca}/ca.crt", f"--tls_cert={self.ca}/controller.crt",
            f"--tls_key={self.ca}/controller.key", f"--authz_config={self.authz}",
            "--heartbeat_interval=250ms", "--heartbeat_timeout=3s", "--canary_timeout=30s",
            "--config_reload_interval=1s", *self.controller_args]), self.t.path("controller.log"))
        return self.ctl

    def labels(self, i):
        return "zone=b" if i == self.n else "zone=a"

    def start_agent(self, i):
        p = self.t.procs.start(f"agent{i}", self.in_node(i, [
            self.b("xolfleet-agent"), f"--unix-socket={self.node_dir(i)}/agent.sock",
            f"--metrics_address={self.node_addr(i)}:9464", f"--node_name=node-{i}",
            f"--labels={self.labels(i)}", f"--controller={self.ctl_addr}",
            f"--controller_tls_ca={self.ca}/ca.crt",
            f"--controller_tls_cert={self.ca}/node-{i}.crt",
            f"--controller_tls_key={self.ca}/node-{i}.key", "--config_reload_interval=1s",
            *self.agent_args]), self.t.path(f"agent{i}.log"))
        self.agents[i] = p
        return p

    def start_workload(self, i):
        """tests/workloads/hit_workload in node i, commands on its stdin ("run N 0")."""
        p = self.t.procs.start(f"wl{i}", self.in_node(i, [self.wl]), self.t.path(f"wl{i}.out"),
                               stdin=True)
        self.workloads[i] = p
        return p

    # --- clients ---
    def client(self, who, ca_dir=None, trust=None, timeout=30):
        """xolctl fleet as client `who` (its certificate in ca_dir, default the test CA),
        trusting `trust` (default ca_dir/ca.crt), from the controller's namespace."""
        d = ca_dir or self.ca
        return Xolctl(self.b("xolctl"), self.nsc, [
            f"--controller={self.ctl_addr}", f"--tls-ca={trust or os.path.join(d, 'ca.crt')}",
            f"--tls-cert={d}/{who}.crt", f"--tls-key={d}/{who}.key", f"--timeout={timeout}"],
            timeout=timeout)

    def fleet(self, who, *args, json_out=True, timeout=30):
        """`xolctl fleet SUB ...` as `who`, e.g. fleet("admin", "agents")."""
        return self.client(who, timeout=timeout)("fleet", *args, json_out=json_out)

    def agents_list(self):
        """[(node, health, identity)] from `fleet agents --json` ([] on error)."""
        r = self.fleet("admin", "agents")
        if not r.data:
            return []
        return [(a["registration"]["node_name"], a.get("health"), a.get("identity", ""))
                for a in r.data.get("agents", [])]

    def agents_up(self, n=None):
        want = self.n if n is None else n
        return sum(1 for _, h, _ in self.agents_list() if h == "AGENT_HEALTH_UP") == want

    def probes(self, *filters):
        """The fleet's probes (fleet list --json, filters like "--set=ID"), each a dict with
        node, id, actual, hits, copies, desired; None on error."""
        return probe_rows(self.fleet("admin", "list", *filters))

    def sets(self):
        """The number of probe sets (rollouts) the controller lists; None on error."""
        r = self.fleet("admin", "list")
        return None if r.data is None else len(r.data.get("rollouts", []))

    def rollout(self, set_id):
        """The rollout as a dict (fleet rollout --json); {} on error."""
        r = self.fleet("admin", "rollout", set_id)
        return r.data or {}

    def rollout_state(self, set_id):
        return self.rollout(set_id).get("state", "?")

    def local_probes(self, i):
        """Node i's own List (inactive included), fleet probes only: [(local id, state,
        fleet probe id)]; None if the agent did not answer."""
        x = Xolctl(self.b("xolctl"), self.ns(i), [f"--agent=unix:{self.node_dir(i)}/agent.sock"])
        r = x("list", "--all", command_first=False)
        if r.data is None:
            return None
        out = []
        for p in r.data.get("probes", []):
            label = p.get("spec", {}).get("labels", {}).get(FLEET_LABEL)
            if label:
                out.append((p.get("id"), p.get("state"), label))
        return out

    def attached_on(self, i, set_id):
        """Node i has a probe of set_id ATTACHED (None: the agent did not answer)."""
        lp = self.local_probes(i)
        if lp is None:
            return None
        return any(s == "PROBE_STATE_ATTACHED" for _, s, f in lp
                   if f.startswith(set_id + "/"))

    def metrics(self):
        """The controller's /metrics text ('' if unreachable)."""
        r = run(netns_exec(self.nsc, ["curl", "-s", "--max-time", "10",
                                      f"http://{self.metrics_addr}/metrics"]), timeout=20)
        return r.out if r.rc == 0 else ""

    def wait_agents_up(self, timeout, n=None):
        return wait_for(timeout, self.agents_up, n)
