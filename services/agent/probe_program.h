// The loaded BPF object behind every probe (bpf/probe.bpf.c): its one program, the per-probe
// config and counter maps, and the event ring buffer. Loaded once at start-up, for one link
// mode: a program that expects BPF_TRACE_UPROBE_MULTI links cannot be attached through perf
// events, and the reverse, so the mode is fixed for the life of the agent.
#ifndef XOLFLEET_SERVICES_AGENT_PROBE_PROGRAM_H_
#define XOLFLEET_SERVICES_AGENT_PROBE_PROGRAM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/agent/bpf/probe.h"

struct probe;        // probe.skel.h
struct bpf_program;  // libbpf

namespace xolfleet {

enum class LinkMode { kMulti, kPerf };

class ProbeProgram {
 public:
  struct Options {
    LinkMode link_mode = LinkMode::kMulti;
    uint32_t max_probes = 100000;
    uint32_t ringbuf_bytes = 16u << 20;  // power of two, multiple of the page size
  };
  static absl::StatusOr<std::unique_ptr<ProbeProgram>> Load(const Options& options);
  ~ProbeProgram();
  ProbeProgram(const ProbeProgram&) = delete;
  ProbeProgram& operator=(const ProbeProgram&) = delete;

  LinkMode link_mode() const { return options_.link_mode; }
  uint32_t max_probes() const { return options_.max_probes; }
  bpf_program* program() const;
  int program_fd() const;
  int events_fd() const;
  int config_fd() const;

  // Slot configuration (xol_config). Delete is idempotent.
  absl::Status SetConfig(uint32_t slot, const xol_probe_config& config);
  absl::Status DeleteConfig(uint32_t slot);
  absl::StatusOr<xol_probe_config> GetConfig(uint32_t slot) const;
  // Number of entries in xol_config (iterates keys; tests and the "nothing left" check).
  size_t CountConfigEntries() const;

  // Per-CPU counters of a slot, summed over CPUs; Reset zeroes every CPU's copy.
  absl::StatusOr<xol_probe_counters> ReadCounters(uint32_t slot) const;
  absl::Status ResetCounters(uint32_t slot);
  // Sum over every probe ever attached (never reset).
  xol_probe_counters ReadTotals() const;

  // The same for many slots at once, with the kernel's batch map operations (Linux 5.6+):
  // one bpf() call instead of one per slot (a 10,000-probe attach made 20,000 calls and
  // its detach 30,000). Configs and counters go in the order of `slots`.
  absl::Status SetConfigs(absl::Span<const uint32_t> slots,
                          absl::Span<const xol_probe_config> configs);
  absl::Status DeleteConfigs(absl::Span<const uint32_t> slots);  // missing entries are fine
  absl::StatusOr<std::vector<xol_probe_counters>> ReadCounters(
      absl::Span<const uint32_t> slots) const;
  absl::Status ResetCounters(absl::Span<const uint32_t> slots);

 private:
  explicit ProbeProgram(const Options& options) : options_(options) {}
  Options options_;
  struct probe* skel_ = nullptr;
  int num_cpus_ = 1;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_PROBE_PROGRAM_H_
