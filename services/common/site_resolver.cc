// Site resolution: symbol -> file offset, build-id guard, instruction-boundary
// check, classification, and the optional function-entry relocation.
//
// Relocation (SiteRequest::allow_relocate, function entries only). The probe moves from the entry
// past a run of leading instructions that have no architectural effect at all (no register, flag,
// memory or control-flow change), so a handler at the new site sees exactly the registers and
// memory it would have seen at the entry:
//   - endbr64 (f3 0f 1e fa): an indirect-branch landing marker. With user-space IBT off (Linux has
//     no user IBT as of 6.18; only the shadow stack is offered to user space) it is a nop. It still
//     executes in place; only the breakpoint moves.
//   - true nops: 90 (without REX.B, which would make it xchg with %r8, and without f3, pause), 66
//     90, and 0f 1f /0 (nopl/nopw with any addressing form; the memory operand is not accessed).
// Nothing else is skipped: `push %rbp`, `mov %rsp,%rbp` and friends change
// state the handler may read. The move is made only when
//   (a) no direct branch inside the function targets any skipped byte after
//       the entry or the new site itself (a branch to the entry still runs
//       through the skipped bytes and hits the new site exactly once, as it
//       hit the entry; a branch to the new site would add hits the entry probe
//       never had),
//   (b) the new site is strictly cheaper under the profile (EMULATED <
//       BOOSTED < BOOSTED_RIPREL < SINGLE_STEP; nothing moves onto a REFUSED
//       site), and
//   (c) the new site has no hazard (InsnPlacement::hazard) the entry lacks.
// Branches from other functions into the middle of this one are not visible
// here; compilers target symbols, and a function entry is what callers use.
#include "services/common/site_resolver.h"

#include <algorithm>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "services/common/open_file.h"
#include "services/common/x86_classifier.h"

namespace xolfleet {
namespace {

constexpr uint64_t kMaxInsnLen = 15;
constexpr uint64_t kMaxFunctionScan = 1 << 20;  // decode at most 1 MiB of one function

int Cost(Placement p) {
  switch (p) {
    case Placement::kEmulated:
      return 1;
    case Placement::kBoosted:
      return 2;
    case Placement::kBoostedRipRel:
      return 3;
    case Placement::kSingleStep:
      return 10;
    case Placement::kRefused:
      return 1000;
  }
  return 1000;
}

std::string Where(const ElfFile& elf, const std::string& symbol, uint64_t off) {
  if (symbol.empty()) return absl::StrFormat("file offset 0x%x of %s", off, elf.path());
  return absl::StrFormat("%s+0x%x in %s", symbol, off, elf.path());
}

// A leading instruction the relocation may skip, or nullptr.
const char* SkippableName(const std::vector<uint8_t>& b) {
  if (b.size() == 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa) {
    return "endbr64";
  }
  if (b.size() == 1 && b[0] == 0x90) return "nop";
  if (b.size() == 2 && b[0] == 0x66 && b[1] == 0x90) return "nop";
  // 0f 1f /0 with optional 66 prefix (nopl/nopw); ModRM.reg must be 0.
  size_t i = 0;
  while (i < b.size() && b[i] == 0x66) ++i;
  if (i + 2 < b.size() && b[i] == 0x0f && b[i + 1] == 0x1f && ((b[i + 2] >> 3) & 7) == 0) {
    return "nopl";
  }
  return nullptr;
}

absl::StatusOr<std::vector<uint8_t>> FunctionBytes(const ElfFile& elf, const ElfSymbol& fn) {
  return elf.ReadAt(fn.file_offset, std::min<uint64_t>(fn.size, kMaxFunctionScan));
}

InsnPlacement ClassifyAt(const ElfFile& elf, uint64_t file_offset, uint64_t max_len,
                         KernelProfile profile) {
  auto bytes = elf.ReadAt(file_offset, std::max<uint64_t>(1, std::min(kMaxInsnLen, max_len)));
  if (!bytes.ok()) {
    // Near the end of the file: read what there is.
    for (uint64_t len = std::min(kMaxInsnLen, max_len); len > 0 && !bytes.ok(); --len) {
      bytes = elf.ReadAt(file_offset, len);
    }
  }
  if (!bytes.ok()) {
    InsnPlacement p;
    p.placement = Placement::kRefused;
    p.reason = std::string(bytes.status().message());
    return p;
  }
  return ClassifyInstruction(*bytes, profile);
}

void TryRelocate(const ElfFile& elf, const ElfSymbol& fn, const std::vector<uint8_t>& body,
                 KernelProfile profile, ResolvedSite* site) {
  // Walk the run of skippable instructions from the entry.
  uint32_t off = 0;
  std::vector<std::string> skipped;
  while (off < body.size()) {
    InsnPlacement p = ClassifyInstruction(
        absl::MakeConstSpan(body).subspan(off, std::min<size_t>(kMaxInsnLen, body.size() - off)),
        profile);
    if (p.length == 0) break;
    const char* name = SkippableName(p.bytes);
    if (!name) break;
    skipped.push_back(name);
    off += p.length;
  }
  if (skipped.empty()) {
    site->relocation_note =
        absl::StrCat("not moved: the first instruction (", site->insn.disassembly,
                     ") is not endbr64 or a nop, nothing can be skipped");
    return;
  }
  if (off >= body.size()) {
    site->relocation_note = "not moved: the function is nothing but skippable instructions";
    return;
  }
  for (uint32_t t : BranchTargetsWithin(body)) {
    if (t >= 1 && t <= off) {
      site->relocation_note = absl::StrFormat(
          "not moved: a branch inside %s targets +0x%x, so a probe at +0x%x would fire on paths "
          "that never pass the entry",
          fn.name, t, off);
      return;
    }
  }
  InsnPlacement moved = ClassifyInstruction(
      absl::MakeConstSpan(body).subspan(off, std::min<size_t>(kMaxInsnLen, body.size() - off)),
      profile);
  const std::string what = absl::StrJoin(skipped, "; ");
  if (!moved.hazard.empty() && site->insn.hazard.empty()) {
    site->relocation_note =
        absl::StrFormat("not moved: the site after %s (+0x%x, %s) has a hazard: %s", what, off,
                        moved.disassembly, moved.hazard);
    return;
  }
  if (Cost(moved.placement) >= Cost(site->insn.placement)) {
    site->relocation_note = absl::StrFormat(
        "not moved: the site after %s (+0x%x, %s) is %s under %s, not cheaper than %s", what, off,
        moved.disassembly, PlacementName(moved.placement), ProfileName(profile),
        PlacementName(site->insn.placement));
    return;
  }
  site->relocation_note = absl::StrFormat(
      "moved from %s+0x0 (%s, %s) to %s+0x%x (%s, %s) under %s: skipped %s, which %s no "
      "architectural effect and still run in place; no branch in %s targets +0x1..+0x%x",
      fn.name, site->insn.disassembly, PlacementName(site->insn.placement), fn.name, off,
      moved.disassembly, PlacementName(moved.placement), ProfileName(profile), what,
      skipped.size() == 1 ? "has" : "have", fn.name, off);
  site->relocated = true;
  site->requested_file_offset = site->file_offset;
  site->file_offset = fn.file_offset + off;
  site->symbol_offset = off;
  if (auto v = elf.FileOffsetToVaddr(site->file_offset); v.ok()) site->vaddr = *v;
  site->insn = std::move(moved);
}

}  // namespace

absl::Status CheckSiteIsCode(const ElfFile& elf, uint64_t file_offset, bool in_function,
                             bool confirm_raw_offset) {
  const std::string where =
      absl::StrFormat("file offset 0x%x of %s", file_offset, Truncated(elf.path(), 256));
  if (!elf.InExecutableSegment(file_offset)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " is not code: it is not in an executable segment (PT_LOAD with PF_X)"));
  }
  std::optional<ElfSection> sec = elf.SectionAtFileOffset(file_offset);
  if (elf.has_sections() && (!sec || !sec->executable)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " is not code: it is in ",
        sec ? absl::StrCat("section ", Truncated(sec->name, 64), ", which is not executable")
            : "no section (ELF or program headers, padding)"));
  }
  if (in_function) return absl::OkStatus();
  if (!confirm_raw_offset) {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     " is not inside any function symbol; to probe code outside known functions "
                     "confirm the raw offset (confirm_raw_offset, xolctl --confirm-raw-offset)"));
  }
  if (!elf.has_sections()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     " is outside every function symbol and the file has no section headers, so it "
                     "cannot be confirmed to be in an executable section"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ResolvedSite> ResolveSite(const ElfFile& elf, const SiteRequest& req,
                                         KernelProfile profile) {
  if (!req.build_id.empty()) {
    const std::string want = absl::AsciiStrToLower(req.build_id);
    if (elf.build_id().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          elf.path(), " has no build-id note; cannot check the build-id guard ", want));
    }
    if (elf.build_id() != want) {
      return absl::FailedPreconditionError(absl::StrCat("build-id mismatch for ", elf.path(),
                                                        ": file has ", elf.build_id(),
                                                        ", request expects ", want));
    }
  }

  ResolvedSite site;
  site.binary_path = elf.path();
  std::optional<ElfSymbol> fn;
  if (!req.symbol.empty()) {
    absl::StatusOr<ElfSymbol> sym = elf.FindSymbol(req.symbol);
    if (!sym.ok()) return sym.status();
    if (!sym->is_function) {
      return absl::InvalidArgumentError(
          absl::StrCat("symbol '", req.symbol, "' in ", elf.path(), " is not a function"));
    }
    if (sym->file_offset == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("symbol '%s' in %s (0x%x) is not in a loaded segment", req.symbol,
                          elf.path(), sym->vaddr));
    }
    if (sym->size > 0 && req.offset >= sym->size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("offset 0x%x is past the end of %s (size 0x%x) in %s", req.offset,
                          req.symbol, sym->size, elf.path()));
    }
    site.symbol = sym->name;
    site.symbol_offset = req.offset;
    site.file_offset = sym->file_offset + req.offset;
    if (sym->size > 0) fn = *sym;
  } else {
    site.file_offset = req.offset;
    if (!elf.ReadAt(req.offset, 1).ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("file offset 0x%x is past the end of %s", req.offset, elf.path()));
    }
    fn = elf.FunctionAtFileOffset(req.offset);
    if (fn) {
      site.symbol = fn->name;
      site.symbol_offset = req.offset - fn->file_offset;
    }
  }
  absl::StatusOr<uint64_t> vaddr = elf.FileOffsetToVaddr(site.file_offset);
  if (!vaddr.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not inside any PT_LOAD segment (not code that can be probed)",
        Where(elf, site.symbol, site.symbol.empty() ? site.file_offset : site.symbol_offset)));
  }
  site.vaddr = *vaddr;
  site.requested_file_offset = site.file_offset;
  // A named function with no size is inside a function only at its entry.
  const bool in_function = fn.has_value() || (!req.symbol.empty() && req.offset == 0);
  if (absl::Status code =
          CheckSiteIsCode(elf, site.file_offset, in_function, req.confirm_raw_offset);
      !code.ok()) {
    return code;
  }

  std::vector<uint8_t> body;
  if (fn) {
    absl::StatusOr<std::vector<uint8_t>> b = FunctionBytes(elf, *fn);
    if (!b.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ", fn->name, " in ", elf.path(), ": ", b.status().message()));
    }
    body = std::move(*b);
    // The entry is a boundary by definition; only inner offsets need the linear decode.
    const uint64_t off = site.symbol_offset;
    const std::vector<uint32_t> bounds =
        off == 0 ? std::vector<uint32_t>{0} : InstructionBoundaries(body);
    if (!std::binary_search(bounds.begin(), bounds.end(), off)) {
      auto it = std::upper_bound(bounds.begin(), bounds.end(), off);
      uint64_t end_decoded = 0;
      if (!bounds.empty()) {
        InsnPlacement last =
            ClassifyInstruction(absl::MakeConstSpan(body).subspan(bounds.back()), profile);
        end_decoded = bounds.back() + last.length;
      }
      if (off >= end_decoded && end_decoded < body.size()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: cannot prove it is an instruction boundary: decoding %s from its "
                            "start stops at an undecodable byte at +0x%x",
                            Where(elf, site.symbol, off), fn->name, end_decoded));
      }
      const uint64_t before = it == bounds.begin() ? 0 : *(it - 1);
      const std::string after = it == bounds.end() ? "the end" : absl::StrFormat("+0x%x", *it);
      InsnPlacement inside =
          ClassifyInstruction(absl::MakeConstSpan(body).subspan(before), profile);
      return absl::InvalidArgumentError(
          absl::StrFormat("%s is not an instruction boundary: it is inside '%s' at +0x%x; the "
                          "nearest boundaries are +0x%x and %s (use one of those offsets)",
                          Where(elf, site.symbol, off), inside.disassembly, before, before, after));
    }
    const uint64_t left = body.size() - site.symbol_offset;
    site.insn = ClassifyInstruction(absl::MakeConstSpan(body).subspan(
                                        site.symbol_offset, std::min<uint64_t>(kMaxInsnLen, left)),
                                    profile);
  } else {
    site.insn = ClassifyAt(elf, site.file_offset, kMaxInsnLen, profile);
  }

  if (req.allow_relocate) {
    if (!fn || site.symbol_offset != 0) {
      site.relocation_note = "not moved: only function-entry probes (offset 0) are relocated";
    } else {
      TryRelocate(elf, *fn, body, profile, &site);
    }
  }
  return site;
}

std::vector<ResolvedSite> ClassifyAllFunctionEntries(const ElfFile& elf, KernelProfile profile) {
  std::vector<ResolvedSite> out;
  for (const ElfSymbol& fn : elf.Functions()) {
    ResolvedSite site;
    site.binary_path = elf.path();
    site.symbol = fn.name;
    site.file_offset = fn.file_offset;
    site.requested_file_offset = fn.file_offset;
    site.vaddr = fn.vaddr;
    if (absl::Status code = CheckSiteIsCode(elf, fn.file_offset, true, false); !code.ok()) {
      site.insn.placement = Placement::kRefused;
      site.insn.reason = std::string(code.message());
    } else {
      site.insn = ClassifyAt(elf, fn.file_offset, fn.size, profile);
    }
    out.push_back(std::move(site));
  }
  return out;
}

}  // namespace xolfleet
