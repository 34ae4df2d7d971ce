#!/usr/bin/env python3
"""Tier "fleet": a controller and 3 real agents on this machine, each in its own network
namespace (veth pairs on a bridge, private subnet 10.231.0.0/24 that exists only inside
the namespaces), talking mTLS. Each agent and its workload also run in a private mount
namespace where the same path (.../mnt/hit_workload) is that node's own copy of the
workload, so one fleet-wide probe spec hits a different file (inode) on every node and
hit totals are exact per node (tests/harness/fleet.py).

Checks: registration over mTLS, canary rollout with a selector, exact hits per node,
label selectors, kill -9 of an agent mid-rollout (restart converges: no duplicates, no
leftovers), heartbeat timeout (agent DOWN, probes UNKNOWN, not deleted), kill -9 of the
controller (everything comes back), canary failure rolls back, authorization per
capability, clients without a valid certificate rejected, plaintext refused off
loopback, request validation, a fleet dry run, a canary over its node's budget rolled
back, certificates and authorization files reloaded without a restart (reload.py), and a
few hundred simulated agents on a second controller with exact counts (sim_scale.py).

Every assertion reads `xolctl ... --json` (or /metrics, or logs), never table columns;
nothing is timed: conditions are polled with generous timeouts. Needs root. Prints
RESULT lines (tests/harness/tier.py); exits non-zero on failure."""
import os
import re
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import Fatal, Tier, parse_json_stream, run, wait_for  # noqa: E402
from harness.fleet import FleetLab  # noqa: E402
from harness.metrics import metric_sum  # noqa: E402
from harness.netns import netns_exec  # noqa: E402

import reload  # noqa: E402  (tests/fleet/reload.py)
import sim_scale  # noqa: E402  (tests/fleet/sim_scale.py)

N = 3


def ids_of(probes):
    return sorted(p["id"] for p in probes)


def main():
    with Tier("fleet") as t:
        lab = FleetLab(t, n=N).setup()
        t.log(f"starting controller and {N} agents in network namespaces")
        lab.start_controller()
        for i in range(1, N + 1):
            lab.start_agent(i)
            lab.start_workload(i)
        scenarios(t, lab)
        sim_scale.scenarios(t, lab)
        reload.scenarios(t, lab)


def one(probes, node, pid):
    """The one entry for (node, fleet probe id), or None if there is none or several."""
    m = [p for p in probes if p["node"] == node and p["id"] == pid]
    return m[0] if len(m) == 1 else None


def scenarios(t, lab):
    wl = lab.wl
    nodes = [f"node-{i}" for i in range(1, N + 1)]

    # 1. Registration over mTLS, identities from the agents' certificates.
    if not lab.wait_agents_up(30):
        raise Fatal("register", f"not all {N} agents up: {lab.fleet('admin', 'agents')}")

    def identities_from_certs():
        got = {n: ident for n, _, ident in lab.agents_list()}
        return sorted(got) == nodes and all(
            re.search(rf"(^|[,/ ])CN={n}($|[,/ ])", got[n]) for n in nodes)
    t.check("register", identities_from_certs,
            lambda: f"identities not from certificates: {lab.agents_list()}")

    # 2. Fleet attach with a canary rollout (1 canary node, then the rest). xolctl prints
    #    the rollout's progress on stderr (with --json too) and the final rollout as JSON.
    r = lab.fleet("counter", "attach", "--all", "--canary=0.3",
                  f"{wl}:xol_target_add", f"{wl}:xol_target_other")
    set_a = (r.data or {}).get("set_id", "")
    if (r.rc == 0 and set_a and re.search(rf"rollout {re.escape(set_a)}: CANARY\b", r.err)
            and r.data.get("state") == "ROLLOUT_STATE_COMPLETE"):
        canaries = lab.rollout(set_a).get("canary_nodes", [])
        t.check("canary-rollout", canaries == ["node-1"], f"canary was {canaries}")
    else:
        t.fail("canary-rollout", repr(r))

    # 3. Exact hits per node: node i calls each target 1000*i times. A read-only client
    #    watches the merged hit stream meanwhile (started, and seen by the controller,
    #    before the first hit).
    watch = t.procs.start("watch", lab.client("viewer").argv(
        ["fleet", "watch", f"--set={set_a}"]), t.path("watch.json"), append=False)

    def watchers(n):
        return metric_sum(lab.metrics(), "xolfleet_controller_hit_watchers") == n
    if not wait_for(30, watchers, 1):
        t.log("the watch stream is not open on the controller yet (check watch-merged-hits)")
    for i in range(1, N + 1):
        lab.workloads[i].write(f"run {1000 * i} 0")

    def exact_hits():
        ps = lab.probes(f"--set={set_a}")
        if ps is None:
            return False
        for i in range(1, N + 1):
            for k in (0, 1):
                p = one(ps, f"node-{i}", f"{set_a}/{k}")
                if not p or (p["actual"], p["hits"], p["copies"], p["desired"]) != (
                        "PROBE_STATE_ATTACHED", 1000 * i, 1, True):
                    return False
        return len(ps) == 2 * N
    t.check("exact-hits", wait_for(30, exact_hits),
            lambda: f"per-node totals wrong: {lab.probes(f'--set={set_a}')}")

    want_sums = {f"node-{i}": 2000 * i for i in range(1, N + 1)}

    def watch_sums():
        with open(t.path("watch.json"), errors="replace") as f:
            objs = parse_json_stream(f.read())
        sums, dropped = {}, 0
        for o in objs:
            dropped = max(dropped, int(o.get("dropped_total", 0)))
            for u in o.get("updates", []):
                sums[u["node_name"]] = sums.get(u["node_name"], 0) + int(u.get("hits_delta", 0))
        return sums, dropped
    wait_for(30, lambda: watch_sums() == (want_sums, 0))
    time.sleep(1.5)  # one more heartbeat round into the stream: no update counted twice
    watch.stop()
    got = watch_sums()
    t.check("watch-merged-hits", got == (want_sums, 0),
            f"watch saw {sorted(got[0].items())} dropped={got[1]}, "
            f"want {sorted(want_sums.items())} dropped=0")

    # 4. Label selector: zone=a is node-1 and node-2.
    r = lab.fleet("counter", "attach", "--labels=zone=a", f"{wl}:xol_target_spin")
    set_b = (r.data or {}).get("set_id", "")

    def labels_ok():
        ps = lab.probes(f"--set={set_b}")
        if not ps:
            return False
        return (sorted((p["node"], p["id"], p["actual"]) for p in ps)
                == [("node-1", f"{set_b}/0", "PROBE_STATE_ATTACHED"),
                    ("node-2", f"{set_b}/0", "PROBE_STATE_ATTACHED")])
    t.check("label-selector", bool(set_b) and wait_for(20, labels_ok),
            lambda: f"{r!r} {lab.probes(f'--set={set_b}')}")

    # 5. kill -9 the canary agent in the middle of a rollout; restarted, it converges.
    r = lab.fleet("counter", "attach", "--all", "--canary=0.3", "--no-wait",
                  f"{wl}:xol_target_other")
    set_c = (r.data or {}).get("set_id", "")
    old = lab.agents[1]
    old.kill9()
    state_mid = lab.rollout_state(set_c)
    try:
        with open(f"/proc/{old.pid}/comm") as f:
            survived = f.read().strip() == "xolfleet-agent"
    except OSError:
        survived = False
    if survived or old.alive():
        t.fail("agent-kill9", f"agent pid {old.pid} survived kill -9")
    time.sleep(0.5)
    lab.start_agent(1)

    def converged():
        if lab.rollout_state(set_c) != "ROLLOUT_STATE_COMPLETE":
            return False
        for i in range(1, N + 1):
            want = [f"{set_a}/0", f"{set_a}/1"] + ([f"{set_b}/0"] if i <= 2 else []) + [
                f"{set_c}/0"]
            lp = lab.local_probes(i)
            if lp is None:
                return False
            # exactly these fleet probes attached: none missing, none twice, no leftover
            if sorted(f for _, s, f in lp if s == "PROBE_STATE_ATTACHED") != sorted(want):
                return False
        return True
    t.check("agent-kill9-mid-rollout", bool(set_c) and wait_for(60, converged),
            lambda: f"state at kill: {state_mid}; now {lab.rollout_state(set_c)}; "
                    f"node-1 local: {lab.local_probes(1)}")

    # 6. Heartbeat timeout: a stopped agent is marked DOWN, its probes UNKNOWN (not deleted).
    lab.agents[2].signal(signal.SIGSTOP)

    def down_unknown():
        if ("node-2", "AGENT_HEALTH_DOWN") not in [(n, h) for n, h, _ in lab.agents_list()]:
            return False
        p = one(lab.probes("--node=node-2") or [], "node-2", f"{set_a}/0")
        return bool(p) and p["actual"] == "PROBE_STATE_UNKNOWN" and p["desired"]
    t.check("heartbeat-timeout", wait_for(20, down_unknown),
            lambda: f"{lab.agents_list()} {lab.probes('--node=node-2')}")
    lab.agents[2].signal(signal.SIGCONT)
    t.check("agent-recovers", lab.wait_agents_up(30), "node-2 did not come back")

    # 7. kill -9 the controller and restart it: every set and agent comes back, nothing
    #    is duplicated on the nodes and the hit totals carry on. "Before" is the fleet
    #    once node-2 has reported again (no probe UNKNOWN).
    def key(ps):
        return sorted((p["node"], p["id"], p["actual"], p["copies"], p["desired"]) for p in ps)
    def settled():
        ps = lab.probes()
        return ps if ps and all(p["actual"] != "PROBE_STATE_UNKNOWN" for p in ps) else None
    before = wait_for(20, settled) or lab.probes() or []
    lab.ctl.kill9()
    lab.start_controller()

    def restored():
        if not lab.agents_up():
            return False
        now = lab.probes()
        if now is None or key(now) != key(before):
            return False
        p = one(now, "node-2", f"{set_a}/0")
        return bool(p) and (p["actual"], p["hits"], p["copies"], p["desired"]) == (
            "PROBE_STATE_ATTACHED", 2000, 1, True)
    t0 = time.monotonic()
    if wait_for(60, restored):
        t.passed("controller-kill9-restart")
        t.log(f"controller restart: fleet restored in {time.monotonic() - t0:.0f} s")
    else:
        now = lab.probes() or []
        t.fail("controller-kill9-restart", f"agents up: {lab.agents_up()}; node-2 {set_a}/0 now "
               f"{one(now, 'node-2', f'{set_a}/0')} (want 2000 hits); before={key(before)} "
               f"after={key(now)}")
    for s in (set_a, set_b, set_c):
        st = lab.rollout_state(s)
        if st != "ROLLOUT_STATE_COMPLETE":
            t.fail("controller-restart-rollouts", f"{s} is {st}")

    # 8. Canary failure: one spec names a missing binary; the canary fails, the rollout stops
    #    and rolls back, and no node keeps any probe of the set.
    r = lab.fleet("counter", "attach", "--all", "--canary=0.3", f"{wl}:xol_target_add",
                  "/nonexistent/xolfleet/bin:main")
    set_f = (r.data or {}).get("set_id", "")

    def rolled_back():
        if lab.rollout_state(set_f) != "ROLLOUT_STATE_ROLLED_BACK":
            return False
        ps = lab.probes(f"--set={set_f}")
        if ps is None or any(p["actual"] == "PROBE_STATE_ATTACHED" for p in ps):
            return False
        return all(lab.attached_on(i, set_f) is False for i in range(1, N + 1))
    t.check("canary-failure-rollback", r.rc != 0 and bool(set_f) and wait_for(30, rolled_back),
            lambda: f"set={set_f} state={lab.rollout_state(set_f)} {r!r}")

    # 9. Authorization: each capability allowed and denied as configured.
    def denied(cap, who, *args):
        r = lab.fleet(who, *args)
        return r.rc != 0 and f"PERMISSION_DENIED: missing capability {cap}" in r.err

    def allowed(who, *args):
        r = lab.fleet(who, *args)
        return r.rc == 0 and r.data is not None
    t.check("authz-readonly-list", allowed("viewer", "list"), "viewer cannot list")
    t.check("authz-readonly-no-attach",
            denied("attach-counts", "viewer", "attach", "--all", f"{wl}:xol_target_add"),
            "viewer could attach")
    t.check("authz-nobody-no-read", denied("read-only", "nobody", "agents"), "nobody could list")
    t.check("authz-counts-no-capture",
            denied("attach-capture", "counter", "attach", "--all", "--capture=rdi",
                   f"{wl}:xol_target_add"), "counter could capture")
    r = lab.fleet("capturer", "attach", "--all", "--capture=rdi,rsi", f"{wl}:xol_target_add")
    set_cap = (r.data or {}).get("set_id", "")
    t.check("authz-capture-allowed", r.rc == 0 and bool(set_cap),
            f"capturer could not capture: {r!r}")
    t.check("authz-counts-detach", bool(set_cap) and allowed("counter", "detach", set_cap),
            "counter could not detach")
    t.check("authz-forget-needs-admin", denied("admin", "capturer", "forget", "node-1"),
            "capturer could forget")
    r = lab.fleet("admin", "forget", "node-1")
    t.check("authz-admin-forget", r.rc != 0 and "FAILED_PRECONDITION" in r.err,
            f"admin not authorized: {r!r}")
    denials = metric_sum(lab.metrics(), "xolfleet_controller_authz_denials_total")
    t.check("authz-denials-counted", denials >= 4, f"denials metric is {denials:g}")

    # 10. Clients without a valid certificate are rejected.
    r = lab.fleet("rogue-admin", "agents")
    t.check("reject-foreign-ca", r.rc != 0 and "UNAVAILABLE" in r.err,
            f"a certificate from another CA was accepted: {r!r}")
    empty_msg = t.path("grpc-empty-message")
    with open(empty_msg, "wb") as f:
        f.write(b"\0\0\0\0\0")  # a gRPC frame: uncompressed, length 0 (ListAgentsRequest{})

    def grpc_http(*curl_args):
        """A raw gRPC ListAgents call over HTTP/2; the HTTP status (or curl's error)."""
        r = run(netns_exec(lab.nsc, [
            "curl", "-sS", "--max-time", "10", "--http2", "--cacert", f"{lab.ca}/ca.crt",
            *curl_args, "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--data-binary", f"@{empty_msg}", "-o", "/dev/null", "-w", "%{http_code}",
            f"https://{lab.ctl_addr}/xolfleet.v1.FleetService/ListAgents"]), timeout=30)
        return (r.out + r.err).strip()
    with_cert = grpc_http("--cert", f"{lab.ca}/admin.crt", "--key", f"{lab.ca}/admin.key")
    without = grpc_http()
    t.check("reject-no-cert", with_cert == "200" and not without.startswith("200"),
            f"no cert: '{without}'; with cert: '{with_cert}'")
    r = run(netns_exec(lab.nsc, [lab.b("xolctl"), "fleet", f"--controller={lab.ctl_addr}",
                                 "--insecure-plaintext", "agents"]), timeout=60)
    t.check("client-plaintext-off-loopback-refused",
            r.rc != 0 and "refusing plaintext" in r.text, repr(r))
    r = run(netns_exec(lab.nsc, [
        lab.b("xolfleet-controller"), f"--listen={lab.net.hub_addr}:7444", "--insecure_plaintext",
        f"--metrics_listen={lab.net.hub_addr}:9466", f"--state_db={t.path('other.db')}",
        f"--authz_config={lab.authz}"]), timeout=10)
    t.check("server-plaintext-off-loopback-refused",
            r.rc not in (0, 124) and "refusing plaintext" in r.text, repr(r))

    # One identity cannot take every WatchFleetHits slot (8 per identity by default).
    viewer = lab.client("viewer")
    ws = [t.procs.start(f"watch-viewer{k}", viewer.argv(["fleet", "watch"], json_out=False),
                        t.path(f"watch-viewer{k}.out"), append=False) for k in range(8)]
    eight = wait_for(30, watchers, 8)
    ninth = run(viewer.argv(["fleet", "watch"], json_out=False), timeout=10)
    admin_watch = t.procs.start("watch-admin", lab.client("admin").argv(
        ["fleet", "watch"], json_out=False), t.path("watch-admin.out"), append=False)
    admin_rc = admin_watch.wait(timeout=5)  # None: still streaming
    admin_watch.stop()
    for w in ws:
        w.stop()
    t.check("watchers-per-identity-limited",
            eight and ninth.rc != 0 and
            re.search(r"RESOURCE_EXHAUSTED.*--max_watchers_per_identity", ninth.text),
            f"8 streams open: {bool(eight)}; 9th: {ninth!r}")
    t.check("watchers-other-identity-unaffected",
            admin_rc is None and "RESOURCE_EXHAUSTED" not in admin_watch.log_text(),
            f"rc={admin_rc}: {admin_watch.log_text().strip()}")

    # A mistyped state database is an error, not a new empty fleet (--init creates one).
    r = run(netns_exec(lab.nsc, [
        lab.b("xolfleet-controller"), f"--listen={lab.net.hub_addr}:7444",
        f"--tls_ca={lab.ca}/ca.crt", f"--tls_cert={lab.ca}/controller.crt",
        f"--tls_key={lab.ca}/controller.key", f"--metrics_listen={lab.net.hub_addr}:9466",
        f"--state_db={t.path('contoller.db')}", f"--authz_config={lab.authz}"]), timeout=10)
    t.check("missing-state-db-refused",
            r.rc not in (0, 124) and re.search(r"does not exist.*--init", r.text)
            and not os.path.exists(t.path("contoller.db")), repr(r))

    # A consistent copy of the live database, while the controller runs.
    r = run([lab.b("xolfleet-controller"), f"--state_db={t.path('controller.db')}",
             f"--backup={t.path('backup.db')}"], timeout=60)

    def backup_sets():
        try:
            db = sqlite3.connect(f"file:{t.path('backup.db')}?mode=ro", uri=True)
            try:
                return db.execute("select count(*) from probe_sets").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error as e:
            return f"error: {e}"
    live = lab.sets()
    b = backup_sets()
    t.check("backup-while-running", r.rc == 0 and isinstance(live, int) and live > 0 and b == live,
            f"{r!r}; backup sets: {b}, live: {live}")

    # 11. Validation: the right code, nothing half applied.
    nsets = lab.sets()
    r = lab.fleet("counter", "attach", "--all", "relative/path:main")
    t.check("invalid-path", r.rc != 0 and re.search(r"INVALID_ARGUMENT.*must be absolute", r.text),
            repr(r))
    # The bad spec of three is named in google.rpc.BadRequest details (xolctl prints one
    # "  <field>: <description>" line per violation under the error), the message unchanged.
    r = lab.fleet("counter", "attach", "--all", f"{wl}:xol_target_add", "relative/path:main",
                  f"{wl}:xol_target_other")
    t.check("invalid-spec-named",
            r.rc != 0 and re.search(r"INVALID_ARGUMENT: spec 1: .*must be absolute", r.text)
            and re.search(r"(?m)^  specs\[1\]: .*must be absolute", r.text)
            and not re.search(r"(?m)^  specs\[[02]\]", r.text), repr(r))
    r = lab.fleet("counter", "attach", "--nodes=node-1,node-9", f"{wl}:xol_target_add")
    t.check("unknown-node", r.rc != 0 and re.search(r"NOT_FOUND.*node-9", r.text), repr(r))
    r = lab.fleet("counter", "detach", set_a, "ps-doesnotexist")
    t.check("detach-unknown", r.rc != 0 and re.search(r"NOT_FOUND.*nothing detached", r.text),
            repr(r))
    nsets2 = lab.sets()
    state_a = lab.rollout_state(set_a)
    t.check("nothing-half-applied",
            nsets is not None and nsets == nsets2 and state_a == "ROLLOUT_STATE_COMPLETE",
            f"sets {nsets} -> {nsets2}, {set_a} {state_a}")

    # 12. Detach removes the set from every node.
    r = lab.fleet("counter", "detach", set_b)
    t.check("detach-everywhere",
            r.rc == 0 and set_b in (r.data or {}).get("detached_set_ids", []) and wait_for(
                20, lambda: all(lab.attached_on(i, set_b) is False for i in range(1, N + 1))),
            lambda: f"set B still on a node: {r!r} {[lab.local_probes(i) for i in (1, 2)]}")

    # 13. TTLs are fleet-wide: the set expires everywhere at once, nothing stays attached.
    r = lab.fleet("counter", "attach", "--all", "--ttl=3", f"{wl}:xol_target_spin")
    set_t = (r.data or {}).get("set_id", "")

    def expired_everywhere():
        return lab.rollout_state(set_t) == "ROLLOUT_STATE_EXPIRED" and all(
            lab.attached_on(i, set_t) is False for i in range(1, N + 1))
    t.check("ttl-fleet-wide", bool(set_t) and wait_for(40, expired_everywhere),
            lambda: f"set={set_t} state={lab.rollout_state(set_t)} {r!r}")

    # 14. A node certificate registers only its own node name (the controller's default):
    #     node-1's certificate cannot become node-2 and receive node-2's desired set. The
    #     impostor runs for at least 8 s (several attempts) and until it was refused.
    imp = t.procs.start("impostor", netns_exec(lab.ns(1), [
        lab.b("xolfleet-agent"), f"--unix-socket={t.path('impostor.sock')}", "--metrics_address=",
        "--node_name=node-2", f"--controller={lab.ctl_addr}", f"--controller_tls_ca={lab.ca}/ca.crt",
        f"--controller_tls_cert={lab.ca}/node-1.crt",
        f"--controller_tls_key={lab.ca}/node-1.key"]), t.path("impostor.log"), append=False)
    refusal = re.compile(r'PERMISSION_DENIED.*CN "node-1" may not register as node "node-2"')
    imp_start = time.monotonic()
    wait_for(30, lambda: refusal.search(imp.log_text()))
    time.sleep(max(0.0, 8 - (time.monotonic() - imp_start)))
    imp.stop()
    log = imp.log_text()
    t.check("impersonation-refused-by-default",
            refusal.search(log) and "registered" not in log,
            " ".join(log.strip().splitlines()[-2:]))

    # node-2 is still the real node-2 (its own certificate), and every agent is up.
    def real_node_2():
        al = lab.agents_list()
        return any(n == "node-2" and h == "AGENT_HEALTH_UP" and re.search(r"CN=node-2$", ident)
                   for n, h, ident in al) and sum(h == "AGENT_HEALTH_UP" for _, h, _ in al) == N
    t.check("real-node-2-still-up", wait_for(20, real_node_2),
            lambda: f"agents up: {lab.agents_list()}")

    # 15a. A fleet dry run predicts the cost per node and kernel profile and attaches nothing.
    #     The controller classifies on its own copy of the binary (TMP/bin/hit_workload: the
    #     nodes' workload path is only visible inside their mount namespaces).
    sets_before = lab.sets()
    r = lab.fleet("counter", "attach", "--dry-run", "--calls-per-sec=1000", "--all",
                  f"{lab.b('hit_workload')}:xol_target_fast")
    sets_after = lab.sets()

    def dry_ok():
        d = r.data
        if r.rc != 0 or not d or "rollout" in d:
            return False
        preds = d.get("predictions", [])
        if sorted(p.get("node_name") for p in preds) != nodes:
            return False
        for p in preds:
            sites = p.get("sites", [])
            if not (p.get("up") and re.fullmatch(r"linux-[0-9.]+", p.get("kernel_profile", ""))
                    and len(sites) == 1 and sites[0].get("placement") == "PLACEMENT_EMULATED"
                    and 0 < float(sites[0].get("expected_ns_per_hit", 0)) < 1000):
                return False
        return bool(d.get("profiles")) and sets_before is not None and sets_before == sets_after
    t.check("dry-run-predicts-per-node", dry_ok(), f"sets {sets_before} -> {sets_after}: {r!r}")

    # 15. A canary over its node's budget (issue 14) rolls the set back: the agents run with
    #     the default budget (1% of one CPU, alert only) and the default 10 s window; the
    #     canary's workload calls the probed function as fast as it can through the soak.
    r = lab.fleet("counter", "attach", "--all", "--canary=0.3", "--canary-soak=40", "--no-wait",
                  f"{wl}:xol_target_fast")
    set_k = (r.data or {}).get("set_id", "")
    if set_k and wait_for(30, lab.attached_on, 1, set_k):
        lab.workloads[1].write("fast 25")

        def budget_rolled_back():
            ro = lab.rollout(set_k)
            return (ro.get("state") == "ROLLOUT_STATE_ROLLED_BACK" and "over budget" in ro.get(
                "message", "") and all(lab.attached_on(i, set_k) is False
                                       for i in range(1, N + 1)))

        def never_beyond_canary():
            for i in range(2, N + 1):
                lp = lab.local_probes(i)
                if lp is None or any(f.startswith(set_k + "/") for _, _, f in lp):
                    return False
            return True
        t.check("canary-budget-breach-rollback", wait_for(60, budget_rolled_back),
                lambda: f"rollout: {lab.rollout(set_k)}")
        t.check("canary-budget-breach-only-canary", never_beyond_canary(),
                f"set {set_k} reached another node")
        t.check("canary-budget-breach-metric", "budget: probe" in lab.agents[1].log_text(),
                "no budget action counted on node-1")
    else:
        t.fail("canary-budget-breach-rollback", f"set={set_k} never attached on node-1: {r!r}")


if __name__ == "__main__":
    main()
