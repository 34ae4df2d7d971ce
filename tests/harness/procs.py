"""Processes a tier starts: each with its log file, stopped by pid (never by name), all of
them killed when the tier ends however it ends (Tier.__exit__)."""
import os
import signal
import subprocess


class Proc:
    """One started process. Commands are built so that the pid is the program itself:
    `ip netns exec`, `unshare` without --fork and `sh -c 'exec ...'` all exec."""

    def __init__(self, name, popen, log):
        self.name, self.popen, self.log = name, popen, log
        self.pid = popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def kill9(self):
        """SIGKILL and reap; returns once the process is gone."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, grace=2.0):
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()

    def write(self, line):
        """A line on the process's stdin (started with stdin=True)."""
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def wait(self, timeout=None):
        """The exit status, or None if still running after `timeout`."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Procs:
    """The registry of a tier's processes."""

    def __init__(self):
        self.all = []

    def start(self, name, argv, log, stdin=False, append=True):
        """Starts argv with stdout and stderr to `log` (appended: a restarted process keeps
        one log). stdin=True: a pipe for Proc.write; otherwise /dev/null."""
        with open(log, "ab" if append else "wb") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                 start_new_session=True)
        proc = Proc(name, p, log)
        self.all.append(proc)
        return proc

    def kill_all(self):
        """SIGKILL every process still running (by pid) and reap it."""
        for p in self.all:
            if p.popen.stdin:
                try:
                    p.popen.stdin.close()
                except OSError:
                    pass
        for p in self.all:
            try:
                p.kill9()
            except OSError:
                pass


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    @property
    def text(self):
        """stdout and stderr together (for messages and for matching either)."""
        return self.out + self.err

    def __repr__(self):
        return f"rc={self.rc} out={self.out.strip()!r} err={self.err.strip()!r}"


def run(argv, timeout=60, input=None):
    """Runs argv to completion; never raises on failure. On timeout the process (its own
    session) is killed by pid and rc is 124, like timeout(1)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=input.encode() if isinstance(input, str) else input,
                                 timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = 124
    except BaseException:  # Ctrl-C or SIGTERM while waiting: not a process left behind
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        raise
    return Result(rc, out.decode(errors="replace"), err.decode(errors="replace"))
