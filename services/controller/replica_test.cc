// Controller replicas on a real etcd (a one-member cluster on loopback started by the
// test): one leader, a view of every agent from every replica, rollouts driven by the
// leader whichever replica took the request, failover, and the store gone (writes refused
// with UNAVAILABLE, reads served, leadership dropped; all back when etcd is).
#include <unistd.h>

#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/proto_time.h"
#include "services/controller/etcd_replica.h"
#include "services/controller/etcd_store.h"
#include "services/controller/etcd_test_server.h"
#include "services/controller/fake_agent.h"
#include "services/controller/fleet.h"

namespace xolfleet::controller {
namespace {

struct Replica {
  std::shared_ptr<EtcdCoordinator> coord;
  std::unique_ptr<FleetController> fleet;
};

class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = EtcdTestServer::Create(
        absl::StrCat(::testing::TempDir(), "/etcd-replica-", getpid(), "-", counter_++));
    ASSERT_TRUE(e.ok()) << e.status();
    etcd_ = std::move(*e);
  }
  void TearDown() override {
    replicas_.clear();
    etcd_.reset();
  }
  Replica* Add(const std::string& name) {
    auto st = EtcdStore::Open(etcd_->Url());
    EXPECT_TRUE(st.ok()) << st.status();
    if (!st.ok()) return nullptr;
    EtcdCoordinator::Options co;
    co.replica = name;
    co.lease_ttl = absl::Seconds(3);
    auto r = std::make_unique<Replica>();
    r->coord = EtcdCoordinator::Start((*st)->client(), (*st)->prefix(), co);
    FleetController::Options o;
    o.heartbeat_timeout = absl::Seconds(30);
    o.coordinator = r->coord;
    auto f = FleetController::Create(o, std::move(*st), nullptr);
    EXPECT_TRUE(f.ok()) << f.status();
    if (!f.ok()) return nullptr;
    r->fleet = std::move(*f);
    replicas_.push_back(std::move(r));
    return replicas_.back().get();
  }
  // Syncs and ticks every replica until `done` (at most 60 s; no timing is asserted).
  bool PumpUntil(const std::function<bool()>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      for (auto& r : replicas_) {
        r->fleet->Sync();
        r->fleet->Tick();
      }
      if (done()) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }
  std::shared_ptr<FakeSession> Connect(Replica* r, const std::string& name) {
    auto s = std::make_shared<FakeSession>();
    v1::AgentRegister reg;
    reg.set_node_name(name);
    reg.set_kernel_profile("linux-6.18");
    EXPECT_TRUE(r->fleet->Register(s, reg, "CN=" + name, "test").ok());
    return s;
  }
  // The agent reports every set it was told to run as attached (one probe per spec).
  void ReportAttached(Replica* r, const std::string& name, FakeSession* s) {
    const v1::AgentHeartbeat hb = AttachedHeartbeat(s->Desired());
    EXPECT_TRUE(r->fleet->Heartbeat(s, name, hb).ok());
  }
  static v1::FleetAttachRequest Req(double canary) {
    v1::FleetAttachRequest req;
    req.mutable_selector()->set_all(true);
    auto* spec = req.add_specs();
    spec->set_binary_path("/bin/sh");
    spec->set_symbol("main");
    req.mutable_policy()->set_canary_fraction(canary);
    *req.mutable_policy()->mutable_canary_timeout() = ToDurationProto(absl::Hours(1));
    return req;
  }
  static bool Up(FleetController* f, const std::string& node) {
    auto a = f->ListAgents({});
    if (!a.ok()) return false;
    for (const auto& ag : a->agents()) {
      if (ag.registration().node_name() == node) return ag.health() == v1::AGENT_HEALTH_UP;
    }
    return false;
  }
  int Leaders() {
    int n = 0;
    for (auto& r : replicas_) n += r->fleet->Acting() ? 1 : 0;
    return n;
  }
  static v1::RolloutState State(FleetController* f, const std::string& id) {
    auto r = f->GetRollout(id);
    return r.ok() ? r->state() : v1::ROLLOUT_STATE_UNSPECIFIED;
  }

  static int counter_;
  std::unique_ptr<EtcdTestServer> etcd_;
  std::vector<std::unique_ptr<Replica>> replicas_;
};
int ReplicaTest::counter_ = 0;

TEST_F(ReplicaTest, OneLeaderEveryAgentSeenEverywhereRolloutDrivenByLeader) {
  Replica* a = Add("a");
  Replica* b = Add("b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PumpUntil([&] { return Leaders() == 1; }));
  Replica* leader = a->fleet->Acting() ? a : b;
  Replica* follower = leader == a ? b : a;
  auto s1 = Connect(leader, "n1");
  auto s2 = Connect(follower, "n2");
  ASSERT_TRUE(PumpUntil([&] {
    return Up(a->fleet.get(), "n1") && Up(a->fleet.get(), "n2") && Up(b->fleet.get(), "n1") &&
           Up(b->fleet.get(), "n2");
  }));
  // The follower takes the request; the leader drives the canary on whichever replica
  // holds the canary node's stream (n1: the first up node by name).
  auto r = follower->fleet->Attach(Req(0.5), "test", absl::InfinitePast());
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string id = r->set_id();
  EXPECT_EQ(r->state(), v1::ROLLOUT_STATE_CANARY);
  ASSERT_TRUE(PumpUntil([&] { return s1->Desired().sets_size() == 1; }));
  EXPECT_EQ(s2->Desired().sets_size(), 0);
  ReportAttached(leader, "n1", s1.get());
  ASSERT_TRUE(PumpUntil([&] { return s2->Desired().sets_size() == 1; }));
  EXPECT_EQ(State(leader->fleet.get(), id), v1::ROLLOUT_STATE_ROLLING);
  ReportAttached(follower, "n2", s2.get());
  ASSERT_TRUE(PumpUntil([&] {
    return State(a->fleet.get(), id) == v1::ROLLOUT_STATE_COMPLETE &&
           State(b->fleet.get(), id) == v1::ROLLOUT_STATE_COMPLETE;
  }));
  // Probe states of every node from every replica.
  for (Replica* rep : {a, b}) {
    v1::ListFleetProbesRequest lr;
    auto probes = rep->fleet->ListProbes(lr);
    ASSERT_TRUE(probes.ok());
    int attached = 0;
    for (const auto& p : probes->probes())
      attached += p.actual() == v1::PROBE_STATE_ATTACHED && p.local_copies() == 1 ? 1 : 0;
    EXPECT_EQ(attached, 2);
  }
}

TEST_F(ReplicaTest, LeaderGoneAnotherTakesOverTheRollout) {
  Replica* a = Add("a");
  Replica* b = Add("b");
  ASSERT_TRUE(PumpUntil([&] { return Leaders() == 1; }));
  Replica* leader = a->fleet->Acting() ? a : b;
  Replica* follower = leader == a ? b : a;
  auto s1 = Connect(follower, "n1");
  ASSERT_TRUE(PumpUntil([&] { return Up(leader->fleet.get(), "n1"); }));
  auto r = follower->fleet->Attach(Req(1.0), "test", absl::InfinitePast());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(PumpUntil([&] { return s1->Desired().sets_size() == 1; }));
  // The leader goes away before the canary reports.
  for (auto it = replicas_.begin(); it != replicas_.end(); ++it) {
    if (it->get() == leader) {
      replicas_.erase(it);
      break;
    }
  }
  ASSERT_TRUE(PumpUntil([&] { return follower->fleet->Acting(); }));
  ReportAttached(follower, "n1", s1.get());
  ASSERT_TRUE(PumpUntil(
      [&] { return State(follower->fleet.get(), r->set_id()) == v1::ROLLOUT_STATE_COMPLETE; }));
}

TEST_F(ReplicaTest, StoreGoneWritesRefusedReadsServedThenBack) {
  Replica* a = Add("a");
  ASSERT_TRUE(PumpUntil([&] { return Leaders() == 1; }));
  auto s1 = Connect(a, "n1");
  etcd_->Stop();
  // Leadership lapses on its own: the lease cannot be renewed.
  ASSERT_TRUE(PumpUntil([&] { return !a->fleet->Acting(); }));
  auto r = a->fleet->Attach(Req(0), "test", absl::InfinitePast());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find("desired-state store unavailable"), std::string::npos)
      << r.status();
  EXPECT_TRUE(Up(a->fleet.get(), "n1"));  // reads from memory
  ASSERT_TRUE(etcd_->Start().ok());
  ASSERT_TRUE(PumpUntil([&] { return a->fleet->Acting(); }));
  auto again = a->fleet->Attach(Req(0), "test", absl::InfinitePast());
  ASSERT_TRUE(again.ok()) << again.status();
}

// Hits of an agent connected to replica b reach a WatchFleetHits watcher on replica a,
// exactly, and every replica counts them; an agent moving from b to a loses and doubles
// nothing; b going away is told to a's watcher.
TEST_F(ReplicaTest, HitsOfEveryReplicaMergedIntoEveryWatcher) {
  Replica* a = Add("a");
  Replica* b = Add("b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(PumpUntil([&] { return Leaders() == 1; }));
  auto s2 = Connect(b, "n2");
  ASSERT_TRUE(PumpUntil([&] { return Up(a->fleet.get(), "n2"); }));
  auto w = a->fleet->hits().AddWatcher({}, {}, 4096);
  // Heartbeats of n2 (to b) with cumulative totals of one probe.
  auto beat = [&](Replica* r, AgentSession* s, uint64_t total) {
    v1::AgentHeartbeat hb;
    auto* p = hb.add_probes();
    p->set_fleet_probe_id("ps-1/0");
    p->set_set_id("ps-1");
    p->set_local_probe_id("p1");
    p->set_state(v1::PROBE_STATE_ATTACHED);
    p->set_placement(v1::PLACEMENT_EMULATED);
    p->set_hits(total);
    EXPECT_TRUE(r->fleet->Heartbeat(s, "n2", hb).ok());
  };
  uint64_t seen = 0;
  std::set<std::string> via;
  std::vector<std::string> notices;
  auto drain = [&] {
    v1::FleetHitBatch batch;
    while (w->Take(&batch, 1024, absl::ZeroDuration()) &&
           (batch.updates_size() > 0 || batch.notices_size() > 0)) {
      for (const auto& u : batch.updates()) {
        EXPECT_EQ(u.node_name(), "n2");
        seen += u.hits_delta();
        via.insert(u.replica());
      }
      for (const auto& n : batch.notices()) notices.push_back(n);
      EXPECT_EQ(batch.dropped_total(), 0u);
    }
  };
  beat(b, s2.get(), 100);
  beat(b, s2.get(), 250);
  ASSERT_TRUE(PumpUntil([&] {
    drain();
    return seen >= 250;
  }));
  EXPECT_EQ(seen, 250u);
  EXPECT_EQ(via, std::set<std::string>{"b"});
  // More hits, a stale-looking repeat of the same record: counted once.
  beat(b, s2.get(), 400);
  ASSERT_TRUE(PumpUntil([&] {
    drain();
    return seen >= 400;
  }));
  // From here b counts only what reaches it through a's records.
  auto wb = b->fleet->hits().AddWatcher({}, {}, 4096);
  // The agent moves to a with 50 more hits: a counts them first-hand, from b's marks.
  b->fleet->Disconnect(s2.get(), "n2");
  auto s2a = std::make_shared<FakeSession>();
  v1::AgentRegister reg;
  reg.set_node_name("n2");
  reg.set_kernel_profile("linux-6.18");
  ASSERT_TRUE(a->fleet->Register(s2a, reg, "CN=n2", "test").ok());
  beat(a, s2a.get(), 450);
  drain();
  EXPECT_EQ(seen, 450u);
  EXPECT_EQ(via, (std::set<std::string>{"a", "b"}));
  // b sees the same totals through a's records, without counting anything twice.
  beat(a, s2a.get(), 470);
  uint64_t seen_b = 0;
  ASSERT_TRUE(PumpUntil([&] {
    v1::FleetHitBatch batch;
    while (wb->Take(&batch, 1024, absl::ZeroDuration()) && batch.updates_size() > 0) {
      for (const auto& u : batch.updates()) seen_b += u.hits_delta();
    }
    return seen_b >= 70;
  }));
  EXPECT_EQ(seen_b, 70u);
  b->fleet->hits().RemoveWatcher(wb);
  // b goes: a's watcher is told.
  for (auto it = replicas_.begin(); it != replicas_.end(); ++it) {
    if (it->get() == b) {
      replicas_.erase(it);
      break;
    }
  }
  ASSERT_TRUE(PumpUntil([&] {
    drain();
    for (const auto& n : notices) {
      if (n.find("replica b is gone") != std::string::npos) return true;
    }
    return false;
  })) << absl::StrJoin(notices, " | ");
  drain();
  EXPECT_EQ(seen, 470u);
  a->fleet->hits().RemoveWatcher(w);
}

}  // namespace
}  // namespace xolfleet::controller
