// mTLS credentials that follow their PEM files: certificates and keys rotated on disk (a renewed
// certificate, a new CA) are used for new connections without a restart, on the server side (the
// controller, the agent's TCP API) and the client side (the agent's controller link).
//
// gRPC 1.51's FileWatcherCertificateProvider re-reads files, but installs whatever it reads:
// a key that does not match its certificate, or a certificate its peers cannot verify,
// would break every new handshake. So gRPC never reads the operator's files. A
// ConfigPoller (config_reload.h) reads them, CheckKeyMaterial validates them, and only a
// valid set is published to the files gRPC's provider watches; a broken set is logged,
// counted and refused while the previous one keeps serving.
//
// The published files are memfds (nothing secret written to disk, nothing left behind however the
// process ends; on a kernel without memfds, 0600 files in $TMPDIR unlinked as soon as they are
// created) that gRPC reads through /proc/self/fd/N. The key and the certificate chain are one PEM
// file, swapped atomically with dup3, so gRPC cannot read a key of one version with a certificate
// of another; each version gets a distinct modification time, which gRPC compares before and after
// reading to retry a read that straddled a swap.
#ifndef XOLFLEET_SERVICES_COMMON_CERT_RELOADER_H_
#define XOLFLEET_SERVICES_COMMON_CERT_RELOADER_H_

#include <ctime>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "services/common/config_reload.h"
#include "services/common/tls.h"

namespace xolfleet::tls {

// OK if the CA bundle, certificate chain and private key can serve mTLS together: each parses, the
// key is the certificate's, and the certificate chains to a CA in the bundle (one CA signs both
// sides, as in deploy/ and scripts/make-test-ca.sh) and is valid now. INVALID_ARGUMENT saying which
// check failed otherwise. With verify_chain false the chain is not checked (a client certificate
// another CA signed than the servers' CA in `ca_pem`: etcd's --trusted-ca-file may differ).
absl::Status CheckKeyMaterial(absl::string_view ca_pem, absl::string_view cert_pem,
                              absl::string_view key_pem, bool verify_chain = true);

class CertificateReloader final {
 public:
  struct Options {
    TlsFiles files;                               // ca_cert, cert, key (not plaintext)
    std::string name = "tls";                     // logs and metrics ("controller_tls", ...)
    absl::Duration interval = absl::Seconds(10);  // zero: no polling thread (PollNow only)
    ReloadObserver* observer = nullptr;
    // Require our certificate to chain to a CA in the CA file (true: one CA signs both
    // sides). False for a client whose servers trust another CA than the one that
    // signed the servers (the etcd client: etcd's --trusted-ca-file is its own).
    bool cert_must_chain_to_ca = true;
  };

  // Reads and checks the files (an error if they are unusable: nothing starts on them),
  // publishes them, and starts following them.
  static absl::StatusOr<std::unique_ptr<CertificateReloader>> Start(Options options);
  // Closes the published files: destroy it after the servers and channels using its credentials.
  ~CertificateReloader();
  CertificateReloader(const CertificateReloader&) = delete;
  CertificateReloader& operator=(const CertificateReloader&) = delete;

  // Require and verify a client certificate signed by the CA in force.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  // Verify the server (chain and host name) and present our certificate.
  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials() const;

  // Re-reads the files now (tests): OK if unchanged or applied.
  absl::Status PollNow() { return poller_->PollNow(); }

 private:
  CertificateReloader() = default;
  // Validates and publishes one version.
  absl::Status Load(const std::string& ca, const std::string& cert, const std::string& key);
  // Replaces what *fd holds (or creates it) with `content`, atomically.
  absl::Status PublishFile(int* fd, absl::string_view content, time_t mtime);

  bool verify_chain_ = true;
  int ca_fd_ = -1;        // the CA bundle, read by gRPC as /proc/self/fd/ca_fd_
  int identity_fd_ = -1;  // key + certificate chain, one file
  time_t last_mtime_ = 0;
  std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> provider_;
  std::unique_ptr<ConfigPoller> poller_;
};

}  // namespace xolfleet::tls

#endif  // XOLFLEET_SERVICES_COMMON_CERT_RELOADER_H_
