// The real agent over real gRPC on this machine's kernel: real uprobes on a real process. Every
// test runs in both link modes (uprobe_multi links and perf-event links). Root only.
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/error_details.h"
#include "gtest/gtest.h"
#include "services/common/elf_file.h"
#include "services/common/enum_names.h"
#include "services/common/proto_time.h"
#include "tests/integration/agent_harness.h"

namespace xolfleet::testing {
namespace {

constexpr int kMaxProbes = 64;
constexpr int kMaxSpecs = 40;

std::string TmpDir() {
  const char* d = getenv("TEST_TMPDIR");
  return d ? d : "/tmp";
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WriteFile(const std::string& path, const std::string& bytes, mode_t mode) {
  unlink(path.c_str());
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  return close(fd) == 0 && ok;
}

// Sets `stop` and joins `t` when the scope ends, also when an ASSERT returns
// early (a joinable std::thread would otherwise terminate the test).
struct StopAndJoin {
  std::atomic<bool>& stop;
  std::thread& t;
  ~StopAndJoin() {
    stop = true;
    if (t.joinable()) t.join();
  }
};

// File offset of `symbol` in the workload binary.
uint64_t WorkloadOffset(const std::string& symbol) {
  auto elf = ElfFile::Open(Workload::Path());
  if (!elf.ok()) return 0;
  auto sym = (*elf)->FindSymbol(symbol);
  return sym.ok() ? sym->file_offset : 0;
}

// One unary call on `agent`, each in a context of its own.
grpc::Status CallAttach(AgentProcess& agent, const v1::AttachRequest& req,
                        v1::AttachResponse* resp) {
  grpc::ClientContext ctx;
  return agent.stub().Attach(&ctx, req, resp);
}
grpc::Status CallList(AgentProcess& agent, const v1::ListRequest& req, v1::ListResponse* resp) {
  grpc::ClientContext ctx;
  return agent.stub().List(&ctx, req, resp);
}
grpc::Status CallDetach(AgentProcess& agent, const v1::DetachRequest& req,
                        v1::DetachResponse* resp) {
  grpc::ClientContext ctx;
  return agent.stub().Detach(&ctx, req, resp);
}
grpc::Status CallClassify(AgentProcess& agent, const v1::ClassifyRequest& req,
                          v1::ClassifyResponse* resp) {
  grpc::ClientContext ctx;
  return agent.stub().Classify(&ctx, req, resp);
}

// Detaches every probe of `agent`.
grpc::Status DetachAll(AgentProcess& agent, v1::DetachResponse* resp) {
  v1::DetachRequest all;
  all.set_all(true);
  return CallDetach(agent, all, resp);
}

// Nothing of `agent`'s is left in the kernel: no links, no perf events, no config
// entries, no probe listed.
void ExpectNothingLeftIn(AgentProcess& agent, const HeldObjects& baseline) {
  HeldObjects now = CountHeldObjects(agent.pid());
  EXPECT_EQ(now.bpf_links, baseline.bpf_links);
  EXPECT_EQ(now.perf_events, baseline.perf_events);
  EXPECT_EQ(ConfigMapEntries(agent.pid()), 0);
  v1::ListResponse list;
  EXPECT_TRUE(CallList(agent, v1::ListRequest(), &list).ok());
  EXPECT_EQ(list.probes_size(), 0);
}

// `agent`'s /metrics, parsed into `m` (a fatal failure if it does not answer).
void ReadMetrics(AgentProcess& agent, std::map<std::string, double>* m) {
  absl::StatusOr<std::string> body = HttpGet(agent.metrics_port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  *m = ParseMetrics(*body);
}

// An Attach the agent must refuse with `code` and a message containing `message_part`.
struct RefusalCase {
  std::string what;
  std::vector<v1::ProbeSpec> specs;
  grpc::StatusCode code;
  std::string message_part;
};

class AgentTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0) << "integration tests need root (uprobes, BPF)";
    absl::StatusOr<std::unique_ptr<AgentProcess>> a = AgentProcess::Start(
        {"--link-mode=" + GetParam(), absl::StrCat("--max-probes=", kMaxProbes),
         absl::StrCat("--max-specs-per-request=", kMaxSpecs),
         // BadInputsAreRefusedCleanly fills --max-probes on one instruction;
         // the per-site limit has its own test (AgentLimits).
         absl::StrCat("--max-probes-per-site=", kMaxProbes), "--watch-queue-events=64"});
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    absl::StatusOr<std::unique_ptr<Workload>> w = Workload::Start();
    ASSERT_TRUE(w.ok()) << w.status();
    workload_ = std::move(*w);
    baseline_ = CountHeldObjects(agent_->pid());
  }
  void TearDown() override {
    if (agent_) {
      EXPECT_TRUE(agent_->alive()) << agent_->log();
    }
    workload_.reset();
    agent_.reset();
  }

  v1::ProbeSpec Spec(const std::string& symbol, uint64_t offset = 0) {
    v1::ProbeSpec s;
    s.set_binary_path(Workload::Path());
    s.set_symbol(symbol);
    s.set_offset(offset);
    return s;
  }

  grpc::Status Attach(const std::vector<v1::ProbeSpec>& specs, v1::AttachResponse* resp) {
    v1::AttachRequest req;
    for (const auto& s : specs) *req.add_specs() = s;
    return CallAttach(*agent_, req, resp);
  }

  v1::ListResponse List(bool include_inactive = false) {
    v1::ListRequest req;
    req.set_include_inactive(include_inactive);
    v1::ListResponse resp;
    EXPECT_TRUE(CallList(*agent_, req, &resp).ok());
    return resp;
  }

  v1::Probe Get(const std::string& id) {
    v1::ListResponse all = List(true);
    for (const v1::Probe& p : all.probes()) {
      if (p.id() == id) return p;
    }
    ADD_FAILURE() << "no probe " << id;
    return v1::Probe();
  }

  grpc::Status Detach(const std::vector<std::string>& ids) {
    v1::DetachRequest req;
    for (const auto& id : ids) req.add_probe_ids(id);
    v1::DetachResponse resp;
    return CallDetach(*agent_, req, &resp);
  }

  void ExpectNothingLeft() { ExpectNothingLeftIn(*agent_, baseline_); }

  void ExpectStillServing() {
    grpc::ClientContext ctx;
    v1::NodeInfo info;
    EXPECT_TRUE(agent_->stub().GetNodeInfo(&ctx, v1::GetNodeInfoRequest(), &info).ok());
  }

  // The case's Attach is refused as it says, with nothing attached and the agent still
  // serving; the status, for checks of the caller's own.
  grpc::Status ExpectRefused(const RefusalCase& c) {
    SCOPED_TRACE(c.what);
    v1::AttachResponse resp;
    grpc::Status st = Attach(c.specs, &resp);
    EXPECT_EQ(st.error_code(), c.code) << st.error_message();
    EXPECT_NE(st.error_message().find(c.message_part), std::string::npos)
        << st.error_message().substr(0, 2000);
    EXPECT_EQ(resp.probes_size(), 0);
    ExpectNothingLeft();
    ExpectStillServing();
    return st;
  }

  std::unique_ptr<AgentProcess> agent_;
  std::unique_ptr<Workload> workload_;
  HeldObjects baseline_;
};

TEST_P(AgentTest, NodeInfoNamesKernelProfileAndLinkMode) {
  grpc::ClientContext ctx;
  v1::NodeInfo info;
  ASSERT_TRUE(agent_->stub().GetNodeInfo(&ctx, v1::GetNodeInfoRequest(), &info).ok());
  EXPECT_FALSE(info.kernel_release().empty());
  EXPECT_FALSE(info.kernel_profile().empty());
  EXPECT_EQ(info.link_mode(),
            GetParam() == "multi" ? v1::LINK_MODE_UPROBE_MULTI : v1::LINK_MODE_PERF_EVENT);
  EXPECT_EQ(info.probes_attached(), 0u);
}

TEST_P(AgentTest, CountsEveryHitExactly) {
  v1::AttachResponse resp;
  v1::ProbeSpec add = Spec("xol_target_add"), other = Spec("xol_target_other");
  add.set_pid(workload_->pid());
  grpc::Status st = Attach({add, other}, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.probes_size(), 2);
  EXPECT_EQ(resp.link_mode(),
            GetParam() == "multi" ? v1::LINK_MODE_UPROBE_MULTI : v1::LINK_MODE_PERF_EVENT);
  for (const v1::Probe& p : resp.probes()) {
    EXPECT_EQ(p.state(), v1::PROBE_STATE_ATTACHED);
    EXPECT_NE(p.site().placement(), v1::PLACEMENT_REFUSED);
    EXPECT_FALSE(p.site().disassembly().empty());
  }
  ASSERT_TRUE(workload_->Run(1234, 0).ok());
  ASSERT_TRUE(workload_->Run(766, 0).ok());
  EXPECT_EQ(Get(resp.probes(0).id()).hits(), 2000u);
  EXPECT_EQ(Get(resp.probes(1).id()).hits(), 2000u);
  // A second process is not counted by the pid-filtered probe but is by the other.
  {
    absl::StatusOr<std::unique_ptr<Workload>> w2 = Workload::Start();
    ASSERT_TRUE(w2.ok());
    ASSERT_TRUE((*w2)->Run(10, 0).ok());
  }
  EXPECT_EQ(Get(resp.probes(0).id()).hits(), 2000u);
  EXPECT_EQ(Get(resp.probes(1).id()).hits(), 2010u);
  ASSERT_TRUE(Detach({resp.probes(0).id(), resp.probes(1).id()}).ok());
  ExpectNothingLeft();
}

// 32 probes and more go through the kernel's batch map operations (configs written and deleted,
// counters zeroed and read, each in one call): every probe's final count is its own, and a slot
// used again starts from zero. (Two attaches of 32: this fixture's agent takes 40 specs a request.)
TEST_P(AgentTest, BatchedAttachAndDetachKeepEveryCountExact) {
  const std::vector<std::string> sites = {"xol_target_add", "xol_target_other", "xol_target_spin",
                                          "xol_target_fast"};
  std::vector<v1::ProbeSpec> specs;
  for (const std::string& site : sites) {
    for (int i = 0; i < 16; ++i) {  // --max-probes-per-site (16) each
      v1::ProbeSpec s = Spec(site);
      (*s.mutable_labels())["copy"] = absl::StrCat(i);
      specs.push_back(s);
    }
  }
  for (int round = 0; round < 2; ++round) {
    std::vector<std::string> ids;
    for (int half = 0; half < 2; ++half) {
      v1::AttachResponse resp;
      grpc::Status st = Attach(
          std::vector<v1::ProbeSpec>(specs.begin() + 32 * half, specs.begin() + 32 * (half + 1)),
          &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      ASSERT_EQ(resp.probes_size(), 32);
      for (const v1::Probe& p : resp.probes()) ids.push_back(p.id());
    }
    const uint64_t calls = round == 0 ? 500 : 7;
    ASSERT_TRUE(workload_->Run(calls, 0).ok());
    ASSERT_TRUE(Detach(ids).ok());
    for (int i = 0; i < 64; ++i) {
      const v1::Probe p = Get(ids[i]);
      EXPECT_EQ(p.state(), v1::PROBE_STATE_DETACHED);
      // Run() calls xol_target_add and xol_target_other; the others are not called.
      EXPECT_EQ(p.hits(), i < 32 ? calls : 0u) << ids[i] << " in round " << round;
    }
  }
  ExpectNothingLeft();
}

TEST_P(AgentTest, CapturesRegistersIntoWatchedEvents) {
  v1::ProbeSpec add = Spec("xol_target_add");
  add.set_pid(workload_->pid());
  add.add_capture(v1::REGISTER_RDI);
  add.add_capture(v1::REGISTER_RSI);
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({add}, &resp).ok());
  const std::string id = resp.probes(0).id();

  grpc::ClientContext ctx;
  v1::WatchHitsRequest wreq;
  wreq.add_probe_ids(id);
  auto reader = agent_->stub().WatchHits(&ctx, wreq);
  reader->WaitForInitialMetadata();  // the stream is registered
  ASSERT_TRUE(workload_->Run(50, 1000).ok());
  std::set<uint64_t> rdi;
  v1::HitBatch batch;
  while (rdi.size() < 50 && reader->Read(&batch)) {
    EXPECT_EQ(batch.dropped_total(), 0u);
    for (const v1::HitEvent& e : batch.events()) {
      EXPECT_EQ(e.probe_id(), id);
      EXPECT_EQ(e.pid(), static_cast<uint32_t>(workload_->pid()));
      ASSERT_EQ(e.regs_size(), 2);
      for (const v1::RegisterValue& r : e.regs()) {
        if (r.reg() == v1::REGISTER_RDI) rdi.insert(r.value());
        if (r.reg() == v1::REGISTER_RSI) EXPECT_EQ(r.value(), 7u);
      }
    }
  }
  ctx.TryCancel();
  reader->Finish();
  ASSERT_EQ(rdi.size(), 50u);
  EXPECT_EQ(*rdi.begin(), 1000u);
  EXPECT_EQ(*rdi.rbegin(), 1049u);
  v1::Probe p = Get(id);
  EXPECT_EQ(p.hits(), 50u);
  EXPECT_EQ(p.events_emitted(), 50u);
  EXPECT_EQ(p.events_dropped(), 0u);
}

// Issue 12: an event carries only the register slots up to its probe's last captured
// one (arguments first). Three probes on one site: rsi alone (2 slots), rdi with eflags
// (every slot, the largest event), rdi alone (1 slot); each reads back its own values.
TEST_P(AgentTest, EventsOfEverySizeCarryTheirRegisters) {
  std::vector<v1::ProbeSpec> specs(3, Spec("xol_target_add"));
  for (v1::ProbeSpec& s : specs) s.set_pid(workload_->pid());
  specs[0].add_capture(v1::REGISTER_RSI);
  specs[1].add_capture(v1::REGISTER_EFLAGS);
  specs[1].add_capture(v1::REGISTER_RDI);
  specs[2].add_capture(v1::REGISTER_RDI);
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach(specs, &resp).ok());
  grpc::ClientContext ctx;
  v1::WatchHitsRequest wreq;
  auto reader = agent_->stub().WatchHits(&ctx, wreq);
  reader->WaitForInitialMetadata();  // the stream is registered
  ASSERT_TRUE(workload_->Run(20, 1000).ok());
  std::map<std::string, std::set<uint64_t>> rdi;
  std::map<std::string, int> events;
  v1::HitBatch batch;
  int seen = 0;
  while (seen < 60 && reader->Read(&batch)) {
    EXPECT_EQ(batch.dropped_total(), 0u);
    for (const v1::HitEvent& e : batch.events()) {
      ++seen;
      ++events[e.probe_id()];
      if (e.probe_id() == resp.probes(0).id()) {
        ASSERT_EQ(e.regs_size(), 1);
        EXPECT_EQ(e.regs(0).reg(), v1::REGISTER_RSI);
        EXPECT_EQ(e.regs(0).value(), 7u);
      } else {
        const bool with_flags = e.probe_id() == resp.probes(1).id();
        ASSERT_EQ(e.regs_size(), with_flags ? 2 : 1);
        for (const v1::RegisterValue& r : e.regs()) {
          if (r.reg() == v1::REGISTER_RDI) rdi[e.probe_id()].insert(r.value());
          // Bit 1 of RFLAGS is always set; IF (bit 9) is set in user mode.
          if (r.reg() == v1::REGISTER_EFLAGS) EXPECT_EQ(r.value() & 0x202, 0x202u);
        }
      }
    }
  }
  ctx.TryCancel();
  reader->Finish();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(events[resp.probes(i).id()], 20) << i;
  for (int i = 1; i < 3; ++i) {
    const std::set<uint64_t>& got = rdi[resp.probes(i).id()];
    ASSERT_EQ(got.size(), 20u) << i;
    EXPECT_EQ(*got.begin(), 1000u);
    EXPECT_EQ(*got.rbegin(), 1019u);
  }
}

TEST_P(AgentTest, RateLimitBoundsEventsNotCounts) {
  v1::ProbeSpec add = Spec("xol_target_add");
  add.add_capture(v1::REGISTER_RDI);
  add.set_rate_limit_per_sec(20);
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({add}, &resp).ok());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(workload_->Run(5000, 0).ok());
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  v1::Probe p = Get(resp.probes(0).id());
  EXPECT_EQ(p.hits(), 5000u);
  // A bucket of one second's events, refilled at the rate while the loop ran.
  EXPECT_LE(p.events_emitted(), 20u + static_cast<uint64_t>(20 * elapsed) + 1);
  EXPECT_GE(p.events_emitted(), 20u);
  EXPECT_EQ(p.events_emitted() + p.rate_limited() + p.events_dropped(), p.hits());
}

TEST_P(AgentTest, TtlDetachesByItself) {
  v1::ProbeSpec add = Spec("xol_target_add");
  *add.mutable_ttl() = ToDurationProto(absl::Seconds(1));
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({add}, &resp).ok());
  EXPECT_TRUE(resp.probes(0).has_expires_at());
  ASSERT_TRUE(workload_->Run(10, 0).ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (List().probes_size() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  v1::Probe p = Get(resp.probes(0).id());
  EXPECT_EQ(p.state(), v1::PROBE_STATE_EXPIRED);
  EXPECT_EQ(p.hits(), 10u);  // final count kept
  ExpectNothingLeft();
  ASSERT_TRUE(workload_->Run(10, 0).ok());  // still runs, unprobed
}

TEST_P(AgentTest, PartialDetachKeepsTheOthersCountingExactly) {
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({Spec("xol_target_add"), Spec("xol_target_other")}, &resp).ok());
  ASSERT_TRUE(workload_->Run(100, 0).ok());
  ASSERT_TRUE(Detach({resp.probes(0).id()}).ok());
  ASSERT_TRUE(workload_->Run(100, 0).ok());
  EXPECT_EQ(Get(resp.probes(0).id()).state(), v1::PROBE_STATE_DETACHED);
  EXPECT_EQ(Get(resp.probes(0).id()).hits(), 100u);
  EXPECT_EQ(Get(resp.probes(1).id()).hits(), 200u);
  EXPECT_EQ(List().probes_size(), 1);
  EXPECT_EQ(ConfigMapEntries(agent_->pid()), 1);
  ASSERT_TRUE(Detach({resp.probes(1).id()}).ok());
  ExpectNothingLeft();
}

TEST_P(AgentTest, MetricsOverHttp) {
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({Spec("xol_target_add")}, &resp).ok());
  ASSERT_TRUE(workload_->Run(321, 0).ok());
  std::map<std::string, double> m;
  ASSERT_NO_FATAL_FAILURE(ReadMetrics(*agent_, &m));
  const std::string id = resp.probes(0).id();
  EXPECT_EQ(m[absl::StrCat("xolfleet_agent_probe_hits_total{probe_id=\"", id, "\"}")], 321);
  EXPECT_EQ(m["xolfleet_agent_hits_total"], 321);
  EXPECT_EQ(m["xolfleet_agent_attach_duration_seconds_count"], 1);
  EXPECT_EQ(m["xolfleet_agent_attach_requests_total{result=\"ok\"}"], 1);
  EXPECT_EQ(m["xolfleet_agent_ringbuf_dropped_events_total"], 0);
  EXPECT_TRUE(m.count("xolfleet_agent_events_rate_limited_total"));
  std::string placement = ShortName(resp.probes(0).site().placement());  // metric label
  EXPECT_EQ(
      m[absl::StrCat("xolfleet_agent_probes{placement=\"", placement, "\",state=\"ATTACHED\"}")],
      1);
  ASSERT_TRUE(Detach({id}).ok());
  ASSERT_NO_FATAL_FAILURE(ReadMetrics(*agent_, &m));
  EXPECT_EQ(m["xolfleet_agent_detach_duration_seconds_count"], 1);
  EXPECT_EQ(m.count(absl::StrCat("xolfleet_agent_probe_hits_total{probe_id=\"", id, "\"}")), 0u);
}

TEST_P(AgentTest, SlowWatcherLosesEventsButCountsThem) {
  v1::ProbeSpec spin = Spec("xol_target_spin");
  spin.add_capture(v1::REGISTER_RDI);
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({spin}, &resp).ok());
  grpc::ClientContext ctx;
  // Read() blocks while nothing comes: the stream's deadline bounds the test if events
  // went unaccounted (the loop below stops at its own deadline otherwise).
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::WatchHitsRequest wreq;
  wreq.set_max_batch(8);
  auto reader = agent_->stub().WatchHits(&ctx, wreq);
  // The agent sends the initial metadata once the stream's watcher is registered: events
  // before that are not the stream's to receive or count. (A fixed 300 ms sleep here once
  // let a run on a loaded machine spin before the registration and end with events neither
  // received nor counted as dropped.)
  reader->WaitForInitialMetadata();
  absl::StatusOr<uint64_t> calls = workload_->Spin(0.5);
  ASSERT_TRUE(calls.ok());
  const uint64_t hits = Get(resp.probes(0).id()).hits();
  EXPECT_EQ(hits, *calls);
  // Read slowly until every event is either received or counted as dropped.
  uint64_t received = 0, dropped = 0;
  v1::HitBatch batch;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (received + dropped < hits && absl::Now() < deadline && reader->Read(&batch)) {
    received += batch.events_size();
    dropped = batch.dropped_total();
    absl::SleepFor(absl::Milliseconds(1));
  }
  ctx.TryCancel();
  reader->Finish();
  EXPECT_EQ(received + dropped, hits);
  EXPECT_GT(dropped, 0u);  // 64-event queue, a slow reader
}

// A bad spec among good ones: besides the code and message, the error details (a
// google.rpc.Status, decoded here as any gRPC client would) carry a google.rpc.BadRequest
// naming the spec and its field, and only that one.
TEST_P(AgentTest, BadSpecIsNamedInBadRequestDetails) {
  v1::AttachResponse resp;
  grpc::Status st = Attach(
      {Spec("xol_target_add"), Spec("xol_no_such_function"), Spec("xol_target_other")}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_NE(st.error_message().find("1 of 3 specs failed: spec[1]"), std::string::npos)
      << st.error_message();
  google::rpc::Status details;
  ASSERT_TRUE(grpc::ExtractErrorDetails(st, &details).ok());
  EXPECT_EQ(details.code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(details.message(), st.error_message());
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::BadRequest bad;
  ASSERT_TRUE(details.details(0).UnpackTo(&bad));
  ASSERT_EQ(bad.field_violations_size(), 1);
  EXPECT_EQ(bad.field_violations(0).field(), "specs[1].symbol");
  EXPECT_NE(bad.field_violations(0).description().find("xol_no_such_function"), std::string::npos)
      << bad.field_violations(0).description();
  EXPECT_EQ(resp.probes_size(), 0);
  ExpectNothingLeft();
  ExpectStillServing();
}

// Every bad input: the right code, nothing attached, and the agent keeps serving.
TEST_P(AgentTest, BadInputsAreRefusedCleanly) {
  v1::ProbeSpec missing_file = Spec("xol_target_add");
  missing_file.set_binary_path("/nonexistent/xolfleet/binary");
  v1::ProbeSpec relative = Spec("xol_target_add");
  relative.set_binary_path("hit_workload");
  v1::ProbeSpec empty;
  v1::ProbeSpec bad_reg = Spec("xol_target_add");
  bad_reg.add_capture(static_cast<v1::Register>(99));
  v1::ProbeSpec build_id = Spec("xol_target_add");
  build_id.set_build_id("0123456789abcdef0123456789abcdef01234567");
  v1::ProbeSpec bad_build_id = Spec("xol_target_add");
  bad_build_id.set_build_id("not-hex");
  v1::ProbeSpec dead_pid = Spec("xol_target_add");
  dead_pid.set_pid(0x3ffffff0);
  v1::ProbeSpec other_pid = Spec("xol_target_add");
  other_pid.set_pid(getpid());  // the test process does not map the workload
  v1::ProbeSpec past_end = Spec("xol_target_add", 4096);
  std::vector<v1::ProbeSpec> too_many(kMaxSpecs + 1, Spec("xol_target_add"));
  const std::vector<RefusalCase> cases = {
      {"missing binary", {missing_file}, grpc::StatusCode::NOT_FOUND, "no such file"},
      {"missing symbol",
       {Spec("xol_no_such_function")},
       grpc::StatusCode::NOT_FOUND,
       "xol_no_such_function"},
      {"mid-instruction", {Spec("xol_mid_insn", 3)}, grpc::StatusCode::INVALID_ARGUMENT, "boundar"},
      {"past the function", {past_end}, grpc::StatusCode::INVALID_ARGUMENT, ""},
      {"refused instruction",
       {Spec("xol_refused_site", 1)},
       grpc::StatusCode::FAILED_PRECONDITION,
       "refuses"},
      {"hazardous instruction",
       {Spec("xol_syscall_site")},
       grpc::StatusCode::FAILED_PRECONDITION,
       "hazard"},
      {"build-id mismatch", {build_id}, grpc::StatusCode::FAILED_PRECONDITION, "build-id"},
      {"malformed build-id", {bad_build_id}, grpc::StatusCode::INVALID_ARGUMENT, "hex"},
      {"empty spec", {empty}, grpc::StatusCode::INVALID_ARGUMENT, "binary_path"},
      {"relative path", {relative}, grpc::StatusCode::INVALID_ARGUMENT, "absolute"},
      {"bad register", {bad_reg}, grpc::StatusCode::INVALID_ARGUMENT, "register"},
      {"no specs", {}, grpc::StatusCode::INVALID_ARGUMENT, "no specs"},
      {"oversized request", too_many, grpc::StatusCode::INVALID_ARGUMENT, "split"},
      {"dead pid", {dead_pid}, grpc::StatusCode::NOT_FOUND, "does not exist"},
      {"pid not mapping the binary",
       {other_pid},
       grpc::StatusCode::FAILED_PRECONDITION,
       "does not map"},
      {"one bad spec among good ones",
       {Spec("xol_target_add"), Spec("xol_target_other"), Spec("xol_mid_insn", 1)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "spec[2]"},
  };
  for (const RefusalCase& c : cases) ExpectRefused(c);
  // Too many probes: fill up to the limit, then one more batch.
  // (Distinct labels: identical specs in one request are refused.)
  auto distinct = [](v1::ProbeSpec s, int n) {
    std::vector<v1::ProbeSpec> out;
    for (int i = 0; i < n; ++i) {
      (*s.mutable_labels())["n"] = absl::StrCat(i);
      out.push_back(s);
    }
    return out;
  };
  std::vector<v1::ProbeSpec> fill = distinct(Spec("xol_target_add"), kMaxSpecs);
  v1::AttachResponse first;
  ASSERT_TRUE(Attach(fill, &first).ok());
  std::vector<v1::ProbeSpec> more = distinct(Spec("xol_target_other"), kMaxProbes - kMaxSpecs + 1);
  v1::AttachResponse second;
  grpc::Status st = Attach(more, &second);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-probes"), std::string::npos);
  EXPECT_EQ(List().probes_size(), kMaxSpecs);
  ASSERT_TRUE(workload_->Run(3, 0).ok());
  EXPECT_EQ(Get(first.probes(0).id()).hits(), 3u);
  // Unknown ids: NOT_FOUND and nothing detached.
  st = Detach({first.probes(0).id(), "p999999"});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(List().probes_size(), kMaxSpecs);
  v1::DetachResponse dresp;
  ASSERT_TRUE(DetachAll(*agent_, &dresp).ok());
  EXPECT_EQ(dresp.detached_ids_size(), kMaxSpecs);
  ExpectNothingLeft();
  // Unknown probe in WatchHits.
  grpc::ClientContext wctx;
  v1::WatchHitsRequest wreq;
  wreq.add_probe_ids("p424242");
  auto reader = agent_->stub().WatchHits(&wctx, wreq);
  v1::HitBatch b;
  EXPECT_FALSE(reader->Read(&b));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectStillServing();
}

TEST_P(AgentTest, ClassifyIsADryRun) {
  v1::ClassifyRequest req;
  *req.add_sites() = Spec("xol_refused_site", 1);
  *req.add_sites() = Spec("xol_target_add");
  v1::ClassifyResponse resp;
  ASSERT_TRUE(CallClassify(*agent_, req, &resp).ok());
  ASSERT_EQ(resp.sites_size(), 2);
  EXPECT_EQ(resp.sites(0).placement(), v1::PLACEMENT_REFUSED);
  EXPECT_FALSE(resp.sites(0).reason().empty());
  EXPECT_NE(resp.sites(1).placement(), v1::PLACEMENT_REFUSED);
  ExpectNothingLeft();

  v1::ClassifyRequest all;
  all.set_all_functions_of(Workload::Path());
  all.set_profile("linux-6.1");
  v1::ClassifyResponse allresp;
  ASSERT_TRUE(CallClassify(*agent_, all, &allresp).ok());
  EXPECT_EQ(allresp.profile(), "linux-6.1");
  uint64_t total = 0;
  for (const auto& [k, v] : allresp.totals()) total += v;
  EXPECT_EQ(total, static_cast<uint64_t>(allresp.sites_size()));
  EXPECT_GE(allresp.sites_size(), 5);

  v1::ClassifyRequest bad;
  bad.set_all_functions_of(Workload::Path());
  bad.set_profile("linux-2.4");
  EXPECT_EQ(CallClassify(*agent_, bad, &allresp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Issue 9: a probe writes int3 into its page. On data (.rodata, the ELF header) that corrupts the
// program; only code inside a function, or a confirmed raw offset in an executable section, may
// carry a probe. Classify applies the same rule.
TEST_P(AgentTest, OnlyCodeCanCarryAProbe) {
  const uint64_t banner = WorkloadOffset("xol_banner");
  const uint64_t raw_code = WorkloadOffset("xol_raw_code");
  ASSERT_NE(banner, 0u);
  ASSERT_NE(raw_code, 0u);
  absl::StatusOr<std::string> before = workload_->Banner();
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(*before, "banner (GNU coreutils)");
  struct Case {
    std::string what;
    v1::ProbeSpec spec;
    std::string message_part;
  };
  std::vector<Case> cases;
  for (bool confirmed : {false, true}) {
    for (uint64_t off : {uint64_t{0}, uint64_t{0x10}, banner, banner + 1}) {
      v1::ProbeSpec s = Spec("", off);
      s.set_confirm_raw_offset(confirmed);
      cases.push_back({absl::StrCat("raw offset 0x", absl::Hex(off), confirmed ? " confirmed" : ""),
                       s, "not code"});
    }
  }
  cases.push_back({"data symbol", Spec("xol_banner"), "not a function"});
  cases.push_back({"code outside functions, unconfirmed", Spec("", raw_code), "confirm"});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    v1::AttachResponse resp;
    grpc::Status st = Attach({c.spec}, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find(c.message_part), std::string::npos) << st.error_message();
    EXPECT_LT(st.error_message().size(), 1024u);
    v1::ClassifyRequest creq;
    *creq.add_sites() = c.spec;
    v1::ClassifyResponse cresp;
    grpc::Status cst = CallClassify(*agent_, creq, &cresp);
    EXPECT_EQ(cst.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << cst.error_message();
    ExpectNothingLeft();
  }
  // The program's data is intact.
  absl::StatusOr<std::string> after = workload_->Banner();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, "banner (GNU coreutils)");
  // Code outside every function: a confirmed raw offset attaches.
  v1::ProbeSpec confirmed = Spec("", raw_code);
  confirmed.set_confirm_raw_offset(true);
  v1::AttachResponse resp;
  grpc::Status st = Attach({confirmed}, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.probes(0).site().disassembly(), "push rbp");
  // So does a raw offset inside a function, without confirmation.
  v1::AttachResponse in_fn;
  st = Attach({Spec("", WorkloadOffset("xol_target_add"))}, &in_fn);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(in_fn.probes(0).site().symbol(), "xol_target_add");
  ASSERT_TRUE(workload_->Run(4, 0).ok());
  EXPECT_EQ(Get(in_fn.probes(0).id()).hits(), 4u);
  ASSERT_TRUE(Detach({resp.probes(0).id(), in_fn.probes(0).id()}).ok());
  ExpectNothingLeft();
}

// Issue 9: Classify of a file that its owner truncates and rewrites meanwhile.
// The agent reads with pread(), never through a mapping (SIGBUS), so each call
// gets an answer or a precise error and the agent lives.
TEST_P(AgentTest, SurvivesAFileTruncatedWhileClassified) {
  const std::string big =
      Slurp(Runfile("services/agent/xolfleet-agent.private/xolfleet-agent.bin"));
  ASSERT_GT(big.size(), 1u << 20);  // a real, large ELF file
  const std::string path = TmpDir() + "/truncated-" + GetParam();
  ASSERT_TRUE(WriteFile(path, big, 0755));
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> truncations{0};
  std::thread truncator([&] {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    while (fd >= 0 && !stop.load()) {
      // Cut it to one page, then write it back whole.
      if (ftruncate(fd, 4096) != 0) break;
      ++truncations;
      for (size_t off = 4096; off < big.size() && !stop.load();) {
        ssize_t n = pwrite(fd, big.data() + off, std::min<size_t>(1 << 20, big.size() - off), off);
        if (n <= 0) break;
        off += n;
      }
    }
    if (fd >= 0) close(fd);
  });
  StopAndJoin guard{stop, truncator};
  std::map<grpc::StatusCode, int> codes;
  for (int i = 0; i < 40; ++i) {
    v1::ClassifyRequest req;
    v1::ProbeSpec* s = req.add_sites();
    s->set_binary_path(path);
    s->set_symbol("main");
    v1::ClassifyResponse resp;
    grpc::Status st = CallClassify(*agent_, req, &resp);
    ++codes[st.error_code()];
    if (!st.ok()) {
      EXPECT_FALSE(st.error_message().empty());
      EXPECT_TRUE(st.error_code() == grpc::StatusCode::ABORTED ||
                  st.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
                  st.error_code() == grpc::StatusCode::NOT_FOUND)
          << st.error_code() << " " << st.error_message();
    }
    ASSERT_TRUE(agent_->alive()) << agent_->log();
  }
  stop = true;
  truncator.join();
  EXPECT_GT(truncations.load(), 0u);
  for (const auto& [code, n] : codes) {
    std::cout << "classify while truncated: code " << code << " x" << n << "\n";
  }
  ExpectStillServing();
  unlink(path.c_str());
}

// Issue 9: a symlink flipped between the workload and another ELF file. The agent opens the file
// once, checks and reads that descriptor, and attaches through /proc/self/fd/N: an attach that
// succeeds (the workload was the file opened) must count the workload's calls; one that opened the
// other file fails, as that file has no xol_target_add.
TEST_P(AgentTest, AFlippingSymlinkCannotRedirectAnAttach) {
  const std::string dir = TmpDir() + "/flip-" + GetParam();
  mkdir(dir.c_str(), 0755);
  const std::string other = dir + "/other";
  ASSERT_TRUE(WriteFile(other, Slurp("/usr/bin/ls"), 0755));
  const std::string link = dir + "/target";
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    const std::string tmp = dir + "/target.tmp";
    for (uint64_t i = 0; !stop.load(); ++i) {
      unlink(tmp.c_str());
      if (symlink(i % 2 ? other.c_str() : Workload::Path().c_str(), tmp.c_str()) != 0 ||
          rename(tmp.c_str(), link.c_str()) != 0) {
        break;
      }
    }
  });
  StopAndJoin guard{stop, flipper};
  int attached = 0, refused = 0;
  for (int i = 0; i < 100; ++i) {
    v1::ProbeSpec s = Spec("xol_target_add");
    s.set_binary_path(link);
    v1::AttachResponse resp;
    grpc::Status st = Attach({s}, &resp);
    if (!st.ok()) {
      ++refused;
      EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
      continue;
    }
    ++attached;
    ASSERT_TRUE(workload_->Run(3, 0).ok());
    EXPECT_EQ(Get(resp.probes(0).id()).hits(), 3u)
        << "attach " << i << " probed a file other than the one classified";
    ASSERT_TRUE(Detach({resp.probes(0).id()}).ok());
  }
  stop = true;
  flipper.join();
  std::cout << "flipping symlink: " << attached << " attached, " << refused << " refused\n";
  EXPECT_GT(attached, 0);
  ExpectNothingLeft();
}

// Issue 9, small ones: hostile or mistaken inputs each get a precise code and a
// short message (inputs echoed truncated), never INTERNAL or an empty message.
TEST_P(AgentTest, HostileInputsGetPreciseShortErrors) {
  v1::ProbeSpec nul = Spec("xol_target_add");
  nul.set_binary_path(Workload::Path() + std::string("\0/etc/passwd", 12));
  v1::ProbeSpec utf8 = Spec("xol_target_add");
  utf8.set_binary_path("/tmp/\xff\xfe\xfd");
  v1::ProbeSpec huge = Spec(std::string(1 << 20, 'x'));
  v1::ProbeSpec fast = Spec("xol_target_add");
  fast.add_capture(v1::REGISTER_RDI);
  fast.set_rate_limit_per_sec(1000000000u);
  v1::ProbeSpec init = Spec("xol_target_add");
  init.set_pid(1);
  const std::vector<RefusalCase> cases = {
      {"NUL byte in the path", {nul}, grpc::StatusCode::INVALID_ARGUMENT, "NUL"},
      {"invalid UTF-8 path", {utf8}, grpc::StatusCode::INVALID_ARGUMENT, "UTF-8"},
      {"1 MiB symbol", {huge}, grpc::StatusCode::INVALID_ARGUMENT, "longer than"},
      {"rate limit 1e9", {fast}, grpc::StatusCode::INVALID_ARGUMENT, "rate_limit"},
      {"identical specs",
       {Spec("xol_target_add"), Spec("xol_target_other"), Spec("xol_target_add")},
       grpc::StatusCode::INVALID_ARGUMENT,
       "identical to spec[0]"},
  };
  for (const RefusalCase& c : cases) {
    EXPECT_LT(ExpectRefused(c).error_message().size(), 1024u) << c.what;
  }
  // A symbol that does not exist, long: echoed truncated.
  v1::AttachResponse resp;
  grpc::Status st = Attach({Spec(std::string(8000, 'y'))}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_LT(st.error_message().size(), 1024u);
  // pid 1 exists: whatever the answer, it is not "does not exist".
  st = Attach({init}, &resp);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_EQ(st.error_message().find("does not exist"), std::string::npos) << st.error_message();
  // Classify takes the same path checks.
  v1::ClassifyRequest creq;
  *creq.add_sites() = nul;
  v1::ClassifyResponse cresp;
  st = CallClassify(*agent_, creq, &cresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("NUL"), std::string::npos);
  ExpectNothingLeft();
}

// Issue 9, resource limits and start-up. Each starts its own agents.
bool Serves(const std::string& target) {
  auto stub =
      v1::AgentService::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::NodeInfo info;
  // An answer, even a refusal (plaintext TCP callers are insecure:local, which the default
  // authorization grants nothing), is a server on that address.
  grpc::Status st = stub->GetNodeInfo(&ctx, v1::GetNodeInfoRequest(), &info);
  return st.ok() || st.error_code() == grpc::StatusCode::PERMISSION_DENIED;
}

// A process named by pid that exits in the middle of an Attach (the workload exits when the agent
// opens its file, before that open returns): NOT_FOUND naming the process, and nothing attached.
TEST_P(AgentTest, AProcessExitingMidRequestAttachesNothing) {
  signal(SIGPIPE, SIG_IGN);  // the exited workload's stdin
  absl::StatusOr<std::unique_ptr<Workload>> w = Workload::Start();
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->ExitWhenOpened().ok());
  v1::ProbeSpec spec = Spec("xol_target_add");
  spec.set_pid((*w)->pid());
  v1::AttachResponse resp;
  grpc::Status st = Attach({spec}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_NE(
      st.error_message().find(absl::StrCat("process ", (*w)->pid(), " exited during the request")),
      std::string::npos)
      << st.error_message();
  ExpectNothingLeft();
}

// --host-root: host paths are resolved under it and nowhere else; pid specs in the
// process's own root.
TEST(AgentHostRoot, HostPathsResolveUnderTheHostRootOnly) {
  ASSERT_EQ(geteuid(), 0);
  const std::string root = absl::StrCat("/tmp/xolfleet-it-hostroot-", getpid());
  char real[PATH_MAX] = {};
  ASSERT_NE(realpath(Workload::Path().c_str(), real), nullptr);
  ASSERT_EQ(
      system(absl::StrCat("rm -rf ", root, " && mkdir -p ", root, "/opt ", root, "/proc").c_str()),
      0);
  // As in the agent's container, where the host's / (with its /proc) is mounted at /host.
  ASSERT_EQ(system(absl::StrCat("mount --bind /proc ", root, "/proc").c_str()), 0);
  struct Unmount {
    std::string dir;
    ~Unmount() { (void)!system(absl::StrCat("umount -l ", dir, "/proc; rm -rf ", dir).c_str()); }
  } unmount{root};
  // A hard link: the host root's /opt/wl is the workload's very file (inode).
  ASSERT_EQ(link(real, (root + "/opt/wl").c_str()), 0) << strerror(errno);
  ASSERT_EQ(
      symlink((std::string("../../../../../../../..") + real).c_str(), (root + "/opt/up").c_str()),
      0);
  auto agent = AgentProcess::Start({"--host-root=" + root});
  ASSERT_TRUE(agent.ok()) << agent.status();
  auto workload = Workload::Start();
  ASSERT_TRUE(workload.ok()) << workload.status();
  auto attach = [&](const std::string& path, int pid, v1::AttachResponse* resp) {
    v1::AttachRequest req;
    v1::ProbeSpec* s = req.add_specs();
    s->set_binary_path(path);
    s->set_symbol("xol_target_add");
    s->set_pid(pid);
    return CallAttach(**agent, req, resp);
  };
  auto probes = [&] {
    v1::ListResponse list;
    EXPECT_TRUE(CallList(**agent, v1::ListRequest(), &list).ok());
    return list;
  };
  v1::AttachResponse host, by_pid, none;
  grpc::Status st = attach("/opt/wl", 0, &host);
  ASSERT_TRUE(st.ok()) << st.error_message();
  st = attach(real, (*workload)->pid(), &by_pid);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE((*workload)->Run(321, 0).ok());
  v1::ListResponse list = probes();
  ASSERT_EQ(list.probes_size(), 2);
  EXPECT_EQ(list.probes(0).hits(), 321u);
  EXPECT_EQ(list.probes(1).hits(), 321u);
  // The agent's own path of the workload is not under the root; a symlink climbing out of
  // it stays inside; a magic link could leave it and is refused.
  st = attach(real, 0, &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_NE(st.error_message().find("under the host root " + root), std::string::npos)
      << st.error_message();
  st = attach("/opt/up", 0, &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  st = attach(absl::StrCat("/proc/", (*workload)->pid(), "/root", real), 0, &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_NE(st.error_message().find("magic link"), std::string::npos) << st.error_message();
  EXPECT_EQ(probes().probes_size(), 2);
}

TEST(AgentStartUp, SecondAgentOnTheSamePortFails) {
  ASSERT_EQ(geteuid(), 0);
  const std::string listen = absl::StrCat("--listen=127.0.0.1:", FreePort());
  auto first = AgentProcess::Start({listen, "--insecure-plaintext-tcp"});
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = AgentProcess::Start({listen, "--insecure-plaintext-tcp"});
  ASSERT_FALSE(second.ok()) << "a second agent shares the port";
  EXPECT_NE(second.status().message().find("address in use"), absl::string_view::npos)
      << second.status();
  EXPECT_TRUE((*first)->alive());
  EXPECT_TRUE(Serves(listen.substr(strlen("--listen="))));
}

TEST(AgentStartUp, UnixSocketPathIsTakenOnlyWhenStale) {
  ASSERT_EQ(geteuid(), 0);
  // (sun_path holds 107 bytes: TEST_TMPDIR is too deep.)
  const std::string dir = absl::StrCat("/tmp/xolfleet-it-sockets-", getpid());
  mkdir(dir.c_str(), 0700);
  // A regular file is never removed.
  const std::string file = dir + "/regular";
  ASSERT_TRUE(WriteFile(file, "precious", 0644));
  auto on_file = RunAgentExpectingExit({"--listen=", "--unix-socket=" + file});
  ASSERT_TRUE(on_file.ok()) << on_file.status();
  EXPECT_NE(on_file->first, 0);
  EXPECT_NE(on_file->second.find("regular file"), std::string::npos) << on_file->second;
  EXPECT_EQ(Slurp(file), "precious");
  // A live agent's socket is not taken, during or after a second agent's try.
  const std::string live = dir + "/live.sock";
  auto first = AgentProcess::Start({}, live);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = RunAgentExpectingExit({"--listen=", "--unix-socket=" + live});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(second->first, 0);
  EXPECT_NE(second->second.find("in use"), std::string::npos) << second->second;
  EXPECT_TRUE(Serves("unix:" + live));
  EXPECT_TRUE((*first)->alive());
  // A stale socket (nobody accepts on it) is replaced.
  const std::string stale = dir + "/stale.sock";
  {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a = {};
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, stale.c_str(), stale.size() + 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    close(fd);
  }
  auto on_stale = AgentProcess::Start({}, stale);
  ASSERT_TRUE(on_stale.ok()) << on_stale.status();
  // At exit an agent removes the socket it made...
  EXPECT_EQ((*first)->Stop(), 0);
  EXPECT_NE(access(live.c_str(), F_OK), 0);
  // ...and nothing that replaced it meanwhile.
  ASSERT_TRUE(WriteFile(stale, "someone else's", 0644));
  EXPECT_EQ((*on_stale)->Stop(), 0);
  EXPECT_EQ(Slurp(stale), "someone else's");
  on_stale = absl::StatusOr<std::unique_ptr<AgentProcess>>();
  unlink(file.c_str());
  unlink(stale.c_str());
  rmdir(dir.c_str());
}

// With `flag`=2 on the agent: two WatchHits streams open, a third is RESOURCE_EXHAUSTED
// with a message naming every one of `message_parts`, and closing one frees its place.
void CheckTwoWatchStreamsAllowed(const std::string& flag,
                                 const std::vector<std::string>& message_parts) {
  ASSERT_EQ(geteuid(), 0);
  auto agent = AgentProcess::Start({absl::StrCat(flag, "=2")});
  ASSERT_TRUE(agent.ok()) << agent.status();
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::HitBatch>>> streams;
  for (int i = 0; i < 2; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back((*agent)->stub().WatchHits(ctxs.back().get(), v1::WatchHitsRequest()));
    streams.back()->WaitForInitialMetadata();  // registered
  }
  grpc::ClientContext ctx;
  auto third = (*agent)->stub().WatchHits(&ctx, v1::WatchHitsRequest());
  v1::HitBatch b;
  EXPECT_FALSE(third->Read(&b));
  grpc::Status st = third->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  for (const std::string& part : message_parts) {
    EXPECT_NE(st.error_message().find(part), std::string::npos) << st.error_message();
  }
  // Closing one frees its place.
  ctxs[0]->TryCancel();
  streams[0]->Finish();
  grpc::Status again;
  for (int tries = 0; tries < 100; ++tries) {
    grpc::ClientContext c2;
    auto s = (*agent)->stub().WatchHits(&c2, v1::WatchHitsRequest());
    s->WaitForInitialMetadata();
    c2.TryCancel();
    again = s->Finish();
    if (again.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    absl::SleepFor(absl::Milliseconds(50));  // the server notices the cancel
  }
  EXPECT_NE(again.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (size_t i = 1; i < ctxs.size(); ++i) {
    ctxs[i]->TryCancel();
    streams[i]->Finish();
  }
  EXPECT_TRUE((*agent)->alive());
}

TEST(AgentLimits, WatchStreamsAreLimited) {
  CheckTwoWatchStreamsAllowed("--max-watch-streams", {"--max-watch-streams=2"});
}

TEST(AgentLimits, WatchStreamsArePerIdentityLimited) {
  CheckTwoWatchStreamsAllowed("--max-watch-streams-per-identity",
                              {"--max-watch-streams-per-identity", "uid:0"});
}

TEST(AgentLimits, ProbesPerSiteAreLimited) {
  ASSERT_EQ(geteuid(), 0);
  auto agent = AgentProcess::Start({"--max-probes-per-site=3"});
  ASSERT_TRUE(agent.ok()) << agent.status();
  auto attach = [&](int first_label, int count) {
    v1::AttachRequest req;
    for (int i = 0; i < count; ++i) {
      v1::ProbeSpec* spec = req.add_specs();
      spec->set_binary_path(Workload::Path());
      spec->set_symbol("xol_target_add");
      (*spec->mutable_labels())["n"] = absl::StrCat(first_label + i);  // distinct probes
    }
    v1::AttachResponse resp;
    return CallAttach(**agent, req, &resp);
  };
  ASSERT_TRUE(attach(0, 2).ok());
  // Across requests: two attached, two more asked for, one too many; none of them attached.
  grpc::Status st = attach(2, 2);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-probes-per-site"), std::string::npos)
      << st.error_message();
  v1::ListResponse list;
  ASSERT_TRUE(CallList(**agent, v1::ListRequest(), &list).ok());
  EXPECT_EQ(list.probes_size(), 2);
  EXPECT_TRUE(attach(2, 1).ok());
}

// Idle streams cost no queue memory (each once allocated 65,536 events, ~12 MB).
// Every stream is known to be registered once it has received a hit.
TEST(AgentLimits, IdleWatchStreamsDoNotReserveQueues) {
  ASSERT_EQ(geteuid(), 0);
  auto agent =
      AgentProcess::Start({"--watch-queue-events=65536", "--max-watch-streams-per-identity=64"});
  ASSERT_TRUE(agent.ok()) << agent.status();
  auto workload = Workload::Start();
  ASSERT_TRUE(workload.ok()) << workload.status();
  v1::AttachRequest req;
  v1::ProbeSpec* spec = req.add_specs();
  spec->set_binary_path(Workload::Path());
  spec->set_symbol("xol_target_add");
  spec->add_capture(v1::REGISTER_RDI);
  v1::AttachResponse resp;
  grpc::Status st = CallAttach(**agent, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const uint64_t before = (*agent)->RssBytes();
  ASSERT_GT(before, 0u);
  constexpr int kStreams = 16;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::HitBatch>>> streams;
  for (int i = 0; i < kStreams; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back((*agent)->stub().WatchHits(ctxs.back().get(), v1::WatchHitsRequest()));
  }
  std::atomic<bool> stop{false};
  std::thread hits([&] {
    while (!stop.load() && (*workload)->Run(1, 0).ok()) {
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  {
    StopAndJoin guard{stop, hits};
    for (auto& s : streams) {
      v1::HitBatch b;
      ASSERT_TRUE(s->Read(&b));
    }
  }
  const uint64_t after = (*agent)->RssBytes();
  std::cout << "RSS " << (before >> 20) << " MiB -> " << (after >> 20) << " MiB with " << kStreams
            << " streams\n";
  // 16 queues allocated up front would be ~190 MiB.
  EXPECT_LT(after - std::min(after, before), uint64_t{32} << 20);
  for (int i = 0; i < kStreams; ++i) {
    ctxs[i]->TryCancel();
    streams[i]->Finish();
  }
  v1::DetachResponse dresp;
  EXPECT_TRUE(DetachAll(**agent, &dresp).ok());
}

// Issue 12: the agent runs on private copies of its shared libraries (other inodes), so it never
// hits a probe it places on the system's libc, libstdc++, libgrpc or dynamic loader.
TEST_P(AgentTest, MapsNoSystemCopyOfItsLibraries) {
  std::set<uint64_t> system_inodes;
  for (const char* lib :
       {"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libgrpc.so.29",
        "/usr/lib/x86_64-linux-gnu/libprotobuf.so.32"}) {
    struct stat st;
    ASSERT_EQ(stat(lib, &st), 0) << lib;
    system_inodes.insert(st.st_ino);
  }
  int code = 0;
  for (const Mapping& m : Mappings(agent_->pid())) {
    if (m.inode == 0) continue;
    EXPECT_EQ(system_inodes.count(m.inode), 0u) << m.path << " is mapped";
    if (m.perms.find('x') == std::string::npos) continue;
    ++code;
    EXPECT_NE(m.path.find("/xolfleet-agent.private/"), std::string::npos)
        << "code mapped from " << m.path;
  }
  EXPECT_GE(code, 10);  // the program, the loader, libc, libstdc++, gRPC, ...
}

// A probe scoped to a pid gets its breakpoint in that process only (the kernel
// filters: uprobe_multi's pid, perf_event_open's pid), so another process
// calling the probed libc function runs the original instruction.
TEST_P(AgentTest, PidScopedProbeWritesNoBreakpointIntoOtherProcesses) {
  absl::StatusOr<std::unique_ptr<Workload>> other = Workload::Start();
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE(workload_->Libc(1).ok());  // both have libc mapped and running
  ASSERT_TRUE((*other)->Libc(1).ok());
  char real[PATH_MAX];
  ASSERT_NE(realpath("/lib/x86_64-linux-gnu/libc.so.6", real), nullptr);
  v1::ProbeSpec spec;
  spec.set_binary_path("/lib/x86_64-linux-gnu/libc.so.6");
  spec.set_symbol("strverscmp");
  spec.set_pid(workload_->pid());
  v1::AttachResponse resp;
  grpc::Status st = Attach({spec}, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const uint64_t off = resp.probes(0).site().file_offset();
  EXPECT_EQ(ByteInProcess(workload_->pid(), real, off), 0xcc);
  const int other_byte = ByteInProcess((*other)->pid(), real, off);
  EXPECT_NE(other_byte, -1);
  EXPECT_NE(other_byte, 0xcc) << "breakpoint written into an unscoped process";
  ASSERT_TRUE(workload_->Libc(100).ok());
  ASSERT_TRUE((*other)->Libc(100).ok());
  EXPECT_EQ(Get(resp.probes(0).id()).hits(), 100u);
  ASSERT_TRUE(Detach({resp.probes(0).id()}).ok());
  EXPECT_NE(ByteInProcess(workload_->pid(), real, off), 0xcc);
  // The check can fail: unscoped, the probe is in every process.
  spec.clear_pid();
  ASSERT_TRUE(Attach({spec}, &resp).ok());
  EXPECT_EQ(ByteInProcess((*other)->pid(), real, off), 0xcc);
  ASSERT_TRUE(Detach({resp.probes(0).id()}).ok());
  ExpectNothingLeft();
}

TEST_P(AgentTest, StoppingTheAgentDetachesEverything) {
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({Spec("xol_target_add")}, &resp).ok());
  ASSERT_TRUE(workload_->Run(5, 0).ok());
  EXPECT_EQ(agent_->Stop(), 0);
  // The probe is gone with the agent: the workload runs unprobed (no trap, no crash).
  ASSERT_TRUE(workload_->Run(5, 0).ok());
  agent_.reset();
}

// Issue 14: what a probe costs.

v1::NodeInfo NodeInfo(AgentProcess& agent, bool recalibrate = false) {
  v1::GetNodeInfoRequest req;
  req.set_recalibrate(recalibrate);
  v1::NodeInfo info;
  grpc::ClientContext ctx;
  grpc::Status st = agent.stub().GetNodeInfo(&ctx, req, &info);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return info;
}

double Figure(const v1::Calibration& c, v1::Placement p) {
  for (const v1::CalibrationFigure& f : c.figures()) {
    if (f.placement() == p && !f.capture()) return f.ns_per_hit();
  }
  return -1;
}

// The order the kernel dictates, never a timing threshold: on a stock kernel a
// single-stepped hit takes two traps and an emulated one one, so it must cost more.
void ExpectOrderedAsTheKernelSays(const v1::NodeInfo& info) {
  const v1::Calibration& c = info.calibration();
  ASSERT_EQ(c.status(), "ok") << c.DebugString();
  EXPECT_EQ(c.profile(), info.kernel_profile());
  ASSERT_TRUE(absl::StartsWith(info.kernel_profile(), "linux-"))
      << "this test knows the stock kernels' classes; profile " << info.kernel_profile();
  const double emulated = Figure(c, v1::PLACEMENT_EMULATED),
               sstep = Figure(c, v1::PLACEMENT_SINGLE_STEP);
  ASSERT_GE(emulated, 0) << "no EMULATED figure: " << c.DebugString();
  ASSERT_GE(sstep, 0) << "no SINGLE_STEP figure: " << c.DebugString();
  EXPECT_GT(emulated, 0) << c.DebugString();
  EXPECT_GT(sstep, emulated) << c.DebugString();
  // Stock kernels offer no boosted class: nothing was measured for one.
  EXPECT_LT(Figure(c, v1::PLACEMENT_BOOSTED), 0);
  EXPECT_LT(Figure(c, v1::PLACEMENT_BOOSTED_RIPREL), 0);
  for (const v1::CalibrationFigure& f : c.figures()) {
    EXPECT_GT(f.calls(), 0u);
    EXPECT_FALSE(f.site().empty());
  }
}

TEST_P(AgentTest, CalibrationFiguresAreOrderedAsTheKernelSays) {
  v1::NodeInfo info = NodeInfo(*agent_);
  ExpectOrderedAsTheKernelSays(info);
  // Calibrated before serving, on the agent's own helper: nothing left in the kernel, no
  // hit in the node's totals.
  ExpectNothingLeft();
  std::map<std::string, double> m;
  ASSERT_NO_FATAL_FAILURE(ReadMetrics(*agent_, &m));
  EXPECT_EQ(m["xolfleet_agent_hits_total"], 0);
  EXPECT_DOUBLE_EQ(
      m["xolfleet_agent_calibration_seconds_per_hit{placement=\"SINGLE_STEP\",capture=\"false\"}"],
      Figure(info.calibration(), v1::PLACEMENT_SINGLE_STEP) * 1e-9);
  // On demand: measured again, same order, still nothing left.
  v1::NodeInfo again = NodeInfo(*agent_, /*recalibrate=*/true);
  ExpectOrderedAsTheKernelSays(again);
  EXPECT_GT(FromTimestamp(again.calibration().measured_at()),
            FromTimestamp(info.calibration().measured_at()));
  ExpectNothingLeft();
  // Classify reports the node's cost of a hit at each site.
  v1::ClassifyRequest creq;
  *creq.add_sites() = Spec("xol_target_fast");
  v1::ClassifyResponse cresp;
  ASSERT_TRUE(CallClassify(*agent_, creq, &cresp).ok());
  ASSERT_EQ(cresp.sites_size(), 1);
  EXPECT_EQ(cresp.sites(0).placement(), v1::PLACEMENT_EMULATED);
  EXPECT_EQ(cresp.sites(0).expected_ns_per_hit(),
            Figure(again.calibration(), v1::PLACEMENT_EMULATED));
}

TEST_P(AgentTest, DryRunPredictsCostAndAttachesNothing) {
  const double emulated = Figure(NodeInfo(*agent_).calibration(), v1::PLACEMENT_EMULATED);
  v1::AttachRequest req;
  *req.add_specs() = Spec("xol_target_fast");
  req.set_dry_run(true);
  req.set_expected_calls_per_sec(1000);
  v1::AttachResponse resp;
  grpc::Status st = CallAttach(*agent_, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(resp.dry_run());
  ASSERT_EQ(resp.probes_size(), 1);
  EXPECT_TRUE(resp.probes(0).id().empty());
  const v1::ProbeCost& c = resp.probes(0).cost();
  EXPECT_TRUE(c.calibrated());
  EXPECT_EQ(c.cost_placement(), v1::PLACEMENT_EMULATED);
  EXPECT_DOUBLE_EQ(c.cpu_seconds_per_sec(), 1000 * emulated * 1e-9);
  EXPECT_DOUBLE_EQ(resp.predicted_cpu_seconds_per_sec(), c.cpu_seconds_per_sec());
  ExpectNothingLeft();

  // A short counting-only sample measures the call rate instead.
  req.set_expected_calls_per_sec(0);
  *req.mutable_sample_duration() = ToDurationProto(absl::Seconds(1));
  std::atomic<bool> stop{false};
  std::thread spin([&] {
    while (!stop) (void)workload_->Fast(0.2);
  });
  StopAndJoin join{stop, spin};
  absl::SleepFor(absl::Milliseconds(100));
  st = CallAttach(*agent_, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.probes_size(), 1);
  EXPECT_GT(resp.probes(0).cost().hits_per_sec(), 0);
  EXPECT_GT(resp.probes(0).cost().cpu_seconds_per_sec(), 0);
  EXPECT_EQ(List().probes_size(), 0);  // the sample probe is gone again
  EXPECT_EQ(ConfigMapEntries(agent_->pid()), 0);
}

// A hot workload (xol_target_fast as fast as it can: tens of thousands of emulated hits a
// second) against a tiny budget, with each action. `flags` replace the fixture's agent.
class BudgetTest : public AgentTest {
 protected:
  void Restart(std::vector<std::string> flags) {
    agent_.reset();
    flags.push_back("--link-mode=" + GetParam());
    flags.push_back("--budget-window=2s");
    absl::StatusOr<std::unique_ptr<AgentProcess>> a = AgentProcess::Start(flags);
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    baseline_ = CountHeldObjects(agent_->pid());
  }
  // Spins the workload until the probe's budget state is `want` (or 15 s); the calls made.
  uint64_t SpinUntil(const std::string& id, v1::BudgetState want) {
    uint64_t calls = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      absl::StatusOr<uint64_t> n = workload_->Fast(0.5);
      EXPECT_TRUE(n.ok()) << n.status();
      if (!n.ok()) break;
      calls += *n;
      if (Get(id).cost().budget_state() == want) break;
    }
    return calls;
  }
};

TEST_P(BudgetTest, ThrottleLowersCaptureAndKeepsCountingExactly) {
  Restart({"--node-budget=0", "--probe-budget=0.001", "--budget-action=throttle",
           "--budget-throttle-rate=5"});
  v1::ProbeSpec fast = Spec("xol_target_fast");
  fast.set_pid(workload_->pid());
  fast.add_capture(v1::REGISTER_RDI);
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({fast}, &resp).ok());
  const std::string id = resp.probes(0).id();
  uint64_t calls = SpinUntil(id, v1::BUDGET_STATE_THROTTLED);
  v1::Probe p = Get(id);
  ASSERT_EQ(p.cost().budget_state(), v1::BUDGET_STATE_THROTTLED)
      << p.DebugString() << agent_->log();
  EXPECT_EQ(p.state(), v1::PROBE_STATE_ATTACHED);
  EXPECT_TRUE(p.cost().calibrated());
  EXPECT_GT(p.cost().cpu_seconds_per_sec(), 0.001);
  EXPECT_NE(p.cost().budget_message().find("--probe-budget"), std::string::npos);
  EXPECT_EQ(p.hits(), calls);  // counting is never throttled
  EXPECT_EQ(p.events_emitted() + p.rate_limited() + p.events_dropped(), p.hits());
  // From now on at most 5 events a second (plus the one-second burst).
  const uint64_t emitted_before = p.events_emitted();
  const absl::Time start = absl::Now();
  absl::StatusOr<uint64_t> more = workload_->Fast(1.0);
  ASSERT_TRUE(more.ok());
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  p = Get(id);
  EXPECT_EQ(p.hits(), calls + *more);
  EXPECT_LE(p.events_emitted() - emitted_before, 5u + static_cast<uint64_t>(5 * elapsed) + 1);
  EXPECT_EQ(p.events_emitted() + p.rate_limited() + p.events_dropped(), p.hits());
  std::map<std::string, double> m;
  ASSERT_NO_FATAL_FAILURE(ReadMetrics(*agent_, &m));
  EXPECT_EQ(m["xolfleet_agent_budget_actions_total{action=\"throttle\",scope=\"probe\"}"], 1);
  EXPECT_EQ(m["xolfleet_agent_probes_by_budget_state{state=\"THROTTLED\"}"], 1);
  EXPECT_EQ(m["xolfleet_agent_hits_total"], p.hits());
  EXPECT_NE(agent_->log().find("budget: probe " + id), std::string::npos);
  ASSERT_TRUE(Detach({id}).ok());
  ExpectNothingLeft();
}

TEST_P(BudgetTest, DetachKeepsTheFinalCountsExact) {
  Restart({"--node-budget=0", "--probe-budget=0.001", "--budget-action=detach"});
  v1::ProbeSpec fast = Spec("xol_target_fast"), add = Spec("xol_target_add");
  fast.set_pid(workload_->pid());
  add.set_pid(workload_->pid());
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({fast, add}, &resp).ok());
  const std::string id = resp.probes(0).id();
  // A watcher of the probe is told (a budget event in its stream).
  grpc::ClientContext wctx;
  v1::WatchHitsRequest wreq;
  wreq.add_probe_ids(id);
  auto reader = agent_->stub().WatchHits(&wctx, wreq);
  std::vector<v1::BudgetEvent> told;  // the watcher thread's until it sets `heard`
  std::atomic<bool> heard{false};
  std::thread watch([&] {
    v1::HitBatch b;
    while (reader->Read(&b)) {
      for (const v1::BudgetEvent& e : b.budget_events()) told.push_back(e);
      if (!told.empty()) break;
    }
    heard = true;
  });
  absl::SleepFor(absl::Milliseconds(300));  // the stream is registered
  const uint64_t calls = SpinUntil(id, v1::BUDGET_STATE_DETACHED);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!heard && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  wctx.TryCancel();
  watch.join();
  reader->Finish();
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0].probe_id(), id);
  EXPECT_EQ(told[0].state(), v1::BUDGET_STATE_DETACHED);
  EXPECT_FALSE(told[0].node_scope());
  EXPECT_GT(told[0].cpu_seconds_per_sec(), 0.001);
  v1::Probe p = Get(id);
  ASSERT_EQ(p.state(), v1::PROBE_STATE_DETACHED) << p.DebugString() << agent_->log();
  EXPECT_EQ(p.cost().budget_state(), v1::BUDGET_STATE_DETACHED);
  EXPECT_NE(p.status_message().find("over budget"), std::string::npos) << p.status_message();
  EXPECT_GT(p.hits(), 0u);
  EXPECT_LE(p.hits(), calls);
  // The cold probe of the same link group keeps counting exactly (multi: re-linked).
  ASSERT_TRUE(workload_->Run(100, 0).ok());
  EXPECT_EQ(Get(resp.probes(1).id()).hits(), 100u);
  EXPECT_EQ(Get(resp.probes(1).id()).state(), v1::PROBE_STATE_ATTACHED);
  // Nothing lost: the node's total is the detached probe's final count plus the other's.
  std::map<std::string, double> m;
  ASSERT_NO_FATAL_FAILURE(ReadMetrics(*agent_, &m));
  EXPECT_EQ(m["xolfleet_agent_hits_total"], p.hits() + 100);
  EXPECT_EQ(m["xolfleet_agent_budget_actions_total{action=\"detach\",scope=\"probe\"}"], 1);
  // Further calls are not counted anywhere: the probe is gone from the kernel.
  ASSERT_TRUE(workload_->Fast(0.2).ok());
  EXPECT_EQ(Get(id).hits(), p.hits());
  ASSERT_TRUE(Detach({resp.probes(1).id()}).ok());
  ExpectNothingLeft();
}

TEST_P(BudgetTest, NodeBudgetAlertOnlyFlagsTheProbe) {
  Restart({"--node-budget=0.001", "--budget-action=alert"});
  v1::ProbeSpec fast = Spec("xol_target_fast");
  fast.set_pid(workload_->pid());
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({fast}, &resp).ok());
  const std::string id = resp.probes(0).id();
  const uint64_t calls = SpinUntil(id, v1::BUDGET_STATE_ALERTED);
  v1::Probe p = Get(id);
  ASSERT_EQ(p.cost().budget_state(), v1::BUDGET_STATE_ALERTED) << p.DebugString() << agent_->log();
  EXPECT_EQ(p.state(), v1::PROBE_STATE_ATTACHED);
  EXPECT_EQ(p.hits(), calls);
  EXPECT_NE(p.cost().budget_message().find("--node-budget"), std::string::npos);
  v1::NodeInfo info = NodeInfo(*agent_);
  EXPECT_EQ(info.cost().budget_actions(), 1u);
  EXPECT_EQ(info.cost().budget_action(), "alert");
  std::map<std::string, double> m;
  ASSERT_NO_FATAL_FAILURE(ReadMetrics(*agent_, &m));
  EXPECT_EQ(m["xolfleet_agent_budget_actions_total{action=\"alert\",scope=\"node\"}"], 1);
  EXPECT_GT(m["xolfleet_agent_cpu_seconds_per_second"], 0);
  EXPECT_GT(m[absl::StrCat("xolfleet_agent_probe_cpu_seconds_per_second{probe_id=\"", id, "\"}")],
            0);
  ASSERT_TRUE(Detach({id}).ok());
  ExpectNothingLeft();
}

// On the patched kernel the kernel reports the placement it chose per probe; the cost is
// estimated from that word, not the prediction. A fixture stands in for the kernel's
// /sys/kernel/debug/uprobes/placements: it says the emulated-looking site single-steps.
TEST_P(BudgetTest, CostFollowsTheKernelConfirmedPlacement) {
  const std::string placements = absl::StrCat(TmpDir(), "/placements-", GetParam());
  unlink(placements.c_str());
  Restart({"--node-budget=0", "--kernel-placements-path=" + placements});
  const v1::Calibration cal = NodeInfo(*agent_).calibration();
  v1::ProbeSpec fast = Spec("xol_target_fast");
  fast.set_pid(workload_->pid());
  v1::AttachResponse resp;
  ASSERT_TRUE(Attach({fast}, &resp).ok());
  const v1::Probe& attached = resp.probes(0);
  ASSERT_EQ(attached.site().placement(), v1::PLACEMENT_EMULATED);
  struct stat st;
  ASSERT_EQ(stat(Workload::Path().c_str(), &st), 0);
  ASSERT_TRUE(WriteFile(
      placements,
      absl::StrCat(st.st_ino, " 0x", absl::Hex(attached.site().file_offset()), " SINGLE_STEP\n"),
      0644));
  ASSERT_TRUE(workload_->Fast(2.5).ok());
  v1::Probe p = Get(attached.id());
  EXPECT_EQ(p.kernel_placement(), v1::PLACEMENT_SINGLE_STEP);
  EXPECT_TRUE(p.placement_mismatch());
  EXPECT_EQ(p.cost().cost_placement(), v1::PLACEMENT_SINGLE_STEP);
  EXPECT_EQ(p.cost().ns_per_hit(), Figure(cal, v1::PLACEMENT_SINGLE_STEP));
  EXPECT_NEAR(p.cost().cpu_seconds_per_sec(),
              p.cost().hits_per_sec() * Figure(cal, v1::PLACEMENT_SINGLE_STEP) * 1e-9, 1e-12);
  ASSERT_TRUE(Detach({attached.id()}).ok());
  unlink(placements.c_str());
  ExpectNothingLeft();
}

INSTANTIATE_TEST_SUITE_P(LinkModes, BudgetTest, ::testing::Values("multi", "perf"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

INSTANTIATE_TEST_SUITE_P(LinkModes, AgentTest, ::testing::Values("multi", "perf"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
// Large batches (issue 12): AttachWithProgress reports progress before its result, and
// the result is what Attach answers; a compact reply is smaller; one bad spec in the
// batch leaves nothing attached.
class LargeBatchTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Perf-event links cost one perf event (and one breakpoint write per process mapping
  // libc) per probe: fewer of them keep the tier's time bounded.
  int BatchSize() const { return GetParam() == "multi" ? 2000 : 100; }
};

TEST_P(LargeBatchTest, ProgressThenTheSameResultAndACompactReply) {
  ASSERT_EQ(geteuid(), 0) << "integration tests need root (uprobes, BPF)";
  const int n = BatchSize();
  absl::StatusOr<std::unique_ptr<AgentProcess>> a = AgentProcess::Start(
      {"--link-mode=" + GetParam(), "--max-probes=4096", "--max-specs-per-request=4096"});
  ASSERT_TRUE(a.ok()) << a.status();
  AgentProcess& agent = **a;
  const HeldObjects baseline = CountHeldObjects(agent.pid());
  const std::string libc = "/lib/x86_64-linux-gnu/libc.so.6";

  // Function entries of libc the running kernel accepts, one per plain name.
  v1::ClassifyRequest creq;
  creq.set_all_functions_of(libc);
  v1::ClassifyResponse cresp;
  grpc::Status st = CallClassify(agent, creq, &cresp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  std::set<std::string> seen;
  v1::AttachRequest req;
  for (const v1::SitePlacement& s : cresp.sites()) {
    if (req.specs_size() == n) break;
    if (s.placement() == v1::PLACEMENT_REFUSED || s.symbol_offset() != 0 || s.relocated()) continue;
    if (s.symbol().empty() || absl::StrContains(s.symbol(), "@") ||
        !seen.insert(s.symbol()).second) {
      continue;
    }
    v1::ProbeSpec* spec = req.add_specs();
    spec->set_binary_path(libc);
    spec->set_symbol(s.symbol());
  }
  ASSERT_EQ(req.specs_size(), n);

  auto detach_all = [&] {
    v1::DetachResponse dr;
    grpc::Status st = DetachAll(agent, &dr);
    EXPECT_TRUE(st.ok()) << st.error_message();
  };
  // Every page of List (500 probes a page unless asked), each probe once.
  auto list_size = [&] {
    v1::ListRequest req;
    std::set<std::string> ids;
    int listed = 0;
    while (true) {
      v1::ListResponse l;
      grpc::Status st = CallList(agent, req, &l);
      EXPECT_TRUE(st.ok()) << st.error_message();
      if (!st.ok()) break;
      for (const v1::Probe& p : l.probes()) ids.insert(p.id());
      listed += l.probes_size();
      if (l.next_page_token().empty()) break;
      EXPECT_EQ(l.probes_size(), 500);
      req.set_page_token(l.next_page_token());
    }
    EXPECT_EQ(ids.size(), static_cast<size_t>(listed)) << "a probe listed twice";
    return listed;
  };
  // Every message of one AttachWithProgress call, and its status.
  auto stream = [&](const v1::AttachRequest& r, std::vector<v1::AttachProgress>* msgs) {
    grpc::ClientContext ctx;
    auto reader = agent.stub().AttachWithProgress(&ctx, r);
    v1::AttachProgress p;
    while (reader->Read(&p)) msgs->push_back(p);
    return reader->Finish();
  };
  // A reply without what differs between two attaches of the same request.
  auto comparable = [](v1::AttachResponse r) {
    for (v1::Probe& p : *r.mutable_probes()) {
      p.clear_id();
      p.clear_attached_at();
      p.mutable_spec()->mutable_labels()->clear();
    }
    return r;
  };

  std::vector<v1::AttachProgress> msgs;
  st = stream(req, &msgs);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_GE(msgs.size(), 2u);
  ASSERT_TRUE(msgs.back().has_result());
  uint32_t last_done = 0;
  for (size_t i = 0; i + 1 < msgs.size(); ++i) {
    EXPECT_FALSE(msgs[i].has_result());
    EXPECT_EQ(msgs[i].total(), static_cast<uint32_t>(n));
    EXPECT_GE(msgs[i].done(), last_done);
    last_done = msgs[i].done();
  }
  EXPECT_EQ(last_done, static_cast<uint32_t>(n));
  EXPECT_EQ(msgs.back().phase(), v1::ATTACH_PHASE_DONE);
  const v1::AttachResponse streamed = msgs.back().result();
  ASSERT_EQ(streamed.probes_size(), n);
  EXPECT_EQ(list_size(), n);
  detach_all();

  v1::AttachResponse plain;
  st = CallAttach(agent, req, &plain);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(comparable(plain).SerializeAsString(), comparable(streamed).SerializeAsString());
  detach_all();

  v1::AttachRequest compact_req = req;
  compact_req.set_compact(true);
  v1::AttachResponse compact;
  st = CallAttach(agent, compact_req, &compact);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(compact.probes_size(), n);
  for (int i = 0; i < n; ++i) {
    EXPECT_FALSE(compact.probes(i).id().empty());
    EXPECT_EQ(compact.probes(i).state(), v1::PROBE_STATE_ATTACHED);
    EXPECT_EQ(compact.probes(i).site().placement(), plain.probes(i).site().placement());
    EXPECT_EQ(compact.probes(i).site().file_offset(), plain.probes(i).site().file_offset());
    EXPECT_TRUE(compact.probes(i).site().disassembly().empty());
  }
  const size_t full_bytes = plain.ByteSizeLong(), compact_bytes = compact.ByteSizeLong();
  std::cout << "attach reply for " << n << " libc entries (" << GetParam() << "): full "
            << full_bytes << " bytes, compact " << compact_bytes << " bytes" << std::endl;
  EXPECT_LT(compact_bytes * 3, full_bytes);
  detach_all();

  // One bad spec at the end: the stream fails, nothing is attached.
  v1::AttachRequest bad = req;
  bad.mutable_specs(n - 1)->set_symbol("xolfleet_no_such_function");
  msgs.clear();
  st = stream(bad, &msgs);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  for (const v1::AttachProgress& p : msgs) EXPECT_FALSE(p.has_result());
  ExpectNothingLeftIn(agent, baseline);
}

INSTANTIATE_TEST_SUITE_P(LinkModes, LargeBatchTest, ::testing::Values("multi", "perf"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace xolfleet::testing
