// Test support: a one-member etcd cluster on loopback (Debian's /usr/bin/etcd), in a
// temporary data directory, on free ports. Stop() kills it (SIGKILL), Start() brings the
// same member back on the same ports and data.
#ifndef XOLFLEET_SERVICES_CONTROLLER_ETCD_TEST_SERVER_H_
#define XOLFLEET_SERVICES_CONTROLLER_ETCD_TEST_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/tls.h"

namespace xolfleet::controller {

class EtcdTestServer {
 public:
  // Client TLS: the member serves https with `cert`/`key` and requires client
  // certificates signed by `ca` (--client-cert-auth); `client` is what the readiness
  // check presents.
  struct Tls {
    std::string ca, cert, key;
    tls::TlsFiles client;
  };
  // Starts etcd with its data under `dir` and waits (up to 60 s) until it serves.
  static absl::StatusOr<std::unique_ptr<EtcdTestServer>> Create(const std::string& dir,
                                                                const Tls* tls = nullptr);
  ~EtcdTestServer();

  // "etcd://127.0.0.1:PORT/<prefix>/".
  std::string Url(const std::string& prefix = "/xolfleet/") const;
  std::string endpoint() const;
  void Stop();
  absl::Status Start();
  // Stop(), then Start() with other TLS files (a CA bundle rotated on the member).
  absl::Status Restart(const Tls& tls);

 private:
  EtcdTestServer() = default;
  std::string dir_;
  std::unique_ptr<Tls> tls_;
  int client_port_ = 0, peer_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_ETCD_TEST_SERVER_H_
