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
  std::string symbol;    // empty: `offset` is a file offset
  uint64_t offset = 0;   // inside symbol, or file offset
  std::string build_id;  // hex; empty: no guard
  bool allow_relocate = false;
  // A file offset outside every function symbol is probed only when confirmed, and then
  // only inside an executable section (see CheckSiteIsCode).
  bool confirm_raw_offset = false;
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

// The one rule for what may carry a probe, shared by Classify and Attach (a probe writes
// int3 into the page: on data it corrupts the program). A site must be
//   - in the file part of a PT_LOAD segment with PF_X, and
//   - in a section with SHF_EXECINSTR when the file has section headers (with
//     -z noseparate-code the ELF header and .rodata share the executable segment), and
//   - inside a function symbol (`in_function`), or, for a raw file offset outside every
//     function, explicitly confirmed (`confirm_raw_offset`) and inside an executable
//     section (a file without section headers cannot confirm one).
// INVALID_ARGUMENT with the reason otherwise.
absl::Status CheckSiteIsCode(const ElfFile& elf, uint64_t file_offset, bool in_function,
                             bool confirm_raw_offset);

// Errors (all with messages naming the binary, symbol and offset):
//   NOT_FOUND          missing file, missing symbol (says if stripped)
//   FAILED_PRECONDITION build-id mismatch (both ids in the message)
//   INVALID_ARGUMENT   offset not an instruction boundary of its function (names the
//                      nearest boundaries), offset past the symbol's end or the file's,
//                      a site that is not code (CheckSiteIsCode)
absl::StatusOr<ResolvedSite> ResolveSite(const ElfFile& elf, const SiteRequest& req,
                                         KernelProfile profile);

// A REFUSED instruction is not an error here (Classify reports it); attaching callers
// turn `insn.placement == Placement::kRefused` into FAILED_PRECONDITION with the reason.

// Every function entry of `elf`, classified (for `xolctl classify --all-functions`).
// Functions whose first instruction cannot be read, or whose entry is not code
// (CheckSiteIsCode), are reported REFUSED with the reason.
std::vector<ResolvedSite> ClassifyAllFunctionEntries(const ElfFile& elf, KernelProfile profile);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_SITE_RESOLVER_H_
