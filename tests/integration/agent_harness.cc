#include "tests/integration/agent_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace xolfleet::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

pid_t Spawn(const std::vector<std::string>& argv, int stdin_fd, int stdout_fd, int stderr_fd) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  if (stdin_fd >= 0) dup2(stdin_fd, 0);
  if (stdout_fd >= 0) dup2(stdout_fd, 1);
  if (stderr_fd >= 0) dup2(stderr_fd, 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

}  // namespace

std::string Runfile(const std::string& rel) {
  std::vector<std::string> roots;
  if (const char* d = getenv("TEST_SRCDIR")) roots.push_back(absl::StrCat(d, "/xolfleet/"));
  if (const char* d = getenv("RUNFILES_DIR")) roots.push_back(absl::StrCat(d, "/xolfleet/"));
  roots.push_back("/work/main/bazel-bin/");
  for (const std::string& r : roots) {
    std::string p = r + rel;
    char real[PATH_MAX];
    if (access(p.c_str(), X_OK) == 0 && realpath(p.c_str(), real) != nullptr) return real;
  }
  return rel;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<AgentProcess>> AgentProcess::Start(
    const std::vector<std::string>& flags) {
  return Start(flags, "");
}

absl::StatusOr<std::unique_ptr<AgentProcess>> AgentProcess::Start(
    const std::vector<std::string>& flags, const std::string& socket) {
  return Start(flags, socket, "");
}

absl::StatusOr<std::unique_ptr<AgentProcess>> AgentProcess::Start(
    const std::vector<std::string>& flags, const std::string& socket, const std::string& binary) {
  std::unique_ptr<AgentProcess> p(new AgentProcess());
  static int counter = 0;
  p->socket_ = socket.empty() ? absl::StrCat("/tmp/xolfleet-it-", getpid(), "-", counter++, ".sock")
                              : socket;
  p->owns_socket_ = socket.empty();
  const char* tmp = getenv("TEST_TMPDIR");
  p->log_path_ = absl::StrCat(tmp ? tmp : "/tmp", "/agent-", getpid(), "-", counter, ".log");
  p->metrics_port_ = FreePort();
  std::vector<std::string> argv = {
      binary.empty() ? Runfile("services/agent/xolfleet-agent") : binary,
      "--unix-socket=" + p->socket_,
      "--listen=", absl::StrCat("--metrics-address=127.0.0.1:", p->metrics_port_)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  int log_fd = open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int null_fd = open("/dev/null", O_RDONLY);
  p->pid_ = Spawn(argv, null_fd, log_fd, log_fd);
  close(log_fd);
  close(null_fd);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  // Dial only once the socket exists: a channel that failed its first
  // connection waits out gRPC's reconnect backoff (a second and more).
  while (access(p->socket_.c_str(), F_OK) != 0 && absl::Now() < deadline && p->alive()) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  p->channel_ = grpc::CreateChannel(p->target(), grpc::InsecureChannelCredentials());
  p->stub_ = v1::AgentService::NewStub(p->channel_);
  while (absl::Now() < deadline) {
    if (!p->alive()) {
      return absl::InternalError(absl::StrCat("agent exited at start-up:\n", p->log()));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    v1::NodeInfo info;
    if (p->stub_->GetNodeInfo(&ctx, v1::GetNodeInfoRequest(), &info).ok()) return p;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("agent did not answer:\n", p->log()));
}

absl::StatusOr<std::pair<int, std::string>> RunAgentExpectingExit(
    const std::vector<std::string>& flags) {
  static int counter = 0;
  const char* tmp = getenv("TEST_TMPDIR");
  const std::string log_path =
      absl::StrCat(tmp ? tmp : "/tmp", "/agent-exit-", getpid(), "-", counter++, ".log");
  std::vector<std::string> argv = {Runfile("services/agent/xolfleet-agent"),
                                   absl::StrCat("--metrics-address=127.0.0.1:", FreePort())};
  argv.insert(argv.end(), flags.begin(), flags.end());
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int null_fd = open("/dev/null", O_RDONLY);
  pid_t pid = Spawn(argv, null_fd, log_fd, log_fd);
  close(log_fd);
  close(null_fd);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  int status = 0;
  while (absl::Now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                            ReadAll(log_path));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  kill(pid, SIGTERM);
  waitpid(pid, &status, 0);
  return absl::FailedPreconditionError(
      absl::StrCat("the agent kept running:\n", ReadAll(log_path)));
}

bool AgentProcess::alive() const {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {  // reaped here: remember how it ended
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid_ = -1;
  }
  return r == 0;
}

std::string AgentProcess::log() const { return ReadAll(log_path_); }

int AgentProcess::Stop() {
  if (pid_ <= 0) return exit_status_;
  kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 600; ++i) {  // perf-event links take ~80 ms each to detach
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

AgentProcess::~AgentProcess() {
  stub_.reset();
  channel_.reset();
  Stop();
  if (owns_socket_) unlink(socket_.c_str());
}

uint64_t AgentProcess::RssBytes() const {
  std::ifstream f(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    absl::string_view v = line;
    uint64_t kb = 0;
    if (absl::ConsumePrefix(&v, "VmRSS:") &&
        absl::SimpleAtoi(absl::StripSuffix(absl::StripAsciiWhitespace(v), " kB"), &kb)) {
      return kb << 10;
    }
  }
  return 0;
}

std::string Workload::Path() { return Runfile("tests/workloads/hit_workload"); }

absl::StatusOr<std::unique_ptr<Workload>> Workload::Start() {
  int in[2], out[2];
  if (pipe(in) != 0 || pipe(out) != 0) return absl::InternalError("pipe");
  std::unique_ptr<Workload> w(new Workload());
  w->pid_ = Spawn({Path()}, in[0], out[1], -1);
  close(in[0]);
  close(out[1]);
  w->to_ = in[1];
  w->from_ = fdopen(out[0], "r");
  char line[128] = {};
  if (fgets(line, sizeof(line), w->from_) == nullptr || !absl::StartsWith(line, "ready")) {
    return absl::InternalError(absl::StrCat("workload did not start: ", line));
  }
  return w;
}

Workload::~Workload() {
  if (to_ >= 0) {
    (void)!write(to_, "quit\n", 5);
    close(to_);
  }
  if (from_ != nullptr) fclose(from_);
  if (pid_ > 0) {
    int status;
    waitpid(pid_, &status, 0);
  }
}

absl::StatusOr<std::string> Workload::Command(const std::string& line) {
  std::string l = line + "\n";
  if (write(to_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) {
    return absl::InternalError("workload stdin closed");
  }
  char buf[128] = {};
  if (fgets(buf, sizeof(buf), from_) == nullptr) return absl::InternalError("workload died");
  return std::string(absl::StripAsciiWhitespace(buf));
}

absl::Status Workload::Run(uint64_t n, uint64_t base) {
  absl::StatusOr<std::string> r = Command(absl::StrCat("run ", n, " ", base));
  if (!r.ok()) return r.status();
  if (*r != absl::StrCat("done ", n)) return absl::InternalError("workload said: " + *r);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Workload::Spin(double seconds) {
  return Calls(absl::StrCat("spin ", seconds));
}

absl::StatusOr<uint64_t> Workload::Fast(double seconds) {
  return Calls(absl::StrCat("fast ", seconds));
}

absl::Status Workload::Libc(uint64_t n) {
  absl::StatusOr<uint64_t> r = Calls(absl::StrCat("libc ", n));
  if (!r.ok()) return r.status();
  if (*r != n) return absl::InternalError(absl::StrCat("workload did ", *r));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Workload::Banner() { return Command("banner"); }

absl::Status Workload::ExitWhenOpened() {
  absl::StatusOr<std::string> r = Command("exit-when-opened");
  if (!r.ok()) return r.status();
  if (*r != "armed") return absl::InternalError("workload said: " + *r);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Workload::Calls(const std::string& command) {
  absl::StatusOr<std::string> r = Command(command);
  if (!r.ok()) return r.status();
  uint64_t n = 0;
  absl::string_view v = *r;
  if (!absl::ConsumePrefix(&v, "done ") || !absl::SimpleAtoi(v, &n)) {
    return absl::InternalError("workload said: " + *r);
  }
  return n;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ", strerror(errno)));
  }
  std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  (void)!write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) resp.append(buf, n);
  close(fd);
  size_t body = resp.find("\r\n\r\n");
  if (!absl::StartsWith(resp, "HTTP/1.") || body == std::string::npos) {
    return absl::InternalError("bad HTTP response: " + resp.substr(0, 200));
  }
  if (resp.find(" 200 ") == std::string::npos || resp.find(" 200 ") > body) {
    return absl::InternalError("HTTP status: " + resp.substr(0, resp.find("\r\n")));
  }
  return resp.substr(body + 4);
}

std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == absl::string_view::npos) continue;
    double v = 0;
    if (!absl::SimpleAtod(line.substr(sp + 1), &v)) continue;
    out[std::string(line.substr(0, sp))] = v;
  }
  return out;
}

HeldObjects CountHeldObjects(pid_t pid) {
  HeldObjects h;
  std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return h;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256] = {};
    std::string fd_path = dir + "/" + e->d_name;
    if (readlink(fd_path.c_str(), target, sizeof(target) - 1) > 0 &&
        absl::StrContains(target, "perf_event")) {
      ++h.perf_events;
    }
    std::string info = ReadAll(absl::StrCat("/proc/", pid, "/fdinfo/", e->d_name));
    if (absl::StrContains(info, "link_type:")) ++h.bpf_links;
  }
  closedir(d);
  return h;
}

std::vector<Mapping> Mappings(pid_t pid) {
  std::vector<Mapping> out;
  std::ifstream f(absl::StrCat("/proc/", pid, "/maps"));
  for (std::string line; std::getline(f, line);) {
    Mapping m;
    char perms[8] = {}, dev[16] = {}, path[4096] = {};
    unsigned long long start, end, offset, inode;
    if (sscanf(line.c_str(), "%llx-%llx %7s %llx %15s %llu %4095s", &start, &end, perms, &offset,
               dev, &inode, path) < 6) {
      continue;
    }
    m.start = start;
    m.end = end;
    m.offset = offset;
    m.inode = inode;
    m.perms = perms;
    m.dev = dev;
    m.path = path;
    out.push_back(m);
  }
  return out;
}

int ByteInProcess(pid_t pid, const std::string& path, uint64_t file_offset) {
  for (const Mapping& m : Mappings(pid)) {
    if (m.path != path || m.perms.find('x') == std::string::npos) continue;
    if (file_offset < m.offset || file_offset >= m.offset + (m.end - m.start)) continue;
    int fd = open(absl::StrCat("/proc/", pid, "/mem").c_str(), O_RDONLY);
    unsigned char b = 0;
    const ssize_t n = pread(fd, &b, 1, m.start + (file_offset - m.offset));
    close(fd);
    return n == 1 ? b : -1;
  }
  return -1;
}

int ConfigMapEntries(pid_t agent_pid) {
  std::string dir = absl::StrCat("/proc/", agent_pid, "/fdinfo");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int map_id = -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string info = ReadAll(dir + "/" + e->d_name);
    // xol_config: a hash map (type 1) of u32 -> struct xol_probe_config (40 bytes).
    if (absl::StrContains(info, "map_type:\t1\n") && absl::StrContains(info, "key_size:\t4\n") &&
        absl::StrContains(info, "value_size:\t40\n")) {
      for (absl::string_view line : absl::StrSplit(info, '\n')) {
        if (absl::ConsumePrefix(&line, "map_id:\t")) (void)absl::SimpleAtoi(line, &map_id);
      }
    }
  }
  closedir(d);
  if (map_id < 0) return -1;
  std::string cmd =
      absl::StrCat("PATH=$PATH:/usr/sbin:/sbin bpftool -j map dump id ", map_id, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string outp;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) outp.append(buf, n);
  if (pclose(p) != 0 || outp.empty() || outp[0] != '[') return -1;
  // One {"key": ..., "value": ...} object per element; with BTF each also
  // carries a "formatted" copy of both.
  const std::string marker =
      outp.find("\"formatted\"") != std::string::npos ? "\"formatted\"" : "\"key\"";
  int count = 0;
  for (size_t at = outp.find(marker); at != std::string::npos; at = outp.find(marker, at + 1)) {
    ++count;
  }
  return count;
}

}  // namespace xolfleet::testing
