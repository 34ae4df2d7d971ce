#!/usr/bin/env python3
"""Writes deploy/prometheus/prometheus.yml with each job's kubernetes_sd_configs replaced by
static targets that carry the __meta_kubernetes_* labels Kubernetes discovery would give
them, so that Debian's Prometheus and promtool (built without kubernetes_sd) load the real
relabelling rules. Everything else in the file is kept.

usage: prom_static_config.py IN.yml OUT.yml JOB=ADDR[,NODE[,POD]] ... [--rules=PATH]
  JOB=ADDR,NODE,POD  one pod of job JOB whose metrics are at ADDR (host:port), running on
                     Kubernetes node NODE (default: node-of-ADDR) as pod POD
  --rules=PATH       rule_files becomes [PATH]
  --interval=D       scrape and evaluation interval (e.g. 1s)"""
import sys

import yaml

APP = {"xolfleet-controller": "xolfleet-controller", "xolfleet-agent": "xolfleet-agent"}


def main(argv):
    src, dst, rest = argv[1], argv[2], argv[3:]
    conf = yaml.safe_load(open(src))
    pods, rules, interval = {}, None, None
    for a in rest:
        if a.startswith("--rules="):
            rules = a.split("=", 1)[1]
        elif a.startswith("--interval="):
            interval = a.split("=", 1)[1]
        else:
            job, spec = a.split("=", 1)
            addr, *more = spec.split(",")
            node = more[0] if more else "node-of-" + addr
            pod = more[1] if len(more) > 1 else job + "-" + addr.replace(":", "-")
            pods.setdefault(job, []).append((addr, node, pod))
    for sc in conf["scrape_configs"]:
        if "kubernetes_sd_configs" not in sc:
            continue
        del sc["kubernetes_sd_configs"]
        job = sc["job_name"]
        sc["static_configs"] = [{
            # kubernetes_sd gives podIP:containerPort; a container port other than the
            # annotated one checks the address rewrite.
            "targets": [addr.rsplit(":", 1)[0] + ":1"],
            "labels": {
                "__meta_kubernetes_namespace": "xolfleet",
                "__meta_kubernetes_pod_name": pod,
                "__meta_kubernetes_pod_node_name": node,
                "__meta_kubernetes_pod_label_app_kubernetes_io_name": APP.get(job, job),
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
                "__meta_kubernetes_pod_annotation_prometheus_io_port": addr.rsplit(":", 1)[1],
            },
        } for addr, node, pod in pods.get(job, [("127.0.0.1:9", "node-a", job + "-a")])]
    if rules is not None:
        conf["rule_files"] = [rules]
    if interval is not None:
        conf.setdefault("global", {})["scrape_interval"] = interval
        conf["global"]["evaluation_interval"] = interval
    with open(dst, "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)


if __name__ == "__main__":
    main(sys.argv)
