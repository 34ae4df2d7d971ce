// What probes cost, as arithmetic: the calibrated cost of a hit per placement (CostModel),
// a probe's hit and event rates over a sliding window (CostWindow), and the budget rules
// that decide which probe to act on (DecideBudgets). No kernel, no clock: the probe
// manager feeds them samples, tests feed them numbers.
//
// The estimate of a probe is hits/s x ns_per_hit(placement) + events/s x capture cost of
// one event, in CPU seconds per second (1.0 = one CPU busy with probe handling). It is
// the cost paid by the probed processes (the trap, the kernel's handling of the
// instruction, the BPF program), not by the agent. Several probes on one instruction
// share one trap but each is charged it in full, so their sum overestimates.
#ifndef XOLFLEET_SERVICES_AGENT_COST_H_
#define XOLFLEET_SERVICES_AGENT_COST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "xolfleet/v1/common.pb.h"

namespace xolfleet {

// The calibration figures as a lookup table.
class CostModel {
 public:
  CostModel() = default;
  explicit CostModel(const v1::Calibration& c);
  // ns of one counting-only hit at `p`; nullopt when the node has no figure for it.
  std::optional<double> NsPerHit(v1::Placement p) const;
  double capture_ns_per_event() const { return capture_ns_; }
  bool empty() const { return by_placement_.empty(); }

 private:
  std::vector<std::pair<v1::Placement, double>> by_placement_;
  double capture_ns_ = 0;
};

// Fills `cost` (calibrated, cost_placement, ns_per_hit, cpu_seconds_per_sec) for a probe
// at `placement` running at the given rates. Budget fields are left alone.
void EstimateCost(const CostModel& model, v1::Placement placement, double hits_per_sec,
                  double events_per_sec, v1::ProbeCost* cost);

// Hit and event counters of one probe sampled over time; rates over the last `window`.
class CostWindow {
 public:
  void Add(absl::Time t, uint64_t hits, uint64_t events);
  // Drops samples older than `window` before the newest (keeping one at or before the
  // window start, so a rate always spans the whole window once it is that old).
  void Trim(absl::Duration window);
  // Rates between the oldest and newest sample (0 with fewer than two samples).
  double HitsPerSec() const;
  double EventsPerSec() const;
  // The samples span at least `window`: enough history to act on.
  bool Covers(absl::Duration window) const;

 private:
  struct Sample {
    int64_t t_ns;  // absl::ToUnixNanos: 24 bytes a sample instead of 32
    uint64_t hits;
    uint64_t events;
  };
  // A vector, not a deque: every attached probe has a window, and libstdc++'s deque
  // allocates a 512-byte block when it is constructed (5 MiB for 10,000 probes before
  // any sample); a window holds about a dozen samples, so erasing at the front is cheap.
  std::vector<Sample> samples_;
};

enum class BudgetAction { kAlert, kThrottle, kDetach };
absl::StatusOr<BudgetAction> ParseBudgetAction(absl::string_view s);
absl::string_view BudgetActionName(BudgetAction a);

struct BudgetConfig {
  double node_budget = 0.01;  // fraction of one CPU for all probes together; 0: none
  double probe_budget = 0;    // fraction of one CPU per probe; 0: none
  BudgetAction action = BudgetAction::kAlert;
  absl::Duration window = absl::Seconds(10);
};

// One probe as the budget rules see it.
struct ProbeBudgetInput {
  std::string id;
  double cpu_seconds_per_sec = 0;
  bool window_full = false;  // rates span the whole window
  v1::BudgetState state = v1::BUDGET_STATE_OK;
};

struct BudgetDecision {
  std::string id;
  BudgetAction action;
  bool node_scope = false;  // the node's budget was exceeded (else the probe's own)
  std::string message;      // why, with the figures
};

// Which probes to act on now. A probe is acted on once: a probe over its own budget
// (probe_budget > 0) whose window is full and whose state is BUDGET_OK; then, while the
// node's estimated total (over probes with full windows) exceeds node_budget, the most
// expensive probes still BUDGET_OK, until the ones picked account for the excess.
// Probes already ALERTED or THROTTLED are not picked again (their cost still counts).
std::vector<BudgetDecision> DecideBudgets(const std::vector<ProbeBudgetInput>& probes,
                                          const BudgetConfig& config);

// The budget state a decision leaves the probe in.
v1::BudgetState StateAfter(BudgetAction a);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_COST_H_
