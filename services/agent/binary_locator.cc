#include "services/agent/binary_locator.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/common/probe_spec.h"

namespace xolfleet {
namespace {

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// The 64-hex-digit runs of a cgroup path ("0::/machine.slice/libpod-<id>.scope").
std::vector<absl::string_view> ContainerIdsIn(absl::string_view line) {
  std::vector<absl::string_view> ids;
  size_t i = 0;
  while (i < line.size()) {
    if (!IsLowerHex(line[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < line.size() && IsLowerHex(line[j])) ++j;
    if (j - i == kMaxContainerIdHexDigits) ids.push_back(line.substr(i, j - i));
    i = j;
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const HeldProcess>> HeldProcess::Open(int pid) {
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    const int e = errno;
    if (e == ESRCH) return absl::NotFoundError(absl::StrCat("process ", pid, " does not exist"));
    return absl::InternalError(absl::StrCat("pidfd_open(", pid, "): ", strerror(e)));
  }
  std::shared_ptr<const HeldProcess> p(new HeldProcess(pid, fd));
  if (p->Exited()) {
    return absl::NotFoundError(
        absl::StrCat("process ", pid, " has exited (a zombie its parent has not reaped)"));
  }
  return p;
}

HeldProcess::~HeldProcess() { close(fd_); }

bool HeldProcess::Exited(int wait_ms) const {
  // A pidfd polls readable once its process has exited.
  struct pollfd p = {fd_, POLLIN, 0};
  return poll(&p, 1, wait_ms) > 0;
}

absl::Status HeldProcess::CheckRunning() const {
  if (!Exited()) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("process ", pid_, " exited during the request"));
}

absl::StatusOr<std::unique_ptr<BinaryLocator>> BinaryLocator::Create(const Options& options) {
  if (options.host_root.empty() || options.host_root[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--host-root '", Truncated(options.host_root), "' must be absolute"));
  }
  absl::StatusOr<std::shared_ptr<const FileRoot>> root =
      FileRoot::Open(options.host_root, options.host_root == "/"
                                            ? std::string("the host root")
                                            : absl::StrCat("the host root ", options.host_root));
  if (!root.ok()) return root.status();
  return std::unique_ptr<BinaryLocator>(new BinaryLocator(options, std::move(*root)));
}

absl::StatusOr<std::vector<int>> BinaryLocator::ContainerPids(absl::string_view id,
                                                              std::string* full_id) const {
  DIR* dir = opendir(options_.proc.c_str());
  if (dir == nullptr) {
    return absl::InternalError(absl::StrCat("cannot list ", options_.proc, ": ", strerror(errno)));
  }
  std::map<std::string, std::vector<int>> matches;  // full id -> pids
  while (struct dirent* e = readdir(dir)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid) || pid <= 0) continue;
    std::ifstream in(absl::StrCat(options_.proc, "/", pid, "/cgroup"));
    std::string line;
    std::set<std::string> ids;  // one process, several hierarchies (cgroup v1)
    while (std::getline(in, line)) {
      for (absl::string_view c : ContainerIdsIn(line)) {
        if (absl::StartsWith(c, id)) ids.insert(std::string(c));
      }
    }
    for (const std::string& c : ids) matches[c].push_back(pid);
  }
  closedir(dir);
  if (matches.empty()) {
    return absl::NotFoundError(absl::StrCat("no container ", id, " on this node (no process in ",
                                            options_.proc,
                                            "/*/cgroup is in a cgroup named after it)"));
  }
  if (matches.size() > 1) {
    std::vector<std::string> names;
    for (const auto& [c, pids] : matches) names.push_back(c.substr(0, 16));
    return absl::InvalidArgumentError(absl::StrCat(
        "container id ", id, " is ambiguous: it starts ", matches.size(), " containers' ids (",
        absl::StrJoin(names, "..., "), "...); give more digits"));
  }
  *full_id = matches.begin()->first;
  std::vector<int> pids = std::move(matches.begin()->second);
  std::sort(pids.begin(), pids.end());
  return pids;
}

absl::Status BinaryLocator::CheckMapped(const std::vector<int>& pids, const std::string& path,
                                        const OpenFile& file, bool* no_mappings) const {
  *no_mappings = true;
  for (int pid : pids) {
    const std::string maps_path = absl::StrCat(options_.proc, "/", pid, "/maps");
    // Opened first to tell "gone" from "not readable": /proc/1/maps of a process the agent may not
    // inspect fails with EACCES, and that process exists.
    const int fd = open(maps_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT || err == ESRCH) continue;  // exited: CheckRunning() says so
      return absl::PermissionDeniedError(
          absl::StrCat("process ", pid, " exists but the agent cannot read ", maps_path, " (",
                       strerror(err), "), so it cannot check that it maps ", Truncated(path)));
    }
    close(fd);
    std::ifstream maps(maps_path);
    std::string line;
    while (std::getline(maps, line)) {
      // address perms offset dev inode path
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() < 5) continue;
      *no_mappings = false;
      uint64_t ino = 0;
      if (!absl::SimpleAtoi(f[4], &ino) || ino != file.inode()) continue;
      std::vector<absl::string_view> dev = absl::StrSplit(f[3], ':');
      unsigned int maj = 0, min = 0;
      if (dev.size() == 2 && absl::SimpleHexAtoi(dev[0], &maj) &&
          absl::SimpleHexAtoi(dev[1], &min) && maj == major(file.device()) &&
          min == minor(file.device())) {
        return absl::OkStatus();
      }
    }
  }
  return absl::FailedPreconditionError(
      ": a probe on it would never fire there (check the pid or container, or the library path it "
      "loads)");
}

absl::StatusOr<LocatedBinary> BinaryLocator::OpenInProcess(int pid, const std::string& path,
                                                           const std::vector<int>& must_map_one_of,
                                                           Cache* cache) const {
  auto it = cache->processes.find(pid);
  if (it == cache->processes.end()) {
    absl::StatusOr<Cache::Process> held = [&]() -> absl::StatusOr<Cache::Process> {
      absl::StatusOr<std::shared_ptr<const HeldProcess>> process = HeldProcess::Open(pid);
      if (!process.ok()) return process.status();
      absl::StatusOr<std::shared_ptr<const FileRoot>> root =
          FileRoot::Open(absl::StrCat(options_.proc, "/", pid, "/root"),
                         absl::StrCat("the root of process ", pid));
      if (!root.ok()) {
        if (absl::Status st = (*process)->CheckRunning(); !st.ok()) return st;
        if (root.status().code() == absl::StatusCode::kPermissionDenied) {
          return absl::PermissionDeniedError(
              absl::StrCat(root.status().message(),
                           " (opening another process's root needs ptrace read access: the agent "
                           "needs CAP_SYS_PTRACE for processes with capabilities it lacks)"));
        }
        return root.status();
      }
      return Cache::Process{std::move(*process), std::move(*root)};
    }();
    it = cache->processes.emplace(pid, std::move(held)).first;
  }
  if (!it->second.ok()) return it->second.status();
  const std::shared_ptr<const HeldProcess> process = it->second->process;
  absl::StatusOr<std::shared_ptr<const OpenFile>> file = OpenFile::OpenIn(*it->second->root, path);
  if (!file.ok()) {
    if (absl::Status st = process->CheckRunning(); !st.ok()) return st;
    return file.status();
  }
  bool no_mappings = false;
  absl::Status mapped = CheckMapped(must_map_one_of, path, **file, &no_mappings);
  // A process that maps nothing at all is exiting (its memory is released before its pidfd
  // reports the exit): wait for that rather than answer "does not map".
  if (!mapped.ok() && no_mappings) process->Exited(/*wait_ms=*/1000);
  // Whatever was read, it was this process's only if it is still running.
  if (absl::Status st = process->CheckRunning(); !st.ok()) return st;
  if (!mapped.ok()) {
    if (mapped.code() != absl::StatusCode::kFailedPrecondition) return mapped;
    return absl::FailedPreconditionError(absl::StrCat(
        must_map_one_of.size() == 1
            ? absl::StrCat("process ", pid, " does not map ")
            : absl::StrCat("none of the container's ", must_map_one_of.size(), " processes maps "),
        Truncated(path), mapped.message()));
  }
  return LocatedBinary{std::move(*file), process, ""};
}

absl::StatusOr<LocatedBinary> BinaryLocator::Open(const v1::ProbeSpec& spec, Cache* cache) const {
  const std::string key =
      absl::StrCat(spec.pid(), "/", spec.container_id(), "/", spec.binary_path());
  if (auto it = cache->located.find(key); it != cache->located.end()) return it->second;
  absl::StatusOr<LocatedBinary> out;
  if (!spec.container_id().empty()) {
    std::string full_id;
    absl::StatusOr<std::vector<int>> pids = ContainerPids(spec.container_id(), &full_id);
    if (!pids.ok()) {
      out = pids.status();
    } else {
      // The first process of the container through which the file opens and is mapped by
      // one of them (the runtime's own processes may share the container's cgroup).
      std::optional<absl::Status> first_error;
      for (int pid : *pids) {
        out = OpenInProcess(pid, spec.binary_path(), *pids, cache);
        if (out.ok()) break;
        if (!first_error) first_error = out.status();
      }
      if (!out.ok()) out = *first_error;
      if (out.ok()) {
        out->container_id = full_id;
      } else {
        out = absl::Status(out.status().code(), absl::StrCat("container ", full_id.substr(0, 12),
                                                             ": ", out.status().message()));
      }
    }
  } else if (spec.pid() > 0) {
    out = OpenInProcess(spec.pid(), spec.binary_path(), {spec.pid()}, cache);
  } else {
    absl::StatusOr<std::shared_ptr<const OpenFile>> f =
        OpenFile::OpenIn(*host_root_, spec.binary_path());
    if (f.ok()) {
      out = LocatedBinary{std::move(*f), nullptr, ""};
    } else {
      out = f.status();
    }
  }
  cache->located.emplace(key, out);
  return out;
}

}  // namespace xolfleet
