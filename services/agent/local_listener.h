// The agent's default endpoint: a unix socket whose callers the kernel identifies.
//
// gRPC's own unix listener tells a handler nothing about the caller, so the agent accepts
// connections itself: each accepted socket's SO_PEERCRED (uid, gid, pid at connect time) and
// SO_PEERGROUPS are recorded, then the socket is handed to the gRPC server
// (grpc::AddInsecureChannelFromFd). Calls on it report ServerContext::peer() == "fd:N"; Peer()
// maps that back to the recorded identity, checking that descriptor N is still the same
// socket (device and inode), so a reused descriptor number never inherits an identity.
//
// The socket file is created with the configured mode and group, never left to the umask (bound
// under umask 0177, then chmod/chown before listen()). Connections are limited in total and per uid
// (services/common/per_key_limiter.h, so a uid at its limit leaves the others served): over the
// per-uid limit a connection is served just long enough for its calls to fail with
// RESOURCE_EXHAUSTED naming the limit, then closed; over the total it is closed at once.
#ifndef XOLFLEET_SERVICES_AGENT_LOCAL_LISTENER_H_
#define XOLFLEET_SERVICES_AGENT_LOCAL_LISTENER_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "services/agent/socket_path.h"
#include "services/common/authz.h"
#include "services/common/per_key_limiter.h"

namespace xolfleet {

class LocalListener {
 public:
  struct Options {
    std::string path;
    mode_t mode = 0600;
    gid_t group = static_cast<gid_t>(-1);  // -1: the agent's own group
    uint32_t max_connections = 256;        // open at once, all callers
    uint32_t max_connections_per_uid = 16;
  };
  // Claims the path (only if free or a stale socket), binds with the mode and group, listens.
  static absl::StatusOr<std::unique_ptr<LocalListener>> Create(const Options& options);
  // Stops accepting and removes the socket file if it is still ours.
  ~LocalListener();

  // Starts the accept thread; connections go to `server`, which must outlive Stop().
  void Start(grpc::Server* server);
  // Stops the accept thread (before the server shuts down).
  void Stop();

  // The identity of the caller of a call whose ServerContext::peer() is `peer`.
  // NOT_FOUND when the call did not come through this listener; RESOURCE_EXHAUSTED when
  // its connection was over the per-uid limit.
  absl::StatusOr<Identity> Peer(const std::string& peer) const;

  const std::string& path() const { return options_.path; }

 private:
  struct Conn {
    dev_t dev = 0;
    ino_t ino = 0;
    Identity who;
    // Its place among its uid's connections, given back when the connection is forgotten;
    // over the limit: none, and the refusal its calls get.
    PerKeyLimiter::Lease lease;
    absl::Status over_limit;
    int dup_fd = -1;  // over-limit connections: our handle to close them
    absl::Time accepted;
  };
  explicit LocalListener(const Options& options);
  void AcceptLoop(grpc::Server* server);
  void Admit(int fd, grpc::Server* server);
  // Forgets connections gRPC has closed and closes over-limit ones after their grace.
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: Stop() wakes the accept thread
  OwnedSocketPath owned_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex mu_;
  PerKeyLimiter per_uid_;  // before conns_: their leases point to it
  absl::flat_hash_map<int, Conn> conns_ ABSL_GUARDED_BY(mu_);
  absl::Time last_full_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// "0600", "660", "0o660" -> mode; INVALID_ARGUMENT unless an octal permission mode.
absl::StatusOr<mode_t> ParseSocketMode(const std::string& text);
// A group name or number -> gid; INVALID_ARGUMENT naming it when unknown.
absl::StatusOr<gid_t> ParseGroup(const std::string& text);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_LOCAL_LISTENER_H_
