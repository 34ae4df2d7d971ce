"""A test tier: its RESULT lines, its scratch directory, and cleanup that always runs.

The protocol is the one ./xolfleet test counts: one line per check on stdout,
    RESULT PASS <tier>-<check>
    RESULT FAIL <tier>-<check> <why>
and a non-zero exit status when anything failed. Logs (stderr) are "[<tier> HH:MM:SS] ...".

Cleanup (Tier.__exit__, also after an exception, Ctrl-C or SIGTERM): the cleanups registered
with before_kill=True run (a guest powered off), every process started through Tier.procs
is killed by pid, then the other registered cleanups run in reverse order (network
namespaces deleted, ...). The scratch directory is removed after a clean run and
kept, with the tail of each log printed, after a failure."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .procs import Procs


class Fatal(Exception):
    """A failure after which the tier cannot go on (reported as RESULT FAIL, then exit)."""

    def __init__(self, check, why):
        super().__init__(f"{check}: {why}")
        self.check, self.why = check, why


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class Tier:
    def __init__(self, name, root=None):
        self.name = name
        self.root = root or os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
        os.chdir(self.root)
        self.tmp = tempfile.mkdtemp(prefix=f"xolfleet-{name}.", dir="/tmp")
        self.failed = False
        self.results = []
        self.procs = Procs()
        self._cleanups = []
        self._before_kill = []

    # --- results ---
    def log(self, msg):
        print(f"[{self.name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def passed(self, check):
        self.results.append((check, True))
        print(f"RESULT PASS {self.name}-{check}", flush=True)

    def fail(self, check, why):
        self.failed = True
        self.results.append((check, False))
        why = " ".join(str(why).split())
        print(f"RESULT FAIL {self.name}-{check} {why}", flush=True)

    def check(self, check, ok, why):
        """ok: a value or a callable (called once); why: text or a callable giving it,
        evaluated only on failure (it may query the system as it is then)."""
        if callable(ok):
            ok = ok()
        if ok:
            self.passed(check)
        else:
            self.fail(check, why() if callable(why) else why)
        return bool(ok)

    # --- lifetime ---
    def on_cleanup(self, fn, before_kill=False):
        """fn() runs when the tier ends, after its processes are killed (LIFO); with
        before_kill=True, before they are (to stop one gracefully: a guest's poweroff)."""
        (self._before_kill if before_kill else self._cleanups).append(fn)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def __enter__(self):
        self._old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        if os.geteuid() != 0:
            self.fail("setup", "needs root (network namespaces, uprobes)")
            shutil.rmtree(self.tmp, ignore_errors=True)
            sys.exit(1)
        return self

    def __exit__(self, etype, exc, tb):
        # No second interrupt while cleaning up: it must finish.
        for s in self._old:
            signal.signal(s, signal.SIG_IGN)
        if isinstance(exc, Fatal):
            self.fail(exc.check, exc.why)
        elif etype is not None:
            self.failed = True
            what = "interrupted" if etype is KeyboardInterrupt else f"{etype.__name__}: {exc}"
            print(f"RESULT FAIL {self.name}-harness {what}", flush=True)
            if etype is not KeyboardInterrupt:
                import traceback
                traceback.print_exception(etype, exc, tb, file=sys.stderr)
        for fns in (self._before_kill, None, self._cleanups):
            if fns is None:
                self.procs.kill_all()
                continue
            for fn in reversed(fns):
                try:
                    fn()
                except Exception as e:  # cleanup goes on
                    self.log(f"cleanup: {e}")
        if self.failed:
            self.log(f"logs kept in {self.tmp}")
            for f in sorted(glob.glob(os.path.join(self.tmp, "*.log"))):
                with open(f, errors="replace") as fh:
                    tail = fh.readlines()[-15:]
                sys.stderr.write(f"--- {f}\n{''.join(tail)}")
            sys.stderr.flush()
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        for s, h in self._old.items():
            signal.signal(s, h)
        sys.exit(1 if self.failed else 0)

    # --- binaries ---
    def binaries(self, targets):
        """Copies bazel-bin/<target> (and <target>.private/, the private libraries the agent
        and xolctl run on) into TMP/bin: other builds may replace bazel-bin while the tier
        runs. Builds a missing one. Returns TMP/bin."""
        bindir = self.path("bin")
        os.makedirs(bindir, exist_ok=True)
        for t in targets:
            src = os.path.join("bazel-bin", t)
            if not os.access(src, os.X_OK):
                pkg, name = t.rsplit("/", 1)
                r = subprocess.run(["bazel", "build", f"//{pkg}:{name}"], capture_output=True)
                if r.returncode != 0:
                    with open(self.path("build.log"), "ab") as f:
                        f.write(r.stdout + r.stderr)
                    raise Fatal("setup", f"cannot build {t}")
            try:
                shutil.copy2(src, bindir)
                if os.path.isdir(src + ".private"):
                    shutil.copytree(src + ".private",
                                    os.path.join(bindir, os.path.basename(t) + ".private"),
                                    symlinks=False, dirs_exist_ok=True)
            except OSError as e:
                raise Fatal("setup", f"missing {t}: {e}")
        return bindir
