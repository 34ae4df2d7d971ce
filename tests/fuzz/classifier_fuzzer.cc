// libFuzzer target: the x86 classifier under every profile, and the function walkers.
// Invariants are checked with __builtin_trap() so a violation is a crash libFuzzer keeps.
#include <cstddef>
#include <cstdint>

#include "services/common/x86_classifier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::Span<const uint8_t> code(data, size);
  uint8_t length = 0;
  bool first = true;
  for (xolfleet::KernelProfile p : xolfleet::AllProfiles()) {
    xolfleet::InsnPlacement r = xolfleet::ClassifyInstruction(code, p);
    if (r.length > 15 || r.length > size) __builtin_trap();
    if (r.length == 0 && r.placement != xolfleet::Placement::kRefused) __builtin_trap();
    if (r.reason.empty()) __builtin_trap();
    if (!first && r.length != length) __builtin_trap();  // decoding is profile independent
    length = r.length;
    first = false;
  }
  const std::vector<uint32_t> bounds = xolfleet::InstructionBoundaries(code);
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (bounds[i] >= size) __builtin_trap();
    if (i > 0 && bounds[i] <= bounds[i - 1]) __builtin_trap();
  }
  if (!bounds.empty() && bounds[0] != 0) __builtin_trap();
  for (uint32_t t : xolfleet::BranchTargetsWithin(code)) {
    if (t >= size) __builtin_trap();
  }
  return 0;
}
