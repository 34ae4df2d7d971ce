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
// Identity patterns: `cn:NAME`, `subject:FULL_SUBJECT` (as gRPC reports it), either with a
// trailing `*` for a prefix match, and `insecure:local` for plaintext connections.
// Capabilities nest: admin > attach-capture > attach-counts > read-only. `agent` is apart.
#ifndef XOLFLEET_SERVICES_CONTROLLER_AUTHZ_H_
#define XOLFLEET_SERVICES_CONTROLLER_AUTHZ_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace xolfleet::controller {

enum class Capability { kReadOnly, kAttachCounts, kAttachCapture, kAdmin, kAgent };

absl::string_view CapabilityName(Capability c);
absl::StatusOr<Capability> ParseCapability(absl::string_view name);

// Who is calling.
struct Identity {
  std::string subject;      // full certificate subject ("" for plaintext)
  std::string common_name;  // CN ("" for plaintext)
  bool plaintext = false;

  std::string ToString() const;  // for logs and records: "CN=..." or "insecure:local"
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
    std::string kind;  // "cn", "subject", "insecure"
    std::string pattern;
    bool prefix = false;
  };
  bool RuleMatches(const Rule& r, const Identity& who) const;
  std::vector<Rule> rules_;
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_AUTHZ_H_
