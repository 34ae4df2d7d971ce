// Authorization by client identity. Every mTLS client is identified by its certificate
// (subject and common name); a config file grants capabilities to identities:
//
//   # capability     identity
//   admin            cn:ops-admin
//   read-only        cn:dashboard
//   attach-counts    subject:CN=ci,O=example
//   attach-capture   cn:perf-*
//   agent            cn:node-*          # may connect as an agent (AgentLink)
//   read-only        insecure:local     # plaintext clients (loopback/unix only)
//
//   admin            uid:0              # local callers on a unix socket (SO_PEERCRED)
//   attach-counts    group:xolfleet     # primary or supplementary group of the caller
//   read-only        user:prometheus
//
// Identity patterns: `cn:NAME`, `subject:FULL_SUBJECT` (as gRPC reports it), either with a trailing
// `*` for a prefix match; `insecure:local` for plaintext TCP connections on loopback; `uid:N`,
// `user:NAME`, `gid:N`, `group:NAME` for callers on a unix socket, identified by the kernel
// (SO_PEERCRED, SO_PEERGROUPS), names resolved when the file is loaded. Capabilities nest: admin >
// attach-capture > attach-counts > read-only. `agent` is apart.
#ifndef XOLFLEET_SERVICES_COMMON_AUTHZ_H_
#define XOLFLEET_SERVICES_COMMON_AUTHZ_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/common/config_reload.h"

namespace xolfleet {

enum class Capability { kReadOnly, kAttachCounts, kAttachCapture, kAdmin, kAgent };

absl::string_view CapabilityName(Capability c);
absl::StatusOr<Capability> ParseCapability(absl::string_view name);

// Who is calling.
struct Identity {
  std::string subject;      // full certificate subject ("" for plaintext)
  std::string common_name;  // CN ("" for plaintext)
  bool plaintext = false;   // plaintext TCP (loopback): anyone on this host
  // A process on this host connected over a unix socket, as the kernel identified it at
  // connect() time (SO_PEERCRED, SO_PEERGROUPS).
  bool local_peer = false;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  std::vector<gid_t> groups;  // supplementary groups
  pid_t pid = 0;

  // For logs, records and probe owners: "CN=...", "insecure:local" or "uid:1000".
  std::string ToString() const;
};

class Authorizer {
 public:
  static absl::StatusOr<Authorizer> FromFile(const std::string& path);
  static absl::StatusOr<Authorizer> FromString(absl::string_view text);

  // OK, or PERMISSION_DENIED naming the missing capability and the identity.
  absl::Status Check(const Identity& who, Capability needed) const;
  bool Has(const Identity& who, Capability needed) const;

 private:
  struct Rule {
    Capability cap;
    std::string kind;  // "cn", "subject", "insecure", "uid", "gid"
    std::string pattern;
    bool prefix = false;
    uint32_t id = 0;  // uid or gid
  };
  bool RuleMatches(const Rule& r, const Identity& who) const;
  std::vector<Rule> rules_;
};

// The policy in force: an Authorizer that a reload (config_reload.h) may replace while
// calls are being checked. Each check uses one policy from start to end. Thread-safe.
class AuthzPolicy final {
 public:
  explicit AuthzPolicy(Authorizer initial);

  absl::Status Check(const Identity& who, Capability needed) const {
    return Current()->Check(who, needed);
  }
  bool Has(const Identity& who, Capability needed) const { return Current()->Has(who, needed); }

  void Replace(Authorizer next);
  std::shared_ptr<const Authorizer> Current() const;

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const Authorizer> current_ ABSL_GUARDED_BY(mu_);
};

// A policy loaded from a file and kept equal to it: the file is re-read every `interval`
// (zero: never); a version that does not parse is refused (logged, reported to `observer`
// as config "authz") and the policy in force stays.
struct FollowedPolicy {
  std::unique_ptr<AuthzPolicy> policy;
  std::unique_ptr<ConfigPoller> poller;  // null when interval is zero
};
absl::StatusOr<FollowedPolicy> LoadAndFollowPolicy(const std::string& path, absl::Duration interval,
                                                   ReloadObserver* observer);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_AUTHZ_H_
