"""A small harness for xolfleet's root-only test tiers (tests/harness/README.md).

    from harness import Tier, wait_for
    with Tier("fleet") as t:
        bins = t.binaries(...)
        ...
        t.check("name", ok, "why it failed")

Standard library only (Debian 12's python3)."""
from .certs import fingerprint, make_test_ca, new_leaf, replace, served_fingerprint
from .metrics import metric_prefix_value, metric_sum
from .netns import BridgeNet, in_mount_ns
from .poll import wait_for
from .procs import Proc, Procs, run
from .tier import Fatal, Tier
from .xolctl import Out, Xolctl, parse_json_stream

__all__ = [
    "BridgeNet", "Fatal", "Out", "Proc", "Procs", "Tier", "Xolctl", "fingerprint",
    "in_mount_ns", "make_test_ca", "metric_prefix_value", "metric_sum", "new_leaf",
    "parse_json_stream", "replace", "run", "served_fingerprint", "wait_for",
]
