// Real processes for the agent's integration tests and benchmarks: the agent binary on a unix
// socket, the hit workload driven over a pipe, /metrics over HTTP, and the kernel objects the agent
// holds (links, config map entries) read from /proc and bpftool.
#ifndef XOLFLEET_TESTS_INTEGRATION_AGENT_HARNESS_H_
#define XOLFLEET_TESTS_INTEGRATION_AGENT_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "xolfleet/v1/agent.grpc.pb.h"

namespace xolfleet::testing {

// Path of a data dependency in the test's runfiles ("services/agent/xolfleet-agent"), resolved to
// the real file (uprobes and /proc/PID/maps see the real path).
std::string Runfile(const std::string& workspace_relative);

// A free TCP port on 127.0.0.1 (bound and released).
int FreePort();

class AgentProcess {
 public:
  // Starts xolfleet-agent with `flags` plus --unix-socket/--metrics-address
  // chosen here, and waits until it answers GetNodeInfo.
  static absl::StatusOr<std::unique_ptr<AgentProcess>> Start(const std::vector<std::string>& flags);
  // The same on the unix socket `socket` (empty: one chosen here).
  static absl::StatusOr<std::unique_ptr<AgentProcess>> Start(const std::vector<std::string>& flags,
                                                             const std::string& socket);
  // The same with the agent program `binary` (a path; empty: the runfile
  // services/agent/xolfleet-agent).
  static absl::StatusOr<std::unique_ptr<AgentProcess>> Start(const std::vector<std::string>& flags,
                                                             const std::string& socket,
                                                             const std::string& binary);
  ~AgentProcess();  // SIGTERM, wait

  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  std::string target() const { return "unix:" + socket_; }
  int metrics_port() const { return metrics_port_; }
  v1::AgentService::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  bool alive() const;
  // The agent's stderr so far.
  std::string log() const;
  // Stops with SIGTERM; returns the exit status.
  int Stop();
  // Resident memory of the agent now (VmRSS), in bytes; 0 if unknown.
  uint64_t RssBytes() const;

 private:
  AgentProcess() = default;
  mutable pid_t pid_ = -1;
  mutable int exit_status_ = -1;
  bool owns_socket_ = true;
  std::string socket_, log_path_;
  int metrics_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
};

// Runs xolfleet-agent with `flags` (plus a metrics address chosen here) and
// expects it to exit by itself: its exit status and log, or an error if it was
// still running after 20 s (then it is killed).
absl::StatusOr<std::pair<int, std::string>> RunAgentExpectingExit(
    const std::vector<std::string>& flags);

// tests/workloads/hit_workload driven over stdin/stdout.
class Workload {
 public:
  static absl::StatusOr<std::unique_ptr<Workload>> Start();
  ~Workload();
  pid_t pid() const { return pid_; }
  static std::string Path();
  // Calls xol_target_add(base + i, 7) and xol_target_other(i) for i < n.
  absl::Status Run(uint64_t n, uint64_t base);
  // Calls xol_target_spin as fast as it can; returns the number of calls.
  absl::StatusOr<uint64_t> Spin(double seconds);
  // The same with xol_target_fast, whose first instruction (push) is emulated.
  absl::StatusOr<uint64_t> Fast(double seconds);
  // Calls libc's strverscmp n times.
  absl::Status Libc(uint64_t n);
  // What the workload reads from its .rodata string xol_banner.
  absl::StatusOr<std::string> Banner();
  // From now on the workload exits as soon as anyone opens its program file.
  absl::Status ExitWhenOpened();

 private:
  absl::StatusOr<std::string> Command(const std::string& line);
  absl::StatusOr<uint64_t> Calls(const std::string& command);
  pid_t pid_ = -1;
  int to_ = -1;
  FILE* from_ = nullptr;
};

// GET http://127.0.0.1:port/path; the body.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// Prometheus text format -> {"name{labels}" or "name": value}. Labels keep the text form
// ("xolfleet_agent_probe_hits_total{probe_id=\"p1\"}").
std::map<std::string, double> ParseMetrics(const std::string& text);

// Kernel objects held by process `pid`: BPF link fds (fdinfo "link_type"), perf-event fds.
struct HeldObjects {
  int bpf_links = 0;
  int perf_events = 0;
};
HeldObjects CountHeldObjects(pid_t pid);

// The mappings of process `pid` (/proc/PID/maps).
struct Mapping {
  uint64_t start = 0, end = 0, offset = 0, inode = 0;
  std::string perms, dev, path;
};
std::vector<Mapping> Mappings(pid_t pid);

// The byte at file offset `file_offset` of the executable mapping of `path`
// in process `pid`'s memory (0xcc: a breakpoint is there); -1 if not mapped.
int ByteInProcess(pid_t pid, const std::string& path, uint64_t file_offset);

// Entries in the agent's xol_config map (found through the agent's fdinfo and
// dumped with bpftool by map id). -1 if the map cannot be found.
int ConfigMapEntries(pid_t agent_pid);

}  // namespace xolfleet::testing

#endif  // XOLFLEET_TESTS_INTEGRATION_AGENT_HARNESS_H_
