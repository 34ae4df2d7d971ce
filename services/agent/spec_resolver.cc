#include "services/agent/spec_resolver.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/agent/probe_convert.h"
#include "services/common/elf_file.h"
#include "services/common/grpc_status.h"
#include "services/common/probe_spec.h"

namespace xolfleet {
namespace {

constexpr size_t kMaxFailuresInMessage = 8;

// The state of one request's resolution: files opened and ELF files read once per
// request, and the specs seen so far.
class RequestResolver {
 public:
  RequestResolver(const BinaryLocator& locator, KernelProfile profile)
      : locator_(locator), profile_(profile) {}

  // A failure names the field that caused it (a google.rpc.BadRequest violation for the
  // client; services/common/grpc_status.h): the whole spec when no one field is at fault.
  absl::StatusOr<ResolvedSpec> Resolve(int i, const v1::ProbeSpec& spec) {
    auto at = [i](absl::string_view field, absl::Status st) {
      return AddFieldViolation(st, absl::StrCat("specs[", i, "]", field), st.message());
    };
    // The shared rules (services/common/probe_spec.h); reserved labels come from the gRPC service
    // (the owner) and the controller link (the fleet probe id), never from a caller.
    if (absl::Status st = ValidateSpec(spec, ReservedLabels::kAllow); !st.ok()) return at("", st);
    if (absl::Status st = CheckFirstOccurrence(i, spec); !st.ok()) return at("", st);
    absl::StatusOr<LocatedBinary> where = locator_.Open(spec, &located_);
    // Without pid or container the path alone chose the file.
    const bool by_path = spec.pid() == 0 && spec.container_id().empty();
    if (!where.ok()) return at(by_path ? ".binary_path" : "", where.status());
    absl::StatusOr<const ElfFile*> elf = Elf(where->file);
    if (!elf.ok()) return at(".binary_path", elf.status());
    absl::StatusOr<ResolvedSite> site = ResolveSite(**elf, ToSiteRequest(spec), profile_);
    if (!site.ok()) return at(spec.symbol().empty() ? ".offset" : ".symbol", site.status());
    if (absl::Status st = CheckProbeable(*site); !st.ok()) {
      return at(spec.offset() != 0 || spec.symbol().empty() ? ".offset" : ".symbol", st);
    }
    return ResolvedSpec{std::move(*site), (*elf)->file(), where->process};
  }

 private:
  // Identical specs would be identical probes: one of them is a mistake (5,000 copies were 5,000
  // kernel probes). Specs that differ in anything (labels, capture, rate, pid) are distinct probes.
  absl::Status CheckFirstOccurrence(int i, const v1::ProbeSpec& spec) {
    std::string key;
    {
      google::protobuf::io::StringOutputStream sos(&key);
      google::protobuf::io::CodedOutputStream cos(&sos);
      cos.SetSerializationDeterministic(true);
      spec.SerializeToCodedStream(&cos);
      cos.Trim();
    }
    auto [it, inserted] = seen_.emplace(std::move(key), i);
    if (inserted) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "identical to spec[", it->second, "]: one request may not carry the same spec twice"));
  }

  absl::StatusOr<const ElfFile*> Elf(const std::shared_ptr<const OpenFile>& file) {
    auto it = elves_.find(file.get());
    if (it == elves_.end()) {
      absl::StatusOr<std::unique_ptr<ElfFile>> e = ElfFile::FromOpenFile(file);
      if (!e.ok()) return e.status();
      it = elves_.emplace(file.get(), std::move(*e)).first;
    }
    return it->second.get();
  }

  absl::Status CheckProbeable(const ResolvedSite& site) const {
    if (site.insn.placement == Placement::kRefused) {
      return absl::FailedPreconditionError(
          absl::StrCat("the ", ProfileName(profile_), " kernel refuses to probe '",
                       site.insn.disassembly.empty() ? "undecodable bytes" : site.insn.disassembly,
                       "' at file offset 0x", absl::Hex(site.file_offset), ": ", site.insn.reason,
                       "; choose another offset"));
    }
    if (!site.insn.hazard.empty()) {
      // The kernel would accept this probe, but the probed program would not run as
      // before (an instruction skipped, or the process killed after the hit): a probe
      // must never change or kill what it probes.
      return absl::FailedPreconditionError(
          absl::StrCat("probing '", site.insn.disassembly, "' at file offset 0x",
                       absl::Hex(site.file_offset), " is unsafe on the ", ProfileName(profile_),
                       " kernel (hazard: ", site.insn.hazard, "); choose another offset"));
    }
    return absl::OkStatus();
  }

  const BinaryLocator& locator_;
  const KernelProfile profile_;
  // One open file per (root, path) per request: every spec naming it is checked against,
  // and attached through, the same descriptor.
  BinaryLocator::Cache located_;
  absl::flat_hash_map<const OpenFile*, std::unique_ptr<ElfFile>> elves_;
  // Serialized spec -> index of its first occurrence.
  absl::flat_hash_map<std::string, int> seen_;
};

using Failures = std::vector<std::pair<size_t, absl::Status>>;

absl::Status FailureStatus(const v1::AttachRequest& req, const Failures& failures) {
  std::vector<std::string> parts;
  for (size_t k = 0; k < failures.size() && k < kMaxFailuresInMessage; ++k) {
    parts.push_back(absl::StrCat(DescribeSpec(failures[k].first, req.specs(failures[k].first)),
                                 ": ", failures[k].second.message()));
  }
  if (failures.size() > kMaxFailuresInMessage) {
    parts.push_back(absl::StrCat("and ", failures.size() - kMaxFailuresInMessage, " more"));
  }
  absl::Status out(failures[0].second.code(),
                   absl::StrCat("nothing attached: ", failures.size(), " of ", req.specs_size(),
                                " specs failed: ", absl::StrJoin(parts, "; ")));
  // Every failed spec, not only those the message names (up to kMaxFieldViolations).
  for (const auto& [i, st] : failures) {
    std::vector<FieldViolation> own = FieldViolations(st);
    if (own.empty()) own.push_back({absl::StrCat("specs[", i, "]"), std::string(st.message())});
    for (const FieldViolation& v : own) out = AddFieldViolation(out, v.field, v.description);
  }
  return out;
}

}  // namespace

std::string DescribeSpec(size_t i, const v1::ProbeSpec& s) {
  const std::string sym = Truncated(s.symbol());
  std::string where = s.symbol().empty()
                          ? absl::StrCat("file offset 0x", absl::Hex(s.offset()))
                          : (s.offset() ? absl::StrCat(sym, "+0x", absl::Hex(s.offset())) : sym);
  return absl::StrCat("spec[", i, "] ", Truncated(s.binary_path()), ":", where,
                      s.pid() ? absl::StrCat(" pid ", s.pid()) : "");
}

absl::StatusOr<std::vector<ResolvedSpec>> ResolveSpecs(const BinaryLocator& locator,
                                                       KernelProfile profile,
                                                       const v1::AttachRequest& req,
                                                       const ResolveProgressFn& progress) {
  RequestResolver resolver(locator, profile);
  const int total = req.specs_size();
  std::vector<ResolvedSpec> out(total);
  Failures failures;
  for (int i = 0; i < total; ++i) {
    absl::StatusOr<ResolvedSpec> r = resolver.Resolve(i, req.specs(i));
    if (r.ok()) {
      out[i] = std::move(*r);
    } else {
      failures.emplace_back(i, r.status());
    }
    if (progress && (i + 1 == total || (i + 1) % std::max(64, total / 20) == 0)) {
      progress(i + 1, total);
    }
  }
  // A process may have exited while the request was read: its pid may be another's now.
  if (failures.empty()) {
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i].process == nullptr) continue;
      if (absl::Status st = out[i].process->CheckRunning(); !st.ok()) failures.emplace_back(i, st);
    }
  }
  if (!failures.empty()) return FailureStatus(req, failures);
  return out;
}

}  // namespace xolfleet
