// SPDX-License-Identifier: GPL-2.0
/*
 * xmctest: the XOL slot write pattern of the series, done by user space
 * alone (no uprobes, no kernel code of the series involved), to tell a
 * kernel bug from an emulator artefact.
 *
 * One page of code is shared by NTHR threads.  Thread i is pinned to CPU
 * i % ncpus and owns its own 128-byte "slot" in the page, exactly like the
 * per-CPU slots of [uprobes]: nobody else ever writes its bytes.  Each
 * iteration it installs one of two programs of different length (A: return
 * a constant; B: a longer sequence returning another constant) into its
 * slot, skipping the store if the slot already holds those bytes (as
 * xol_install_slot() does), and calls it.  The value returned tells which
 * code ran.  Same-CPU self-modifying code followed by a call is coherent on
 * every x86 processor (Intel SDM vol. 3, 8.1.3: "store modified code, then
 * jump to it"); with --serialize a cpuid is executed between the store and
 * the call too.  The only cross-CPU interaction is that the other slots of
 * the same page are written and executed by the other CPUs at the same time.
 *
 *   xmctest [--seconds N] [--alias] [--separate] [--serialize] [--threads N]
 *
 * --alias writes through a second (read-write) mapping of the same memfd
 * page, as the kernel writes slots through its direct map; --separate gives
 * each slot its own page (the control).  Prints
 * "XMC mode=... iterations=N stale=M" and exits 1 if any call ran code other
 * than the bytes just installed.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SLOT 128
#define MAXTHR 16

/* A: mov $0xaaaa,%eax; ret */
static const unsigned char prog_a[] = { 0xb8, 0xaa, 0xaa, 0x00, 0x00, 0xc3 };
/*
 * B: a sequence shaped like the rip-relative slot program (lea/push/movabs/
 * pop/lea), then mov $0xbbbb,%eax; ret.  A stale translation of A reads
 * 0xaaaa; a stale B run over A's bytes would crash or return garbage.
 */
static const unsigned char prog_b[] = {
	0x48, 0x8d, 0x64, 0x24, 0x80,			/* lea -0x80(%rsp),%rsp */
	0x56,						/* push %rsi */
	0x48, 0xbe, 1, 2, 3, 4, 5, 6, 7, 8,		/* movabs $..,%rsi */
	0x5e,						/* pop %rsi */
	0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0,		/* lea 0x80(%rsp),%rsp */
	0xb8, 0xbb, 0xbb, 0x00, 0x00,			/* mov $0xbbbb,%eax */
	0xc3,						/* ret */
};

static unsigned char *xpage[MAXTHR], *wpage[MAXTHR];
static int seconds = 20, alias, separate, serialize, nthr = 2, ncpus;
static atomic_long iters, stale, skipped;
static atomic_int stop;

static void *run(void *arg)
{
	long i = (long)arg, n = 0;
	unsigned int seed = 1234 + i;
	unsigned char *x = xpage[separate ? i : 0] + (separate ? SLOT : (i + 1) * SLOT);
	unsigned char *w = wpage[separate ? i : 0] + (separate ? SLOT : (i + 1) * SLOT);
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(i % ncpus, &set);
	sched_setaffinity(0, sizeof(set), &set);
	while (!atomic_load(&stop)) {
		int b = rand_r(&seed) & 1;
		const unsigned char *p = b ? prog_b : prog_a;
		size_t len = b ? sizeof(prog_b) : sizeof(prog_a);
		int (*fn)(void) = (int (*)(void))x;
		int r;

		if (memcmp(w, p, len))
			memcpy(w, p, len);
		else
			atomic_fetch_add(&skipped, 1);
		if (serialize) {
			unsigned int a, bb, c, d;

			__cpuid(0, a, bb, c, d);
		}
		r = fn();
		if (r != (b ? 0xbbbb : 0xaaaa)) {
			if (atomic_fetch_add(&stale, 1) < 5)
				fprintf(stderr, "XMC stale: thread %ld installed %c, code returned 0x%x\n",
					i, b ? 'B' : 'A', r);
		}
		n++;
	}
	atomic_fetch_add(&iters, n);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th[MAXTHR];
	int i, npages;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			nthr = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--alias"))
			alias = 1;
		else if (!strcmp(argv[i], "--separate"))
			separate = 1;
		else if (!strcmp(argv[i], "--serialize"))
			serialize = 1;
		else {
			fprintf(stderr, "usage: xmctest [--seconds N] [--threads N] [--alias] [--separate] [--serialize]\n");
			return 2;
		}
	}
	if (nthr < 1 || nthr > MAXTHR)
		nthr = 2;
	ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	npages = separate ? nthr : 1;
	for (i = 0; i < npages; i++) {
		if (alias) {
			int fd = memfd_create("xmc", 0);

			if (fd < 0 || ftruncate(fd, 4096))
				return perror("memfd"), 2;
			wpage[i] = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			xpage[i] = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
		} else {
			wpage[i] = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			xpage[i] = wpage[i];
		}
		if (wpage[i] == MAP_FAILED || xpage[i] == MAP_FAILED)
			return perror("mmap"), 2;
		memset(wpage[i], 0xcc, 4096);
	}
	for (i = 0; i < nthr; i++)
		pthread_create(&th[i], NULL, run, (void *)(long)i);
	sleep(seconds);
	atomic_store(&stop, 1);
	for (i = 0; i < nthr; i++)
		pthread_join(th[i], NULL);
	printf("XMC mode=%s%s%s threads=%d cpus=%d iterations=%ld rewrites=%ld stale=%ld\n",
	       separate ? "separate-pages" : "shared-page", alias ? ",alias" : "",
	       serialize ? ",cpuid" : "", nthr, ncpus, atomic_load(&iters),
	       atomic_load(&iters) - atomic_load(&skipped), atomic_load(&stale));
	return atomic_load(&stale) ? 1 : 0;
}
