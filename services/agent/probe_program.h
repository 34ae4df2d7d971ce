// The probe manager's interface to the program behind every probe: the per-probe config
// and counter maps (keyed by slot), the event ring buffer, and the kernel links that
// attach the program at file offsets. BpfProbeProgram (bpf_probe_program.h) is the real
// one, the BPF object of bpf/probe.bpf.c; tests of the manager's bookkeeping (slots,
// rollback, relink) use an in-memory one and run without root.
//
// A program is loaded for one link mode: a program that expects BPF_TRACE_UPROBE_MULTI links cannot
// be attached through perf events, and the reverse, so the mode is fixed for the life of the agent.
//
// The contract the manager relies on (bpf/probe.bpf.c): a hit through a link whose
// cookie is XOL_COOKIE(generation, slot) counts in `slot` only while the slot's config
// carries that generation; hits of a slot without config are ignored.
#ifndef XOLFLEET_SERVICES_AGENT_PROBE_PROGRAM_H_
#define XOLFLEET_SERVICES_AGENT_PROBE_PROGRAM_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/agent/attachment.h"
#include "services/agent/bpf/probe.h"
#include "services/common/open_file.h"
#include "xolfleet/v1/agent.pb.h"

namespace xolfleet {

class ProbeProgram {
 public:
  virtual ~ProbeProgram() = default;

  virtual v1::LinkMode link_mode() const = 0;
  // Slots 0 .. max_probes() - 1; the counters of slot max_probes() are the totals.
  virtual uint32_t max_probes() const = 0;
  // The ring buffer of hit events (-1: none).
  virtual int events_fd() const = 0;

  // Slot configuration (xol_config). Delete is idempotent.
  virtual absl::Status SetConfig(uint32_t slot, const xol_probe_config& config) = 0;
  virtual absl::Status DeleteConfig(uint32_t slot) = 0;
  virtual absl::StatusOr<xol_probe_config> GetConfig(uint32_t slot) const = 0;
  // Number of entries in xol_config (tests and the "nothing left" check).
  virtual size_t CountConfigEntries() const = 0;

  // Per-CPU counters of a slot, summed over CPUs; Reset zeroes every CPU's copy.
  virtual absl::StatusOr<xol_probe_counters> ReadCounters(uint32_t slot) const = 0;
  virtual absl::Status ResetCounters(uint32_t slot) = 0;
  // Sum over every probe ever attached (never reset).
  virtual xol_probe_counters ReadTotals() const = 0;

  // The same for many slots at once (configs and counters in the order of `slots`). These run the
  // single-slot calls one by one; the BPF program uses the kernel's batch map operations instead.
  virtual absl::Status SetConfigs(absl::Span<const uint32_t> slots,
                                  absl::Span<const xol_probe_config> configs);
  virtual absl::Status DeleteConfigs(absl::Span<const uint32_t> slots);  // missing are fine
  virtual absl::StatusOr<std::vector<xol_probe_counters>> ReadCounters(
      absl::Span<const uint32_t> slots) const;
  virtual absl::Status ResetCounters(absl::Span<const uint32_t> slots);

  // Attaches the program at the file `offsets` of `file` (through file.proc_path(),
  // /proc/self/fd/N, never the path a request named: the kernel resolves the magic link to the very
  // inode the agent opened, read and checked), each with its cookie (same length); `pid` > 0
  // filters in the kernel. Multi mode: one uprobe_multi link; perf mode: one perf-event link per
  // offset. All or nothing: on failure whatever was made is destroyed before returning.
  virtual absl::StatusOr<std::unique_ptr<Attachment>> Link(const OpenFile& file,
                                                           absl::Span<const uint64_t> offsets,
                                                           absl::Span<const uint64_t> cookies,
                                                           int pid) const = 0;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_PROBE_PROGRAM_H_
