// The controller core with fake agent sessions and a manual clock: rollout state machine,
// heartbeat timeouts, TTLs, validation, restart from the store, hit accounting, gauges, the
// incremental rollout counts against a full recount over random event sequences.
#include "services/controller/fleet.h"

#include <unistd.h>

#include <algorithm>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "services/common/heartbeat_delta.h"
#include "services/common/proto_time.h"
#include "services/controller/fake_agent.h"

namespace xolfleet::controller {
namespace {

class FleetTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void TearDown() override {
    fleet_.reset();
    for (const char* s : {"", "-wal", "-shm"}) unlink((db_ + s).c_str());
  }
  void Open() {
    fleet_.reset();
    auto st = Store::Open(db_);
    ASSERT_TRUE(st.ok());
    FleetController::Options o;
    o.heartbeat_timeout = absl::Seconds(10);
    o.default_canary_timeout = absl::Seconds(30);
    metrics_ = std::make_shared<FleetMetrics>();
    auto f = FleetController::Create(o, std::move(*st), metrics_, [this] { return now_; });
    ASSERT_TRUE(f.ok()) << f.status();
    fleet_ = std::move(*f);
  }
  std::shared_ptr<FakeSession> Connect(const std::string& name,
                                       std::map<std::string, std::string> labels = {}) {
    auto s = std::make_shared<FakeSession>();
    v1::AgentRegister r;
    r.set_node_name(name);
    r.set_kernel_profile("linux-6.18");
    for (auto& [k, v] : labels) (*r.mutable_labels())[k] = v;
    EXPECT_TRUE(fleet_->Register(s, r, "CN=" + name, "test").ok());
    sessions_[name] = s;
    return s;
  }
  // The node reports `state` for every set it was told to run.
  void Report(const std::string& name, v1::SetState state, uint64_t hits = 0,
              const std::string& local_prefix = "p") {
    auto& s = sessions_[name];
    v1::AgentHeartbeat hb;
    for (const auto& ds : s->last_desired.sets()) {
      auto* st = hb.add_sets();
      st->set_set_id(ds.set_id());
      st->set_state(state);
      if (state == v1::SET_STATE_FAILED) st->set_status_message("NOT_FOUND: /missing");
      if (state != v1::SET_STATE_ATTACHED) continue;
      for (int i = 0; i < ds.specs_size(); ++i) {
        auto* p = hb.add_probes();
        p->set_fleet_probe_id(absl::StrCat(ds.set_id(), "/", i));
        p->set_set_id(ds.set_id());
        p->set_local_probe_id(absl::StrCat(local_prefix, i));
        p->set_state(v1::PROBE_STATE_ATTACHED);
        p->set_placement(v1::PLACEMENT_EMULATED);
        p->set_hits(hits);
      }
    }
    ASSERT_TRUE(fleet_->Heartbeat(s.get(), name, hb).ok());
  }
  v1::FleetAttachRequest Req(double canary, uint32_t ttl = 0) {
    v1::FleetAttachRequest r;
    r.mutable_selector()->set_all(true);
    auto* s = r.add_specs();
    s->set_binary_path("/bin/sh");
    s->set_symbol("main");
    if (ttl) *s->mutable_ttl() = ToDurationProto(absl::Seconds(ttl));
    r.mutable_policy()->set_canary_fraction(canary);
    return r;
  }
  v1::Rollout Attach(const v1::FleetAttachRequest& r) {
    auto got = fleet_->Attach(r, "test", absl::InfinitePast());
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : v1::Rollout();
  }
  v1::RolloutState State(const std::string& id) { return fleet_->GetRollout(id)->state(); }

  std::string db_ = absl::StrCat(::testing::TempDir(), "/fleet-", getpid(), ".db");
  absl::Time now_ = absl::FromUnixSeconds(1800000000);
  std::shared_ptr<FleetMetrics> metrics_;
  std::unique_ptr<FleetController> fleet_;
  std::map<std::string, std::shared_ptr<FakeSession>> sessions_;
};

TEST_F(FleetTest, CanaryThenRestThenComplete) {
  for (const char* n : {"a", "b", "c", "d"}) Connect(n);
  v1::Rollout r = Attach(Req(0.25));
  ASSERT_EQ(r.state(), v1::ROLLOUT_STATE_CANARY);
  ASSERT_EQ(r.canary_nodes_size(), 1);
  EXPECT_EQ(r.canary_nodes(0), "a");
  EXPECT_EQ(sessions_["a"]->DesiredIds().size(), 1u);
  EXPECT_TRUE(sessions_["b"]->DesiredIds().empty());
  Report("a", v1::SET_STATE_ATTACHED);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLING);
  for (const char* n : {"b", "c", "d"}) EXPECT_EQ(sessions_[n]->DesiredIds().size(), 1u);
  Report("b", v1::SET_STATE_ATTACHED);
  Report("c", v1::SET_STATE_ATTACHED);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLING);
  Report("d", v1::SET_STATE_ATTACHED);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);
  // A node that registers later gets the set too.
  Connect("e");
  EXPECT_EQ(sessions_["e"]->DesiredIds().size(), 1u);
}

TEST_F(FleetTest, CanaryFailureRollsBackEverywhere) {
  for (const char* n : {"a", "b", "c"}) Connect(n);
  v1::Rollout r = Attach(Req(0.5));
  ASSERT_EQ(r.canary_nodes_size(), 2);
  Report("a", v1::SET_STATE_ATTACHED);
  Report("b", v1::SET_STATE_FAILED);
  v1::Rollout got = *fleet_->GetRollout(r.set_id());
  EXPECT_EQ(got.state(), v1::ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_NE(got.message().find("canary node b failed"), std::string::npos) << got.message();
  for (const char* n : {"a", "b", "c"}) EXPECT_TRUE(sessions_[n]->DesiredIds().empty()) << n;
}

TEST_F(FleetTest, PostCanaryFailureIsDegradedNotRolledBack) {
  for (const char* n : {"a", "b"}) Connect(n);
  v1::Rollout r = Attach(Req(0.5));
  Report("a", v1::SET_STATE_ATTACHED);
  Report("b", v1::SET_STATE_FAILED);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_DEGRADED);
  EXPECT_EQ(sessions_["a"]->DesiredIds().size(), 1u);
}

TEST_F(FleetTest, CanarySoaksBeforeRollingOutAndABreachWithinItRollsBack) {
  for (const char* n : {"a", "b", "c"}) Connect(n);
  v1::FleetAttachRequest req = Req(0.3);
  *req.mutable_policy()->mutable_canary_soak() =
      ToDurationProto(absl::Seconds(60));  // longer than the 30 s timeout
  v1::Rollout r = Attach(req);
  ASSERT_EQ(r.state(), v1::ROLLOUT_STATE_CANARY);
  Report("a", v1::SET_STATE_ATTACHED);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_CANARY);  // attached, soaking
  // Past the 30 s timeout, which the soak extends; every node keeps heartbeating.
  auto advance = [&](int seconds) {
    for (int i = 0; i < seconds; i += 5) {
      now_ += absl::Seconds(5);
      for (const char* n : {"a", "b", "c"}) Report(n, v1::SET_STATE_ATTACHED);
      fleet_->Tick();
    }
  };
  advance(45);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_CANARY);
  advance(20);  // soaked: rolled out (and, every node reporting it, complete)
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);

  // A second set: its canary's agent reports a budget breach while soaking.
  v1::Rollout r2 = Attach(req);
  const std::string canary = r2.canary_nodes(0);
  Report(canary, v1::SET_STATE_ATTACHED);
  EXPECT_EQ(State(r2.set_id()), v1::ROLLOUT_STATE_CANARY);
  v1::AgentHeartbeat hb;
  for (const auto& ds : sessions_[canary]->last_desired.sets()) {
    auto* st = hb.add_sets();
    st->set_set_id(ds.set_id());
    // Throttled, so still attached: the agent flags the set over budget.
    st->set_state(v1::SET_STATE_ATTACHED);
    st->set_over_budget(true);
    st->set_status_message("over budget: probe p7 THROTTLED: probe over its budget");
    auto* p = hb.add_probes();
    p->set_fleet_probe_id(absl::StrCat(ds.set_id(), "/0"));
    p->set_set_id(ds.set_id());
    p->set_local_probe_id("p7");
    p->set_state(v1::PROBE_STATE_ATTACHED);
    p->mutable_cost()->set_budget_state(v1::BUDGET_STATE_THROTTLED);
    p->mutable_cost()->set_cpu_seconds_per_sec(0.03);
  }
  hb.mutable_cost()->set_cpu_seconds_per_sec(0.03);
  hb.mutable_cost()->set_node_budget(0.01);
  ASSERT_TRUE(fleet_->Heartbeat(sessions_[canary].get(), canary, hb).ok());
  v1::Rollout got = *fleet_->GetRollout(r2.set_id());
  EXPECT_EQ(got.state(), v1::ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_NE(got.message().find("over budget"), std::string::npos) << got.message();
  auto agents = fleet_->ListAgents({});
  for (const auto& ag : agents->agents()) {
    if (ag.registration().node_name() != canary) continue;
    EXPECT_GE(ag.budget_breaches(), 1u);
    EXPECT_DOUBLE_EQ(ag.cost().cpu_seconds_per_sec(), 0.03);
  }
  double breaches = -1;
  for (const auto& fam : fleet_->CollectGauges()) {
    if (fam.name != "xolfleet_controller_node_budget_breaches") continue;
    for (const auto& smp : fam.samples) {
      if (smp.labels.at("node") == canary) breaches = smp.value;
    }
  }
  EXPECT_GE(breaches, 1);
  // The first set finished its rollout before the breach: the breach is a flag there, not
  // a failure, and the set still counts as attached on every node.
  v1::Rollout first = *fleet_->GetRollout(r.set_id());
  EXPECT_EQ(first.state(), v1::ROLLOUT_STATE_COMPLETE);
  EXPECT_EQ(first.nodes_attached(), 3u);
  EXPECT_EQ(first.nodes_failed(), 0u);
}

TEST_F(FleetTest, SoakNeedsACanaryStage) {
  Connect("a");
  v1::FleetAttachRequest req = Req(0);
  *req.mutable_policy()->mutable_canary_soak() = ToDurationProto(absl::Seconds(10));
  EXPECT_EQ(fleet_->Attach(req, "t", absl::InfinitePast()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FleetTest, DryRunPredictsPerNodeAndProfileAndAttachesNothing) {
  Connect("a");
  Connect("b");
  // Node a reports calibration figures; b none.
  v1::AgentHeartbeat hb;
  auto* f = hb.mutable_calibration()->add_figures();
  f->set_placement(v1::PLACEMENT_EMULATED);
  f->set_ns_per_hit(500);
  f = hb.mutable_calibration()->add_figures();
  f->set_placement(v1::PLACEMENT_SINGLE_STEP);
  f->set_ns_per_hit(20000);
  hb.mutable_cost()->set_node_budget(0.01);
  hb.mutable_cost()->set_cpu_seconds_per_sec(0.009);
  ASSERT_TRUE(fleet_->Heartbeat(sessions_["a"].get(), "a", hb).ok());
  v1::FleetAttachRequest req = Req(0);
  req.mutable_specs(0)->set_binary_path("/lib/x86_64-linux-gnu/libc.so.6");
  req.mutable_specs(0)->set_symbol("strverscmp");
  req.set_dry_run(true);
  req.set_expected_calls_per_sec(1000);
  auto resp = fleet_->DryRun(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(resp->predictions_size(), 2);
  const v1::NodeCostPrediction& a = resp->predictions(0);
  EXPECT_EQ(a.node_name(), "a");
  EXPECT_TRUE(a.calibrated());
  ASSERT_EQ(a.sites_size(), 1);
  const double ns = a.sites(0).placement() == v1::PLACEMENT_EMULATED ? 500 : 20000;
  EXPECT_EQ(a.sites(0).expected_ns_per_hit(), ns);
  EXPECT_DOUBLE_EQ(a.predicted_cpu_seconds_per_sec(), 1000 * ns * 1e-9);
  EXPECT_TRUE(a.over_budget());  // 0.009 now + at least 0.0005
  EXPECT_FALSE(resp->predictions(1).calibrated());
  EXPECT_EQ(resp->predictions(1).predicted_cpu_seconds_per_sec(), 0);
  ASSERT_EQ(resp->profiles_size(), 1);
  EXPECT_EQ(resp->profiles(0).kernel_profile(), "linux-6.18");
  EXPECT_EQ(resp->profiles(0).nodes(), 2u);
  // Nothing stored or pushed.
  EXPECT_TRUE(sessions_["a"]->DesiredIds().empty());
  EXPECT_EQ(fleet_->ListProbes({})->rollouts_size(), 0);
}

TEST_F(FleetTest, CanaryTimeoutRollsBack) {
  Connect("a");
  Connect("b");
  v1::Rollout r = Attach(Req(0.5));
  now_ += absl::Seconds(31);
  fleet_->Tick();
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_NE(fleet_->GetRollout(r.set_id())->message().find("timed out"), std::string::npos);
}

TEST_F(FleetTest, HeartbeatTimeoutMarksDownProbesUnknownNotDeleted) {
  Connect("a");
  v1::Rollout r = Attach(Req(0));
  Report("a", v1::SET_STATE_ATTACHED);
  ASSERT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);
  now_ += absl::Seconds(11);
  fleet_->Tick();
  auto agents = fleet_->ListAgents({});
  EXPECT_EQ(agents->agents(0).health(), v1::AGENT_HEALTH_DOWN);
  EXPECT_TRUE(sessions_["a"]->closed);
  auto probes = fleet_->ListProbes({});
  ASSERT_EQ(probes->probes_size(), 1);
  EXPECT_EQ(probes->probes(0).actual(), v1::PROBE_STATE_UNKNOWN);
  EXPECT_TRUE(probes->probes(0).desired());
  // Stale session's heartbeats are refused; a new registration brings it back.
  v1::AgentHeartbeat hb;
  EXPECT_FALSE(fleet_->Heartbeat(sessions_["a"].get(), "a", hb).ok());
  Connect("a");
  EXPECT_EQ(sessions_["a"]->DesiredIds().size(), 1u);
}

TEST_F(FleetTest, TtlExpiresFleetWide) {
  Connect("a");
  Connect("b");
  v1::Rollout r = Attach(Req(0, 60));
  EXPECT_EQ(FromDurationProto(sessions_["a"]->last_desired.sets(0).specs(0).ttl()),
            absl::Seconds(60));
  now_ += absl::Seconds(20);
  Connect("c");  // late joiner gets the time left, not the full TTL
  EXPECT_EQ(FromDurationProto(sessions_["c"]->last_desired.sets(0).specs(0).ttl()),
            absl::Seconds(40));
  now_ += absl::Seconds(41);
  for (const char* n : {"a", "b", "c"}) Report(n, v1::SET_STATE_ATTACHED);  // still heartbeating
  fleet_->Tick();
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_EXPIRED);
  for (const char* n : {"a", "b", "c"}) EXPECT_TRUE(sessions_[n]->DesiredIds().empty());
}

TEST_F(FleetTest, BadAttachesChangeNothing) {
  auto none = fleet_->Attach(Req(0), "t", absl::InfinitePast());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  Connect("a");
  v1::FleetAttachRequest named = Req(0);
  named.mutable_selector()->set_all(false);
  named.mutable_selector()->add_node_names("a");
  named.mutable_selector()->add_node_names("ghost");
  EXPECT_EQ(fleet_->Attach(named, "t", absl::InfinitePast()).status().code(),
            absl::StatusCode::kNotFound);
  v1::FleetAttachRequest invalid = Req(0);
  invalid.mutable_specs(0)->set_binary_path("rel");
  EXPECT_EQ(fleet_->Attach(invalid, "t", absl::InfinitePast()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fleet_->ListProbes({})->rollouts_size(), 0);
  EXPECT_TRUE(sessions_["a"]->DesiredIds().empty());
}

TEST_F(FleetTest, DetachIsAllOrNothing) {
  Connect("a");
  v1::Rollout r = Attach(Req(0));
  v1::FleetDetachRequest d;
  d.add_set_ids(r.set_id());
  d.add_set_ids("ps-doesnotexist");
  EXPECT_EQ(fleet_->Detach(d).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(sessions_["a"]->DesiredIds().size(), 1u);
  d.clear_set_ids();
  d.add_set_ids(r.set_id());
  EXPECT_TRUE(fleet_->Detach(d).ok());
  EXPECT_TRUE(sessions_["a"]->DesiredIds().empty());
}

TEST_F(FleetTest, RestartRestoresSetsAndAgents) {
  Connect("a", {{"zone", "x"}});
  Connect("b");
  v1::Rollout r = Attach(Req(0.5));
  Report("a", v1::SET_STATE_ATTACHED);
  Report("b", v1::SET_STATE_ATTACHED);
  ASSERT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);
  sessions_.clear();
  Open();  // a new controller process over the same database
  auto agents = fleet_->ListAgents({});
  ASSERT_EQ(agents->agents_size(), 2);
  EXPECT_EQ(agents->agents(0).health(), v1::AGENT_HEALTH_DOWN);
  EXPECT_EQ(agents->agents(0).registration().labels().at("zone"), "x");
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);
  Connect("a");
  EXPECT_EQ(sessions_["a"]->DesiredIds(), std::vector<std::string>{r.set_id()});
}

TEST_F(FleetTest, RestartDoesNotEndRollingSetsBeforeNodesReturn) {
  Connect("a");
  Connect("b");
  v1::Rollout r = Attach(Req(0));
  Report("a", v1::SET_STATE_ATTACHED);
  ASSERT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLING);  // b has not answered
  sessions_.clear();
  Open();  // controller restart: a and b are known but not reconnected
  fleet_->Tick();
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLING);
  Connect("a");
  Report("a", v1::SET_STATE_ATTACHED);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLING);  // b may still come back
  Connect("b");
  Report("b", v1::SET_STATE_ATTACHED);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);
}

TEST_F(FleetTest, AfterGraceDownNodesDoNotHoldARollout) {
  Connect("a");
  Connect("b");
  v1::Rollout r = Attach(Req(0));
  now_ += absl::Seconds(11);  // past the restart grace
  Report("a", v1::SET_STATE_ATTACHED);
  fleet_->Tick();  // b misses heartbeats: down
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);
}

TEST_F(FleetTest, NoAnswerNoCompletion) {
  Connect("a");
  v1::Rollout r = Attach(Req(0));
  now_ += absl::Seconds(11);
  fleet_->Tick();  // a is down before it ever answered
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLING);
}

TEST_F(FleetTest, HitDeltasSurviveAgentRestart) {
  Connect("a");
  auto w = fleet_->hits().AddWatcher({}, {}, 100);
  Attach(Req(0));
  Report("a", v1::SET_STATE_ATTACHED, 10);
  Report("a", v1::SET_STATE_ATTACHED, 15);
  Report("a", v1::SET_STATE_ATTACHED, 4, "q");  // restarted agent: new local probe id
  v1::FleetHitBatch b;
  ASSERT_TRUE(w->Take(&b, 100, absl::ZeroDuration()));
  ASSERT_EQ(b.updates_size(), 3);
  EXPECT_EQ(b.updates(0).hits_delta(), 10u);
  EXPECT_EQ(b.updates(1).hits_delta(), 5u);
  EXPECT_EQ(b.updates(2).hits_delta(), 4u);
  EXPECT_EQ(b.dropped_total(), 0u);
}

// Delta heartbeats as the agent sends them (heartbeat_delta.h): a state-change heartbeat
// right after a push carries the new set alone and completes its rollout; the hits that
// moved meanwhile arrive with the next periodic one, each counted once; the view equals
// the one full heartbeats give.
TEST_F(FleetTest, StateChangeHeartbeatsCompleteRolloutsAndKeepHitsExact) {
  using Kind = HeartbeatDeltaEncoder::Kind;
  std::map<std::string, HeartbeatDeltaEncoder> enc;
  // The full heartbeat of a node running every set it was told to, with `hits` each.
  auto full = [&](const std::string& name, uint64_t hits) {
    return AttachedHeartbeat(sessions_[name]->last_desired, hits);
  };
  auto send = [&](const std::string& name, uint64_t hits, Kind kind) {
    v1::AgentHeartbeat hb = full(name, hits);
    enc[name].Encode(&hb, kind);
    bool want_full = false;
    EXPECT_TRUE(fleet_->Heartbeat(sessions_[name].get(), name, hb, &want_full).ok());
    EXPECT_FALSE(want_full);
    return hb;
  };
  auto hits_of = [&](const std::string& set_id) {
    std::map<std::string, uint64_t> by_node;
    auto rows = fleet_->ListProbes({});
    EXPECT_TRUE(rows.ok());
    for (const auto& r : rows->probes()) {
      if (r.set_id() == set_id) by_node[r.node_name()] = r.hits();
    }
    return by_node;
  };
  for (const char* n : {"a", "b"}) Connect(n);
  auto w = fleet_->hits().AddWatcher({}, {}, 100);
  v1::Rollout one = Attach(Req(0));
  for (const char* n : {"a", "b"}) send(n, 0, Kind::kStateChange);  // no base yet: full
  ASSERT_EQ(State(one.set_id()), v1::ROLLOUT_STATE_COMPLETE);
  for (const char* n : {"a", "b"}) EXPECT_FALSE(send(n, 3, Kind::kPeriodic).state_change());
  // A second set: right after the push each node sends the new set's probe alone.
  v1::Rollout two = Attach(Req(0));
  ASSERT_EQ(State(two.set_id()), v1::ROLLOUT_STATE_ROLLING);
  v1::AgentHeartbeat sent = send("a", 5, Kind::kStateChange);
  EXPECT_TRUE(sent.delta());
  EXPECT_TRUE(sent.state_change());
  ASSERT_EQ(sent.probes_size(), 1);
  EXPECT_EQ(sent.probes(0).set_id(), two.set_id());
  EXPECT_EQ(State(two.set_id()), v1::ROLLOUT_STATE_ROLLING);
  send("b", 5, Kind::kStateChange);
  EXPECT_EQ(State(two.set_id()), v1::ROLLOUT_STATE_COMPLETE);
  // The first set's hits wait for the periodic heartbeats.
  EXPECT_EQ(hits_of(one.set_id()), (std::map<std::string, uint64_t>{{"a", 3}, {"b", 3}}));
  for (const char* n : {"a", "b"}) send(n, 6, Kind::kPeriodic);
  EXPECT_EQ(hits_of(one.set_id()), (std::map<std::string, uint64_t>{{"a", 6}, {"b", 6}}));
  EXPECT_EQ(hits_of(two.set_id()), (std::map<std::string, uint64_t>{{"a", 6}, {"b", 6}}));
  // Every hit counted once: 6 per probe and node.
  std::map<std::string, uint64_t> counted;
  v1::FleetHitBatch b;
  while (w->Take(&b, 100, absl::ZeroDuration()) && b.updates_size() > 0) {
    for (const auto& u : b.updates()) counted[u.fleet_probe_id()] += u.hits_delta();
  }
  EXPECT_EQ(counted, (std::map<std::string, uint64_t>{{one.set_id() + "/0", 12},
                                                      {two.set_id() + "/0", 12}}));
  // A detach, reported as a state change: removals only, the other set's hits wait.
  v1::FleetDetachRequest d;
  d.add_set_ids(one.set_id());
  ASSERT_TRUE(fleet_->Detach(d).ok());
  sent = send("a", 7, Kind::kStateChange);
  EXPECT_EQ(sent.probes_size(), 0);
  EXPECT_EQ(sent.removed_local_probe_ids_size(), 1);
  EXPECT_EQ(sent.removed_set_ids_size(), 1);
  EXPECT_TRUE(hits_of(one.set_id()).empty());
  EXPECT_EQ(hits_of(two.set_id())["a"], 6u);
  send("a", 7, Kind::kPeriodic);
  EXPECT_EQ(hits_of(two.set_id())["a"], 7u);
}

// A delta the node's stream has no base for changes nothing and asks for a full one, as
// does one after the node registered again (a new stream).
TEST_F(FleetTest, DeltaWithoutBaseAsksForAFullHeartbeat) {
  Connect("a");
  v1::Rollout r = Attach(Req(0));
  v1::AgentHeartbeat delta;
  delta.set_delta(true);
  delta.set_state_change(true);
  auto* st = delta.add_sets();
  st->set_set_id(r.set_id());
  st->set_state(v1::SET_STATE_ATTACHED);
  bool want_full = false;
  ASSERT_TRUE(fleet_->Heartbeat(sessions_["a"].get(), "a", delta, &want_full).ok());
  EXPECT_TRUE(want_full);
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_ROLLING);
  EXPECT_EQ(fleet_->Heartbeat(sessions_["a"].get(), "a", delta).code(),
            absl::StatusCode::kFailedPrecondition);
  Report("a", v1::SET_STATE_ATTACHED);  // full
  EXPECT_EQ(State(r.set_id()), v1::ROLLOUT_STATE_COMPLETE);
  want_full = false;
  ASSERT_TRUE(fleet_->Heartbeat(sessions_["a"].get(), "a", delta, &want_full).ok());
  EXPECT_FALSE(want_full);
  Connect("a");
  ASSERT_TRUE(fleet_->Heartbeat(sessions_["a"].get(), "a", delta, &want_full).ok());
  EXPECT_TRUE(want_full);
}

TEST_F(FleetTest, SlowWatcherDropsAreCounted) {
  Connect("a");
  auto w = fleet_->hits().AddWatcher({}, {}, 2);
  Attach(Req(0));
  for (int i = 1; i <= 5; ++i) Report("a", v1::SET_STATE_ATTACHED, i);
  v1::FleetHitBatch b;
  ASSERT_TRUE(w->Take(&b, 100, absl::ZeroDuration()));
  EXPECT_EQ(b.updates_size(), 2);
  EXPECT_EQ(b.dropped_total(), 3u);
}

TEST_F(FleetTest, GaugesDescribeTheFleet) {
  Connect("a");
  Connect("b");
  Attach(Req(0));
  Report("a", v1::SET_STATE_ATTACHED);
  auto fams = fleet_->CollectGauges();
  std::map<std::string, const GaugeFamily*> by;
  for (const auto& f : fams) by[f.name] = &f;
  ASSERT_TRUE(by.count("xolfleet_controller_agents"));
  double up = 0;
  for (const auto& s : by["xolfleet_controller_agents"]->samples) {
    if (s.labels.at("state") == "up") up += s.value;
  }
  EXPECT_EQ(up, 2);
  int attached = 0, pending = 0;
  for (const auto& s : by["xolfleet_controller_probes"]->samples) {
    if (s.labels.at("state") == "ATTACHED" && s.labels.at("node") == "a" &&
        s.labels.at("placement") == "EMULATED") {
      attached += s.value;
    }
    if (s.labels.at("state") == "PENDING" && s.labels.at("node") == "b") pending += s.value;
  }
  EXPECT_EQ(attached, 1);
  EXPECT_EQ(pending, 1);
}

TEST_F(FleetTest, ForgetOnlyDownAgents) {
  Connect("a");
  EXPECT_EQ(fleet_->ForgetAgent("a").code(), absl::StatusCode::kFailedPrecondition);
  fleet_->Disconnect(sessions_["a"].get(), "a");
  EXPECT_TRUE(fleet_->ForgetAgent("a").ok());
  EXPECT_EQ(fleet_->ListAgents({})->agents_size(), 0);
  EXPECT_EQ(fleet_->ForgetAgent("a").code(), absl::StatusCode::kNotFound);
}

// Every page of ListFleetProbes for `req` with `page_size`, as "node|fleet probe id" in order;
// every page but the last full and with a token; the rollouts on the first page only.
std::vector<std::string> ProbePages(FleetController& f, v1::ListFleetProbesRequest req,
                                    int page_size, size_t* rollouts = nullptr) {
  std::vector<std::string> rows;
  req.set_page_size(page_size);
  for (int pages = 0; pages < 100; ++pages) {
    auto page = f.ListProbes(req);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    if (req.page_token().empty()) {
      if (rollouts != nullptr) *rollouts = page->rollouts_size();
    } else {
      EXPECT_EQ(page->rollouts_size(), 0);
    }
    for (const auto& p : page->probes()) {
      rows.push_back(absl::StrCat(p.node_name(), "|", p.fleet_probe_id()));
    }
    if (page->next_page_token().empty()) return rows;
    EXPECT_EQ(page->probes_size(), page_size);
    req.set_page_token(page->next_page_token());
  }
  ADD_FAILURE() << "more than 100 pages";
  return rows;
}

std::vector<std::string> AgentPages(FleetController& f, v1::ListAgentsRequest req, int page_size) {
  std::vector<std::string> names;
  req.set_page_size(page_size);
  for (int pages = 0; pages < 100; ++pages) {
    auto page = f.ListAgents(req);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    for (const auto& a : page->agents()) names.push_back(a.registration().node_name());
    if (page->next_page_token().empty()) return names;
    EXPECT_EQ(page->agents_size(), page_size);
    req.set_page_token(page->next_page_token());
  }
  ADD_FAILURE() << "more than 100 pages";
  return names;
}

// Pages of 1, 2, 5 and the default size list every probe and agent once, in the order of
// one unpaged answer (node, set, index in the set; node).
TEST_F(FleetTest, ListPagesCoverEveryItemOnceInOrder) {
  for (const char* n : {"c", "a", "b"}) Connect(n, {{"zone", n[0] == 'b' ? "y" : "x"}});
  // 11 probes in one set: index 10 sorts after 9, not between 1 and 2.
  v1::FleetAttachRequest big = Req(0);
  for (int i = 1; i < 11; ++i) *big.add_specs() = big.specs(0);
  Attach(big);
  Attach(Req(0));
  auto all = fleet_->ListProbes({});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->next_page_token().empty());
  ASSERT_EQ(all->probes_size(), 36);
  EXPECT_EQ(all->rollouts_size(), 2);
  std::vector<std::string> expected;
  for (const auto& p : all->probes()) {
    expected.push_back(absl::StrCat(p.node_name(), "|", p.fleet_probe_id()));
  }
  std::vector<std::string> sorted = expected;
  std::sort(sorted.begin(), sorted.end(), [](const std::string& x, const std::string& y) {
    auto key = [](const std::string& r) {
      size_t slash = r.rfind('/');
      return std::make_pair(r.substr(0, slash), std::stoi(r.substr(slash + 1)));
    };
    return key(x) < key(y);
  });
  EXPECT_EQ(expected, sorted);
  for (int size : {1, 2, 5, 0}) {
    size_t rollouts = 0;
    EXPECT_EQ(ProbePages(*fleet_, {}, size, &rollouts), expected) << size;
    EXPECT_EQ(rollouts, 2u);
  }
  v1::ListFleetProbesRequest some;
  some.add_node_names("c");
  some.add_node_names("a");
  std::vector<std::string> ac;
  for (const auto& r : expected) {
    if (r[0] != 'b') ac.push_back(r);
  }
  EXPECT_EQ(ProbePages(*fleet_, some, 3), ac);

  for (int size : {1, 2, 0}) {
    EXPECT_EQ(AgentPages(*fleet_, {}, size), (std::vector<std::string>{"a", "b", "c"}));
  }
  v1::ListAgentsRequest x;
  (*x.mutable_selector()->mutable_match_labels())["zone"] = "x";
  EXPECT_EQ(AgentPages(*fleet_, x, 1), (std::vector<std::string>{"a", "c"}));
}

TEST_F(FleetTest, ListRefusesMalformedAndForeignTokens) {
  for (const char* n : {"a", "b", "c"}) Connect(n);
  Attach(Req(0));
  v1::ListFleetProbesRequest req;
  req.set_page_size(1);
  auto first = fleet_->ListProbes(req);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(first->next_page_token().empty());
  // Malformed.
  v1::ListFleetProbesRequest bad = req;
  bad.set_page_token("%%%");
  absl::Status s = fleet_->ListProbes(bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "malformed page_token")) << s;
  // Other filters.
  v1::ListFleetProbesRequest other = req;
  other.add_node_names("b");
  other.set_page_token(first->next_page_token());
  s = fleet_->ListProbes(other).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "page_token does not belong to this request")) << s;
  // Another call's token.
  v1::ListAgentsRequest agents;
  agents.set_page_size(1);
  auto a = fleet_->ListAgents(agents);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_FALSE(a->next_page_token().empty());
  v1::ListFleetProbesRequest foreign = req;
  foreign.set_page_token(a->next_page_token());
  EXPECT_EQ(fleet_->ListProbes(foreign).status().code(), absl::StatusCode::kInvalidArgument);
  agents.set_page_token(first->next_page_token());
  EXPECT_EQ(fleet_->ListAgents(agents).status().code(), absl::StatusCode::kInvalidArgument);
  agents.set_page_token(a->next_page_token());
  (*agents.mutable_selector()->mutable_match_labels())["zone"] = "x";
  s = fleet_->ListAgents(agents).status();
  EXPECT_TRUE(absl::StartsWith(s.message(), "page_token does not belong to this request")) << s;
  v1::ListAgentsRequest negative;
  negative.set_page_size(-3);
  EXPECT_EQ(fleet_->ListAgents(negative).status().code(), absl::StatusCode::kInvalidArgument);
}

// Nodes and sets added and removed between two pages: an item that stayed is on a later page
// once if it was not listed yet, and not again if it was.
TEST_F(FleetTest, ListPagesSurviveChangesBetweenPages) {
  for (const char* n : {"b", "d", "f", "h"}) Connect(n);
  v1::ListAgentsRequest req;
  req.set_page_size(2);
  auto page = fleet_->ListAgents(req);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->agents_size(), 2);
  EXPECT_EQ(page->agents(1).registration().node_name(), "d");
  Connect("a");  // before the page's end
  Connect("e");  // after it
  fleet_->Disconnect(sessions_["b"].get(), "b");
  ASSERT_TRUE(fleet_->ForgetAgent("b").ok());  // listed already
  fleet_->Disconnect(sessions_["d"].get(), "d");
  ASSERT_TRUE(fleet_->ForgetAgent("d").ok());  // the page's last item
  req.set_page_token(page->next_page_token());
  EXPECT_EQ(AgentPages(*fleet_, req, 1), (std::vector<std::string>{"e", "f", "h"}));

  // Probes: a set detached and another attached between pages.
  v1::Rollout one = Attach(Req(0));
  v1::Rollout two = Attach(Req(0));
  v1::ListFleetProbesRequest preq;
  preq.set_page_size(3);
  auto first = fleet_->ListProbes(preq);
  ASSERT_TRUE(first.ok()) << first.status();
  std::vector<std::string> before = ProbePages(*fleet_, {}, 0);
  ASSERT_EQ(before.size(), 8u);  // a, e, f, h, each with two sets of one probe
  std::vector<std::string> listed;
  for (const auto& p : first->probes()) {
    listed.push_back(absl::StrCat(p.node_name(), "|", p.fleet_probe_id()));
  }
  ASSERT_EQ(listed, std::vector<std::string>(before.begin(), before.begin() + 3));
  v1::FleetDetachRequest d;
  d.add_set_ids(one.set_id());
  ASSERT_TRUE(fleet_->Detach(d).ok());
  v1::Rollout three = Attach(Req(0));
  preq.set_page_token(first->next_page_token());
  std::vector<std::string> rest = ProbePages(*fleet_, preq, 2);
  std::vector<std::string> after = ProbePages(*fleet_, {}, 0);
  for (const auto& r : before) {
    bool stayed = std::count(after.begin(), after.end(), r) == 1;
    bool was_listed = std::count(listed.begin(), listed.end(), r) == 1;
    if (stayed) EXPECT_EQ(std::count(rest.begin(), rest.end(), r), was_listed ? 0 : 1) << r;
  }
  EXPECT_EQ(std::set<std::string>(rest.begin(), rest.end()).size(), rest.size()) << "a repeat";
}

// The incremental rollout counts (kept current as nodes change, so a heartbeat does not
// recount every rollout) never drift from a full recount: long seeded random sequences of
// registrations, heartbeats in every set state (over budget too, stale and missing sets),
// disconnects, heartbeat timeouts, forgotten nodes, new and detached rollouts (canary,
// soak, TTL, label selectors), time passing and controller restarts (the restart grace),
// compared after every step. Tick's own check must never have had to repair a count.
TEST_F(FleetTest, IncrementalRolloutCountsNeverDrift) {
  constexpr int kSteps = 2500;
  const std::vector<std::string> names = {"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"};
  size_t checked = 0, rolling_finished = 0;
  uint64_t deltas_total = 0;
  for (uint32_t seed : {1u, 7u, 42u, 1234u}) {
    SCOPED_TRACE(absl::StrCat("seed ", seed));
    Open();
    sessions_.clear();
    uint64_t repaired_before = fleet_->CheckCountsForTest().repaired;
    std::mt19937 rng(seed);
    auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
    auto label = [&] { return std::string(pick(2) ? "blue" : "green"); };
    std::vector<std::string> set_ids;
    // Heartbeats go out as the agent sends them: through a delta encoder per node, new at
    // each registration, periodic or right after a push (state changes only) at random, and
    // full again when the controller asks.
    std::map<std::string, HeartbeatDeltaEncoder> encoders;
    uint64_t deltas = 0;
    std::string last;
    for (int step = 0; step < kSteps; ++step) {
      const std::string& name = names[pick(names.size())];
      const int what = static_cast<int>(pick(100));
      if (what < 14) {  // (re)register, replacing any earlier session
        last = "register " + name;
        auto s = std::make_shared<FakeSession>();
        v1::AgentRegister r;
        r.set_node_name(name);
        r.set_kernel_profile("linux-6.18");
        (*r.mutable_labels())["color"] = label();
        if (fleet_->Register(s, r, "CN=" + name, "test").ok()) {
          sessions_[name] = s;
          encoders[name].Reset();
        }
      } else if (what < 58) {  // heartbeat: a random state per desired set
        auto it = sessions_.find(name);
        if (it == sessions_.end()) continue;
        last = "heartbeat " + name;
        v1::AgentHeartbeat hb;
        std::vector<std::string> ids = it->second->DesiredIds();
        if (pick(5) == 0 && !set_ids.empty()) ids.push_back(set_ids[pick(set_ids.size())]);
        for (const std::string& id : ids) {
          if (pick(6) == 0) continue;  // not reported (yet)
          auto* st = hb.add_sets();
          st->set_set_id(id);
          static constexpr v1::SetState kStates[] = {v1::SET_STATE_PENDING, v1::SET_STATE_ATTACHED,
                                                     v1::SET_STATE_ATTACHED, v1::SET_STATE_FAILED,
                                                     v1::SET_STATE_EXPIRED};
          st->set_state(kStates[pick(5)]);
          if (st->state() == v1::SET_STATE_FAILED) st->set_status_message("NOT_FOUND: /missing");
          if (st->state() == v1::SET_STATE_ATTACHED && pick(4) == 0) {
            st->set_over_budget(true);
            st->set_status_message("over budget");
          }
          absl::StrAppend(&last, " ", id, "=", st->state(), st->over_budget() ? "!" : "");
        }
        HeartbeatDeltaEncoder& enc = encoders[name];
        enc.Encode(&hb, pick(3) == 0 ? HeartbeatDeltaEncoder::Kind::kStateChange
                                     : HeartbeatDeltaEncoder::Kind::kPeriodic);
        if (hb.delta()) ++deltas;
        // A session replaced by a later registration is refused (FAILED_PRECONDITION).
        bool want_full = false;
        fleet_->Heartbeat(it->second.get(), name, hb, &want_full).IgnoreError();
        if (want_full) enc.Reset();
      } else if (what < 64) {  // the stream ends
        auto it = sessions_.find(name);
        if (it == sessions_.end()) continue;
        last = "disconnect " + name;
        fleet_->Disconnect(it->second.get(), name);
        sessions_.erase(it);
      } else if (what < 67) {
        last = "forget " + name;
        if (fleet_->ForgetAgent(name).ok()) sessions_.erase(name);
      } else if (what < 77) {  // a new rollout
        v1::FleetAttachRequest r = Req(pick(3) * 0.3, pick(4) == 0 ? 1 + pick(20) : 0);
        if (pick(3) == 0) {
          r.mutable_selector()->set_all(false);
          (*r.mutable_selector()->mutable_match_labels())["color"] = label();
        }
        if (pick(4) == 0)
          *r.mutable_policy()->mutable_canary_soak() = ToDurationProto(absl::Seconds(1 + pick(5)));
        if (pick(4) == 0)
          *r.mutable_policy()->mutable_canary_timeout() =
              ToDurationProto(absl::Seconds(2 + pick(10)));
        auto got = fleet_->Attach(r, "test", absl::InfinitePast());
        last = absl::StrCat("attach ", got.ok() ? got->set_id() : got.status().ToString());
        if (got.ok()) set_ids.push_back(got->set_id());
      } else if (what < 80) {
        if (set_ids.empty()) continue;
        const size_t i = pick(set_ids.size());
        last = "detach " + set_ids[i];
        v1::FleetDetachRequest d;
        d.add_set_ids(set_ids[i]);
        if (fleet_->Detach(d).ok()) set_ids.erase(set_ids.begin() + i);
      } else if (what < 99) {  // time passes (heartbeat timeouts, TTLs, canary timeouts)
        now_ += absl::Milliseconds(pick(4000));
        last = "tick";
        fleet_->Tick();
      } else {  // a restart: nodes come back during the grace, or not
        last = "restart";
        Open();
        sessions_.clear();
        encoders.clear();
        repaired_before = fleet_->CheckCountsForTest().repaired;
      }
      FleetController::CountCheck c = fleet_->CheckCountsForTest();
      checked += c.checked;
      ASSERT_TRUE(c.drifted.empty())
          << "step " << step << " (" << last << "): " << absl::StrJoin(c.drifted, "; ");
      ASSERT_EQ(c.repaired, repaired_before) << "step " << step << " (" << last << ")";
    }
    deltas_total += deltas;
    for (const std::string& id : set_ids) {
      auto r = fleet_->GetRollout(id);
      if (r.ok() &&
          (r->state() == v1::ROLLOUT_STATE_COMPLETE || r->state() == v1::ROLLOUT_STATE_DEGRADED)) {
        ++rolling_finished;
      }
    }
  }
  // The sequences exercised the counts: many comparisons, rollouts finished by them.
  RecordProperty("counts_compared", static_cast<int>(checked));
  RecordProperty("rollouts_finished_rolling", static_cast<int>(rolling_finished));
  RecordProperty("delta_heartbeats", static_cast<int>(deltas_total));
  EXPECT_GT(checked, 1000u);
  EXPECT_GT(rolling_finished, 10u);
  EXPECT_GT(deltas_total, 500u);
}

}  // namespace
}  // namespace xolfleet::controller
