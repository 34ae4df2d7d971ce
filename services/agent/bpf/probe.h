// Structures shared by the probe BPF program (probe.bpf.c) and the agent that loads it.
//
// One BPF program serves every probe. The agent gives each attached probe a
// slot index in [0, max_probes) and a generation; the 64-bit BPF cookie of the
// probe's link carries (generation << 32 | slot). The program looks its slot up
// in `xol_config` and ignores the hit when the generation does not match: that makes a slot safe to
// reuse while an old link is still being torn down, and lets the agent re-link the survivors of a
// partially detached multi link without counting any hit twice.
#ifndef XOLFLEET_SERVICES_AGENT_BPF_PROBE_H_
#define XOLFLEET_SERVICES_AGENT_BPF_PROBE_H_

#include <linux/types.h>

// Capacity of the per-probe maps; the agent resizes them before load (--max-probes).
#define XOL_DEFAULT_MAX_PROBES 1024
// Registers a hit event can carry: the values of xolfleet.v1.Register minus one.
#define XOL_NUM_REGS 18
// Bytes of a hit event carrying `slots` register slots (struct xol_hit_event).
#define XOL_EVENT_BYTES(slots) (32 + 8 * (slots))
// The BPF cookie of slot `slot` at generation `gen`.
#define XOL_COOKIE(gen, slot) (((__u64)(gen) << 32) | (__u32)(slot))

enum xol_reg {
  XOL_REG_RAX = 0,
  XOL_REG_RBX,
  XOL_REG_RCX,
  XOL_REG_RDX,
  XOL_REG_RSI,
  XOL_REG_RDI,
  XOL_REG_RBP,
  XOL_REG_RSP,
  XOL_REG_R8,
  XOL_REG_R9,
  XOL_REG_R10,
  XOL_REG_R11,
  XOL_REG_R12,
  XOL_REG_R13,
  XOL_REG_R14,
  XOL_REG_R15,
  XOL_REG_RIP,
  XOL_REG_EFLAGS,
};

// Where a captured register sits in an event (xol_hit_event.regs): the argument
// registers of the x86-64 calling convention first, so an event carries only the
// slots up to the last captured one (rdi alone: 1 slot, 40 bytes; every register: 18,
// 176 bytes) and the program writes, and the agent reads, no more than that.
enum xol_slot {
  XOL_SLOT_RDI = 0,
  XOL_SLOT_RSI,
  XOL_SLOT_RDX,
  XOL_SLOT_RCX,
  XOL_SLOT_R8,
  XOL_SLOT_R9,
  XOL_SLOT_RAX,
  XOL_SLOT_RBX,
  XOL_SLOT_RBP,
  XOL_SLOT_RSP,
  XOL_SLOT_R10,
  XOL_SLOT_R11,
  XOL_SLOT_R12,
  XOL_SLOT_R13,
  XOL_SLOT_R14,
  XOL_SLOT_R15,
  XOL_SLOT_RIP,
  XOL_SLOT_EFLAGS,
};

#ifndef __bpf__
// The slot of register `reg` (enum xol_reg) in an event.
static inline __u32 xol_reg_slot(__u32 reg) {
  static const __u8 kSlot[XOL_NUM_REGS] = {
      XOL_SLOT_RAX, XOL_SLOT_RBX, XOL_SLOT_RCX, XOL_SLOT_RDX, XOL_SLOT_RSI, XOL_SLOT_RDI,
      XOL_SLOT_RBP, XOL_SLOT_RSP, XOL_SLOT_R8,  XOL_SLOT_R9,  XOL_SLOT_R10, XOL_SLOT_R11,
      XOL_SLOT_R12, XOL_SLOT_R13, XOL_SLOT_R14, XOL_SLOT_R15, XOL_SLOT_RIP, XOL_SLOT_EFLAGS};
  return reg < XOL_NUM_REGS ? kSlot[reg] : 0;
}

// Register slots an event of a probe capturing `capture_mask` carries: up to its last
// captured register's slot.
static inline __u32 xol_event_slots(__u32 capture_mask) {
  __u32 slots = 0;
  for (__u32 reg = 0; reg < XOL_NUM_REGS; ++reg) {
    if ((capture_mask & (1u << reg)) && xol_reg_slot(reg) + 1 > slots)
      slots = xol_reg_slot(reg) + 1;
  }
  return slots;
}
#endif

// Value of xol_config[slot]; written by the agent at attach, deleted at detach.
struct xol_probe_config {
  __u32 generation;        // must equal the cookie's upper half
  __u32 pid;               // only hits of this process (tgid); 0: any
  __u32 capture_mask;      // bit i: capture register i (enum xol_reg); 0: count only
  __u32 event_slots;       // xol_event_slots(capture_mask) (ProbeProgram sets it)
  __u64 rate_interval_ns;  // 1e9 / events per second; 0: no limit
  __u64 rate_burst_ns;     // bucket depth in time units (1 s: a burst of one
                           // second's events)
  __u64 rate_tat_ns;       // GCRA theoretical arrival time, updated by the program
};

// Value of the per-CPU array xol_counters[slot]. The agent sums over CPUs.
struct xol_probe_counters {
  __u64 hits;          // every hit that passed the pid filter (never rate limited)
  __u64 emitted;       // events written to the ring buffer
  __u64 dropped;       // events lost because the ring buffer was full
  __u64 rate_limited;  // events suppressed by the rate limit
};

// A record in the xol_events ring buffer: XOL_EVENT_BYTES(event_slots) bytes, the
// header and the register slots of its probe's config (not the whole struct).
struct xol_hit_event {
  __u64 cookie;  // generation << 32 | slot
  __u64 ktime_ns;
  __u32 pid;
  __u32 tid;
  __u32 cpu;
  __u32 capture_mask;
  // regs[xol_reg_slot(i)] holds register i when bit i of capture_mask is set; a slot
  // of a register not captured holds whatever the ring buffer held there before.
  __u64 regs[XOL_NUM_REGS];
};

#endif  // XOLFLEET_SERVICES_AGENT_BPF_PROBE_H_
