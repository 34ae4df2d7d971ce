"""Test certificates: scripts/make-test-ca.sh for a CA and its leaves, openssl for the rest
(another leaf of a CA, fingerprints, the certificate a server presents)."""
import os
import shutil
import subprocess

from .netns import netns_exec


def make_test_ca(root, out, server_san=None, agents=3, clients=None):
    """scripts/make-test-ca.sh OUT: ca.{crt,key}, controller.{crt,key} (SANs: localhost,
    127.0.0.1, ::1 and server_san), node-<i>.{crt,key} for i=1..agents, a leaf per client
    name (default: admin viewer counter capturer nobody), rogue-admin from another CA.
    Raises subprocess.CalledProcessError on failure."""
    argv = [os.path.join(root, "scripts/make-test-ca.sh"), str(out), "--agents", str(agents)]
    if server_san:
        argv += ["--server-san", server_san]
    if clients is not None:
        argv += ["--clients", " ".join(clients)]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def new_leaf(ca_dir, out_dir, name, cn, usage, san=None):
    """Another certificate and key from ca_dir's CA: out_dir/name.{crt,key}."""
    key, csr, ext, crt = (os.path.join(out_dir, f"{name}.{e}") for e in ("key", "csr", "ext", "crt"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", f"/CN={cn}/O=xolfleet-test", "-keyout", key, "-out", csr],
                   check=True, capture_output=True)
    with open(ext, "w") as f:
        f.write(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n")
        if san:
            f.write(f"subjectAltName={san}\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(ca_dir, "ca.crt"),
                    "-CAkey", os.path.join(ca_dir, "ca.key"), "-CAcreateserial", "-days", "2",
                    "-extfile", ext, "-out", crt], check=True, capture_output=True)
    return crt, key


def fingerprint(cert_path=None, pem=None):
    """SHA-256 fingerprint line of a certificate file (or PEM text); '' if none."""
    argv = ["openssl", "x509", "-noout", "-fingerprint", "-sha256"]
    if cert_path:
        argv += ["-in", str(cert_path)]
    r = subprocess.run(argv, input=(pem or "").encode() if not cert_path else None,
                       capture_output=True)
    return r.stdout.decode().strip() if r.returncode == 0 else ""


def served_fingerprint(addr, ca, cert, key, netns=None, timeout=5):
    """The fingerprint of the certificate a TLS server at addr presents to a client with
    cert/key that trusts ca; '' if the handshake fails."""
    argv = netns_exec(netns, ["timeout", str(timeout), "openssl", "s_client", "-connect", addr,
                              "-CAfile", str(ca), "-cert", str(cert), "-key", str(key)])
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
    return fingerprint(pem=r.stdout.decode(errors="replace"))


def replace(src, dst):
    """Replaces dst with a copy of src in one step (rename), as Kubernetes updates a
    Secret's files: a reader sees the old file or the new one, never half of one."""
    shutil.copyfile(src, f"{dst}.new")
    os.replace(f"{dst}.new", dst)
