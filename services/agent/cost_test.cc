// The cost arithmetic and the budget rules, on numbers (no kernel, no clock).
#include "services/agent/cost.h"

#include "gtest/gtest.h"

namespace xolfleet {
namespace {

v1::Calibration Figures() {
  v1::Calibration c;
  auto add = [&](v1::Placement p, double ns, bool capture) {
    v1::CalibrationFigure* f = c.add_figures();
    f->set_placement(p);
    f->set_ns_per_hit(ns);
    f->set_capture(capture);
  };
  add(v1::PLACEMENT_EMULATED, 500, false);
  add(v1::PLACEMENT_SINGLE_STEP, 20000, false);
  add(v1::PLACEMENT_EMULATED, 700, true);  // capture figures are not a placement's cost
  c.set_capture_ns_per_event(200);
  return c;
}

TEST(CostModel, LooksUpCountingFiguresOnly) {
  CostModel m(Figures());
  EXPECT_EQ(m.NsPerHit(v1::PLACEMENT_EMULATED), 500);
  EXPECT_EQ(m.NsPerHit(v1::PLACEMENT_SINGLE_STEP), 20000);
  EXPECT_FALSE(m.NsPerHit(v1::PLACEMENT_BOOSTED).has_value());
  EXPECT_EQ(m.capture_ns_per_event(), 200);
  EXPECT_TRUE(CostModel().empty());
}

TEST(CostModel, NegativeFiguresCountAsFree) {
  v1::Calibration c;
  v1::CalibrationFigure* f = c.add_figures();
  f->set_placement(v1::PLACEMENT_EMULATED);
  f->set_ns_per_hit(-3);  // noise: the probed run was faster
  c.set_capture_ns_per_event(-1);
  CostModel m(c);
  EXPECT_EQ(m.NsPerHit(v1::PLACEMENT_EMULATED), 0);
  EXPECT_EQ(m.capture_ns_per_event(), 0);
}

TEST(EstimateCost, HitsTimesCostPlusEvents) {
  CostModel m(Figures());
  v1::ProbeCost c;
  EstimateCost(m, v1::PLACEMENT_SINGLE_STEP, 1000, 0, &c);
  EXPECT_TRUE(c.calibrated());
  EXPECT_DOUBLE_EQ(c.cpu_seconds_per_sec(), 0.02);  // 1000/s x 20 us
  EstimateCost(m, v1::PLACEMENT_EMULATED, 1000, 500, &c);
  EXPECT_DOUBLE_EQ(c.cpu_seconds_per_sec(), (1000 * 500 + 500 * 200) * 1e-9);
  EstimateCost(m, v1::PLACEMENT_BOOSTED, 1000, 0, &c);
  EXPECT_FALSE(c.calibrated());
  EXPECT_EQ(c.cpu_seconds_per_sec(), 0);
  EXPECT_EQ(c.cost_placement(), v1::PLACEMENT_BOOSTED);
}

TEST(CostWindow, RatesSpanTheWindow) {
  CostWindow w;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_EQ(w.HitsPerSec(), 0);
  for (int i = 0; i <= 20; ++i) {
    // 100 hits/s for 10 s, then 1000 hits/s.
    const uint64_t hits = i <= 10 ? 100 * i : 1000 + 1000 * (i - 10);
    w.Add(t0 + absl::Seconds(i), hits, hits / 2);
    w.Trim(absl::Seconds(5));
  }
  EXPECT_TRUE(w.Covers(absl::Seconds(5)));
  EXPECT_FALSE(w.Covers(absl::Seconds(6)));
  EXPECT_DOUBLE_EQ(w.HitsPerSec(), 1000);
  EXPECT_DOUBLE_EQ(w.EventsPerSec(), 500);
}

TEST(CostWindow, NeedsTheWholeWindowBeforeItCovers) {
  CostWindow w;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  w.Add(t0, 0, 0);
  w.Add(t0 + absl::Seconds(2), 100, 0);
  EXPECT_FALSE(w.Covers(absl::Seconds(3)));
  EXPECT_DOUBLE_EQ(w.HitsPerSec(), 50);
}

TEST(BudgetAction, ParsesNames) {
  EXPECT_EQ(*ParseBudgetAction("alert"), BudgetAction::kAlert);
  EXPECT_EQ(*ParseBudgetAction("throttle"), BudgetAction::kThrottle);
  EXPECT_EQ(*ParseBudgetAction("detach"), BudgetAction::kDetach);
  EXPECT_FALSE(ParseBudgetAction("kill").ok());
  EXPECT_EQ(StateAfter(BudgetAction::kThrottle), v1::BUDGET_STATE_THROTTLED);
  EXPECT_EQ(StateAfter(BudgetAction::kDetach), v1::BUDGET_STATE_DETACHED);
}

TEST(DecideBudgets, ProbeBudgetActsOnceAndOnlyWithAFullWindow) {
  BudgetConfig cfg;
  cfg.node_budget = 0;
  cfg.probe_budget = 0.01;
  cfg.action = BudgetAction::kDetach;
  std::vector<ProbeBudgetInput> in = {
      {"p1", 0.02, true, v1::BUDGET_STATE_OK},          // over, full window: act
      {"p2", 0.02, false, v1::BUDGET_STATE_OK},         // over, window not full yet: wait
      {"p3", 0.005, true, v1::BUDGET_STATE_OK},         // under
      {"p4", 0.05, true, v1::BUDGET_STATE_THROTTLED}};  // already acted on
  std::vector<BudgetDecision> d = DecideBudgets(in, cfg);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].id, "p1");
  EXPECT_EQ(d[0].action, BudgetAction::kDetach);
  EXPECT_FALSE(d[0].node_scope);
  EXPECT_NE(d[0].message.find("--probe-budget"), std::string::npos);
}

TEST(DecideBudgets, NodeBudgetPicksTheMostExpensiveUntilTheExcessIsCovered) {
  BudgetConfig cfg;
  cfg.node_budget = 0.01;
  cfg.action = BudgetAction::kThrottle;
  std::vector<ProbeBudgetInput> in = {{"p1", 0.004, true, v1::BUDGET_STATE_OK},
                                      {"p2", 0.006, true, v1::BUDGET_STATE_OK},
                                      {"p3", 0.003, true, v1::BUDGET_STATE_OK},
                                      {"p4", 0.0005, true, v1::BUDGET_STATE_OK}};
  // Total 0.0135, excess 0.0035: p2 (0.006) alone covers it.
  std::vector<BudgetDecision> d = DecideBudgets(in, cfg);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].id, "p2");
  EXPECT_TRUE(d[0].node_scope);
  // Once p2 is throttled it is not picked again; its cost still counts, so the next one goes.
  in[1].state = v1::BUDGET_STATE_THROTTLED;
  d = DecideBudgets(in, cfg);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].id, "p1");
}

TEST(DecideBudgets, UnderBudgetDoesNothing) {
  BudgetConfig cfg;
  cfg.node_budget = 0.01;
  cfg.probe_budget = 0.01;
  std::vector<ProbeBudgetInput> in = {{"p1", 0.004, true, v1::BUDGET_STATE_OK},
                                      {"p2", 0.005, true, v1::BUDGET_STATE_OK}};
  EXPECT_TRUE(DecideBudgets(in, cfg).empty());
  cfg.node_budget = 0;  // none
  in[0].cpu_seconds_per_sec = 0.009;
  EXPECT_TRUE(DecideBudgets(in, cfg).empty());
}

TEST(DecideBudgets, ADetachedProbeNoLongerCountsAgainstTheNode) {
  BudgetConfig cfg;
  cfg.node_budget = 0.02;
  cfg.probe_budget = 0.01;
  cfg.action = BudgetAction::kDetach;
  // p1 is over its own budget and is detached; without it the node is within budget.
  std::vector<ProbeBudgetInput> in = {{"p1", 0.015, true, v1::BUDGET_STATE_OK},
                                      {"p2", 0.008, true, v1::BUDGET_STATE_OK}};
  std::vector<BudgetDecision> d = DecideBudgets(in, cfg);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].id, "p1");
  // With alert, p1 keeps running and the node is over budget too: p2 is flagged.
  cfg.action = BudgetAction::kAlert;
  d = DecideBudgets(in, cfg);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[1].id, "p2");
  EXPECT_TRUE(d[1].node_scope);
}

}  // namespace
}  // namespace xolfleet
