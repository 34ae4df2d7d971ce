#include "services/agent/probe_program.h"

namespace xolfleet {

absl::Status ProbeProgram::SetConfigs(absl::Span<const uint32_t> slots,
                                      absl::Span<const xol_probe_config> configs) {
  if (slots.size() != configs.size()) {
    return absl::InvalidArgumentError("SetConfigs: as many configs as slots");
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    if (absl::Status st = SetConfig(slots[i], configs[i]); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status ProbeProgram::DeleteConfigs(absl::Span<const uint32_t> slots) {
  for (uint32_t slot : slots) {
    if (absl::Status st = DeleteConfig(slot); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<xol_probe_counters>> ProbeProgram::ReadCounters(
    absl::Span<const uint32_t> slots) const {
  std::vector<xol_probe_counters> out;
  out.reserve(slots.size());
  for (uint32_t slot : slots) {
    absl::StatusOr<xol_probe_counters> c = ReadCounters(slot);
    if (!c.ok()) return c.status();
    out.push_back(*c);
  }
  return out;
}

absl::Status ProbeProgram::ResetCounters(absl::Span<const uint32_t> slots) {
  for (uint32_t slot : slots) {
    if (absl::Status st = ResetCounters(slot); !st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace xolfleet
