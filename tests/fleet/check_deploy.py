#!/usr/bin/env python3
"""Checks deploy/: every YAML document parses and is a Kubernetes object with the fields
it needs, the Grafana dashboard is valid JSON whose panels all have PromQL targets, and
Debian's promtool accepts the Prometheus config (kubernetes_sd replaced by static targets) and
the alert rules, and the rules pass their unit tests (alerts_test.yml). One line per check:
"PASS name" / "FAIL name why"; exit 1 if any failed."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # Debian: python3-yaml
    print("FAIL python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(1)

failed = 0


def result(ok, name, why=""):
    global failed
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else " " + why))
    failed += 0 if ok else 1


def main(root):
    deploy = pathlib.Path(root, "deploy")
    kinds = []
    for f in sorted(deploy.glob("kubernetes/*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        except yaml.YAMLError as e:
            result(False, f"yaml:{f.name}", str(e).replace("\n", " "))
            continue
        bad = [d for d in docs
               if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind")
               or not d.get("metadata", {}).get("name")]
        result(not bad and docs, f"yaml:{f.name}", f"{len(bad)} object(s) without apiVersion/kind/name")
        kinds += [(d["kind"], d["metadata"]["name"]) for d in docs if isinstance(d, dict) and "kind" in d]
        for d in docs:
            if d.get("kind") in ("Deployment", "DaemonSet"):
                spec = d["spec"]
                sel = spec["selector"]["matchLabels"]
                labels = spec["template"]["metadata"]["labels"]
                result(all(labels.get(k) == v for k, v in sel.items()),
                       f"selector:{d['metadata']['name']}", "selector does not match template labels")
                vols = {v["name"] for v in spec["template"]["spec"].get("volumes", [])}
                mounts = {m["name"] for c in spec["template"]["spec"]["containers"]
                          for m in c.get("volumeMounts", [])}
                result(mounts <= vols, f"volumes:{d['metadata']['name']}", f"unknown {mounts - vols}")
    want = {("DaemonSet", "xolfleet-agent"), ("Deployment", "xolfleet-controller"),
            ("Service", "xolfleet-controller"), ("ServiceAccount", "xolfleet-agent"),
            ("ServiceAccount", "xolfleet-controller"), ("Role", "xolfleet-viewer"),
            ("RoleBinding", "xolfleet-viewer")}
    missing = want - set(kinds)
    result(not missing, "kubernetes-objects", f"missing {sorted(missing)}")

    for f in sorted(deploy.glob("prometheus/*.yml")):
        try:
            yaml.safe_load(f.read_text())
            result(True, f"yaml:{f.name}")
        except yaml.YAMLError as e:
            result(False, f"yaml:{f.name}", str(e).replace("\n", " "))

    for f in sorted(deploy.glob("grafana/*.json")):
        try:
            dash = json.loads(f.read_text())
        except ValueError as e:
            result(False, f"json:{f.name}", str(e))
            continue
        panels = dash.get("panels", [])
        empty = [p.get("title") for p in panels
                 if not p.get("targets") or not all(t.get("expr") for t in p["targets"])]
        result(panels and not empty, f"json:{f.name}", f"panels without PromQL: {empty}")
        ids = [p.get("id") for p in panels]
        result(len(ids) == len(set(ids)), f"panel-ids:{f.name}", "duplicate panel ids")

    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not os.path.exists(promtool):
        result(False, "promtool", "promtool not installed (Debian package prometheus)")
        return
    # Debian's promtool lacks kubernetes_sd: check the config with the discovery replaced by
    # static targets carrying the same __meta_ labels (prom_static_config.py).
    with tempfile.TemporaryDirectory() as tmp:
        static = os.path.join(tmp, "prometheus.yml")
        conv = subprocess.run(
            [sys.executable, str(pathlib.Path(__file__).with_name("prom_static_config.py")),
             str(deploy / "prometheus/prometheus.yml"), static,
             "--rules=" + str((deploy / "prometheus/alerts.yml").resolve())],
            capture_output=True, text=True)
        result(conv.returncode == 0, "prometheus-static-substitution", conv.stderr[-300:])
        for args, name in ((["check", "config", static], "promtool-config"),
                           (["check", "rules", "prometheus/alerts.yml"], "promtool-rules"),
                           (["test", "rules", "prometheus/alerts_test.yml"], "promtool-test-rules")):
            p = subprocess.run([promtool] + args, cwd=deploy, capture_output=True, text=True)
            result(p.returncode == 0, name, (p.stdout + p.stderr).replace("\n", " ")[-300:])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
    sys.exit(1 if failed else 0)
