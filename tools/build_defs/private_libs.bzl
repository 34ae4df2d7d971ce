"""Programs that run on private copies of their shared libraries.

Why: a uprobe belongs to a file (its inode and an offset), and the kernel writes the
breakpoint into every process that maps that file. The agent and xolctl run on the very
libraries they probe (libc, libstdc++, libgrpc, ...), so with 10,000 probes on those
libraries every probed function they call traps: an attach of 10,000 probes took 28 s of
client-seen time of which the agent's own work was 1 s (bench/agent/results.txt, issue 12).
A copy of a library is another inode: no probe on the system's file ever fires in a process
that maps only the copy, and the code run is byte for byte the same.

Why not static linking: Debian 12 ships libZydis and libprometheus-cpp as shared objects
only, and those need libc.so.6 and libstdc++.so.6, so the agent cannot be fully static from
Debian packages; a half-static program would still map the system's libc, libstdc++ and the
loader (and a static libstdc++ beside prometheus-cpp's shared one breaks the one-definition
rule). Copies cover every library, the loader included, with the exact Debian builds.

How: private_libs_binary(name = "x", binary = ":x.bin_target") gives
  x              a static launcher (tools/private_libs/launcher.c): it maps nothing shared
  x.private/x    a copy of the dynamic loader under the program's name (comm, ps, pkill)
  x.private/x.bin  the program
  x.private/lib/   a copy of every library of the program's ldd closure
The launcher runs `x.private/x --library-path x.private/lib --argv0 ARGV0 x.private/x.bin`.
Run directly, x.private/x.bin uses the system's loader and libraries (the benchmark's
baseline). Copy x and x.private together.
"""

def _private_libs_binary_impl(ctx):
    name = ctx.label.name
    out = ctx.actions.declare_file(name)
    priv = ctx.actions.declare_directory(name + ".private")
    ctx.actions.run(
        executable = ctx.executable._package,
        arguments = [
            ctx.executable.binary.path,
            ctx.executable._launcher.path,
            out.path,
            priv.path,
            name,
        ],
        inputs = [ctx.executable.binary, ctx.executable._launcher],
        outputs = [out, priv],
        use_default_shell_env = True,
        mnemonic = "PrivateLibs",
        progress_message = "Copying the shared libraries of %s" % name,
    )
    runfiles = ctx.runfiles(files = [out, priv])
    runfiles = runfiles.merge(ctx.attr.binary[DefaultInfo].default_runfiles)
    return [DefaultInfo(
        executable = out,
        files = depset([out, priv]),
        runfiles = runfiles,
    )]

private_libs_binary = rule(
    implementation = _private_libs_binary_impl,
    executable = True,
    attrs = {
        "binary": attr.label(executable = True, cfg = "target", mandatory = True),
        "_launcher": attr.label(
            default = "//tools/private_libs:launcher",
            executable = True,
            cfg = "target",
        ),
        "_package": attr.label(
            default = "//tools/private_libs:package.sh",
            executable = True,
            allow_single_file = True,
            cfg = "exec",
        ),
    },
)
