// A process with known probe sites, driven over stdin so tests decide when hits
// happen.
//
//   start:          prints "ready <pid>"
//   "run N BASE":   calls xol_target_add(BASE + i, 7) and xol_target_other(i)
//   for i < N,
//                   prints "done N"
//   "spin SECONDS": calls xol_target_spin(i) as fast as it can for SECONDS,
//   prints
//                   "done <calls>"
//   "fast SECONDS": the same with xol_target_fast (its first instruction is
//   emulated)
//   "libc N":       calls libc's strverscmp N times (for probes on the system's libc),
//                   prints "done N"
//   "banner":       prints "banner <xol_banner>" (read-only data: a probe
//                   there would show as a corrupted string)
//   "exit-when-opened": prints "armed", then exits 0 when anyone opens this program's
//                   file, before that open() returns (fanotify permission event; root):
//                   a process that exits in the middle of an Attach naming it, every time
//   "quit":         exits 0 (so does end of input)
//
// Built -O1 with noinline functions and symbols kept: every call is a real call
// at a known address, and the first argument is in %rdi at the function entry.
// Two hand-written functions give sites with known instructions:
// xol_refused_site (an `in` instruction, which no kernel probes),
// xol_syscall_site (a `syscall`, accepted by the kernel but a hazard) and
// xol_mid_insn (a 10-byte movabs, so offsets 1..9 are inside it).
#define _GNU_SOURCE  // strverscmp

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/fanotify.h>
#include <time.h>
#include <unistd.h>

volatile uint64_t xol_sink;

// In .rodata: no probe may land here (tests read it back through "banner").
const char xol_banner[] = "(GNU coreutils)";

__attribute__((noinline)) uint64_t xol_target_add(uint64_t a, uint64_t b) {
  xol_sink += a + b;
  return a + b;
}

__attribute__((noinline)) void xol_target_other(uint64_t x) { xol_sink ^= x; }

__attribute__((noinline)) void xol_target_spin(uint64_t x) { xol_sink += x; }

// Never called: only probed (and refused) by tests.
__asm__(
    ".text\n"
    ".globl xol_refused_site\n"
    ".type xol_refused_site, @function\n"
    "xol_refused_site:\n"
    "  nop\n"          // +0: 90
    "  in %dx, %al\n"  // +1: ec (port I/O: not in the kernel's good_insns_64)
    "  ret\n"
    ".size xol_refused_site, .-xol_refused_site\n"
    ".globl xol_syscall_site\n"
    ".type xol_syscall_site, @function\n"
    "xol_syscall_site:\n"
    "  syscall\n"  // accepted by the kernel, but the probed task dies: a hazard
    "  ret\n"
    ".size xol_syscall_site, .-xol_syscall_site\n"
    ".globl xol_mid_insn\n"
    ".type xol_mid_insn, @function\n"
    "xol_mid_insn:\n"
    "  movabs $0x1122334455667788, %rax\n"  // +0..+9
    "  ret\n"                               // +10
    ".size xol_mid_insn, .-xol_mid_insn\n"
    // Starts with push: emulated by every kernel (one trap per hit), for
    // throughput.
    ".globl xol_target_fast\n"
    ".type xol_target_fast, @function\n"
    "xol_target_fast:\n"
    "  push %rbp\n"
    "  mov %rdi, %rax\n"
    "  pop %rbp\n"
    "  ret\n"
    ".size xol_target_fast, .-xol_target_fast\n"
    // Code outside every function symbol (a bare label, no type or size):
    // probeable only as a confirmed raw offset. Never called.
    ".globl xol_raw_code\n"
    "xol_raw_code:\n"
    "  push %rbp\n"
    "  pop %rbp\n"
    "  ret\n");

uint64_t xol_target_fast(uint64_t x);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", (int)getpid());
  char line[256];
  while (fgets(line, sizeof(line), stdin) != NULL) {
    unsigned long long n = 0, base = 0;
    double secs = 0;
    if (sscanf(line, "run %llu %llu", &n, &base) >= 1) {
      for (uint64_t i = 0; i < n; ++i) {
        xol_target_add(base + i, 7);
        xol_target_other(i);
      }
      printf("done %llu\n", n);
    } else if (sscanf(line, "spin %lf", &secs) == 1) {
      uint64_t calls = 0;
      double end = now_s() + secs;
      while (now_s() < end) {
        for (int k = 0; k < 1000; ++k) xol_target_spin(calls++);
      }
      printf("done %llu\n", (unsigned long long)calls);
    } else if (sscanf(line, "fast %lf", &secs) == 1) {
      uint64_t calls = 0;
      double end = now_s() + secs;
      while (now_s() < end) {
        for (int k = 0; k < 1000; ++k) xol_target_fast(calls++);
      }
      printf("done %llu\n", (unsigned long long)calls);
    } else if (sscanf(line, "libc %llu", &n) == 1) {
      // Through a volatile pointer: a real call into libc's strverscmp every time.
      int (*volatile fn)(const char*, const char*) = strverscmp;
      for (uint64_t i = 0; i < n; ++i) xol_sink += (uint64_t)fn("a1", "a2");
      printf("done %llu\n", n);
    } else if (strncmp(line, "banner", 6) == 0) {
      printf("banner %s\n", xol_banner);
    } else if (strncmp(line, "exit-when-opened", 16) == 0) {
      // A permission event holds the opener's open() until this process answers, and it
      // never answers: it exits, and the kernel lets the open proceed once this process's
      // descriptors are closed, which is after its memory is released. So the opener's
      // open() returns only once this process no longer maps anything (root only).
      int ffd = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
      if (ffd < 0 || fanotify_mark(ffd, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, "/proc/self/exe") < 0) {
        printf("error fanotify: %s\n", strerror(errno));
        continue;
      }
      printf("armed\n");
      char ev[4096];
      if (read(ffd, ev, sizeof(ev)) > 0) _exit(0);
      printf("error fanotify read\n");
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    } else {
      printf("error unknown command\n");
    }
  }
  return 0;
}
