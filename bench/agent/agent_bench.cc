// Agent benchmarks on this machine's kernel (root): attach/detach cost per
// probe against bpftrace on the same sites, WatchHits throughput with every
// event accounted for, and the agent's memory with 10,000 probes. Prints a
// table; bench/agent/run.sh saves it.
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/integration/agent_harness.h"

namespace xolfleet::testing {
namespace {

const char kLibc[] = "/lib/x86_64-linux-gnu/libc.so.6";
const char kLibstdcxx[] = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
const char kLibgrpc[] = "/usr/lib/x86_64-linux-gnu/libgrpc.so.29";

struct Site {
  std::string binary, symbol;
};

std::vector<std::string> rows;
void Row(const std::string& what, const std::string& value,
         const std::string& note = "") {
  std::string line = absl::StrFormat("%-58s %18s  %s", what, value, note);
  std::cout << line << std::endl;
  rows.push_back(line);
}

[[noreturn]] void Die(const std::string& msg) {
  std::cerr << "agent_bench: " << msg << std::endl;
  exit(1);
}

// Function entries of `binary` the running kernel accepts, named plainly
// (bpftrace can take the same names), one per name.
std::vector<Site> Sites(AgentProcess& agent, const std::string& binary) {
  v1::ClassifyRequest req;
  req.set_all_functions_of(binary);
  v1::ClassifyResponse resp;
  grpc::ClientContext ctx;
  grpc::Status st = agent.stub().Classify(&ctx, req, &resp);
  if (!st.ok()) Die("classify " + binary + ": " + st.error_message());
  static const std::regex plain("[A-Za-z_][A-Za-z0-9_]*");
  std::set<std::string> seen;
  std::vector<Site> out;
  for (const v1::SitePlacement& s : resp.sites()) {
    if (s.placement() == v1::REFUSED || s.symbol_offset() != 0 || s.relocated())
      continue;
    if (!std::regex_match(s.symbol(), plain) || !seen.insert(s.symbol()).second)
      continue;
    out.push_back({binary, s.symbol()});
  }
  return out;
}

struct AttachTiming {
  double attach_s = 0, detach_s = 0;
  int attached = 0;
  std::string link_kind;
};

AttachTiming AttachDetach(AgentProcess& agent, const std::vector<Site>& sites,
                          uint64_t* rss_kib = nullptr) {
  v1::AttachRequest req;
  for (const Site& s : sites) {
    v1::ProbeSpec* p = req.add_specs();
    p->set_binary_path(s.binary);
    p->set_symbol(s.symbol);
  }
  AttachTiming t;
  v1::AttachResponse resp;
  absl::Time start = absl::Now();
  {
    grpc::ClientContext ctx;
    grpc::Status st = agent.stub().Attach(&ctx, req, &resp);
    if (!st.ok()) Die("attach: " + st.error_message());
  }
  t.attach_s = absl::ToDoubleSeconds(absl::Now() - start);
  t.attached = resp.probes_size();
  t.link_kind = resp.link_kind();
  if (rss_kib != nullptr) {
    std::ifstream f(absl::StrCat("/proc/", agent.pid(), "/status"));
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("VmRSS:", 0) == 0) *rss_kib = std::stoull(line.substr(6));
    }
  }
  v1::DetachRequest dreq;
  dreq.set_all(true);
  v1::DetachResponse dresp;
  start = absl::Now();
  {
    grpc::ClientContext ctx;
    grpc::Status st = agent.stub().Detach(&ctx, dreq, &dresp);
    if (!st.ok()) Die("detach: " + st.error_message());
  }
  t.detach_s = absl::ToDoubleSeconds(absl::Now() - start);
  return t;
}

uint64_t RssKib(pid_t pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

// bpftrace attaching `sites` and exiting from BEGIN (which runs once every
// probe is attached): wall time of the whole run, attach and detach included.
double Bpftrace(const std::vector<Site>& sites) {
  std::string prog = "BEGIN { exit(); } ";
  std::vector<std::string> points;
  for (const Site& s : sites)
    points.push_back(absl::StrCat("uprobe:", s.binary, ":", s.symbol));
  absl::StrAppend(&prog, absl::StrJoin(points, ","), " { @hits = count(); }");
  std::string path = "/tmp/xolfleet-bench.bt";
  std::ofstream(path) << prog;
  absl::Time start = absl::Now();
  std::string cmd =
      absl::StrCat("BPFTRACE_MAX_PROBES=", sites.size() + 10, " bpftrace ",
                   path, " > /tmp/xolfleet-bench.bt.out 2>&1");
  int rc = system(cmd.c_str());
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  if (rc != 0) Die("bpftrace failed; see /tmp/xolfleet-bench.bt.out");
  return secs;
}

void AttachBenchmarks();
int WatchBenchmark(double spin_seconds);

// The agent's own account of its last large attach and detach (log lines).
std::string AgentSplit(AgentProcess& agent) {
  std::string log = agent.log(), att, det;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    size_t z = line.find("Z ");
    if (z == std::string::npos) continue;
    std::string msg = line.substr(z + 2);
    if (msg.rfind("attached ", 0) == 0) att = msg;
    if (msg.rfind("detached ", 0) == 0) det = msg;
  }
  return att + "; " + det;
}

std::string Sec(double s) { return absl::StrFormat("%.3f s", s); }
std::string Ms(double s) { return absl::StrFormat("%.3f ms", s * 1e3); }

int Main(double spin_seconds, bool only_watch) {
  if (geteuid() != 0) Die("needs root (uprobes, BPF)");
  std::string release;
  {
    std::ifstream f("/proc/sys/kernel/osrelease");
    std::getline(f, release);
  }
  Row("host kernel", release,
      absl::StrCat(std::thread::hardware_concurrency(), " CPUs"));

  if (!only_watch) AttachBenchmarks();
  return WatchBenchmark(spin_seconds);
}

void AttachBenchmarks() {
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent =
      AgentProcess::Start({"--link-mode=multi", "--max-probes=20000"});
  if (!agent.ok()) Die(std::string(agent.status().message()));
  std::vector<Site> libc = Sites(**agent, kLibc);
  std::vector<Site> cxx = Sites(**agent, kLibstdcxx);
  std::vector<Site> grpc_sites = Sites(**agent, kLibgrpc);
  Row("usable function entries: libc / libstdc++ / libgrpc",
      absl::StrCat(libc.size(), " / ", cxx.size(), " / ", grpc_sites.size()));
  if (libc.size() < 1000) Die("fewer than 1000 libc sites");

  // 100 libc probes: the agent (both link modes) and bpftrace on the same
  // sites.
  std::vector<Site> libc100(libc.begin(), libc.begin() + 100);
  AttachTiming a100 = AttachDetach(**agent, libc100);
  double agent100 = a100.attach_s + a100.detach_s;
  double bt100 = Bpftrace(libc100);
  Row("bpftrace 0.17: 100 libc probes, attach+detach (whole run)", Sec(bt100),
      absl::StrCat(Ms(bt100 / 100), "/probe"));
  Row("agent uprobe_multi: 100 libc probes, attach+detach", Ms(agent100),
      absl::StrCat(Ms(agent100 / 100), "/probe"));
  Row("  speed-up per probe vs bpftrace (same sites, same run)",
      absl::StrFormat("%.0fx", bt100 / agent100));
  {
    absl::StatusOr<std::unique_ptr<AgentProcess>> perf =
        AgentProcess::Start({"--link-mode=perf", "--max-probes=1000"});
    if (!perf.ok()) Die(std::string(perf.status().message()));
    AttachTiming p100 = AttachDetach(**perf, libc100);
    Row("agent perf_event links: 100 libc probes, attach", Sec(p100.attach_s));
    Row("agent perf_event links: 100 libc probes, detach", Sec(p100.detach_s),
        absl::StrCat(Ms(p100.detach_s / 100),
                     "/probe (one RCU grace period per link)"));
  }

  // 1,000 libc probes, three runs.
  std::vector<Site> libc1000(libc.begin(), libc.begin() + 1000);
  std::vector<double> att, det;
  for (int i = 0; i < 3; ++i) {
    AttachTiming t = AttachDetach(**agent, libc1000);
    if (t.attached != 1000) Die("attached " + std::to_string(t.attached));
    att.push_back(t.attach_s);
    det.push_back(t.detach_s);
  }
  std::sort(att.begin(), att.end());
  std::sort(det.begin(), det.end());
  Row("agent uprobe_multi: 1,000 libc probes, attach (median of 3)",
      Ms(att[1]));
  Row("agent uprobe_multi: 1,000 libc probes, detach (median of 3)",
      Ms(det[1]));
  double per1000 = (att[1] + det[1]) / 1000;
  std::cout << "    agent log: " << AgentSplit(**agent) << std::endl;
  rows.push_back("    agent log: " + AgentSplit(**agent));
  Row("  attach+detach per probe", Ms(per1000),
      absl::StrFormat("%.0fx bpftrace's per-probe cost",
                      (bt100 / 100) / per1000));

  // 10,000 probes across libc, libstdc++ and libgrpc in one request.
  std::vector<Site> big;
  const size_t want = 10000;
  {
    std::set<std::pair<std::string, std::string>> taken;
    auto take = [&](const std::vector<Site>& from, size_t upto) {
      for (const Site& x : from) {
        if (big.size() >= upto) break;
        if (taken.insert({x.binary, x.symbol}).second) big.push_back(x);
      }
    };
    take(libc, 3300);
    take(cxx, 6600);
    take(grpc_sites, want);
    take(libc, want);  // top up if a library was short
    take(cxx, want);
  }
  size_t nlibc = 0, ncxx = 0, ngrpc = 0;
  for (const Site& s : big)
    (s.binary == kLibc ? nlibc : s.binary == kLibstdcxx ? ncxx : ngrpc)++;
  uint64_t rss_before = RssKib((*agent)->pid()), rss_with = 0;
  AttachTiming t10k = AttachDetach(**agent, big, &rss_with);
  Row(absl::StrCat("agent uprobe_multi: ", t10k.attached, " probes (", nlibc,
                   " libc, ", ncxx, " libstdc++, ", ngrpc, " libgrpc), attach"),
      Ms(t10k.attach_s), "one request, 3 multi links");
  Row("  detach", Ms(t10k.detach_s));
  std::cout << "    agent log: " << AgentSplit(**agent) << std::endl;
  rows.push_back("    agent log: " + AgentSplit(**agent));
  Row("  attach+detach total", Sec(t10k.attach_s + t10k.detach_s),
      absl::StrCat(
          Ms((t10k.attach_s + t10k.detach_s) / t10k.attached), "/probe, ",
          absl::StrFormat(
              "%.0fx", (bt100 / 100) /
                           ((t10k.attach_s + t10k.detach_s) / t10k.attached)),
          " bpftrace per probe"));
  Row("agent RSS idle / with 10,000 probes attached",
      absl::StrFormat("%.1f / %.1f MiB", rss_before / 1024.0,
                      rss_with / 1024.0));
  agent->reset();
}

int WatchBenchmark(double spin_seconds) {
  // WatchHits throughput: one capturing probe on an emulated site, a client
  // reading as fast as it can, and every event either received or counted as
  // dropped.
  absl::StatusOr<std::unique_ptr<AgentProcess>> wagent = AgentProcess::Start(
      {"--link-mode=multi", "--ringbuf-mib=64", "--watch-queue-events=262144"});
  if (!wagent.ok()) Die(std::string(wagent.status().message()));
  absl::StatusOr<std::unique_ptr<Workload>> wl = Workload::Start();
  if (!wl.ok()) Die(std::string(wl.status().message()));
  v1::AttachRequest req;
  v1::ProbeSpec* s = req.add_specs();
  s->set_binary_path(Workload::Path());
  s->set_symbol("xol_target_fast");
  s->add_capture(v1::RDI);
  v1::AttachResponse resp;
  {
    grpc::ClientContext ctx;
    if (!(*wagent)->stub().Attach(&ctx, req, &resp).ok())
      Die("attach xol_target_fast");
  }
  std::atomic<uint64_t> received{0}, dropped{0};
  std::atomic<bool> stop{false};
  grpc::ClientContext wctx;
  v1::WatchHitsRequest wreq;
  wreq.set_max_batch(8192);
  auto reader = (*wagent)->stub().WatchHits(&wctx, wreq);
  absl::Time first_event = absl::InfiniteFuture(), last_event;
  std::thread client([&] {
    v1::HitBatch b;
    while (reader->Read(&b)) {
      if (b.events_size() > 0) {
        if (first_event == absl::InfiniteFuture()) first_event = absl::Now();
        last_event = absl::Now();
      }
      received += b.events_size();
      dropped = b.dropped_total();
    }
  });
  auto list_probe = [&]() {
    v1::ListRequest lreq;
    v1::ListResponse lresp;
    grpc::ClientContext lctx;
    (*wagent)->stub().List(&lctx, lreq, &lresp);
    return lresp.probes(0);
  };
  // Warm up until the stream is registered (events before that are not this
  // stream's), then take the baseline: produced = hits from here on.
  while (received == 0) {
    if (!(*wl)->Fast(0.01).ok()) Die("workload");
  }
  absl::SleepFor(absl::Milliseconds(200));
  const uint64_t hits0 = list_probe().hits(), received0 = received,
                 dropped0 = dropped;
  first_event = absl::InfiniteFuture();
  absl::StatusOr<uint64_t> calls = (*wl)->Fast(spin_seconds);
  if (!calls.ok()) Die("workload");
  v1::Probe p;
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (;;) {
    p = list_probe();
    if (received + dropped - received0 - dropped0 >= p.hits() - hits0 ||
        absl::Now() > deadline) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  wctx.TryCancel();
  client.join();
  reader->Finish();
  double stream_s = absl::ToDoubleSeconds(last_event - first_event);
  const uint64_t produced = p.hits() - hits0;
  const uint64_t got = received - received0, lost = dropped - dropped0;
  Row("WatchHits: events produced (probe hits, capture rdi)",
      absl::StrCat(produced),
      absl::StrFormat("workload made %llu calls in %.1f s (emulated site)",
                      *calls, spin_seconds));
  Row("  events received by the client", absl::StrCat(got),
      absl::StrFormat("%.0f events/s over %.2f s",
                      got / std::max(stream_s, 1e-9), stream_s));
  Row("  dropped_total reported (ring buffer + slow client)",
      absl::StrCat(lost),
      absl::StrCat("kernel ring-buffer drops ", p.events_dropped()));
  Row("  received + dropped == produced", got + lost == produced ? "yes" : "NO",
      absl::StrCat(got + lost, " vs ", produced));
  return 0;
}

}  // namespace
}  // namespace xolfleet::testing

int main(int argc, char** argv) {
  double spin = 3;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--spin-seconds=", 0) == 0) spin = std::stod(a.substr(15));
    if (a.rfind("--out=", 0) == 0) out = a.substr(6);
  }
  bool only_watch = false;
  for (int i = 1; i < argc; ++i)
    only_watch |= std::string(argv[i]) == "--only-watch";
  int rc = xolfleet::testing::Main(spin, only_watch);
  if (!out.empty()) {
    std::ofstream f(out);
    f << "# bench/agent/run.sh on "
      << absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(),
                          absl::UTCTimeZone())
      << "\n";
    for (const std::string& r : xolfleet::testing::rows) f << r << "\n";
  }
  return rc;
}
