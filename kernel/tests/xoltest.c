// SPDX-License-Identifier: GPL-2.0
/*
 * xoltest: in-guest tests for the xolfleet uprobes series (per-CPU XOL slots,
 * boosted probes, switch-time slot fix-up).  Built with gcc -static and run
 * from the initramfs by kernel/tests/init.
 *
 * The probe sites live in sites.S (one per instruction class).  The program
 * places uprobes on its own binary through tracefs (uprobe_events), computes
 * the file offset of each site from /proc/self/maps, and reads the kernel's
 * view from /sys/kernel/debug/uprobes/{stats,placements} and uprobe_profile.
 *
 * Every check prints exactly one line: "RESULT PASS <name>" or
 * "RESULT FAIL <name> <reason>".
 *
 *   xoltest all            every test case, boost on and off
 *   xoltest bench          per-hit costs and 64-thread throughput
 *   xoltest soak H M S [US] long run to H boosted+riprel hits, M slot migrations
 *   xoltest child <n>      exec target of the exec storm
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <elf.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/user.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

/* ---- sites.S ------------------------------------------------------------ */
extern long f_endbr(long), f_mov(long), f_load(long *), f_alu(long, long);
extern void f_store(long *, long);
extern long f_cmp(long, long), f_test(long), f_lea(long, long);
extern void f_sse(int *, const int *);
extern long f_pushm(long *), f_popm(long *), f_fault(long *);
extern unsigned long f_div(unsigned long, unsigned long);
extern long f_rload(void), f_rstore(long), f_rlea(void), f_rcmp(long), f_rrsi(long);
extern void f_rrmw(long), f_rsse(int *);
extern long f_popf(long), f_rpush(void), f_rsp(void), f_x87(long);
extern long f_rspld(long), f_cvtrsp(long);
extern long call_on_stack(long (*fn)(long), long arg, void *top);
extern void f_rep(void *, const void *, long);
extern long f_nop(long), f_pushbp(long), f_jmp(long), f_jcc(long), f_call(long);
extern long g_ro, g_sum, g_tmp;
/* returns and indirect branches (EMULATED by the series), rep string insns */
extern long f_ret(long), f_retimm(long), f_repret(long), f_jmpreg(long, long);
extern long f_jmpmem(long, void *), f_jmprip(long), f_jmpsib(long, long);
extern long f_callreg(long, long), f_callr11(long), f_callmem(long, void *);
extern long f_callrip(long), f_callsp(long), f_callfs(long, long);
extern long f_jmpbad(long, unsigned long), f_callbad(long, unsigned long);
extern long f_retbad(unsigned long), f_callbadsp(unsigned long, void *);
extern void f_repstos(void *, int, long);
extern long f_repcmps(const void *, const void *, long);
extern char t_jm[], t_callee[];
/* VEX instructions whose opcode byte 6.1 took for a legacy one */
extern long f_vpsubsb(long, long), f_vpcmpeqb(long, long), f_vzeroupper(long);
extern long f_vcmpps(long, long);
extern void f_vmovdqa(void *, const void *);

#define SITES(X)							\
	X(s_endbr, "BOOSTED") X(s_mov, "BOOSTED") X(s_load, "BOOSTED")	\
	X(s_store, "BOOSTED") X(s_alu, "BOOSTED") X(s_cmp, "BOOSTED")	\
	X(s_test, "BOOSTED") X(s_lea, "BOOSTED") X(s_sse_load, "BOOSTED") \
	X(s_sse_add, "BOOSTED") X(s_pushm, "BOOSTED") X(s_popm, "BOOSTED") \
	X(s_div, "BOOSTED") X(s_fault, "BOOSTED")			\
	X(s_rload, "BOOSTED_RIPREL") X(s_rstore, "BOOSTED_RIPREL")	\
	X(s_rrmw, "BOOSTED_RIPREL") X(s_rlea, "BOOSTED_RIPREL")		\
	X(s_rsse, "BOOSTED_RIPREL") X(s_rcmp, "BOOSTED_RIPREL")		\
	X(s_rrsi, "BOOSTED_RIPREL")					\
	X(s_popf, "SINGLE_STEP") X(s_rep, "BOOSTED")			\
	X(s_rpush, "BOOSTED_RIPREL") X(s_rsp, "BOOSTED_RIPREL")		\
	X(s_rspld, "BOOSTED_RIPREL") X(s_cvtrsp, "BOOSTED_RIPREL")	\
	X(s_x87, "SINGLE_STEP")						\
	X(s_nop, "EMULATED") X(s_pushbp, "EMULATED") X(s_jmp, "EMULATED") \
	X(s_jcc, "EMULATED") X(s_call, "EMULATED")			\
	X(s_vex, "BOOSTED") X(s_vexrip, "BOOSTED_RIPREL")		\
	X(s_addr32, "SINGLE_STEP") X(s_loop, "SINGLE_STEP")		\
	X(s_int3, "REFUSED") X(s_ud2, "SINGLE_STEP")			\
	X(s_cli, "REFUSED") X(s_fwait, "SINGLE_STEP")		\
	X(s_repstos, "BOOSTED") X(s_stos, "BOOSTED")			\
	X(s_ripr_bx, "BOOSTED_RIPREL") X(s_vex6, "BOOSTED_RIPREL")	\
	X(s_andrip, "BOOSTED_RIPREL") X(s_r12rip, "BOOSTED_RIPREL")	\
	X(s_lock, "REFUSED") X(s_xmm4, "BOOSTED_RIPREL")		\
	X(s_movsx, "BOOSTED_RIPREL") X(s_popmrip, "BOOSTED_RIPREL")	\
	X(s_ret, "EMULATED*") X(s_retimm, "EMULATED*")			\
	X(s_repret, "EMULATED*") X(s_jmpreg, "EMULATED*")		\
	X(s_jmpmem, "EMULATED*") X(s_jmprip, "EMULATED*")		\
	X(s_jmpsib, "EMULATED*") X(s_callreg, "EMULATED*")		\
	X(s_callr11, "EMULATED*") X(s_callmem, "EMULATED*")		\
	X(s_callrip, "EMULATED*") X(s_callsp, "EMULATED*")		\
	X(s_callfs, "EMULATED*") X(s_jmpbad, "EMULATED*")		\
	X(s_callbad, "EMULATED*") X(s_retbad, "EMULATED*")		\
	X(s_callbadsp, "EMULATED*")					\
	X(s_repstosx, "BOOSTED") X(s_repcmps, "BOOSTED")		\
	X(s_vpsubsb, "BOOSTED") X(s_vpcmpeqb, "BOOSTED")		\
	X(s_vmovdqa, "BOOSTED") X(s_vzeroupper, "BOOSTED")		\
	X(s_vcmpps, "BOOSTED")

#define X(n, p) extern char n[];
SITES(X)
#undef X

struct site {
	const char *name;
	void *addr;
	const char *on;		/* profile xolfleet-6.1 */
	const char *off;	/* profile xolfleet-6.1-noboost (boosting off) */
	const char *desc;
	int enabled;
};

/*
 * hand-written sites of sites.S: boosting off turns BOOSTED* into SINGLE_STEP,
 * and "EMULATED*" (emulated by the series, not by 6.1) into SINGLE_STEP too
 */
#define X(n, p) { #n, n, p, NULL, #n, 0 },
static struct site hand_sites[] = { SITES(X) };
#undef X

/*
 * The shared corpus (tests/corpus/placement_corpus.tsv), generated into
 * corpus.S/corpus.h by gen-corpus.sh: placement-only, never executed.
 */
struct corpus_row {
	const char *name;
	void *addr;
	const char *desc, *linux61, *linux618, *xol61, *xol61off;
};
#ifdef HAVE_CORPUS
#include "corpus.h"
#else
static const struct corpus_row corpus[1];
#endif

static struct site *sites;
static int NSITES;

static void sites_init(void)
{
	int nh = sizeof(hand_sites) / sizeof(hand_sites[0]);
	int nc = sizeof(corpus) / sizeof(corpus[0]);

	sites = calloc(nh + nc, sizeof(*sites));
	for (int i = 0; i < nh; i++) {
		sites[NSITES] = hand_sites[i];
		sites[NSITES].off = strncmp(hand_sites[i].on, "BOOSTED", 7) ?
				    hand_sites[i].on : "SINGLE_STEP";
		if (!strcmp(hand_sites[i].on, "EMULATED*")) {
			sites[NSITES].on = "EMULATED";
			sites[NSITES].off = "SINGLE_STEP";
		}
		NSITES++;
	}
	for (int i = 0; i < nc; i++) {
		if (!corpus[i].name)
			continue;
		sites[NSITES].name = corpus[i].name;
		sites[NSITES].addr = corpus[i].addr;
		sites[NSITES].on = corpus[i].xol61;
		sites[NSITES].off = corpus[i].xol61off;
		sites[NSITES].desc = corpus[i].desc;
		NSITES++;
	}
}

static struct site *site_by_name(const char *n)
{
	for (int i = 0; i < NSITES; i++)
		if (!strcmp(sites[i].name, n))
			return &sites[i];
	return NULL;
}

/* ---- reporting ---------------------------------------------------------- */
static int failures;

static void pass(const char *name)
{
	printf("RESULT PASS %s\n", name);
	fflush(stdout);
}

static void fail(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("RESULT FAIL %s ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	failures++;
}

static void note(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* ---- tracefs / debugfs / sysctl ----------------------------------------- */
#define TRACEFS "/sys/kernel/tracing"
#define STATS "/sys/kernel/debug/uprobes/stats"
#define PLACEMENTS "/sys/kernel/debug/uprobes/placements"
#define BOOST "/proc/sys/kernel/uprobes_boost"

static char exe[256];

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
	static char buf[1 << 20];
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

static void xol_range(unsigned long *lo, unsigned long *hi)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];

	*lo = *hi = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, "[uprobes]")) {
			sscanf(line, "%lx-%lx", lo, hi);
			break;
		}
	}
	if (f)
		fclose(f);
}

static int probe_add(const char *ev, void *addr, int ret)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "%c:xt/%s %s:0x%lx\n", ret ? 'r' : 'p', ev, exe,
		 file_offset(addr));
	return write_file(TRACEFS "/uprobe_events", cmd, O_APPEND);
}

static int probe_enable(const char *ev, int on)
{
	char path[256];

	snprintf(path, sizeof(path), TRACEFS "/events/xt/%s/enable", ev);
	return write_file(path, on ? "1" : "0", 0);
}

static void probes_clear(void)
{
	write_file(TRACEFS "/events/xt/enable", "0", 0);
	write_file(TRACEFS "/uprobe_events", "", O_TRUNC);
	for (int i = 0; i < NSITES; i++)
		sites[i].enabled = 0;
}

/* Register and enable every site of the corpus; refused ones stay off. */
static void probes_all(void)
{
	probes_clear();
	for (int i = 0; i < NSITES; i++) {
		int err = probe_add(sites[i].name, sites[i].addr, 0);

		if (!err)
			err = probe_enable(sites[i].name, 1);
		sites[i].enabled = !err;
		if (err) {
			char cmd[128];

			snprintf(cmd, sizeof(cmd), "-:xt/%s\n", sites[i].name);
			write_file(TRACEFS "/uprobe_events", cmd, O_APPEND);
		}
	}
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
 * signals_translated: forward (the displaced instruction had completed);
 * fault_rollbacks: back to the probe address, the instruction faulted or the
 * signal is fatal; rep_rollbacks: a boosted rep caught mid-way, back to its
 * probe address with the partial count.
 */
enum { ST_EMU, ST_BOOST, ST_RIPREL, ST_SSTEP, ST_REINST, ST_MIGR, ST_SIGDEF,
	ST_SIGTR, ST_ROLLB, ST_REPRB, ST_NR };
static const char *stat_names[ST_NR] = {
	"hits_emulated", "hits_boosted", "hits_boosted_riprel", "hits_single_step",
	"slot_reinstalls", "slot_migrations", "signals_deferred",
	"signals_translated", "fault_rollbacks", "rep_rollbacks",
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

static int class_of(const char *placement)
{
	if (!strcmp(placement, "EMULATED"))
		return ST_EMU;
	if (!strcmp(placement, "BOOSTED"))
		return ST_BOOST;
	if (!strcmp(placement, "BOOSTED_RIPREL"))
		return ST_RIPREL;
	if (!strcmp(placement, "SINGLE_STEP"))
		return ST_SSTEP;
	return -1;
}

static int boost;

static void set_boost(int on)
{
	if (write_file(BOOST, on ? "1" : "0", 0))
		note("cannot write %s: %s", BOOST, strerror(errno));
	boost = on;
}

static const char *expected(struct site *s)
{
	return boost ? s->on : s->off;
}

/* The placement the kernel reports for a site, or NULL if not listed. */
static const char *kernel_placement(const char *all, struct site *s)
{
	static char res[64];
	struct stat stbuf;
	char key[128];
	const char *p;

	if (stat(exe, &stbuf))
		return NULL;
	/* "<major>:<minor> <inode> 0x<offset> <placement>" */
	snprintf(key, sizeof(key), "%u:%u %lu 0x%lx ", major(stbuf.st_dev), minor(stbuf.st_dev),
		 (unsigned long)stbuf.st_ino, file_offset(s->addr));
	for (p = all; (p = strstr(p, key)); p++) {
		if (p != all && p[-1] != '\n')
			continue;
		sscanf(p + strlen(key), "%63s", res);
		return res;
	}
	return NULL;
}

/* ---- calls: one wrapper per probed function ----------------------------- */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static long c_endbr(long i) { return f_endbr(i); }
static long c_mov(long i) { return f_mov(i); }
static long c_load(long i) { long v = i * 3; return f_load(&v); }
static long c_store(long i) { long v = 0; f_store(&v, i + 11); return v; }
static long c_alu(long i) { return f_alu(i, 0x1234567); }
static long c_cmp(long i) { return f_cmp(i, 500) * 2 + f_cmp(500, i) * 0; }
static long c_test(long i) { return f_test(i); }
static long c_lea(long i) { return f_lea(i, i * 5); }
static long c_sse(long i)
{
	int a[4] = { (int)i, 2, 3, 4 }, b[4] = { 10, (int)i, 30, 40 };

	f_sse(a, b);
	return (long)a[0] * 7 + a[1] * 5 + a[2] * 3 + a[3];
}
static long c_pushm(long i) { long v = i ^ 0x55; return f_pushm(&v); }
static long c_popm(long i) { long v = i; return f_popm(&v) + v; }
static long c_div(long i) { return (long)f_div((unsigned long)i * 1000 + 999, 7); }
static long c_fault(long i) { long v = i + 1; return f_fault(&v); }
static long c_rload(long i) { return f_rload() + i; }
static long c_rstore(long i)
{
	long r;

	pthread_mutex_lock(&g_lock);
	r = f_rstore(i * 9);
	pthread_mutex_unlock(&g_lock);
	return r;
}
static long c_rrmw(long i)
{
	pthread_mutex_lock(&g_lock);
	f_rrmw(i);
	pthread_mutex_unlock(&g_lock);
	return 0;
}
static long c_rlea(long i) { return f_rlea() == (long)&g_ro ? i : -1; }
static long c_rsse(long i)
{
	int a[4] = { (int)i, (int)i * 2, 5, 6 };

	f_rsse(a);
	return (long)a[0] * 11 + a[1] * 7 + a[2] * 3 + a[3];
}
static long c_rcmp(long i) { return f_rcmp(i * 17); }
static long c_rrsi(long i) { return f_rrsi(i); }
static long c_rrsi_same(long i) { return f_rrsi(7) + i; }
static long c_popf(long i) { return f_popf(i); }
static long c_rep(long i)
{
	char s[16], d[16] = { 0 };

	for (int k = 0; k < 16; k++)
		s[k] = (char)(i + k);
	f_rep(d, s, 16);
	return d[0] + d[7] * 3 + d[15] * 5;
}
static long c_rpush(long i) { return f_rpush() + i; }
static long c_ret(long i) { return f_ret(i); }
static long c_retimm(long i) { return f_retimm(i); }
static long c_repret(long i) { return f_repret(i); }
static long c_jmpreg(long i) { return f_jmpreg(i, 128); }
static long c_jmpmem(long i) { void *t = t_jm; return f_jmpmem(i, &t); }
static long c_jmprip(long i) { return f_jmprip(i); }
static long c_jmpsib(long i) { return f_jmpsib(i, i); }
static long c_callreg(long i) { return f_callreg(i, 100); }
static long c_callr11(long i) { return f_callr11(i); }
static long c_callmem(long i) { void *t = t_callee; return f_callmem(i, &t); }
static long c_callrip(long i) { return f_callrip(i); }
static long c_callsp(long i) { return f_callsp(i); }
static __thread void *tls_target;
static long c_callfs(long i)
{
	unsigned long fs;

	tls_target = t_callee;
	asm volatile("mov %%fs:0, %0" : "=r"(fs));	/* glibc: the TCB points to itself */
	return f_callfs(i, (long)((unsigned long)&tls_target - fs));
}
static long c_repstos(long i)
{
	unsigned char d[40] = { 0 };
	long r = 0;

	f_repstos(d + 3, (int)(i & 0xff), 33);
	for (int k = 0; k < 40; k++)
		r = r * 3 + d[k];
	return r;
}
static long c_repcmps(long i)
{
	char a[24], b[24];

	memset(a, 'x', sizeof(a));
	memset(b, 'x', sizeof(b));
	a[0] = (char)i;
	b[0] = (char)i;
	b[9] = 'y';			/* repe cmpsb stops after 10 iterations */
	return f_repcmps(a, b, 24) * 1000 + i;
}
static long c_rsp(long i) { return f_rsp() + i; }
static long c_x87(long i) { return f_x87(i); }
static long c_nop(long i) { return f_nop(i); }
static long c_pushbp(long i) { return f_pushbp(i); }
static long c_jmp(long i) { return f_jmp(i); }
static long c_jcc(long i) { return f_jcc(i & 3); }
static long c_call(long i) { return f_call(i); }
static long c_vpsubsb(long i)
{
	return f_vpsubsb(0x7f80017f00ff1020 + i, 0x0102030405060708 * (i & 7));
}
static long c_vpcmpeqb(long i)
{
	return f_vpcmpeqb(0x0001000100010001 * (i & 3), 0x0000000100000001 * (i & 1));
}
static long c_vmovdqa(long i)
{
	unsigned char s[32] __attribute__((aligned(32)));
	unsigned char d[32] __attribute__((aligned(32))) = { 0 };
	long r = 0;

	for (int k = 0; k < 32; k++)
		s[k] = (unsigned char)(i * 7 + k);
	f_vmovdqa(d, s);
	for (int k = 0; k < 32; k++)
		r = r * 3 + d[k];
	return r;
}
static long c_vzeroupper(long i) { return f_vzeroupper(i + 1); }
static long c_vcmpps(long i)
{
	/* lane 0: i vs 5, lane 1: 5 vs i (raw bits, compared as floats) */
	return f_vcmpps(i | 5L << 32, 5 | i << 32);
}

#define LOCKED 1	/* takes g_lock: not in fork children or signal handlers */
#define INSIG 2		/* also called from the timer signal handler */
#define ITER 4		/* reps: a rep string insn, 6.1 steps one iteration per hit */

struct call {
	const char *name;
	long (*fn)(long);
	const char *sites[3];
	int flags;
	int reps;	/* hits on sites[0] per call, if not 1 (ITER: when single-stepped) */
};

static struct call calls[] = {
	{ "endbr", c_endbr, { "s_endbr" }, INSIG },
	{ "mov", c_mov, { "s_mov" } },
	{ "load", c_load, { "s_load" } },
	{ "store", c_store, { "s_store" } },
	{ "alu", c_alu, { "s_alu" } },
	{ "cmp", c_cmp, { "s_cmp" }, 0, 2 },
	{ "test", c_test, { "s_test" } },
	{ "lea", c_lea, { "s_lea" }, INSIG },
	{ "sse", c_sse, { "s_sse_load", "s_sse_add" }, INSIG },
	{ "pushm", c_pushm, { "s_pushm" } },
	{ "popm", c_popm, { "s_popm" } },
	{ "div", c_div, { "s_div" } },
	{ "fault", c_fault, { "s_fault" } },
	{ "rload", c_rload, { "s_rload" }, INSIG },
	{ "rstore", c_rstore, { "s_rstore" }, LOCKED },
	{ "rrmw", c_rrmw, { "s_rrmw" }, LOCKED },
	{ "rlea", c_rlea, { "s_rlea" } },
	{ "rsse", c_rsse, { "s_rsse" }, INSIG },
	{ "rcmp", c_rcmp, { "s_rcmp" } },
	{ "rrsi", c_rrsi, { "s_rrsi" } },
	{ "popf", c_popf, { "s_popf" }, INSIG },
	/* 6.1 single-steps one iteration of a rep string insn per hit: 16 hits */
	{ "rep", c_rep, { "s_rep" }, ITER, 16 },
	{ "repstos", c_repstos, { "s_repstosx" }, ITER, 33 },
	{ "repcmps", c_repcmps, { "s_repcmps" }, ITER, 10 },
	{ "rpush", c_rpush, { "s_rpush" } },
	{ "rsp", c_rsp, { "s_rsp" } },
	{ "x87", c_x87, { "s_x87" } },
	{ "nop", c_nop, { "s_nop" }, INSIG },
	{ "pushbp", c_pushbp, { "s_pushbp" } },
	{ "jmp", c_jmp, { "s_jmp" } },
	{ "jcc", c_jcc, { "s_jcc" } },
	{ "call", c_call, { "s_call", "s_mov" } },
	{ "ret", c_ret, { "s_ret" }, INSIG },
	{ "retimm", c_retimm, { "s_retimm" } },
	{ "repret", c_repret, { "s_repret" } },
	{ "jmpreg", c_jmpreg, { "s_jmpreg" } },
	{ "jmpmem", c_jmpmem, { "s_jmpmem" } },
	{ "jmprip", c_jmprip, { "s_jmprip" }, INSIG },
	{ "jmpsib", c_jmpsib, { "s_jmpsib" } },
	{ "callreg", c_callreg, { "s_callreg" }, INSIG },
	{ "callr11", c_callr11, { "s_callr11" } },
	{ "callmem", c_callmem, { "s_callmem" } },
	{ "callrip", c_callrip, { "s_callrip" } },
	{ "callsp", c_callsp, { "s_callsp" } },
	{ "callfs", c_callfs, { "s_callfs" } },
	{ "vpsubsb", c_vpsubsb, { "s_vpsubsb" } },
	{ "vpcmpeqb", c_vpcmpeqb, { "s_vpcmpeqb" } },
	{ "vmovdqa", c_vmovdqa, { "s_vmovdqa" } },
	{ "vzeroupper", c_vzeroupper, { "s_vzeroupper" } },
	{ "vcmpps", c_vcmpps, { "s_vcmpps" } },
};
#define NCALLS ((int)(sizeof(calls) / sizeof(calls[0])))
#define NARG 256

static long base[NCALLS][NARG];	/* unprobed results */

static void compute_base(void)
{
	for (int c = 0; c < NCALLS; c++)
		for (int a = 0; a < NARG; a++)
			base[c][a] = calls[c].fn(a);
}

/* Expected per-class hits of one call of @c. */
static void call_classes(struct call *c, long cls[ST_NR])
{
	for (int k = 0; k < 3 && c->sites[k]; k++) {
		struct site *s = site_by_name(c->sites[k]);
		int i = class_of(expected(s));

		if (i >= 0 && s->enabled)
			cls[i] += (k == 0 && c->reps && (!(c->flags & ITER) || i == ST_SSTEP)) ?
				  c->reps : 1;
	}
}

/* ---- test: placement ------------------------------------------------------ */
static void test_placement(void)
{
	const char *all = read_file(PLACEMENTS);
	char name[64], why[2048] = "";
	int bad = 0, unknown = 0;

	snprintf(name, sizeof(name), "placement_boost_%s", boost ? "on" : "off");
	for (int i = 0; i < NSITES; i++) {
		struct site *s = &sites[i];
		const char *want = expected(s), *got;

		if (!strcmp(want, "REFUSED")) {
			got = s->enabled ? "REGISTERED" : "REFUSED";
			if (s->enabled || kernel_placement(all, s))
				got = "REGISTERED";
		} else {
			got = kernel_placement(all, s);
			if (!got)
				got = s->enabled ? "MISSING" : "REFUSED";
		}
		if (!strcmp(got, "UNKNOWN"))
			unknown++;
		if (strcmp(want, got)) {
			bad++;
			snprintf(why + strlen(why), sizeof(why) - strlen(why), "[%s: %s want %s] ",
				 s->desc, got, want);
		}
	}
	note("%s: %d sites (%d from the shared corpus), %d differ", name, NSITES,
	     NSITES - (int)(sizeof(hand_sites) / sizeof(hand_sites[0])), bad);
	if (bad)
		fail(name, "%d of %d sites differ%s: %s", bad, NSITES,
		     unknown ? " (UNKNOWN: not analysed)" : "", why);
	else
		pass(name);
}

/* ---- test: each class really runs the way it is reported ----------------- */
static void test_class_hits(void)
{
	char name[64], why[512] = "";
	int bad = 0;

	snprintf(name, sizeof(name), "class_hits_boost_%s", boost ? "on" : "off");
	for (int c = 0; c < NCALLS; c++) {
		unsigned long b[ST_NR], a[ST_NR];
		long want[ST_NR] = { 0 }, h0, h1;
		long r;

		call_classes(&calls[c], want);
		h0 = profile_hits(calls[c].sites[0]);
		stats_read(b);
		r = calls[c].fn(5);
		stats_read(a);
		h1 = profile_hits(calls[c].sites[0]);
		if (r != base[c][5]) {
			bad++;
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
				 "%s:result %ld!=%ld ", calls[c].name, r, base[c][5]);
		}
		for (int k = ST_EMU; k <= ST_SSTEP; k++) {
			if ((long)(a[k] - b[k]) != want[k]) {
				bad++;
				snprintf(why + strlen(why), sizeof(why) - strlen(why),
					 "%s:%s+%lu(want %ld) ", calls[c].name, stat_names[k],
					 a[k] - b[k], want[k]);
			}
		}
		if (h1 - h0 != (calls[c].reps &&
				(!(calls[c].flags & ITER) ||
				 !strcmp(expected(site_by_name(calls[c].sites[0])), "SINGLE_STEP")) ?
				calls[c].reps : 1)) {
			bad++;
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
				 "%s:profile+%ld ", calls[c].name, h1 - h0);
		}
	}
	if (bad)
		fail(name, "%s", why);
	else
		pass(name);
}

/* ---- test: faults raised by the displaced instruction -------------------- */
static sigjmp_buf fault_jmp;
static volatile unsigned long fault_ip, fault_addr;

static void fault_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;

	fault_ip = uc->uc_mcontext.gregs[REG_RIP];
	fault_addr = (unsigned long)si->si_addr;
	siglongjmp(fault_jmp, sig);
}

static void test_fault(void)
{
	struct sigaction sa = { .sa_sigaction = fault_handler, .sa_flags = SA_SIGINFO };
	unsigned long b[ST_NR], a[ST_NR];
	char name[64];
	int n = 50, bad = 0;
	long h0 = profile_hits("s_fault"), d0 = profile_hits("s_div");
	char why[256] = "";

	snprintf(name, sizeof(name), "fault_rollback_boost_%s", boost ? "on" : "off");
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGFPE, &sa, NULL);
	stats_read(b);
	for (int i = 0; i < n; i++) {
		int sig = sigsetjmp(fault_jmp, 1);

		if (!sig) {
			f_fault((long *)0x10);
			bad++;
			continue;
		}
		if (sig != SIGSEGV || fault_ip != (unsigned long)s_fault || fault_addr != 0x10) {
			if (!bad++)
				snprintf(why, sizeof(why), "SIGSEGV sig=%d ip=%#lx (site %p) addr=%#lx ",
					 sig, fault_ip, s_fault, fault_addr);
		}
		sig = sigsetjmp(fault_jmp, 1);
		if (!sig) {
			f_div(1, 0);
			bad++;
			continue;
		}
		if (sig != SIGFPE || fault_ip != (unsigned long)s_div ||
		    fault_addr != (unsigned long)s_div) {
			if (!bad++)
				snprintf(why, sizeof(why), "SIGFPE sig=%d ip=%#lx addr=%#lx (site %p) ",
					 sig, fault_ip, fault_addr, s_div);
		}
	}
	stats_read(a);
	signal(SIGSEGV, SIG_DFL);
	signal(SIGFPE, SIG_DFL);
	if (profile_hits("s_fault") - h0 != n || profile_hits("s_div") - d0 != n) {
		bad++;
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "hits %ld/%ld want %d ",
			 profile_hits("s_fault") - h0, profile_hits("s_div") - d0, n);
	}
	if (boost && a[ST_ROLLB] - b[ST_ROLLB] != (unsigned long)(2 * n)) {
		bad++;
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "fault_rollbacks +%lu want %d",
			 a[ST_ROLLB] - b[ST_ROLLB], 2 * n);
	}
	if (bad)
		fail(name, "%s", why);
	else
		pass(name);
}

/* ---- test: rip-relative programs write no memory the instruction does not -- */
/*
 * Each rip-relative function runs through call_on_stack() three ways: with
 * %rsp 8 bytes above a PROT_NONE guard page (a slot program that pushed
 * anything below %rsp faults where the unprobed call does not), on a page of
 * canaries (after the call every byte must equal the unprobed run's), and
 * from a SIGUSR1 handler on a sigaltstack, again 8 bytes above the guard page
 * below it.  The reference results and canary pages are taken at startup,
 * before any probe is registered (rstack_base()).
 */
static const char *const rs_names[] = {
	"rload", "rstore", "rlea", "rcmp", "rrsi", "rpush", "rsp", "rspld", "cvtrsp",
};
#define NRS ((int)(sizeof(rs_names) / sizeof(rs_names[0])))
#define RS_ARG 0x2a
#define RS_PAGE 4096

static long rs_base[NRS];
static unsigned char rs_base_page[NRS][RS_PAGE];
static unsigned char *rs_mem;	/* guard, stack page, guard, two altstack pages */
static sigjmp_buf rs_jmp;
static volatile unsigned long rs_fault_ip;
static volatile int rs_handler_bad;
#define RS_WHY 512
static char *rs_why;	/* shared with the child */

/*
 * Called directly (asm, no C frame): only what the functions themselves push
 * lands on the stack page.
 */
static long (*const rs_direct[NRS])(long) = {
	(long (*)(long))f_rload, f_rstore, (long (*)(long))f_rlea, f_rcmp, f_rrsi,
	(long (*)(long))f_rpush, (long (*)(long))f_rsp, f_rspld, f_cvtrsp,
};

static void rs_segv(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;

	(void)sig;
	(void)si;
	rs_fault_ip = uc->uc_mcontext.gregs[REG_RIP];
	siglongjmp(rs_jmp, 1);
}

/* fn on the page at @page, %rsp 8 bytes above its start; -1 and ip if it faulted */
static int rs_tight(int i, unsigned char *page, long *r)
{
	if (sigsetjmp(rs_jmp, 1))
		return -1;
	*r = call_on_stack(rs_direct[i], RS_ARG, page + 16);
	return 0;
}

/*
 * In a child: the handler's frame is at the top of the sigaltstack, the
 * functions run at its bottom; a fault there cannot be delivered (%rsp is on
 * the alternate stack, 8 bytes above the guard page) and kills the child.
 */
static void rs_handler(int sig)
{
	long r;

	(void)sig;
	for (int i = 0; i < NRS; i++) {
		r = call_on_stack(rs_direct[i], RS_ARG, rs_mem + 3 * RS_PAGE + 16);
		if (r != rs_base[i]) {
			rs_handler_bad |= 1 << i;
			snprintf(rs_why + strlen(rs_why), RS_WHY - strlen(rs_why),
				 "sigaltstack %s: %ld want %ld ", rs_names[i], r, rs_base[i]);
		}
	}
	_exit(rs_handler_bad ? 2 : 0);
}

/* @old: where to save the sigaltstack it replaces (bf_run()'s), or NULL */
static int rs_setup(stack_t *old)
{
	struct sigaction sa = { .sa_sigaction = rs_segv, .sa_flags = SA_SIGINFO | SA_ONSTACK };
	static char segv_stack[64 * 1024];
	stack_t ss = { .ss_sp = segv_stack, .ss_size = sizeof(segv_stack) };

	if (!rs_mem) {
		rs_why = mmap(NULL, RS_WHY, PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		rs_mem = mmap(NULL, 5 * RS_PAGE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (rs_why == MAP_FAILED || rs_mem == MAP_FAILED ||
		    mprotect(rs_mem, RS_PAGE, PROT_NONE) ||
		    mprotect(rs_mem + 2 * RS_PAGE, RS_PAGE, PROT_NONE)) {
			rs_mem = NULL;
			return -1;
		}
	}
	/* SIGSEGV is taken on its own stack: the tight ones have no room */
	if (sigaltstack(&ss, old))
		return -1;
	return sigaction(SIGSEGV, &sa, NULL);
}

/* Canary run: the stack page filled with 0xa5, %rsp in its middle. */
static void rs_canary(int i, long *r, unsigned char *after)
{
	unsigned char *page = rs_mem + RS_PAGE;

	memset(page, 0xa5, RS_PAGE);
	*r = call_on_stack(rs_direct[i], RS_ARG, page + RS_PAGE / 2);
	memcpy(after, page, RS_PAGE);
}

static void rstack_base(void)
{
	stack_t old;
	long r;

	if (rs_setup(&old))
		return;
	for (int i = 0; i < NRS; i++) {
		rs_canary(i, &rs_base[i], rs_base_page[i]);
		/* the unprobed function does not fault on the tight stack */
		if (rs_tight(i, rs_mem + RS_PAGE, &r) || r != rs_base[i])
			rs_base[i] = 0x7fbad;
	}
	signal(SIGSEGV, SIG_DFL);
	/* bf_run() installed its sigaltstack once and relies on it */
	sigaltstack(&old, NULL);
}

/* The child of test_riprel_stack(): tight stack, canaries, then the sigaltstack. */
static void rs_child(void)
{
	struct sigaction su = { .sa_handler = rs_handler, .sa_flags = SA_ONSTACK };
	unsigned char after[RS_PAGE];
	stack_t ss;
	int bad = 0;
	long r;

	alarm(60);	/* a kernel that corrupts %rsp must not hang the run */
	if (rs_setup(NULL))
		_exit(3);
	for (int i = 0; i < NRS; i++) {
		if (rs_base[i] == 0x7fbad) {
			bad++;
			snprintf(rs_why + strlen(rs_why), RS_WHY - strlen(rs_why),
				 "%s faulted unprobed ", rs_names[i]);
			continue;
		}
		if (rs_tight(i, rs_mem + RS_PAGE, &r)) {
			bad++;
			snprintf(rs_why + strlen(rs_why), RS_WHY - strlen(rs_why),
				 "%s: SIGSEGV at %#lx on the tight stack ", rs_names[i],
				 rs_fault_ip);
		} else if (r != rs_base[i]) {
			bad++;
			snprintf(rs_why + strlen(rs_why), RS_WHY - strlen(rs_why),
				 "%s: %ld want %ld ", rs_names[i], r, rs_base[i]);
		}
		rs_canary(i, &r, after);
		if (r != rs_base[i] || memcmp(after, rs_base_page[i], RS_PAGE)) {
			int off = 0;

			while (off < RS_PAGE && after[off] == rs_base_page[i][off])
				off++;
			bad++;
			snprintf(rs_why + strlen(rs_why), RS_WHY - strlen(rs_why),
				 "%s: canary page differs at %%rsp%+d (result %ld) ",
				 rs_names[i], off - (RS_PAGE / 2 - 8), r);
		}
	}
	/* a SIGUSR1 handler on a two-page sigaltstack with a guard page below */
	ss.ss_sp = rs_mem + 3 * RS_PAGE;
	ss.ss_size = 2 * RS_PAGE;
	ss.ss_flags = 0;
	signal(SIGSEGV, SIG_DFL);
	if (bad || sigaltstack(&ss, NULL) || sigaction(SIGUSR1, &su, NULL))
		_exit(bad ? 1 : 3);
	raise(SIGUSR1);
	_exit(4);	/* the handler exits */
}

/*
 * In a child (with a time limit), so that a kernel that corrupts %rsp gives
 * a failure, not a hung run; the hit counters are system-wide.
 */
static void test_riprel_stack(void)
{
	unsigned long b[ST_NR], a[ST_NR];
	int bad = 0, cls = boost ? ST_RIPREL : ST_SSTEP, st = 0;
	char name[64];
	pid_t pid;

	snprintf(name, sizeof(name), "riprel_stack_boost_%s", boost ? "on" : "off");
	if (!rs_mem) {
		fail(name, "no unprobed reference (mmap failed at startup)");
		return;
	}
	rs_why[0] = 0;
	stats_read(b);
	pid = fork();
	if (!pid)
		rs_child();
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		bad++;
		snprintf(rs_why + strlen(rs_why), RS_WHY - strlen(rs_why),
			 "child %s %d (1: tight stack or canaries, 2: sigaltstack; 14: timed out) ",
			 pid < 0 ? "fork" : WIFSIGNALED(st) ? "killed by signal" : "exit",
			 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	}
	stats_read(a);
	if (a[cls] - b[cls] != (unsigned long)(3 * NRS)) {
		bad++;
		snprintf(rs_why + strlen(rs_why), RS_WHY - strlen(rs_why),
			 "%s +%lu want %d ", stat_names[cls], a[cls] - b[cls], 3 * NRS);
	}
	note("%s: %d rip-relative functions x (guard page, canaries, sigaltstack)", name, NRS);
	if (bad)
		fail(name, "%s", rs_why);
	else
		pass(name);
}

/* ---- test: faults of emulated returns and indirect branches -------------- */
/*
 * An emulated ret/jmp/call never emulates a fault: when an access fails or
 * the target is not a user address, the instruction runs out of line and
 * raises its own fault.  Each case must give the signal an unprobed run gets:
 * same signo, si_code, si_addr, RIP, %rsp (relative to the caller's frame)
 * and, where the stack is readable, the same value on top of it (the return
 * address a call pushed before its target faulted).
 */
struct bfault {
	int sig, code;
	unsigned long addr, ip, sp_rel, top;
};
#define NBF 8
static const char *const bf_names[NBF] = {
	"jmp *(0x10)", "call *(0x18)", "call *%rsi to 0x1000", "jmp non-canonical",
	"jmp kernel address", "ret, %rsp unmapped", "ret to 0x1000", "call, %rsp unmapped",
};
static const char *const bf_sites[NBF] = {
	"s_jmpmem", "s_callmem", "s_callbad", "s_jmpbad", "s_jmpbad", "s_retbad", "s_retbad",
	"s_callbadsp",
};
static struct bfault bf_base[NBF], bf_got;
static sigjmp_buf bf_jmp;
static unsigned long bf_frame;
static char *bf_none;			/* PROT_NONE page */
static unsigned long bf_stack[4];	/* a readable stack holding a bad return address */

static void bf_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	unsigned long sp = uc->uc_mcontext.gregs[REG_RSP];

	bf_got.sig = sig;
	bf_got.code = si->si_code;
	bf_got.addr = (unsigned long)si->si_addr;
	bf_got.ip = uc->uc_mcontext.gregs[REG_RIP];
	/* relative to the caller's frame, or absolute where the case set %rsp */
	bf_got.sp_rel = sp < bf_frame && bf_frame - sp < 4096 ? sp - bf_frame : sp;
	bf_got.top = 0;
	if ((sp < bf_frame && bf_frame - sp < 4096) ||
	    (sp >= (unsigned long)bf_stack && sp < (unsigned long)(bf_stack + 4)))
		bf_got.top = *(unsigned long *)sp;
	siglongjmp(bf_jmp, 1);
}

static __attribute__((noinline)) void bf_run(int i, struct bfault *out)
{
	struct sigaction sa = { .sa_sigaction = bf_handler,
				.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER };

	if (!bf_none) {
		static char altstack[65536];
		stack_t st = { .ss_sp = altstack, .ss_size = sizeof(altstack) };

		sigaltstack(&st, NULL);
		bf_none = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	bf_frame = (unsigned long)__builtin_frame_address(0);
	memset(&bf_got, 0, sizeof(bf_got));
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	if (!sigsetjmp(bf_jmp, 1)) {
		switch (i) {
		case 0: f_jmpmem(0, (void *)0x10); break;
		case 1: f_callmem(0, (void *)0x18); break;
		case 2: f_callbad(0, 0x1000); break;
		case 3: f_jmpbad(0, 0x8000000000000000UL); break;
		case 4: f_jmpbad(0, 0xffffffff81000000UL); break;
		case 5: f_retbad((unsigned long)bf_none + 64); break;
		case 6:
			bf_stack[1] = 0x1000;
			f_retbad((unsigned long)&bf_stack[1]);
			break;
		case 7: f_callbadsp((unsigned long)bf_none + 64, t_callee); break;
		}
	}
	signal(SIGSEGV, SIG_DFL);
	signal(SIGBUS, SIG_DFL);
	*out = bf_got;
}

static void test_branch_faults(void)
{
	char name[64], why[1024] = "";
	long h0[NBF], bad = 0;

	snprintf(name, sizeof(name), "branch_faults_boost_%s", boost ? "on" : "off");
	for (int i = 0; i < NBF; i++) {
		struct bfault g;

		h0[i] = profile_hits(bf_sites[i]);
		bf_run(i, &g);
		if (!g.sig || memcmp(&g, &bf_base[i], sizeof(g))) {
			bad++;
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
				 "[%s: sig %d code %d addr %#lx ip %#lx sp %+ld top %#lx; unprobed %d %d %#lx %#lx %+ld %#lx] ",
				 bf_names[i], g.sig, g.code, g.addr, g.ip, (long)g.sp_rel, g.top,
				 bf_base[i].sig, bf_base[i].code, bf_base[i].addr, bf_base[i].ip,
				 (long)bf_base[i].sp_rel, bf_base[i].top);
		}
		/* jmpbad and retbad serve two cases each: count the second one alone */
		if (profile_hits(bf_sites[i]) - h0[i] != 1) {
			bad++;
			snprintf(why + strlen(why), sizeof(why) - strlen(why), "[%s: %ld hits] ",
				 bf_names[i], profile_hits(bf_sites[i]) - h0[i]);
		}
	}
	if (bad)
		fail(name, "%ld: %s", bad, why);
	else
		pass(name);
}

/* ---- test: a boosted rep interrupted mid-way ------------------------------ */
/*
 * rep movsb of REP_N bytes through the boosted s_rep, while SIGALRM fires
 * every 300 us and another thread moves the copying thread between the CPUs:
 * an interrupted rep must resume with its partial count, in the slot of
 * whatever CPU (same offset), and a signal mid-way must see the task at the
 * probe address with the partial count (never inside [uprobes]), resuming
 * the rep through the probe after sigreturn.  Then a rep that faults after
 * 100 bytes (destination runs into a PROT_NONE page) must show the unprobed
 * fault: same RIP (the probe address), %rcx, %rsi, %rdi, si_addr.
 */
#define REP_N (6 << 20)
static unsigned long xol_lo, xol_hi;	/* [uprobes] */
static void pin(pid_t tid, int cpu);
static atomic_long rep_sigs, rep_at_site, rep_partial, rep_in_slot;
static atomic_int rep_stop;
static pid_t rep_tid;

static void rep_alarm(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	unsigned long ip = uc->uc_mcontext.gregs[REG_RIP];
	unsigned long cx = uc->uc_mcontext.gregs[REG_RCX];

	atomic_fetch_add(&rep_sigs, 1);
	if (ip >= xol_lo && ip < xol_hi)
		atomic_fetch_add(&rep_in_slot, 1);
	if (ip == (unsigned long)s_rep) {
		atomic_fetch_add(&rep_at_site, 1);
		if (cx > 0 && cx < REP_N)
			atomic_fetch_add(&rep_partial, 1);
	}
}

static void *rep_mover(void *arg)
{
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN), k = 0;

	while (!atomic_load(&rep_stop)) {
		pin(rep_tid, k++ % ncpu);
		usleep(700);
	}
	return NULL;
}

struct repfault {
	int sig;
	unsigned long addr, ip, cx, si, di;
};
static struct repfault rf_got;
static sigjmp_buf rf_jmp;

static void rf_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;

	rf_got.sig = sig;
	rf_got.addr = (unsigned long)si->si_addr;
	rf_got.ip = uc->uc_mcontext.gregs[REG_RIP];
	rf_got.cx = uc->uc_mcontext.gregs[REG_RCX];
	rf_got.si = uc->uc_mcontext.gregs[REG_RSI];
	rf_got.di = uc->uc_mcontext.gregs[REG_RDI];
	siglongjmp(rf_jmp, 1);
}

static void rep_fault_run(char *dst, char *src, struct repfault *out)
{
	struct sigaction sa = { .sa_sigaction = rf_handler, .sa_flags = SA_SIGINFO };

	memset(&rf_got, 0, sizeof(rf_got));
	sigaction(SIGSEGV, &sa, NULL);
	if (!sigsetjmp(rf_jmp, 1))
		f_rep(dst, src, 300);
	signal(SIGSEGV, SIG_DFL);
	*out = rf_got;
}

static void test_rep_interrupt(void)
{
	struct sigaction sa = { .sa_sigaction = rep_alarm, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct itimerval itv = { { 0, 300 }, { 0, 300 } }, off = { 0 };
	unsigned long b[ST_NR], a[ST_NR];
	struct repfault base_f, got_f;
	char *src = malloc(REP_N), *dst = malloc(REP_N), *pg;
	long hits, h0;
	pthread_t mv;
	char why[512] = "";

	for (long i = 0; i < REP_N; i++)
		src[i] = (char)(i * 7 + (i >> 12));
	memset(dst, 0, REP_N);
	c_endbr(0);
	xol_range(&xol_lo, &xol_hi);
	rep_sigs = rep_at_site = rep_partial = rep_in_slot = 0;
	rep_stop = 0;
	rep_tid = syscall(SYS_gettid);
	h0 = profile_hits("s_rep");
	stats_read(b);
	sigaction(SIGALRM, &sa, NULL);
	pthread_create(&mv, NULL, rep_mover, NULL);
	setitimer(ITIMER_REAL, &itv, NULL);
	f_rep(dst, src, REP_N);
	setitimer(ITIMER_REAL, &off, NULL);
	atomic_store(&rep_stop, 1);
	pthread_join(mv, NULL);
	stats_read(a);
	signal(SIGALRM, SIG_DFL);
	{
		cpu_set_t all;

		CPU_ZERO(&all);
		for (int c = 0; c < sysconf(_SC_NPROCESSORS_ONLN); c++)
			CPU_SET(c, &all);
		sched_setaffinity(0, sizeof(all), &all);
	}
	hits = a[ST_BOOST] - b[ST_BOOST];
	note("rep_interrupt: %ld signals, %ld at the probe address (%ld with a partial count), %ld hits, %lu slot migrations, %lu rep roll-backs, %lu forward translations",
	     (long)rep_sigs, (long)rep_at_site, (long)rep_partial, hits, a[ST_MIGR] - b[ST_MIGR],
	     a[ST_REPRB] - b[ST_REPRB], a[ST_SIGTR] - b[ST_SIGTR]);
	if (memcmp(dst, src, REP_N))
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "copy differs; ");
	if (rep_in_slot)
		snprintf(why + strlen(why), sizeof(why) - strlen(why), "%ld frames in [uprobes]; ",
			 (long)rep_in_slot);
	if (!rep_partial)
		snprintf(why + strlen(why), sizeof(why) - strlen(why),
			 "no signal caught the rep mid-way (%ld signals); ", (long)rep_sigs);
	if (hits < 1 || hits > 1 + rep_at_site || profile_hits("s_rep") - h0 != hits)
		snprintf(why + strlen(why), sizeof(why) - strlen(why),
			 "boosted hits %ld (profile %ld), want 1..%ld; ", hits,
			 profile_hits("s_rep") - h0, 1 + (long)rep_at_site);
	if (a[ST_SSTEP] != b[ST_SSTEP] || a[ST_SIGDEF] != b[ST_SIGDEF])
		snprintf(why + strlen(why), sizeof(why) - strlen(why),
			 "single-steps +%lu, deferred signals +%lu; ", a[ST_SSTEP] - b[ST_SSTEP],
			 a[ST_SIGDEF] - b[ST_SIGDEF]);
	/* each hit after the first resumes the rep after a roll-back */
	if (a[ST_REPRB] == b[ST_REPRB] || hits > 1 + (long)(a[ST_REPRB] - b[ST_REPRB]) ||
	    a[ST_ROLLB] != b[ST_ROLLB])
		snprintf(why + strlen(why), sizeof(why) - strlen(why),
			 "rep_rollbacks +%lu fault_rollbacks +%lu for %ld hits, want 1..hits-1 and 0; ",
			 a[ST_REPRB] - b[ST_REPRB], a[ST_ROLLB] - b[ST_ROLLB], hits);
	if (why[0])
		fail("rep_interrupt_boost_on", "%s", why);
	else
		pass("rep_interrupt_boost_on");

	/* fault mid-rep: the unprobed fault first (probe disabled), then probed */
	pg = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mprotect(pg + 4096, 4096, PROT_NONE);
	probe_enable("s_rep", 0);
	rep_fault_run(pg + 4096 - 100, src, &base_f);
	probe_enable("s_rep", 1);
	h0 = profile_hits("s_rep");
	stats_read(b);
	rep_fault_run(pg + 4096 - 100, src, &got_f);
	stats_read(a);
	if (memcmp(&base_f, &got_f, sizeof(got_f)) || base_f.sig != SIGSEGV ||
	    profile_hits("s_rep") - h0 != 1 || a[ST_REPRB] - b[ST_REPRB] != 1 ||
	    a[ST_ROLLB] != b[ST_ROLLB] || a[ST_SIGTR] != b[ST_SIGTR])
		fail("rep_fault_boost_on",
		     "sig %d addr %#lx ip %#lx rcx %lu rsi %#lx rdi %#lx hits %ld rep_rollbacks +%lu fault_rollbacks +%lu translated +%lu (want 1, 0, 0); unprobed sig %d addr %#lx ip %#lx rcx %lu rsi %#lx rdi %#lx",
		     got_f.sig, got_f.addr, got_f.ip, got_f.cx, got_f.si, got_f.di,
		     profile_hits("s_rep") - h0, a[ST_REPRB] - b[ST_REPRB],
		     a[ST_ROLLB] - b[ST_ROLLB], a[ST_SIGTR] - b[ST_SIGTR], base_f.sig,
		     base_f.addr, base_f.ip, base_f.cx, base_f.si, base_f.di);
	else
		pass("rep_fault_boost_on");
	munmap(pg, 8192);
	free(src);
	free(dst);
}

/* ---- test: trapno in later signal frames ---------------------------------- */
/*
 * A hit must leave no trace in thread state a later signal frame shows.  The
 * boosted path marks thread.trap_nr (to tell a fault of the displaced
 * instruction from other signals) and leaves the slot without entering the
 * kernel, so the kernel must put the value back before any later frame.
 * Without a probe, the sequence "ud2 (SIGILL, trapno 6), call, raise SIGUSR1"
 * shows trapno 6 in the SIGUSR1 frame: so must every probed variant, whether
 * the value is put back by the signal path, after a context switch, or in a
 * fork child.
 */
static volatile unsigned long sig_trapno;
static sigjmp_buf ud_jmp;

static void trapno_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;

	sig_trapno = uc->uc_mcontext.gregs[REG_TRAPNO];
	if (sig == SIGILL)
		siglongjmp(ud_jmp, 1);
}

/* trapno of a SIGUSR1 frame after calls[c] (c < 0: no call) */
static unsigned long trapno_after(int c, int how)
{
	if (!sigsetjmp(ud_jmp, 1))
		asm volatile("ud2");
	if (c >= 0)
		calls[c].fn(7);
	if (how == 1)
		usleep(3000);		/* switched out: the return-to-user path */
	if (how == 2) {			/* the copy a fork child starts with */
		pid_t pid = fork();
		int st;

		if (!pid) {
			raise(SIGUSR1);
			_exit(sig_trapno == 6 ? 0 : 1);
		}
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
			return ~0UL - 1;
		return WEXITSTATUS(st) ? ~0UL : 6;
	}
	sig_trapno = 0x5555;
	raise(SIGUSR1);
	return sig_trapno;
}

static void test_trapno(void)
{
	struct sigaction sa = { .sa_sigaction = trapno_handler, .sa_flags = SA_SIGINFO };
	const char *fns[] = { "mov", "endbr", "rload", "rstore", "popf", "nop" };
	const char *hows[] = { "signal", "switch", "fork" };
	char name[64], why[256] = "";
	int bad = 0;

	snprintf(name, sizeof(name), "trapno_boost_%s", boost ? "on" : "off");
	sigaction(SIGILL, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	if (trapno_after(-1, 0) != 6) {
		bad++;
		snprintf(why, sizeof(why), "unprobed: trapno %#lx after ud2, want 6 ", sig_trapno);
	}
	for (unsigned int f = 0; f < sizeof(fns) / sizeof(fns[0]); f++) {
		int c = -1;

		for (int i = 0; i < NCALLS; i++)
			if (!strcmp(calls[i].name, fns[f]))
				c = i;
		for (int how = 0; how < 3 && c >= 0; how++) {
			unsigned long t = trapno_after(c, how);

			if (t != 6 && !bad++)
				snprintf(why + strlen(why), sizeof(why) - strlen(why),
					 "%s then %s: trapno %#lx, want 6 (unprobed run) ",
					 fns[f], hows[how], t);
		}
		if (c < 0 && !bad++)
			snprintf(why, sizeof(why), "no call %s", fns[f]);
	}
	signal(SIGILL, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	if (bad)
		fail(name, "%d bad: %s", bad, why);
	else
		pass(name);
}

/* ---- test: a data watchpoint hit by a boosted store ------------------------ */
/*
 * A tracer puts a write watchpoint (DR0/DR7 through PTRACE_POKEUSER) on a
 * variable the child stores to through a probed site.  The #DB comes after
 * the store, so with the probe boosted it comes inside the slot: the ptrace
 * stop must show what the unprobed run shows, RIP and si_addr both at the
 * instruction after the store.  (6.1's single-step loses a watchpoint hit
 * inside a stepped instruction: the uprobes #DB notifier stops the chain, so
 * this is checked with boosting on only.)
 *
 * The same with a read watchpoint on g_ro, loaded by the rip-relative
 * "mov g_ro(%rip),%rsi" (s_rrsi, scratch register %rdi): the trap comes
 * after the load, before the slot program restored %rdi and jumped back,
 * which is the window of a forward translation no asynchronous signal
 * reaches under TCG (interrupts land between translation blocks only).
 * Both stops are exactly one forward translation (signals_translated) and
 * nothing else; the registers must be those of the unprobed run, %rdi
 * (the scratch register, the caller's argument) included.
 */
static long watched;
extern long g_ro;

static void watch_store(void)
{
	f_store(&watched, 42);
}

static void watch_rrsi(void)
{
	f_rrsi(0x5eed);
}

/* DR7: L0, RW0 01 (write) or 11 (read/write), LEN0 10 (8 bytes) */
#define DR7_W8 0x90001UL
#define DR7_RW8 0xb0001UL

static int watch_run(void (*fn)(void), void *var, unsigned long dr7, unsigned long *addr,
		     struct user_regs_struct *r)
{
	siginfo_t si;
	int st, ret = 0;
	pid_t pid = fork();

	if (!pid) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		fn();
		_exit(0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st))
		return -1;
	if (ptrace(PTRACE_POKEUSER, pid, offsetof(struct user, u_debugreg[0]), var) ||
	    ptrace(PTRACE_POKEUSER, pid, offsetof(struct user, u_debugreg[7]), dr7))
		ret = -2;
	else if (ptrace(PTRACE_CONT, pid, 0, 0) || waitpid(pid, &st, 0) != pid ||
		 !WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP)
		ret = -3;
	else if (ptrace(PTRACE_GETSIGINFO, pid, 0, &si) || ptrace(PTRACE_GETREGS, pid, 0, r))
		ret = -4;
	else
		*addr = (unsigned long)si.si_addr;
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return ret;
}

/*
 * The stats of one probed watch run: one hit of class @cls, one forward
 * translation, nothing else (a slot move, should the child be preempted in
 * the slot, is allowed).
 */
static int watch_stats_ok(const unsigned long *b, const unsigned long *a, int cls,
			  char *why, size_t len)
{
	for (int k = 0; k < ST_NR; k++) {
		unsigned long want = k == cls || k == ST_SIGTR;

		if (k == ST_REINST || k == ST_MIGR)
			continue;
		if (a[k] - b[k] != want) {
			snprintf(why, len, "%s moved by %lu, want %lu", stat_names[k], a[k] - b[k],
				 want);
			return 0;
		}
	}
	return 1;
}

/*
 * Runs fn under a watchpoint on var twice, with the probe at `probe` disabled then
 * enabled, and checks the probed run's counters moved by exactly one hit of class
 * `cls` (watch_stats_ok).  Returns 1 when both runs worked and the counters agree;
 * otherwise fails `test` and returns 0.  The caller compares what each stop showed.
 */
static int watch_twice(const char *test, const char *probe, void (*fn)(void), void *var,
		       unsigned long dr7, int cls, unsigned long *a0, struct user_regs_struct *r0,
		       unsigned long *a1, struct user_regs_struct *r1)
{
	unsigned long b[ST_NR], a[ST_NR];
	char why[128];
	int e0, e1;

	probe_enable(probe, 0);
	e0 = watch_run(fn, var, dr7, a0, r0);
	probe_enable(probe, 1);
	stats_read(b);
	e1 = watch_run(fn, var, dr7, a1, r1);
	stats_read(a);
	if (e0 || e1) {
		fail(test, "watch runs failed: unprobed %d probed %d", e0, e1);
		return 0;
	}
	if (!watch_stats_ok(b, a, cls, why, sizeof(why))) {
		fail(test, "the probed run: %s", why);
		return 0;
	}
	return 1;
}

static void test_watchpoint(void)
{
	struct user_regs_struct r0 = { 0 }, r1 = { 0 };
	unsigned long a0 = 0, a1 = 0;

	if (watch_twice("watchpoint_boost_on", "s_store", watch_store, &watched, DR7_W8,
			ST_BOOST, &a0, &r0, &a1, &r1)) {
		if (a1 != a0 || r1.rip != r0.rip)
			fail("watchpoint_boost_on", "probed: si_addr %#lx rip %#llx, unprobed: si_addr %#lx rip %#llx",
			     a1, r1.rip, a0, r0.rip);
		else
			pass("watchpoint_boost_on");
	}
	note("watchpoint: si_addr %#lx rip %#llx (site %p)", a1, r1.rip, s_store);

	if (watch_twice("watchpoint_riprel_boost_on", "s_rrsi", watch_rrsi, &g_ro, DR7_RW8,
			ST_RIPREL, &a0, &r0, &a1, &r1)) {
		if (a1 != a0 || r1.rip != r0.rip || r1.rdi != r0.rdi || r1.rsi != r0.rsi ||
		    r1.rax != r0.rax || r1.rsp != r0.rsp || r1.eflags != r0.eflags)
			fail("watchpoint_riprel_boost_on",
			     "probed: si_addr %#lx rip %#llx rdi %#llx rsi %#llx rax %#llx rsp %#llx flags %#llx, unprobed: si_addr %#lx rip %#llx rdi %#llx rsi %#llx rax %#llx rsp %#llx flags %#llx",
			     a1, r1.rip, r1.rdi, r1.rsi, r1.rax, r1.rsp, r1.eflags, a0, r0.rip,
			     r0.rdi, r0.rsi, r0.rax, r0.rsp, r0.eflags);
		else
			pass("watchpoint_riprel_boost_on");
	}
	note("watchpoint riprel: si_addr %#lx rip %#llx rdi %#llx rsi %#llx (site %p)", a1,
	     r1.rip, r1.rdi, r1.rsi, s_rrsi);
}

/* ---- test: rseq critical section with a boosted probe inside -------------- */
/*
 * f_rseq() is an rseq critical section (the thread's glibc-registered rseq
 * area): read cpu_id, load from *src (s_rseq, a boosted probe site), then
 * commit counts[cpu]++; the abort handler returns -1.  The load is made to
 * block in userfaultfd, the blocked thread is moved to the other CPU, then
 * the fault is resolved: rseq must restart the section (return -1), as it
 * does without the probe.  Without the fix rseq sees a slot IP, outside the
 * section, and the commit lands on CPU 0's counter from CPU 1.
 */
extern char s_rseq[];
long f_rseq(long *counts, long *src, struct rseq *rs);
asm("	.pushsection .data\n"
    "	.balign 32\n"
    "rseq_cs_desc:\n"
    "	.long 0, 0\n"
    "	.quad rseq_start, rseq_post - rseq_start, rseq_abort\n"
    "	.popsection\n"
    "	.text\n"
    "	.globl f_rseq, s_rseq\n"
    "	.type f_rseq, @function\n"
    "f_rseq:\n"
    "	lea rseq_cs_desc(%rip), %rax\n"
    "	mov %rax, 8(%rdx)\n"		/* rs->rseq_cs */
    "rseq_start:\n"
    "	movl 4(%rdx), %ecx\n"		/* rs->cpu_id */
    "s_rseq:\n"
    "	mov (%rsi), %r8\n"		/* boosted: blocks in userfaultfd */
    "	incq (%rdi,%rcx,8)\n"		/* commit */
    "rseq_post:\n"
    "	mov %rcx, %rax\n"
    "	ret\n"
    "	.long 0x53053053\n"		/* RSEQ_SIG */
    "rseq_abort:\n"
    "	mov $-1, %rax\n"
    "	ret\n");

static void pin(pid_t tid, int cpu);

static long rseq_counts[1024];
static long *rseq_src;
static long rseq_ret;
static atomic_int rseq_tid;
static int rseq_cpu_after;

static void *rseq_worker(void *arg)
{
	struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);

	pin(0, 0);
	atomic_store(&rseq_tid, gettid());
	rseq_ret = f_rseq(rseq_counts, rseq_src, rs);
	rseq_cpu_after = sched_getcpu();
	return NULL;
}

/* f_rseq()'s result when its load blocks and the thread moves to CPU 1 */
static long rseq_run(char *why, size_t n, unsigned long *blocked_ip)
{
	static long page[512] __attribute__((aligned(4096)));
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	struct uffdio_copy copy = { 0 };
	struct uffd_msg msg;
	pthread_t th;
	long ret = -2;
	int uffd;

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	rseq_src = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	reg.range.start = (unsigned long)rseq_src;
	reg.range.len = 4096;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (uffd < 0 || rseq_src == MAP_FAILED || ioctl(uffd, UFFDIO_API, &api) ||
	    ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		snprintf(why, n, "userfaultfd setup: %s", strerror(errno));
		goto out;
	}
	atomic_store(&rseq_tid, 0);
	pthread_create(&th, NULL, rseq_worker, NULL);
	if (read(uffd, &msg, sizeof(msg)) != sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT) {
		snprintf(why, n, "no userfaultfd page fault event");
	} else {
		while (!atomic_load(&rseq_tid))
			;
		char path[64];
		long nr;

		/* where the thread is blocked: "-1 <sp> <pc>" while in a fault */
		snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", atomic_load(&rseq_tid));
		if (sscanf(read_file(path), "%ld %*x %lx", &nr, blocked_ip) != 2)
			*blocked_ip = 0;
		pin(atomic_load(&rseq_tid), 1);	/* moves the blocked thread */
		for (int i = 0; i < 512; i++)
			page[i] = 7;
		copy.dst = (unsigned long)rseq_src;
		copy.src = (unsigned long)page;
		copy.len = 4096;
		if (ioctl(uffd, UFFDIO_COPY, &copy))
			snprintf(why, n, "UFFDIO_COPY: %s", strerror(errno));
	}
	pthread_join(th, NULL);
	ret = rseq_ret;
out:
	if (uffd >= 0)
		close(uffd);
	if (rseq_src != MAP_FAILED)
		munmap(rseq_src, 4096);
	return ret;
}

static void test_rseq(void)
{
	char why0[128] = "", why1[128] = "";
	unsigned long b[ST_NR], a[ST_NR];
	long r0, r1, committed = 0;
	unsigned long ip0 = 0, ip1 = 0, lo, hi;
	int uffd;

	if (!__rseq_size) {
		note("rseq: not registered by glibc (CONFIG_RSEQ off?): no rseq test");
		return;
	}
	/* The test blocks the thread inside the slot with a userfaultfd page fault. */
	uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0 && errno == ENOSYS) {
		note("rseq: no userfaultfd (CONFIG_USERFAULTFD off, on in config.distro): no rseq test");
		return;
	}
	if (uffd >= 0)
		close(uffd);
	if (probe_add("s_rseq", s_rseq, 0)) {
		fail("rseq_restart_boost_on", "cannot add a probe on s_rseq");
		return;
	}
	r0 = rseq_run(why0, sizeof(why0), &ip0);	/* unprobed */
	probe_enable("s_rseq", 1);
	stats_read(b);
	r1 = rseq_run(why1, sizeof(why1), &ip1);
	stats_read(a);
	probe_enable("s_rseq", 0);
	for (int i = 0; i < 1024; i++)
		committed += rseq_counts[i];
	xol_range(&lo, &hi);
	note("rseq: unprobed %ld (blocked at %#lx), probed %ld (blocked at %#lx, then on CPU %d), %ld commits",
	     r0, ip0, r1, ip1, rseq_cpu_after, committed);
	if (why0[0] || why1[0])
		fail("rseq_restart_boost_on", "%s %s", why0, why1);
	else if (ip0 != (unsigned long)s_rseq || ip1 < lo || ip1 >= hi)
		fail("rseq_restart_boost_on", "the loads did not block where expected: unprobed at %#lx (want %p), probed at %#lx (want inside [uprobes] %#lx-%#lx)",
		     ip0, s_rseq, ip1, lo, hi);
	else if (r0 != -1)
		fail("rseq_restart_boost_on", "unprobed: f_rseq returned %ld, want -1 (restarted)", r0);
	else if (a[ST_BOOST] - b[ST_BOOST] != 1)
		fail("rseq_restart_boost_on", "%lu boosted hits, want 1", a[ST_BOOST] - b[ST_BOOST]);
	else if (r1 != -1 || committed)
		fail("rseq_restart_boost_on", "probed: f_rseq returned %ld (%ld commits), want -1 and none: the section committed after moving to CPU 1",
		     r1, committed);
	else
		pass("rseq_restart_boost_on");
}

/* ---- test: KVM_RUN after a boosted hit -------------------------------------- */
/*
 * kernel/entry/kvm.c runs resume_user_mode_work(NULL) for TIF_NOTIFY_RESUME on
 * the way into a guest: no user registers.  A vCPU thread that has just left
 * a boosted slot still has xol_inslot set (only the next fix-up clears it);
 * if it is switched out inside KVM_RUN, uprobe_sched_out() raises
 * TIF_NOTIFY_RESUME and the uprobes hook runs with regs == NULL before the
 * guest is entered (the series' first version dereferenced it: an oops).
 *
 * Each round: drop the guest's only page (MADV_DONTNEED: KVM's MMU notifier
 * unmaps it), reset the registers, call the boosted s_mov, then KVM_RUN.  The
 * guest's first fetch faults, KVM's get_user_pages() sleeps in userfaultfd
 * (the switch-out), the resolver thread moves the blocked thread to the other
 * CPU and supplies the page, and KVM goes back to entering the guest through
 * the work loop.  The guest is real-mode "add %bx,%ax; inc %ax; hlt": every
 * KVM_RUN must end in KVM_EXIT_HLT with ax = i + 3 + 1 and ip after the hlt.
 */
#define KVM_N 200
#define KVM_GPA 0x1000UL

static const unsigned char kvm_code[] = { 0x01, 0xd8, 0x40, 0xf4 };
static int kvm_uffd = -1;
static atomic_int kvm_stop, kvm_tid;
static atomic_long kvm_faults;

static void *kvm_resolver(void *arg)
{
	static unsigned char page[4096] __attribute__((aligned(4096)));
	struct uffdio_copy copy = { 0 };
	struct pollfd pfd = { .fd = kvm_uffd, .events = POLLIN };
	struct uffd_msg msg;
	int cpu = 1;

	memcpy(page, kvm_code, sizeof(kvm_code));
	while (!atomic_load(&kvm_stop)) {
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if (read(kvm_uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		atomic_fetch_add(&kvm_faults, 1);
		/* the vCPU thread is asleep in KVM_RUN: move it */
		pin(atomic_load(&kvm_tid), cpu);
		cpu ^= 1;
		copy.dst = msg.arg.pagefault.address & ~4095UL;
		copy.src = (unsigned long)page;
		copy.len = 4096;
		copy.mode = 0;
		if (ioctl(kvm_uffd, UFFDIO_COPY, &copy) && errno != EEXIST)
			note("kvm: UFFDIO_COPY: %s", strerror(errno));
	}
	return NULL;
}

struct kvm_result {
	char why[200];
	long runs, hlt, right, mov_ok, cpu_changes;
};

static void *kvm_vcpu_thread(void *arg)
{
	struct kvm_result *r = arg;
	struct kvm_userspace_memory_region mr = { 0 };
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	int kvm, vm = -1, vcpu = -1, sz, last_cpu = -1;
	char *mem;

	atomic_store(&kvm_tid, gettid());
	pin(0, 0);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (kvm < 0 || mem == MAP_FAILED) {
		snprintf(r->why, sizeof(r->why), "/dev/kvm: %s", strerror(errno));
		goto out;
	}
	reg.range.start = (unsigned long)mem;
	reg.range.len = 4096;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(kvm_uffd, UFFDIO_API, &api) || ioctl(kvm_uffd, UFFDIO_REGISTER, &reg)) {
		snprintf(r->why, sizeof(r->why), "userfaultfd: %s", strerror(errno));
		goto out;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	mr.guest_phys_addr = KVM_GPA;
	mr.memory_size = 4096;
	mr.userspace_addr = (unsigned long)mem;
	if (vm < 0 || ioctl(vm, KVM_SET_USER_MEMORY_REGION, &mr) ||
	    (vcpu = ioctl(vm, KVM_CREATE_VCPU, 0)) < 0 ||
	    (sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)) <= 0) {
		snprintf(r->why, sizeof(r->why), "VM setup: %s", strerror(errno));
		goto out;
	}
	run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED || ioctl(vcpu, KVM_GET_SREGS, &sregs)) {
		snprintf(r->why, sizeof(r->why), "vCPU setup: %s", strerror(errno));
		goto out;
	}
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs)) {
		snprintf(r->why, sizeof(r->why), "KVM_SET_SREGS: %s", strerror(errno));
		goto out;
	}
	for (long i = 0; i < KVM_N; i++) {
		madvise(mem, 4096, MADV_DONTNEED);
		memset(&regs, 0, sizeof(regs));
		regs.rip = KVM_GPA;
		regs.rax = i;
		regs.rbx = 3;
		regs.rflags = 2;
		if (ioctl(vcpu, KVM_SET_REGS, &regs)) {
			snprintf(r->why, sizeof(r->why), "KVM_SET_REGS: %s", strerror(errno));
			break;
		}
		r->mov_ok += c_mov(i) == i + 3;	/* boosted s_mov */
		if (ioctl(vcpu, KVM_RUN, 0)) {
			snprintf(r->why, sizeof(r->why), "KVM_RUN %ld: %s", i, strerror(errno));
			break;
		}
		r->runs++;
		if (sched_getcpu() != last_cpu)
			r->cpu_changes++;
		last_cpu = sched_getcpu();
		if (run->exit_reason != KVM_EXIT_HLT) {
			snprintf(r->why, sizeof(r->why), "KVM_RUN %ld: exit reason %u, want KVM_EXIT_HLT (%u)",
				 i, run->exit_reason, KVM_EXIT_HLT);
			break;
		}
		r->hlt++;
		if (!ioctl(vcpu, KVM_GET_REGS, &regs) && regs.rax == (unsigned long)i + 4 &&
		    regs.rip == KVM_GPA + sizeof(kvm_code))
			r->right++;
	}
out:
	if (vcpu >= 0)
		close(vcpu);
	if (vm >= 0)
		close(vm);
	if (kvm >= 0)
		close(kvm);
	if (mem != MAP_FAILED)
		munmap(mem, 4096);
	return NULL;
}

static void test_kvm(void)
{
	static struct kvm_result r;
	unsigned long b[ST_NR], a[ST_NR], boosted;
	pthread_t th, res;

	if (access("/dev/kvm", F_OK)) {
		if (access("/sys/module/kvm", F_OK))
			note("kvm: no KVM in this kernel (config.distro has it): no KVM test");
		else
			fail("kvm_run_boost_on", "KVM is built in but there is no /dev/kvm (no SVM/VMX in the guest CPU? see dmesg)");
		return;
	}
	kvm_uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (kvm_uffd < 0) {
		fail("kvm_run_boost_on", "userfaultfd: %s", strerror(errno));
		return;
	}
	memset(&r, 0, sizeof(r));
	atomic_store(&kvm_stop, 0);
	atomic_store(&kvm_faults, 0);
	atomic_store(&kvm_tid, 0);
	stats_read(b);
	pthread_create(&res, NULL, kvm_resolver, NULL);
	pthread_create(&th, NULL, kvm_vcpu_thread, &r);
	pthread_join(th, NULL);
	atomic_store(&kvm_stop, 1);
	pthread_join(res, NULL);
	stats_read(a);
	close(kvm_uffd);
	boosted = a[ST_BOOST] - b[ST_BOOST];
	note("kvm: %ld KVM_RUN, %ld HLT exits, %ld right, %ld guest page faults (thread moved each time, %ld CPU changes seen), %lu boosted hits",
	     r.runs, r.hlt, r.right, atomic_load(&kvm_faults), r.cpu_changes, boosted);
	if (r.why[0])
		fail("kvm_run_boost_on", "%s", r.why);
	else if (r.runs != KVM_N || r.hlt != KVM_N || r.right != KVM_N || r.mov_ok != KVM_N)
		fail("kvm_run_boost_on", "%ld runs, %ld HLT exits, %ld with the right registers, %ld right s_mov results, want %d each",
		     r.runs, r.hlt, r.right, r.mov_ok, KVM_N);
	else if (atomic_load(&kvm_faults) != KVM_N)
		fail("kvm_run_boost_on", "%ld guest page faults through userfaultfd, want %d (one sleep inside each KVM_RUN)",
		     atomic_load(&kvm_faults), KVM_N);
	else if (boosted != KVM_N || a[ST_SSTEP] != b[ST_SSTEP])
		fail("kvm_run_boost_on", "%lu boosted hits (want %d), %lu single-steps (want 0)",
		     boosted, KVM_N, a[ST_SSTEP] - b[ST_SSTEP]);
	else
		pass("kvm_run_boost_on");
}

/* ---- test: the XOL area ---------------------------------------------------- */
/*
 * One 128-byte slot per possible CPU after the uretprobe trampoline, in
 * whole pages, all below the top of the user address space (47 bits, or 56
 * with 5-level paging): a slot past it is unreachable and a task running on
 * that CPU would die on its first hit.
 */
static void test_xol_area(void)
{
	char *s = read_file("/sys/devices/system/cpu/possible");
	unsigned long lo, hi, want, limit;
	int a, b, ncpu = -1;

	if (sscanf(s, "%d-%d", &a, &b) == 2)
		ncpu = b + 1;
	else if (sscanf(s, "%d", &a) == 1)
		ncpu = a + 1;
	xol_range(&lo, &hi);
	want = ((ncpu + 1) * 128UL + 4095) / 4096 * 4096;
	limit = lo < (1UL << 47) ? 0x7ffffffff000UL : 0x00fffffffffff000UL;
	note("[uprobes] %#lx-%#lx, %d possible CPUs", lo, hi, ncpu);
	if (!lo || ncpu < 1)
		fail("xol_area_size", "no [uprobes] mapping (%#lx) or possible CPUs (%d)", lo, ncpu);
	else if (hi - lo != want || hi > limit)
		fail("xol_area_size", "[uprobes] %#lx-%#lx: %lu bytes (want %lu for %d possible CPUs), must end at or below %#lx",
		     lo, hi, hi - lo, want, ncpu, limit);
	else
		pass("xol_area_size");

	/*
	 * Slot pages are allocated when a CPU first installs a program: with
	 * more possible than online CPUs, the last page (slots of CPUs that
	 * never ran a probe here) has none, and executing it is a SIGBUS; an
	 * eagerly allocated page would run its zeros (add %al,(%rax), %rax
	 * pointing at a buffer) to the end of the area, a SIGSEGV.  vfork: a
	 * fork child has no [uprobes] (VM_DONTCOPY).
	 */
	if (lo && hi - lo > 4096 &&
	    (long)((hi - lo - 4096) / 128 - 1) >= sysconf(_SC_NPROCESSORS_ONLN)) {
		static long scratch[8];
		pid_t pid;
		int st = 0;

		pid = vfork();
		if (!pid) {
			struct rlimit rl = { 0, 0 };

			setrlimit(RLIMIT_CORE, &rl);
			asm volatile("mov %0, %%rax; jmp *%1"
				     : : "r"(scratch), "r"(hi - 4096) : "rax", "memory");
			_exit(0);
		}
		waitpid(pid, &st, 0);
		if (WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS)
			pass("xol_lazy_pages");
		else
			fail("xol_lazy_pages", "jump to the unused last page %#lx: status %#x, want SIGBUS (page not allocated)",
			     hi - 4096, st);
	}
}

/* ---- test: stress --------------------------------------------------------- */
#define NTHREADS 64
#define ITERS 12

static atomic_long ncalls[NCALLS];	/* calls made, all processes */
static atomic_long nsig, sig_bad, sig_at_rep;
static atomic_int stop_aux;
static atomic_long mismatches;
static pid_t tids[NTHREADS];
static pthread_barrier_t start_barrier;
static char mismatch_why[256];

static void check(int c, long a, long r)
{
	if (r != base[c][a]) {
		if (atomic_fetch_add(&mismatches, 1) == 0)
			snprintf(mismatch_why, sizeof(mismatch_why), "%s(%ld)=%ld want %ld",
				 calls[c].name, a, r, base[c][a]);
	}
}

static void alarm_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	unsigned long ip = uc->uc_mcontext.gregs[REG_RIP];
	int saved = errno;

	/* the interrupted context must never be inside a slot */
	if (ip >= xol_lo && ip < xol_hi)
		atomic_fetch_add(&sig_bad, 1);
	/* a boosted rep interrupted mid-way resumes through its probe: +1 hit */
	if (ip == (unsigned long)s_rep || ip == (unsigned long)s_repstosx ||
	    ip == (unsigned long)s_repcmps)
		atomic_fetch_add(&sig_at_rep, 1);
	for (int c = 0; c < NCALLS; c++) {
		if (!(calls[c].flags & INSIG))
			continue;
		check(c, 3, calls[c].fn(3));
		atomic_fetch_add(&ncalls[c], 1);
	}
	atomic_fetch_add(&nsig, 1);
	errno = saved;
}

static void pin(pid_t tid, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(tid, sizeof(set), &set);
}

static void *worker(void *arg)
{
	long id = (long)arg;
	long local[NCALLS] = { 0 };
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	tids[id] = syscall(SYS_gettid);
	pthread_barrier_wait(&start_barrier);
	for (int it = 0; it < ITERS; it++) {
		pin(0, (it + id) % ncpu);	/* migrate every iteration */
		for (int c = 0; c < NCALLS; c++) {
			long a = (it * NTHREADS + id + c) % NARG;

			check(c, a, calls[c].fn(a));
			local[c]++;
		}
	}
	for (int c = 0; c < NCALLS; c++)
		atomic_fetch_add(&ncalls[c], local[c]);
	return NULL;
}

/* Moves workers between CPUs from outside, whatever they are doing. */
static void *migrator(void *arg)
{
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned int r = 1;

	while (!atomic_load(&stop_aux)) {
		r = r * 1103515245 + 12345;
		if (tids[(r >> 8) % NTHREADS])
			pin(tids[(r >> 8) % NTHREADS], (r >> 4) % ncpu);
		sched_yield();
	}
	return NULL;
}

/* Pure calls only: a forked child may not take g_lock. */
static int child_work(int n)
{
	int bad = 0;

	for (int k = 0; k < n; k++)
		for (int c = 0; c < NCALLS; c++) {
			if (calls[c].flags & LOCKED)
				continue;
			if (calls[c].fn((k * 5 + c) % NARG) != base[c][(k * 5 + c) % NARG])
				bad++;
		}
	return bad;
}

#define CHILD_N 2
static atomic_long forks_ok, forks_bad, execs_ok, execs_bad;

static void count_child(void)
{
	for (int c = 0; c < NCALLS; c++)
		if (!(calls[c].flags & LOCKED))
			atomic_fetch_add(&ncalls[c], CHILD_N);
}

static void *forker(void *arg)
{
	int execs = (long)arg;

	while (!atomic_load(&stop_aux)) {
		int st;
		pid_t p = execs ? vfork() : fork();

		if (p == 0) {
			if (execs) {
				execl(exe, exe, "child", NULL);
				_exit(127);
			}
			_exit(child_work(CHILD_N) ? 1 : 0);
		}
		if (p < 0)
			break;
		while (waitpid(p, &st, 0) < 0 && errno == EINTR)
			;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			count_child();
			atomic_fetch_add(execs ? &execs_ok : &forks_ok, 1);
		} else {
			atomic_fetch_add(execs ? &execs_bad : &forks_bad, 1);
		}
	}
	return NULL;
}

static int count_lines(const char *buf, const char *needle)
{
	int n = 0;

	for (const char *p = buf; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void test_stress(void)
{
	struct sigaction sa = { .sa_sigaction = alarm_handler, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct itimerval itv = { { 0, 500 }, { 0, 500 } }, off = { 0 };
	pthread_t th[NTHREADS], mig, fk, ex;
	unsigned long b[ST_NR], a[ST_NR];
	long want[ST_NR] = { 0 };
	const char *sfx = boost ? "on" : "off";
	char name[64];
	sigset_t ss;
	int fd;

	memset(ncalls, 0, sizeof(ncalls));
	memset(tids, 0, sizeof(tids));
	nsig = sig_bad = sig_at_rep = mismatches = forks_ok = forks_bad = execs_ok = execs_bad = 0;
	stop_aux = 0;
	g_sum = 0;

	/* base table for exec'd children */
	fd = open("/tmp/xoltest.base", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		if (write(fd, base, sizeof(base)) != sizeof(base))
			note("short write of base table");
		close(fd);
	}

	/* migration tracepoint in its own trace instance, away from probe events */
	mkdir(TRACEFS "/instances/mig", 0755);
	write_file(TRACEFS "/instances/mig/trace", "", O_TRUNC);
	write_file(TRACEFS "/instances/mig/events/uprobes_xol/uprobe_slot_migrate/enable", "1", 0);

	c_endbr(0);	/* creates the [uprobes] area */
	xol_range(&xol_lo, &xol_hi);
	stats_read(b);
	pthread_barrier_init(&start_barrier, NULL, NTHREADS);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &itv, NULL);
	pthread_create(&mig, NULL, migrator, NULL);
	pthread_create(&fk, NULL, forker, (void *)0);
	pthread_create(&ex, NULL, forker, (void *)1);
	for (long i = 0; i < NTHREADS; i++)
		pthread_create(&th[i], NULL, worker, (void *)i);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	atomic_store(&stop_aux, 1);
	pthread_join(mig, NULL);
	pthread_join(fk, NULL);
	pthread_join(ex, NULL);
	setitimer(ITIMER_REAL, &off, NULL);
	sigemptyset(&ss);
	sigaddset(&ss, SIGALRM);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	usleep(20000);
	stats_read(a);
	sigprocmask(SIG_UNBLOCK, &ss, NULL);
	signal(SIGALRM, SIG_DFL);
	pthread_barrier_destroy(&start_barrier);

	for (int c = 0; c < NCALLS; c++) {
		long per[ST_NR] = { 0 };

		call_classes(&calls[c], per);
		for (int k = 0; k < ST_NR; k++)
			want[k] += per[k] * ncalls[c];
	}
	note("stress boost=%s: %ld signals, %ld+%ld forks, %ld+%ld execs, hits emu %lu boost %lu riprel %lu sstep %lu, reinstalls %lu migrations %lu deferred %lu translated %lu rep roll-backs %lu",
	     sfx, (long)nsig, (long)forks_ok, (long)forks_bad, (long)execs_ok, (long)execs_bad,
	     a[ST_EMU] - b[ST_EMU], a[ST_BOOST] - b[ST_BOOST], a[ST_RIPREL] - b[ST_RIPREL],
	     a[ST_SSTEP] - b[ST_SSTEP], a[ST_REINST] - b[ST_REINST], a[ST_MIGR] - b[ST_MIGR],
	     a[ST_SIGDEF] - b[ST_SIGDEF], a[ST_SIGTR] - b[ST_SIGTR], a[ST_REPRB] - b[ST_REPRB]);

	snprintf(name, sizeof(name), "stress_results_boost_%s", sfx);
	if (mismatches)
		fail(name, "%ld wrong results, first %s", (long)mismatches, mismatch_why);
	else {
		long sum = 0;

		for (int i = 0; i < NTHREADS; i++)
			for (int it = 0; it < ITERS; it++)
				sum += (it * NTHREADS + i + 15) % NARG;	/* rrmw is calls[15] */
		if (g_sum != sum)
			fail(name, "rip-relative read-modify-write sum %ld want %ld", g_sum, sum);
		else
			pass(name);
	}

	snprintf(name, sizeof(name), "stress_hits_exact_boost_%s", sfx);
	{
		char why[256] = "";

		/*
		 * Exact, except that a boosted rep the signal path caught
		 * mid-way goes back to its probe address and hits once more.
		 * Each such roll-back counts in rep_rollbacks; it happens
		 * before the signal is dequeued, so a process-wide SIGALRM
		 * another thread took first leaves a roll-back and no frame.
		 */
		for (int k = ST_EMU; k <= ST_SSTEP; k++) {
			long got = a[k] - b[k];
			long extra = k == ST_BOOST ? (long)(a[ST_REPRB] - b[ST_REPRB]) : 0;

			if (got < want[k] || got > want[k] + extra)
				snprintf(why + strlen(why), sizeof(why) - strlen(why),
					 "%s %ld want %ld (+%ld) ", stat_names[k], got, want[k], extra);
		}
		if (why[0])
			fail(name, "%s", why);
		else
			pass(name);
	}

	snprintf(name, sizeof(name), "stress_signal_frames_boost_%s", sfx);
	if (sig_bad || !nsig)
		fail(name, "%ld of %ld signal frames had the IP inside [uprobes]",
		     (long)sig_bad, (long)nsig);
	else
		pass(name);

	snprintf(name, sizeof(name), "stress_fork_exec_boost_%s", sfx);
	if (forks_bad || execs_bad || !forks_ok || !execs_ok)
		fail(name, "forks ok %ld bad %ld, execs ok %ld bad %ld", (long)forks_ok,
		     (long)forks_bad, (long)execs_ok, (long)execs_bad);
	else
		pass(name);

	if (!boost)
		return;
	if (a[ST_REINST] == b[ST_REINST])
		fail("stress_slot_reinstalls", "slot_reinstalls did not move");
	else
		pass("stress_slot_reinstalls");
	if (a[ST_MIGR] == b[ST_MIGR])
		fail("stress_slot_migrations", "slot_migrations did not move");
	else
		pass("stress_slot_migrations");
	{
		int n = count_lines(read_file(TRACEFS "/instances/mig/trace"),
				    "uprobe_slot_migrate:");

		write_file(TRACEFS "/instances/mig/events/uprobes_xol/uprobe_slot_migrate/enable",
			   "0", 0);
		if (n <= 0)
			fail("stress_migrate_tracepoint", "no uprobe_slot_migrate event in trace");
		else if ((unsigned long)n > a[ST_MIGR] - b[ST_MIGR])
			fail("stress_migrate_tracepoint", "%d events for %lu migrations", n,
			     a[ST_MIGR] - b[ST_MIGR]);
		else
			pass("stress_migrate_tracepoint");
		note("%d uprobe_slot_migrate events", n);
	}
}

/* ---- test: uretprobe ----------------------------------------------------- */
static void test_uretprobe(void)
{
	const char *name = boost ? "uretprobe_boost_on" : "uretprobe_boost_off";
	long h, bad = 0;
	int err;

	err = probe_add("ret_lea", (void *)f_lea, 1);
	if (!err)
		err = probe_enable("ret_lea", 1);
	if (err) {
		fail(name, "cannot place uretprobe: %s", strerror(-err));
		return;
	}
	h = profile_hits("ret_lea");
	for (int i = 0; i < 100; i++)
		if (c_lea(i) != base[7][i])
			bad++;
	h = profile_hits("ret_lea") - h;
	probe_enable("ret_lea", 0);
	write_file(TRACEFS "/uprobe_events", "-:xt/ret_lea\n", O_APPEND);
	if (bad || h != 100)
		fail(name, "%ld wrong results, %ld hits (want 100)", bad, h);
	else
		pass(name);
}

/* ---- test: many threads never block ---------------------------------------- */
#define MANY 256
static pthread_barrier_t many_barrier;

static void *many_worker(void *arg)
{
	pthread_barrier_wait(&many_barrier);
	for (int i = 0; i < 4; i++) {
		check(20, i, c_popf(i));	/* single-stepped: 6.1 allots ~31 slots */
		check(1, i, c_mov(i));
	}
	return NULL;
}

static void test_many_threads(void)
{
	const char *name = boost ? "many_threads_boost_on" : "many_threads_boost_off";
	static pthread_t th[MANY];
	unsigned long b[ST_NR], a[ST_NR];
	struct timespec t0, t1;
	long want_s = 4L * MANY * (boost ? 1 : 2), want_b = boost ? 4L * MANY : 0;
	int n = 0;

	mismatches = 0;
	stats_read(b);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_barrier_init(&many_barrier, NULL, MANY);
	for (; n < MANY; n++)
		if (pthread_create(&th[n], NULL, many_worker, NULL))
			break;
	if (n < MANY) {
		fail(name, "created only %d threads", n);
		exit(1);	/* the barrier would never open */
	}
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	stats_read(a);
	pthread_barrier_destroy(&many_barrier);
	note("%d threads done in %.2fs", n, t1.tv_sec - t0.tv_sec + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	if (mismatches)
		fail(name, "wrong results: %s", mismatch_why);
	else if ((long)(a[ST_SSTEP] - b[ST_SSTEP]) != want_s ||
		 (long)(a[ST_BOOST] - b[ST_BOOST]) != want_b)
		fail(name, "hits sstep %lu boost %lu want %ld %ld", a[ST_SSTEP] - b[ST_SSTEP],
		     a[ST_BOOST] - b[ST_BOOST], want_s, want_b);
	else
		pass(name);
}

/* ---- test: ptrace stops never show a slot --------------------------------- */
static void pid_xol_range(pid_t pid, unsigned long *lo, unsigned long *hi)
{
	char path[64], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "r");
	*lo = *hi = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, "[uprobes]")) {
			sscanf(line, "%lx-%lx", lo, hi);
			break;
		}
	}
	if (f)
		fclose(f);
}

static void test_ptrace(void)
{
	const char *name = boost ? "ptrace_stops_boost_on" : "ptrace_stops_boost_off";
	unsigned long lo, hi, b[ST_NR], a[ST_NR];
	int st, stops = 0, bad = 0;
	pid_t pid;

	stats_read(b);
	pid = fork();

	if (pid == 0) {
		/* probed calls forever; a wrong result ends the child with 1 */
		for (long i = 0;; i++)
			for (int c = 0; c < NCALLS; c++)
				if (!(calls[c].flags & LOCKED) &&
				    calls[c].fn(i % NARG) != base[c][i % NARG])
					_exit(1);
	}
	/*
	 * The child's [uprobes] area appears at its first hit (fork does not
	 * copy it); on a loaded host the child may not have run yet 50 ms after
	 * fork, so wait for it (at most 30 s; !lo fails below).
	 */
	for (int w = 0; w < 3000; w++) {
		pid_xol_range(pid, &lo, &hi);
		if (lo)
			break;
		usleep(10000);
	}
	if (ptrace(PTRACE_SEIZE, pid, 0, 0)) {
		fail(name, "PTRACE_SEIZE: %s", strerror(errno));
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		return;
	}
	for (int i = 0; i < 300; i++) {
		struct user_regs_struct r;

		usleep(1000 + (i % 7) * 300);
		if (ptrace(PTRACE_INTERRUPT, pid, 0, 0))
			break;
		if (waitpid(pid, &st, __WALL) != pid || !WIFSTOPPED(st))
			break;
		stops++;
		if (!ptrace(PTRACE_GETREGS, pid, 0, &r) && r.rip >= lo && r.rip < hi)
			bad++;
		ptrace(PTRACE_CONT, pid, 0, WSTOPSIG(st) == SIGTRAP ? 0 : WSTOPSIG(st));
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, __WALL) == pid && !WIFEXITED(st) && !WIFSIGNALED(st))
		;
	stats_read(a);
	note("%s: %d ptrace stops, signals_deferred +%lu", name, stops,
	     a[ST_SIGDEF] - b[ST_SIGDEF]);
	if (!lo || stops < 100 || bad || (WIFEXITED(st) && WEXITSTATUS(st)))
		fail(name, "%d stops, %d with the IP in [uprobes] %#lx-%#lx, child %s", stops,
		     bad, lo, hi, WIFEXITED(st) ? "computed a wrong result" : "ok");
	else
		pass(name);
}

/* ---- test: core dumps never show a slot ------------------------------------ */
/* RIP of the first NT_PRSTATUS note of an ELF core file, or 0. */
static unsigned long core_rip(const char *path)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	unsigned long rip = 0;
	Elf64_Ehdr eh;
	Elf64_Phdr ph;

	if (fd < 0)
		return 0;
	if (pread(fd, &eh, sizeof(eh), 0) != sizeof(eh))
		goto out;
	for (int i = 0; i < eh.e_phnum; i++) {
		size_t off = 0, len;

		if (pread(fd, &ph, sizeof(ph), eh.e_phoff + i * sizeof(ph)) != sizeof(ph))
			goto out;
		if (ph.p_type != PT_NOTE)
			continue;
		len = ph.p_filesz < sizeof(buf) ? ph.p_filesz : sizeof(buf);
		if (pread(fd, buf, len, ph.p_offset) != (ssize_t)len)
			goto out;
		while (off + sizeof(Elf64_Nhdr) <= len) {
			Elf64_Nhdr *nh = (Elf64_Nhdr *)(buf + off);
			char *desc = buf + off + sizeof(*nh) + ((nh->n_namesz + 3) & ~3);

			if (nh->n_type == NT_PRSTATUS) {
				/* struct elf_prstatus: pr_reg at 112, rip is register 16 */
				memcpy(&rip, desc + 112 + 16 * 8, sizeof(rip));
				goto out;
			}
			off += sizeof(*nh) + ((nh->n_namesz + 3) & ~3) + ((nh->n_descsz + 3) & ~3);
		}
	}
out:
	close(fd);
	return rip;
}

static void test_coredump(void)
{
	const char *name = boost ? "coredump_boost_on" : "coredump_boost_off";
	unsigned long b[ST_NR], a[ST_NR];
	int dumps = 0, bad = 0, n = 12;
	char why[128] = "";

	write_file("/proc/sys/kernel/core_pattern", "/tmp/core.%p", 0);
	stats_read(b);
	for (int k = 0; k < n; k++) {
		struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };
		unsigned long lo, hi, rip;
		char path[64], c;
		int st, pfd[2];
		pid_t pid;

		if (pipe(pfd))
			break;
		pid = fork();
		if (pid == 0) {
			setrlimit(RLIMIT_CORE, &rl);
			close(pfd[0]);
			close(pfd[1]);	/* ready: the parent's read returns */
			for (long i = 0;; i++)
				for (int c = 0; c < NCALLS; c++)
					if (!(calls[c].flags & LOCKED))
						calls[c].fn(i % NARG);
		}
		close(pfd[1]);
		while (read(pfd[0], &c, 1) < 0 && errno == EINTR)
			;
		close(pfd[0]);
		usleep(20000 + k * 3000);
		pid_xol_range(pid, &lo, &hi);
		kill(pid, SIGQUIT);
		waitpid(pid, &st, 0);
		snprintf(path, sizeof(path), "/tmp/core.%d", pid);
		if (!WIFSIGNALED(st) || !WCOREDUMP(st)) {
			snprintf(why, sizeof(why), "child %d did not dump core (status %#x)", pid, st);
			continue;
		}
		dumps++;
		rip = core_rip(path);
		/* inside the binary's own code, as the parent maps it (same layout) */
		if (!rip || (rip >= lo && rip < hi) || !file_offset((void *)rip)) {
			bad++;
			snprintf(why, sizeof(why), "core RIP %#lx, [uprobes] %#lx-%#lx", rip, lo, hi);
		}
		unlink(path);
	}
	stats_read(a);
	note("%s: %d core dumps, signals_deferred +%lu", name, dumps, a[ST_SIGDEF] - b[ST_SIGDEF]);
	if (dumps < n || bad)
		fail(name, "%d/%d dumps, %d bad: %s", dumps, n, bad, why);
	else
		pass(name);
}

/* ---- test: placement is UNKNOWN until the file is mapped ------------------ */
static void test_unknown(void)
{
	const char *name = boost ? "placement_unknown_until_mapped_boost_on" :
				   "placement_unknown_until_mapped_boost_off";
	const char *copy = "/tmp/xoltest.copy";
	char cmd[256], key[64], before[32] = "", after[32] = "", *p;
	unsigned long off = file_offset(s_mov);
	struct stat stbuf;
	int in, out, st;
	ssize_t n;
	pid_t pid;

	/* a copy of this binary that no process maps yet */
	in = open(exe, O_RDONLY);
	out = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	while (in >= 0 && out >= 0 && (n = read(in, cmd, sizeof(cmd))) > 0)
		if (write(out, cmd, n) != n)
			break;
	close(in);
	close(out);
	stat(copy, &stbuf);
	snprintf(cmd, sizeof(cmd), "p:xt/unk %s:0x%lx\n", copy, off);
	if (write_file(TRACEFS "/uprobe_events", cmd, O_APPEND) || probe_enable("unk", 1)) {
		fail(name, "cannot place a probe on %s", copy);
		return;
	}
	snprintf(key, sizeof(key), "%u:%u %lu 0x%lx ", major(stbuf.st_dev), minor(stbuf.st_dev),
		 (unsigned long)stbuf.st_ino, off);
	p = strstr(read_file(PLACEMENTS), key);
	if (p)
		sscanf(p + strlen(key), "%31s", before);
	pid = fork();
	if (pid == 0) {
		execl(copy, copy, "child", NULL);
		_exit(127);
	}
	waitpid(pid, &st, 0);
	p = strstr(read_file(PLACEMENTS), key);
	if (p)
		sscanf(p + strlen(key), "%31s", after);
	probe_enable("unk", 0);
	write_file(TRACEFS "/uprobe_events", "-:xt/unk\n", O_APPEND);
	unlink(copy);
	if (strcmp(before, "UNKNOWN") || strcmp(after, boost ? "BOOSTED" : "SINGLE_STEP") ||
	    !WIFEXITED(st) || WEXITSTATUS(st))
		fail(name, "before exec '%s', after '%s', child status %#x", before, after, st);
	else
		pass(name);
}

/* ---- test: refusal of bad prefixes and traps ------------------------------ */
static void test_refused(void)
{
	struct site *l = site_by_name("s_lock"), *t = site_by_name("s_int3");

	if (l->enabled || t->enabled)
		fail("refuse_bad_insns", "lock prefix %s, int3 %s",
		     l->enabled ? "accepted" : "refused", t->enabled ? "accepted" : "refused");
	else
		pass("refuse_bad_insns");
}

/* ---- benchmark ------------------------------------------------------------ */
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double time_calls(long (*fn)(long), int n)
{
	double t = now();

	for (int i = 0; i < n; i++)
		fn(i & 255);
	return now() - t;
}

static atomic_long bench_hits;
static atomic_int bench_stop;

static void *bench_worker(void *arg)
{
	long n = 0;

	pthread_barrier_wait(&start_barrier);
	while (!atomic_load(&bench_stop)) {
		c_mov(n);
		n++;
	}
	atomic_fetch_add(&bench_hits, n);
	return NULL;
}

static double bench_threads(double secs)
{
	pthread_t th[64];
	double t;

	bench_hits = 0;
	bench_stop = 0;
	pthread_barrier_init(&start_barrier, NULL, 65);
	for (long i = 0; i < 64; i++)
		pthread_create(&th[i], NULL, bench_worker, NULL);
	pthread_barrier_wait(&start_barrier);
	t = now();
	usleep(secs * 1e6);
	atomic_store(&bench_stop, 1);
	for (int i = 0; i < 64; i++)
		pthread_join(th[i], NULL);
	t = now() - t;
	pthread_barrier_destroy(&start_barrier);
	return bench_hits / t;
}

static void bench(int n)
{
	struct { const char *label, *site; long (*fn)(long); } b[] = {
		{ "emulated (nop)", "s_nop", c_nop },
		{ "boosted (mov)", "s_mov", c_mov },
		{ "boosted (endbr64)", "s_endbr", c_endbr },
		{ "boosted_riprel (mov rip)", "s_rload", c_rload },
		{ "single_step (popf)", "s_popf", c_popf },
		/* scratch %rdi = the argument: the same value every call, or a new one */
		{ "boosted_riprel (rdi same)", "s_rrsi", c_rrsi_same },
		{ "boosted_riprel (rdi varies)", "s_rrsi", c_rrsi },
	};
	int nb = sizeof(b) / sizeof(b[0]);
	double cost[2][8], base_t[8], tput[2];

	for (int i = 0; i < nb; i++) {
		base_t[i] = time_calls(b[i].fn, n);
		for (int round = 0; round < 4; round++) {
			double t = time_calls(b[i].fn, n);

			if (t < base_t[i])
				base_t[i] = t;
		}
	}
	for (int on = 1; on >= 0; on--) {
		set_boost(on);
		for (int i = 0; i < nb; i++)
			cost[on][i] = 1e9;
		/* rounds interleave the sites; the minimum filters host noise */
		for (int round = 0; round < 5; round++) {
			for (int i = 0; i < nb; i++) {
				double c;

				probes_clear();
				probe_add(b[i].site, site_by_name(b[i].site)->addr, 0);
				probe_enable(b[i].site, 1);
				b[i].fn(0);
				c = (time_calls(b[i].fn, n) - base_t[i]) / n * 1e6;
				if (c < cost[on][i])
					cost[on][i] = c;
			}
		}
		probes_clear();
		probe_add("s_mov", s_mov, 0);
		probe_enable("s_mov", 1);
		tput[on] = bench_threads(3.0);
		probes_clear();
	}
	set_boost(1);
	printf("BENCH per-hit cost, best of 5 rounds of %d hits per site, one boot (TCG: compare rows, not absolutes)\n", n);
	printf("BENCH %-26s %12s %8s %12s %8s\n", "site", "boost=1 us", "ratio", "boost=0 us", "ratio");
	for (int i = 0; i < nb; i++)
		printf("BENCH %-26s %12.2f %8.2f %12.2f %8.2f\n", b[i].label, cost[1][i],
		       cost[1][i] / cost[1][0], cost[0][i], cost[0][i] / cost[1][0]);
	printf("BENCH ratios are against the emulated site with boost=1.\n");
	printf("BENCH single_step/boosted (boost=1, popf vs mov): %.2f\n", cost[1][4] / cost[1][1]);
	printf("BENCH mov site boost=0 (single-stepped) / boost=1 (boosted): %.2f\n",
	       cost[0][1] / cost[1][1]);
	printf("BENCH 64 threads on s_mov: boost=1 %.0f hits/s, boost=0 %.0f hits/s, speedup %.2fx\n",
	       tput[1], tput[0], tput[1] / tput[0]);
	fflush(stdout);
}

/* ---- benchmark: boosted hits of one mm on every CPU at once --------------- */
/*
 * xoltest genbench SECS ROUNDS (bench/kernel/slotgen.sh): one boosted probe
 * (s_mov); each round measures, for SECS seconds each and in this order,
 * "one": one thread of this process pinned to CPU 0; "threads": one thread
 * of this process pinned to each online CPU; "procs": one single-threaded
 * process pinned to each online CPU.  Every hit installs the program in the
 * slot of its CPU and bumps that slot's generation, so "threads" is the case
 * where the generations of different CPUs of one mm are written
 * concurrently.  Prints hits/s per round and the medians.
 */
#define GB_MAX 64
struct gb_shared {
	atomic_int ready, go, stop;
	atomic_long hits[GB_MAX];
};
static struct gb_shared *gb;

static void gb_run(int id)
{
	long n = 0;

	pin(0, id);
	atomic_fetch_add(&gb->ready, 1);
	while (!atomic_load(&gb->go))
		;
	while (!atomic_load_explicit(&gb->stop, memory_order_relaxed)) {
		c_mov(n);
		n++;
	}
	atomic_store(&gb->hits[id], n);
}

static void *gb_thread(void *arg)
{
	gb_run((long)arg);
	return NULL;
}

/* mode 0: one thread on CPU 0, 1: a thread per CPU, 2: a process per CPU */
static double gb_measure(int mode, int ncpu, double secs)
{
	int n = mode ? ncpu : 1;
	pthread_t th[GB_MAX];
	pid_t pid[GB_MAX];
	double t, total = 0;

	memset(gb, 0, sizeof(*gb));
	for (long i = 0; i < n; i++) {
		if (mode == 2) {
			pid[i] = fork();
			if (!pid[i]) {
				gb_run(i);
				_exit(0);
			}
		} else {
			pthread_create(&th[i], NULL, gb_thread, (void *)i);
		}
	}
	while (atomic_load(&gb->ready) < n)
		usleep(1000);
	/* marks for the host, which reads qemu's vCPU thread CPU times at each */
	printf("GENBENCH mark start\n");
	t = now();
	atomic_store(&gb->go, 1);
	usleep(secs * 1e6);
	atomic_store(&gb->stop, 1);
	t = now() - t;
	printf("GENBENCH mark stop\n");
	for (int i = 0; i < n; i++) {
		if (mode == 2)
			waitpid(pid[i], NULL, 0);
		else
			pthread_join(th[i], NULL);
		total += atomic_load(&gb->hits[i]);
	}
	printf("GENBENCH phase %d hits %.0f secs %.3f\n", mode, total, t);
	return total / t;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int genbench(double secs, int rounds)
{
	static const char *const names[3] = { "one", "threads", "procs" };
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	double r[3][64], med[3];
	unsigned long b[ST_NR], a[ST_NR];

	if (rounds > 64)
		rounds = 64;
	if (ncpu > GB_MAX)
		ncpu = GB_MAX;
	gb = mmap(NULL, sizeof(*gb), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (gb == MAP_FAILED)
		return 1;
	set_boost(1);
	probes_clear();
	if (probe_add("s_mov", s_mov, 0) || probe_enable("s_mov", 1)) {
		printf("GENBENCH cannot place a probe on s_mov\n");
		return 1;
	}
	c_mov(0);
	stats_read(b);
	for (int k = 0; k < rounds; k++) {
		for (int m = 0; m < 3; m++)
			r[m][k] = gb_measure(m, ncpu, secs);
		printf("GENBENCH round %d hits/s one %.0f threads %.0f procs %.0f\n", k + 1,
		       r[0][k], r[1][k], r[2][k]);
	}
	stats_read(a);
	probes_clear();
	for (int m = 0; m < 3; m++) {
		qsort(r[m], rounds, sizeof(double), cmp_double);
		med[m] = r[m][rounds / 2];
	}
	printf("GENBENCH cpus %d, %d rounds of %.1f s per mode, boosted hits %lu, single-stepped %lu\n",
	       ncpu, rounds, secs, a[ST_BOOST] - b[ST_BOOST], a[ST_SSTEP] - b[ST_SSTEP]);
	for (int m = 0; m < 3; m++)
		printf("GENBENCH median %-7s %.0f hits/s (min %.0f max %.0f)\n", names[m], med[m],
		       r[m][0], r[m][rounds - 1]);
	printf("GENBENCH threads/one %.3f procs/one %.3f threads/procs %.3f\n", med[1] / med[0],
	       med[2] / med[0], med[1] / med[2]);
	return 0;
}

/* ---- measurements: single-steps per site, placement of library entries ---- */
/*
 * xoltest dbcount on|off: every executable site of calls[] once, boosting on
 * or off; prints the kernel's hits per placement.  Each single-stepped hit
 * is one #DB: bench/kernel/sstep.sh counts them in qemu's "-d int" log
 * (nothing else in the guest single-steps) and compares.
 */
static int dbcount(int on)
{
	unsigned long b[ST_NR], a[ST_NR];
	char list[2048] = "";

	set_boost(on);
	probes_all();
	stats_read(b);
	for (int c = 0; c < NCALLS; c++) {
		unsigned long s0[ST_NR], s1[ST_NR];

		stats_read(s0);
		if (calls[c].fn(5) != base[c][5])
			printf("DBCOUNT wrong result %s\n", calls[c].name);
		stats_read(s1);
		if (s1[ST_SSTEP] != s0[ST_SSTEP])
			snprintf(list + strlen(list), sizeof(list) - strlen(list), " %s:%lu",
				 calls[c].name, s1[ST_SSTEP] - s0[ST_SSTEP]);
	}
	stats_read(a);
	probes_clear();
	printf("DBCOUNT boost=%d calls=%d emulated=%lu boosted=%lu boosted_riprel=%lu single_step=%lu stepped:%s\n",
	       on, NCALLS, a[ST_EMU] - b[ST_EMU], a[ST_BOOST] - b[ST_BOOST],
	       a[ST_RIPREL] - b[ST_RIPREL], a[ST_SSTEP] - b[ST_SSTEP], list);
	set_boost(1);
	return 0;
}

/*
 * xoltest libplace LIB...: a uprobe on every offset listed in LIB.offs (the
 * library's function entries, one hex file offset a line), enabled as one
 * group; LIB is then mapped executable so the kernel analyses every site,
 * and its placements file is counted per library, boosting on and off.
 */
static int libplace(int argc, char **argv)
{
	for (int on = 1; on >= 0; on--) {
		set_boost(on);
		for (int l = 0; l < argc; l++) {
			char path[512], line[64], *all, key[64];
			long n = 0, refused = 0, cnt[6] = { 0 };
			const char *names[6] = { "EMULATED", "BOOSTED", "BOOSTED_RIPREL",
						 "SINGLE_STEP", "UNKNOWN", "other" };
			struct stat st;
			FILE *f;
			void *map;
			int fd;

			write_file(TRACEFS "/events/xl/enable", "0", 0);
			write_file(TRACEFS "/uprobe_events", "", O_TRUNC);
			snprintf(path, sizeof(path), "%s.offs", argv[l]);
			f = fopen(path, "r");
			if (!f || stat(argv[l], &st))
				return printf("LIBPLACE cannot read %s\n", path), 1;
			while (fgets(line, sizeof(line), f)) {
				char cmd[640];

				snprintf(cmd, sizeof(cmd), "p:xl/e%ld %s:0x%lx\n", n++, argv[l],
					 strtoul(line, NULL, 16));
				if (write_file(TRACEFS "/uprobe_events", cmd, O_APPEND))
					refused++;
			}
			fclose(f);
			write_file(TRACEFS "/events/xl/enable", "1", 0);
			fd = open(argv[l], O_RDONLY);
			map = mmap(NULL, st.st_size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
			all = read_file(PLACEMENTS);
			snprintf(key, sizeof(key), "%u:%u %lu ", major(st.st_dev), minor(st.st_dev),
				 (unsigned long)st.st_ino);
			for (char *p = all; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
				char pl[32] = "";
				int k;

				if (strncmp(p, key, strlen(key)))
					continue;
				sscanf(p, "%*s %*s %*s %31s", pl);
				for (k = 0; k < 5 && strcmp(pl, names[k]); k++)
					;
				cnt[k]++;
			}
			munmap(map, st.st_size);
			close(fd);
			{
				long tot = cnt[0] + cnt[1] + cnt[2] + cnt[3];

				printf("LIBPLACE boost=%d %s entries=%ld not_registered=%ld EMULATED=%ld BOOSTED=%ld BOOSTED_RIPREL=%ld SINGLE_STEP=%ld UNKNOWN=%ld single_step_share=%.2f%%\n",
				       on, strrchr(argv[l], '/') ? strrchr(argv[l], '/') + 1 : argv[l], n,
				       refused, cnt[0], cnt[1], cnt[2], cnt[3], cnt[4] + cnt[5],
				       tot ? 100.0 * cnt[3] / tot : 0.0);
			}
			write_file(TRACEFS "/events/xl/enable", "0", 0);
			write_file(TRACEFS "/uprobe_events", "", O_TRUNC);
		}
	}
	set_boost(1);
	return 0;
}

/*
 * xoltest mixed SECONDS: the MTTCG crash scenario of kernel/README.md in one
 * process: 8 threads re-pinned every 50 rounds plus a migrator, calling a
 * boosted (s_mov), a second boosted (s_endbr) and a boosted rip-relative
 * (s_rload) site, so that each CPU's slot keeps switching between programs
 * of different length.  Runs in a child; prints whether it died and how.
 */
static atomic_int mixed_stop;

/* The fault: where, and what the slots hold at that moment. */
static void mixed_segv(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	const unsigned char *x = (const unsigned char *)xol_lo;

	printf("MIXED signal %d code %d addr %p rip %#llx on cpu %d; [uprobes] at %#lx\n", sig,
	       si->si_code, si->si_addr, (unsigned long long)uc->uc_mcontext.gregs[REG_RIP],
	       sched_getcpu(), xol_lo);
	for (int slot = 1; slot <= 2; slot++) {
		printf("MIXED slot %d:", slot);
		for (int i = 0; i < 64; i++)
			printf(" %02x", x[slot * 128 + i]);
		printf("\n");
	}
	fflush(stdout);
	_exit(4);
}

static void *mixed_worker(void *arg)
{
	long id = (long)arg, n = 0;
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	tids[id] = syscall(SYS_gettid);
	while (!atomic_load(&mixed_stop)) {
		pin(0, (id + n / 50) % ncpu);
		for (int k = 0; k < 50; k++, n++) {
			if (f_mov(n) != n + 3 || f_endbr(n) != n + 1 || f_rload() != 0x1234) {
				printf("MIXED wrong result in thread %ld\n", id);
				_exit(3);
			}
		}
	}
	return (void *)n;
}

static int mixed(int secs)
{
	int st;
	pid_t p;

	set_boost(1);
	probes_clear();
	for (const char **n = (const char *[]){ "s_mov", "s_endbr", "s_rload", NULL }; *n; n++) {
		probe_add(*n, site_by_name(*n)->addr, 0);
		probe_enable(*n, 1);
	}
	c_endbr(0);	/* creates the [uprobes] area */
	xol_range(&xol_lo, &xol_hi);
	p = fork();
	if (!p) {
		struct sigaction sa = { .sa_sigaction = mixed_segv, .sa_flags = SA_SIGINFO };
		pthread_t th[8], mig;
		long calls = 0;

		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
		sigaction(SIGILL, &sa, NULL);
		printf("MIXED s_mov %p s_endbr %p s_rload %p\n", s_mov, s_endbr, s_rload);

		for (long i = 0; i < 8; i++)
			pthread_create(&th[i], NULL, mixed_worker, (void *)i);
		pthread_create(&mig, NULL, migrator, NULL);
		sleep(secs);
		atomic_store(&mixed_stop, 1);
		atomic_store(&stop_aux, 1);
		for (int i = 0; i < 8; i++) {
			void *r;

			pthread_join(th[i], &r);
			calls += (long)r;
		}
		pthread_join(mig, NULL);
		printf("MIXED survived %d s, %ld rounds of 3 calls\n", secs, calls);
		_exit(0);
	}
	waitpid(p, &st, 0);
	probes_clear();
	if (WIFSIGNALED(st))
		printf("MIXED died: signal %d\n", WTERMSIG(st));
	return st ? 1 : 0;
}

/*
 * xoltest soak HITS MIGRATIONS SECONDS [SIGNAL_US]: the long run of issue 8
 * (kernel/soak.sh).  SOAK_W threads call boosted and boosted rip-relative
 * sites (results checked against the unprobed table), each re-pinned every
 * SOAK_PIN rounds plus a migrator re-pinning them from outside; every round
 * also runs a short boosted rep (16 iterations: under TCG each iteration
 * ends a translation block, so a pending interrupt can be taken between the
 * last iteration and the slot's jump back, the forward-translation window)
 * and every SOAK_LONG rounds a long one (the task stays in the slot long
 * enough to be preempted and moved there: slot migrations).  Each worker has
 * its own timer_create() timer directed at it (SIGEV_THREAD_ID), so every
 * signal the kernel translates or defers is delivered to the thread that was
 * in the slot.  Runs until both targets are reached or SECONDS pass.
 */
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif
#define SOAK_W 6
#define SOAK_PIN 16
#define SOAK_LONG 4
#define SOAK_LONG_N 4096
static atomic_int soak_stop;
static atomic_long soak_rounds, soak_rep_bad, soak_sig_at_rep;
static long soak_sig_us = 200;

static void soak_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	unsigned long ip = uc->uc_mcontext.gregs[REG_RIP];
	int saved = errno;

	if (ip >= xol_lo && ip < xol_hi)
		atomic_fetch_add(&sig_bad, 1);
	if (ip == (unsigned long)s_rep)	/* a boosted rep rolled back mid-way */
		atomic_fetch_add(&soak_sig_at_rep, 1);
	atomic_fetch_add(&nsig, 1);
	errno = saved;
}

static void *soak_worker(void *arg)
{
	static const char *const names[] = { "endbr", "mov", "load", "alu", "test", "lea",
		"div", "rload", "rlea", "rcmp", "rsse", "rrsi", "rep", NULL };
	int cs[16], nc = 0, ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	long id = (long)arg, n = 0;
	char *src = malloc(SOAK_LONG_N), *dst = malloc(SOAK_LONG_N);
	struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM };
	struct itimerspec its = { { 0, soak_sig_us * 1000 }, { 0, soak_sig_us * 1000 } };
	timer_t tm;

	for (const char *const *p = names; *p; p++)
		for (int c = 0; c < NCALLS; c++)
			if (!strcmp(calls[c].name, *p))
				cs[nc++] = c;
	tids[id] = syscall(SYS_gettid);
	sev.sigev_notify_thread_id = tids[id];
	if (soak_sig_us > 0 && !timer_create(CLOCK_MONOTONIC, &sev, &tm))
		timer_settime(tm, 0, &its, NULL);
	while (!atomic_load(&soak_stop)) {
		if (n % SOAK_PIN == 0)
			pin(0, (id + n / SOAK_PIN) % ncpu);
		for (int k = 0; k < nc; k++) {
			long a = (n * 7 + id + k) % NARG;

			check(cs[k], a, calls[cs[k]].fn(a));
		}
		if (n % SOAK_LONG == 0) {
			for (int k = 0; k < SOAK_LONG_N; k++)
				src[k] = (char)(n + k * 13);
			memset(dst, 0, SOAK_LONG_N);
			f_rep(dst, src, SOAK_LONG_N);
			if (memcmp(dst, src, SOAK_LONG_N))
				atomic_fetch_add(&soak_rep_bad, 1);
		}
		n++;
	}
	if (soak_sig_us > 0)
		timer_delete(tm);
	atomic_fetch_add(&soak_rounds, n);
	free(src);
	free(dst);
	return NULL;
}

static void *soak_migrator(void *arg)
{
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned int r = 1;

	while (!atomic_load(&soak_stop)) {
		r = r * 1103515245 + 12345;
		if (tids[(r >> 8) % SOAK_W])
			pin(tids[(r >> 8) % SOAK_W], (r >> 4) % ncpu);
		sched_yield();
	}
	return NULL;
}

static int soak(long hits_target, long migr_target, long secs)
{
	static const char *const probes[] = { "s_endbr", "s_mov", "s_load", "s_alu", "s_test",
		"s_lea", "s_div", "s_rload", "s_rlea", "s_rcmp", "s_rsse", "s_rrsi", "s_rep", NULL };
	struct sigaction sa = { .sa_sigaction = soak_handler, .sa_flags = SA_SIGINFO | SA_RESTART };
	unsigned long b[ST_NR], a[ST_NR];
	pthread_t th[SOAK_W], mig;
	double t0, t, last = 0;
	long wrong, hits, fwd, back;
	int ok;

	set_boost(1);
	probes_clear();
	for (const char *const *p = probes; *p; p++)
		if (probe_add(*p, site_by_name(*p)->addr, 0) || probe_enable(*p, 1)) {
			printf("SOAK cannot place a probe on %s\n", *p);
			return 1;
		}
	memset(tids, 0, sizeof(tids));
	nsig = sig_bad = mismatches = 0;
	c_endbr(0);	/* creates the [uprobes] area */
	xol_range(&xol_lo, &xol_hi);
	sigaction(SIGALRM, &sa, NULL);
	printf("SOAK start: %d workers, %d vCPUs, targets %ld boosted+riprel hits, %ld slot migrations, at most %ld s, per-thread signal every %ld us\n",
	       SOAK_W, (int)sysconf(_SC_NPROCESSORS_ONLN), hits_target, migr_target, secs,
	       soak_sig_us);
	stats_read(b);
	t0 = now();
	for (long i = 0; i < SOAK_W; i++)
		pthread_create(&th[i], NULL, soak_worker, (void *)i);
	pthread_create(&mig, NULL, soak_migrator, NULL);
	for (;;) {
		sleep(2);
		stats_read(a);
		t = now() - t0;
		hits = (a[ST_BOOST] - b[ST_BOOST]) + (a[ST_RIPREL] - b[ST_RIPREL]);
		if (t - last >= 30) {
			printf("SOAK t=%.0fs boosted %lu riprel %lu migrations %lu translated %lu rep-rollbacks %lu deferred %lu signals %ld wrong %ld\n",
			       t, a[ST_BOOST] - b[ST_BOOST], a[ST_RIPREL] - b[ST_RIPREL],
			       a[ST_MIGR] - b[ST_MIGR], a[ST_SIGTR] - b[ST_SIGTR],
			       a[ST_REPRB] - b[ST_REPRB],
			       a[ST_SIGDEF] - b[ST_SIGDEF], (long)nsig,
			       (long)mismatches + (long)soak_rep_bad);
			last = t;
		}
		if ((hits >= hits_target && (long)(a[ST_MIGR] - b[ST_MIGR]) >= migr_target) ||
		    t >= secs)
			break;
	}
	atomic_store(&soak_stop, 1);
	for (int i = 0; i < SOAK_W; i++)
		pthread_join(th[i], NULL);
	pthread_join(mig, NULL);
	t = now() - t0;
	stats_read(a);
	signal(SIGALRM, SIG_DFL);
	probes_clear();

	hits = (a[ST_BOOST] - b[ST_BOOST]) + (a[ST_RIPREL] - b[ST_RIPREL]);
	wrong = (long)mismatches + (long)soak_rep_bad;
	printf("SOAK duration %.0f s, %ld rounds of %d probed calls + a 16-byte boosted rep, long rep every %d rounds\n",
	       t, (long)soak_rounds, 12, SOAK_LONG);
	for (int k = 0; k < ST_NR; k++)
		printf("SOAK %-20s %lu\n", stat_names[k], a[k] - b[k]);
	printf("SOAK boosted+riprel         %ld\n", hits);
	printf("SOAK signals delivered      %ld (frames inside [uprobes]: %ld, at the rep probe address: %ld)\n",
	       (long)nsig, (long)sig_bad, (long)soak_sig_at_rep);
	/*
	 * signals_translated counts forward translations only; boosted-rep
	 * roll-backs are rep_rollbacks (a frame at the rep's address is also
	 * what a signal taken just before the probe's int3 shows).
	 */
	printf("SOAK wrong results          %ld (calls %ld, long reps %ld)%s%s\n", wrong,
	       (long)mismatches, (long)soak_rep_bad, mismatches ? ", first " : "",
	       mismatches ? mismatch_why : "");
	/*
	 * A signal found the task in a slot program: forward past the displaced
	 * instruction (signals_translated), or back to the probe address
	 * (rep_rollbacks, fault_rollbacks); a deferred one was stepped to the
	 * end of the instruction first, then went forward.
	 */
	fwd = a[ST_SIGTR] - b[ST_SIGTR];
	back = (a[ST_REPRB] - b[ST_REPRB]) + (a[ST_ROLLB] - b[ST_ROLLB]);
	printf("SOAK translations forward %ld (signals_translated), back %ld (rep_rollbacks %lu, fault_rollbacks %lu), deferred then forward %lu\n",
	       fwd, back, a[ST_REPRB] - b[ST_REPRB], a[ST_ROLLB] - b[ST_ROLLB],
	       a[ST_SIGDEF] - b[ST_SIGDEF]);
	ok = hits >= hits_target && (long)(a[ST_MIGR] - b[ST_MIGR]) >= migr_target && !wrong &&
	     !sig_bad && fwd > 0;
	printf("SOAK %s: boosted+riprel hits %ld (>= %ld %s), slot_migrations %lu (>= %ld %s), forward translations %ld (> 0 %s), back %ld, wrong results %ld (%s), frames in slot %ld\n",
	       ok ? "PASS" : "FAIL", hits, hits_target, hits >= hits_target ? "ok" : "MISSED",
	       a[ST_MIGR] - b[ST_MIGR], migr_target,
	       (long)(a[ST_MIGR] - b[ST_MIGR]) >= migr_target ? "ok" : "MISSED", fwd,
	       fwd > 0 ? "ok" : "MISSED", back, wrong, wrong ? "FAIL" : "ok", (long)sig_bad);
	return ok ? 0 : 1;
}

/* ---- main ------------------------------------------------------------------ */
int main(int argc, char **argv)
{
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return 2;
	exe[n] = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (argc > 1 && !strcmp(argv[1], "child")) {
		int fd = open("/tmp/xoltest.base", O_RDONLY);

		if (fd < 0 || read(fd, base, sizeof(base)) != sizeof(base))
			return 3;
		close(fd);
		return child_work(CHILD_N) ? 1 : 0;
	}

	sites_init();
	compute_base();		/* unprobed reference results */
	for (int i = 0; i < NBF; i++)
		bf_run(i, &bf_base[i]);	/* unprobed faults */
	rstack_base();		/* unprobed rip-relative runs on tight stacks */

	if (argc > 4 && !strcmp(argv[1], "soak")) {
		if (argc > 5)
			soak_sig_us = atol(argv[5]);
		return soak(atol(argv[2]), atol(argv[3]), atol(argv[4]));
	}
	if (argc > 2 && !strcmp(argv[1], "mixed"))
		return mixed(atoi(argv[2]));
	if (argc > 1 && !strcmp(argv[1], "kvm")) {
		/* the KVM test alone (run-vm.sh --distro --mode kvm) */
		set_boost(1);
		probes_all();
		test_kvm();
		probes_clear();
		return failures ? 1 : 0;
	}
	if (argc > 2 && !strcmp(argv[1], "dbcount"))
		return dbcount(!strcmp(argv[2], "on"));
	if (argc > 2 && !strcmp(argv[1], "libplace"))
		return libplace(argc - 2, argv + 2);
	if (argc > 3 && !strcmp(argv[1], "genbench"))
		return genbench(atof(argv[2]), atoi(argv[3]));
	if (argc > 1 && !strcmp(argv[1], "bench")) {
		bench(argc > 2 ? atoi(argv[2]) : 2000);
		return 0;
	}

	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2)
		pass("smp_cpus_online");
	else
		fail("smp_cpus_online", "only %ld CPU online", sysconf(_SC_NPROCESSORS_ONLN));
	if (access(STATS, R_OK) || access(PLACEMENTS, R_OK) || access(BOOST, W_OK)) {
		fail("interfaces_present", "missing %s, %s or %s", STATS, PLACEMENTS, BOOST);
		return 1;
	}
	pass("interfaces_present");

	for (int on = 1; on >= 0; on--) {
		set_boost(on);
		probes_all();
		test_placement();
		if (on)
			test_refused();
		test_class_hits();
		test_fault();
		test_branch_faults();
		test_trapno();
		test_riprel_stack();
		if (on) {
			test_rep_interrupt();
			test_xol_area();
			test_watchpoint();
			test_rseq();
			test_kvm();
		}
		test_uretprobe();
		test_stress();
		test_unknown();		/* after test_stress(): needs the base file */
		test_many_threads();
		test_ptrace();
		test_coredump();
		probes_clear();
	}
	set_boost(1);
	return failures ? 1 : 0;
}
