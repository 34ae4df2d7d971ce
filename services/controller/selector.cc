#include "services/controller/selector.h"

#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/grpc_status.h"
#include "services/common/proto_time.h"

namespace xolfleet::controller {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

}  // namespace

bool Matches(const v1::NodeSelector& sel, const v1::AgentRegister& node) {
  if (sel.all()) return true;
  if (sel.node_names_size() > 0) {
    for (const auto& n : sel.node_names()) {
      if (n == node.node_name()) return true;
    }
    return false;
  }
  if (sel.match_labels().empty()) return false;
  for (const auto& [k, v] : sel.match_labels()) {
    auto it = node.labels().find(k);
    if (it == node.labels().end() || it->second != v) return false;
  }
  return true;
}

absl::Status ValidateNodeName(absl::string_view name) {
  if (name.empty()) return Invalid("node name is empty");
  if (name.size() > kMaxNodeNameBytes) {
    return Invalid(
        absl::StrCat("node name is ", name.size(), " bytes; the limit is ", kMaxNodeNameBytes));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      return Invalid(absl::StrCat("node name \"", name,
                                  "\" may only contain letters, digits, '-', '_' and '.'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels,
                            bool allow_reserved) {
  return xolfleet::ValidateLabels(
      labels, allow_reserved ? ReservedLabels::kAllow : ReservedLabels::kRefuse);
}

absl::Status ValidateSelector(const v1::NodeSelector& sel) {
  int kinds = (sel.all() ? 1 : 0) + (sel.node_names_size() > 0 ? 1 : 0) +
              (!sel.match_labels().empty() ? 1 : 0);
  if (kinds != 1) {
    return Invalid(
        "selector must set exactly one of: all, node_names, match_labels (e.g. --all, --nodes a,b "
        "or --labels zone=a)");
  }
  if (sel.node_names_size() > kMaxSelectorNames) {
    return Invalid(absl::StrCat("selector names ", sel.node_names_size(), " nodes; the limit is ",
                                kMaxSelectorNames));
  }
  std::set<std::string> seen;
  for (const auto& n : sel.node_names()) {
    if (auto s = ValidateNodeName(n); !s.ok()) {
      return Invalid(absl::StrCat("selector: ", s.message()));
    }
    if (!seen.insert(n).second) return Invalid(absl::StrCat("selector names ", n, " twice"));
  }
  if (auto s = ValidateLabels(sel.match_labels(), /*allow_reserved=*/true); !s.ok()) {
    return Invalid(absl::StrCat("selector: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status ValidateSpec(const v1::ProbeSpec& spec, int index) {
  if (absl::Status s = xolfleet::ValidateSpec(spec, ReservedLabels::kRefuse); !s.ok()) {
    return AddFieldViolation(Invalid(absl::StrCat("spec ", index, ": ", s.message())),
                             absl::StrCat("specs[", index, "]"), s.message());
  }
  return absl::OkStatus();
}

absl::Status ValidateAttach(const v1::FleetAttachRequest& req) {
  if (!req.has_selector()) return Invalid("selector is required");
  if (auto s = ValidateSelector(req.selector()); !s.ok()) return s;
  if (req.specs_size() == 0) return Invalid("at least one probe spec is required");
  if (req.specs_size() > kMaxSpecsPerSet) {
    return Invalid(
        absl::StrCat(req.specs_size(), " specs in one set; the limit is ", kMaxSpecsPerSet));
  }
  const absl::Duration ttl = FromDurationProto(req.specs(0).ttl());
  for (int i = 0; i < req.specs_size(); ++i) {
    if (auto s = ValidateSpec(req.specs(i), i); !s.ok()) return s;
    if (FromDurationProto(req.specs(i).ttl()) != ttl) {
      return AddFieldViolation(
          Invalid(absl::StrCat(
              "spec ", i,
              ": every spec of a set must have the same ttl (the set expires as a whole)")),
          absl::StrCat("specs[", i, "].ttl"),
          "every spec of a set must have the same ttl as specs[0] (the set expires as a whole)");
    }
  }
  const auto& pol = req.policy();
  if (!std::isfinite(pol.canary_fraction()) || pol.canary_fraction() < 0 ||
      pol.canary_fraction() > 1) {
    return Invalid("policy.canary_fraction must be between 0 and 1");
  }
  if (absl::Status st =
          CheckDuration(pol.canary_timeout(), "policy.canary_timeout", kMaxCanaryTimeout);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckDuration(pol.canary_soak(), "policy.canary_soak", kMaxCanaryTimeout);
      !st.ok()) {
    return st;
  }
  if (FromDurationProto(pol.canary_soak()) > absl::ZeroDuration() && pol.canary_fraction() == 0) {
    return Invalid("policy.canary_soak needs a canary stage (canary_fraction > 0)");
  }
  if (!std::isfinite(req.expected_calls_per_sec()) || req.expected_calls_per_sec() < 0) {
    return Invalid("expected_calls_per_sec must be >= 0");
  }
  return absl::OkStatus();
}

absl::Status ValidateSetIds(const google::protobuf::RepeatedPtrField<std::string>& ids,
                            bool allow_empty) {
  if (ids.empty() && !allow_empty) return Invalid("at least one set id is required");
  if (ids.size() > kMaxSetIdsPerRequest) {
    return Invalid(absl::StrCat(ids.size(), " set ids; the limit is ", kMaxSetIdsPerRequest));
  }
  std::set<std::string> seen;
  for (const auto& id : ids) {
    if (id.empty() || id.size() > 64) return Invalid("set ids are 1..64 bytes");
    for (char c : id) {
      if (!IsNameChar(c)) return Invalid(absl::StrCat("malformed set id \"", id, "\""));
    }
    if (!seen.insert(id).second) return Invalid(absl::StrCat("set id ", id, " given twice"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRegister(const v1::AgentRegister& reg) {
  if (auto s = ValidateNodeName(reg.node_name()); !s.ok()) return s;
  if (auto s = ValidateLabels(reg.labels(), /*allow_reserved=*/true); !s.ok()) return s;
  if (reg.kernel_release().size() > 256 || reg.kernel_profile().size() > 64 ||
      reg.agent_version().size() > 256 || reg.features_size() > 64) {
    return Invalid("registration fields too large");
  }
  return absl::OkStatus();
}

bool CapturesRegisters(const v1::FleetAttachRequest& req) {
  for (const auto& s : req.specs()) {
    if (s.capture_size() > 0) return true;
  }
  return false;
}

}  // namespace xolfleet::controller
