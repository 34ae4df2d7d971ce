#include "services/common/placement.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace xolfleet {

absl::string_view PlacementName(Placement p) {
  switch (p) {
    case Placement::kEmulated:
      return "EMULATED";
    case Placement::kBoosted:
      return "BOOSTED";
    case Placement::kBoostedRipRel:
      return "BOOSTED_RIPREL";
    case Placement::kSingleStep:
      return "SINGLE_STEP";
    case Placement::kRefused:
      return "REFUSED";
  }
  return "UNKNOWN";
}

absl::StatusOr<Placement> ParsePlacement(absl::string_view name) {
  const std::string upper = absl::AsciiStrToUpper(name);
  for (Placement p : {Placement::kEmulated, Placement::kBoosted, Placement::kBoostedRipRel,
                      Placement::kSingleStep, Placement::kRefused}) {
    if (PlacementName(p) == upper) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown placement '", name,
                   "'; expected EMULATED, BOOSTED, BOOSTED_RIPREL, SINGLE_STEP or REFUSED"));
}

absl::string_view ProfileName(KernelProfile p) {
  switch (p) {
    case KernelProfile::kLinux61:
      return "linux-6.1";
    case KernelProfile::kLinux618:
      return "linux-6.18";
    case KernelProfile::kXolfleet61:
      return "xolfleet-6.1";
    case KernelProfile::kXolfleet61NoBoost:
      return "xolfleet-6.1-noboost";
  }
  return "unknown";
}

std::vector<KernelProfile> AllProfiles() {
  return {KernelProfile::kLinux61, KernelProfile::kLinux618, KernelProfile::kXolfleet61,
          KernelProfile::kXolfleet61NoBoost};
}

std::string ProfileNames() {
  std::vector<std::string> names;
  for (KernelProfile p : AllProfiles()) names.emplace_back(ProfileName(p));
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<KernelProfile> ParseProfile(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (KernelProfile p : AllProfiles()) {
    if (ProfileName(p) == lower) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown kernel profile '", name, "'; expected one of ", ProfileNames()));
}

}  // namespace xolfleet
