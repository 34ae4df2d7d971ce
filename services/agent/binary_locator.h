// Where a probe spec's binary is on this node, opened once (services/common/open_file.h).
//
// The agent may run in a container (the DaemonSet) whose own files are not the
// node's: a spec's binary_path is a host path, resolved under --host-root (the
// host's "/" mounted read-only at /host) through a held directory descriptor
// with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so no path, symlink or
// ".." reaches a file outside it.
//
// A spec may instead name a process (pid) or a container (container_id): the binary is then a path
// in that process's filesystem, opened through /proc/PID/root (the same RESOLVE_IN_ROOT rules, with
// that root), and the process (for a container: one of its processes) must map the opened file,
// compared by device and inode in /proc/PID/maps. A container id is resolved to its processes
// through /proc/*/cgroup (with hostPID, every process of the node): runtimes name each container's
// cgroup after its 64-hex-digit id ("libpod-ID.scope", "cri-containerd-ID.scope", ".../ID").
//
// The process is held by a pidfd from the first look on, so a pid reused by another process is
// never mistaken for it: if it exits at any point before the probes are attached, the request fails
// with NOT_FOUND and nothing is attached.
//
// Reading another process's /proc/PID/root needs ptrace read access to it: the same uid and, for a
// process with capabilities the agent lacks (root daemons), CAP_SYS_PTRACE.
#ifndef XOLFLEET_SERVICES_AGENT_BINARY_LOCATOR_H_
#define XOLFLEET_SERVICES_AGENT_BINARY_LOCATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/open_file.h"
#include "xolfleet/v1/common.pb.h"

namespace xolfleet {

// A process held by a pidfd (pidfd_open, Linux 5.3).
class HeldProcess {
 public:
  // NOT_FOUND: no such process, or it has exited (a zombie).
  static absl::StatusOr<std::shared_ptr<const HeldProcess>> Open(int pid);
  ~HeldProcess();
  HeldProcess(const HeldProcess&) = delete;
  HeldProcess& operator=(const HeldProcess&) = delete;

  int pid() const { return pid_; }
  // True once the process has exited (zombie or reaped): its pid may now be another's.
  bool Exited(int wait_ms = 0) const;  // waits up to wait_ms for it
  // NOT_FOUND "process N exited during the request" once Exited().
  absl::Status CheckRunning() const;

 private:
  HeldProcess(int pid, int fd) : pid_(pid), fd_(fd) {}
  int pid_;
  int fd_;
};

// A spec's binary, opened.
struct LocatedBinary {
  std::shared_ptr<const OpenFile> file;
  // The process through whose root the file was opened (null: the host root).
  // For a container, the first of its processes (lowest pid).
  std::shared_ptr<const HeldProcess> process;
  std::string container_id;  // the full id, when the spec named a container
};

class BinaryLocator {
 public:
  struct Options {
    std::string host_root = "/";  // where host paths are resolved (--host-root)
    std::string proc = "/proc";   // the procfs of the node's pid namespace (hostPID)
  };
  // INVALID_ARGUMENT/NOT_FOUND when host_root cannot be opened as a directory.
  static absl::StatusOr<std::unique_ptr<BinaryLocator>> Create(const Options& options);

  // Per-request memo: every spec naming the same (root, path) gets the same
  // open file, so it is checked and attached through one descriptor.
  class Cache {
   private:
    friend class BinaryLocator;
    absl::flat_hash_map<std::string, absl::StatusOr<LocatedBinary>> located;
    // A process is held and its root opened once per request, so every spec naming it sees the same
    // process (or the same "exited during the request").
    struct Process {
      std::shared_ptr<const HeldProcess> process;
      std::shared_ptr<const FileRoot> root;
    };
    absl::flat_hash_map<int, absl::StatusOr<Process>> processes;
  };

  // Opens spec.binary_path: under the host root; through /proc/PID/root of spec.pid; or through
  // that of a process of spec.container_id. Errors: those of OpenFile (NOT_FOUND, PERMISSION_DENIED
  // for a path through a magic link); NOT_FOUND for a process that does not exist or exited, or a
  // container id no process is in; INVALID_ARGUMENT for a container id prefix that names several
  // containers; FAILED_PRECONDITION when the process (no process of the container) maps the file;
  // PERMISSION_DENIED when the agent may not look into the process (no CAP_SYS_PTRACE).
  absl::StatusOr<LocatedBinary> Open(const v1::ProbeSpec& spec, Cache* cache) const;

  // Pids of the processes in the container whose id is or starts with `id`, ascending.
  absl::StatusOr<std::vector<int>> ContainerPids(absl::string_view id, std::string* full_id) const;

  const FileRoot& host_root() const { return *host_root_; }

 private:
  BinaryLocator(Options options, std::shared_ptr<const FileRoot> root)
      : options_(std::move(options)), host_root_(std::move(root)) {}
  absl::StatusOr<LocatedBinary> OpenInProcess(int pid, const std::string& path,
                                              const std::vector<int>& must_map_one_of,
                                              Cache* cache) const;
  // OK if some process of `pids` maps `file`; FAILED_PRECONDITION if none does.
  absl::Status CheckMapped(const std::vector<int>& pids, const std::string& path,
                           const OpenFile& file, bool* no_mappings) const;

  Options options_;
  std::shared_ptr<const FileRoot> host_root_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_BINARY_LOCATOR_H_
