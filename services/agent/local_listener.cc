#include "services/agent/local_listener.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/log.h"

namespace xolfleet {
namespace {

// How long a connection over the per-uid limit is served (its calls fail with
// RESOURCE_EXHAUSTED) before the agent closes it.
constexpr absl::Duration kOverLimitGrace = absl::Seconds(1);

absl::Status Errno(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", strerror(errno)));
}

std::vector<gid_t> PeerGroups(int fd) {
  std::vector<gid_t> groups(64);
  socklen_t len = groups.size() * sizeof(gid_t);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
    if (errno != ERANGE) return {};
    groups.resize(len / sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) return {};
  }
  groups.resize(len / sizeof(gid_t));
  return groups;
}

}  // namespace

absl::StatusOr<mode_t> ParseSocketMode(const std::string& text) {
  absl::string_view t = text;
  absl::ConsumePrefix(&t, "0o");
  unsigned mode = 0;
  bool ok = !t.empty() && t.size() <= 4;
  for (char c : t) {
    if (c < '0' || c > '7') ok = false;
    mode = mode * 8 + (c - '0');
  }
  if (!ok || mode > 0777) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket mode \"", text, "\" is not an octal permission mode such as 0600 or 0660"));
  }
  return static_cast<mode_t>(mode);
}

absl::StatusOr<gid_t> ParseGroup(const std::string& text) {
  uint32_t gid = 0;
  if (absl::SimpleAtoi(text, &gid)) return static_cast<gid_t>(gid);
  struct group* gr = getgrnam(text.c_str());
  if (gr == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no group named \"", text, "\" on this host"));
  }
  return gr->gr_gid;
}

namespace {

PerKeyLimiter::Options PerUidLimits(const LocalListener::Options& options) {
  PerKeyLimiter::Options o;
  o.per_key = options.max_connections_per_uid;
  o.what = "connections";
  o.holder = "uid";
  o.per_key_flag = "--max-connections-per-uid";
  o.advice =
      "this connection will be closed; close another connection of this uid first (an idle "
      "client), or ask the operator to raise the flag";
  return o;
}

}  // namespace

LocalListener::LocalListener(const Options& options)
    : options_(options), per_uid_(PerUidLimits(options)) {}

absl::StatusOr<std::unique_ptr<LocalListener>> LocalListener::Create(const Options& options) {
  std::unique_ptr<LocalListener> l(new LocalListener(options));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (options.path.empty() || options.path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("unix socket path \"", options.path,
                                                   "\" must be 1..", sizeof(addr.sun_path) - 1,
                                                   " bytes"));
  }
  if (absl::Status st = ClaimUnixSocketPath(options.path); !st.ok()) return st;
  memcpy(addr.sun_path, options.path.c_str(), options.path.size() + 1);
  l->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (l->listen_fd_ < 0) return Errno("socket(AF_UNIX)");
  // Created owner-only whatever the umask; the configured mode is applied before listen(),
  // so nobody can connect while the file has any other mode.
  const mode_t old_umask = umask(0177);
  const int rc = bind(l->listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  umask(old_umask);
  if (rc != 0) {
    errno = bind_errno;
    return Errno(absl::StrCat("bind(", options.path, ")"));
  }
  if (absl::Status st = l->owned_.Adopt(options.path); !st.ok()) return st;
  if (options.group != static_cast<gid_t>(-1) &&
      lchown(options.path.c_str(), static_cast<uid_t>(-1), options.group) != 0) {
    return Errno(absl::StrCat("chown(", options.path, ", group ", options.group, ")"));
  }
  if (fchmodat(AT_FDCWD, options.path.c_str(), options.mode, 0) != 0) {
    return Errno(absl::StrCat("chmod(", options.path, ")"));
  }
  if (listen(l->listen_fd_, 128) != 0) return Errno("listen");
  l->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (l->wake_fd_ < 0) return Errno("eventfd");
  return l;
}

LocalListener::~LocalListener() {
  Stop();
  {
    absl::MutexLock lock(&mu_);
    for (auto& [fd, c] : conns_) {
      if (c.dup_fd >= 0) close(c.dup_fd);
    }
    conns_.clear();
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  owned_.Release();
}

void LocalListener::Start(grpc::Server* server) {
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void LocalListener::Stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  thread_.join();
}

void LocalListener::AcceptLoop(grpc::Server* server) {
  while (!stopping_) {
    struct pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int n = poll(fds, 2, 250);
    {
      absl::MutexLock lock(&mu_);
      SweepLocked();
    }
    if (n <= 0 || !(fds[0].revents & POLLIN)) continue;
    while (!stopping_) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          Log("unix socket: cannot accept: ", strerror(errno));
          absl::SleepFor(absl::Milliseconds(100));
        }
        break;
      }
      Admit(fd, server);
    }
  }
}

void LocalListener::Admit(int fd, grpc::Server* server) {
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  struct stat st;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || fstat(fd, &st) != 0) {
    close(fd);
    return;
  }
  Conn c;
  c.dev = st.st_dev;
  c.ino = st.st_ino;
  c.who.local_peer = true;
  c.who.uid = cred.uid;
  c.who.gid = cred.gid;
  c.who.pid = cred.pid;
  c.who.groups = PeerGroups(fd);
  c.accepted = absl::Now();
  absl::MutexLock lock(&mu_);
  SweepLocked();
  if (conns_.size() >= options_.max_connections) {
    if (absl::Now() - last_full_log_ > absl::Seconds(10)) {
      Log("unix socket: ", conns_.size(),
          " connections open, the most allowed (--max-connections): closing new ones (latest from "
          "uid ",
          cred.uid, ")");
      last_full_log_ = absl::Now();
    }
    close(fd);
    return;
  }
  absl::StatusOr<PerKeyLimiter::Lease> lease = per_uid_.Acquire(absl::StrCat("uid ", cred.uid));
  if (lease.ok()) {
    c.lease = std::move(*lease);
  } else {
    c.over_limit = lease.status();
    c.dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  }
  conns_[fd] = std::move(c);
  // gRPC owns fd from here on and closes it when the connection ends.
  grpc::AddInsecureChannelFromFd(server, fd);
}

void LocalListener::SweepLocked() {
  const absl::Time now = absl::Now();
  for (auto it = conns_.begin(); it != conns_.end();) {
    Conn& c = it->second;
    struct stat st;
    const bool alive = fstat(it->first, &st) == 0 && st.st_dev == c.dev && st.st_ino == c.ino;
    if (alive && !c.over_limit.ok() && now - c.accepted > kOverLimitGrace && c.dup_fd >= 0) {
      shutdown(c.dup_fd, SHUT_RDWR);  // gRPC sees the end and closes its descriptor
    }
    if (!alive) {
      if (c.dup_fd >= 0) close(c.dup_fd);
      conns_.erase(it++);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<Identity> LocalListener::Peer(const std::string& peer) const {
  absl::string_view p = peer;
  int fd = -1;
  if (!absl::ConsumePrefix(&p, "fd:") || !absl::SimpleAtoi(p, &fd)) {
    return absl::NotFoundError("not a unix socket connection");
  }
  absl::MutexLock lock(&mu_);
  auto it = conns_.find(fd);
  struct stat st;
  if (it == conns_.end() || fstat(fd, &st) != 0 || st.st_dev != it->second.dev ||
      st.st_ino != it->second.ino) {
    return absl::UnauthenticatedError("the caller's connection is no longer known");
  }
  if (!it->second.over_limit.ok()) return it->second.over_limit;
  return it->second.who;
}

}  // namespace xolfleet
