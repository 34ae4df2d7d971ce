// x86-64 placement classifier: what a given kernel does when a uprobe at an instruction
// is hit. Decodes with Zydis; the per-kernel rules are tables derived from each kernel's
// arch/x86/kernel/uprobes.c (see docs/placement.md and the comments in the .cc).
#ifndef XOLFLEET_SERVICES_COMMON_X86_CLASSIFIER_H_
#define XOLFLEET_SERVICES_COMMON_X86_CLASSIFIER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "services/common/placement.h"

namespace xolfleet {

// Classifies the instruction at the start of `code` (at most 15 bytes are read) under
// `profile`. Never fails: undecodable input is REFUSED with a reason.
InsnPlacement ClassifyInstruction(absl::Span<const uint8_t> code, KernelProfile profile);

// Instruction boundaries (offsets from the start) of a function body decoded linearly
// from its first byte; stops at the first undecodable byte.
std::vector<uint32_t> InstructionBoundaries(absl::Span<const uint8_t> function);

// Offsets (from the function start) that a direct branch inside `function` targets
// (jmp/jcc/call rel8/rel32 with targets inside the function).
std::vector<uint32_t> BranchTargetsWithin(absl::Span<const uint8_t> function);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_X86_CLASSIFIER_H_
