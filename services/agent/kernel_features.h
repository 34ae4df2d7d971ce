// What the running kernel can do for the agent: its release, the placement profile the classifier
// should use for it, and the link types it supports. Each feature is probed once and cached (the
// result cannot change while the agent runs).
#ifndef XOLFLEET_SERVICES_AGENT_KERNEL_FEATURES_H_
#define XOLFLEET_SERVICES_AGENT_KERNEL_FEATURES_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/placement.h"

namespace xolfleet {

struct KernelVersion {
  int major = 0;
  int minor = 0;
};

// "6.18.44-fc-v782" -> {6, 18}. INVALID_ARGUMENT if it does not start with N.N.
absl::StatusOr<KernelVersion> ParseKernelRelease(absl::string_view release);

struct KernelProfileChoice {
  KernelProfile profile = KernelProfile::kLinux61;
  bool patched = false;  // /proc/sys/kernel/uprobes_boost exists (the kernel/ series)
  bool boosts = false;   // patched and boosting switched on
  std::string why;       // one line for people (logs, NodeInfo)
};

// The classifier profile for a kernel. `uprobes_boost` is the content of
// /proc/sys/kernel/uprobes_boost when the file exists (the patched kernel), else nullopt.
//   patched, boost 1   -> xolfleet-6.1
//   patched, boost 0   -> xolfleet-6.1-noboost (stock 6.1 rules plus the series' patch 1,
//                         which stops taking VEX/EVEX opcode bytes for branches)
//   stock >= 6.16      -> linux-6.18 (6.16 added the emulation of more nop forms)
//   stock older        -> linux-6.1
KernelProfileChoice ChooseKernelProfile(KernelVersion version, std::optional<int> uprobes_boost);

struct KernelInfo {
  std::string release;  // uname -r
  KernelVersion version;
  KernelProfileChoice profile;
};

inline constexpr char kUprobesBoostPath[] = "/proc/sys/kernel/uprobes_boost";

// Reads uname and /proc/sys/kernel/uprobes_boost.
absl::StatusOr<KernelInfo> DetectKernel();

// The patched kernel's runtime switch (0 or 1), nullopt when the file does not exist
// (stock kernels). It can change while the agent runs: the probe manager re-reads it.
std::optional<int> ReadUprobesBoost(const std::string& path = kUprobesBoostPath);

// True when bpf(BPF_LINK_CREATE) accepts BPF_TRACE_UPROBE_MULTI links (Linux 6.6, commit
// 89ae89f53d20 "bpf: Add multi uprobe link"). Probed once (as libbpf >= 1.3 does: a link on
// "/" must fail with EBADF, not EINVAL) and cached. `detail` gets the reason when false.
bool KernelSupportsUprobeMulti(std::string* detail = nullptr);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_KERNEL_FEATURES_H_
