#include "services/agent/probe_program.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "probe.skel.h"
#include "services/agent/uprobe_multi.h"

namespace xolfleet {

absl::StatusOr<std::unique_ptr<ProbeProgram>> ProbeProgram::Load(const Options& options) {
  if (options.max_probes == 0) return absl::InvalidArgumentError("max_probes must be > 0");
  std::unique_ptr<ProbeProgram> p(new ProbeProgram(options));
  p->num_cpus_ = libbpf_num_possible_cpus();
  if (p->num_cpus_ <= 0) return absl::InternalError("libbpf_num_possible_cpus failed");

  p->skel_ = probe__open();
  if (p->skel_ == nullptr) {
    return absl::InternalError(absl::StrCat("opening the probe BPF object: ", strerror(errno)));
  }
  struct probe* s = p->skel_;
  // Sizes and constants go in between open and load.
  s->rodata->xol_totals_slot = options.max_probes;
  // An eighth of the ring buffer: the reader (polling every 10 ms) is woken early only
  // when events arrive fast enough to matter (bpf/probe.bpf.c, xol_wakeup_bytes).
  s->rodata->xol_wakeup_bytes = options.ringbuf_bytes / 8;
  int err = bpf_map__set_max_entries(s->maps.xol_config, options.max_probes);
  if (!err) err = bpf_map__set_max_entries(s->maps.xol_counters, options.max_probes + 1);
  if (!err) err = bpf_map__set_max_entries(s->maps.xol_events, options.ringbuf_bytes);
  if (err) {
    return absl::InvalidArgumentError(absl::StrCat("sizing the probe maps (max_probes ",
                                                   options.max_probes, ", ringbuf_bytes ",
                                                   options.ringbuf_bytes, "): ", strerror(-err)));
  }
  if (options.link_mode == LinkMode::kMulti) {
    // A program attached by a uprobe_multi link must say so when it is loaded.
    bpf_program__set_expected_attach_type(s->progs.xol_probe,
                                          static_cast<enum bpf_attach_type>(kBpfTraceUprobeMulti));
  }
  err = probe__load(s);
  if (err) {
    return absl::FailedPreconditionError(absl::StrCat(
        "loading the probe BPF program (", options.link_mode == LinkMode::kMulti ? "multi" : "perf",
        " mode): ", strerror(-err),
        " (the agent needs root and a kernel with BPF ring buffers, 5.8+)"));
  }
  return p;
}

ProbeProgram::~ProbeProgram() {
  if (skel_ != nullptr) probe__destroy(skel_);
}

bpf_program* ProbeProgram::program() const { return skel_->progs.xol_probe; }
int ProbeProgram::program_fd() const { return bpf_program__fd(skel_->progs.xol_probe); }
int ProbeProgram::events_fd() const { return bpf_map__fd(skel_->maps.xol_events); }
int ProbeProgram::config_fd() const { return bpf_map__fd(skel_->maps.xol_config); }

absl::Status ProbeProgram::SetConfig(uint32_t slot, const xol_probe_config& config) {
  if (bpf_map_update_elem(config_fd(), &slot, &config, BPF_ANY) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("writing probe config slot ", slot, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ProbeProgram::DeleteConfig(uint32_t slot) {
  if (bpf_map_delete_elem(config_fd(), &slot) != 0 && errno != ENOENT) {
    return absl::InternalError(
        absl::StrCat("deleting probe config slot ", slot, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<xol_probe_config> ProbeProgram::GetConfig(uint32_t slot) const {
  xol_probe_config c;
  if (bpf_map_lookup_elem(config_fd(), &slot, &c) != 0) {
    return absl::NotFoundError(absl::StrCat("no config in slot ", slot));
  }
  return c;
}

size_t ProbeProgram::CountConfigEntries() const {
  size_t n = 0;
  uint32_t key = 0, next = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(config_fd(), prev, &next) == 0) {
    ++n;
    key = next;
    prev = &key;
  }
  return n;
}

absl::StatusOr<xol_probe_counters> ProbeProgram::ReadCounters(uint32_t slot) const {
  std::vector<xol_probe_counters> per_cpu(num_cpus_);
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.xol_counters), &slot, per_cpu.data()) != 0) {
    return absl::InternalError(
        absl::StrCat("reading counters of slot ", slot, ": ", strerror(errno)));
  }
  xol_probe_counters sum = {};
  for (const xol_probe_counters& c : per_cpu) {
    sum.hits += c.hits;
    sum.emitted += c.emitted;
    sum.dropped += c.dropped;
    sum.rate_limited += c.rate_limited;
  }
  return sum;
}

absl::Status ProbeProgram::ResetCounters(uint32_t slot) {
  std::vector<xol_probe_counters> zero(num_cpus_);
  memset(zero.data(), 0, zero.size() * sizeof(zero[0]));
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.xol_counters), &slot, zero.data(), BPF_ANY) !=
      0) {
    return absl::InternalError(
        absl::StrCat("zeroing counters of slot ", slot, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

xol_probe_counters ProbeProgram::ReadTotals() const {
  absl::StatusOr<xol_probe_counters> t = ReadCounters(options_.max_probes);
  return t.ok() ? *t : xol_probe_counters{};
}

}  // namespace xolfleet
