#include "services/common/open_file.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace xolfleet {
namespace {

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      const unsigned char cc = s[i + k];
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates, and code points past U+10FFFF.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace

std::string Truncated(absl::string_view s, size_t max) {
  std::string out;
  const size_t n = std::min(s.size(), max);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = s[i];
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  if (s.size() > max) absl::StrAppend(&out, "...(", s.size(), " bytes)");
  return out;
}

absl::Status ValidateBinaryPath(absl::string_view path) {
  if (path.empty()) {
    return absl::InvalidArgumentError("binary_path is empty: name the ELF file to probe");
  }
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("binary_path '", Truncated(path),
                                                   "' contains a NUL byte at ", path.find('\0')));
  }
  if (path.size() >= PATH_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("binary_path '", Truncated(path),
                                                   "' is longer than the limit of ", PATH_MAX - 1,
                                                   " bytes (PATH_MAX)"));
  }
  if (!IsValidUtf8(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("binary_path '", Truncated(path), "' is not valid UTF-8"));
  }
  if (path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("binary_path '", Truncated(path), "' must be absolute"));
  }
  return absl::OkStatus();
}

namespace {
thread_local const ScopedOpenAs* open_as = nullptr;

// open(), or openat2() under `root`.
int OpenPath(const FileRoot* root, const std::string& path, int flags) {
  if (root == nullptr) return open(path.c_str(), flags);
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, root->fd(), path.c_str(), &how, sizeof(how)));
}

// OpenPath() with this thread's file-system credentials switched to the caller's, then back.
// -1 with errno set; EPERM when the credentials cannot be switched (fail closed).
int OpenAsCaller(const ScopedOpenAs& who, const FileRoot* root, const std::string& path,
                 int flags) {
  std::vector<gid_t> saved(NGROUPS_MAX);
  const int nsaved = getgroups(saved.size(), saved.data());
  if (nsaved < 0) return -1;
  if (syscall(SYS_setgroups, who.groups().size(), who.groups().data()) != 0) {
    errno = EPERM;
    return -1;
  }
  const int old_gid = syscall(SYS_setfsgid, who.gid());
  const int old_uid = syscall(SYS_setfsuid, who.uid());
  // setfsuid reports success only by the next call returning the value set.
  const bool switched = static_cast<uid_t>(syscall(SYS_setfsuid, who.uid())) == who.uid() &&
                        static_cast<gid_t>(syscall(SYS_setfsgid, who.gid())) == who.gid();
  int fd = -1, err = EPERM;
  if (switched) {
    fd = OpenPath(root, path, flags);
    err = errno;
  }
  syscall(SYS_setfsuid, old_uid);
  syscall(SYS_setfsgid, old_gid);
  syscall(SYS_setgroups, nsaved, saved.data());
  errno = err;
  return fd;
}
}  // namespace

ScopedOpenAs::ScopedOpenAs(uid_t uid, gid_t gid, std::vector<gid_t> groups)
    : uid_(uid), gid_(gid), groups_(std::move(groups)), previous_(open_as) {
  open_as = this;
}

ScopedOpenAs::~ScopedOpenAs() { open_as = previous_; }

absl::StatusOr<std::shared_ptr<const FileRoot>> FileRoot::Open(const std::string& dir,
                                                               std::string name) {
  const int fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    const std::string msg =
        absl::StrCat(name, ": cannot open ", Truncated(dir, 512), ": ", strerror(e));
    if (e == ENOENT || e == ENOTDIR || e == ESRCH) return absl::NotFoundError(msg);
    if (e == EACCES || e == EPERM) return absl::PermissionDeniedError(msg);
    return absl::InvalidArgumentError(msg);
  }
  return Adopt(fd, std::move(name));
}

std::shared_ptr<const FileRoot> FileRoot::Adopt(int fd, std::string name) {
  return std::shared_ptr<const FileRoot>(new FileRoot(fd, std::move(name)));
}

FileRoot::~FileRoot() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<std::shared_ptr<const OpenFile>> OpenFile::Open(const std::string& path) {
  return OpenImpl(nullptr, path);
}

absl::StatusOr<std::shared_ptr<const OpenFile>> OpenFile::OpenIn(const FileRoot& root,
                                                                 const std::string& path) {
  return OpenImpl(&root, path);
}

absl::StatusOr<std::shared_ptr<const OpenFile>> OpenFile::OpenImpl(const FileRoot* root,
                                                                   const std::string& path) {
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("path '", Truncated(path), "' contains a NUL byte"));
  }
  const int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK;
  const int fd =
      open_as != nullptr ? OpenAsCaller(*open_as, root, path, flags) : OpenPath(root, path, flags);
  if (fd < 0) {
    const int e = errno;
    const std::string where = root != nullptr ? absl::StrCat(" under ", root->name()) : "";
    if (root != nullptr && (e == ELOOP || e == EXDEV)) {
      return absl::PermissionDeniedError(
          absl::StrCat(Truncated(path, 512), where,
                       ": refused: the path goes through a /proc magic link (or too many symbolic "
                       "links), which could lead outside ",
                       root->name(), "; name the process with pid or container_id instead"));
    }
    if (open_as != nullptr && (e == EACCES || e == EPERM)) {
      // Say nothing about what lies behind a directory the caller cannot search.
      return absl::PermissionDeniedError(
          absl::StrCat(Truncated(path, 512), ": uid ", open_as->uid(), " cannot read it"));
    }
    const std::string msg = absl::StrCat(Truncated(path, 512), where, ": ", strerror(e));
    if (e == ENOENT || e == ENOTDIR) return absl::NotFoundError(absl::StrCat("no such file ", msg));
    if (e == EACCES || e == EPERM) return absl::PermissionDeniedError(msg);
    return absl::InvalidArgumentError(msg);
  }
  std::shared_ptr<OpenFile> f(new OpenFile());
  f->fd_ = fd;
  f->path_ = path;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(Truncated(path, 512), ": not a regular file"));
  }
  f->dev_ = st.st_dev;
  f->ino_ = st.st_ino;
  f->size_ = static_cast<uint64_t>(st.st_size);
  return std::shared_ptr<const OpenFile>(std::move(f));
}

OpenFile::~OpenFile() {
  if (fd_ >= 0) close(fd_);
}

std::string OpenFile::proc_path() const { return absl::StrCat("/proc/self/fd/", fd_); }

absl::StatusOr<std::string> OpenFile::ReadAll() const {
  const std::string name = Truncated(path_, 512);
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    return absl::InternalError(absl::StrCat(name, ": fstat: ", strerror(errno)));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > kMaxReadAllBytes) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: %d bytes, more than the %d bytes the agent reads from one file", name,
                        size, kMaxReadAllBytes));
  }
  if (size == 0) return std::string();  // (procfs files report 0 too)
  std::string data(size, '\0');
  uint64_t got = 0;
  while (got < size) {
    const ssize_t n = pread(fd_, data.data() + got, size - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(
          absl::StrFormat("%s: read at offset %d: %s", name, got, strerror(errno)));
    }
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
  }
  // One extra byte tells a file that grew from one that did not.
  char extra;
  const ssize_t more = got == size ? pread(fd_, &extra, 1, static_cast<off_t>(size)) : 0;
  if (got != size || more > 0) {
    return absl::AbortedError(absl::StrFormat(
        "%s changed size while it was read (%d bytes at the start, %s): truncated or rewritten "
        "concurrently; try again",
        name, size, got != size ? absl::StrCat("only ", got, " readable") : "more now"));
  }
  return data;
}

}  // namespace xolfleet
