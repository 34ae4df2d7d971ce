// The workload of the mixed fleet (tests/tiers/node.sh) and of `./xolfleet demo`: the same
// binary runs on the stock host and in the patched guest, and is driven over stdin so the
// test decides when hits happen and knows exactly how many there were.
//
//   start:                     prints "ready <pid> cpus=<n>"
//   "run N":                   calls each target below N times, prints "done N"
//   "migrate THREADS SECONDS": THREADS threads, each re-pinned to the next CPU before every
//                              round, call node_boosted, node_riprel, memfrob and l64a in a
//                              loop for SECONDS, while a migrator thread moves random workers
//                              to another CPU (threads outnumber CPUs, so some are preempted
//                              inside a slot and resume on another CPU); prints
//                              "done <calls of each function>"
//   "quit":                    exits 0 (so does end of input)
//
// Targets, with the placement each kernel gives their first instruction:
//   node_boosted   mov %rdi,%rax        stock: SINGLE_STEP   patched: BOOSTED
//   node_riprel    mov node_g(%rip),%rax stock: SINGLE_STEP  patched: BOOSTED_RIPREL
//   node_emulated  push %rbp            every kernel: EMULATED
//   libc memfrob   mov %rdi,%rax        (Debian 12's libc: as node_boosted)
//   libc a64l      xor %ecx,%ecx        (as node_boosted)
//   libc l64a      lea X(%rip),%rax     (as node_riprel)
// The libc functions are ones no other program on a host calls, so hit counts on the
// library stay exact while the probe covers every process that maps libc.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t node_boosted(uint64_t x);
uint64_t node_riprel(void);
uint64_t node_emulated(uint64_t x);

__asm__(
    ".data\n"
    ".globl node_g\n"
    "node_g: .quad 0x5a5a\n"
    ".text\n"
    ".globl node_boosted\n"
    ".type node_boosted, @function\n"
    "node_boosted:\n"
    "  mov %rdi, %rax\n"
    "  add $1, %rax\n"
    "  ret\n"
    ".size node_boosted, .-node_boosted\n"
    ".globl node_riprel\n"
    ".type node_riprel, @function\n"
    "node_riprel:\n"
    "  mov node_g(%rip), %rax\n"
    "  ret\n"
    ".size node_riprel, .-node_riprel\n"
    ".globl node_emulated\n"
    ".type node_emulated, @function\n"
    "node_emulated:\n"
    "  push %rbp\n"
    "  mov %rdi, %rax\n"
    "  pop %rbp\n"
    "  ret\n"
    ".size node_emulated, .-node_emulated\n");

// Called through volatile pointers so the compiler cannot replace or inline them.
static void* (*volatile p_memfrob)(void*, size_t) = memfrob;
static long (*volatile p_a64l)(const char*) = a64l;
static char* (*volatile p_l64a)(long) = l64a;

static int g_ncpu;
static volatile int g_stop;
static int g_bad;  // a wrong result seen by any thread

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// One call of each function; returns 0 when every result is what the unprobed code gives.
static int call_all(uint64_t i) {
  char buf[4] = {1, 2, 3, 0};
  int bad = 0;
  bad |= node_boosted(i) != i + 1;
  bad |= node_riprel() != 0x5a5a;
  bad |= node_emulated(i) != i;
  p_memfrob(buf, 3);
  bad |= buf[0] != (1 ^ 42) || buf[2] != (3 ^ 42);
  bad |= p_a64l("./") != 64;  // "." = 0, "/" = 1: 0 + 1*64
  bad |= strcmp(p_l64a(64), "./") != 0;
  return bad;
}

struct worker {
  pthread_t t;
  int id;
  volatile pid_t tid;
  uint64_t calls;
};

static void* migrate_worker(void* arg) {
  struct worker* w = arg;
  w->tid = gettid();
  int cpu = w->id % g_ncpu;
  while (!g_stop) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);  // moves the thread if it is on another CPU
    cpu = (cpu + 1) % g_ncpu;
    for (int k = 0; k < 50; ++k) {
      char buf[4] = {1, 2, 3, 0};
      if (node_boosted(w->calls) != w->calls + 1) __atomic_store_n(&g_bad, 1, __ATOMIC_RELAXED);
      if (node_riprel() != 0x5a5a) __atomic_store_n(&g_bad, 1, __ATOMIC_RELAXED);
      p_memfrob(buf, 3);
      if (buf[0] != (1 ^ 42)) __atomic_store_n(&g_bad, 1, __ATOMIC_RELAXED);
      if (strcmp(p_l64a(64), "./") != 0) __atomic_store_n(&g_bad, 1, __ATOMIC_RELAXED);
      w->calls++;
    }
  }
  return NULL;
}

struct migrator {
  struct worker* ws;
  int n;
};

// Moves a random worker to a random CPU every 200 us: a worker preempted inside a slot
// resumes on another CPU.
static void* migrator(void* arg) {
  struct migrator* m = arg;
  unsigned seed = 1;
  while (!g_stop) {
    struct worker* w = &m->ws[rand_r(&seed) % m->n];
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(rand_r(&seed) % g_ncpu, &set);
    if (w->tid) sched_setaffinity(w->tid, sizeof(set), &set);
    usleep(200);
  }
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  g_ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (g_ncpu < 1) g_ncpu = 1;
  printf("ready %d cpus=%d\n", (int)getpid(), g_ncpu);
  char line[256];
  while (fgets(line, sizeof(line), stdin) != NULL) {
    unsigned long long n = 0;
    int threads = 0;
    double secs = 0;
    if (sscanf(line, "run %llu", &n) == 1) {
      int bad = 0;
      for (uint64_t i = 0; i < n; ++i) bad |= call_all(i);
      if (bad) {
        printf("error wrong result\n");
      } else {
        printf("done %llu\n", n);
      }
    } else if (sscanf(line, "migrate %d %lf", &threads, &secs) == 2 && threads > 0 &&
               threads <= 1024) {
      struct worker* ws = calloc((size_t)threads, sizeof(*ws));
      g_stop = 0;
      for (int i = 0; i < threads; ++i) {
        ws[i].id = i;
        pthread_create(&ws[i].t, NULL, migrate_worker, &ws[i]);
      }
      struct migrator m = {ws, threads};
      pthread_t mt;
      pthread_create(&mt, NULL, migrator, &m);
      double end = now_s() + secs;
      while (now_s() < end) usleep(20000);
      g_stop = 1;
      pthread_join(mt, NULL);
      uint64_t total = 0;
      for (int i = 0; i < threads; ++i) {
        pthread_join(ws[i].t, NULL);
        total += ws[i].calls;
      }
      free(ws);
      if (__atomic_load_n(&g_bad, __ATOMIC_RELAXED)) {
        printf("error wrong result\n");
      } else {
        printf("done %llu\n", (unsigned long long)total);
      }
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    } else {
      printf("error unknown command\n");
    }
  }
  return 0;
}
