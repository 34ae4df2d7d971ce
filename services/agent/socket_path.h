// The unix socket path of the agent's API: claimed at start-up only when it is
// free or a stale socket, released at exit only if it is still ours.
//
// The path was unlinked unconditionally before: a second agent took a live agent's socket (and
// removed it when it exited), and --unix-socket pointing at a regular file deleted that file.
#ifndef XOLFLEET_SERVICES_AGENT_SOCKET_PATH_H_
#define XOLFLEET_SERVICES_AGENT_SOCKET_PATH_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"

namespace xolfleet {

// Makes `path` free for bind(): nothing there, or a socket nobody accepts on
// (connect() is refused), which is removed. FAILED_PRECONDITION when something
// else is there (naming what), ALREADY_EXISTS when a live server listens on it.
absl::Status ClaimUnixSocketPath(const std::string& path);

// The socket file a server bound at `path`, identified by device/inode right
// after the bind; Release() removes the path only if it is still that file.
class OwnedSocketPath {
 public:
  OwnedSocketPath() = default;
  // Records what is at `path` now (call after the server bound it).
  absl::Status Adopt(const std::string& path);
  // Removes the path if it still names the recorded socket; true if removed.
  bool Release();

 private:
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  bool owned_ = false;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_SOCKET_PATH_H_
