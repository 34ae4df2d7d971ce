#include "services/common/tls.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpc/grpc_security_constants.h"
#include "services/common/config_reload.h"

namespace xolfleet::tls {

namespace {
bool IsLoopback(const struct sockaddr* sa) {
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const struct sockaddr_in*>(sa);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(sa);
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}
}  // namespace

bool IsLocalAddress(absl::string_view a) {
  if (absl::StartsWith(a, "unix:") || absl::StartsWith(a, "unix-abstract:")) return true;
  if (absl::ConsumePrefix(&a, "dns:")) absl::ConsumePrefix(&a, "///");
  if (!absl::ConsumePrefix(&a, "ipv4:")) absl::ConsumePrefix(&a, "ipv6:");
  std::string host;
  if (absl::StartsWith(a, "[")) {
    size_t close = a.find(']');
    if (close == absl::string_view::npos) return false;
    host = std::string(a.substr(1, close - 1));
  } else {
    size_t colon = a.rfind(':');
    host = std::string(a.substr(0, colon));
  }
  if (host.empty()) return false;  // ":PORT" is every interface
  // What the name resolves to, not how it is spelled: "127.0.0.1.evil.example" may be
  // anything. Every address it resolves to must be a loopback one.
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr) return false;
  bool all_loopback = true;
  for (struct addrinfo* r = res; r != nullptr; r = r->ai_next) {
    if (!IsLoopback(r->ai_addr)) all_loopback = false;
  }
  freeaddrinfo(res);
  return all_loopback;
}

absl::Status NeedFiles(const TlsFiles& f, absl::string_view who) {
  if (f.ca_cert.empty() || f.cert.empty() || f.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(who,
                     " needs a CA certificate, a certificate and a key for mTLS (tls ca/cert/key "
                     "flags); plaintext only when explicitly asked for (insecure plaintext flag), "
                     "on a loopback address or unix socket"));
  }
  return absl::OkStatus();
}

namespace {
// The three PEM files of one side of an mTLS connection.
struct Pems {
  std::string ca, cert, key;
};
absl::StatusOr<Pems> ReadPems(const TlsFiles& f) {
  Pems p;
  for (auto [path, out] : {std::pair{&f.ca_cert, &p.ca}, {&f.cert, &p.cert}, {&f.key, &p.key}}) {
    auto content = ReadConfigFile(*path);
    if (!content.ok()) return content.status();
    *out = *std::move(content);
  }
  return p;
}

// Plaintext only where nothing leaves the machine: INVALID_ARGUMENT otherwise.
absl::Status CheckPlaintextIsLocal(absl::string_view address, absl::string_view on_or_to) {
  if (IsLocalAddress(address)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("refusing plaintext ", on_or_to, " ", address,
                                                 ": --insecure_plaintext is only allowed ",
                                                 on_or_to, " loopback addresses or unix sockets"));
}
}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& f, absl::string_view listen_address) {
  if (f.insecure_plaintext) {
    if (auto s = CheckPlaintextIsLocal(listen_address, "on"); !s.ok()) return s;
    return grpc::InsecureServerCredentials();
  }
  if (auto s = NeedFiles(f, "the server"); !s.ok()) return s;
  auto pem = ReadPems(f);
  if (!pem.ok()) return pem.status();
  grpc::SslServerCredentialsOptions opts(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = pem->ca;
  opts.pem_key_cert_pairs.push_back({pem->key, pem->cert});
  return grpc::SslServerCredentials(opts);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const TlsFiles& f, absl::string_view target) {
  if (f.insecure_plaintext) {
    if (auto s = CheckPlaintextIsLocal(target, "to"); !s.ok()) return s;
    return grpc::InsecureChannelCredentials();
  }
  if (auto s = NeedFiles(f, "the client"); !s.ok()) return s;
  auto pem = ReadPems(f);
  if (!pem.ok()) return pem.status();
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = pem->ca;
  opts.pem_private_key = pem->key;
  opts.pem_cert_chain = pem->cert;
  return grpc::SslCredentials(opts);
}

Identity PeerIdentity(const grpc::ServerContextBase& ctx) {
  Identity id;
  auto auth = ctx.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) {
    id.plaintext = true;
    return id;
  }
  auto subj = auth->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME);
  if (!subj.empty()) id.subject = std::string(subj.front().data(), subj.front().size());
  auto cn = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
  if (!cn.empty()) id.common_name = std::string(cn.front().data(), cn.front().size());
  return id;
}

}  // namespace xolfleet::tls
