#include "services/common/probe_spec.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/common/enum_names.h"
#include "services/common/open_file.h"
#include "services/common/proto_time.h"

namespace xolfleet {
namespace {

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

bool IsLabelKeyChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
         c == '/';
}

// Decimal, or hex with 0x.
bool ParseNumber(absl::string_view t, uint64_t* v) {
  if (absl::ConsumePrefix(&t, "0x") || absl::ConsumePrefix(&t, "0X")) {
    return !t.empty() && absl::SimpleHexAtoi(t, v);
  }
  return absl::SimpleAtoi(t, v);
}

}  // namespace

absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels,
                            ReservedLabels reserved) {
  size_t user = 0, ours = 0;
  for (const auto& [k, v] : labels) {
    if (k.empty() || k.size() > kMaxLabelKeyBytes) {
      return Invalid(absl::StrCat("label key '", Truncated(k, 64), "' must be 1..",
                                  kMaxLabelKeyBytes, " bytes"));
    }
    for (char c : k) {
      if (!IsLabelKeyChar(c)) {
        return Invalid(absl::StrCat("label key '", Truncated(k),
                                    "' may only contain letters, digits, '-', '_', '.', '/'"));
      }
    }
    if (absl::StartsWith(k, kReservedLabelPrefix)) {
      if (reserved == ReservedLabels::kRefuse) {
        return Invalid(absl::StrCat("label key '", Truncated(k), "' uses the reserved prefix ",
                                    kReservedLabelPrefix,
                                    " (the agent and the controller set those labels)"));
      }
      ++ours;
    } else {
      ++user;
    }
    if (v.size() > kMaxLabelValueBytes) {
      return Invalid(absl::StrCat("label '", Truncated(k), "' value is ", v.size(),
                                  " bytes; the limit is ", kMaxLabelValueBytes));
    }
    if (v.find('\0') != std::string::npos) {
      return Invalid(absl::StrCat("label '", Truncated(k), "' value contains a NUL byte"));
    }
  }
  if (user > kMaxLabels) {
    return Invalid(absl::StrCat(user, " labels; the limit is ", kMaxLabels));
  }
  if (ours > kMaxReservedLabels) {
    return Invalid(absl::StrCat(ours, " reserved labels; the limit is ", kMaxReservedLabels));
  }
  return absl::OkStatus();
}

absl::Status ValidateSpec(const v1::ProbeSpec& s, ReservedLabels reserved) {
  if (absl::Status st = ValidateBinaryPath(s.binary_path()); !st.ok()) return st;
  const std::string& p = s.binary_path();
  if (absl::StrContains(p, "/../") || absl::EndsWith(p, "/..")) {
    return Invalid(absl::StrCat("binary_path '", Truncated(p),
                                "' must not contain '..': name the file directly"));
  }
  if (s.symbol().size() > kMaxSymbolBytes) {
    return Invalid(absl::StrCat("symbol '", Truncated(s.symbol()), "' is longer than ",
                                kMaxSymbolBytes, " bytes"));
  }
  if (s.symbol().find('\0') != std::string::npos) {
    return Invalid(absl::StrCat("symbol '", Truncated(s.symbol()), "' contains a NUL byte"));
  }
  if (s.rate_limit_per_sec() >= kMaxRateLimit) {
    // The kernel side keeps one event per rate_interval_ns = 1e9 / limit ns: a limit of 1e9
    // or more has no interval and would mean "unlimited".
    return Invalid(absl::StrCat("rate_limit_per_sec ", s.rate_limit_per_sec(), " is not below ",
                                kMaxRateLimit, " events/s; use 0 for no limit"));
  }
  if (s.pid() < 0) return Invalid(absl::StrCat("pid ", s.pid(), " must not be negative"));
  if (absl::Status st = ValidateContainerId(s.container_id()); !st.ok()) return st;
  if (s.pid() > 0 && !s.container_id().empty()) {
    return Invalid(absl::StrCat("pid ", s.pid(), " and container_id ", s.container_id(),
                                " both name where binary_path is: set one of them"));
  }
  if (s.capture_size() > v1::Register_MAX) {
    return Invalid("capture names more registers than exist");
  }
  for (int r : s.capture()) {
    if (r < v1::REGISTER_RAX || r > v1::REGISTER_EFLAGS) {
      return Invalid(
          absl::StrCat("capture names register ", r, ", not one of RAX..EFLAGS (1..18)"));
    }
  }
  if (!s.build_id().empty()) {
    if (s.build_id().size() > kMaxBuildIdHexDigits || s.build_id().size() % 2 != 0) {
      return Invalid(absl::StrCat("build_id '", Truncated(s.build_id()),
                                  "' must be an even number (<= ", kMaxBuildIdHexDigits,
                                  ") of hex digits"));
    }
    for (char c : s.build_id()) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
        return Invalid(absl::StrCat("build_id '", Truncated(s.build_id()), "' is not hex"));
      }
    }
  }
  if (absl::Status st = CheckDuration(s.ttl(), "ttl", kMaxTtl); !st.ok()) {
    return st;
  }
  return ValidateLabels(s.labels(), reserved);
}

absl::Status ValidateContainerId(absl::string_view id) {
  if (id.empty()) return absl::OkStatus();
  bool hex = true;
  for (char c : id) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!hex || id.size() < kMinContainerIdHexDigits || id.size() > kMaxContainerIdHexDigits) {
    return Invalid(absl::StrCat(
        "container_id '", Truncated(id), "' must be ", kMinContainerIdHexDigits, "..",
        kMaxContainerIdHexDigits,
        " lowercase hex digits (the id or a prefix of it, as crictl/docker/podman print it)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ProbeSpec> ParseSite(absl::string_view text) {
  v1::ProbeSpec spec;
  const size_t at = text.rfind('@'), colon = text.rfind(':');
  if (at != absl::string_view::npos && at > 0 && (colon == absl::string_view::npos || at > colon)) {
    uint64_t off = 0;
    absl::string_view o = text.substr(at + 1);
    absl::ConsumePrefix(&o, "0x");
    if (o.empty() || !absl::SimpleHexAtoi(o, &off)) {
      return Invalid(absl::StrCat("bad file offset in '", Truncated(text), "' (PATH@0xHEX)"));
    }
    spec.set_binary_path(std::string(text.substr(0, at)));
    spec.set_offset(off);
    return spec;
  }
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return Invalid(
        absl::StrCat("site '", Truncated(text),
                     "' is not PATH:SYMBOL[+OFFSET], PATH:0xFILEOFFSET or PATH@FILEOFFSET"));
  }
  spec.set_binary_path(std::string(text.substr(0, colon)));
  absl::string_view where = text.substr(colon + 1);
  uint64_t off = 0;
  if (absl::StartsWith(where, "0x") && ParseNumber(where, &off)) {
    spec.set_offset(off);  // a file offset, not a symbol named "0x..."
    return spec;
  }
  if (size_t plus = where.find('+'); plus != absl::string_view::npos) {
    if (!ParseNumber(where.substr(plus + 1), &off)) {
      return Invalid(absl::StrCat("bad offset in '", Truncated(text), "'"));
    }
    spec.set_offset(off);
    where = where.substr(0, plus);
  }
  if (where.empty()) return Invalid(absl::StrCat("no symbol in '", Truncated(text), "'"));
  spec.set_symbol(std::string(where));
  return spec;
}

std::string FormatSite(const v1::ProbeSpec& s) {
  if (s.symbol().empty()) return absl::StrFormat("%s@0x%x", s.binary_path(), s.offset());
  if (s.offset()) return absl::StrFormat("%s:%s+0x%x", s.binary_path(), s.symbol(), s.offset());
  return absl::StrCat(s.binary_path(), ":", s.symbol());
}

absl::StatusOr<v1::Register> ParseRegister(absl::string_view name) {
  std::string n = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(name));
  if (absl::StartsWith(n, "%")) n = n.substr(1);
  v1::Register r = v1::REGISTER_UNSPECIFIED;
  if (!ParseShortName(n, &r) || r == v1::REGISTER_UNSPECIFIED) {
    return Invalid(
        absl::StrCat("unknown register '", Truncated(name), "' (rax..r15, rip, eflags)"));
  }
  return r;
}

absl::Status ParseLabels(absl::string_view text,
                         google::protobuf::Map<std::string, std::string>* out) {
  for (absl::string_view kv : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || kv.find('=') == absl::string_view::npos) {
      return Invalid(absl::StrCat("label '", Truncated(kv), "' is not KEY=VALUE"));
    }
    (*out)[std::string(p.first)] = std::string(p.second);
  }
  return absl::OkStatus();
}

std::string FleetProbeId(absl::string_view set_id, int index) {
  return absl::StrCat(set_id, "/", index);
}

}  // namespace xolfleet
