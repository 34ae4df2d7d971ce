// One file, held: the descriptor through which the agent reads, checks and probes a binary.
//
// A path names a file only at the moment it is resolved: a symlink or a rename between
// "validate" and "attach" would make the kernel probe a file nobody checked. So the file is
// opened once; its device/inode come from fstat() on that descriptor, its bytes are read with
// pread() on it, and the kernel is handed `/proc/self/fd/N` (resolved to this very inode).
//
// Reading never maps the file: a page fault past the end of a file truncated by someone else
// would raise SIGBUS and kill the agent. pread() instead returns short, and ReadAll() reports
// it as an error.
#ifndef XOLFLEET_SERVICES_COMMON_OPEN_FILE_H_
#define XOLFLEET_SERVICES_COMMON_OPEN_FILE_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace xolfleet {

// Largest file ReadAll() reads (and so the largest ELF the agent indexes): 1 GiB.
inline constexpr uint64_t kMaxReadAllBytes = uint64_t{1} << 30;

// A path the agent accepts from a request: non-empty, absolute, no NUL byte, at most
// PATH_MAX bytes, valid UTF-8. INVALID_ARGUMENT (the path echoed truncated) otherwise.
absl::Status ValidateBinaryPath(absl::string_view path);

// At most `max` bytes of `s` for an error message, with "...(N bytes)" when cut, and
// non-printable bytes escaped, so a hostile input cannot bloat or garble a message.
std::string Truncated(absl::string_view s, size_t max = 128);

// While one exists, OpenFile::Open() on this thread opens files as a local caller would:
// with the caller's uid, gid and groups as the thread's file-system credentials (Linux
// credentials are per thread; setfsuid/setfsgid/setgroups are issued as raw system calls so
// they change this thread only). Path resolution, directory search permissions, modes and
// ACLs are then the kernel's own checks for that caller: a file the caller cannot read, or
// one in a directory the caller cannot search, is PERMISSION_DENIED (whether or not it
// exists). The descriptor opened that way is the one the agent keeps reading and probing.
class ScopedOpenAs {
 public:
  ScopedOpenAs(uid_t uid, gid_t gid, std::vector<gid_t> groups);
  ~ScopedOpenAs();
  ScopedOpenAs(const ScopedOpenAs&) = delete;
  ScopedOpenAs& operator=(const ScopedOpenAs&) = delete;

  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  const std::vector<gid_t>& groups() const { return groups_; }

 private:
  uid_t uid_;
  gid_t gid_;
  std::vector<gid_t> groups_;
  const ScopedOpenAs* previous_;
};

// A directory held open under which request paths are resolved as if it were "/" (the
// agent's --host-root, or /proc/PID/root of a process): openat2(RESOLVE_IN_ROOT) keeps
// absolute symlinks and ".." inside it, as the kernel does for a process whose root it is,
// and RESOLVE_NO_MAGICLINKS refuses /proc magic links (/proc/PID/root, /proc/PID/fd/N),
// the one way a path could lead out of it. So no path of a request names a file outside.
class FileRoot {
 public:
  // Opens `dir` (O_PATH | O_DIRECTORY). `name` is how messages call it ("host root /host").
  static absl::StatusOr<std::shared_ptr<const FileRoot>> Open(const std::string& dir,
                                                              std::string name);
  // Takes ownership of `fd`, a directory descriptor.
  static std::shared_ptr<const FileRoot> Adopt(int fd, std::string name);
  ~FileRoot();
  FileRoot(const FileRoot&) = delete;
  FileRoot& operator=(const FileRoot&) = delete;

  int fd() const { return fd_; }
  const std::string& name() const { return name_; }

 private:
  FileRoot(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  int fd_;
  std::string name_;
};

class OpenFile {
 public:
  // Opens `path` read-only (O_CLOEXEC; O_NONBLOCK so a FIFO cannot hang the caller) and
  // requires a regular file. NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT. Within a
  // ScopedOpenAs, as that caller.
  static absl::StatusOr<std::shared_ptr<const OpenFile>> Open(const std::string& path);
  // The same, with `path` resolved under `root` (above). A path through a magic link is
  // PERMISSION_DENIED; messages name the root.
  static absl::StatusOr<std::shared_ptr<const OpenFile>> OpenIn(const FileRoot& root,
                                                                const std::string& path);
  ~OpenFile();
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }  // as requested (for messages)
  dev_t device() const { return dev_; }
  ino_t inode() const { return ino_; }
  uint64_t size_at_open() const { return size_; }
  // "/proc/self/fd/N": resolves to exactly this file for the process holding it (the
  // kernel follows the magic link to the open file's inode, whatever `path` names now).
  std::string proc_path() const;

  // The whole file, read with pread(). ABORTED if its size changes while it is read
  // (truncated or extended concurrently); RESOURCE_EXHAUSTED over kMaxReadAllBytes.
  absl::StatusOr<std::string> ReadAll() const;

 private:
  OpenFile() = default;
  static absl::StatusOr<std::shared_ptr<const OpenFile>> OpenImpl(const FileRoot* root,
                                                                  const std::string& path);
  int fd_ = -1;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  uint64_t size_ = 0;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_OPEN_FILE_H_
