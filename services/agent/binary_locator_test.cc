#include "services/agent/binary_locator.h"

#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace xolfleet {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/binary_locator_test.XXXXXX";
  return mkdtemp(tmpl);
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

ino_t Inode(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

v1::ProbeSpec Spec(const std::string& path, int pid = 0, const std::string& container = "") {
  v1::ProbeSpec s;
  s.set_binary_path(path);
  s.set_pid(pid);
  s.set_container_id(container);
  return s;
}

std::string SelfExe() {
  char buf[PATH_MAX] = {};
  readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return buf;
}

TEST(BinaryLocator, HostPathsStayUnderTheHostRoot) {
  const std::string root = TempDir();
  mkdir((root + "/bin").c_str(), 0755);
  mkdir((root + "/lib").c_str(), 0755);
  Write(root + "/bin/prog", "x");
  // An absolute symlink and one climbing past the root both resolve inside it,
  // as they do for the host's own processes when `root` is the host's "/".
  symlink("/bin/prog", (root + "/lib/abs").c_str());
  symlink("../../../../../../../bin/prog", (root + "/lib/up").c_str());
  symlink("../../../../../../../etc/passwd", (root + "/lib/passwd").c_str());
  BinaryLocator::Options o;
  o.host_root = root;
  auto loc = BinaryLocator::Create(o);
  ASSERT_TRUE(loc.ok()) << loc.status();
  BinaryLocator::Cache cache;
  for (const char* p : {"/bin/prog", "/lib/abs", "/lib/up"}) {
    auto f = (*loc)->Open(Spec(p), &cache);
    ASSERT_TRUE(f.ok()) << p << ": " << f.status();
    EXPECT_EQ(f->file->inode(), Inode(root + "/bin/prog")) << p;
    EXPECT_EQ(f->process, nullptr);
  }
  // The agent's own /etc/passwd is outside the root: not found inside it.
  auto f = (*loc)->Open(Spec("/lib/passwd"), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_NE(f.status().message().find(root), std::string::npos) << f.status();
  f = (*loc)->Open(Spec("/etc/passwd"), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  // One open file per (root, path) per request.
  auto a = (*loc)->Open(Spec("/bin/prog"), &cache);
  auto b = (*loc)->Open(Spec("/bin/prog"), &cache);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->file.get(), b->file.get());
  o.host_root = root + "/bin/prog";
  EXPECT_FALSE(BinaryLocator::Create(o).ok());
  o.host_root = "relative";
  EXPECT_EQ(BinaryLocator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BinaryLocator, MagicLinksAreRefused) {
  auto loc = BinaryLocator::Create({});
  ASSERT_TRUE(loc.ok()) << loc.status();
  BinaryLocator::Cache cache;
  auto f = (*loc)->Open(Spec("/proc/self/root/etc/passwd"), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied) << f.status();
  EXPECT_NE(f.status().message().find("magic link"), std::string::npos) << f.status();
  f = (*loc)->Open(Spec(absl::StrCat("/proc/", getpid(), "/exe")), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kPermissionDenied) << f.status();
}

TEST(BinaryLocator, PidSpecsResolveThroughTheProcessRootAndMustMapTheFile) {
  auto loc = BinaryLocator::Create({});
  ASSERT_TRUE(loc.ok()) << loc.status();
  BinaryLocator::Cache cache;
  auto f = (*loc)->Open(Spec(SelfExe(), getpid()), &cache);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->file->inode(), Inode(SelfExe()));
  ASSERT_NE(f->process, nullptr);
  EXPECT_EQ(f->process->pid(), getpid());
  EXPECT_TRUE(f->process->CheckRunning().ok());

  const std::string dir = TempDir();
  Write(dir + "/unmapped", "x");
  f = (*loc)->Open(Spec(dir + "/unmapped", getpid()), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition) << f.status();
  EXPECT_NE(f.status().message().find("does not map"), std::string::npos) << f.status();
}

TEST(BinaryLocator, ExitedProcessesAreNotFound) {
  auto loc = BinaryLocator::Create({});
  ASSERT_TRUE(loc.ok()) << loc.status();
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  auto held = HeldProcess::Open(child);  // may already be a zombie
  // Wait until it is a zombie (not reaped): a pidfd polls readable.
  siginfo_t si = {};
  ASSERT_EQ(waitid(P_PID, child, &si, WEXITED | WNOWAIT), 0);
  BinaryLocator::Cache cache;
  auto f = (*loc)->Open(Spec(SelfExe(), child), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_NE(f.status().message().find("zombie"), std::string::npos) << f.status();
  if (held.ok()) {
    EXPECT_EQ((*held)->CheckRunning().code(), absl::StatusCode::kNotFound);
    EXPECT_NE((*held)->CheckRunning().message().find("exited during the request"),
              std::string::npos);
  }
  waitpid(child, nullptr, 0);
  BinaryLocator::Cache cache2;
  f = (*loc)->Open(Spec(SelfExe(), child), &cache2);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_NE(f.status().message().find("does not exist"), std::string::npos) << f.status();
}

TEST(BinaryLocator, ContainerIdsResolveThroughCgroups) {
  const std::string proc = TempDir();
  const std::string a(64, 'a'), ab = std::string(12, 'a') + std::string(52, 'b');
  auto process = [&](int pid, const std::string& cgroup) {
    mkdir(absl::StrCat(proc, "/", pid).c_str(), 0755);
    Write(absl::StrCat(proc, "/", pid, "/cgroup"), cgroup);
  };
  process(40, absl::StrCat("12:pids:/machine.slice/libpod-", a, ".scope\n0::/x\n"));
  process(7,
          absl::StrCat("3:memory:/kubepods/besteffort/pod1/", a, "\n1:name=systemd:/k/", a, "\n"));
  process(9, absl::StrCat("0::/system.slice/cri-containerd-", ab, ".scope\n"));
  process(11, "0::/user.slice\n");
  mkdir((proc + "/self").c_str(), 0755);
  BinaryLocator::Options o;
  o.proc = proc;
  auto loc = BinaryLocator::Create(o);
  ASSERT_TRUE(loc.ok()) << loc.status();
  std::string full;
  auto pids = (*loc)->ContainerPids(a, &full);
  ASSERT_TRUE(pids.ok()) << pids.status();
  EXPECT_EQ(*pids, (std::vector<int>{7, 40}));
  EXPECT_EQ(full, a);
  pids = (*loc)->ContainerPids(std::string(12, 'a') + "b", &full);
  ASSERT_TRUE(pids.ok()) << pids.status();
  EXPECT_EQ(*pids, (std::vector<int>{9}));
  EXPECT_EQ(full, ab);
  pids = (*loc)->ContainerPids(std::string(12, 'a'), &full);
  EXPECT_EQ(pids.status().code(), absl::StatusCode::kInvalidArgument) << pids.status();
  EXPECT_NE(pids.status().message().find("ambiguous"), std::string::npos);
  pids = (*loc)->ContainerPids("0123456789ab", &full);
  EXPECT_EQ(pids.status().code(), absl::StatusCode::kNotFound) << pids.status();
  BinaryLocator::Cache cache;
  auto f = (*loc)->Open(Spec("/bin/sh", 0, "0123456789abcdef"), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_NE(f.status().message().find("no container 0123456789abcdef"), std::string::npos)
      << f.status();
}

TEST(BinaryLocator, ContainerSpecsOpenThroughAProcessOfTheContainer) {
  // This test process stands in for a container: a fake procfs whose only process's cgroup names a
  // container and whose root and maps are this process's.
  const std::string proc = TempDir();
  const std::string id(64, 'c');
  const std::string me = absl::StrCat(proc, "/", getpid());
  mkdir(me.c_str(), 0755);
  Write(me + "/cgroup", absl::StrCat("0::/libpod-", id, ".scope\n"));
  symlink("/", (me + "/root").c_str());
  symlink(absl::StrCat("/proc/", getpid(), "/maps").c_str(), (me + "/maps").c_str());
  BinaryLocator::Options o;
  o.proc = proc;
  auto loc = BinaryLocator::Create(o);
  ASSERT_TRUE(loc.ok()) << loc.status();
  BinaryLocator::Cache cache;
  auto f = (*loc)->Open(Spec(SelfExe(), 0, id.substr(0, 12)), &cache);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->container_id, id);
  EXPECT_EQ(f->file->inode(), Inode(SelfExe()));
  f = (*loc)->Open(Spec("/etc/hostname", 0, id), &cache);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition) << f.status();
  EXPECT_NE(f.status().message().find("container cccccccccccc"), std::string::npos) << f.status();
}

}  // namespace
}  // namespace xolfleet
