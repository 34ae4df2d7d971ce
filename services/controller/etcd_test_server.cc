#include "services/controller/etcd_test_server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/controller/etcd_store.h"

namespace xolfleet::controller {
namespace {

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdTestServer>> EtcdTestServer::Create(const std::string& dir,
                                                                       const Tls* tls) {
  std::unique_ptr<EtcdTestServer> s(new EtcdTestServer());
  s->dir_ = dir;
  if (tls) s->tls_ = std::make_unique<Tls>(*tls);
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", strerror(errno)));
  }
  s->client_port_ = FreePort();
  s->peer_port_ = FreePort();
  if (!s->client_port_ || !s->peer_port_) return absl::InternalError("no free loopback port");
  if (absl::Status st = s->Start(); !st.ok()) return st;
  return s;
}

EtcdTestServer::~EtcdTestServer() { Stop(); }

std::string EtcdTestServer::endpoint() const { return absl::StrCat("127.0.0.1:", client_port_); }

std::string EtcdTestServer::Url(const std::string& prefix) const {
  return absl::StrCat("etcd://", endpoint(), prefix);
}

void EtcdTestServer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

absl::Status EtcdTestServer::Restart(const Tls& tls) {
  Stop();
  tls_ = std::make_unique<Tls>(tls);
  return Start();
}

absl::Status EtcdTestServer::Start() {
  const std::string client = absl::StrCat(tls_ ? "https" : "http", "://127.0.0.1:", client_port_);
  const std::string peer = absl::StrCat("http://127.0.0.1:", peer_port_);
  std::vector<std::string> args = {"/usr/bin/etcd",
                                   "--name=t",
                                   "--data-dir=" + dir_ + "/etcd-data",
                                   "--listen-client-urls=" + client,
                                   "--advertise-client-urls=" + client,
                                   "--listen-peer-urls=" + peer,
                                   "--initial-advertise-peer-urls=" + peer,
                                   "--initial-cluster=t=" + peer,
                                   "--log-outputs=" + dir_ + "/etcd.log",
                                   "--logger=zap"};
  EtcdClient::Options probe_opts{{endpoint()}, absl::Seconds(1)};
  if (tls_) {
    args.push_back("--cert-file=" + tls_->cert);
    args.push_back("--key-file=" + tls_->key);
    args.push_back("--trusted-ca-file=" + tls_->ca);
    args.push_back("--client-cert-auth");
    if (absl::Status st = EtcdClient::Credentials(tls_->client, &probe_opts); !st.ok()) return st;
  }
  pid_ = fork();
  if (pid_ < 0) return absl::InternalError("fork");
  if (pid_ == 0) {
    // A test that crashes must not leave etcd running.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 1);
    dup2(null, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  EtcdClient client_probe(probe_opts);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  absl::Status last;
  while (absl::Now() < deadline) {
    int wst;
    if (waitpid(pid_, &wst, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(
          absl::StrCat("etcd exited (status ", wst, "); see ", dir_, "/etcd.log"));
    }
    auto r = client_probe.GetPrefix("/probe/");
    if (r.ok()) return absl::OkStatus();
    last = r.status();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("etcd did not serve within 60 s: ", last.message()));
}

}  // namespace xolfleet::controller
