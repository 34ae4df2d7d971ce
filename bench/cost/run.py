#!/usr/bin/env python3
"""Estimated vs measured probe overhead, per placement class (issue 14).

The agent's estimate of a probe's cost is hits/s x its calibrated cost of one hit at the
site's placement (measured by the agent at start-up on a helper process it owns). This
benchmark checks that figure against what a real workload loses: tests/workloads/hit_workload
calls one function as fast as it can for a fixed time, without a probe and then with a
pid-scoped probe on it, in the same run (interleaved rounds, so load drifts hit both). The
measured cost of a hit is the workload's CPU time per call with the probe minus without
(/proc/PID/schedstat: the trap and the kernel's handling of a hit are charged to the probed
task, so time it spends preempted by other load does not count; the wall-clock difference
is printed beside it); the error is (estimated - measured) / measured. Root; this
machine's kernel.

  bench/cost/run.sh [--rounds=5] [--seconds=2] [--out=bench/cost/results.txt]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "bazel-bin")
AGENT = os.path.join(BIN, "services/agent/xolfleet-agent")
XOLCTL = os.path.join(BIN, "services/cli/xolctl")
WORKLOAD = os.path.realpath(os.path.join(BIN, "tests/workloads/hit_workload"))

# (name, workload command, symbol, capture): the site's placement comes from the agent.
CASES = [
    ("fast", "fast", "xol_target_fast", False),     # push %rbp: emulated everywhere
    ("spin", "spin", "xol_target_spin", False),     # lea x(%rip): single-step on stock kernels
    ("fast+capture", "fast", "xol_target_fast", True),  # emulated, every hit captured
]


class Workload:
    def __init__(self):
        self.p = subprocess.Popen([WORKLOAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        line = self.p.stdout.readline().split()
        assert line[0] == "ready", line
        self.pid = int(line[1])

    def cpu_ns(self):
        with open(f"/proc/{self.pid}/schedstat") as f:
            return int(f.read().split()[0])

    def rate(self, cmd, seconds):
        """(calls per wall second, CPU ns per call)."""
        c0 = self.cpu_ns()
        self.p.stdin.write(f"{cmd} {seconds}\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline().split()
        assert out[0] == "done", out
        calls = int(out[1])
        # The workload times itself (it stops at the first 1000-call chunk past the end).
        return calls / seconds, (self.cpu_ns() - c0) / calls

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait(timeout=10)


def short(placement):
    """PLACEMENT_EMULATED (xolctl --json) -> EMULATED, as the tables print it."""
    return (placement or "").removeprefix("PLACEMENT_")


def ctl(sock, *args):
    r = subprocess.run([XOLCTL, f"--agent=unix:{sock}", "--json", *args], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"xolctl {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/cost/results.txt"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/cost/run.py: needs root (uprobes, BPF)")
    if not a.no_build:
        subprocess.run(["bazel", "build", "--jobs=2", "//services/agent:xolfleet-agent",
                        "//services/cli:xolctl", "//tests/workloads:hit_workload"],
                       cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="xolfleet-cost-bench-")
    sock = os.path.join(tmp, "agent.sock")
    log = open(os.path.join(tmp, "agent.log"), "w")
    # No budget: this measures, it must not act on what it measures.
    agent = subprocess.Popen([AGENT, f"--unix-socket={sock}", "--metrics-address=",
                              "--node-budget=0"], stdout=log, stderr=subprocess.STDOUT)
    w = None
    try:
        for _ in range(200):
            if os.path.exists(sock):
                try:
                    info = ctl(sock, "info")
                    break
                except RuntimeError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError("agent did not come up")
        cal = info.get("calibration", {})
        figures = {(short(f.get("placement")), bool(f.get("capture"))): f.get("ns_per_hit", 0)
                   for f in cal.get("figures", [])}
        capture_ns = cal.get("capture_ns_per_event", 0)
        w = Workload()
        rows = []
        for name, cmd, sym, capture in CASES:
            per_round = []
            placement = None
            for _ in range(a.rounds):
                r0, c0 = w.rate(cmd, a.seconds)
                args = ["attach", f"{WORKLOAD}:{sym}", f"--pid={w.pid}"]
                if capture:
                    args.append("--capture=rdi")
                att = ctl(sock, *args)
                probe = att["probes"][0]
                placement = short(probe["site"]["placement"])
                r1, c1 = w.rate(cmd, a.seconds)
                listed = ctl(sock, "list", probe["id"])["probes"][0]
                ctl(sock, "detach", probe["id"])
                hits = int(listed.get("hits", 0))
                per_round.append({"rate0": r0, "rate1": r1, "measured_ns": c1 - c0,
                                  "wall_ns": (1 / r1 - 1 / r0) * 1e9, "hits": hits})
            est = figures.get((placement, False), 0) + (capture_ns if capture else 0)
            measured = [x["measured_ns"] for x in per_round]
            med = statistics.median(measured)
            rows.append({
                "case": name, "site": sym, "placement": placement, "estimated_ns": est,
                "measured_ns": med, "min": min(measured), "max": max(measured),
                "error": (est - med) / med if med > 0 else float("nan"),
                "wall_ns": statistics.median(x["wall_ns"] for x in per_round),
                "rate0": statistics.median(x["rate0"] for x in per_round),
                "rate1": statistics.median(x["rate1"] for x in per_round),
            })
        w.close()
        w = None
    finally:
        if w:
            w.p.kill()
        agent.terminate()
        agent.wait(timeout=30)
        log.close()
    lines = []
    lines.append("# bench/cost/run.py: estimated vs measured cost of one probe hit, per placement")
    lines.append(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, kernel "
                 f"{os.uname().release}, profile {cal.get('profile')}, {os.cpu_count()} CPUs, "
                 f"load {os.getloadavg()[0]:.1f}")
    lines.append(f"# {a.rounds} rounds of {a.seconds} s without then with a pid-scoped probe, "
                 "interleaved; measured = the workload's CPU time per call probed - unprobed "
                 "(/proc/PID/schedstat), median over rounds; wall = 1/rate(probed) - "
                 "1/rate(unprobed)")
    lines.append("# estimated = the agent's calibration figure for the placement (+ one captured "
                 "event's cost when capturing)")
    lines.append("# calibration: " + ", ".join(
        f"{k[0]}{'+capture' if k[1] else ''} {v / 1000:.2f} us" for k, v in sorted(figures.items()))
        + f"; a captured event {capture_ns / 1000:.2f} us")
    lines.append("")
    hdr = (f"{'case':<14} {'placement':<12} {'calls/s unprobed':>17} {'calls/s probed':>15} "
           f"{'estimated':>10} {'measured':>10} {'(min..max)':>20} {'error':>8} {'wall':>10}")
    lines.append(hdr)
    for r in rows:
        lines.append(
            f"{r['case']:<14} {r['placement']:<12} {r['rate0']:>17,.0f} {r['rate1']:>15,.0f} "
            f"{r['estimated_ns'] / 1000:>8.2f}us {r['measured_ns'] / 1000:>8.2f}us "
            f"{'(' + format(r['min'] / 1000, '.2f') + '..' + format(r['max'] / 1000, '.2f') + ')':>20} "
            f"{r['error'] * 100:>+7.0f}% {r['wall_ns'] / 1000:>8.2f}us")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    with open(a.out, "w") as f:
        f.write(text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
