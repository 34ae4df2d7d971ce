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

namespace xolfleet::controller {

class EtcdTestServer {
 public:
  // Starts etcd with its data under `dir` and waits (up to 60 s) until it serves.
  static absl::StatusOr<std::unique_ptr<EtcdTestServer>> Create(const std::string& dir);
  ~EtcdTestServer();

  // "etcd://127.0.0.1:PORT/<prefix>/".
  std::string Url(const std::string& prefix = "/xolfleet/") const;
  std::string endpoint() const;
  void Stop();
  absl::Status Start();

 private:
  EtcdTestServer() = default;
  std::string dir_;
  int client_port_ = 0, peer_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_ETCD_TEST_SERVER_H_
