"""C++ protobuf + gRPC code generation with Debian's protoc and grpc_cpp_plugin.

Bazel 4.2.3 offline has no usable rules_proto/grpc rules; a genrule runs the system
compilers. Import paths are relative to the package directory, and all .proto files that
import each other go in one target.
"""

def xol_cc_proto_library(name, srcs, grpc_srcs = [], deps = [], visibility = None):
    """Generates and compiles C++ messages for `srcs` and gRPC stubs for `grpc_srcs`."""
    pkg = native.package_name()
    outs = []
    for s in srcs:
        base = s[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if s in grpc_srcs:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    out_root = "$(GENDIR)/" + pkg
    cmd = "protoc --proto_path=%s --cpp_out=%s $(SRCS)" % (pkg, out_root)
    if grpc_srcs:
        cmd += (" && protoc --proto_path=%s --grpc_out=%s " +
                "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin %s") % (
            pkg,
            out_root,
            " ".join(["%s/%s" % (pkg, s) for s in grpc_srcs]),
        )
    native.genrule(
        name = name + "_gen",
        srcs = srcs,
        outs = outs,
        cmd = cmd,
        message = "protoc " + name,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        deps = ["//third_party:grpc", "//third_party:protobuf"] + deps,
        visibility = visibility,
    )
