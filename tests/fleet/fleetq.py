#!/usr/bin/env python3
"""Turns `xolctl fleet ... --json` output into lines the tier scripts can grep.

  fleetq.py probes   < list.json    -> "NODE FLEET_PROBE_ID ACTUAL HITS COPIES DESIRED"
  fleetq.py agents   < agents.json  -> "NODE HEALTH IDENTITY"
  fleetq.py rollout  < rollout.json -> "SET_ID STATE ATTACHED FAILED PENDING CANARY,..."
  fleetq.py local    < agent-list.json -> "LOCAL_ID STATE FLEET_PROBE_ID" (agent's own List)
"""
import json
import sys


def main() -> int:
    kind = sys.argv[1]
    text = sys.stdin.read().strip()
    d = json.loads(text) if text else {}
    if kind == "probes":
        for p in d.get("probes", []):
            print(p.get("node_name"), p.get("fleet_probe_id"),
                  p.get("actual", "PROBE_STATE_UNSPECIFIED"),
                  int(p.get("hits", 0)), int(p.get("local_copies", 0)),
                  "yes" if p.get("desired") else "no")
    elif kind == "agents":
        for a in d.get("agents", []):
            print(a["registration"]["node_name"], a.get("health"), a.get("identity", "-"))
    elif kind == "rollout":
        r = d.get("rollout", d)
        print(r.get("set_id"), r.get("state"), int(r.get("nodes_attached", 0)),
              int(r.get("nodes_failed", 0)), int(r.get("nodes_pending", 0)),
              ",".join(r.get("canary_nodes", [])) or "-")
    elif kind == "local":
        for p in d.get("probes", []):
            labels = p.get("spec", {}).get("labels", {})
            print(p.get("id"), p.get("state"), labels.get("xolfleet.io/fleet-probe", "-"))
    else:
        print(f"fleetq.py: unknown kind {kind}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader (grep -q) had enough
        sys.stderr.close()
        sys.exit(0)
