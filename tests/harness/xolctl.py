"""xolctl with --json, parsed. Proto JSON (preserve_proto_field_names): 64-bit integers are
strings, enums their names, fields at their default value are left out: use Out.data with
.get() and int()."""
import json

from .netns import netns_exec
from .procs import run


class Out:
    """One xolctl run: exit status, stdout, stderr and stdout parsed as JSON (None when it
    is not JSON: an error, or a command run without json=True)."""

    def __init__(self, res, json_wanted):
        self.rc, self.out, self.err = res.rc, res.out, res.err
        self.data = None
        if json_wanted and res.out.strip():
            try:
                self.data = json.loads(res.out)
            except ValueError:
                self.data = None

    @property
    def ok(self):
        return self.rc == 0

    @property
    def text(self):
        return self.out + self.err

    def __repr__(self):
        return f"rc={self.rc} {' '.join((self.out + self.err).split())[:600]!r}"


class Xolctl:
    """xolctl as one client: its binary (a path, or an argv that runs it, e.g.
    ["podman", "exec", NAME, "/usr/local/bin/xolctl"]), the network namespace it runs in
    (None: this one) and its connection options, e.g. ["--controller=H:P", "--tls-ca=..", ...]."""

    def __init__(self, binary, netns=None, conn=(), timeout=30):
        argv = binary if isinstance(binary, (list, tuple)) else [binary]
        self.prefix = [str(b) for b in argv]
        self.binary, self.netns, self.conn, self.timeout = self.prefix[0], netns, list(conn), timeout

    def argv(self, args, json_out=True, command_first=True):
        """xolctl COMMAND CONN... ARGS... [--json]; command_first=False puts CONN first
        (agent commands: `xolctl --agent=... list`)."""
        args = [str(a) for a in args]
        a = ([args[0]] + self.conn + args[1:]) if command_first else (self.conn + args)
        return netns_exec(self.netns, self.prefix + a + (["--json"] if json_out else []))

    def __call__(self, *args, json_out=True, timeout=None, command_first=True):
        t = self.timeout if timeout is None else timeout
        # The process gets --timeout=T for its RPCs; it is killed only well after that.
        return Out(run(self.argv(args, json_out, command_first), timeout=t + 30), json_out)


def parse_json_stream(text):
    """The JSON objects of a stream of concatenated objects (`xolctl ... watch --json`); a
    trailing object still being written is left out."""
    dec, pos, objs = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return objs
        try:
            obj, pos = dec.raw_decode(text, pos)
        except ValueError:
            return objs
        objs.append(obj)
