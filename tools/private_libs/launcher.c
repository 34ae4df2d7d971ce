// The launcher of a program packaged with private copies of its shared libraries (see
// tools/build_defs/private_libs.bzl for why).
//
// This file is statically linked (glibc's libc.a), so it maps no shared library at all. It
// finds its own path through /proc/self/exe, say DIR/NAME, and replaces itself with
//
//   DIR/NAME.private/NAME --library-path DIR/NAME.private/lib --argv0 ARGV0
//       DIR/NAME.private/NAME.bin ARGS...
//
// where DIR/NAME.private/NAME is a copy of the dynamic loader (ld-linux-x86-64.so.2) under
// the program's name (so comm, ps and pkill see NAME) and NAME.bin the program. The loader
// maps every library from lib/: copies of the system's files, other inodes, so a uprobe on
// the system's libc, libstdc++ or libgrpc never fires in the program. Only the path names
// change, not the code: the program runs the very bytes it would run on the system files.
#define _GNU_SOURCE  // readlink, PATH_MAX

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char** argv) {
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    fprintf(stderr, "private-libs launcher: readlink /proc/self/exe: %s\n", strerror(errno));
    return 127;
  }
  self[n] = '\0';
  char loader[PATH_MAX], libdir[PATH_MAX], program[PATH_MAX];
  const char* name = strrchr(self, '/') + 1;  // the kernel's path is absolute
  if (snprintf(loader, sizeof(loader), "%s.private/%s", self, name) >= (int)sizeof(loader) ||
      snprintf(libdir, sizeof(libdir), "%s.private/lib", self) >= (int)sizeof(libdir) ||
      snprintf(program, sizeof(program), "%s.private/%s.bin", self, name) >= (int)sizeof(program)) {
    fprintf(stderr, "private-libs launcher: path too long: %s\n", self);
    return 127;
  }
  char** args = calloc((size_t)argc + 7, sizeof(char*));
  if (args == NULL) return 127;
  int i = 0;
  args[i++] = argv[0];
  args[i++] = "--library-path";
  args[i++] = libdir;
  args[i++] = "--argv0";
  args[i++] = argv[0];
  args[i++] = program;
  for (int a = 1; a < argc; ++a) args[i++] = argv[a];
  args[i] = NULL;
  execv(loader, args);
  fprintf(stderr,
          "private-libs launcher: cannot run %s: %s (the program and its libraries live in "
          "%s.private next to this file; copy that directory with it)\n",
          loader, strerror(errno), self);
  return 127;
}
