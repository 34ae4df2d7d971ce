// Transport security shared by the controller, the agent's controller link and xolctl's
// fleet commands: mTLS from PEM files, or plaintext only when explicitly asked for and
// only on loopback or a unix socket.
#ifndef XOLFLEET_SERVICES_COMMON_TLS_H_
#define XOLFLEET_SERVICES_COMMON_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"
#include "services/common/authz.h"

namespace xolfleet::tls {

struct TlsFiles {
  std::string ca_cert;              // PEM: CA that signed the peers' certificates
  std::string cert;                 // PEM: our certificate
  std::string key;                  // PEM: our private key
  bool insecure_plaintext = false;  // explicit opt-in; loopback/unix only
};

// True for "unix:..." and for a host:port whose host resolves (getaddrinfo: /etc/hosts,
// DNS) only to loopback addresses (127.0.0.0/8, ::1): "localhost:N", "127.0.0.1:N",
// "[::1]:N". False for anything that resolves elsewhere, or does not resolve.
bool IsLocalAddress(absl::string_view address);

// OK if all three files are named; INVALID_ARGUMENT saying what `who` needs otherwise.
absl::Status NeedFiles(const TlsFiles& files, absl::string_view who);

// Server side: requires and verifies a client certificate signed by ca_cert. Read once; for
// credentials that follow their files, see cert_reloader.h.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& files, absl::string_view listen_address);

// Client side: verifies the server against ca_cert and presents cert/key.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const TlsFiles& files, absl::string_view target);

// The caller's identity from the connection's auth context.
Identity PeerIdentity(const grpc::ServerContextBase& ctx);

}  // namespace xolfleet::tls

#endif  // XOLFLEET_SERVICES_COMMON_TLS_H_
