#!/usr/bin/env python3
"""Runs one container of a Kubernetes manifest with podman, as the kubelet would.

The podman flags are derived from the pod template, never written by hand, so a test that
runs the container this way tests the manifest: image, command and args (with $(VAR)
expanded from env and the downward API), hostPID, the security context (user, group,
privileged, capabilities, seccomp, read-only root, no-new-privileges), resources, and every
volume mount. Anything in the pod spec this script cannot reproduce is an error, not
silently dropped.

  run.py MANIFEST --kind DaemonSet --container agent --name NAME --node-name NODE
         [--network ns:/run/netns/X] [--add-host HOST:IP]
         [--secret NAME=DIR] [--configmap NAME=DIR] [--pvc NAME=DIR]
         [--host-path PATH=DIR] [--arg-override --flag=value] [--without-cap CAP]
         [--dry-run]

Prints the container id (or, with --dry-run, the podman command as JSON). Fails when the
manifest names an image the local store does not have.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import yaml

# securityContext.fsGroup is honoured by the caller owning the volumes (--pvc DIR).
SUPPORTED_POD_KEYS = {"serviceAccountName", "automountServiceAccountToken", "hostPID",
                      "tolerations", "priorityClassName", "containers", "volumes",
                      "securityContext"}
SUPPORTED_CONTAINER_KEYS = {"name", "image", "command", "args", "env", "ports",
                            "livenessProbe", "readinessProbe", "resources", "securityContext",
                            "volumeMounts"}


class ManifestError(Exception):
    pass


def find_pod_template(docs, kind):
    for d in docs:
        if d and d.get("kind") == kind:
            return d["spec"]["template"]["spec"], d
    raise ManifestError(f"no {kind} in the manifest")


def expand(text, env):
    def sub(m):
        name = m.group(1)
        if name not in env:
            raise ManifestError(f"$({name}) is not defined in the container's env")
        return env[name]
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def memory_bytes(q):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(q))
    if not m:
        raise ManifestError(f"memory quantity {q!r} not understood")
    return int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m.group(2)]


def config_map_dir(docs, name, workdir):
    """A ConfigMap of the same manifest file, written out as its files."""
    for d in docs:
        if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name:
            path = os.path.join(workdir, "configmap-" + name)
            os.makedirs(path, exist_ok=True)
            for k, v in (d.get("data") or {}).items():
                with open(os.path.join(path, k), "w") as f:
                    f.write(v)
            os.chmod(path, 0o755)
            return path
    raise ManifestError(f"configMap {name!r} is not in the manifest: give it with --configmap")


def podman_args(docs, pod, container_name, opts):
    extra = set(pod) - SUPPORTED_POD_KEYS
    if extra:
        raise ManifestError(f"pod spec fields this runner cannot reproduce: {sorted(extra)}")
    containers = {c["name"]: c for c in pod["containers"]}
    if container_name not in containers:
        raise ManifestError(f"no container {container_name!r} (have {sorted(containers)})")
    c = containers[container_name]
    extra = set(c) - SUPPORTED_CONTAINER_KEYS
    if extra:
        raise ManifestError(f"container fields this runner cannot reproduce: {sorted(extra)}")
    args = ["run", "--detach", "--name", opts.name]
    args += ["--network", opts.network]
    for h in opts.add_host:
        args += ["--add-host", h]
    if pod.get("hostPID"):
        args += ["--pid", "host"]

    # Environment: literal values and the downward API fields a node agent uses.
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if ref == "spec.nodeName":
            env[e["name"]] = opts.node_name
        elif ref == "metadata.name":
            env[e["name"]] = opts.name
        else:
            raise ManifestError(f"env {e['name']}: valueFrom {e.get('valueFrom')} not supported")
    for k, v in env.items():
        args += ["--env", f"{k}={v}"]

    # Security context: the pod's, overridden by the container's.
    sc = dict(pod.get("securityContext") or {})
    sc.update(c.get("securityContext") or {})
    user = sc.get("runAsUser")
    group = sc.get("runAsGroup", user)
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if sc.get("runAsNonRoot") and user in (None, 0):
        raise ManifestError("runAsNonRoot with runAsUser 0 or unset")
    if sc.get("privileged"):
        args += ["--privileged"]
    caps = sc.get("capabilities") or {}
    for cap in caps.get("drop", []):
        args += ["--cap-drop", "all" if cap == "ALL" else "CAP_" + cap]
    added = list(caps.get("add", []))
    for cap in opts.without_cap:
        if cap not in added:
            raise ManifestError(f"--without-cap {cap}: the manifest does not add it ({added})")
        added.remove(cap)
    for cap in added:
        args += ["--cap-add", "CAP_" + cap]
    seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise ManifestError(f"seccompProfile {seccomp} not supported")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        # Kubernetes mounts nothing writable for it (podman would add tmpfs on /run, /tmp).
        args += ["--read-only", "--read-only-tmpfs=false"]

    limits = (c.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args += ["--memory", str(memory_bytes(limits["memory"]))]

    # Volumes.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = volumes.get(m["name"])
        if v is None:
            raise ManifestError(f"volumeMount {m['name']} names no volume")
        opts_ = ["ro" if m.get("readOnly") else "rw"]
        prop = m.get("mountPropagation", "None")
        opts_.append({"None": "rprivate", "HostToContainer": "rslave",
                      "Bidirectional": "rshared"}[prop])
        if "hostPath" in v:
            src = v["hostPath"]["path"]
            src = opts.host_path.get(src, src)
            if v["hostPath"].get("type") == "DirectoryOrCreate":
                subprocess.run(["mkdir", "-p", src], check=True)
        elif "secret" in v:
            src = need(opts.secret, v["secret"]["secretName"], "--secret")
        elif "configMap" in v:
            src = opts.configmap.get(v["configMap"]["name"]) or config_map_dir(
                docs, v["configMap"]["name"], opts.workdir)
        elif "persistentVolumeClaim" in v:
            src = need(opts.pvc, v["persistentVolumeClaim"]["claimName"], "--pvc")
        elif "emptyDir" in v:
            args += ["--mount", f"type=tmpfs,destination={m['mountPath']}"]
            continue
        else:
            raise ManifestError(f"volume {m['name']}: kind not supported: {sorted(v)}")
        args += ["--volume", f"{src}:{m['mountPath']}:{','.join(opts_)}"]

    image = c["image"]
    command = c.get("command")
    cargs = [expand(a, env) for a in c.get("args", [])]
    for o in opts.arg_override:
        flag = o.split("=", 1)[0]
        hits = [i for i, a in enumerate(cargs) if a.split("=", 1)[0] == flag]
        if not hits:
            raise ManifestError(f"--arg-override {o}: the manifest has no {flag}")
        for i in hits:
            cargs[i] = o
    if command:
        args += ["--entrypoint", json.dumps(command[:1])]
        cargs = command[1:] + cargs
    return image, args + [image] + cargs


def need(table, key, flag):
    if key not in table:
        raise ManifestError(f"the manifest mounts {key!r}: give it with {flag} {key}=DIR")
    return table[key]


def pairs(items):
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = v
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("manifest")
    p.add_argument("--kind", required=True)
    p.add_argument("--container", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--node-name", default="node-1")
    p.add_argument("--network", default="none")
    p.add_argument("--add-host", action="append", default=[])
    p.add_argument("--secret", action="append", default=[])
    p.add_argument("--configmap", action="append", default=[])
    p.add_argument("--pvc", action="append", default=[])
    p.add_argument("--host-path", action="append", default=[])
    p.add_argument("--arg-override", action="append", default=[])
    p.add_argument("--workdir", default="/tmp")
    # Measuring: the same container without one of the capabilities the manifest adds.
    p.add_argument("--without-cap", action="append", default=[])
    p.add_argument("--dry-run", action="store_true")
    opts = p.parse_args()
    opts.secret, opts.configmap = pairs(opts.secret), pairs(opts.configmap)
    opts.pvc, opts.host_path = pairs(opts.pvc), pairs(opts.host_path)
    with open(opts.manifest) as f:
        docs = list(yaml.safe_load_all(f))
    try:
        pod, _ = find_pod_template(docs, opts.kind)
        image, args = podman_args(docs, pod, opts.container, opts)
    except ManifestError as e:
        print(f"run.py: {opts.manifest}: {e}", file=sys.stderr)
        return 2
    if opts.dry_run:
        print(json.dumps(["podman"] + args))
        return 0
    if subprocess.run(["podman", "image", "exists", image]).returncode != 0:
        print(f"run.py: {opts.manifest} names image {image}, which is not in the local store "
              "(deploy/image/build.sh builds it)", file=sys.stderr)
        return 3
    r = subprocess.run(["podman"] + args, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        return r.returncode
    print(r.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
