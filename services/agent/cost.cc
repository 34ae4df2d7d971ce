#include "services/agent/cost.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace xolfleet {

CostModel::CostModel(const v1::Calibration& c) {
  for (const v1::CalibrationFigure& f : c.figures()) {
    if (f.capture()) continue;
    by_placement_.emplace_back(f.placement(), std::max(0.0, f.ns_per_hit()));
  }
  capture_ns_ = std::max(0.0, c.capture_ns_per_event());
}

std::optional<double> CostModel::NsPerHit(v1::Placement p) const {
  for (const auto& [pl, ns] : by_placement_) {
    if (pl == p) return ns;
  }
  return std::nullopt;
}

void EstimateCost(const CostModel& model, v1::Placement placement, double hits_per_sec,
                  double events_per_sec, v1::ProbeCost* cost) {
  cost->set_cost_placement(placement);
  cost->set_hits_per_sec(hits_per_sec);
  cost->set_events_per_sec(events_per_sec);
  std::optional<double> ns = model.NsPerHit(placement);
  cost->set_calibrated(ns.has_value());
  cost->set_ns_per_hit(ns.value_or(0));
  cost->set_cpu_seconds_per_sec(
      (hits_per_sec * ns.value_or(0) + events_per_sec * model.capture_ns_per_event()) * 1e-9);
}

void CostWindow::Add(absl::Time t, uint64_t hits, uint64_t events) {
  samples_.push_back({absl::ToUnixNanos(t), hits, events});
}

void CostWindow::Trim(absl::Duration window) {
  if (samples_.empty()) return;
  const int64_t start = samples_.back().t_ns - absl::ToInt64Nanoseconds(window);
  size_t drop = 0;
  while (samples_.size() - drop > 2 && samples_[drop + 1].t_ns <= start) ++drop;
  samples_.erase(samples_.begin(), samples_.begin() + drop);
}

namespace {
double Rate(uint64_t a, uint64_t b, absl::Duration d) {
  const double s = absl::ToDoubleSeconds(d);
  if (s <= 0 || b < a) return 0;
  return static_cast<double>(b - a) / s;
}
}  // namespace

double CostWindow::HitsPerSec() const {
  if (samples_.size() < 2) return 0;
  return Rate(samples_.front().hits, samples_.back().hits,
              absl::Nanoseconds(samples_.back().t_ns - samples_.front().t_ns));
}

double CostWindow::EventsPerSec() const {
  if (samples_.size() < 2) return 0;
  return Rate(samples_.front().events, samples_.back().events,
              absl::Nanoseconds(samples_.back().t_ns - samples_.front().t_ns));
}

bool CostWindow::Covers(absl::Duration window) const {
  return samples_.size() >= 2 &&
         absl::Nanoseconds(samples_.back().t_ns - samples_.front().t_ns) >= window;
}

absl::StatusOr<BudgetAction> ParseBudgetAction(absl::string_view s) {
  if (s == "alert") return BudgetAction::kAlert;
  if (s == "throttle") return BudgetAction::kThrottle;
  if (s == "detach") return BudgetAction::kDetach;
  return absl::InvalidArgumentError(
      absl::StrCat("budget action '", s, "': use alert, throttle or detach"));
}

absl::string_view BudgetActionName(BudgetAction a) {
  switch (a) {
    case BudgetAction::kAlert:
      return "alert";
    case BudgetAction::kThrottle:
      return "throttle";
    case BudgetAction::kDetach:
      return "detach";
  }
  return "alert";
}

v1::BudgetState StateAfter(BudgetAction a) {
  switch (a) {
    case BudgetAction::kAlert:
      return v1::BUDGET_STATE_ALERTED;
    case BudgetAction::kThrottle:
      return v1::BUDGET_STATE_THROTTLED;
    case BudgetAction::kDetach:
      return v1::BUDGET_STATE_DETACHED;
  }
  return v1::BUDGET_STATE_ALERTED;
}

std::vector<BudgetDecision> DecideBudgets(const std::vector<ProbeBudgetInput>& probes,
                                          const BudgetConfig& config) {
  std::vector<BudgetDecision> out;
  std::vector<const ProbeBudgetInput*> candidates;
  double total = 0;
  for (const ProbeBudgetInput& p : probes) {
    if (!p.window_full) continue;
    total += p.cpu_seconds_per_sec;
    const bool free = p.state == v1::BUDGET_STATE_OK || p.state == v1::BUDGET_STATE_UNSPECIFIED;
    if (!free) continue;
    if (config.probe_budget > 0 && p.cpu_seconds_per_sec > config.probe_budget) {
      out.push_back(
          {p.id, config.action, false,
           absl::StrFormat("probe over its budget: %.3g%% of a CPU over %s (--probe-budget %.3g%%)",
                           p.cpu_seconds_per_sec * 100, absl::FormatDuration(config.window),
                           config.probe_budget * 100)});
      // Its cost is dealt with: it does not count against the node below, except an
      // alert, which leaves it running.
      if (config.action != BudgetAction::kAlert) total -= p.cpu_seconds_per_sec;
      continue;
    }
    candidates.push_back(&p);
  }
  if (config.node_budget > 0 && total > config.node_budget) {
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const ProbeBudgetInput* a, const ProbeBudgetInput* b) {
                       return a->cpu_seconds_per_sec > b->cpu_seconds_per_sec;
                     });
    const double excess = total - config.node_budget;
    double picked = 0;
    for (const ProbeBudgetInput* p : candidates) {
      if (picked >= excess || p->cpu_seconds_per_sec <= 0) break;
      picked += p->cpu_seconds_per_sec;
      out.push_back({p->id, config.action, true,
                     absl::StrFormat("node over its budget: probes cost %.3g%% of a CPU over %s "
                                     "(--node-budget %.3g%%); this one %.3g%%",
                                     total * 100, absl::FormatDuration(config.window),
                                     config.node_budget * 100, p->cpu_seconds_per_sec * 100)});
    }
  }
  return out;
}

}  // namespace xolfleet
