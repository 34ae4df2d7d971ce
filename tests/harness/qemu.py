"""A qemu (TCG) guest on a tap device of a TapNet: a kernel, an initramfs holding busybox,
an /init (tests/node/init by default) and files at their host paths with the libraries
they run on, driven through the init's control channel (a shell per TCP connection on port
2323, guestctl.py). The guest's only network is the TapNet's bridge, inside the tier's
namespace; nothing outside it can reach the channel.

    img = build_initramfs(t.path("guest.cpio.gz"), [agent, xolctl, ...], t.path("root"))
    g = Guest(t, kernel, img, net)            # net: a created TapNet
    g.boot(); g.wait_up(180)                  # registered: powered off when the tier ends
    g.sh("uname -r").out                      # -> procs.Result (rc, out, err)
"""
import os
import shutil
import subprocess
import sys
import time

from .netns import netns_exec
from .poll import wait_for
from .procs import run

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INIT = os.path.join(HERE, "..", "node", "init")


def _ldd(path):
    """The absolute paths of the shared libraries (and loader) ldd resolves for path; []
    for a static program or a file that is not ELF."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    if r.returncode != 0:
        return []
    libs = []
    for line in r.stdout.splitlines():
        f = line.split()
        if "=>" in f and len(f) >= 3 and f[2].startswith("/"):
            libs.append(f[2])
        elif f and line.startswith("\t/"):
            libs.append(f[0])
    return libs


def _copy_in(root, path):
    dst = root + path
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(os.path.realpath(path), dst)


def build_initramfs(out, files, scratch, init=DEFAULT_INIT):
    """A gzip'd newc cpio at `out`: busybox, `init` as /init, each of `files` at its own
    absolute path (with FILE.private beside it if there is one: a program on private
    libraries, tools/build_defs/private_libs.bzl) and every library ldd resolves for each
    (the host's own Debian libraries, so probes in the guest land in the same code as on
    the host). `scratch` (created, then removed) holds the tree."""
    root = scratch
    for d in ("bin", "proc", "sys", "dev", "tmp", "run", "etc"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2("/bin/busybox", os.path.join(root, "bin/busybox"))
    shutil.copyfile(init, os.path.join(root, "init"))
    os.chmod(os.path.join(root, "init"), 0o755)
    for f in files:
        f = os.path.abspath(f)
        _copy_in(root, f)
        if os.path.isdir(f + ".private"):
            shutil.copytree(f + ".private", root + f + ".private", symlinks=False,
                            dirs_exist_ok=True)
        for lib in _ldd(f):
            if not os.path.exists(root + lib):
                _copy_in(root, lib)
    # Debian's /lib and /lib64 are symlinks into /usr: keep that shape so that both
    # spellings of a library path name the same file in the guest, as on the host.
    for d in ("lib", "lib64"):
        inside = os.path.join(root, d)
        if os.path.islink("/" + d) and os.path.isdir(inside) and not os.path.islink(inside):
            shutil.copytree(inside, os.path.join(root, "usr", d), symlinks=True,
                            dirs_exist_ok=True)
            shutil.rmtree(inside)
            os.symlink(f"usr/{d}", inside)
    with open(out, "wb") as fh:
        subprocess.run("find . | cpio -o -H newc --quiet | gzip -1", shell=True, cwd=root,
                       stdout=fh, check=True)
    shutil.rmtree(root)
    return out


class Guest:
    """One qemu guest of a tier. tcg_thread="single": one host thread runs every vCPU in
    turn. With "multi" (MTTCG) qemu 7.2 lets a vCPU run a stale translation of code another
    vCPU rewrote (kernel/README.md, "Known gaps"), which the uprobe slot programs do; the
    tests run round-robin."""

    def __init__(self, tier, kernel, initrd, net, smp=2, mem=2048, tcg_thread="single",
                 port=2323, mac="52:54:00:32:00:02", console="console.log"):
        self.t, self.kernel, self.initrd, self.net = tier, kernel, initrd, net
        self.smp, self.mem, self.tcg_thread = smp, mem, tcg_thread
        self.addr = f"{net.guest_addr}:{port}"
        self.mac = mac
        self.console = tier.path(console)
        self.proc = None

    def boot(self):
        """Starts qemu (console to tier.path(console)); the guest is powered off when the
        tier ends, before the tier's processes are killed."""
        if not os.path.isfile(self.kernel):
            raise FileNotFoundError(f"no kernel at {self.kernel}")
        self.proc = self.t.procs.start("qemu", netns_exec(self.net.ns, [
            "qemu-system-x86_64", "-accel", f"tcg,thread={self.tcg_thread}",
            "-smp", str(self.smp), "-m", str(self.mem), "-cpu", "max",
            "-kernel", self.kernel, "-initrd", self.initrd,
            "-append", f"console=ttyS0 panic=-1 xolnode.ip={self.net.guest_addr}/24",
            "-netdev", f"tap,id=n0,ifname={self.net.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}",
            "-no-reboot"]), self.console + ".qemu")
        self.t.on_cleanup(self.power_off, before_kill=True)
        return self.proc

    def sh(self, command, timeout=120):
        """`command` run by the guest's shell: procs.Result with rc (124: timed out, 125: no
        channel), out (stdout and stderr of the command) and err (the channel's own)."""
        argv = netns_exec(self.net.ns, [sys.executable, os.path.join(HERE, "guestctl.py"),
                                        self.addr, "--timeout", str(timeout), "--", command])
        return run(argv, timeout=timeout + 30)

    def out(self, command, timeout=120):
        """The output of `command`, stripped; None if it failed."""
        r = self.sh(command, timeout)
        return r.out.strip() if r.rc == 0 else None

    def wait_up(self, timeout):
        """True once the control channel answers (False at once if qemu exited)."""
        def ready():
            if self.proc is None or not self.proc.alive():
                return "dead"
            return self.sh("true", 10).rc == 0
        return wait_for(timeout, ready, interval=1) is True

    def console_text(self):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def power_off(self, grace=20):
        """poweroff -f through the channel, then SIGKILL qemu if it is still up after
        `grace` seconds. Idempotent."""
        if self.proc is None or not self.proc.alive():
            return
        # The channel dies with the guest: the command never answers; do not wait for it.
        argv = netns_exec(self.net.ns, [sys.executable, os.path.join(HERE, "guestctl.py"),
                                        self.addr, "--timeout", "5", "--", "sync; poweroff -f"])
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        end = time.monotonic() + grace
        while self.proc.alive() and time.monotonic() < end:
            time.sleep(0.2)
        self.proc.kill9()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
