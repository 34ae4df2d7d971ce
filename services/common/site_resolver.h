// Turns a probe spec (binary + symbol/offset) into a classified probe site: resolves the
// symbol, checks the build-id guard, checks the offset is an instruction boundary of its
// function, classifies the instruction, and optionally relocates a function-entry probe to
// an equivalent cheaper site.
#ifndef XOLFLEET_SERVICES_COMMON_SITE_RESOLVER_H_
#define XOLFLEET_SERVICES_COMMON_SITE_RESOLVER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "services/common/elf_file.h"
#include "services/common/placement.h"

namespace xolfleet {

struct SiteRequest {
  std::string binary_path;
  std::string symbol;        // empty: `offset` is a file offset
  uint64_t offset = 0;       // inside symbol, or file offset
  std::string build_id;      // hex; empty: no guard
  bool allow_relocate = false;
};

struct ResolvedSite {
  std::string binary_path;
  std::string symbol;          // containing function ("" if none)
  uint64_t symbol_offset = 0;  // offset inside it
  uint64_t file_offset = 0;    // what the uprobe is attached at
  uint64_t vaddr = 0;
  InsnPlacement insn;
  bool relocated = false;
  uint64_t requested_file_offset = 0;
  std::string relocation_note;  // why it moved (or why it could not)
};

// Errors (all with messages naming the binary, symbol and offset):
//   NOT_FOUND          missing file, missing symbol (says if stripped)
//   FAILED_PRECONDITION build-id mismatch (both ids in the message)
//   INVALID_ARGUMENT   offset not an instruction boundary of its function (names the
//                      nearest boundaries), offset past the symbol's end or the file's
absl::StatusOr<ResolvedSite> ResolveSite(const ElfFile& elf, const SiteRequest& req,
                                         KernelProfile profile);

// A REFUSED instruction is not an error here (Classify reports it); attaching callers
// turn `insn.placement == Placement::kRefused` into FAILED_PRECONDITION with the reason.

// Same, opening the file (cache ElfFile objects yourself for batches).
absl::StatusOr<ResolvedSite> ResolveSite(const SiteRequest& req, KernelProfile profile);

// Every function entry of `elf`, classified (for `xolctl classify --all-functions`).
// Functions whose first instruction cannot be read are reported REFUSED with the reason.
std::vector<ResolvedSite> ClassifyAllFunctionEntries(const ElfFile& elf, KernelProfile profile);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_SITE_RESOLVER_H_
