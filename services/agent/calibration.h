// Calibration: what one probe hit costs on this node, per placement class, measured.
//
// The agent forks a helper process it owns (a copy of itself that only runs a loop and
// answers over a pipe) and times calls to small functions built into the agent whose
// first instruction falls in each placement class the running kernel offers:
//
//   xol_cal_push      push %rbp            EMULATED on every kernel
//   xol_cal_reg       mov %rdi,%rax        SINGLE_STEP on stock kernels, BOOSTED patched
//   xol_cal_riprel    mov x(%rip),%rax     SINGLE_STEP stock, BOOSTED_RIPREL patched
//   xol_cal_x87       fwait                SINGLE_STEP everywhere (x87: never boosted)
//
// The classifier says which class each function is in under the running kernel's profile;
// the first function of each class is measured. For each: the helper's CPU time
// (CLOCK_THREAD_CPUTIME_ID: the traps are charged to it, preemption is not) of N calls
// without a probe, then with a pid-scoped counting-only probe (the agent's own BPF program, a slot
// the manager lends), the median of several rounds each; the figure is
// (with - without) / N. The kernel's hit count must equal the calls made, or the figure
// is refused. A last measurement puts a probe capturing every register on the emulated
// function: its extra cost over the counting-only one is the cost of one captured event.
//
// The helper is pid-scoped: the breakpoints are written into its memory only, so nothing
// else on the node pays for calibration. No timing threshold is assumed anywhere: the
// figures are what this node measured, and the tests check only their order.
#ifndef XOLFLEET_SERVICES_AGENT_CALIBRATION_H_
#define XOLFLEET_SERVICES_AGENT_CALIBRATION_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "services/agent/probe_program.h"
#include "services/common/placement.h"
#include "xolfleet/v1/common.pb.h"

namespace xolfleet {

struct CalibrationOptions {
  uint32_t calls = 2000;  // calls per round at most
  uint32_t rounds = 5;    // the median over rounds is kept
  // Fewer calls per round (at least 200) where a probed round would take longer than this: a qemu
  // TCG guest single-steps in hundreds of us, and the agent calibrates before it serves.
  uint32_t max_round_ms = 20;
};

// A BPF slot (and the generation its cookie must carry) lent by the probe manager for the duration
// of the calibration; the calibration writes its config and counters and leaves both deleted/reset.
struct CalibrationSlot {
  uint32_t slot = 0;
  uint32_t generation = 0;
};

struct CalibrationResult {
  v1::Calibration calibration;
  // Hits and events the calibration probes added to the program's totals (the agent
  // subtracts them from what it reports).
  uint64_t hits = 0;
  uint64_t events = 0;
};

absl::StatusOr<CalibrationResult> RunCalibration(ProbeProgram& program, CalibrationSlot slot,
                                                 KernelProfile profile,
                                                 const CalibrationOptions& options);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_CALIBRATION_H_
