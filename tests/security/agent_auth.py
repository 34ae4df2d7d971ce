#!/usr/bin/env python3
"""Tier "security": who may talk to the agent, and what each caller may do (issue 9).

Real processes only: the agent binary as root, xolctl run as real non-root users that this
test creates (useradd) and removes, the agent's unix socket, TCP with and without mTLS, real
uprobes on a copy of the hit workload. Each case prints one `RESULT PASS|FAIL security-NAME`
line. After the cases the agent must still serve, hold exactly the probes the cases left, and,
once stopped, leave no BPF link, program or map behind (bpftool).

    tests/security/agent_auth.py BIN_DIR CA_SCRIPT
"""

import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

BIN = os.path.abspath(sys.argv[1])
MAKE_CA = os.path.abspath(sys.argv[2])
AGENT = os.path.join(BIN, "xolfleet-agent")
FAILED = []
USERS = ["xft-alice", "xft-bob", "xft-carol"]
GROUP = "xft-ops"


def result(name, ok, why=""):
    if ok:
        print(f"RESULT PASS security-{name}", flush=True)
    else:
        print(f"RESULT FAIL security-{name} {why}"[:600], flush=True)
        FAILED.append(name)


def run(cmd, user=None, timeout=60, env=None):
    """Runs cmd (as `user` if given: uid, primary gid and supplementary groups of that user)."""
    kw = {}
    if user is not None:
        pw = pwd.getpwnam(user)
        kw = dict(user=pw.pw_uid, group=pw.pw_gid,
                  extra_groups=os.getgrouplist(user, pw.pw_gid))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    return p.returncode, p.stdout, p.stderr


class Agent:
    def __init__(self, tmp, name, flags):
        self.sock = os.path.join(tmp, f"{name}.sock")
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [AGENT, f"--unix-socket={self.sock}", "--metrics-address="] + flags,
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if "serving xolfleet.v1.AgentService" in open(self.log_path).read():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"agent {name} did not start: {open(self.log_path).read()}")

    def ctl(self, *args, user=None, target=None, tls=()):
        target = target or f"unix:{self.sock}"
        return run([XOLCTL, f"--agent={target}", "--timeout=20", *tls, *args], user=user)

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=30)
        self.log.close()
        return rc


def expect_denied(name, rc_out_err, code, *words):
    rc, out, err = rc_out_err
    ok = rc != 0 and code in err and all(w in err for w in words)
    result(name, ok, f"rc={rc} err={err.strip()} out={out.strip()[:200]}")


def held_bpf_objects(pid):
    """(kind, id) of every BPF program, map and link a process holds a descriptor of."""
    held = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                for line in f:
                    for kind in ("prog_id", "map_id", "link_id"):
                        if line.startswith(kind + ":"):
                            held.add((kind[:-3], int(line.split()[1])))
        except OSError:
            pass
    return held


def existing_bpf_objects():
    ids = set()
    for kind in ("prog", "map", "link"):
        p = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True)
        try:
            ids |= {(kind, o["id"]) for o in json.loads(p.stdout or "[]")}
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    return ids


def setup_users():
    subprocess.run(["groupadd", "-f", GROUP], check=True)
    for u in USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", "-G", GROUP, u], check=True)
        subprocess.run(["usermod", "-a", "-G", GROUP, u], check=True)


def remove_users():
    for u in USERS:
        subprocess.run(["userdel", u], capture_output=True)
    subprocess.run(["groupdel", GROUP], capture_output=True)


def probe_ids(agent):
    rc, out, err = agent.ctl("list", "--json")
    if rc != 0:
        raise RuntimeError(err)
    return {p["id"]: p for p in json.loads(out or "{}").get("probes", [])}


def main():
    global XOLCTL
    setup_users()
    tmp = tempfile.mkdtemp(prefix="xolfleet-security-")
    os.chmod(tmp, 0o755)
    # Binaries the test users can run (bazel-bin is not readable by them).
    shutil.copy(os.path.join(BIN, "xolctl"), tmp)
    # ... and its private libraries (services/agent/README.md), readable by all as in bazel-bin.
    if os.path.isdir(os.path.join(BIN, "xolctl.private")):
        shutil.copytree(os.path.join(BIN, "xolctl.private"), os.path.join(tmp, "xolctl.private"))
    XOLCTL = os.path.join(tmp, "xolctl")
    wl = os.path.join(tmp, "hit_workload")
    shutil.copy(os.path.join(BIN, "hit_workload"), wl)
    os.chmod(wl, 0o755)
    # A root-only binary, and a root-only directory holding one file.
    secret = os.path.join(tmp, "secret-bin")
    shutil.copy(os.path.join(BIN, "hit_workload"), secret)
    os.chmod(secret, 0o700)
    hidden = os.path.join(tmp, "hidden")
    os.mkdir(hidden, 0o700)
    shutil.copy(os.path.join(BIN, "hit_workload"), os.path.join(hidden, "present"))
    alice, bob, carol = USERS
    alice_uid = pwd.getpwnam(alice).pw_uid
    agents = []
    try:
        # 1. Default endpoint: owner-only unix socket; nobody else gets in.
        a = Agent(tmp, "default", [])
        agents.append(a)
        st = os.stat(a.sock)
        result("socket-default-mode-0600-root",
               stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0,
               f"mode {oct(st.st_mode)} uid {st.st_uid}")
        rc, out, err = a.ctl("info", "--json")
        result("root-is-admin-by-default", rc == 0 and "kernel_release" in out, err)
        expect_denied("non-root-cannot-connect", a.ctl("list", user=alice), "UNAVAILABLE",
                      "Permission denied")
        # Even with the socket opened up, an unlisted caller has no capability.
        os.chmod(a.sock, 0o666)
        expect_denied("unlisted-user-has-no-capability", a.ctl("list", user=alice),
                      "PERMISSION_DENIED", "read-only", f"uid:{alice_uid}")
        expect_denied("unlisted-user-cannot-classify",
                      a.ctl("classify", "--all-functions", secret, user=alice),
                      "PERMISSION_DENIED")
        a.stop()
        agents.remove(a)

        # 2. A group socket and an authorization config.
        authz = os.path.join(tmp, "authz.conf")
        with open(authz, "w") as f:
            f.write(f"admin uid:0\nattach-counts user:{alice}\nread-only group:{GROUP}\n")
        a = Agent(tmp, "group", [f"--unix-socket-mode=0660", f"--unix-socket-group={GROUP}",
                                 f"--authz-config={authz}", "--max-connections-per-uid=3",
                                 "--max-watch-streams-per-identity=2"])
        agents.append(a)
        st = os.stat(a.sock)
        result("socket-mode-and-group-as-configured",
               stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam(GROUP).gr_gid,
               f"mode {oct(st.st_mode)} gid {st.st_gid}")
        rc, out, err = a.ctl("list", user=bob)
        result("read-only-member-lists", rc == 0, err)
        expect_denied("read-only-cannot-attach",
                      a.ctl("attach", f"{wl}:xol_target_add", user=bob),
                      "PERMISSION_DENIED", "attach-counts")
        expect_denied("counts-cannot-capture",
                      a.ctl("attach", f"{wl}:xol_target_add", "--capture=rdi,rsi", user=alice),
                      "PERMISSION_DENIED", "attach-capture")
        # 100 sites or more go through AttachWithProgress: the same capabilities apply.
        many = [f"{wl}:xol_target_add"] * 100
        expect_denied("read-only-cannot-attach-with-progress",
                      a.ctl("attach", *many, user=bob), "PERMISSION_DENIED", "attach-counts")
        expect_denied("counts-cannot-capture-with-progress",
                      a.ctl("attach", *many, "--capture=rdi", user=alice),
                      "PERMISSION_DENIED", "attach-capture")
        expect_denied("no-probe-scoped-to-a-root-process",
                      a.ctl("attach", f"{wl}:xol_target_add", f"--pid={a.proc.pid}",
                            user=alice),
                      "PERMISSION_DENIED", "another user")
        expect_denied("no-container-for-a-local-user",
                      a.ctl("attach", f"{wl}:xol_target_add", "--container=0123456789abcdef",
                            user=alice),
                      "PERMISSION_DENIED", "may not name a container")
        expect_denied("reserved-labels-refused",
                      a.ctl("attach", f"{wl}:xol_target_add", "--label=xolfleet.io/owner=uid:0",
                            user=alice),
                      "INVALID_ARGUMENT", "reserved")
        before = set(probe_ids(a))
        result("refused-attaches-leave-nothing", before == set(), f"probes {before}")

        rc, out, err = a.ctl("attach", f"{wl}:xol_target_add", "--json", user=alice)
        mine = [p["id"] for p in json.loads(out).get("probes", [])] if rc == 0 else []
        ok = rc == 0 and len(mine) == 1 and \
            probe_ids(a)[mine[0]]["spec"]["labels"].get("xolfleet.io/owner") == f"uid:{alice_uid}"
        result("counts-user-attaches-and-is-recorded-as-owner", ok, f"rc={rc} {err} {out[:300]}")
        rc, out, err = a.ctl("attach", f"{wl}:xol_target_other", "--capture=rdi", "--json")
        roots = [p["id"] for p in json.loads(out).get("probes", [])] if rc == 0 else []
        result("admin-attaches-with-capture", rc == 0 and len(roots) == 1, err)

        wl_proc = subprocess.Popen([wl], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        wl_proc.stdout.readline()  # "ready PID"

        # WatchHits streams per identity: bob holds the 2 he may have, a third is refused with
        # the limit named, and alice (another identity) is still served below. Bob's streams
        # are known to be registered once each has delivered an event of the workload.
        bob_pw = pwd.getpwnam(bob)
        bob_outs = [os.path.join(tmp, f"bob-watch{k}.json") for k in range(2)]
        bob_watches = [subprocess.Popen(
            [XOLCTL, f"--agent=unix:{a.sock}", "watch", "--json", "--duration=120"],
            stdout=open(out, "w"), stderr=subprocess.DEVNULL, user=bob_pw.pw_uid,
            group=bob_pw.pw_gid, extra_groups=os.getgrouplist(bob, bob_pw.pw_gid))
            for out in bob_outs]
        for _ in range(300):
            if all(os.path.getsize(out) > 0 for out in bob_outs) or \
                    any(w.poll() is not None for w in bob_watches):
                break
            wl_proc.stdin.write("run 1 1\n")
            wl_proc.stdin.flush()
            wl_proc.stdout.readline()
            time.sleep(0.1)
        registered = all(os.path.getsize(out) > 0 for out in bob_outs)
        third = a.ctl("watch", "--duration=1", user=bob)
        expect_denied("watch-streams-per-identity-limited",
                      third if registered else (0, "", "bob's two streams never delivered"),
                      "RESOURCE_EXHAUSTED", "--max-watch-streams-per-identity=2",
                      f"uid:{bob_pw.pw_uid}")

        # Hits: alice (no capture capability) sees counts and times, never register values.
        watch = subprocess.Popen(
            [XOLCTL, f"--agent=unix:{a.sock}", "watch", "--json", "--count=5", "--duration=20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            user=alice_uid, group=pwd.getpwnam(alice).pw_gid,
            extra_groups=os.getgrouplist(alice, pwd.getpwnam(alice).pw_gid))
        time.sleep(1.5)
        wl_proc.stdin.write("run 20 1\n")
        wl_proc.stdin.flush()
        wl_proc.stdout.readline()
        wout, werr = watch.communicate(timeout=30)
        events = []
        dec, pos = json.JSONDecoder(), 0
        while True:
            while pos < len(wout) and wout[pos].isspace():
                pos += 1
            if pos >= len(wout):
                break
            try:
                obj, pos = dec.raw_decode(wout, pos)
            except json.JSONDecodeError:
                break
            events += obj.get("events", [])
        ok = len(events) >= 5 and not any(e.get("regs") for e in events)
        result("watch-without-capture-capability-has-no-registers", ok,
               f"{len(events)} events, regs: {[e.get('regs') for e in events][:3]} {werr[-200:]}")
        # Served while bob was at his limit: every event alice asked for, bob's streams alive.
        bob_alive = all(w.poll() is None for w in bob_watches)
        result("other-identity-watches-while-one-is-at-its-limit",
               watch.returncode == 0 and len(events) >= 5 and bob_alive,
               f"rc={watch.returncode} {len(events)} events, bob's streams alive: {bob_alive} "
               f"{werr[-200:]}")
        for w in bob_watches:
            w.kill()
            w.wait()

        expect_denied("counts-user-cannot-detach-others-probe",
                      a.ctl("detach", roots[0] if roots else "p0", user=alice),
                      "PERMISSION_DENIED", "belongs to uid:0")
        rc, out, err = a.ctl("detach", "--all", user=alice)
        left = set(probe_ids(a))
        result("detach-all-detaches-only-own-probes",
               rc == 0 and left == set(roots), f"rc={rc} {err} left={left} roots={roots}")

        # Files the caller cannot read: refused, and a hidden file's existence not revealed.
        expect_denied("classify-of-unreadable-binary-refused",
                      a.ctl("classify", "--all-functions", secret, user=bob),
                      "PERMISSION_DENIED", "cannot read")
        r1 = a.ctl("classify", "--all-functions", os.path.join(hidden, "present"), user=bob)
        r2 = a.ctl("classify", "--all-functions", os.path.join(hidden, "absent"), user=bob)
        same = r1[0] != 0 and r2[0] != 0 and "PERMISSION_DENIED" in r1[2] and \
            "PERMISSION_DENIED" in r2[2]
        result("existence-in-private-directory-not-revealed", same,
               f"present: {r1[2].strip()} | absent: {r2[2].strip()}")
        expect_denied("attach-of-unreadable-binary-refused",
                      a.ctl("attach", f"{secret}:xol_target_add", user=alice),
                      "PERMISSION_DENIED", "cannot read")
        rc, out, err = a.ctl("classify", "--all-functions", secret)
        result("root-classifies-root-only-binary", rc == 0, err)

        # Connection limit per uid: 3 idle connections by carol, then carol's call is refused
        # with the limit named; root and bob are unaffected. Carol has not connected before: a uid
        # whose earlier calls just ended (bob's) may still hold a place until gRPC has
        # closed the agent's end, which under load left one idle connection over the limit
        # and the call under it.
        idle = []
        pw = pwd.getpwnam(carol)
        for _ in range(3):
            # A process running as carol holds each connection (SO_PEERCRED is the connector's).
            idle.append(subprocess.Popen(
                ["python3", "-c", "import socket,sys,time; s=socket.socket(socket.AF_UNIX);"
                 "s.connect(sys.argv[1]); print('up', flush=True); time.sleep(60)", a.sock],
                stdout=subprocess.PIPE, text=True, user=pw.pw_uid, group=pw.pw_gid,
                extra_groups=os.getgrouplist(carol, pw.pw_gid)))
        for p in idle:
            p.stdout.readline()
        time.sleep(0.5)
        expect_denied("connections-per-uid-limited", a.ctl("list", user=carol),
                      "RESOURCE_EXHAUSTED", "--max-connections-per-uid")
        rc, out, err = a.ctl("list")
        rc2, out2, err2 = a.ctl("list", user=bob)
        result("other-uids-unaffected-by-a-full-uid", rc == 0 and rc2 == 0,
               f"root: {err.strip()} | bob: {err2.strip()}")
        for p in idle:
            p.kill()
            p.wait()
        # The places come back once the agent has seen the connections end (gRPC closes its
        # end): poll for that, up to a bound far beyond it.
        deadline = time.monotonic() + 30
        while True:
            rc, out, err = a.ctl("list", user=carol)
            if rc == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        result("limit-frees-when-connections-close", rc == 0, err)
        wl_proc.stdin.close()
        wl_proc.wait()

        # 3. TCP: plaintext only when asked and only on loopback (resolved); mTLS otherwise.
        def refused_at_start(name, flags, *words):
            try:
                p = subprocess.run([AGENT, f"--unix-socket=", "--metrics-address=", *flags],
                                   capture_output=True, text=True, timeout=30)
                ok = p.returncode != 0 and all(w in p.stderr for w in words)
                result(name, ok, f"rc={p.returncode} {p.stderr.strip()[-300:]}")
            except subprocess.TimeoutExpired:
                result(name, False, "the agent started")
        port = free_port()
        refused_at_start("tcp-without-tls-refused", [f"--listen=127.0.0.1:{port}"],
                         "needs a CA certificate")
        refused_at_start("plaintext-tcp-off-loopback-refused",
                         [f"--listen=0.0.0.0:{port}", "--insecure-plaintext-tcp"],
                         "refusing plaintext")
        # A name that looks like loopback but resolves elsewhere (/etc/hosts in a private
        # mount namespace): resolved, then refused.
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n10.231.77.1 127.0.0.1.evil.example\n")
        p = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$0" /etc/hosts && exec "$@"', hosts, AGENT, "--unix-socket=",
             "--metrics-address=", f"--listen=127.0.0.1.evil.example:{port}",
             "--insecure-plaintext-tcp"], capture_output=True, text=True, timeout=30)
        result("plaintext-loopback-check-resolves-names",
               p.returncode != 0 and "refusing plaintext" in p.stderr,
               f"rc={p.returncode} {p.stderr.strip()[-300:]}")
        # The controller's plaintext check is the same resolved one.
        authz_ctl = os.path.join(tmp, "authz-ctl.conf")
        with open(authz_ctl, "w") as f:
            f.write("admin insecure:local\n")
        p = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$0" /etc/hosts && exec "$@"', hosts,
             os.path.join(BIN, "xolfleet-controller"), "--insecure_plaintext",
             f"--listen=127.0.0.1.evil.example:{port}", f"--metrics_listen=127.0.0.1:{free_port()}",
             f"--state_db={tmp}/ctl.db", "--init", f"--authz_config={authz_ctl}"],
            capture_output=True, text=True, timeout=30)
        result("controller-plaintext-loopback-check-resolves-names",
               p.returncode != 0 and "refusing plaintext" in p.stderr,
               f"rc={p.returncode} {p.stderr.strip()[-300:]}")

        ca = os.path.join(tmp, "ca")
        subprocess.run([MAKE_CA, ca, "--agents", "1", "--clients", "admin viewer"], check=True,
                       capture_output=True)
        with open(authz, "w") as f:
            f.write("admin uid:0\nadmin cn:admin\nread-only cn:viewer\n")
        port = free_port()
        t = Agent(tmp, "tls", [f"--listen=127.0.0.1:{port}", f"--tls-ca={ca}/ca.crt",
                               f"--tls-cert={ca}/controller.crt", f"--tls-key={ca}/controller.key",
                               f"--authz-config={authz}"])
        agents.append(t)
        tcp = f"127.0.0.1:{port}"

        def tls(who):
            return (f"--tls-ca={ca}/ca.crt", f"--tls-cert={ca}/{who}.crt",
                    f"--tls-key={ca}/{who}.key")
        rc, out, err = t.ctl("list", target=tcp, tls=tls("viewer"))
        result("mtls-viewer-lists", rc == 0, err)
        expect_denied("mtls-viewer-cannot-attach",
                      t.ctl("attach", f"{wl}:xol_target_add", target=tcp, tls=tls("viewer")),
                      "PERMISSION_DENIED", "attach-counts", "viewer")
        rc, out, err = t.ctl("attach", f"{wl}:xol_target_add", "--json", target=tcp,
                             tls=tls("admin"))
        result("mtls-admin-attaches", rc == 0, err)
        expect_denied("mtls-rogue-certificate-rejected",
                      t.ctl("list", target=tcp, tls=(f"--tls-ca={ca}/ca.crt",
                                                      f"--tls-cert={ca}/rogue-admin.crt",
                                                      f"--tls-key={ca}/rogue-admin.key")),
                      "UNAVAILABLE")
        rc, out, err = t.ctl("list", target=tcp, tls=("--insecure-plaintext",))
        result("plaintext-client-cannot-talk-to-mtls-agent", rc != 0, out)

        # 4. Everything still served; stopping leaves nothing in the kernel.
        rc, out, err = a.ctl("list")
        result("agent-still-serves-after-hostile-callers", rc == 0 and a.proc.poll() is None, err)
        held = set()
        for ag in agents:
            held |= held_bpf_objects(ag.proc.pid)
        codes = [ag.stop() for ag in list(agents)]
        agents.clear()
        time.sleep(1)
        left = held & existing_bpf_objects()
        result("nothing-left-in-kernel-after-stop",
               codes == [0, 0] and held and not left,
               f"exit codes {codes}, held {len(held)}, left {sorted(left)}")
    finally:
        for ag in agents:
            try:
                ag.proc.kill()
            except OSError:
                pass
        remove_users()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if FAILED else 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


if __name__ == "__main__":
    sys.exit(main())
