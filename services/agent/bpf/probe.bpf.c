// The one BPF program behind every xolfleet probe (see probe.h for the
// slot/cookie scheme).
//
// On a hit: find the probe's slot from the link's BPF cookie, drop hits of
// other processes (pid filter), count the hit in a per-CPU counter, and, when
// the probe captures registers, pass the per-probe rate limit (ratelimit.h) and
// write an event to the ring buffer. Nothing is ever lost silently:
// rate-limited and ring-buffer-full events are counted per probe.
//
// Built without vmlinux.h: with __TARGET_ARCH_x86, bpf_tracing.h and the uapi
// struct pt_regs use the register names of asm/ptrace.h (rdi, rsi, ...), which
// is all a uprobe needs.
#include "probe.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>

#include "ratelimit.h"

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, XOL_DEFAULT_MAX_PROBES);
  __type(key, __u32);
  __type(value, struct xol_probe_config);
} xol_config SEC(".maps");

// max_probes + 1 entries: the last one sums all probes (cheap global totals).
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, XOL_DEFAULT_MAX_PROBES + 1);
  __type(key, __u32);
  __type(value, struct xol_probe_counters);
} xol_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 16 << 20);
} xol_events SEC(".maps");

// Index of the totals entry of xol_counters (set by the agent before load).
const volatile __u32 xol_totals_slot = XOL_DEFAULT_MAX_PROBES;

// Wake the agent's reader only once this many bytes wait in the ring buffer (set by the
// agent before load; 0: the kernel's default, a wakeup whenever the reader had caught up).
// The default woke the reader for nearly every event of a probe hit at a moderate rate,
// and that wakeup runs in the probed task: calibration measured a captured event at
// 0.8-4 us with it (an IPI on a VM) against 0.2 us without. The reader polls every 10 ms.
const volatile __u64 xol_wakeup_bytes = 0;

// Checks the ring buffer's fill level (a helper call) only on every
// XOL_WAKEUP_CHECK_EVERY-th event of a CPU: far below xol_wakeup_bytes (an eighth of
// the buffer) on any CPU count, and one helper call fewer on the other events.
#define XOL_WAKEUP_CHECK_EVERY 64

// Register `field` of the probed task into event slot `s`, when the event has that
// slot (`slots`, a constant in each instance of xol_emit) and the probe captures the
// register (`reg`, enum xol_reg).
#define XOL_CAPTURE(s, reg, field) \
  if ((slots) > (s) && (mask & (1u << (reg)))) e->regs[s] = ctx->field

// Writes one event of XOL_EVENT_BYTES(slots) bytes: only the header and the register
// slots the probe asks for are reserved and written (a 176-byte register block for
// every event cost the probed task three cache lines and a memset per hit). The
// verifier wants a constant size for a ring-buffer reservation, so xol_probe picks
// one instance per slot count.
static __always_inline int xol_emit(struct pt_regs* ctx, const struct xol_probe_config* cfg,
                                    struct xol_probe_counters* c, struct xol_probe_counters* t,
                                    __u64 cookie, __u64 now, __u64 pid_tgid, const __u32 slots) {
  struct xol_hit_event* e = bpf_ringbuf_reserve(&xol_events, XOL_EVENT_BYTES(slots), 0);
  if (!e) {
    c->dropped++;
    t->dropped++;
    return 0;
  }
  const __u32 mask = cfg->capture_mask;
  e->cookie = cookie;
  e->ktime_ns = now;
  e->pid = pid_tgid >> 32;
  e->tid = (__u32)pid_tgid;
  e->cpu = bpf_get_smp_processor_id();
  e->capture_mask = mask;
  XOL_CAPTURE(XOL_SLOT_RDI, XOL_REG_RDI, rdi);
  XOL_CAPTURE(XOL_SLOT_RSI, XOL_REG_RSI, rsi);
  XOL_CAPTURE(XOL_SLOT_RDX, XOL_REG_RDX, rdx);
  XOL_CAPTURE(XOL_SLOT_RCX, XOL_REG_RCX, rcx);
  XOL_CAPTURE(XOL_SLOT_R8, XOL_REG_R8, r8);
  XOL_CAPTURE(XOL_SLOT_R9, XOL_REG_R9, r9);
  XOL_CAPTURE(XOL_SLOT_RAX, XOL_REG_RAX, rax);
  XOL_CAPTURE(XOL_SLOT_RBX, XOL_REG_RBX, rbx);
  XOL_CAPTURE(XOL_SLOT_RBP, XOL_REG_RBP, rbp);
  XOL_CAPTURE(XOL_SLOT_RSP, XOL_REG_RSP, rsp);
  XOL_CAPTURE(XOL_SLOT_R10, XOL_REG_R10, r10);
  XOL_CAPTURE(XOL_SLOT_R11, XOL_REG_R11, r11);
  XOL_CAPTURE(XOL_SLOT_R12, XOL_REG_R12, r12);
  XOL_CAPTURE(XOL_SLOT_R13, XOL_REG_R13, r13);
  XOL_CAPTURE(XOL_SLOT_R14, XOL_REG_R14, r14);
  XOL_CAPTURE(XOL_SLOT_R15, XOL_REG_R15, r15);
  XOL_CAPTURE(XOL_SLOT_RIP, XOL_REG_RIP, rip);
  XOL_CAPTURE(XOL_SLOT_EFLAGS, XOL_REG_EFLAGS, eflags);
  __u64 flags = 0;
  if (xol_wakeup_bytes) {
    flags = BPF_RB_NO_WAKEUP;
    if ((t->emitted & (XOL_WAKEUP_CHECK_EVERY - 1)) == 0 &&
        bpf_ringbuf_query(&xol_events, BPF_RB_AVAIL_DATA) >= xol_wakeup_bytes) {
      flags = BPF_RB_FORCE_WAKEUP;
    }
  }
  bpf_ringbuf_submit(e, flags);
  c->emitted++;
  t->emitted++;
  return 0;
}

#define XOL_EMIT_CASE(n) \
  case n:                \
    return xol_emit(ctx, cfg, c, t, cookie, now, pid_tgid, n)

SEC("uprobe")
int xol_probe(struct pt_regs* ctx) {
  __u64 cookie = bpf_get_attach_cookie(ctx);
  __u32 slot = (__u32)cookie;
  struct xol_probe_config* cfg = bpf_map_lookup_elem(&xol_config, &slot);
  if (!cfg || cfg->generation != (__u32)(cookie >> 32)) return 0;

  __u64 pid_tgid = bpf_get_current_pid_tgid();
  if (cfg->pid && (__u32)(pid_tgid >> 32) != cfg->pid) return 0;

  struct xol_probe_counters* c = bpf_map_lookup_elem(&xol_counters, &slot);
  __u32 totals_slot = xol_totals_slot;
  struct xol_probe_counters* t = bpf_map_lookup_elem(&xol_counters, &totals_slot);
  if (!c || !t) return 0;
  c->hits++;
  t->hits++;
  if (!cfg->capture_mask) return 0;

  __u64 now = bpf_ktime_get_ns();
  if (cfg->rate_interval_ns &&
      !xol_gcra_admit(&cfg->rate_tat_ns, now, cfg->rate_interval_ns, cfg->rate_burst_ns)) {
    c->rate_limited++;
    t->rate_limited++;
    return 0;
  }

  switch (cfg->event_slots) {
    XOL_EMIT_CASE(0);
    XOL_EMIT_CASE(1);
    XOL_EMIT_CASE(2);
    XOL_EMIT_CASE(3);
    XOL_EMIT_CASE(4);
    XOL_EMIT_CASE(5);
    XOL_EMIT_CASE(6);
    XOL_EMIT_CASE(7);
    XOL_EMIT_CASE(8);
    XOL_EMIT_CASE(9);
    XOL_EMIT_CASE(10);
    XOL_EMIT_CASE(11);
    XOL_EMIT_CASE(12);
    XOL_EMIT_CASE(13);
    XOL_EMIT_CASE(14);
    XOL_EMIT_CASE(15);
    XOL_EMIT_CASE(16);
    XOL_EMIT_CASE(17);
    default:
      return xol_emit(ctx, cfg, c, t, cookie, now, pid_tgid, XOL_NUM_REGS);
  }
}
