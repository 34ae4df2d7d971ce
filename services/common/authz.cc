#include "services/common/authz.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace xolfleet {

absl::string_view CapabilityName(Capability c) {
  switch (c) {
    case Capability::kReadOnly:
      return "read-only";
    case Capability::kAttachCounts:
      return "attach-counts";
    case Capability::kAttachCapture:
      return "attach-capture";
    case Capability::kAdmin:
      return "admin";
    case Capability::kAgent:
      return "agent";
  }
  return "?";
}

absl::StatusOr<Capability> ParseCapability(absl::string_view name) {
  for (Capability c : {Capability::kReadOnly, Capability::kAttachCounts, Capability::kAttachCapture,
                       Capability::kAdmin, Capability::kAgent}) {
    if (name == CapabilityName(c)) return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown capability \"", name,
                   "\" (read-only, attach-counts, attach-capture, admin, agent)"));
}

std::string Identity::ToString() const {
  if (plaintext) return "insecure:local";
  if (local_peer) return absl::StrCat("uid:", uid);
  if (!subject.empty()) return subject;
  return absl::StrCat("CN=", common_name);
}

absl::StatusOr<Authorizer> Authorizer::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read authorization config ", path));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto a = FromString(ss.str());
  if (!a.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", a.status().message()));
  }
  return a;
}

absl::StatusOr<Authorizer> Authorizer::FromString(absl::string_view text) {
  Authorizer a;
  int lineno = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++lineno;
    if (auto hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::MaxSplits(absl::ByAnyChar(" \t"), 1), absl::SkipEmpty());
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", lineno, ": expected \"<capability> <identity>\""));
    }
    auto cap = ParseCapability(parts[0]);
    if (!cap.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", lineno, ": ", cap.status().message()));
    }
    absl::string_view ident = absl::StripAsciiWhitespace(parts[1]);
    Rule r;
    r.cap = *cap;
    auto id_rule = [&](absl::string_view kind, absl::string_view value,
                       bool by_name) -> absl::Status {
      r.kind = std::string(kind);
      if (!by_name) {
        if (!absl::SimpleAtoi(value, &r.id)) {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", lineno, ": ", kind, ":N needs a number, not \"", value, "\""));
        }
        return absl::OkStatus();
      }
      std::string name(value);
      if (kind == "uid") {
        struct passwd* pw = getpwnam(name.c_str());
        if (pw == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", lineno, ": no user named \"", name, "\" on this host"));
        }
        r.id = pw->pw_uid;
      } else {
        struct group* gr = getgrnam(name.c_str());
        if (gr == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", lineno, ": no group named \"", name, "\" on this host"));
        }
        r.id = gr->gr_gid;
      }
      return absl::OkStatus();
    };
    if (ident == "insecure:local") {
      r.kind = "insecure";
    } else if (absl::ConsumePrefix(&ident, "uid:")) {
      if (auto st = id_rule("uid", ident, false); !st.ok()) return st;
    } else if (absl::ConsumePrefix(&ident, "user:")) {
      if (auto st = id_rule("uid", ident, true); !st.ok()) return st;
    } else if (absl::ConsumePrefix(&ident, "gid:")) {
      if (auto st = id_rule("gid", ident, false); !st.ok()) return st;
    } else if (absl::ConsumePrefix(&ident, "group:")) {
      if (auto st = id_rule("gid", ident, true); !st.ok()) return st;
    } else if (absl::ConsumePrefix(&ident, "cn:")) {
      r.kind = "cn";
    } else if (absl::ConsumePrefix(&ident, "subject:")) {
      r.kind = "subject";
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", lineno,
                       ": identity must be cn:NAME, subject:SUBJECT, insecure:local, uid:N, "
                       "user:NAME, gid:N or group:NAME"));
    }
    if (r.kind == "cn" || r.kind == "subject") {
      if (absl::ConsumeSuffix(&ident, "*")) r.prefix = true;
      if (ident.empty() && !r.prefix) {
        return absl::InvalidArgumentError(absl::StrCat("line ", lineno, ": empty identity"));
      }
      r.pattern = std::string(ident);
    }
    a.rules_.push_back(std::move(r));
  }
  return a;
}

bool Authorizer::RuleMatches(const Rule& r, const Identity& who) const {
  if (r.kind == "insecure") return who.plaintext;
  if (r.kind == "uid") return who.local_peer && who.uid == r.id;
  if (r.kind == "gid") {
    return who.local_peer && (who.gid == r.id || std::find(who.groups.begin(), who.groups.end(),
                                                           r.id) != who.groups.end());
  }
  if (who.plaintext || who.local_peer) return false;
  const std::string& value = r.kind == "cn" ? who.common_name : who.subject;
  if (value.empty()) return false;
  return r.prefix ? absl::StartsWith(value, r.pattern) : value == r.pattern;
}

namespace {
// Whether holding `have` grants `need`.
bool Grants(Capability have, Capability need) {
  if (need == Capability::kAgent || have == Capability::kAgent) return have == need;
  return static_cast<int>(have) >= static_cast<int>(need);
}
}  // namespace

bool Authorizer::Has(const Identity& who, Capability needed) const {
  for (const auto& r : rules_) {
    if (Grants(r.cap, needed) && RuleMatches(r, who)) return true;
  }
  return false;
}

absl::Status Authorizer::Check(const Identity& who, Capability needed) const {
  if (Has(who, needed)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("missing capability ", CapabilityName(needed),
                                                  " for identity \"", who.ToString(),
                                                  "\" (see --authz_config)"));
}

AuthzPolicy::AuthzPolicy(Authorizer initial)
    : current_(std::make_shared<const Authorizer>(std::move(initial))) {}

void AuthzPolicy::Replace(Authorizer next) {
  auto p = std::make_shared<const Authorizer>(std::move(next));
  absl::MutexLock l(&mu_);
  current_.swap(p);
}  // the old policy is freed here, outside the lock, once no check holds it

std::shared_ptr<const Authorizer> AuthzPolicy::Current() const {
  absl::MutexLock l(&mu_);
  return current_;
}

absl::StatusOr<FollowedPolicy> LoadAndFollowPolicy(const std::string& path, absl::Duration interval,
                                                   ReloadObserver* observer) {
  absl::StatusOr<std::string> text = ReadConfigFile(path, /*allow_empty=*/true);
  if (!text.ok()) return text.status();
  absl::StatusOr<Authorizer> a = Authorizer::FromString(*text);
  if (!a.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", a.status().message()));
  FollowedPolicy f;
  f.policy = std::make_unique<AuthzPolicy>(*std::move(a));
  if (interval > absl::ZeroDuration()) {
    ConfigPoller::Options o;
    o.name = "authz";
    o.paths = {path};
    o.interval = interval;
    o.observer = observer;
    AuthzPolicy* policy = f.policy.get();
    f.poller = std::make_unique<ConfigPoller>(
        std::move(o), std::vector<std::string>{*std::move(text)},
        [policy](const std::vector<std::string>& c) -> absl::Status {
          absl::StatusOr<Authorizer> next = Authorizer::FromString(c[0]);
          if (!next.ok()) return next.status();
          policy->Replace(*std::move(next));
          return absl::OkStatus();
        });
  }
  return f;
}

}  // namespace xolfleet
