// The agent's controller link against a real controller core and gRPC edge (in process,
// over a unix socket), with fake agents: registration, rollouts, reconnects, restarts,
// leftovers and duplicates, hit reporting.
#include "services/agent/controller_link.h"

#include <unistd.h>

#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "services/common/authz.h"
#include "services/common/enum_names.h"
#include "services/common/proto_time.h"
#include "services/controller/fleet.h"
#include "services/controller/service.h"
#include "services/controller/store.h"
#include "tests/fleet/fake_agent_api.h"

namespace xolfleet {
namespace {

using controller::FleetController;
using testing::FakeAgentApi;

bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return pred();
}

v1::ProbeSpec Spec(const std::string& path, const std::string& sym) {
  v1::ProbeSpec s;
  s.set_binary_path(path);
  s.set_symbol(sym);
  return s;
}

size_t CountFleetProbes(FakeAgentApi& api, const std::string& set_id) {
  v1::ListRequest req;
  auto l = api.List(req);
  size_t n = 0;
  for (const auto& p : l->probes()) {
    auto it = p.spec().labels().find(kProbeSetLabel);
    if (it != p.spec().labels().end() && it->second == set_id) ++n;
  }
  return n;
}

class LinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = absl::StrCat("unix:/tmp/xolfleet-link-test-", getpid(), ".sock");
    StartController();
  }
  void TearDown() override {
    links_.clear();
    StopController();
  }

  void StartController() {
    auto store = controller::Store::Open(db_);
    ASSERT_TRUE(store.ok()) << store.status();
    FleetController::Options o;
    o.heartbeat_interval = absl::Milliseconds(50);
    o.heartbeat_timeout = absl::Seconds(2);
    o.tick = absl::Milliseconds(20);
    auto f = FleetController::Create(o, std::move(*store), nullptr);
    ASSERT_TRUE(f.ok()) << f.status();
    fleet_ = std::move(*f);
    fleet_->Start();
    auto a = Authorizer::FromString("agent insecure:local\nadmin insecure:local\n");
    ASSERT_TRUE(a.ok());
    authz_ = std::make_unique<AuthzPolicy>(*a);
    link_svc_ = std::make_unique<controller::AgentLinkService>(fleet_.get(), authz_.get(), nullptr,
                                                               controller::ServiceOptions{});
    grpc::ServerBuilder b;
    b.AddListeningPort(socket_, grpc::InsecureServerCredentials());
    b.RegisterService(link_svc_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void StopController() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    fleet_.reset();
    link_svc_.reset();
  }

  std::unique_ptr<ControllerLink> Link(FakeAgentApi* api, const std::string& target = "") {
    ControllerLink::Options o;
    o.target = target.empty() ? socket_ : target;
    o.tls.insecure_plaintext = true;
    o.min_backoff = absl::Milliseconds(20);
    o.max_backoff = absl::Milliseconds(200);
    o.repair_interval = absl::Milliseconds(200);
    auto l = ControllerLink::Start(o, api);
    EXPECT_TRUE(l.ok()) << l.status();
    return std::move(*l);
  }

  bool AllUp(size_t n) {
    return WaitFor([&] {
      auto a = fleet_->ListAgents({});
      size_t up = 0;
      for (const auto& ag : a->agents()) up += ag.health() == v1::AGENT_HEALTH_UP;
      return up == n;
    });
  }

  v1::Rollout AttachWait(v1::FleetAttachRequest req) {
    req.set_wait(true);
    auto r = fleet_->Attach(req, "test", absl::Now() + absl::Seconds(10));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::Rollout();
  }

  std::string db_ = absl::StrCat("/tmp/xolfleet-link-test-", getpid(), ".db");
  std::string socket_;
  std::unique_ptr<FleetController> fleet_;
  std::unique_ptr<AuthzPolicy> authz_;
  std::unique_ptr<controller::AgentLinkService> link_svc_;
  std::unique_ptr<grpc::Server> server_;
  // Fakes outlive the links that call them (links are cleared first, in TearDown).
  std::vector<std::unique_ptr<FakeAgentApi>> fakes_;
  std::vector<std::unique_ptr<ControllerLink>> links_;
  FakeAgentApi& Fake(const std::string& name, std::map<std::string, std::string> labels = {}) {
    fakes_.push_back(std::make_unique<FakeAgentApi>(name, std::move(labels)));
    return *fakes_.back();
  }
  // A fake agent per name, each with its own link (links_[i] is names[i]'s), all of them UP.
  std::vector<FakeAgentApi*> LinkedFakes(const std::vector<std::string>& names) {
    std::vector<FakeAgentApi*> out;
    for (const std::string& name : names) {
      out.push_back(&Fake(name));
      links_.push_back(Link(out.back()));
    }
    EXPECT_TRUE(AllUp(names.size()));
    return out;
  }
  void ExpectBudgetBreachRollsBack(v1::BudgetState breach);

 public:
  ~LinkTest() override {
    unlink(db_.c_str());
    unlink((db_ + "-wal").c_str());
    unlink((db_ + "-shm").c_str());
  }
};

TEST_F(LinkTest, CanaryRolloutReachesEveryNode) {
  FakeAgentApi& a = Fake("n1", {{"zone", "a"}});
  FakeAgentApi& b = Fake("n2", {{"zone", "a"}});
  FakeAgentApi& c = Fake("n3", {{"zone", "b"}});
  for (auto* api : {&a, &b, &c}) links_.push_back(Link(api));
  ASSERT_TRUE(AllUp(3));
  v1::FleetAttachRequest req;
  (*req.mutable_selector()->mutable_match_labels())["zone"] = "a";
  *req.add_specs() = Spec("/bin/sh", "main");
  *req.add_specs() = Spec("/bin/sh", "other");
  req.mutable_policy()->set_canary_fraction(0.5);
  v1::Rollout r = AttachWait(req);
  EXPECT_EQ(r.state(), v1::ROLLOUT_STATE_COMPLETE) << r.message();
  EXPECT_EQ(r.canary_nodes_size(), 1);
  EXPECT_EQ(r.nodes_attached(), 2u);
  EXPECT_EQ(CountFleetProbes(a, r.set_id()), 2u);
  EXPECT_EQ(CountFleetProbes(b, r.set_id()), 2u);
  EXPECT_EQ(CountFleetProbes(c, r.set_id()), 0u);
  // Desired vs actual per node.
  auto l = fleet_->ListProbes({});
  ASSERT_TRUE(l.ok());
  ASSERT_TRUE(WaitFor([&] {
    auto l = fleet_->ListProbes({});
    int attached = 0;
    for (const auto& p : l->probes()) attached += p.actual() == v1::PROBE_STATE_ATTACHED;
    return attached == 4;
  }));
}

TEST_F(LinkTest, CanaryFailureRollsBack) {
  const std::vector<FakeAgentApi*> fakes = LinkedFakes({"n1", "n2", "n3"});
  ASSERT_FALSE(HasFailure());
  FakeAgentApi &a = *fakes[0], &b = *fakes[1], &c = *fakes[2];
  v1::FleetAttachRequest req;
  req.mutable_selector()->set_all(true);
  *req.add_specs() = Spec("/bin/sh", "main");
  *req.add_specs() = Spec("/nonexistent/xolfleet/binary", "main");
  req.mutable_policy()->set_canary_fraction(0.34);
  v1::Rollout r = AttachWait(req);
  EXPECT_EQ(r.state(), v1::ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_NE(r.message().find("no such file"), std::string::npos) << r.message();
  // Only the canary ever tried, and nothing is left anywhere.
  // Only canaries ever tried (the rollback may beat the second canary to it).
  uint64_t tries = a.attach_calls() + b.attach_calls() + c.attach_calls();
  EXPECT_GE(tries, 1u);
  EXPECT_LE(tries, static_cast<uint64_t>(r.canary_nodes_size()));
  EXPECT_LT(r.canary_nodes_size(), 3);
  EXPECT_EQ(a.active() + b.active() + c.active(), 0u);
}

// Issue 14: a canary whose agent reports a budget breach fails the canary stage, so the
// set is rolled back everywhere; a detached-over-budget set is not attached again.
// Three linked fakes; `breach` is the state the canary's agent reports.
void LinkTest::ExpectBudgetBreachRollsBack(v1::BudgetState breach) {
  const std::vector<FakeAgentApi*> fakes = LinkedFakes({"n1", "n2", "n3"});
  ASSERT_FALSE(HasFailure());
  FleetController* fleet = fleet_.get();
  v1::FleetAttachRequest req;
  req.mutable_selector()->set_all(true);
  *req.add_specs() = Spec("/bin/sh", "main");
  req.mutable_policy()->set_canary_fraction(0.3);  // one of three
  *req.mutable_policy()->mutable_canary_soak() =
      ToDurationProto(absl::Seconds(30));  // the breach comes within it
  // Not waiting: the rollout is seen in its canary stage.
  v1::Rollout r = *fleet->Attach(req, "test", absl::InfinitePast());
  ASSERT_EQ(r.state(), v1::ROLLOUT_STATE_CANARY) << r.message();
  ASSERT_EQ(r.canary_nodes_size(), 1);
  FakeAgentApi* canary = nullptr;
  for (FakeAgentApi* f : fakes) {
    auto info = f->GetNodeInfo();
    if (info->node_name() == r.canary_nodes(0)) canary = f;
  }
  ASSERT_NE(canary, nullptr);
  ASSERT_TRUE(WaitFor([&] { return canary->active() == 1; }));
  // Attached and healthy, but soaking: not rolled out yet.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(fleet->GetRollout(r.set_id())->state(), v1::ROLLOUT_STATE_CANARY);
  canary->ApplyBudgetToAll(breach, "probe over its budget: 3% of a CPU over 10s");
  ASSERT_TRUE(WaitFor([&] {
    return fleet->GetRollout(r.set_id())->state() == v1::ROLLOUT_STATE_ROLLED_BACK;
  })) << fleet->GetRollout(r.set_id())->message();
  const std::string msg = fleet->GetRollout(r.set_id())->message();
  EXPECT_NE(msg.find("over budget"), std::string::npos) << msg;
  EXPECT_NE(msg.find(ShortName(breach)), std::string::npos) << msg;
  // Nothing anywhere; only the canary ever attached, once (never re-attached after the
  // breach).
  ASSERT_TRUE(WaitFor([&] {
    size_t n = 0;
    for (FakeAgentApi* f : fakes) n += f->active();
    return n == 0;
  }));
  uint64_t tries = 0;
  for (FakeAgentApi* f : fakes) tries += f->attach_calls();
  EXPECT_EQ(tries, 1u);
  EXPECT_EQ(canary->attach_calls(), 1u);
}

TEST_F(LinkTest, CanaryDetachedOverBudgetRollsBack) {
  ExpectBudgetBreachRollsBack(v1::BUDGET_STATE_DETACHED);
}

TEST_F(LinkTest, CanaryThrottledOverBudgetRollsBack) {
  ExpectBudgetBreachRollsBack(v1::BUDGET_STATE_THROTTLED);
}

TEST_F(LinkTest, ReconnectAndRestartConvergeWithoutDuplicatesOrLeftovers) {
  const std::vector<FakeAgentApi*> fakes = LinkedFakes({"n1", "n2"});
  ASSERT_FALSE(HasFailure());
  FakeAgentApi &a = *fakes[0], &b = *fakes[1];
  v1::FleetAttachRequest req;
  req.mutable_selector()->set_all(true);
  *req.add_specs() = Spec("/bin/sh", "main");
  v1::Rollout keep = AttachWait(req);
  v1::Rollout gone = AttachWait(req);
  ASSERT_EQ(keep.state(), v1::ROLLOUT_STATE_COMPLETE);
  ASSERT_EQ(gone.state(), v1::ROLLOUT_STATE_COMPLETE);

  // n1's link goes away (agent keeps its probes); meanwhile one set is detached and a
  // duplicate of the other appears locally.
  links_[0].reset();
  ASSERT_TRUE(WaitFor([&] {
    auto ag = fleet_->ListAgents({});
    return ag->agents(0).health() == v1::AGENT_HEALTH_DOWN;
  }));
  auto l = fleet_->ListProbes({});
  bool unknown = false;
  for (const auto& p : l->probes())
    unknown |= p.node_name() == "n1" && p.actual() == v1::PROBE_STATE_UNKNOWN;
  EXPECT_TRUE(unknown);
  v1::FleetDetachRequest d;
  d.add_set_ids(gone.set_id());
  ASSERT_TRUE(fleet_->Detach(d).ok());
  v1::AttachRequest dup;
  auto* s = dup.add_specs();
  *s = Spec("/bin/sh", "main");
  (*s->mutable_labels())[kFleetProbeLabel] = keep.set_id() + "/0";
  (*s->mutable_labels())[kProbeSetLabel] = keep.set_id();
  ASSERT_TRUE(a.Attach(dup).ok());
  EXPECT_EQ(CountFleetProbes(a, keep.set_id()), 2u);
  EXPECT_EQ(CountFleetProbes(a, gone.set_id()), 1u);

  links_[0] = Link(&a);
  ASSERT_TRUE(WaitFor([&] {
    return CountFleetProbes(a, keep.set_id()) == 1 && CountFleetProbes(a, gone.set_id()) == 0;
  }));

  // A restarted agent (fresh, no probes) gets exactly its desired probes back.
  FakeAgentApi& b2 = Fake("n2");
  links_[1] = Link(&b2);
  ASSERT_TRUE(WaitFor([&] { return CountFleetProbes(b2, keep.set_id()) == 1; }));
  EXPECT_EQ(b2.active(), 1u);
}

TEST_F(LinkTest, ControllerRestartKeepsDesiredState) {
  const std::vector<FakeAgentApi*> fakes = LinkedFakes({"n1", "n2"});
  ASSERT_FALSE(HasFailure());
  FakeAgentApi &a = *fakes[0], &b = *fakes[1];
  v1::FleetAttachRequest req;
  req.mutable_selector()->add_node_names("n2");
  *req.add_specs() = Spec("/bin/sh", "main");
  v1::Rollout r = AttachWait(req);
  ASSERT_EQ(r.state(), v1::ROLLOUT_STATE_COMPLETE);
  StopController();
  StartController();
  ASSERT_TRUE(AllUp(2));
  auto got = fleet_->GetRollout(r.set_id());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state(), v1::ROLLOUT_STATE_COMPLETE);
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(CountFleetProbes(b, r.set_id()), 1u);
  EXPECT_EQ(a.active(), 0u);
}

// Several replicas' addresses: the link moves past one that does not answer, and
// after the one it used goes away, back to one that does.
TEST_F(LinkTest, MovesToTheNextControllerAddress) {
  const std::string dead = absl::StrCat("unix:/tmp/xolfleet-link-test-", getpid(), "-none.sock");
  FakeAgentApi& a = Fake("n1");
  links_.push_back(Link(&a, dead + "," + socket_));
  ASSERT_TRUE(AllUp(1));
  StopController();
  StartController();
  // Polled: the link notices the restart on its own schedule, and the restarted controller
  // may list the agent UP before the link has connected again.
  EXPECT_TRUE(WaitFor([&] { return links_[0]->status().connects >= 2u; }))
      << "connects: " << links_[0]->status().connects;
  ASSERT_TRUE(AllUp(1));
}

TEST_F(LinkTest, HitsFlowUpstream) {
  FakeAgentApi& a = Fake("n1");
  links_.push_back(Link(&a));
  ASSERT_TRUE(AllUp(1));
  auto w = fleet_->hits().AddWatcher({}, {}, 16);
  v1::FleetAttachRequest req;
  req.mutable_selector()->set_all(true);
  *req.add_specs() = Spec("/bin/sh", "main");
  v1::Rollout r = AttachWait(req);
  a.AddHitsToAll(41);
  a.AddHitsToAll(1);
  ASSERT_TRUE(WaitFor([&] {
    auto l = fleet_->ListProbes({});
    return l->probes_size() == 1 && l->probes(0).hits() == 42;
  }));
  uint64_t total = 0;
  v1::FleetHitBatch batch;
  while (total < 42 && w->Take(&batch, 100, absl::Seconds(1)) && batch.updates_size()) {
    for (const auto& u : batch.updates()) total += u.hits_delta();
  }
  EXPECT_EQ(total, 42u);
  fleet_->hits().RemoveWatcher(w);
}

TEST_F(LinkTest, LocalProbesAreNeverTouched) {
  FakeAgentApi& a = Fake("n1");
  v1::AttachRequest mine;
  *mine.add_specs() = Spec("/bin/sh", "main");
  ASSERT_TRUE(a.Attach(mine).ok());
  links_.push_back(Link(&a));
  ASSERT_TRUE(AllUp(1));
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(a.active(), 1u);
}

// A probe as the agent lists it; `fleet_probe` (set/index) is its fleet label, if any.
v1::Probe* AddProbe(v1::ListResponse* list, const std::string& id, v1::ProbeState state,
                    const std::string& fleet_probe = "") {
  v1::Probe* p = list->add_probes();
  p->set_id(id);
  p->set_state(state);
  if (!fleet_probe.empty()) (*p->mutable_spec()->mutable_labels())[kFleetProbeLabel] = fleet_probe;
  return p;
}

// A desired set of one /bin/sh spec per symbol.
void AddSet(v1::DesiredState* d, const std::string& set_id, const std::vector<std::string>& syms) {
  auto* s = d->add_sets();
  s->set_set_id(set_id);
  for (const std::string& sym : syms) *s->add_specs() = Spec("/bin/sh", sym);
}

TEST(PlanReconcile, EmptyDesiredDetachesOnlyFleetProbes) {
  v1::ListResponse local;
  AddProbe(&local, "p1", v1::PROBE_STATE_ATTACHED, "ps-1/0");
  AddProbe(&local, "p2", v1::PROBE_STATE_ATTACHED);
  ReconcilePlan plan = PlanReconcile(v1::DesiredState(), local, {});
  ASSERT_EQ(plan.detach.size(), 1u);
  EXPECT_EQ(plan.detach[0], "p1");
  EXPECT_TRUE(plan.attach.empty());
}

TEST(PlanReconcile, PartialSetIsReplacedWhole) {
  v1::DesiredState d;
  AddSet(&d, "ps-1", {"a", "b"});
  v1::ListResponse local;
  AddProbe(&local, "p1", v1::PROBE_STATE_ATTACHED, "ps-1/1");
  ReconcilePlan plan = PlanReconcile(d, local, {});
  EXPECT_EQ(plan.detach, std::vector<std::string>{"p1"});
  ASSERT_EQ(plan.attach.size(), 1u);
  EXPECT_EQ(plan.attach[0].request.specs_size(), 2);
  EXPECT_EQ(plan.attach[0].request.specs(1).labels().at(kFleetProbeLabel), "ps-1/1");
}

TEST(PlanReconcile, ExpiredAndFailedSetsAreNotRetried) {
  v1::DesiredState d;
  for (const char* id : {"ps-exp", "ps-bad"}) AddSet(&d, id, {"a"});
  v1::ListResponse local;
  AddProbe(&local, "p1", v1::PROBE_STATE_EXPIRED, "ps-exp/0");
  ReconcilePlan plan = PlanReconcile(d, local, {{"ps-bad", "NOT_FOUND: no file"}});
  EXPECT_TRUE(plan.attach.empty());
  EXPECT_EQ(plan.status["ps-exp"].state(), v1::SET_STATE_EXPIRED);
  EXPECT_EQ(plan.status["ps-bad"].state(), v1::SET_STATE_FAILED);
}

TEST(PlanReconcile, SetPastItsTtlIsNotReattached) {
  v1::DesiredState d;
  AddSet(&d, "ps-ttl", {"a"});
  absl::Time now = absl::Now();
  ReconcilePlan later =
      PlanReconcile(d, v1::ListResponse(), {}, {{"ps-ttl", now + absl::Seconds(5)}}, now);
  EXPECT_EQ(later.attach.size(), 1u);
  ReconcilePlan over = PlanReconcile(d, v1::ListResponse(), {}, {{"ps-ttl", now}}, now);
  EXPECT_TRUE(over.attach.empty());
  EXPECT_EQ(over.status["ps-ttl"].state(), v1::SET_STATE_EXPIRED);
}

TEST(PlanReconcile, BudgetBreachedSetsAreFlaggedOrFailedAndNotReattached) {
  v1::DesiredState d;
  for (const char* id : {"ps-kept", "ps-gone"}) AddSet(&d, id, {"a"});
  v1::ListResponse local;
  AddProbe(&local, "p1", v1::PROBE_STATE_ATTACHED, "ps-kept/0")
      ->mutable_cost()
      ->set_budget_state(v1::BUDGET_STATE_THROTTLED);
  v1::ListResponse gone;
  AddProbe(&gone, "p2", v1::PROBE_STATE_DETACHED, "ps-gone/0")
      ->mutable_cost()
      ->set_budget_state(v1::BUDGET_STATE_DETACHED);
  // Detached by the link itself: not a breach.
  AddProbe(&gone, "p3", v1::PROBE_STATE_DETACHED, "ps-other/0");
  std::map<std::string, std::string> breached = BudgetBreaches(local, gone);
  ASSERT_EQ(breached.size(), 2u);
  EXPECT_EQ(breached["ps-kept"].rfind("over budget: probe p1 THROTTLED: ", 0), 0u)
      << breached["ps-kept"];
  EXPECT_EQ(breached["ps-gone"].rfind("over budget: probe p2 DETACHED: ", 0), 0u)
      << breached["ps-gone"];
  ReconcilePlan plan = PlanReconcile(d, local, {}, {}, absl::InfinitePast(), breached);
  EXPECT_TRUE(plan.attach.empty());  // the detached one does not come back
  EXPECT_TRUE(plan.detach.empty());  // the throttled one stays until the controller decides
  EXPECT_EQ(plan.status["ps-kept"].state(), v1::SET_STATE_ATTACHED);  // still there: flagged
  EXPECT_TRUE(plan.status["ps-kept"].over_budget());
  EXPECT_NE(plan.status["ps-kept"].status_message().find("over budget"), std::string::npos);
  EXPECT_EQ(plan.status["ps-gone"].state(), v1::SET_STATE_FAILED);
  EXPECT_FALSE(plan.status["ps-gone"].over_budget());
  EXPECT_NE(plan.status["ps-gone"].status_message().find("over budget"), std::string::npos);
}

}  // namespace
}  // namespace xolfleet
