#include "services/agent/socket_path.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace xolfleet {
namespace {

const char* Kind(mode_t m) {
  if (S_ISREG(m)) return "a regular file";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
  return "not a socket";
}

}  // namespace

absl::Status ClaimUnixSocketPath(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("unix socket path ", path, ": ", strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("unix socket path ", path, " is ",
                                                      Kind(st.st_mode),
                                                      ", not a socket: refusing to replace it"));
  }
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("unix socket path ", path, " is longer than ",
                                                   sizeof(addr.sun_path) - 1, " bytes"));
  }
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("socket(AF_UNIX): ", strerror(errno)));
  }
  const int rc = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  close(fd);
  if (rc == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("unix socket ", path, " is in use: another server (an agent?) accepts on it"));
  }
  if (err != ECONNREFUSED) {
    return absl::FailedPreconditionError(
        absl::StrCat("unix socket ", path, " exists and connecting to it fails with ",
                     strerror(err), " rather than 'connection refused': not removing it"));
  }
  // Stale: the server that bound it is gone.
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat("removing the stale unix socket ", path, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status OwnedSocketPath::Adopt(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("unix socket ", path, " is not there after binding it"));
  }
  path_ = path;
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  owned_ = true;
  return absl::OkStatus();
}

bool OwnedSocketPath::Release() {
  if (!owned_) return false;
  owned_ = false;
  struct stat st;
  if (lstat(path_.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_dev != dev_ ||
      st.st_ino != ino_) {
    return false;  // replaced by someone else: theirs now
  }
  return unlink(path_.c_str()) == 0;
}

}  // namespace xolfleet
