#!/usr/bin/env python3
"""Runs a shell command inside a test guest through its control channel.

The guest's /init (tests/node/init) serves a shell per TCP connection on port 2323 (inside
the test's network namespace: run this with `ip netns exec`). This sends one command, reads
its output up to an end marker carrying the exit status, prints the output and exits with
that status (124: timed out, 125: no channel).

  guestctl.py HOST:PORT [--timeout SECONDS] -- COMMAND...

Standalone (standard library, no package imports): qemu.Guest runs it in the guest's
network namespace, and so does tests/node/lib.sh (the mixed demo)."""
import argparse
import os
import re
import socket
import sys
import time


def connect(address, deadline):
    host, port = address.rsplit(":", 1)
    while True:
        try:
            return socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run(address, command, timeout):
    """(status, output, error text) of `command` run by the guest's shell."""
    deadline = time.monotonic() + timeout
    s = connect(address, deadline)
    token = "XOLCTL-%d-%d" % (os.getpid(), int(time.time() * 1000))
    # The command runs in a subshell so `exit` or `cd` cannot end or change the channel.
    line = "( %s ) </dev/null; xolrc=$?; echo; echo %s $xolrc\n" % (command, token)
    s.sendall(line.encode())
    buf = b""
    marker = re.compile(re.escape(token.encode()) + rb" (\d+)\r?\n")
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 124, buf.decode(errors="replace"), \
                    "guestctl: timed out after %ds: %s\n" % (timeout, command)
            s.settimeout(remaining)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return 125, buf.decode(errors="replace"), \
                    "guestctl: channel closed (guest down?)\n"
            buf += chunk
            # The marker with a number after it (never the command line itself).
            m = marker.search(buf)
            if m:
                out = buf[:m.start()]
                if out.endswith(b"\n"):  # the `echo` before the marker
                    out = out[:-1]
                return int(m.group(1)), out.decode(errors="replace"), ""
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("address")
    ap.add_argument("--timeout", type=float, default=120)
    argv = sys.argv[1:]
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    a = ap.parse_args(argv)
    if not command:
        ap.error("no command (guestctl.py HOST:PORT -- COMMAND...)")
    try:
        rc, out, err = run(a.address, " ".join(command), a.timeout)
    except OSError as e:
        sys.stderr.write("guestctl: %s: %s\n" % (a.address, e))
        return 125
    sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
