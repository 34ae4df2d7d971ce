"""Offline shim: forwards rules_proto names to Bazel 4.2.3's native proto rules."""
proto_library = native.proto_library
proto_lang_toolchain = native.proto_lang_toolchain
