#include "services/agent/calibration.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "services/agent/attachment.h"
#include "services/agent/probe_convert.h"
#include "services/common/open_file.h"
#include "services/common/proto_time.h"
#include "services/common/x86_classifier.h"

// The helper's functions. Hand-written so the first instruction of each is known; they
// live in the agent's own executable, which the helper (a fork) maps at the same address.
extern "C" {
void xol_cal_push(uint64_t);
void xol_cal_reg(uint64_t);
void xol_cal_riprel(uint64_t);
void xol_cal_x87(uint64_t);
}
__asm__(
    ".pushsection .data\n"
    ".p2align 3\n"
    "xol_cal_word: .quad 0\n"
    ".popsection\n"
    ".text\n"
    ".p2align 4\n"
    ".globl xol_cal_push\n"
    ".type xol_cal_push, @function\n"
    "xol_cal_push:\n"
    "  push %rbp\n"
    "  pop %rbp\n"
    "  ret\n"
    ".size xol_cal_push, .-xol_cal_push\n"
    ".p2align 4\n"
    ".globl xol_cal_reg\n"
    ".type xol_cal_reg, @function\n"
    "xol_cal_reg:\n"
    "  mov %rdi, %rax\n"
    "  ret\n"
    ".size xol_cal_reg, .-xol_cal_reg\n"
    ".p2align 4\n"
    ".globl xol_cal_riprel\n"
    ".type xol_cal_riprel, @function\n"
    "xol_cal_riprel:\n"
    "  mov xol_cal_word(%rip), %rax\n"
    "  ret\n"
    ".size xol_cal_riprel, .-xol_cal_riprel\n"
    ".p2align 4\n"
    ".globl xol_cal_x87\n"
    ".type xol_cal_x87, @function\n"
    "xol_cal_x87:\n"
    "  fwait\n"
    "  ret\n"
    ".size xol_cal_x87, .-xol_cal_x87\n");

namespace xolfleet {
namespace {

using CalFn = void (*)(uint64_t);
constexpr uint32_t kPilotCalls = 100;
constexpr uint32_t kMinCalls = 200;
constexpr CalFn kFunctions[] = {xol_cal_push, xol_cal_reg, xol_cal_riprel, xol_cal_x87};
constexpr uint32_t kNumFunctions = sizeof(kFunctions) / sizeof(kFunctions[0]);

struct Command {
  uint32_t fn;
  uint32_t calls;
};

// CPU time of the calling thread: the trap and the kernel's handling of a hit are charged
// to the probed task, while time it spends preempted by other load is not (wall-clock
// figures grew with the machine's load: single-step 19-59 us at load 6-9).
uint64_t ThreadCpuNs() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

// The child's whole life: async-signal-safe calls only (it is a fork of a threaded
// process), no allocation.
[[noreturn]] void HelperMain(int in, int out, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(0);
  for (;;) {
    Command c;
    if (read(in, &c, sizeof(c)) != sizeof(c) || c.fn >= kNumFunctions) _exit(0);
    CalFn volatile f = kFunctions[c.fn];
    const uint64_t t0 = ThreadCpuNs();
    for (uint32_t i = 0; i < c.calls; ++i) f(i);
    const uint64_t ns = ThreadCpuNs() - t0;
    if (write(out, &ns, sizeof(ns)) != sizeof(ns)) _exit(0);
  }
}

// The helper process: forked at construction, killed and reaped at destruction.
class Helper {
 public:
  static absl::StatusOr<std::unique_ptr<Helper>> Start() {
    int to[2], from[2];
    if (pipe2(to, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
    if (pipe2(from, O_CLOEXEC) != 0) {
      close(to[0]);
      close(to[1]);
      return absl::InternalError("pipe2 failed");
    }
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      const int err = errno;
      for (int fd : {to[0], to[1], from[0], from[1]}) close(fd);
      return absl::InternalError(absl::StrCat("fork of the calibration helper: ", strerror(err)));
    }
    if (pid == 0) {
      // Keep the two pipe ends only: the agent's sockets and links are not the helper's.
      if (dup2(to[0], 3) < 0 || dup2(from[1], 4) < 0) _exit(1);
      syscall(SYS_close_range, 5u, ~0u, 0u);
      HelperMain(3, 4, parent);
    }
    close(to[0]);
    close(from[1]);
    auto h = std::unique_ptr<Helper>(new Helper());
    h->pid_ = pid;
    h->to_ = to[1];
    h->from_ = from[0];
    return h;
  }
  ~Helper() {
    close(to_);
    close(from_);
    kill(pid_, SIGKILL);
    int st;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  pid_t pid() const { return pid_; }

  // CPU time of `calls` calls of function `fn` in the helper, in ns.
  absl::StatusOr<uint64_t> Run(uint32_t fn, uint32_t calls) {
    Command c{fn, calls};
    if (write(to_, &c, sizeof(c)) != sizeof(c)) {
      return absl::InternalError("the calibration helper is gone (write)");
    }
    uint64_t ns = 0;
    if (read(from_, &ns, sizeof(ns)) != sizeof(ns)) {
      return absl::InternalError("the calibration helper is gone (read)");
    }
    return ns;
  }
  // The median over `rounds`: what a call costs under the node's usual load (the minimum
  // was 15-18% under what a workload measured beside it; bench/cost/results.txt).
  absl::StatusOr<uint64_t> MedianOf(uint32_t fn, uint32_t calls, uint32_t rounds) {
    std::vector<uint64_t> ns;
    for (uint32_t r = 0; r < rounds; ++r) {
      absl::StatusOr<uint64_t> t = Run(fn, calls);
      if (!t.ok()) return t.status();
      ns.push_back(*t);
    }
    std::sort(ns.begin(), ns.end());
    return ns[ns.size() / 2];
  }

 private:
  Helper() = default;
  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
};

// The mapped file holding `addr` in this process, and the file offset of `addr` in it
// (a fork maps the same file at the same address).
absl::Status FileOffsetOf(uintptr_t addr, std::string* path, uint64_t* offset) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    // start-end perms offset dev inode path
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 6) continue;
    std::vector<std::string> range = absl::StrSplit(f[0], '-');
    uint64_t start = 0, end = 0, off = 0;
    if (range.size() != 2 || !absl::SimpleHexAtoi(range[0], &start) ||
        !absl::SimpleHexAtoi(range[1], &end) || !absl::SimpleHexAtoi(f[2], &off)) {
      continue;
    }
    if (addr < start || addr >= end) continue;
    *path = absl::StrJoin(f.begin() + 5, f.end(), " ");  // a path may hold spaces
    *offset = addr - start + off;
    return absl::OkStatus();
  }
  return absl::NotFoundError(
      absl::StrCat("no file mapping holds the calibration function at 0x", absl::Hex(addr)));
}

}  // namespace

absl::StatusOr<CalibrationResult> RunCalibration(ProbeProgram& program, CalibrationSlot slot,
                                                 KernelProfile profile,
                                                 const CalibrationOptions& options) {
  const absl::Time started = absl::Now();
  CalibrationResult result;
  v1::Calibration& cal = result.calibration;
  cal.set_profile(std::string(ProfileName(profile)));

  // One function per placement class, in the order above.
  struct Site {
    uint32_t fn;
    Placement placement;
    std::string disassembly;
    uint64_t offset;
  };
  std::string path;
  std::map<Placement, Site> sites;
  for (uint32_t i = 0; i < kNumFunctions; ++i) {
    const auto* code = reinterpret_cast<const uint8_t*>(kFunctions[i]);
    InsnPlacement ip = ClassifyInstruction(absl::MakeConstSpan(code, 15), profile);
    if (ip.placement == Placement::kRefused || !ip.hazard.empty()) continue;
    std::string p;
    uint64_t off = 0;
    if (absl::Status st = FileOffsetOf(reinterpret_cast<uintptr_t>(code), &p, &off); !st.ok()) {
      return st;
    }
    if (path.empty()) path = p;
    sites.emplace(ip.placement, Site{i, ip.placement, ip.disassembly, off});
  }
  absl::StatusOr<std::shared_ptr<const OpenFile>> file = OpenFile::Open(path);
  if (!file.ok()) return file.status();

  absl::StatusOr<std::unique_ptr<Helper>> helper = Helper::Start();
  if (!helper.ok()) return helper.status();
  Helper& h = **helper;

  const uint32_t n = std::max<uint32_t>(options.calls, 1);
  const uint32_t rounds = std::max<uint32_t>(options.rounds, 1);
  // ns per call with a probe at `site` minus without.
  auto measure = [&](const Site& site, bool capture, v1::CalibrationFigure* fig) -> absl::Status {
    xol_probe_config cfg = {};
    cfg.generation = slot.generation;
    cfg.pid = static_cast<uint32_t>(h.pid());
    cfg.capture_mask = capture ? (1u << (XOL_REG_EFLAGS + 1)) - 1 : 0;
    if (absl::Status st = program.ResetCounters(slot.slot); !st.ok()) return st;
    if (absl::Status st = program.SetConfig(slot.slot, cfg); !st.ok()) return st;
    const uint64_t cookie = XOL_COOKIE(slot.generation, slot.slot);
    const uint64_t offset = site.offset;
    absl::StatusOr<std::unique_ptr<Attachment>> att = program.Link(
        **file, absl::MakeConstSpan(&offset, 1), absl::MakeConstSpan(&cookie, 1), h.pid());
    if (!att.ok()) {
      (void)program.DeleteConfig(slot.slot);
      return att.status();
    }
    // A slow node (a qemu TCG guest single-steps in hundreds of us) gets fewer calls per
    // round: a pilot of kPilotCalls sets the count so a probed round takes about
    // options.max_round_ms, never fewer than kMinCalls.
    absl::StatusOr<uint64_t> pilot = h.Run(site.fn, kPilotCalls);
    uint32_t calls_per_round = n;
    if (pilot.ok() && *pilot > 0) {
      const uint64_t per_call = std::max<uint64_t>(*pilot / kPilotCalls, 1);
      const uint64_t fit = uint64_t{options.max_round_ms} * 1000000 / per_call;
      calls_per_round = static_cast<uint32_t>(std::clamp<uint64_t>(fit, std::min(kMinCalls, n), n));
    }
    absl::StatusOr<uint64_t> probed =
        pilot.ok() ? h.MedianOf(site.fn, calls_per_round, rounds) : pilot.status();
    att->reset();
    absl::StatusOr<xol_probe_counters> c = program.ReadCounters(slot.slot);
    (void)program.DeleteConfig(slot.slot);
    (void)program.ResetCounters(slot.slot);
    if (!probed.ok()) return probed.status();
    if (!c.ok()) return c.status();
    result.hits += c->hits;
    result.events += c->emitted;
    // Unprobed, after the probe is gone: the same calls per round.
    absl::StatusOr<uint64_t> base = h.MedianOf(site.fn, calls_per_round, rounds);
    if (!base.ok()) return base.status();
    const uint64_t calls = uint64_t{calls_per_round} * rounds + kPilotCalls;
    if (c->hits != calls) {
      return absl::InternalError(absl::StrCat("the calibration probe at '", site.disassembly,
                                              "' counted ", c->hits, " hits for ", calls,
                                              " calls: figure refused"));
    }
    fig->set_placement(ToProtoPlacement(site.placement));
    fig->set_capture(capture);
    fig->set_site(site.disassembly);
    fig->set_calls(calls);
    fig->set_ns_per_hit((static_cast<double>(*probed) - static_cast<double>(*base)) /
                        calls_per_round);
    return absl::OkStatus();
  };
  double emulated_ns = -1;
  for (const auto& [placement, site] : sites) {
    v1::CalibrationFigure fig;
    if (absl::Status st = measure(site, false, &fig); !st.ok()) return st;
    if (placement == Placement::kEmulated) emulated_ns = fig.ns_per_hit();
    *cal.add_figures() = fig;
  }
  if (auto it = sites.find(Placement::kEmulated); it != sites.end()) {
    v1::CalibrationFigure fig;
    if (absl::Status st = measure(it->second, true, &fig); !st.ok()) return st;
    cal.set_capture_ns_per_event(std::max(0.0, fig.ns_per_hit() - emulated_ns));
    *cal.add_figures() = fig;
  }
  cal.set_status("ok");
  *cal.mutable_measured_at() = ToTimestamp(absl::Now());
  *cal.mutable_duration() = ToDurationProto(absl::Now() - started);
  return result;
}

}  // namespace xolfleet
