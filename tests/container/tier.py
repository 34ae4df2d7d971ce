#!/usr/bin/env python3
"""Tier "container": builds the image (deploy/image/build.sh, buildah, nothing pulled) and
runs the controller and the agent with podman exactly as deploy/kubernetes/ says
(tests/container/run.py derives every podman flag from the pod templates: user,
capabilities, seccomp, read-only root, hostPID, mounts, args; it fails when the manifest
and the image disagree). Both share one network namespace made here (loopback only), the
agent dials the controller's Service name (mapped to 127.0.0.1) over mTLS.

From inside the agent container (its own xolctl, on its unix socket):
  - a host process, named by its host path (resolved under --host-root=/host): exact hits
  - a process in another container, named by container id and a path inside that
    container (which does not exist on the host): exact hits
  - a path outside --host-root (the image's own file; a /proc magic link), a pid that exits
    in the middle of the request, a container id that does not exist: each a precise gRPC
    code and message, and nothing attached
  - each capability the DaemonSet adds is needed: without it the agent cannot attach

Container storage, configuration and network namespace are private to the run and removed
however it ends (podman rm/rmi of everything in the private store, the namespace deleted,
every mount under the scratch directory unmounted, the store deleted). Assertions read
`xolctl ... --json` (the refusals: xolctl's error text, which carries the gRPC code) and
/proc/PID/status; nothing is timed. Needs root. Prints RESULT lines (tests/harness/tier.py);
exits non-zero on failure."""
import errno
import glob
import os
import re
import shutil
import subprocess
import sys
import time

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import Fatal, Tier, run, wait_for  # noqa: E402
from harness.certs import make_test_ca  # noqa: E402
from harness.xolctl import Xolctl  # noqa: E402

SUF = os.getpid()
NS = f"xfct-{SUF}"
AGENT, CTL, WLC = f"xfc-agent-{SUF}", f"xfc-controller-{SUF}", f"xfc-workload-{SUF}"
NODE = f"ctnode-{SUF}"
AGENT_YAML = "deploy/kubernetes/agent-daemonset.yaml"
CTL_YAML = "deploy/kubernetes/controller.yaml"
MAX_IMAGE = 120 * 1048576
# CAP_BPF (39), CAP_PERFMON (38), CAP_SYS_PTRACE (19): what the DaemonSet adds.
AGENT_CAPS = f"{(1 << 39) | (1 << 38) | (1 << 19):016x}"

# runc: this host's cgroup v1 hierarchy is not one crun handles; no container may ask for
# more open files than the hard limit allows.
CONTAINERS_CONF = """[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
default_ulimits = []
"""


def podman(*args, timeout=120):
    return run(["podman", *args], timeout=timeout)


def proc_status(pid, field):
    """A field of /proc/PID/status: its first value; for Uid the second (the effective
    uid). None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == field:
                    vals = rest.split()
                    return vals[1] if field == "Uid" else vals[0]
    except OSError:
        return None
    return None


def one_line(text, n=None):
    s = " ".join(str(text).split())
    return s[:n] if n else s


class Workload:
    """tests/workloads/hit_workload driven through a line on its stdin; its stdout (the
    "ready PID", "done N", "armed" lines) in a file."""

    def __init__(self, out, write):
        self.out, self._write = out, write

    def lines(self):
        try:
            with open(self.out, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def ready_pid(self):
        for line in self.lines():
            if line.startswith("ready"):
                return line.split()[1]
        return None

    def has(self, prefix):
        return any(line.startswith(prefix) for line in self.lines())

    def n_done(self):
        return sum(1 for line in self.lines() if line.startswith("done"))

    def send(self, line):
        self._write(line)

    def run_calls(self, n):
        """`run N 0`; true once the workload answered with one more "done"."""
        before = self.n_done()
        self.send(f"run {n} 0")
        return bool(wait_for(20, lambda: self.n_done() > before))


class ContainerLab:
    def __init__(self, t):
        self.t = t
        self.fds = []
        self.mounts_root = t.tmp

    # --- lifetime ---
    def cleanup(self):
        """Everything of this run, however it ended: only this run's storage is used, so
        every container and image in it is ours."""
        t = self.t
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if t.failed:
            for c in (AGENT, CTL):
                r = podman("logs", c, timeout=30)
                with open(t.path(f"podman-{c}.txt"), "w") as f:
                    f.write(r.text)
                tail = "".join(r.text.splitlines(keepends=True)[-20:])
                sys.stderr.write(f"--- podman logs {c}\n{tail}")
        podman("rm", "-a", "-f", "-t", "0", timeout=120)
        podman("rmi", "-a", "-f", timeout=120)
        run(["ip", "netns", "del", NS], timeout=30)
        for m in self.mounts_under(t.tmp):
            run(["umount", "-l", m], timeout=30)
        left = self.mounts_under(t.tmp)
        if left:
            t.log(f"cleanup: still mounted: {left}")
            return  # never delete through a mount
        if t.failed:
            # The logs stay (Tier keeps the scratch directory); the store and copies go.
            for e in os.listdir(t.tmp):
                p = t.path(e)
                if not (e.endswith((".log", ".txt", ".out", ".err")) and os.path.isfile(p)):
                    if os.path.isdir(p) and not os.path.islink(p):
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        try:
                            os.unlink(p)
                        except OSError:
                            pass

    @staticmethod
    def mounts_under(d):
        """Mount points under directory d, deepest first."""
        out = []
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 2:
                    continue
                mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
                if mp.startswith(d.rstrip("/") + "/"):
                    out.append(mp)
        return sorted(set(out), reverse=True)

    # --- setup ---
    def private_storage(self):
        t = self.t
        os.environ["CONTAINERS_CONF"] = t.path("containers.conf")
        os.environ["CONTAINERS_STORAGE_CONF"] = t.path("storage.conf")
        with open(t.path("containers.conf"), "w") as f:
            f.write(CONTAINERS_CONF)
        with open(t.path("storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\ngraphroot = "{t.path("storage")}"\n'
                    f'runroot = "{t.path("storage-run")}"\n')

    def build_image(self):
        t = self.t
        t.log("building the image")
        with open(t.path("build.log"), "wb") as log:
            r = subprocess.run(["deploy/image/build.sh"], stdout=subprocess.PIPE, stderr=log)
        if r.returncode != 0:
            with open(t.path("build.log"), errors="replace") as f:
                tail = f.readlines()[-3:]
            raise Fatal("image-build", f"deploy/image/build.sh failed: {one_line(''.join(tail))}")
        self.tag = r.stdout.decode().strip()
        size = podman("image", "inspect", self.tag, "--format", "{{.Size}}").out.strip()
        size = int(size) if size.isdigit() else 0
        t.log(f"image {self.tag}: {size // 1048576} MiB")
        t.check("image-build", 0 < size < MAX_IMAGE,
                f"image {self.tag} is {size} bytes (expected under 120 MiB)")
        named = set()
        for y in sorted(glob.glob("deploy/kubernetes/*.yaml")):
            with open(y) as f:
                for line in f:
                    if re.match(r"^ *image:", line):
                        named.add(re.sub(r"^ *image: *", "", line.rstrip("\n")))
        bad = sorted(named - {self.tag})
        t.check("manifests-name-the-image", named and not bad,
                f"manifests name {' '.join(bad) or 'no image'}, the image built is {self.tag}")

    def certs_volumes_network(self):
        t = self.t
        self.bin = t.binaries(["services/cli/xolctl", "tests/workloads/hit_workload"])
        subprocess.run(["chmod", "-R", "u+w", self.bin], check=True)
        for d in ("pvc", "run", "wlio", "secret-agent", "secret-ctl"):
            os.makedirs(t.path(d), exist_ok=True)
        self.ca = t.path("ca")
        try:
            make_test_ca(t.root, self.ca, agents=0, clients=["xolfleet-agent", "xolfleet-admin"],
                         server_san="xolfleet-controller,xolfleet-controller.xolfleet.svc")
        except subprocess.CalledProcessError as e:
            raise Fatal("setup", f"make-test-ca.sh failed: {one_line(e.stderr.decode())}")
        for secret, leaf in (("secret-agent", "xolfleet-agent"), ("secret-ctl", "controller")):
            shutil.copy(f"{self.ca}/ca.crt", t.path(secret, "ca.crt"))
            shutil.copy(f"{self.ca}/{leaf}.crt", t.path(secret, "tls.crt"))
            shutil.copy(f"{self.ca}/{leaf}.key", t.path(secret, "tls.key"))
            for f in ("ca.crt", "tls.crt", "tls.key"):
                os.chmod(t.path(secret, f), 0o644)  # Kubernetes secret volumes' default mode
            os.chmod(t.path(secret), 0o755)
        os.chown(t.path("pvc"), 65532, 65532)  # the controller's fsGroup
        if run(["ip", "netns", "add", NS]).rc != 0 or \
                run(["ip", "-n", NS, "link", "set", "lo", "up"]).rc != 0:
            raise Fatal("setup", "ip netns add")
        self.net = f"ns:/run/netns/{NS}"
        self.fleet = Xolctl(f"{self.bin}/xolctl", NS, [
            "--controller=127.0.0.1:7443", f"--tls-ca={self.ca}/ca.crt",
            f"--tls-cert={self.ca}/xolfleet-admin.crt", f"--tls-key={self.ca}/xolfleet-admin.key",
            "--timeout=10"], timeout=10)

    def run_manifest(self, manifest, kind, container, name, log, *args):
        """tests/container/run.py: the container as the manifest says. True if started."""
        with open(log, "wb") as f:
            r = subprocess.run(["tests/container/run.py", manifest, "--kind", kind,
                                "--container", container, "--name", name,
                                "--workdir", self.t.tmp, *args],
                               stdout=subprocess.DEVNULL, stderr=f)
        return r.returncode == 0

    def start_containers(self):
        t = self.t
        t.log("starting the controller and the agent")
        log = t.path("run-ctl.err")
        if not self.run_manifest(CTL_YAML, "Deployment", "controller", CTL, log,
                                 "--network", self.net,
                                 "--secret", f"xolfleet-controller-tls={t.path('secret-ctl')}",
                                 "--pvc", f"xolfleet-controller-state={t.path('pvc')}"):
            raise Fatal("controller-starts", open(log, errors="replace").read())
        log = t.path("run-agent.err")
        if not self.run_manifest(AGENT_YAML, "DaemonSet", "agent", AGENT, log,
                                 "--node-name", NODE, "--network", self.net,
                                 "--add-host", "xolfleet-controller.xolfleet.svc:127.0.0.1",
                                 "--secret", f"xolfleet-agent-tls={t.path('secret-agent')}",
                                 "--host-path", f"/run/xolfleet={t.path('run')}"):
            raise Fatal("agent-starts", open(log, errors="replace").read())
        self.actl = Xolctl(["podman", "exec", AGENT, "/usr/local/bin/xolctl"], timeout=30)

    # --- the agent, from inside its container ---
    def hits(self, probe_id):
        """Hits of probe_id in the agent's List (None if List fails)."""
        o = self.actl("list")
        if not o.ok or o.data is None:
            return None
        return sum(int(p.get("hits", 0)) for p in o.data.get("probes", [])
                   if p.get("id") == probe_id)

    def nprobes(self):
        o = self.actl("list")
        return len(o.data.get("probes", [])) if o.ok and o.data is not None else None

    def attach_id(self, *args):
        """Attaches; (probe id or None, the xolctl Out)."""
        o = self.actl("attach", *args)
        try:
            return o.data["probes"][0]["id"], o
        except (TypeError, KeyError, IndexError):
            return None, o

    def host_workload(self, binary, name):
        """hit_workload on the host (stdin a pipe); None unless it printed "ready"."""
        p = self.t.procs.start(name, [binary], self.t.path(f"{name}.out"), stdin=True)
        w = Workload(p.log, p.write)
        return w if wait_for(10, w.has, "ready") else None

    def refused(self, check, code, msg, *args):
        """attach fails with CODE and MESSAGE; no new probe."""
        before = self.nprobes()
        o = self.actl("attach", *args, json_out=False)
        after = self.nprobes()
        self.t.check(check, o.rc != 0 and f"attach: {code}: nothing attached" in o.text
                     and msg in o.text and before is not None and after == before,
                     lambda: f"rc={o.rc} probes {before} -> {after}; want {code} '{msg}'; "
                             f"got: {one_line(o.text, 400)}")


def workload_rootfs(src_bin, root):
    """A root file system holding the workload, /bin/sh and their libraries."""
    os.makedirs(f"{root}/bin", exist_ok=True)
    os.makedirs(f"{root}/io", exist_ok=True)
    shutil.copy(src_bin, f"{root}/hit_workload")
    shutil.copy("/bin/sh", f"{root}/bin/sh")
    libs = set()
    for b in (src_bin, "/bin/sh"):
        libs.update(re.findall(r"(/[^ \t\n]*)", run(["ldd", b]).out))
    for f in sorted(libs):
        os.makedirs(root + os.path.dirname(f), exist_ok=True)
        shutil.copy(f, root + f)  # follows symbolic links, as cp -L


def open_fifo_writer(path):
    """The write end of a FIFO once a reader has it open (never blocks: polled)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return None
        raise
    os.set_blocking(fd, True)
    return fd


def main():
    with Tier("container") as t:
        start = time.monotonic()
        lab = ContainerLab(t)
        t.on_cleanup(lambda: t.log(f"done in {time.monotonic() - start:.0f}s"))
        for tool in ("podman", "buildah", "runc"):
            if not shutil.which(tool):
                raise Fatal("setup", f"{tool} is not installed (scripts/setup.sh)")
        lab.private_storage()
        t.on_cleanup(lab.cleanup)

        # --- the image ---
        lab.build_image()

        # --- certificates, volumes, network; controller and agent as the manifests say ---
        lab.certs_volumes_network()
        lab.start_containers()
        actl = lab.actl
        if not wait_for(30, lambda: actl("info", json_out=False).ok):
            tail = one_line("".join(podman("logs", AGENT).text.splitlines(True)[-3:]))
            raise Fatal("agent-starts", f"no answer on the agent's socket: {tail}")
        t.passed("agent-starts")

        # The agent runs with exactly what the manifest grants: uid 0, CAP_BPF, CAP_PERFMON,
        # CAP_SYS_PTRACE and nothing else, no new privileges, seccomp off, read-only root.
        apid = podman("inspect", AGENT, "--format", "{{.State.Pid}}").out.strip()
        caps, uid = proc_status(apid, "CapEff"), proc_status(apid, "Uid")
        nnp = proc_status(apid, "NoNewPrivs")
        ro = podman("inspect", AGENT, "--format", "{{.HostConfig.ReadonlyRootfs}}").out.strip()
        t.check("agent-least-privilege",
                caps == AGENT_CAPS and uid == "0" and nnp == "1" and ro == "true",
                f"CapEff {caps} (want {AGENT_CAPS}), euid {uid}, NoNewPrivs {nnp}, "
                f"read-only root {ro}")
        cpid = podman("inspect", CTL, "--format", "{{.State.Pid}}").out.strip()
        cuid, ccaps = proc_status(cpid, "Uid"), proc_status(cpid, "CapEff")
        t.check("controller-non-root", cuid == "65532" and ccaps == "0" * 16,
                f"controller runs as {cuid} with {ccaps}")

        def registered():
            o = lab.fleet("fleet", "agents")
            return o.ok and o.data is not None and any(
                a.get("registration", {}).get("node_name") == NODE
                and a.get("health") == "AGENT_HEALTH_UP" for a in o.data.get("agents", []))
        t.check("agent-registers-with-controller", wait_for(30, registered),
                lambda: f"no {NODE} AGENT_HEALTH_UP: {one_line(lab.fleet('fleet', 'agents').text, 300)}")

        # --- probes from inside the agent container ---
        b = lab.bin
        # (a) A host process by its host path.
        host = lab.host_workload(f"{b}/hit_workload", "host-wl")
        if host is None:
            raise Fatal("setup", "host workload")
        host_id, o = lab.attach_id(f"{b}/hit_workload:xol_target_add")
        t.check("host-process-exact-hits",
                lambda: host_id and host.run_calls(1234) and lab.hits(host_id) == 1234,
                lambda: f"probe '{host_id or ''}' hits {lab.hits(host_id) if host_id else ''} "
                        f"(want 1234) {one_line(o.err)}")

        # (b) A process in another container, by container id and its path in that container.
        wlroot = t.path("wlroot")
        workload_rootfs(f"{b}/hit_workload", wlroot)
        os.mkfifo(t.path("wlio", "in"))
        r = podman("run", "-d", "--name", WLC, "--network", "none", "--cap-drop", "all",
                   "-v", f"{t.path('wlio')}:/io", "--rootfs", wlroot,
                   "/bin/sh", "-c", "exec /hit_workload </io/in >/io/out 2>&1")
        cid = r.out.strip()
        fd = wait_for(20, open_fifo_writer, t.path("wlio", "in")) \
            if re.fullmatch(r"[0-9a-f]{64}", cid) else None
        if fd:
            lab.fds.append(fd)
        ctw = Workload(t.path("wlio", "out"), lambda line: os.write(fd, (line + "\n").encode()))
        if not fd or not wait_for(20, ctw.has, "ready"):
            t.fail("other-container-exact-hits",
                   f"workload container did not start: {cid} {one_line(r.err)}")
        else:
            if os.path.exists("/hit_workload"):
                t.log("warning: /hit_workload exists on the host")
            ct_id, o = lab.attach_id("--container", cid[:12], "/hit_workload:xol_target_add")
            # Hits in the container's file only: the host's copy of the workload is another
            # file.
            t.check("other-container-exact-hits",
                    lambda: ct_id and ctw.run_calls(777) and host.run_calls(5)
                    and lab.hits(ct_id) == 777 and lab.hits(host_id) == 1239,
                    lambda: f"probe '{ct_id or ''}' hits {lab.hits(ct_id) if ct_id else ''} "
                            f"(want 777), host probe {lab.hits(host_id)} (want 1239) "
                            f"{one_line(o.err)}")

        # (c) Refusals: exact code and message, nothing attached.
        lab.refused("path-outside-host-root", "NOT_FOUND",
                    "no such file /usr/local/bin/xolctl.private/xolctl.bin under the host root "
                    "/host", "/usr/local/bin/xolctl.private/xolctl.bin:main")
        lab.refused("magic-link-out-of-host-root", "PERMISSION_DENIED", "magic link",
                    f"/proc/{apid}/root/usr/local/bin/xolctl.private/xolctl.bin:main")
        lab.refused("unknown-container", "NOT_FOUND",
                    "no container 0123456789abcdef on this node",
                    "--container", "0123456789abcdef", "/hit_workload:xol_target_add")
        # A process that exits when the agent opens its binary, before that open returns (a
        # copy of the workload, so that no other open triggers it).
        shutil.copy(f"{b}/hit_workload", f"{b}/hit_workload_exit")
        ex = lab.host_workload(f"{b}/hit_workload_exit", "exit-wl")
        if ex is None:
            t.fail("pid-exits-mid-request", "exit workload did not start")
        else:
            epid = ex.ready_pid()
            ex.send("exit-when-opened")
            if wait_for(10, ex.has, "armed"):
                lab.refused("pid-exits-mid-request", "NOT_FOUND",
                            f"process {epid} exited during the request",
                            "--pid", epid, f"{b}/hit_workload_exit:xol_target_add")
            else:
                t.fail("pid-exits-mid-request",
                       f"workload not armed: {' '.join(ex.lines())}")

        # Each capability the manifest adds is needed: the agent started without it
        # (everything else as the manifest says) cannot place a probe filtered to a root
        # process on the host (perf/BPF need BPF and PERFMON; /proc/PID/root of a process
        # with capabilities the agent lacks needs SYS_PTRACE). The full agent can (the
        # control).
        hpid = host.ready_pid()
        pid_id, o = lab.attach_id("--pid", hpid, f"{b}/hit_workload:xol_target_other")
        if pid_id:
            actl("detach", pid_id, json_out=False)
            with open(AGENT_YAML) as f:
                cap_list = [cap for d in yaml.safe_load_all(f) if d and d["kind"] == "DaemonSet"
                            for c in d["spec"]["template"]["spec"]["containers"]
                            for cap in c["securityContext"]["capabilities"]["add"]]
            needs = []
            for cap in cap_list:
                name = f"{AGENT}-no-{cap}"
                os.makedirs(t.path(f"run-{cap}"), exist_ok=True)
                lab.run_manifest(AGENT_YAML, "DaemonSet", "agent", name,
                                 t.path(f"run-no-{cap}.err"),
                                 "--node-name", f"{NODE}-{cap}", "--network", "none",
                                 "--without-cap", cap,
                                 "--secret", f"xolfleet-agent-tls={t.path('secret-agent')}",
                                 "--host-path", f"/run/xolfleet={t.path(f'run-{cap}')}")
                weak = Xolctl(["podman", "exec", name, "/usr/local/bin/xolctl"], timeout=30)

                def serving_or_gone():  # it serves, or it has exited
                    st = podman("inspect", name, "--format", "{{.State.Running}}")
                    return st.out.strip() != "true" or weak("info", json_out=False).ok
                wait_for(5, serving_or_gone)
                w = weak("attach", "--pid", hpid, f"{b}/hit_workload:xol_target_other",
                         json_out=False)
                eperm = [ln for ln in podman("logs", name).text.splitlines()
                         if re.search(r"Operation not permitted", ln)][:1]
                last = (w.text.strip().splitlines() or [""])[-1]
                t.log(f"without CAP_{cap}: "
                      f"{'still attaches' if w.ok else 'cannot attach:'} "
                      f"{eperm[0][:120] if eperm else ''} {last[:200]}")
                if w.ok:
                    needs.append(cap)
                podman("rm", "-f", "-t", "0", name)
            t.check("each-capability-needed", cap_list and not needs,
                    f"the agent attaches without: {' '.join(needs) or '(no capability added)'}")
        else:
            t.fail("each-capability-needed",
                   f"the agent as deployed cannot attach to pid {hpid}: {one_line(o.err)}")

        # The probes still count exactly after the refusals.
        t.check("probes-unaffected-by-refusals",
                lambda: host.run_calls(11) and lab.hits(host_id) == 1250,
                lambda: f"host probe hits {lab.hits(host_id)} (want 1250)")
        actl("detach", "--all", json_out=False)
        t.log(f"tier ran in {time.monotonic() - start:.0f}s")


if __name__ == "__main__":
    main()
