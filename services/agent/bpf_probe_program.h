// The real ProbeProgram: the loaded BPF object behind every probe (bpf/probe.bpf.c), its one
// program, the per-probe config and counter maps, and the event ring buffer, with uprobe_multi
// links (uprobe_multi.h) or libbpf perf-event links. Loaded once at start-up, for one link mode
// (probe_program.h). Needs root (or CAP_BPF and CAP_PERFMON).
#ifndef XOLFLEET_SERVICES_AGENT_BPF_PROBE_PROGRAM_H_
#define XOLFLEET_SERVICES_AGENT_BPF_PROBE_PROGRAM_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/agent/probe_program.h"

struct probe;        // probe.skel.h
struct bpf_program;  // libbpf

namespace xolfleet {

class BpfProbeProgram final : public ProbeProgram {
 public:
  struct Options {
    v1::LinkMode link_mode = v1::LINK_MODE_UPROBE_MULTI;
    uint32_t max_probes = 100000;
    uint32_t ringbuf_bytes = 16u << 20;  // power of two, multiple of the page size
  };
  static absl::StatusOr<std::unique_ptr<BpfProbeProgram>> Load(const Options& options);
  ~BpfProbeProgram() override;
  BpfProbeProgram(const BpfProbeProgram&) = delete;
  BpfProbeProgram& operator=(const BpfProbeProgram&) = delete;

  v1::LinkMode link_mode() const override { return options_.link_mode; }
  uint32_t max_probes() const override { return options_.max_probes; }
  int events_fd() const override;
  bpf_program* program() const;
  int program_fd() const;
  int config_fd() const;

  absl::Status SetConfig(uint32_t slot, const xol_probe_config& config) override;
  absl::Status DeleteConfig(uint32_t slot) override;
  absl::StatusOr<xol_probe_config> GetConfig(uint32_t slot) const override;
  size_t CountConfigEntries() const override;
  absl::StatusOr<xol_probe_counters> ReadCounters(uint32_t slot) const override;
  absl::Status ResetCounters(uint32_t slot) override;
  xol_probe_counters ReadTotals() const override;

  // The kernel's batch map operations (Linux 5.6+): one bpf() call instead of one per
  // slot (a 10,000-probe attach made 20,000 calls and its detach 30,000).
  absl::Status SetConfigs(absl::Span<const uint32_t> slots,
                          absl::Span<const xol_probe_config> configs) override;
  absl::Status DeleteConfigs(absl::Span<const uint32_t> slots) override;
  absl::StatusOr<std::vector<xol_probe_counters>> ReadCounters(
      absl::Span<const uint32_t> slots) const override;
  absl::Status ResetCounters(absl::Span<const uint32_t> slots) override;

  absl::StatusOr<std::unique_ptr<Attachment>> Link(const OpenFile& file,
                                                   absl::Span<const uint64_t> offsets,
                                                   absl::Span<const uint64_t> cookies,
                                                   int pid) const override;

 private:
  explicit BpfProbeProgram(const Options& options) : options_(options) {}
  absl::StatusOr<std::unique_ptr<Attachment>> LinkMulti(const OpenFile& file,
                                                        absl::Span<const uint64_t> offsets,
                                                        absl::Span<const uint64_t> cookies,
                                                        int pid) const;
  absl::StatusOr<std::unique_ptr<Attachment>> LinkPerf(const OpenFile& file,
                                                       absl::Span<const uint64_t> offsets,
                                                       absl::Span<const uint64_t> cookies,
                                                       int pid) const;
  Options options_;
  struct probe* skel_ = nullptr;
  int num_cpus_ = 1;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_BPF_PROBE_PROGRAM_H_
