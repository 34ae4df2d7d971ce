#include "services/controller/probe_status.h"

#include <string>

#include "gtest/gtest.h"

namespace xolfleet::controller {
namespace {

class ProbeStatusTest : public ::testing::Test {
 protected:
  ProbeStatusTest() {
    specs_.Add()->set_symbol("f0");
    specs_.Add()->set_symbol("f1");
  }
  // The rows for the node's heartbeat as the controller indexes it.
  google::protobuf::RepeatedPtrField<v1::FleetProbeStatus> Rows(bool desired) {
    index_.Build(hb_);
    google::protobuf::RepeatedPtrField<v1::FleetProbeStatus> rows;
    AppendProbeStatus(NodeReports{name_, up_, profile_, index_}, "ps-1", specs_, desired, &rows);
    return rows;
  }
  // A report of fleet probe ps-1/i (another local copy if there is one already).
  v1::AgentProbeStatus& Report(int i) {
    const std::string fid = "ps-1/" + std::to_string(i);
    int copies = 1;
    for (const auto& p : hb_.probes()) copies += p.fleet_probe_id() == fid;
    v1::AgentProbeStatus& p = *hb_.add_probes();
    p.set_fleet_probe_id(fid);
    p.set_set_id("ps-1");
    p.set_local_probe_id("local-" + std::to_string(i) + "-" + std::to_string(copies));
    return p;
  }
  v1::AgentSetStatus& SetReport(const std::string& set_id) {
    v1::AgentSetStatus& st = *hb_.add_sets();
    st.set_set_id(set_id);
    return st;
  }

  std::string name_ = "n1", profile_ = "patched";
  bool up_ = true;
  v1::AgentHeartbeat hb_;
  HeartbeatIndex index_;
  google::protobuf::RepeatedPtrField<v1::ProbeSpec> specs_;
};

TEST_F(ProbeStatusTest, DesiredButNotReportedIsPending) {
  auto rows = Rows(/*desired=*/true);
  ASSERT_EQ(rows.size(), 2);
  for (int i = 0; i < 2; ++i) {
    const auto& r = rows.Get(i);
    EXPECT_EQ(r.node_name(), "n1");
    EXPECT_EQ(r.set_id(), "ps-1");
    EXPECT_EQ(r.fleet_probe_id(), "ps-1/" + std::to_string(i));
    EXPECT_EQ(r.spec().symbol(), "f" + std::to_string(i));
    EXPECT_TRUE(r.desired());
    EXPECT_EQ(r.kernel_profile(), "patched");
    EXPECT_EQ(r.actual(), v1::PROBE_STATE_PENDING);
    EXPECT_EQ(r.local_copies(), 0u);
    EXPECT_EQ(ProbeGaugeLabels(r, true),
              std::make_pair(std::string("UNKNOWN"), std::string("PENDING")));
  }
}

TEST_F(ProbeStatusTest, NeitherDesiredNorReportedHasNoRow) {
  EXPECT_EQ(Rows(/*desired=*/false).size(), 0);
  SetReport("ps-1").set_state(v1::SET_STATE_ATTACHED);  // a set report is not a probe report
  EXPECT_EQ(Rows(/*desired=*/false).size(), 0);
}

TEST_F(ProbeStatusTest, ReportedButNoLongerDesiredStillShows) {
  Report(1).set_state(v1::PROBE_STATE_ATTACHED);
  auto rows = Rows(/*desired=*/false);
  ASSERT_EQ(rows.size(), 1);
  EXPECT_EQ(rows.Get(0).fleet_probe_id(), "ps-1/1");
  EXPECT_FALSE(rows.Get(0).desired());
  EXPECT_EQ(rows.Get(0).actual(), v1::PROBE_STATE_ATTACHED);
}

TEST_F(ProbeStatusTest, FailedSetMarksUnreportedProbesFailed) {
  v1::AgentSetStatus& set = SetReport("ps-1");
  set.set_state(v1::SET_STATE_FAILED);
  set.set_status_message("no such symbol");
  Report(0).set_state(v1::PROBE_STATE_ATTACHED);  // a reported probe keeps its own state
  auto rows = Rows(/*desired=*/true);
  ASSERT_EQ(rows.size(), 2);
  EXPECT_EQ(rows.Get(0).actual(), v1::PROBE_STATE_ATTACHED);
  EXPECT_EQ(rows.Get(0).status_message(), "");
  EXPECT_EQ(rows.Get(1).actual(), v1::PROBE_STATE_FAILED);
  EXPECT_EQ(rows.Get(1).status_message(), "no such symbol");
  EXPECT_EQ(ProbeGaugeLabels(rows.Get(1), true),
            std::make_pair(std::string("UNKNOWN"), std::string("FAILED")));
}

TEST_F(ProbeStatusTest, ReportCarriesPlacementsHitsAndCostOfTheFirstCopy) {
  auto& p = Report(0);
  p.set_state(v1::PROBE_STATE_ATTACHED);
  p.set_placement(v1::PLACEMENT_SINGLE_STEP);        // the kernel's word ...
  p.set_predicted_placement(v1::PLACEMENT_BOOSTED);  // ... differs from the prediction
  p.set_kernel_placement(v1::PLACEMENT_SINGLE_STEP);
  p.set_hits(42);
  p.set_status_message("ok");
  p.mutable_cost()->set_cpu_seconds_per_sec(0.25);
  Report(0).set_state(v1::PROBE_STATE_FAILED);  // a second local copy
  auto rows = Rows(/*desired=*/true);
  ASSERT_EQ(rows.size(), 2);
  const auto& r = rows.Get(0);
  EXPECT_EQ(r.local_copies(), 2u);
  EXPECT_EQ(r.local_probe_id(), "local-0-1");
  EXPECT_EQ(r.actual(), v1::PROBE_STATE_ATTACHED);
  EXPECT_EQ(r.placement(), v1::PLACEMENT_SINGLE_STEP);
  EXPECT_EQ(r.predicted_placement(), v1::PLACEMENT_BOOSTED);
  EXPECT_EQ(r.kernel_placement(), v1::PLACEMENT_SINGLE_STEP);
  EXPECT_EQ(r.hits(), 42u);
  EXPECT_EQ(r.status_message(), "ok");
  EXPECT_DOUBLE_EQ(r.cost().cpu_seconds_per_sec(), 0.25);
  EXPECT_EQ(ProbeGaugeLabels(r, true),
            std::make_pair(std::string("SINGLE_STEP"), std::string("ATTACHED")));
}

TEST_F(ProbeStatusTest, DownNodeIsUnknownButKeepsItsLastReport) {
  up_ = false;
  auto& p = Report(0);
  p.set_state(v1::PROBE_STATE_ATTACHED);
  p.set_placement(v1::PLACEMENT_EMULATED);
  p.set_hits(7);
  SetReport("ps-1").set_state(v1::SET_STATE_FAILED);
  auto rows = Rows(/*desired=*/true);
  ASSERT_EQ(rows.size(), 2);
  for (const auto& r : rows) {
    EXPECT_EQ(r.actual(), v1::PROBE_STATE_UNKNOWN);
    EXPECT_EQ(ProbeGaugeLabels(r, false),
              std::make_pair(std::string("UNKNOWN"), std::string("UNKNOWN")));
  }
  EXPECT_EQ(rows.Get(0).placement(), v1::PLACEMENT_EMULATED);
  EXPECT_EQ(rows.Get(0).hits(), 7u);
}

TEST(PlacementLabel, UnspecifiedIsUnknown) {
  EXPECT_EQ(PlacementLabel(v1::PLACEMENT_UNSPECIFIED), "UNKNOWN");
  EXPECT_EQ(PlacementLabel(v1::PLACEMENT_BOOSTED_RIPREL), "BOOSTED_RIPREL");
}

// An index kept entry by entry (as delta heartbeats change the view in place) finds what a
// built one finds, also when the first of two local copies goes and its strings change
// afterwards (the index's keys are its own).
TEST_F(ProbeStatusTest, IndexKeptEntryByEntryFollowsTheEntries) {
  Report(0).set_state(v1::PROBE_STATE_ATTACHED);
  Report(0).set_state(v1::PROBE_STATE_FAILED);  // a second local copy
  Report(1).set_state(v1::PROBE_STATE_ATTACHED);
  SetReport("ps-1").set_state(v1::SET_STATE_ATTACHED);
  HeartbeatIndex inc;
  for (const auto& p : hb_.probes()) inc.AddProbe(p);
  for (const auto& s : hb_.sets()) inc.AddSet(s);
  ASSERT_NE(inc.Probe("ps-1/0"), nullptr);
  EXPECT_EQ(inc.Probe("ps-1/0")->size(), 2u);
  inc.RemoveProbe(hb_.probes(0));
  hb_.mutable_probes(0)->set_fleet_probe_id("xx-9/9");  // same buffer, other content
  const HeartbeatIndex::ProbeReports* r = inc.Probe("ps-1/0");
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->front(), &hb_.probes(1));
  EXPECT_EQ(inc.Probe("xx-9/9"), nullptr);
  inc.RemoveProbe(hb_.probes(1));
  EXPECT_EQ(inc.Probe("ps-1/0"), nullptr);
  EXPECT_EQ(inc.Probe("ps-1/1")->front(), &hb_.probes(2));
  // A set report taken out and put back (changed in place).
  inc.RemoveSet(hb_.sets(0));
  EXPECT_EQ(inc.Set("ps-1"), nullptr);
  hb_.mutable_sets(0)->set_state(v1::SET_STATE_FAILED);
  inc.AddSet(hb_.sets(0));
  ASSERT_NE(inc.Set("ps-1"), nullptr);
  EXPECT_EQ(inc.Set("ps-1")->state(), v1::SET_STATE_FAILED);
}

}  // namespace
}  // namespace xolfleet::controller
