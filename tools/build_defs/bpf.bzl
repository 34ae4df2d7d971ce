"""BPF programs: clang -target bpf, then `bpftool gen skeleton` into a header.

-mcpu=v3: the programs use BPF atomics (compare-and-swap, Linux 5.12+).

Usage: xol_bpf_skeleton(name = "probe_skel", src = "probe.bpf.c", hdrs = ["probe.h"])
gives a cc_library whose header "<src basename>.skel.h" embeds the object.
"""

def xol_bpf_skeleton(name, src, hdrs = [], visibility = None):
    base = src.split("/")[-1][:-len(".bpf.c")]
    obj = base + ".bpf.o"
    skel = base + ".skel.h"
    native.genrule(
        name = name + "_obj",
        srcs = [src] + hdrs,
        outs = [obj],
        cmd = ("clang -O2 -g -Wall -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 " +
               "-I/usr/include/x86_64-linux-gnu -I$$(dirname $(location %s)) " +
               "-c $(location %s) -o $@ && llvm-strip -g $@") % (src, src),
        message = "clang -target bpf " + src,
    )
    native.genrule(
        name = name + "_gen",
        srcs = [":" + obj],
        outs = [skel],
        cmd = "bpftool gen skeleton $(location :%s) name %s > $@" % (obj, base),
        message = "bpftool gen skeleton " + base,
    )
    native.cc_library(
        name = name,
        hdrs = [skel] + hdrs,
        includes = ["."],
        deps = ["//third_party:libbpf"],
        visibility = visibility,
    )
