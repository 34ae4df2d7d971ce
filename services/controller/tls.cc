#include "services/controller/tls.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/grpc_security_constants.h"

namespace xolfleet::tls {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::FailedPreconditionError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty()) return absl::FailedPreconditionError(absl::StrCat(path, " is empty"));
  return ss.str();
}

bool IsLocalAddress(absl::string_view a) {
  if (absl::StartsWith(a, "unix:") || absl::StartsWith(a, "unix-abstract:")) return true;
  if (absl::StartsWith(a, "ipv4:")) a.remove_prefix(5);
  if (absl::StartsWith(a, "ipv6:")) a.remove_prefix(5);
  if (absl::StartsWith(a, "dns:")) a.remove_prefix(4);
  return absl::StartsWith(a, "localhost:") || absl::StartsWith(a, "127.") ||
         absl::StartsWith(a, "[::1]:");
}

namespace {
absl::Status NeedFiles(const TlsFiles& f, absl::string_view who) {
  if (f.ca_cert.empty() || f.cert.empty() || f.key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        who,
        " needs a CA certificate, a certificate and a key for mTLS (tls ca/cert/key "
        "flags); plaintext only when explicitly asked for (insecure plaintext flag), on a "
        "loopback address or unix socket"));
  }
  return absl::OkStatus();
}

// The three PEM files of one side of an mTLS connection.
struct Pems {
  std::string ca, cert, key;
};
absl::StatusOr<Pems> ReadPems(const TlsFiles& f) {
  Pems p;
  for (auto [path, out] : {std::pair{&f.ca_cert, &p.ca}, {&f.cert, &p.cert}, {&f.key, &p.key}}) {
    auto content = ReadFile(*path);
    if (!content.ok()) return content.status();
    *out = *std::move(content);
  }
  return p;
}
}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& f, absl::string_view listen_address) {
  if (f.insecure_plaintext) {
    if (!IsLocalAddress(listen_address)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing plaintext on ", listen_address,
          ": --insecure_plaintext is only allowed on loopback addresses or unix sockets"));
    }
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
    if (!IsLocalAddress(target)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "refusing plaintext to ", target,
          ": --insecure_plaintext is only allowed to loopback addresses or unix sockets"));
    }
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

controller::Identity PeerIdentity(const grpc::ServerContext& ctx) {
  controller::Identity id;
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
