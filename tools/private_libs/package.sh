#!/usr/bin/env bash
# Packages PROGRAM with private copies of every shared library it loads (see
# tools/build_defs/private_libs.bzl): OUT is the static launcher, PRIVATE (a directory) holds
#   NAME      a copy of the dynamic loader, named after the program
#   NAME.bin  the program itself
#   lib/      a copy of every library of its ldd closure, under the name it is NEEDED by
# Usage: package.sh PROGRAM LAUNCHER OUT PRIVATE NAME
set -euo pipefail
prog=$1 launcher=$2 out=$3 priv=$4 name=$5
mkdir -p "$priv/lib"
cp "$launcher" "$out" && chmod 0755 "$out"
cp "$prog" "$priv/$name.bin" && chmod 0755 "$priv/$name.bin"
# ldd lists what the system loader maps for the program: "soname => /path (addr)" per
# library and "/lib64/ld-linux-x86-64.so.2 (addr)" for the loader.
list=$(ldd "$prog")
if grep -q 'not found' <<<"$list"; then
  echo "package.sh: $prog: a library is missing:" >&2; echo "$list" >&2; exit 1
fi
loader=
while read -r soname arrow path _; do
  if [ "$arrow" = "=>" ] && [ "${path#/}" != "$path" ]; then
    cp -L "$path" "$priv/lib/$soname"
  elif [ "${soname#/}" != "$soname" ]; then
    loader=$soname
  fi
done <<<"$list"
[ -n "$loader" ] || { echo "package.sh: $prog: no dynamic loader in ldd's output" >&2; exit 1; }
cp -L "$loader" "$priv/$name" && chmod 0755 "$priv/$name"
