#include "services/agent/bpf_probe_program.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "probe.skel.h"
#include "services/agent/uprobe_multi.h"
#include "services/common/errno_status.h"
#include "services/common/log.h"

namespace xolfleet {
namespace {

class MultiAttachment final : public Attachment {
 public:
  explicit MultiAttachment(UprobeMultiLink link) : link_(std::move(link)) {}
  size_t link_count() const override { return 1; }

 private:
  UprobeMultiLink link_;
};

class PerfAttachment final : public Attachment {
 public:
  explicit PerfAttachment(std::string path) : path_(std::move(path)) {}
  ~PerfAttachment() override {
    for (bpf_link* l : links_) {
      int err = bpf_link__destroy(l);
      if (err) Log("detaching a perf-event uprobe link on ", path_, ": ", strerror(-err));
    }
  }
  void Add(bpf_link* l) { links_.push_back(l); }
  size_t link_count() const override { return links_.size(); }

 private:
  std::string path_;
  std::vector<bpf_link*> links_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpfProbeProgram>> BpfProbeProgram::Load(const Options& options) {
  if (options.max_probes == 0) return absl::InvalidArgumentError("max_probes must be > 0");
  std::unique_ptr<BpfProbeProgram> p(new BpfProbeProgram(options));
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
  if (options.link_mode == v1::LINK_MODE_UPROBE_MULTI) {
    // A program attached by a uprobe_multi link must say so when it is loaded.
    bpf_program__set_expected_attach_type(s->progs.xol_probe,
                                          static_cast<enum bpf_attach_type>(kBpfTraceUprobeMulti));
  }
  err = probe__load(s);
  if (err) {
    return absl::FailedPreconditionError(absl::StrCat(
        "loading the probe BPF program (",
        options.link_mode == v1::LINK_MODE_UPROBE_MULTI ? "multi" : "perf", " mode): ",
        strerror(-err), " (the agent needs root and a kernel with BPF ring buffers, 5.8+)"));
  }
  return p;
}

BpfProbeProgram::~BpfProbeProgram() {
  if (skel_ != nullptr) probe__destroy(skel_);
}

bpf_program* BpfProbeProgram::program() const { return skel_->progs.xol_probe; }
int BpfProbeProgram::program_fd() const { return bpf_program__fd(skel_->progs.xol_probe); }
int BpfProbeProgram::events_fd() const { return bpf_map__fd(skel_->maps.xol_events); }
int BpfProbeProgram::config_fd() const { return bpf_map__fd(skel_->maps.xol_config); }

absl::Status BpfProbeProgram::SetConfig(uint32_t slot, const xol_probe_config& config) {
  xol_probe_config c = config;
  c.event_slots = xol_event_slots(c.capture_mask);  // what the program reserves per event
  if (bpf_map_update_elem(config_fd(), &slot, &c, BPF_ANY) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("writing probe config slot ", slot, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status BpfProbeProgram::DeleteConfig(uint32_t slot) {
  if (bpf_map_delete_elem(config_fd(), &slot) != 0 && errno != ENOENT) {
    return absl::InternalError(
        absl::StrCat("deleting probe config slot ", slot, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<xol_probe_config> BpfProbeProgram::GetConfig(uint32_t slot) const {
  xol_probe_config c;
  if (bpf_map_lookup_elem(config_fd(), &slot, &c) != 0) {
    return absl::NotFoundError(absl::StrCat("no config in slot ", slot));
  }
  return c;
}

size_t BpfProbeProgram::CountConfigEntries() const {
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

absl::StatusOr<xol_probe_counters> BpfProbeProgram::ReadCounters(uint32_t slot) const {
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

absl::Status BpfProbeProgram::ResetCounters(uint32_t slot) {
  std::vector<xol_probe_counters> zero(num_cpus_);
  memset(zero.data(), 0, zero.size() * sizeof(zero[0]));
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.xol_counters), &slot, zero.data(), BPF_ANY) !=
      0) {
    return absl::InternalError(
        absl::StrCat("zeroing counters of slot ", slot, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

xol_probe_counters BpfProbeProgram::ReadTotals() const {
  absl::StatusOr<xol_probe_counters> t = ReadCounters(options_.max_probes);
  return t.ok() ? *t : xol_probe_counters{};
}

namespace {

// Below this many slots, single-element calls (a batch call has its own set-up).
constexpr size_t kBatchFrom = 32;

xol_probe_counters Sum(const xol_probe_counters* per_cpu, int num_cpus) {
  xol_probe_counters sum = {};
  for (int c = 0; c < num_cpus; ++c) {
    sum.hits += per_cpu[c].hits;
    sum.emitted += per_cpu[c].emitted;
    sum.dropped += per_cpu[c].dropped;
    sum.rate_limited += per_cpu[c].rate_limited;
  }
  return sum;
}

}  // namespace

absl::Status BpfProbeProgram::SetConfigs(absl::Span<const uint32_t> slots,
                                         absl::Span<const xol_probe_config> configs) {
  if (slots.size() != configs.size()) {
    return absl::InvalidArgumentError("SetConfigs: as many configs as slots");
  }
  if (slots.size() < kBatchFrom) {
    for (size_t i = 0; i < slots.size(); ++i) {
      if (absl::Status st = SetConfig(slots[i], configs[i]); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  std::vector<xol_probe_config> with_slots(configs.begin(), configs.end());
  for (xol_probe_config& c : with_slots) c.event_slots = xol_event_slots(c.capture_mask);
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  uint32_t count = static_cast<uint32_t>(slots.size());
  if (bpf_map_update_batch(config_fd(), slots.data(), with_slots.data(), &count, &opts) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("writing ", slots.size(), " probe configs (",
                                                     count, " written): ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status BpfProbeProgram::DeleteConfigs(absl::Span<const uint32_t> slots) {
  if (slots.size() < kBatchFrom) {
    for (uint32_t slot : slots) {
      if (absl::Status st = DeleteConfig(slot); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  // A batch delete stops at the first missing key (ENOENT) with `count` deleted
  // before it: skip that key and go on.
  size_t done = 0;
  while (done < slots.size()) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    uint32_t count = static_cast<uint32_t>(slots.size() - done);
    if (bpf_map_delete_batch(config_fd(), slots.data() + done, &count, &opts) == 0) break;
    if (errno != ENOENT) {
      return absl::InternalError(
          absl::StrCat("deleting ", slots.size() - done, " probe configs: ", strerror(errno)));
    }
    done += count + 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<xol_probe_counters>> BpfProbeProgram::ReadCounters(
    absl::Span<const uint32_t> slots) const {
  std::vector<xol_probe_counters> out;
  out.reserve(slots.size());
  if (slots.size() < kBatchFrom) {
    for (uint32_t slot : slots) {
      absl::StatusOr<xol_probe_counters> c = ReadCounters(slot);
      if (!c.ok()) return c.status();
      out.push_back(*c);
    }
    return out;
  }
  // The whole array in one call (an array batch reads from a key on, not a list of
  // keys): 20,000 slots on 2 CPUs are 1.3 MB.
  const uint32_t entries = options_.max_probes + 1;
  std::vector<uint32_t> keys(entries);
  std::vector<xol_probe_counters> values(static_cast<size_t>(entries) * num_cpus_);
  uint32_t out_batch = 0, count = entries;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_lookup_batch(bpf_map__fd(skel_->maps.xol_counters), nullptr, &out_batch, keys.data(),
                           values.data(), &count, &opts) != 0 &&
      errno != ENOENT) {  // ENOENT: the end of the array was reached
    return absl::InternalError(
        absl::StrCat("reading counters of ", slots.size(), " slots: ", strerror(errno)));
  }
  std::vector<int64_t> index(entries, -1);
  for (uint32_t i = 0; i < count; ++i) {
    if (keys[i] < entries) index[keys[i]] = i;
  }
  for (uint32_t slot : slots) {
    if (slot >= entries || index[slot] < 0) {
      return absl::InternalError(absl::StrCat("no counters read for slot ", slot));
    }
    out.push_back(Sum(&values[static_cast<size_t>(index[slot]) * num_cpus_], num_cpus_));
  }
  return out;
}

absl::Status BpfProbeProgram::ResetCounters(absl::Span<const uint32_t> slots) {
  if (slots.size() < kBatchFrom) {
    for (uint32_t slot : slots) {
      if (absl::Status st = ResetCounters(slot); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  std::vector<xol_probe_counters> zero(slots.size() * num_cpus_);
  memset(zero.data(), 0, zero.size() * sizeof(zero[0]));
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  uint32_t count = static_cast<uint32_t>(slots.size());
  if (bpf_map_update_batch(bpf_map__fd(skel_->maps.xol_counters), slots.data(), zero.data(), &count,
                           &opts) != 0) {
    return absl::InternalError(absl::StrCat("zeroing counters of ", slots.size(), " slots (", count,
                                            " done): ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Attachment>> BpfProbeProgram::Link(
    const OpenFile& file, absl::Span<const uint64_t> offsets, absl::Span<const uint64_t> cookies,
    int pid) const {
  if (offsets.size() != cookies.size()) {
    return absl::InvalidArgumentError("Link: as many cookies as offsets");
  }
  return options_.link_mode == v1::LINK_MODE_UPROBE_MULTI ? LinkMulti(file, offsets, cookies, pid)
                                                          : LinkPerf(file, offsets, cookies, pid);
}

absl::StatusOr<std::unique_ptr<Attachment>> BpfProbeProgram::LinkMulti(
    const OpenFile& file, absl::Span<const uint64_t> offsets, absl::Span<const uint64_t> cookies,
    int pid) const {
  absl::StatusOr<UprobeMultiLink> link =
      UprobeMultiLink::Create(program_fd(), file.proc_path(), offsets, cookies, pid);
  if (!link.ok()) {
    return absl::Status(link.status().code(),
                        absl::StrCat(Truncated(file.path(), 512), ": ", link.status().message()));
  }
  return std::unique_ptr<Attachment>(new MultiAttachment(std::move(*link)));
}

// libbpf's bpf_program__attach_uprobe_opts with a BPF cookie, one link per offset; on
// failure the links made so far are destroyed (with `att`) before returning.
absl::StatusOr<std::unique_ptr<Attachment>> BpfProbeProgram::LinkPerf(
    const OpenFile& file, absl::Span<const uint64_t> offsets, absl::Span<const uint64_t> cookies,
    int pid) const {
  const std::string path = Truncated(file.path(), 512);
  const std::string kernel_path = file.proc_path();
  auto att = std::make_unique<PerfAttachment>(path);
  for (size_t i = 0; i < offsets.size(); ++i) {
    LIBBPF_OPTS(bpf_uprobe_opts, opts);
    opts.bpf_cookie = cookies[i];
    // libbpf: pid -1 is every process, 0 would be the agent itself.
    bpf_link* l = bpf_program__attach_uprobe_opts(program(), pid > 0 ? pid : -1,
                                                  kernel_path.c_str(), offsets[i], &opts);
    if (l == nullptr) {
      int err = errno;
      return ErrnoToStatus(
          err,
          absl::StrCat("perf-event uprobe on ", path, " at file offset 0x", absl::Hex(offsets[i]),
                       pid > 0 ? absl::StrCat(" for pid ", pid) : "", ": ", strerror(err)));
    }
    att->Add(l);
  }
  return std::unique_ptr<Attachment>(std::move(att));
}

}  // namespace xolfleet
