// Checks the classifier's linux-6.18 answers against what this machine's kernel really does with a
// uprobe on each site of kernel_sites.S. Needs root and tracefs (tag "integration").
//
// Method (deterministic, no timing). The host kernel is built without kprobes (no kprobe_events, no
// kprobe PMU) and ftrace's function tracer is locked down, so
// arch_uprobe_post_xol()/arch_uprobe_skip_sstep() cannot be counted directly. Instead:
//   1. A tracefs uprobe ("p:xolfleet_kpt_<pid>/s<N> <exe>:0x<off>" appended to uprobe_events) is
//      created on the site and enabled. Enabling registers the uprobe on the already-mapped test
//      binary, which runs arch_uprobe_analyze_insn(): a refused instruction fails the write
//      (-ENOTSUPP/-EINVAL). A refused probe accepted lazily would never fire, so "0 hits" also
//      counts as REFUSED.
//   2. A forked child calls the site kRuns times, then reads its own /proc/self/maps. The kernel
//      maps the per-mm XOL area ("[uprobes]") the first time it has to single-step an instruction
//      out of line (pre_ssout() -> xol_get_insn_slot() -> get_xol_area()); an emulated hit
//      (arch_uprobe_skip_sstep() true) never needs it, and the [uprobes] vma is VM_DONTCOPY, so a
//      child forked after the probe starts without one. nop5's 6.18 optimization maps
//      "[uprobes-trampoline]", another name.
//   3. uprobe_profile gives the hit count of our event, which must be exactly kRuns.
// Observed placement: REFUSED (enable failed, or 0 hits), EMULATED (kRuns hits, no XOL area),
// SINGLE_STEP (kRuns hits, XOL area). Probes are removed in destructors, and events left behind by
// a crashed earlier run (its pid gone) are removed at start.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "services/common/elf_file.h"
#include "services/common/x86_classifier.h"

extern "C" {
#define DECLARE(name)        \
  void xkpt_fn_##name(void); \
  extern const unsigned char xkpt_site_##name[];
DECLARE(nop)
DECLARE(nop2)
DECLARE(pause)
DECLARE(xchg_r8)
DECLARE(nop3)
DECLARE(nop4)
DECLARE(nop5)
DECLARE(nop6)
DECLARE(nop7)
DECLARE(nop8)
DECLARE(nopw9)
DECLARE(nopl_disp)
DECLARE(cs_nopw)
DECLARE(push_rbp)
DECLARE(push_r12)
DECLARE(push_imm)
DECLARE(pop_rbp)
DECLARE(jmp8)
DECLARE(call32)
DECLARE(je8)
DECLARE(jne32)
DECLARE(ret)
DECLARE(call_rax)
DECLARE(mov_rbp_rsp)
DECLARE(lea_rsp)
DECLARE(add)
DECLARE(test)
DECLARE(cmp)
DECLARE(load_rip)
DECLARE(store_rip)
DECLARE(lea_rip)
DECLARE(lock_add)
DECLARE(syscall)
DECLARE(lfence)
DECLARE(endbr64)
DECLARE(pxor)
DECLARE(vaddps)
DECLARE(vpxor)
DECLARE(vzeroupper)
DECLARE(pushf_popf)
DECLARE(nop_rexw)
DECLARE(nop_reg)
DECLARE(push_rexw)
DECLARE(push16)
DECLARE(push_rsp8)
DECLARE(push_rip)
DECLARE(pushf)
DECLARE(leave)
DECLARE(enter)
DECLARE(je66)
DECLARE(je_cs)
DECLARE(bnd_jmp)
DECLARE(jrcxz)
DECLARE(rep_ret)
DECLARE(mov_fs)
DECLARE(movsd_rip)
DECLARE(lock_cmpxchg)
DECLARE(cpuid)
DECLARE(rdtsc)
DECLARE(fxch)
DECLARE(fwait)
DECLARE(rep_stosq)
DECLARE(movsq)
DECLARE(vmovdqa)
DECLARE(evex_vaddps)
int xkpt_fn_vpcmpeqb(void);
extern const unsigned char xkpt_site_vpcmpeqb[];
#undef DECLARE
}

namespace xolfleet {
namespace {

constexpr int kRuns = 50;
constexpr char kTracefs[] = "/sys/kernel/tracing";
constexpr char kGroupPrefix[] = "xolfleet_kpt_";

struct Site {
  const char* name;
  void (*fn)();
  const unsigned char* site;
};

#define SITE(name) \
  Site { #name, xkpt_fn_##name, xkpt_site_##name }
const Site kSites[] = {
    SITE(nop),
    SITE(nop2),
    SITE(pause),
    SITE(xchg_r8),
    SITE(nop3),
    SITE(nop4),
    SITE(nop5),
    SITE(nop6),
    SITE(nop7),
    SITE(nop8),
    SITE(nopw9),
    SITE(nopl_disp),
    SITE(cs_nopw),
    SITE(push_rbp),
    SITE(push_r12),
    SITE(push_imm),
    SITE(pop_rbp),
    SITE(jmp8),
    SITE(call32),
    SITE(je8),
    SITE(jne32),
    SITE(ret),
    SITE(call_rax),
    SITE(mov_rbp_rsp),
    SITE(lea_rsp),
    SITE(add),
    SITE(test),
    SITE(cmp),
    SITE(load_rip),
    SITE(store_rip),
    SITE(lea_rip),
    SITE(lock_add),

    SITE(lfence),
    SITE(endbr64),
    SITE(pxor),
    SITE(vaddps),
    SITE(vpxor),
    SITE(vzeroupper),
    SITE(nop_rexw),
    SITE(nop_reg),
    SITE(push_rexw),
    SITE(push16),
    SITE(push_rsp8),
    SITE(push_rip),
    SITE(pushf),
    SITE(leave),
    SITE(enter),
    SITE(je66),
    SITE(je_cs),
    SITE(bnd_jmp),
    SITE(jrcxz),
    SITE(rep_ret),
    SITE(mov_fs),
    SITE(movsd_rip),
    SITE(lock_cmpxchg),
    SITE(cpuid),
    SITE(rdtsc),
    SITE(fxch),
    SITE(fwait),
    SITE(rep_stosq),
    SITE(movsq),
    SITE(vmovdqa),
    SITE(evex_vaddps),
    Site{"vpcmpeqb", reinterpret_cast<void (*)()>(xkpt_fn_vpcmpeqb), xkpt_site_vpcmpeqb},
};
#undef SITE

std::string TracefsPath(absl::string_view rel) { return absl::StrCat(kTracefs, "/", rel); }

// Writes `text` to a tracefs file; returns 0 or errno.
int WriteTracefs(absl::string_view rel, absl::string_view text, bool append) {
  const int fd =
      open(TracefsPath(rel).c_str(), O_WRONLY | O_CLOEXEC | (append ? O_APPEND : O_TRUNC));
  if (fd < 0) return errno;
  const ssize_t n = write(fd, text.data(), text.size());
  const int err = n < 0 ? errno : 0;
  close(fd);
  return err;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Removes events of earlier runs whose process is gone.
void RemoveStaleEvents() {
  for (absl::string_view line : absl::StrSplit(ReadFile(TracefsPath("uprobe_events")), '\n')) {
    // "p:xolfleet_kpt_123/s4 /path:0x..."
    if (!absl::StartsWith(line, absl::StrCat("p:", kGroupPrefix))) continue;
    const std::string event(line.substr(2, line.find(' ') - 2));
    const std::string group = event.substr(0, event.find('/'));
    const std::string pid = group.substr(strlen(kGroupPrefix));
    if (access(absl::StrCat("/proc/", pid).c_str(), F_OK) == 0) continue;
    WriteTracefs(absl::StrCat("events/", event, "/enable"), "0", false);
    WriteTracefs("uprobe_events", absl::StrCat("-:", event, "\n"), true);
  }
}

// One tracefs uprobe event; removed (disabled, then deleted) on destruction.
class ProbeEvent {
 public:
  ProbeEvent(const std::string& exe, uint64_t file_offset, int index)
      : group_(absl::StrCat(kGroupPrefix, getpid())), name_(absl::StrCat("s", index)) {
    create_errno_ =
        WriteTracefs("uprobe_events",
                     absl::StrFormat("p:%s/%s %s:0x%x\n", group_, name_, exe, file_offset), true);
  }
  ~ProbeEvent() {
    if (enabled_) {
      if (int e = WriteTracefs(EventPath("enable"), "0", false)) {
        ADD_FAILURE() << "disabling " << group_ << "/" << name_ << ": " << strerror(e);
      }
    }
    if (create_errno_ == 0) {
      if (int e =
              WriteTracefs("uprobe_events", absl::StrCat("-:", group_, "/", name_, "\n"), true)) {
        ADD_FAILURE() << "removing " << group_ << "/" << name_ << ": " << strerror(e);
      }
    }
  }
  int create_errno() const { return create_errno_; }
  // 0 on success, else errno of the enable write (the kernel refused the instruction).
  int Enable() {
    const int e = WriteTracefs(EventPath("enable"), "1", false);
    enabled_ = e == 0;
    return e;
  }
  // Hits from uprobe_profile ("  <file> <event>   <hits>"; the group is not
  // shown, so match the file, which is this test binary, and the event name), -1 if absent.
  long Hits(const std::string& exe) const {
    for (absl::string_view line : absl::StrSplit(ReadFile(TracefsPath("uprobe_profile")), '\n')) {
      std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() == 3 && f[0] == exe && f[1] == name_) return std::stol(std::string(f[2]));
    }
    return -1;
  }

 private:
  std::string EventPath(absl::string_view file) const {
    return absl::StrCat("events/", group_, "/", name_, "/", file);
  }
  std::string group_, name_;
  int create_errno_ = 0;
  bool enabled_ = false;
};

// Runs fn kRuns times in a fresh child; returns 1 if the child then has an XOL
// area, 0 if not, or a negative value on a child failure (signal: -signo).
int RunInChild(void (*fn)()) {
  const pid_t pid = fork();
  if (pid == 0) {
    for (int i = 0; i < kRuns; ++i) fn();
    char buf[1 << 16];
    const int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0) _exit(3);
    std::string maps;
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) maps.append(buf, n);
    close(fd);
    _exit(maps.find("[uprobes]\n") != std::string::npos ? 1 : 0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1000;
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status) <= 1 ? WEXITSTATUS(status) : -100 - WEXITSTATUS(status);
}

std::string HexBytes(const std::vector<uint8_t>& b) {
  std::vector<std::string> parts;
  for (uint8_t x : b) parts.push_back(absl::StrFormat("%02x", x));
  return absl::StrJoin(parts, " ");
}

// Corpus rows marked [host]: each must match a site here byte for byte.
std::set<std::string>& HostRows() {
  static auto* rows = new std::set<std::string>;
  return *rows;
}

// linux-6.18 column of tests/corpus/placement_corpus.tsv, by bytes.
std::map<std::string, std::string> CorpusLinux618() {
  std::map<std::string, std::string> out;
  for (absl::string_view line :
       absl::StrSplit(ReadFile("tests/corpus/placement_corpus.tsv"), '\n')) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() == 6) out[f[0]] = f[3];
    if (f.size() == 6 && absl::StrContains(f[1], "[host]")) HostRows().insert(f[0]);
  }
  return out;
}

class KernelPlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "needs root (uprobes through tracefs)";
    if (access(TracefsPath("uprobe_events").c_str(), F_OK) != 0) {
      mkdir(kTracefs, 0755);
      mount("nodev", kTracefs, "tracefs", 0, nullptr);
    }
    ASSERT_EQ(access(TracefsPath("uprobe_events").c_str(), W_OK), 0)
        << TracefsPath("uprobe_events") << " is not writable: " << strerror(errno);
    RemoveStaleEvents();
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    ASSERT_GT(n, 0);
    exe_.assign(exe, n);
  }
  std::string exe_;
};

TEST_F(KernelPlacementTest, ClassifierLinux618MatchesThisKernel) {
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(exe_);
  ASSERT_TRUE(elf.ok()) << elf.status();
  const std::map<std::string, std::string> corpus = CorpusLinux618();
  std::map<std::string, std::vector<std::string>> verdicts;
  int corpus_rows_checked = 0;
  int index = 0;
  for (const Site& s : kSites) {
    SCOPED_TRACE(s.name);
    ++index;
    const std::string sym = absl::StrCat("xkpt_site_", s.name);
    absl::StatusOr<ElfSymbol> es = (*elf)->FindSymbol(sym);
    ASSERT_TRUE(es.ok()) << es.status();
    ASSERT_NE(es->file_offset, 0u);
    InsnPlacement predicted =
        ClassifyInstruction(absl::MakeConstSpan(s.site, 15), KernelProfile::kLinux618);
    ASSERT_GT(predicted.length, 0) << predicted.reason;

    Placement observed;
    std::string how;
    {
      ProbeEvent probe(exe_, es->file_offset, index);
      ASSERT_EQ(probe.create_errno(), 0)
          << "creating uprobe event: " << strerror(probe.create_errno());
      if (int e = probe.Enable(); e != 0) {
        observed = Placement::kRefused;
        how = absl::StrCat("enable failed: ", strerror(e), " (", e, ")");
      } else {
        const int xol = RunInChild(s.fn);
        ASSERT_GE(xol, 0) << "child failed (negative signal number): " << xol;
        const long hits = probe.Hits(exe_);
        if (hits == 0) {
          observed = Placement::kRefused;
          how = "registered but never fired";
        } else {
          ASSERT_EQ(hits, kRuns) << "unexpected hit count";
          observed = xol ? Placement::kSingleStep : Placement::kEmulated;
          how = absl::StrCat(hits, " hits, ", xol ? "XOL area mapped" : "no XOL area");
        }
      }
    }
    const std::string bytes = HexBytes(predicted.bytes);
    EXPECT_EQ(PlacementName(predicted.placement), PlacementName(observed))
        << s.name << " [" << bytes << "] " << predicted.disassembly << ": classifier says "
        << PlacementName(predicted.placement) << " (" << predicted.reason << "), kernel did "
        << PlacementName(observed) << " (" << how << ")";
    if (auto it = corpus.find(bytes); it != corpus.end()) {
      ++corpus_rows_checked;
      HostRows().erase(bytes);
      EXPECT_EQ(it->second, PlacementName(observed))
          << "corpus row [" << bytes << "] linux-6.18 column disagrees with the kernel";
    }
    verdicts[std::string(PlacementName(observed))].push_back(
        absl::StrCat(s.name, " (", predicted.disassembly, ")"));
  }
  EXPECT_GE(corpus_rows_checked, 50);
  for (const std::string& row : HostRows()) {
    ADD_FAILURE() << "corpus row [" << row << "] is marked [host] but no site has its bytes";
  }
  for (const auto& [placement, names] : verdicts) {
    std::cout << "kernel " << placement << ": " << absl::StrJoin(names, ", ") << "\n";
  }
}

// The stock-kernel quirk the classifier reports for VEX opcode 74: the kernel takes vpcmpeqb for
// `je` and emulates it as a jump, so the instruction never runs.
TEST_F(KernelPlacementTest, VexOpcode74IsSkippedNotExecuted) {
  ASSERT_FALSE(
      ClassifyInstruction(absl::MakeConstSpan(xkpt_site_vpcmpeqb, 15), KernelProfile::kLinux618)
          .hazard.empty());
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(exe_);
  ASSERT_TRUE(elf.ok()) << elf.status();
  absl::StatusOr<ElfSymbol> es = (*elf)->FindSymbol("xkpt_site_vpcmpeqb");
  ASSERT_TRUE(es.ok()) << es.status();
  ASSERT_EQ(xkpt_fn_vpcmpeqb(), -1) << "without a probe vpcmpeqb sets all ones";
  ProbeEvent probe(exe_, es->file_offset, 1000);
  ASSERT_EQ(probe.create_errno(), 0);
  ASSERT_EQ(probe.Enable(), 0);
  const pid_t pid = fork();
  if (pid == 0) _exit(xkpt_fn_vpcmpeqb() == 0 ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "vpcmpeqb ran under the probe";
  EXPECT_EQ(probe.Hits(exe_), 1);
}

}  // namespace
}  // namespace xolfleet

namespace xolfleet {
namespace {

// `syscall` is accepted by the stock kernel (0x0f passes good_insns_64, so good_2byte_insns, which
// marks 0f 05 unsupported, is never consulted) and single-stepped out of line, after which the
// probed process dies with SIGSEGV (observed on the 6.18 host: the return lands in an unmapped
// page). The classifier says SINGLE_STEP, as the kernel does, and sets a hazard.
TEST_F(KernelPlacementTest, SyscallSiteIsAcceptedAndKillsTheTarget) {
  InsnPlacement predicted =
      ClassifyInstruction(absl::MakeConstSpan(xkpt_site_syscall, 15), KernelProfile::kLinux618);
  EXPECT_EQ(predicted.placement, Placement::kSingleStep);
  EXPECT_FALSE(predicted.hazard.empty());
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(exe_);
  ASSERT_TRUE(elf.ok()) << elf.status();
  absl::StatusOr<ElfSymbol> es = (*elf)->FindSymbol("xkpt_site_syscall");
  ASSERT_TRUE(es.ok()) << es.status();
  ProbeEvent probe(exe_, es->file_offset, 1001);
  ASSERT_EQ(probe.create_errno(), 0);
  ASSERT_EQ(probe.Enable(), 0) << "the kernel accepts a probe on syscall";
  const int result = RunInChild(xkpt_fn_syscall);
  EXPECT_EQ(result, -SIGSEGV) << "child result " << result;
  EXPECT_EQ(probe.Hits(exe_), 1);
}

}  // namespace
}  // namespace xolfleet

namespace xolfleet {
namespace {

// pushf is single-stepped by the stock kernel with TF set, so the flags it
// pushes carry TF; a following popf turns single-stepping on in the program,
// which dies of SIGTRAP. The classifier flags it as a hazard under the stock
// profiles (boosted on xolfleet-6.1, where the slot runs without TF).
TEST_F(KernelPlacementTest, PushfSiteLeaksTheTrapFlag) {
  const absl::Span<const uint8_t> site(xkpt_site_pushf_popf, 15);
  EXPECT_FALSE(ClassifyInstruction(site, KernelProfile::kLinux618).hazard.empty());
  EXPECT_EQ(ClassifyInstruction(site, KernelProfile::kXolfleet61).placement, Placement::kBoosted);
  EXPECT_TRUE(ClassifyInstruction(site, KernelProfile::kXolfleet61).hazard.empty());
  absl::StatusOr<std::unique_ptr<ElfFile>> elf = ElfFile::Open(exe_);
  ASSERT_TRUE(elf.ok()) << elf.status();
  absl::StatusOr<ElfSymbol> es = (*elf)->FindSymbol("xkpt_site_pushf_popf");
  ASSERT_TRUE(es.ok()) << es.status();
  ProbeEvent probe(exe_, es->file_offset, 1002);
  ASSERT_EQ(probe.create_errno(), 0);
  ASSERT_EQ(probe.Enable(), 0);
  EXPECT_EQ(RunInChild(xkpt_fn_pushf_popf), -SIGTRAP);
  EXPECT_EQ(probe.Hits(exe_), 1);
}

}  // namespace
}  // namespace xolfleet
