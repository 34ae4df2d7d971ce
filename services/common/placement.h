// Placement vocabulary shared by the classifier, the agent and the controller.
// The rules live in docs/placement.md.
#ifndef XOLFLEET_SERVICES_COMMON_PLACEMENT_H_
#define XOLFLEET_SERVICES_COMMON_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace xolfleet {

enum class Placement { kEmulated, kBoosted, kBoostedRipRel, kSingleStep, kRefused };

// Kernel behaviours the classifier knows (docs/placement.md, "Profiles").
enum class KernelProfile {
  kLinux61,            // "linux-6.1": stock 6.1
  kLinux618,           // "linux-6.18": stock newer kernels (this host)
  kXolfleet61,         // "xolfleet-6.1": the patched kernel with boosting on
  kXolfleet61NoBoost,  // "xolfleet-6.1-noboost": the patched kernel with boosting off
};

// "EMULATED", "BOOSTED", "BOOSTED_RIPREL", "SINGLE_STEP", "REFUSED".
absl::string_view PlacementName(Placement p);
absl::StatusOr<Placement> ParsePlacement(absl::string_view name);

// "linux-6.1", "linux-6.18", "xolfleet-6.1", "xolfleet-6.1-noboost".
absl::string_view ProfileName(KernelProfile p);
// Every profile name, comma-separated, for messages and usage lines.
std::string ProfileNames();
absl::StatusOr<KernelProfile> ParseProfile(absl::string_view name);
std::vector<KernelProfile> AllProfiles();

// The decision for one instruction.
struct InsnPlacement {
  Placement placement = Placement::kRefused;
  std::string reason;       // rule that decided it, for people
  std::string disassembly;  // Intel syntax; empty if undecodable
  uint8_t length = 0;       // instruction length in bytes (0 if undecodable)
  std::vector<uint8_t> bytes;
  // Non-empty when the kernel accepts the probe but the probed program would not run as before (the
  // instruction is skipped, or the process dies after the hit). Callers that attach should refuse
  // such sites unless told otherwise; Classify reports it.
  std::string hazard;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_PLACEMENT_H_
