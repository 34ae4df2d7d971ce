#!/usr/bin/env python3
"""Queries over the JSON of `xolctl ... --json` and Prometheus, for tests/tiers/node.sh.

Enum values are printed as the JSON has them: the API's full names (PROBE_STATE_ATTACHED,
PLACEMENT_BOOSTED, AGENT_HEALTH_UP); metric labels carry the short names (BOOSTED).

  nodeq.py fleet-probes   < fleet-list.json  -> "NODE PROFILE PROBE_ID ACTUAL PREDICTED KERNEL HITS"
  nodeq.py agents         < agents.json      -> "NODE HEALTH PROFILE BOOSTS MIGRATIONS MISMATCHES"
  nodeq.py metric NAME [LABEL=VALUE...] < /metrics text -> the sum of the matching samples
  nodeq.py local-placements LIBDIR < agent-list.json (xolctl list --json of many probes)
      -> one line per library: "LIB PROBES MISMATCHES UNREPORTED SINGLE_STEP SHARE%"
      and exit status 1 if any probe's kernel placement differs from the prediction
  nodeq.py promql         < /api/v1/query JSON -> "value" of each result, one per line
  nodeq.py cost-follows-kernel INFO.json < agent-list.json (xolctl info/list --json)
      -> one line per probe: "ID KERNEL_PLACEMENT COST_PLACEMENT NS_PER_HIT FIGURE"; exit
      status 1 unless every probe is costed at its kernel placement with that figure
"""
import json
import os
import re
import sys

P = "PLACEMENT_UNSPECIFIED"


def load():
    text = sys.stdin.read().strip()
    return json.loads(text) if text else {}


def main():
    kind = sys.argv[1]
    if kind == "fleet-probes":
        for p in load().get("probes", []):
            print(p.get("node_name"), p.get("kernel_profile", "-"), p.get("fleet_probe_id"),
                  p.get("actual", "PROBE_STATE_UNSPECIFIED"), p.get("predicted_placement", P),
                  p.get("kernel_placement", P), int(p.get("hits", 0)))
    elif kind == "agents":
        for a in load().get("agents", []):
            r = a["registration"]
            print(r["node_name"], a.get("health"), r.get("kernel_profile", "-"),
                  "true" if r.get("kernel_boosts") else "false",
                  int(a.get("slot_stats", {}).get("slot_migrations", 0)),
                  int(a.get("placement_mismatches", 0)))
    elif kind == "metric":
        name = sys.argv[2]
        want = dict(kv.split("=", 1) for kv in sys.argv[3:])
        total = 0.0
        for line in sys.stdin:
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
            if not m or m.group(1) != name:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(labels.get(k) == v for k, v in want.items()):
                total += float(m.group(3))
        print("%d" % total if total == int(total) else total)
    elif kind == "local-placements":
        stats = {}
        bad = 0
        for p in load().get("probes", []):
            lib = os.path.basename(p["spec"]["binary_path"])
            s = stats.setdefault(lib, [0, 0, 0, 0])
            s[0] += 1
            pred = p.get("site", {}).get("placement", P)
            kern = p.get("kernel_placement", P)
            if kern == P:
                s[2] += 1
            elif kern != pred:
                s[1] += 1
                bad += 1
                if bad <= 10:
                    print("mismatch %s:%s+0x%x %s predicted %s kernel %s" % (
                        lib, p["spec"].get("symbol", ""), int(p["spec"].get("offset", 0)),
                        p.get("site", {}).get("disassembly", ""), pred, kern), file=sys.stderr)
            if kern == "PLACEMENT_SINGLE_STEP":
                s[3] += 1
        for lib, (n, mism, unrep, ss) in sorted(stats.items()):
            print(lib, n, mism, unrep, ss, "%.2f%%" % (100.0 * ss / n if n else 0))
        return 1 if bad or any(s[2] for s in stats.values()) else 0
    elif kind == "cost-follows-kernel":
        with open(sys.argv[2]) as f:
            info = json.load(f)
        figures = {(g.get("placement", P), bool(g.get("capture", False))): float(g["ns_per_hit"])
                   for g in info.get("calibration", {}).get("figures", [])}
        probes = load().get("probes", [])
        bad = 0 if probes else 1
        for p in probes:
            kern = p.get("kernel_placement", P)
            cost = p.get("cost", {})
            got = cost.get("cost_placement", P)
            ns = float(cost.get("ns_per_hit", 0))
            fig = figures.get((kern, False))
            ok = kern != P and got == kern and fig is not None and abs(ns - fig) <= 1e-6 * fig
            bad += not ok
            print(p.get("id"), kern, got, "%.1f" % ns, fig, "" if ok else "WRONG")
        return 1 if bad else 0
    elif kind == "promql":
        for r in load().get("data", {}).get("result", []):
            print(r["value"][1])
    else:
        print("nodeq.py: unknown kind %s" % kind, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
