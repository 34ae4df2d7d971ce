#include "services/agent/probe_convert.h"

#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "services/common/elf_file.h"
#include "services/common/open_file.h"
#include "services/common/probe_spec.h"

namespace xolfleet {

v1::Placement ToProtoPlacement(Placement p) {
  switch (p) {
    case Placement::kEmulated:
      return v1::PLACEMENT_EMULATED;
    case Placement::kBoosted:
      return v1::PLACEMENT_BOOSTED;
    case Placement::kBoostedRipRel:
      return v1::PLACEMENT_BOOSTED_RIPREL;
    case Placement::kSingleStep:
      return v1::PLACEMENT_SINGLE_STEP;
    case Placement::kRefused:
      return v1::PLACEMENT_REFUSED;
  }
  return v1::PLACEMENT_UNSPECIFIED;
}

SiteRequest ToSiteRequest(const v1::ProbeSpec& spec) {
  SiteRequest sr;
  sr.binary_path = spec.binary_path();
  sr.symbol = spec.symbol();
  sr.offset = spec.offset();
  sr.build_id = spec.build_id();
  sr.allow_relocate = spec.allow_relocate();
  sr.confirm_raw_offset = spec.confirm_raw_offset();
  return sr;
}

v1::SitePlacement ToSitePlacement(const ResolvedSite& s) {
  v1::SitePlacement p;
  p.set_symbol(s.symbol);
  p.set_symbol_offset(s.symbol_offset);
  p.set_file_offset(s.file_offset);
  p.set_vaddr(s.vaddr);
  p.set_insn_bytes(std::string(s.insn.bytes.begin(), s.insn.bytes.end()));
  p.set_disassembly(s.insn.disassembly);
  p.set_placement(ToProtoPlacement(s.insn.placement));
  p.set_reason(s.insn.reason);
  p.set_relocated(s.relocated);
  p.set_requested_file_offset(s.requested_file_offset);
  p.set_relocation_note(s.relocation_note);
  return p;
}

absl::StatusOr<v1::ClassifyResponse> ClassifySites(const v1::ClassifyRequest& req,
                                                   KernelProfile profile,
                                                   const BinaryOpener& open) {
  if (req.sites_size() == 0 && req.all_functions_of().empty()) {
    return absl::InvalidArgumentError(
        "ClassifyRequest names no sites: give sites or all_functions_of");
  }
  v1::ClassifyResponse resp;
  resp.set_profile(std::string(ProfileName(profile)));
  auto count = [&resp](const v1::SitePlacement& p) {
    ++(*resp.mutable_totals())[v1::Placement_Name(p.placement())];
  };
  if (!req.all_functions_of().empty()) {
    if (absl::Status st = ValidateBinaryPath(req.all_functions_of()); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("all_functions_of: ", st.message()));
    }
    v1::ProbeSpec whole;
    whole.set_binary_path(req.all_functions_of());
    absl::StatusOr<std::shared_ptr<const OpenFile>> file = open(whole);
    if (!file.ok()) return file.status();
    absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::FromOpenFile(std::move(*file));
    if (!elf.ok()) return elf.status();
    for (const ResolvedSite& s : ClassifyAllFunctionEntries(**elf, profile)) {
      v1::SitePlacement* p = resp.add_sites();
      *p = ToSitePlacement(s);
      count(*p);
    }
  }
  absl::flat_hash_map<const OpenFile*, std::unique_ptr<ElfFile>> elves;
  for (int i = 0; i < req.sites_size(); ++i) {
    const v1::ProbeSpec& spec = req.sites(i);
    auto fail = [&](const absl::Status& st) {
      return absl::Status(st.code(),
                          absl::StrCat("sites[", i, "] ", Truncated(spec.binary_path()), ":",
                                       Truncated(spec.symbol()), ": ", st.message()));
    };
    if (absl::Status st = ValidateBinaryPath(spec.binary_path()); !st.ok()) {
      return fail(st);
    }
    if (spec.symbol().size() > 16384) {
      return fail(absl::InvalidArgumentError("symbol is longer than 16384 bytes"));
    }
    if (absl::Status st = ValidateContainerId(spec.container_id()); !st.ok()) return fail(st);
    absl::StatusOr<std::shared_ptr<const OpenFile>> file = open(spec);
    if (!file.ok()) return fail(file.status());
    auto it = elves.find(file->get());
    if (it == elves.end()) {
      absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::FromOpenFile(*file);
      if (!elf.ok()) return fail(elf.status());
      it = elves.emplace(file->get(), std::move(*elf)).first;
    }
    const SiteRequest sr = ToSiteRequest(spec);
    absl::StatusOr<ResolvedSite> s = ResolveSite(*it->second, sr, profile);
    if (!s.ok()) return fail(s.status());
    v1::SitePlacement* p = resp.add_sites();
    *p = ToSitePlacement(*s);
    count(*p);
  }
  return resp;
}

}  // namespace xolfleet
