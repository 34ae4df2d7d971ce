// SPDX-License-Identifier: GPL-2.0
/*
 * xoltest32: in-guest tests of the uprobes series for 32-bit tasks (IA32
 * emulation), run on the distribution-like kernel (kernel/config.distro) by
 * kernel/tests/init.  Built with gcc -m32 -static.
 *
 * 32-bit tasks are never boosted (the slot program's jump back is 64-bit
 * only): they single-step or are emulated, on the per-CPU slots of the
 * [uprobes] area, which x86 places below 4 GiB for them.  The area holds one
 * 128-byte slot per possible CPU plus the uretprobe trampoline: with 64
 * possible CPUs it is three pages, all of which must lie below the 32-bit
 * task size, or a task on a high CPU executes a slot it cannot reach.
 *
 * Every check prints exactly one line: "RESULT PASS <name>" or
 * "RESULT FAIL <name> <reason>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <ucontext.h>
#include <unistd.h>

#if !defined(__i386__)
#error "xoltest32 is a 32-bit test: build with gcc -m32"
#endif

/*
 * Probe sites.  s_mov and s_xor are single-stepped (never boosted in a 32-bit
 * task), s_nop is emulated; t_nop also gets a uretprobe (slot 0 trampoline).
 */
extern char s_mov[], s_nop[], s_xor[];
long t_mov(long), t_nop(long), t_xor(long);
asm("	.text\n"
    "	.globl t_mov, s_mov, t_nop, s_nop, t_xor, s_xor\n"
    "	.type t_mov, @function\n"
    "t_mov:\n"
    "s_mov:	movl 4(%esp), %eax\n"
    "	addl $7, %eax\n"
    "	ret\n"
    "	.type t_nop, @function\n"
    "t_nop:\n"
    "s_nop:	nop\n"
    "	movl 4(%esp), %eax\n"
    "	imull $3, %eax, %eax\n"
    "	ret\n"
    "	.type t_xor, @function\n"
    "t_xor:	movl 4(%esp), %eax\n"
    "s_xor:	xorl $0x5a5a, %eax\n"
    "	ret\n");

static long want_mov(long i) { return i + 7; }
static long want_nop(long i) { return i * 3; }
static long want_xor(long i) { return i ^ 0x5a5a; }

#define TRACEFS "/sys/kernel/tracing"
#define STATS "/sys/kernel/debug/uprobes/stats"
#define PLACEMENTS "/sys/kernel/debug/uprobes/placements"

static char exe[256];
static int failures;

static void pass(const char *name)
{
	printf("RESULT PASS %s\n", name);
}

static void fail(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("RESULT FAIL %s ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	failures++;
}

static int write_file(const char *path, const char *s, int flags)
{
	int fd = open(path, O_WRONLY | flags);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static char *read_file(const char *path)
{
	static char buf[1 << 18];
	int fd = open(path, O_RDONLY);
	ssize_t n, tot = 0;

	buf[0] = 0;
	if (fd < 0)
		return buf;
	while ((n = read(fd, buf + tot, sizeof(buf) - 1 - tot)) > 0)
		tot += n;
	buf[tot] = 0;
	close(fd);
	return buf;
}

/* File offset of an address of this binary, from /proc/self/maps. */
static unsigned long file_offset(void *addr)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long lo, hi, off, a = (unsigned long)addr, ret = 0;
	char line[512], path[256];

	while (f && fgets(line, sizeof(line), f)) {
		path[0] = 0;
		if (sscanf(line, "%lx-%lx %*s %lx %*s %*s %255s", &lo, &hi, &off, path) < 3)
			continue;
		if (a >= lo && a < hi && !strcmp(path, exe)) {
			ret = a - lo + off;
			break;
		}
	}
	if (f)
		fclose(f);
	return ret;
}

/* [uprobes] as this task sees it; 64-bit fields: the end may be 2^32 or more. */
static int xol_range(unsigned long long *lo, unsigned long long *hi)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int found = 0;

	*lo = *hi = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, "[uprobes]")) {
			found = sscanf(line, "%llx-%llx", lo, hi) == 2;
			break;
		}
	}
	if (f)
		fclose(f);
	return found;
}

static int probe_add(char kind, const char *ev, void *addr)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "%c:x32/%s %s:0x%lx\n", kind, ev, exe, file_offset(addr));
	return write_file(TRACEFS "/uprobe_events", cmd, O_APPEND);
}

enum { ST_EMU, ST_BOOST, ST_RIPREL, ST_SSTEP, ST_NR };
static const char *stat_names[ST_NR] = {
	"hits_emulated", "hits_boosted", "hits_boosted_riprel", "hits_single_step",
};

static int stats_read(unsigned long st[ST_NR])
{
	char *buf = read_file(STATS), *line, *save;
	char name[64];
	unsigned long v;
	int found = 0;

	memset(st, 0, sizeof(unsigned long) * ST_NR);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (sscanf(line, "%63s %lu", name, &v) != 2)
			continue;
		for (int i = 0; i < ST_NR; i++)
			if (!strcmp(name, stat_names[i])) {
				st[i] = v;
				found++;
			}
	}
	return found == ST_NR ? 0 : -1;
}

static long profile_hits(const char *ev)
{
	char *buf = read_file(TRACEFS "/uprobe_profile"), *line, *save;
	char file[256], name[128];
	unsigned long n;

	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (sscanf(line, "%255s %127s %lu", file, name, &n) == 3 && !strcmp(name, ev))
			return n;
	}
	return -1;
}

/*
 * The placement the kernel reports for a site
 * ("<major>:<minor> <inode> 0x<offset> <placement>").
 */
static const char *kernel_placement(void *addr)
{
	static char res[64];
	char *all = read_file(PLACEMENTS);
	struct stat stbuf;
	char key[128];
	const char *p;

	if (stat(exe, &stbuf))
		return "no-exe";
	snprintf(key, sizeof(key), "%u:%u %lu 0x%lx ", major(stbuf.st_dev), minor(stbuf.st_dev),
		 (unsigned long)stbuf.st_ino, file_offset(addr));
	for (p = all; (p = strstr(p, key)); p++) {
		if (p != all && p[-1] != '\n')
			continue;
		sscanf(p + strlen(key), "%63s", res);
		return res;
	}
	return "unlisted";
}

static int possible_cpus(void)
{
	char *s = read_file("/sys/devices/system/cpu/possible");
	int lo, hi;

	if (sscanf(s, "%d-%d", &lo, &hi) == 2)
		return hi + 1;
	return sscanf(s, "%d", &lo) == 1 ? lo + 1 : -1;
}

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* ---- calls, checked against the unprobed results ------------------------- */
static atomic_long bad_results;
static char bad_why[128];

static void check_calls(long i)
{
	long a = t_mov(i), b = t_nop(i), c = t_xor(i);

	if (a != want_mov(i) || b != want_nop(i) || c != want_xor(i)) {
		if (!atomic_fetch_add(&bad_results, 1))
			snprintf(bad_why, sizeof(bad_why), "i=%ld got %ld %ld %ld", i, a, b, c);
	}
}

/* SIGALRM lands inside single-steps too: no frame may show a slot address. */
static unsigned long long xlo, xhi;
static atomic_long nsig, sig_in_slot;

static void alarm_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	unsigned long ip = uc->uc_mcontext.gregs[REG_EIP];

	atomic_fetch_add(&nsig, 1);
	/* The uretprobe trampoline (slot 0) is a return address: not a slot */
	if (ip >= xlo + 128 && ip < xhi)
		atomic_fetch_add(&sig_in_slot, 1);
	check_calls(nsig & 1023);
}

#define NTHREADS 16
#define ITERS 150
static pthread_barrier_t barrier;

static void *worker(void *arg)
{
	long id = (long)arg;

	pthread_barrier_wait(&barrier);
	for (long i = 0; i < ITERS; i++) {
		pin((id + i) & 1);	/* alternate CPUs: the slot program moves */
		check_calls(id * 1000 + i);
	}
	return NULL;
}

int main(void)
{
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	unsigned long b[ST_NR], a[ST_NR];
	const long N = 200;
	int ncpu;

	if (n <= 0)
		return 2;
	exe[n] = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);

	write_file(TRACEFS "/events/x32/enable", "0", 0);
	write_file(TRACEFS "/uprobe_events", "", O_TRUNC);
	if (probe_add('p', "s_mov", s_mov) || probe_add('p', "s_nop", s_nop) ||
	    probe_add('p', "s_xor", s_xor) || probe_add('r', "r_nop", t_nop) ||
	    write_file(TRACEFS "/events/x32/enable", "1", 0)) {
		fail("ia32_probes_registered", "cannot register or enable the probes: %s",
		     strerror(errno));
		return 1;
	}
	pass("ia32_probes_registered");

	/* Single thread: exact hits by placement, results, the uretprobe. */
	pin(0);
	stats_read(b);
	for (long i = 0; i < N; i++)
		check_calls(i);
	stats_read(a);
	if (bad_results)
		fail("ia32_hits", "wrong result: %s", bad_why);
	else if (a[ST_SSTEP] - b[ST_SSTEP] != 2 * N || a[ST_EMU] - b[ST_EMU] != N ||
		 a[ST_BOOST] != b[ST_BOOST] || a[ST_RIPREL] != b[ST_RIPREL])
		fail("ia32_hits", "single_step +%lu (want %ld) emulated +%lu (want %ld) boosted +%lu riprel +%lu (want 0)",
		     a[ST_SSTEP] - b[ST_SSTEP], 2 * N, a[ST_EMU] - b[ST_EMU], N,
		     a[ST_BOOST] - b[ST_BOOST], a[ST_RIPREL] - b[ST_RIPREL]);
	else if (profile_hits("r_nop") != N || profile_hits("s_mov") != N)
		fail("ia32_hits", "uprobe_profile s_mov %ld r_nop %ld, want %ld",
		     profile_hits("s_mov"), profile_hits("r_nop"), N);
	else
		pass("ia32_hits");

	/* Placements: never boosted in a 32-bit task. */
	{
		char m[64], nn[64], x[64];

		snprintf(m, sizeof(m), "%s", kernel_placement(s_mov));
		snprintf(nn, sizeof(nn), "%s", kernel_placement(s_nop));
		snprintf(x, sizeof(x), "%s", kernel_placement(s_xor));
		if (strcmp(m, "SINGLE_STEP") || strcmp(nn, "EMULATED") || strcmp(x, "SINGLE_STEP"))
			fail("ia32_placement", "mov %s nop %s xor %s, want SINGLE_STEP EMULATED SINGLE_STEP",
			     m, nn, x);
		else
			pass("ia32_placement");
	}

	/* The XOL area: every slot below the 32-bit task size (0xffffe000). */
	ncpu = possible_cpus();
	if (!xol_range(&xlo, &xhi)) {
		fail("ia32_xol_area", "no [uprobes] mapping after probe hits");
	} else {
		unsigned long long want = ((ncpu + 1) * 128ULL + 4095) / 4096 * 4096;

		if (xhi > 0xffffe000ULL || xhi - xlo != want)
			fail("ia32_xol_area", "[uprobes] %#llx-%#llx: %llu bytes (want %llu for %d possible CPUs), must end at or below 0xffffe000",
			     xlo, xhi, xhi - xlo, want, ncpu);
		else
			pass("ia32_xol_area");
		printf("NOTE ia32: [uprobes] %#llx-%#llx, %d possible CPUs\n", xlo, xhi, ncpu);
	}

	/* Threads moving between the CPUs, a timer signal landing in slots. */
	{
		struct sigaction sa = { .sa_sigaction = alarm_handler, .sa_flags = SA_SIGINFO | SA_RESTART };
		struct itimerval it = { { 0, 500 }, { 0, 500 } };
		pthread_t th[NTHREADS];
		cpu_set_t all;

		CPU_ZERO(&all);
		CPU_SET(0, &all);
		CPU_SET(1, &all);
		sched_setaffinity(0, sizeof(all), &all);
		sigaction(SIGALRM, &sa, NULL);
		pthread_barrier_init(&barrier, NULL, NTHREADS);
		stats_read(b);
		for (long i = 0; i < NTHREADS; i++)
			pthread_create(&th[i], NULL, worker, (void *)i);
		setitimer(ITIMER_REAL, &it, NULL);
		for (int i = 0; i < NTHREADS; i++)
			pthread_join(th[i], NULL);
		memset(&it, 0, sizeof(it));
		setitimer(ITIMER_REAL, &it, NULL);
		signal(SIGALRM, SIG_IGN);
		stats_read(a);
		long calls = NTHREADS * ITERS + atomic_load(&nsig);

		if (bad_results)
			fail("ia32_threads", "wrong result: %s", bad_why);
		else if (sig_in_slot)
			fail("ia32_threads", "%ld of %ld signal frames show an IP inside [uprobes]",
			     (long)sig_in_slot, (long)nsig);
		else if (a[ST_SSTEP] - b[ST_SSTEP] != 2 * (unsigned long)calls ||
			 a[ST_EMU] - b[ST_EMU] != (unsigned long)calls)
			fail("ia32_threads", "single_step +%lu emulated +%lu, want %ld and %ld",
			     a[ST_SSTEP] - b[ST_SSTEP], a[ST_EMU] - b[ST_EMU], 2 * calls, calls);
		else
			pass("ia32_threads");
		printf("NOTE ia32: %d threads x %d iterations, %ld SIGALRM\n", NTHREADS, ITERS,
		       (long)nsig);
	}

	write_file(TRACEFS "/events/x32/enable", "0", 0);
	write_file(TRACEFS "/uprobe_events", "", O_TRUNC);
	return failures ? 1 : 0;
}
