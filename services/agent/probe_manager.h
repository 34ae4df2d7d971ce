// The agent's probe bookkeeping: validates and resolves probe specs, attaches
// them as one all-or-nothing batch, detaches (by request or at TTL expiry)
// without leaving links or map entries behind, and reports counts. Implements
// AgentApi, so the gRPC service and the controller link share one path.
//
// Attach runs in two phases. Phase 1 (no lock held, spec_resolver.h) validates every spec and
// resolves it to a classified site: a missing binary or symbol, a build-id mismatch, an offset
// inside an instruction, a REFUSED instruction, or a pid that does not exist fails the request
// before anything touches the kernel, with one message naming every failed spec. Phase 2 (under the
// lock) takes slots (slot_table.h), writes the per-probe config, and creates the links
// (link_groups.h): one uprobe_multi link per (binary, pid) group, or one perf-event link per probe;
// if any link fails, every link and map entry of the request is removed again before the error is
// returned.
//
// The manager reaches the kernel only through ProbeProgram (probe_program.h): the
// BPF object in the agent, an in-memory program in probe_manager_test.cc, which
// checks slots, rollback and re-linking without root.
#ifndef XOLFLEET_SERVICES_AGENT_PROBE_MANAGER_H_
#define XOLFLEET_SERVICES_AGENT_PROBE_MANAGER_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/agent/agent_api.h"
#include "services/agent/attachment.h"
#include "services/agent/binary_locator.h"
#include "services/agent/calibration.h"
#include "services/agent/cost.h"
#include "services/agent/hit_hub.h"
#include "services/agent/kernel_features.h"
#include "services/agent/link_groups.h"
#include "services/agent/probe_program.h"
#include "services/agent/slot_table.h"
#include "services/agent/spec_resolver.h"
#include "services/common/open_file.h"
#include "services/common/placement.h"
#include "services/common/probe_spec.h"
#include "xolfleet/v1/agent.pb.h"

namespace xolfleet {

// Who attached a probe through the API (Identity::ToString()), set by the gRPC service.
inline constexpr char kOwnerLabel[] = "xolfleet.io/owner";

// Hooks for metrics (the manager does not depend on prometheus).
class ProbeManagerObserver {
 public:
  virtual ~ProbeManagerObserver() = default;
  virtual void OnAttach(absl::Duration latency, size_t probes, bool ok) = 0;
  virtual void OnDetach(absl::Duration latency, size_t probes) = 0;
};

struct ProbeCounterSnapshot {
  std::string id;
  std::string placement;  // PlacementName
  uint64_t hits = 0;
  uint64_t emitted = 0;
  uint64_t dropped = 0;
  uint64_t rate_limited = 0;
  double cpu_seconds_per_sec = 0;  // estimated cost over the budget window
};

class ProbeManager final : public AgentApi {
 public:
  struct Options {
    uint32_t max_specs_per_request = 20000;
    uint32_t max_probes_per_site = 16;  // probes sharing one instruction of one file
    size_t inactive_retention = 1000;   // detached/expired probes kept for List
    std::string node_name;
    // Where host paths are resolved (--host-root) and the node's procfs (pid and
    // container specs; services/agent/binary_locator.h).
    std::string host_root = "/";
    std::string proc = "/proc";
    std::string agent_version = "dev";
    std::map<std::string, std::string> labels;
    // Where the patched kernel's files live (tests point these at fixtures).
    std::string slot_stats_path = "/sys/kernel/debug/uprobes/stats";
    std::string placements_path = "/sys/kernel/debug/uprobes/placements";
    std::string uprobes_boost_path = kUprobesBoostPath;
    // Measure the cost of a hit per placement at start-up and when the kernel profile
    // changes (calibration.h), on a thread of its own.
    bool calibrate = true;
    CalibrationOptions calibration;
    BudgetConfig budget;
    // --budget-action=throttle: a capturing probe's events are limited to this rate.
    uint32_t throttle_events_per_sec = 10;
  };

  // Takes ownership of the loaded program; `hub` must outlive the manager.
  static absl::StatusOr<std::unique_ptr<ProbeManager>> Create(const Options& options,
                                                              std::unique_ptr<ProbeProgram> program,
                                                              KernelInfo kernel, HitHub* hub);
  ~ProbeManager() override;  // detaches everything

  void set_observer(ProbeManagerObserver* o) { observer_ = o; }

  absl::StatusOr<v1::AttachResponse> Attach(const v1::AttachRequest& req) override;
  // Attach, calling `progress` (if set) as the work advances: during phase 1 every few
  // specs resolved (ATTACH_PHASE_RESOLVING, done counting up to total), then once with
  // ATTACH_PHASE_LINKING before phase 2. It is called on this thread with no lock held,
  // never after a link of the request is live, so it may block (a stream write).
  using AttachProgressFn =
      std::function<void(v1::AttachPhase phase, uint32_t done, uint32_t total)>;
  absl::StatusOr<v1::AttachResponse> AttachWithProgress(const v1::AttachRequest& req,
                                                        const AttachProgressFn& progress);
  absl::StatusOr<v1::DetachResponse> Detach(const v1::DetachRequest& req) override;
  absl::StatusOr<v1::ListResponse> List(const v1::ListRequest& req) override;
  absl::StatusOr<v1::ClassifyResponse> Classify(const v1::ClassifyRequest& req) override;
  absl::StatusOr<v1::NodeInfo> GetNodeInfo() override;

  // Resolves probe ids ("p12") to the numbers the hit hub routes by; NOT_FOUND
  // names the unknown ones. Empty input: empty set (every probe).
  absl::StatusOr<absl::flat_hash_set<uint64_t>> ProbeNumbers(
      const std::vector<std::string>& ids) const;
  // Ring-buffer drops (kernel side) of these probes, or of all probes when empty.
  uint64_t KernelDropped(const absl::flat_hash_set<uint64_t>& probe_nums) const;

  // For metrics: counters of every attached probe, and totals since start.
  std::vector<ProbeCounterSnapshot> SnapshotCounters() const;
  xol_probe_counters Totals() const;  // calibration probes' hits excluded
  // (placement, state) -> number of probes (attached and retained inactive ones).
  std::map<std::pair<std::string, std::string>, size_t> ProbeCountsByPlacementAndState() const;
  uint64_t placement_mismatches() const;
  // (predicted placement, kernel placement or "UNREPORTED") -> attached probes.
  std::map<std::pair<std::string, std::string>, size_t> ProbeCountsByPredictedAndKernelPlacement()
      const;
  size_t attached_count() const;
  size_t link_count() const;
  size_t free_slots() const;  // of the program's max_probes()
  size_t config_entries() const { return program_->CountConfigEntries(); }
  v1::LinkMode link_mode() const { return program_->link_mode(); }
  int program_events_fd() const { return program_->events_fd(); }
  // The kernel profile now: kernel.uprobes_boost can be switched while the agent runs.
  KernelProfileChoice Profile() const ABSL_LOCKS_EXCLUDED(profile_mu_);
  // Re-reads kernel.uprobes_boost and the kernel's placements (both cheap when nothing changed). On
  // a profile change every attached probe's placement is predicted again under the new profile.
  // Called by List, GetNodeInfo (so every heartbeat) and the manager's own thread once a second.
  void RefreshKernel() ABSL_LOCKS_EXCLUDED(mu_);

  // Detaches probes whose TTL ran out by `now` (also runs on the manager's own thread).
  void ExpireDue(absl::Time now);

  // Measures the calibration figures now (about a second; one run at a time).
  absl::Status Calibrate() ABSL_LOCKS_EXCLUDED(mu_, calibrate_mu_);
  v1::Calibration calibration() const ABSL_LOCKS_EXCLUDED(mu_);
  // Samples every probe's counters, updates its estimated cost over the budget window,
  // and applies the budgets (runs once a second on the manager's own thread).
  void UpdateCosts(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  v1::NodeCost node_cost() const ABSL_LOCKS_EXCLUDED(mu_);
  // (action, scope "probe"|"node") -> budget actions taken since start.
  std::map<std::pair<std::string, std::string>, uint64_t> BudgetActions() const;
  // Budget events of the probes numbered `nums` (every probe when empty) after sequence
  // number `*seq`, which is advanced past the last one returned. Start from
  // budget_event_seq() to get only new ones. The agent keeps the last 1000.
  std::vector<v1::BudgetEvent> BudgetEventsSince(uint64_t* seq,
                                                 const absl::flat_hash_set<uint64_t>& nums) const;
  uint64_t budget_event_seq() const;
  // Budget state name -> attached probes in it.
  std::map<std::string, size_t> ProbeCountsByBudgetState() const;

 private:
  struct ProbeRecord {
    v1::Probe probe;
    uint64_t num = 0;
    uint32_t slot = 0;
    uint32_t generation = 0;
    uint64_t device = 0;  // st_dev and st_ino of the probed file: the kernel's placements key
    uint64_t inode = 0;
    Placement placement = Placement::kRefused;
    std::shared_ptr<LinkGroup> group;
    absl::Time expires = absl::InfiniteFuture();
    CostWindow window;  // counters sampled once a second
  };
  ProbeManager(const Options& options, std::unique_ptr<ProbeProgram> program, KernelInfo kernel,
               HitHub* hub);
  absl::Status CheckRequestSize(const v1::AttachRequest& req) const;
  absl::StatusOr<std::vector<ResolvedSpec>> Resolve(const v1::AttachRequest& req,
                                                    const AttachProgressFn& progress) const;
  // Phase 2 of an Attach (the class comment).
  absl::StatusOr<v1::AttachResponse> AttachLocked(const v1::AttachRequest& req,
                                                  const std::vector<ResolvedSpec>& resolved,
                                                  absl::Time start, absl::Time resolved_at)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED when the request needs more slots than are free, or would put
  // more than max_probes_per_site probes on one instruction.
  absl::Status CheckCapacityLocked(const v1::AttachRequest& req,
                                   const std::vector<ResolvedSpec>& resolved) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The records of a request's probes, each with a slot taken.
  std::vector<ProbeRecord> NewRecordsLocked(const v1::AttachRequest& req,
                                            const std::vector<ResolvedSpec>& resolved)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Zeroes the records' counters and writes their configs; on failure removes them and
  // frees the slots.
  absl::Status WriteConfigsLocked(const v1::AttachRequest& req,
                                  const std::vector<ProbeRecord>& records)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Undoes a request whose links failed: its links, routes, map entries and slots.
  void RollbackLocked(const std::vector<ProbeRecord>& records, LinkBatch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `ids` from the table (final counts kept in the inactive list with `state`); detaches
  // their links and re-links surviving members of partially emptied multi links. Returns the time
  // spent closing kernel links (the rest is bookkeeping).
  absl::Duration DetachLocked(const std::vector<std::string>& ids, v1::ProbeState state,
                              const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The groups of `records` that keep other members (to re-link); the links of those
  // that lose every member are moved to `closing`.
  static std::vector<std::shared_ptr<LinkGroup>> SplitGroups(
      const std::vector<ProbeRecord*>& records, std::vector<std::unique_ptr<Attachment>>* closing);
  // Config, counters, slot, hub route and record of each probe removed, its final state
  // kept for List; returns their ids. The records are destroyed.
  absl::flat_hash_set<std::string> RetireLocked(const std::vector<ProbeRecord*>& records,
                                                v1::ProbeState state, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RelinkLocked(LinkGroup* group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillCountersLocked(const ProbeRecord& r, v1::Probe* out) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The same with counters already read (null: none could be read).
  void FillCountersLocked(const ProbeRecord& r, const xol_probe_counters* c, v1::Probe* out) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void RefreshKernelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t MismatchesLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void ExpiryLoop();
  // A large request frees much memory just after it returns (gRPC owns its request and
  // reply): TrimSoonLocked asks the manager's thread to malloc_trim shortly after.
  void TrimSoonLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeTrim(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);
  void CalibrationLoop();
  bool CalibrationWanted() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::NodeCost NodeCostLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::AttachResponse> DryRun(const v1::AttachRequest& req);
  void ApplyBudgetLocked(const BudgetDecision& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Placement CostPlacementLocked(const ProbeRecord& r) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const Options options_;
  std::unique_ptr<ProbeProgram> program_;
  std::unique_ptr<BinaryLocator> locator_;
  const KernelInfo kernel_;  // release and version; the profile is profile_
  HitHub* const hub_;
  mutable absl::Mutex profile_mu_ ABSL_ACQUIRED_AFTER(mu_);
  KernelProfileChoice profile_ ABSL_GUARDED_BY(profile_mu_);
  ProbeManagerObserver* observer_ = nullptr;

  mutable absl::Mutex mu_;
  // Node-based: a ProbeRecord is a few hundred bytes, and a flat table keeps about
  // 60% more slots than entries (1.8 MiB unused at 10,000 probes).
  absl::node_hash_map<std::string, ProbeRecord> active_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::Probe> inactive_ ABSL_GUARDED_BY(mu_);
  // Probes ever pushed to inactive_: inactive_[i] is the (inactive_pushed_ -
  // inactive_.size() + i)-th, its List page key (stable while older ones are dropped).
  uint64_t inactive_pushed_ ABSL_GUARDED_BY(mu_) = 0;
  SlotTable slots_ ABSL_GUARDED_BY(mu_);
  uint64_t next_probe_num_ ABSL_GUARDED_BY(mu_) = 1;
  // Kernel-reported placements (patched kernel), refreshed by RefreshKernel.
  absl::flat_hash_map<std::string, Placement> kernel_placement_ ABSL_GUARDED_BY(mu_);
  // Probes whose mismatch was logged (one log line per probe, not per refresh).
  absl::flat_hash_set<std::string> mismatch_logged_ ABSL_GUARDED_BY(mu_);

  // Calibration: figures, the cost table made of them, and what the calibration probes
  // added to the program's totals (subtracted in Totals()).
  absl::Mutex calibrate_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  v1::Calibration calibration_ ABSL_GUARDED_BY(mu_);
  CostModel cost_model_ ABSL_GUARDED_BY(mu_);
  uint64_t calibration_hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t calibration_events_ ABSL_GUARDED_BY(mu_) = 0;
  bool calibrate_requested_ ABSL_GUARDED_BY(mu_) = false;
  // Live cost and budgets.
  double node_cpu_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::pair<std::string, std::string>, uint64_t> budget_actions_ ABSL_GUARDED_BY(mu_);
  struct NumberedBudgetEvent {
    uint64_t seq;
    uint64_t probe_num;
    v1::BudgetEvent event;
  };
  std::deque<NumberedBudgetEvent> budget_events_ ABSL_GUARDED_BY(mu_);
  uint64_t budget_seq_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Time trim_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread expiry_thread_;
  std::thread calibration_thread_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_PROBE_MANAGER_H_
