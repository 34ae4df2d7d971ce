#include "services/agent/kernel_features.h"

#include <sys/utsname.h>

#include <fstream>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/agent/uprobe_multi.h"

namespace xolfleet {

absl::StatusOr<KernelVersion> ParseKernelRelease(absl::string_view release) {
  std::vector<absl::string_view> parts = absl::StrSplit(release, absl::MaxSplits('.', 2));
  KernelVersion v;
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], &v.major)) {
    return absl::InvalidArgumentError(absl::StrCat("unrecognised kernel release '", release, "'"));
  }
  absl::string_view minor = parts[1];
  size_t digits = 0;
  while (digits < minor.size() && minor[digits] >= '0' && minor[digits] <= '9') ++digits;
  if (digits == 0 || !absl::SimpleAtoi(minor.substr(0, digits), &v.minor)) {
    return absl::InvalidArgumentError(absl::StrCat("unrecognised kernel release '", release, "'"));
  }
  return v;
}

KernelProfileChoice ChooseKernelProfile(KernelVersion version, std::optional<int> uprobes_boost) {
  KernelProfileChoice c;
  if (uprobes_boost.has_value()) {
    c.patched = true;
    c.boosts = *uprobes_boost != 0;
    c.profile = c.boosts ? KernelProfile::kXolfleet61 : KernelProfile::kXolfleet61NoBoost;
    c.why = c.boosts ? "patched kernel (/proc/sys/kernel/uprobes_boost = 1): boosted probes"
                     : "patched kernel with boosting off (/proc/sys/kernel/uprobes_boost = 0): "
                       "stock 6.1 behaviour with the series' VEX/EVEX fix";
    return c;
  }
  bool newer = version.major > 6 || (version.major == 6 && version.minor >= 16);
  c.profile = newer ? KernelProfile::kLinux618 : KernelProfile::kLinux61;
  c.why = absl::StrCat(
      "stock kernel ", version.major, ".", version.minor,
      newer ? " (>= 6.16: emulates multi-byte nops)" : " (< 6.16: 6.1 emulation rules)");
  return c;
}

absl::StatusOr<KernelInfo> DetectKernel() {
  struct utsname u;
  if (uname(&u) != 0) return absl::InternalError("uname failed");
  KernelInfo info;
  info.release = u.release;
  absl::StatusOr<KernelVersion> v = ParseKernelRelease(info.release);
  if (!v.ok()) return v.status();
  info.version = *v;
  info.profile = ChooseKernelProfile(info.version, ReadUprobesBoost());
  return info;
}

std::optional<int> ReadUprobesBoost(const std::string& path) {
  std::ifstream f(path);
  int value = 0;
  if (f && f >> value) return value;
  return std::nullopt;
}

bool KernelSupportsUprobeMulti(std::string* detail) {
  static std::once_flag once;
  static absl::Status* result;
  std::call_once(once, [] { result = new absl::Status(ProbeUprobeMultiLinkSupport()); });
  if (detail != nullptr) *detail = std::string(result->message());
  return result->ok();
}

}  // namespace xolfleet
