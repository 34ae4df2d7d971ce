#include "services/common/cert_reloader.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace xolfleet::tls {
namespace {

// gRPC's provider re-reads the published files this often (seconds; memfds, so cheap):
// a new version is in force at most this long after it was published.
constexpr unsigned int kProviderRefreshSeconds = 1;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using UniqueX509 = std::unique_ptr<X509, X509Free>;

std::unique_ptr<BIO, BioFree> MemBio(absl::string_view pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in a PEM text, in order.
std::vector<UniqueX509> ReadCerts(absl::string_view pem) {
  std::vector<UniqueX509> out;
  auto bio = MemBio(pem);
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();
  return out;
}

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

}  // namespace

absl::Status CheckKeyMaterial(absl::string_view ca_pem, absl::string_view cert_pem,
                              absl::string_view key_pem, bool verify_chain) {
  std::vector<UniqueX509> cas = ReadCerts(ca_pem);
  if (cas.empty()) return Invalid("the CA file holds no PEM certificate");
  std::vector<UniqueX509> chain = ReadCerts(cert_pem);
  if (chain.empty()) return Invalid("the certificate file holds no PEM certificate");
  auto key_bio = MemBio(key_pem);
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) return Invalid("the key file holds no PEM private key (or it is encrypted)");
  if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
    ERR_clear_error();
    return Invalid("the private key does not match the certificate");
  }
  if (!verify_chain) return absl::OkStatus();
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  for (const UniqueX509& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<STACK_OF(X509), StackFree> intermediates(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) {
    X509_up_ref(chain[i].get());
    sk_X509_push(intermediates.get(), chain[i].get());
  }
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  if (!store || !ctx || !intermediates ||
      X509_STORE_CTX_init(ctx.get(), store.get(), chain[0].get(), intermediates.get()) != 1) {
    ERR_clear_error();
    return absl::ResourceExhaustedError("cannot set up certificate verification");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Invalid(absl::StrCat("the certificate does not verify against the CA file: ",
                                X509_verify_cert_error_string(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CertificateReloader>> CertificateReloader::Start(Options options) {
  const TlsFiles& f = options.files;
  if (f.insecure_plaintext) return absl::InvalidArgumentError("plaintext has no certificates");
  if (absl::Status st = NeedFiles(f, options.name); !st.ok()) return st;
  std::vector<std::string> paths = {f.ca_cert, f.cert, f.key};
  std::vector<std::string> initial;
  for (const std::string& p : paths) {
    absl::StatusOr<std::string> c = ReadConfigFile(p);
    if (!c.ok()) return c.status();
    initial.push_back(*std::move(c));
  }
  std::unique_ptr<CertificateReloader> r(new CertificateReloader());
  r->verify_chain_ = options.cert_must_chain_to_ca;
  if (absl::Status st = r->Load(initial[0], initial[1], initial[2]); !st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.cert, ", ", f.key, ", ", f.ca_cert, ": ", st.message()));
  }
  r->provider_ = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      absl::StrCat("/proc/self/fd/", r->identity_fd_),
      absl::StrCat("/proc/self/fd/", r->identity_fd_), absl::StrCat("/proc/self/fd/", r->ca_fd_),
      kProviderRefreshSeconds);
  ConfigPoller::Options po;
  po.name = options.name;
  po.paths = std::move(paths);
  po.interval = options.interval;
  po.observer = options.observer;
  CertificateReloader* self = r.get();
  r->poller_ = std::make_unique<ConfigPoller>(
      std::move(po), std::move(initial),
      [self](const std::vector<std::string>& c) { return self->Load(c[0], c[1], c[2]); });
  return r;
}

CertificateReloader::~CertificateReloader() {
  poller_.reset();  // no Load after this
  provider_.reset();
  if (ca_fd_ >= 0) close(ca_fd_);
  if (identity_fd_ >= 0) close(identity_fd_);
}

absl::Status CertificateReloader::Load(const std::string& ca, const std::string& cert,
                                       const std::string& key) {
  if (absl::Status st = CheckKeyMaterial(ca, cert, key, verify_chain_); !st.ok()) return st;
  // A modification time of its own per version (see the header); seconds, as gRPC reads it.
  const time_t mtime = std::max(time(nullptr), last_mtime_ + 1);
  // The key first: PEM readers skip blocks of other types, and the chain keeps its order.
  std::string identity = absl::StrCat(key, key.back() == '\n' ? "" : "\n", cert);
  if (absl::Status st = PublishFile(&identity_fd_, identity, mtime); !st.ok()) return st;
  if (absl::Status st = PublishFile(&ca_fd_, ca, mtime); !st.ok()) return st;
  last_mtime_ = mtime;
  return absl::OkStatus();
}

namespace {

// A file that only this process can name: a memfd, or on a kernel built without memfds
// (CONFIG_MEMFD_CREATE off, as in small embedded configurations) a 0600 file in $TMPDIR or
// /tmp unlinked at once: it lives as long as its descriptor, as a memfd would.
absl::StatusOr<int> AnonymousFile() {
  int fd = memfd_create("xolfleet-tls", MFD_CLOEXEC);
  if (fd >= 0) return fd;
  if (errno != ENOSYS) return absl::InternalError(absl::StrCat("memfd_create: ", strerror(errno)));
  const char* dir = getenv("TMPDIR");
  std::string path =
      absl::StrCat(dir != nullptr && *dir != '\0' ? dir : "/tmp", "/xolfleet-tls-XXXXXX");
  fd = mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("no memfds (", strerror(ENOSYS), ") and creating ",
                                            path, ": ", strerror(errno)));
  }
  unlink(path.c_str());
  return fd;
}

}  // namespace

absl::Status CertificateReloader::PublishFile(int* fd, absl::string_view content, time_t mtime) {
  absl::StatusOr<int> created = AnonymousFile();
  if (!created.ok()) return created.status();
  int nfd = *created;
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(nfd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      close(nfd);
      return absl::InternalError(absl::StrCat("writing a published copy: ", strerror(e)));
    }
    done += static_cast<size_t>(n);
  }
  fchmod(nfd, 0400);
  const struct timespec times[2] = {{mtime, 0}, {mtime, 0}};
  futimens(nfd, times);
  if (*fd < 0) {
    *fd = nfd;
    return absl::OkStatus();
  }
  // The path gRPC reads (/proc/self/fd/*fd) now names the new file, in one step.
  if (dup3(nfd, *fd, O_CLOEXEC) < 0) {
    int e = errno;
    close(nfd);
    return absl::InternalError(absl::StrCat("dup3: ", strerror(e)));
  }
  close(nfd);
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> CertificateReloader::ServerCredentials() const {
  grpc::experimental::TlsServerCredentialsOptions opts(provider_);
  opts.watch_root_certs();
  opts.watch_identity_key_cert_pairs();
  opts.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  return grpc::experimental::TlsServerCredentials(opts);
}

std::shared_ptr<grpc::ChannelCredentials> CertificateReloader::ChannelCredentials() const {
  grpc::experimental::TlsChannelCredentialsOptions opts;
  opts.set_certificate_provider(provider_);
  opts.watch_root_certs();
  opts.watch_identity_key_cert_pairs();
  opts.set_verify_server_certs(true);
  opts.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  return grpc::experimental::TlsCredentials(opts);
}

}  // namespace xolfleet::tls
