"""Run by tests/fleet/run.py after its other checks, on its fleet (FleetLab): configuration
reload without a restart, with real clients:

  - the controller's authorization file: a change is applied (a client loses and
    regains a capability), a broken file is refused and the policy in force stays;
  - the controller's certificate: a new one signed by the same CA is served, a key that
    does not match its certificate is refused and the server keeps serving;
  - a CA rotation: the trust bundle gains a new CA, the controller serves a certificate
    of the new CA, and clients with certificates of either CA are served;
  - an agent's TCP API (mTLS) and its authorization file, the same way;
  - the controller and agents never restart (same pids) and agents stay registered;
  - agents that started trusting only the old CA reconnect to a controller serving only
    the new CA's certificate (after a controller restart), without being restarted.

Processes were started with --config_reload_interval=1s."""
import os
import re
import shutil
import time

from harness import (Xolctl, fingerprint, make_test_ca, new_leaf, replace, served_fingerprint,
                     wait_for)
from harness.metrics import metric_prefix_value


def scenarios(t, lab):
    ca, tmp = lab.ca, t.tmp
    ctl_log = t.path("controller.log")

    def ctl_metric(m):
        return metric_prefix_value(lab.metrics(), m)

    def log_has(path, pattern):
        with open(path, errors="replace") as f:
            return re.search(pattern, f.read()) is not None

    def log_count(path, pattern):
        with open(path, errors="replace") as f:
            return len(re.findall(pattern, f.read()))

    def allowed(who, *args):
        r = lab.fleet(who, *args)
        return r.rc == 0 and r.data is not None

    def denied(cap, who, *args):
        r = lab.fleet(who, *args)
        return r.rc != 0 and f"PERMISSION_DENIED: missing capability {cap}" in r.err

    def ctl_serves():
        return served_fingerprint(lab.ctl_addr, f"{ca}/ca.crt", f"{ca}/admin.crt",
                                  f"{ca}/admin.key", netns=lab.nsc)

    def swap_pair(src_crt, src_key, dst_crt, dst_key):
        """A new certificate and key in place: key first, each in one rename."""
        shutil.copyfile(src_key, dst_key + ".tmp")
        shutil.copyfile(src_crt, dst_crt + ".tmp")
        os.replace(dst_key + ".tmp", dst_key)
        os.replace(dst_crt + ".tmp", dst_crt)

    ctl_before = lab.ctl

    # 16a. Authorization file: viewer loses read-only, then a broken file is refused.
    authz = lab.authz
    shutil.copyfile(authz, t.path("authz.orig"))
    with open(t.path("authz.orig")) as f, open(t.path("authz.noviewer"), "w") as g:
        g.writelines(line for line in f if "cn:viewer" not in line)
    t.check("reload-authz-before", allowed("viewer", "list"), "viewer cannot list before the change")
    replace(t.path("authz.noviewer"), authz)
    t.check("reload-authz-applied", wait_for(30, denied, "read-only", "viewer", "list"),
            "viewer still allowed after the policy change")
    with open(t.path("authz.broken"), "w") as f:
        f.write("admin cn:admin\nsuperuser cn:viewer\n")
    refused_m = 'xolfleet_config_reloads_total{config="authz",result="refused"}'
    in_force_m = 'xolfleet_config_in_force{config="authz"}'
    refused0 = ctl_metric(refused_m)
    replace(t.path("authz.broken"), authz)
    ok = (wait_for(30, lambda: ctl_metric(refused_m) > refused0)
          and log_has(ctl_log, r"authz: refused")
          and denied("read-only", "viewer", "list") and allowed("admin", "agents")
          and ctl_metric(in_force_m) == 0)
    t.check("reload-authz-broken-refused", ok,
            lambda: f"refused={refused0:g}->{ctl_metric(refused_m):g} in_force="
                    f"{ctl_metric(in_force_m):g}")
    replace(t.path("authz.orig"), authz)
    t.check("reload-authz-restored", wait_for(30, allowed, "viewer", "list"),
            "viewer not allowed again")

    # 16b. A new controller certificate from the same CA is served without a restart.
    new_leaf(ca, tmp, "controller2", "xolfleet-controller", "serverAuth",
             f"DNS:localhost,IP:{lab.net.hub_addr}")
    want = fingerprint(t.path("controller2.crt"))
    swap_pair(t.path("controller2.crt"), t.path("controller2.key"), f"{ca}/controller.crt",
              f"{ca}/controller.key")
    t.check("reload-cert-rotated",
            bool(want) and wait_for(30, lambda: ctl_serves() == want) and allowed("admin", "agents"),
            lambda: f"served '{ctl_serves()}', want '{want}'")

    # 16c. A key that does not match the certificate is refused; the server keeps serving.
    tls_m = 'xolfleet_config_reloads_total{config="tls",result="refused"}'
    tls0 = ctl_metric(tls_m)
    replace(f"{ca}/node-1.key", f"{ca}/controller.key")
    ok = wait_for(30, lambda: ctl_metric(tls_m) > tls0) and log_has(
        ctl_log, r"tls: refused.*does not match")
    if ok:
        time.sleep(3)  # a few more reload rounds with the broken pair in place
        ok = ctl_serves() == want and allowed("admin", "agents")
    t.check("reload-cert-mismatch-refused", ok,
            lambda: f"refused={tls0:g}->{ctl_metric(tls_m):g} served '{ctl_serves()}'")
    replace(t.path("controller2.key"), f"{ca}/controller.key")

    # 16d. CA rotation: trust both CAs everywhere, then the controller serves a certificate
    #      of the new CA. Clients of both CAs are served; agents stay registered.
    ca2 = t.path("ca2")
    make_test_ca(t.root, ca2, server_san=lab.net.hub_addr, agents=0, clients=["admin"])
    with open(t.path("bundle.crt"), "w") as f:
        for p in (f"{ca2}/ca.crt", f"{ca}/ca.crt"):
            with open(p) as g:
                f.write(g.read())
    shutil.copyfile(f"{ca}/ca.crt", t.path("ca1.crt"))
    replace(t.path("bundle.crt"), f"{ca}/ca.crt")  # the controller's and the agents' trust file

    def agents_reloaded():
        return all(log_has(t.path(f"agent{i}.log"), r"controller_tls: reloaded")
                   for i in range(1, lab.n + 1))
    # Every agent trusts the bundle before the controller's certificate changes.
    wait_for(30, agents_reloaded)
    time.sleep(3)  # and the controller (its client CA) has had a few reload rounds too
    swap_pair(f"{ca2}/controller.crt", f"{ca2}/controller.key", f"{ca}/controller.crt",
              f"{ca}/controller.key")
    want2 = fingerprint(f"{ca2}/controller.crt")
    ca2_client = lab.client("admin", ca_dir=ca2, timeout=10)
    ca1_old_trust = lab.client("admin", trust=t.path("ca1.crt"), timeout=10)
    ok = (wait_for(30, lambda: ctl_serves() == want2)
          and ca2_client("fleet", "agents").rc == 0 and allowed("admin", "agents")
          and ca1_old_trust("fleet", "agents").rc != 0)
    t.check("reload-ca-rotation", ok,
            lambda: f"served '{ctl_serves()}' want '{want2}'; ca2 client: "
                    f"{ca2_client('fleet', 'agents')!r}")

    # 16e. An agent's own TCP API over mTLS, with an authorization file: the same reloads.
    ag = f"{lab.node_addr(1)}:7444"
    ag_authz, ag_log = t.path("agent-authz.conf"), t.path("agent-api.log")
    with open(ag_authz, "w") as f:
        f.write("admin cn:admin\n")
    shutil.copyfile(f"{ca}/ca.crt", t.path("agent-ca.crt"))
    new_leaf(ca2, tmp, "agent-api", "xolfleet-agent", "serverAuth", f"IP:{lab.node_addr(1)}")
    shutil.copyfile(t.path("agent-api.crt"), t.path("agent-tls.crt"))
    shutil.copyfile(t.path("agent-api.key"), t.path("agent-tls.key"))
    api = t.procs.start("agent-api", lab.in_node(1, [
        lab.b("xolfleet-agent"), f"--unix-socket={lab.node_dir(1)}/agent-tcp.sock",
        "--metrics_address=", f"--listen={ag}", f"--tls_ca={t.path('agent-ca.crt')}",
        f"--tls_cert={t.path('agent-tls.crt')}", f"--tls_key={t.path('agent-tls.key')}",
        f"--authz_config={ag_authz}", "--config_reload_interval=1s",
        "--node_name=node-1-api"]), ag_log, append=False)

    def agent_as(d, who):
        return Xolctl(lab.b("xolctl"), lab.nsc, [
            f"--agent={ag}", f"--tls-ca={ca}/ca.crt", f"--tls-cert={d}/{who}.crt",
            f"--tls-key={d}/{who}.key", "--timeout=10"], timeout=10)

    def agent_list_ok(d, who):
        r = agent_as(d, who)("list", command_first=False)
        return r.rc == 0 and r.data is not None

    def agent_list_denied(d, who):
        r = agent_as(d, who)("list", command_first=False)
        return r.rc != 0 and "PERMISSION_DENIED" in r.err

    def agent_serves():
        return served_fingerprint(ag, f"{ca}/ca.crt", f"{ca}/admin.crt", f"{ca}/admin.key",
                                  netns=lab.nsc)

    if wait_for(30, agent_list_ok, ca, "admin") and agent_list_denied(ca, "viewer"):
        with open(t.path("agent-authz.new"), "w") as f:
            f.write("admin cn:admin\nread-only cn:viewer\n")
        replace(t.path("agent-authz.new"), ag_authz)
        t.check("reload-agent-authz-applied", wait_for(30, agent_list_ok, ca, "viewer"),
                "viewer still denied by the agent")
        with open(t.path("agent-authz.bad"), "w") as f:
            f.write("admin cn:admin\nread-only viewer\n")
        replace(t.path("agent-authz.bad"), ag_authz)
        ok = wait_for(30, log_has, ag_log, r"authz: refused") and agent_list_ok(ca, "viewer")
        t.check("reload-agent-authz-broken-refused", ok,
                lambda: " ".join(line for line in api.log_text().splitlines()
                                 if "authz" in line)[-400:])
        # A new certificate for the agent's API, then a broken one (a key of another one).
        new_leaf(ca2, tmp, "agent-api2", "xolfleet-agent", "serverAuth", f"IP:{lab.node_addr(1)}")
        want3 = fingerprint(t.path("agent-api2.crt"))
        swap_pair(t.path("agent-api2.crt"), t.path("agent-api2.key"), t.path("agent-tls.crt"),
                  t.path("agent-tls.key"))
        t.check("reload-agent-cert-rotated",
                bool(want3) and wait_for(30, lambda: agent_serves() == want3),
                lambda: f"agent serves '{agent_serves()}', want '{want3}'")
        mismatch = r"tls: refused.*does not match"
        seen = log_count(ag_log, mismatch)
        replace(t.path("agent-api.key"), t.path("agent-tls.key"))
        ok = wait_for(30, lambda: log_count(ag_log, mismatch) > seen)
        if ok:
            time.sleep(3)  # a few more reload rounds with the broken pair in place
            ok = agent_serves() == want3 and agent_list_ok(ca, "admin")
        t.check("reload-agent-cert-mismatch-refused", ok,
                lambda: " ".join(line for line in api.log_text().splitlines()
                                 if "tls:" in line)[-400:])
    else:
        t.fail("reload-agent-api",
               f"agent TCP API not usable: admin: {agent_as(ca, 'admin')('list', command_first=False)!r}"
               f" viewer: {agent_as(ca, 'viewer')('list', command_first=False)!r}")
    api.stop()

    # 16f. Nothing restarted, and every agent is still registered.
    t.check("reload-no-restart", lab.ctl is ctl_before and ctl_before.alive(),
            "controller pid changed or died")
    t.check("reload-agents-still-up", lab.wait_agents_up(20),
            lambda: f"agents up: {lab.agents_list()}")

    # 16g. The agents' side: they started trusting only the old CA and were never restarted.
    #      They reloaded the bundle (--controller_tls_ca), so when the controller restarts
    #      and serves only its new CA's certificate, every agent reconnects.
    agents_before = {i: p.pid for i, p in lab.agents.items()}
    reloaded = agents_reloaded()
    lab.ctl.kill9()
    lab.start_controller()
    ok = (reloaded and lab.wait_agents_up(60)
          and {i: p.pid for i, p in lab.agents.items()} == agents_before
          and all(p.alive() for p in lab.agents.values()))
    t.check("reload-agents-trust-new-ca", ok,
            lambda: f"agents up: {lab.agents_list()} reloaded: {reloaded}")
