"""Network namespaces and per-node mount namespaces.

BridgeNet: a hub namespace holding a bridge with the subnet's first address, and one
namespace per member joined to it by a veth pair (eth0 inside). The subnet exists only
inside these namespaces; nothing touches the host's network. Names carry a suffix (the
tier's pid) so that concurrent tiers never collide, and every namespace is deleted by
delete() (Tier registers it) even after a failure.

TapNet: one namespace holding a bridge with the subnet's first address and a tap device on
it, for a qemu guest (qemu.Guest) that takes the next address."""
import subprocess


def _ip(*args):
    subprocess.run(["ip", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


class BridgeNet:
    def __init__(self, hub, members, prefix="10.231.0", bridge="xfbr0", veth="xfh",
                 first_member=11):
        """hub: the hub namespace's name; members: the member namespaces' names (in order);
        member k (0-based) gets PREFIX.(first_member + k), the hub PREFIX.1."""
        self.hub, self.members, self.prefix = hub, list(members), prefix
        self.bridge, self.veth, self.first_member = bridge, veth, first_member
        self.created = []

    @property
    def hub_addr(self):
        return f"{self.prefix}.1"

    def addr(self, k):
        """Member k's address (0-based)."""
        return f"{self.prefix}.{self.first_member + k}"

    def create(self):
        """Raises subprocess.CalledProcessError (with ip's stderr) on failure; whatever was
        created is still deleted by delete()."""
        _ip("netns", "add", self.hub)
        self.created.append(self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", self.bridge, "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{self.hub_addr}/24", "dev", self.bridge)
        _ip("-n", self.hub, "link", "set", self.bridge, "up")
        for k, ns in enumerate(self.members):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            host_end = f"{self.veth}{k + 1}"
            _ip("-n", self.hub, "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.hub, "link", "set", host_end, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(k)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def delete(self):
        """Deletes every namespace created (the veths and the bridge go with them). Call
        after the processes inside are dead."""
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.created = []


class TapNet:
    """Namespace `ns`: lo, bridge `bridge` at PREFIX.1/24 and tap `tap` on the bridge. The
    processes of the host side run in it (netns_exec(net.ns, ...)), a guest on the tap
    takes PREFIX.2 (guest_addr). Device names are per namespace, so fixed ones are safe."""

    def __init__(self, ns, prefix="10.232.0", bridge="xfbr0", tap="xftap0"):
        self.ns, self.prefix, self.bridge, self.tap = ns, prefix, bridge, tap
        self.created = False

    @property
    def hub_addr(self):
        return f"{self.prefix}.1"

    @property
    def guest_addr(self):
        return f"{self.prefix}.2"

    def create(self):
        """Raises subprocess.CalledProcessError (with ip's stderr) on failure; the
        namespace, once added, is still deleted by delete()."""
        _ip("netns", "add", self.ns)
        self.created = True
        _ip("-n", self.ns, "link", "set", "lo", "up")
        _ip("-n", self.ns, "link", "add", self.bridge, "type", "bridge")
        _ip("-n", self.ns, "addr", "add", f"{self.hub_addr}/24", "dev", self.bridge)
        _ip("-n", self.ns, "link", "set", self.bridge, "up")
        _ip("-n", self.ns, "tuntap", "add", "dev", self.tap, "mode", "tap")
        _ip("-n", self.ns, "link", "set", self.tap, "master", self.bridge, "up")
        return self

    def delete(self):
        """Deletes the namespace (bridge and tap go with it); after its processes died."""
        if self.created:
            subprocess.run(["ip", "netns", "del", self.ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.created = False


def netns_exec(ns, argv):
    """argv run in network namespace ns (None: this one). `ip netns exec` execs argv."""
    return (["ip", "netns", "exec", ns] if ns else []) + list(argv)


def in_mount_ns(bind_src, bind_dst, argv, netns=None):
    """argv in a private mount namespace where bind_dst is a bind mount of bind_src (and in
    network namespace netns, if given): each node sees its own file at one shared path, so
    one fleet-wide spec probes a different inode per node and hit counts are exact per
    node. The pid of the returned command line is argv's own (every step execs)."""
    inner = ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$0" "$1" && shift && exec "$@"', str(bind_src), str(bind_dst),
             *[str(a) for a in argv]]
    return netns_exec(netns, inner)
