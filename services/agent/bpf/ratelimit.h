// Per-probe rate limit, shared by the BPF program and the agent's unit tests.
//
// A token bucket of depth `burst_ns / interval_ns` events refilled at one event per `interval_ns`,
// in its GCRA form (generic cell rate algorithm): the only state is the "theoretical arrival time"
// `tat`, so the bucket is one 64-bit word updated with a single compare-and-swap. Tracing programs
// cannot take bpf_spin_lock (the verifier refuses it), and a per-CPU bucket would multiply the
// limit by the number of CPUs; one CAS word needs neither. When two CPUs race for the last token,
// the loser retries once and otherwise counts its event as limited, so the limit is never exceeded.
#ifndef XOLFLEET_SERVICES_AGENT_BPF_RATELIMIT_H_
#define XOLFLEET_SERVICES_AGENT_BPF_RATELIMIT_H_

#include <linux/types.h>

#ifndef XOL_INLINE
#define XOL_INLINE static inline __attribute__((always_inline))
#endif

// One attempt: 1 admitted, 0 limited, -1 lost a race (state changed under us).
XOL_INLINE int xol_gcra_try(__u64* tat, __u64 now, __u64 interval_ns, __u64 burst_ns) {
  __u64 old = *(volatile __u64*)tat;
  __u64 base = old > now ? old : now;
  __u64 next = base + interval_ns;
  if (next > now + burst_ns) return 0;
  return __sync_val_compare_and_swap(tat, old, next) == old ? 1 : -1;
}

// Returns 1 when an event at time `now` may be emitted, 0 when it is over the limit.
XOL_INLINE int xol_gcra_admit(__u64* tat, __u64 now, __u64 interval_ns, __u64 burst_ns) {
  int r = xol_gcra_try(tat, now, interval_ns, burst_ns);
  if (r < 0) r = xol_gcra_try(tat, now, interval_ns, burst_ns);
  return r > 0;
}

#endif  // XOLFLEET_SERVICES_AGENT_BPF_RATELIMIT_H_
