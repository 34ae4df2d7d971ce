// The controller's core, independent of transport: the registry of agents, the probe
// sets (desired state) and their rollouts, reconciliation of what each node should run.
//
// Model. A fleet attach creates a *probe set*: specs plus a node selector plus a rollout
// policy, stored in SQLite before the call returns. A node's desired state is every set
// whose rollout has reached it:
//   CANARY    only the canary nodes (picked among the selected nodes that are up)
//   ROLLING, COMPLETE, DEGRADED   every node the selector matches, including nodes that
//             register later (a DaemonSet scaling up gets the fleet's probes)
//   ROLLED_BACK, EXPIRED   nobody (kept for inspection until detached)
// Desired state is pushed to agents whole (level-triggered) on every change and on every
// (re)registration, so an agent that reconnects or restarts converges to exactly it.
//
// Rollout rules. The canary stage ends when every canary node reports the set attached
// (-> ROLLING) or when one of them reports it failed or the canary timeout passes
// (-> ROLLED_BACK: removed from every node). ROLLING ends when every selected node that
// is up reports it attached (COMPLETE) or failed (DEGRADED: failures after the canary are
// reported, not rolled back). TTLs are fleet-wide: the set expires everywhere at once.
//
// Health. A node is up while its stream is open and it heartbeats within the timeout;
// otherwise it is down and its probes are shown UNKNOWN (still desired, never deleted).
//
// Replicas. With Options::coordinator (replica.h; --store=etcd://...), several
// controllers share one store: each syncs sets, agents and the other replicas' agent
// statuses from it every tick, serves reads and its own agents, and only the leader
// advances rollouts and expires TTLs (its rollout writes are fenced by its lease).
//
// Hits across replicas. Agents report cumulative hit totals per probe; each replica keeps per node
// and fleet probe the last total it counted (with the local probe id), from the agent's own
// heartbeats when it holds the stream and from the statuses the others publish otherwise. Every
// replica thus counts every hit of the fleet exactly once into its counters and its WatchFleetHits
// streams, whichever replica the agent is connected to, and across an agent moving between replicas
// (the marks follow the node, not the stream). Nothing is forwarded replica to replica: no loops,
// no peer connections; a hit reaches another replica's watchers after the holder's status flush and
// the next sync (a few hundred ms). Watchers are told (notices) when a replica joins or goes and
// when the store cannot be read.
//
// Locking: one mutex (mu_) guards all state. AgentSession::Send only queues, so it may
// be called with mu_ held; nothing called under mu_ calls back into this class.
#ifndef XOLFLEET_SERVICES_CONTROLLER_FLEET_H_
#define XOLFLEET_SERVICES_CONTROLLER_FLEET_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "services/common/heartbeat_delta.h"
#include "services/controller/hit_hub.h"
#include "services/controller/metrics.h"
#include "services/controller/probe_status.h"
#include "services/controller/replica.h"
#include "services/controller/store.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

// One agent's stream, as the core sees it.
class AgentSession {
 public:
  virtual ~AgentSession() = default;
  // Queues a message for the agent; must not block on the network.
  virtual void Send(const v1::ControllerMessage& msg) = 0;
  // Ends the stream (replaced by a newer one, or the agent stopped heartbeating).
  virtual void Close() = 0;
};

class FleetController {
 public:
  struct Options {
    absl::Duration heartbeat_interval = absl::Seconds(1);
    absl::Duration heartbeat_timeout = absl::Seconds(10);
    absl::Duration default_canary_timeout = absl::Seconds(60);
    absl::Duration tick = absl::Milliseconds(200);
    size_t max_sets = 10000;
    size_t max_agents = 100000;
    size_t watch_queue = 4096;
    // Set when replicas share the store (replica.h); null: this controller is alone.
    std::shared_ptr<Coordinator> coordinator;
  };
  using Clock = std::function<absl::Time()>;

  // Loads the stored sets and agents (agents start down until they reconnect).
  static absl::StatusOr<std::unique_ptr<FleetController>> Create(
      Options opts, std::unique_ptr<Store> store, std::shared_ptr<FleetMetrics> metrics,
      Clock clock = [] { return absl::Now(); });
  ~FleetController();

  // --- agent side ---
  absl::Status Register(std::shared_ptr<AgentSession> session, const v1::AgentRegister& reg,
                        const std::string& identity, const std::string& peer);
  // FAILED_PRECONDITION if `session` is not the node's current session. Applies the heartbeat, full
  // or delta (services/common/heartbeat_delta.h), to the node's view in place: a delta costs what
  // it carries (the entries it names are re-indexed and their hits counted; nothing else is
  // touched). A delta the node's stream has no base for changes nothing and sets `*want_full` (the
  // caller asks the agent for a full heartbeat; FAILED_PRECONDITION without `want_full`).
  // INVALID_ARGUMENT: over the decoder's limits.
  absl::Status Heartbeat(const AgentSession* session, const std::string& node,
                         v1::AgentHeartbeat hb, bool* want_full = nullptr);
  void Disconnect(const AgentSession* session, const std::string& node);

  // --- fleet API (requests already authorized; validated here) ---
  absl::StatusOr<v1::Rollout> Attach(const v1::FleetAttachRequest& req, const std::string& who,
                                     absl::Time wait_deadline);
  // The cost the set would have on each selected node (FleetAttachRequest.dry_run):
  // nothing is stored or pushed. Sites are classified on the controller's copy of each
  // binary under every selected node's kernel profile, costed with the node's calibration.
  absl::StatusOr<v1::FleetAttachResponse> DryRun(const v1::FleetAttachRequest& req);
  absl::StatusOr<v1::FleetDetachResponse> Detach(const v1::FleetDetachRequest& req);
  absl::StatusOr<v1::Rollout> GetRollout(const std::string& set_id);
  absl::StatusOr<v1::ListFleetProbesResponse> ListProbes(const v1::ListFleetProbesRequest& req);
  absl::StatusOr<v1::ListAgentsResponse> ListAgents(const v1::ListAgentsRequest& req);
  absl::Status ForgetAgent(const std::string& node);
  HitHub& hits() { return hub_; }
  // The first notice of a WatchFleetHits stream: the replicas whose hits it merges (""
  // without replicas).
  std::string HitSourcesNotice();

  // Heartbeat timeouts, TTL expiry, canary timeouts. Start() runs it every opts.tick
  // (after Sync() when replicas share the store).
  void Tick();
  // Replicas: reads sets, agents and the agent statuses other replicas published from
  // the store and takes them in (store I/O outside the lock). No-op when alone.
  void Sync();
  // True if this controller drives rollouts (alone, or the replicas' leader).
  bool Acting();
  void Start();

  // Scrape-time gauges (agents by state/profile, probes per node, sets by state).
  std::vector<GaugeFamily> CollectGauges();

  // Tests: compares every ROLLING rollout's incrementally kept counts with a full recount
  // (the one Tick's check does, and the Rollout view's own count) and changes nothing.
  struct CountCheck {
    size_t checked = 0;                // rollouts whose counts were compared
    std::vector<std::string> drifted;  // one line per rollout whose counts differ
    uint64_t repaired = 0;             // drifted counts Tick found and repaired so far
  };
  CountCheck CheckCountsForTest();

 private:
  struct Node {
    v1::AgentRegister reg;
    std::string identity, peer;
    std::shared_ptr<AgentSession> session;  // null when disconnected
    bool up = false;
    absl::Time last_seen = absl::InfinitePast();
    bool have_heartbeat = false;
    // The node's last heartbeat (view()), kept in place by its stream's heartbeats (full
    // or delta); Reset() when a new stream registers.
    HeartbeatDeltaDecoder hb;
    const v1::AgentHeartbeat& last_hb() const { return hb.view(); }
    HeartbeatIndex reports;           // into last_hb(): rebuilt when replaced, kept by deltas
    std::vector<std::string> pushed;  // set ids in the last desired state sent
    absl::flat_hash_map<std::string, std::pair<std::string, uint64_t>>
        hit_marks;  // fleet id -> local
    v1::KernelSlotStats slots;
    bool have_slots = false;
    bool seen_this_run = false;  // registered since this controller process started
    bool remote = false;         // status from another replica's record (no session here)
    std::string replica;         // the replica holding (or that last held) its stream
    int64_t hits_seen_ns = 0;    // when the heartbeat whose hits were counted last came
  };
  struct Set {
    StoredSet stored;
    std::set<std::string> canary;
    // ROLLING: how many selected nodes are attached, failed or pending (as RolloutLocked
    // counts them), kept current as nodes change so that a heartbeat costs O(live
    // rollouts), not O(rollouts x nodes). Recounted from scratch while !counted.
    bool counted = false;
    uint32_t attached = 0, failed = 0, pending = 0;
  };
  // The part a node plays in one live (CANARY or ROLLING) rollout: all EvaluateLocked
  // reads of it. A change of a node that changes one of its parts makes that rollout due
  // for evaluation; no other rollout is evaluated for it.
  enum class Part : uint8_t {
    kNone,
    kAttached,
    kFailed,
    kPending,
    kCanaryAttached,
    kCanaryWaiting,
    kCanaryFailed
  };

  FleetController(Options opts, std::unique_ptr<Store> store, std::shared_ptr<FleetMetrics> metrics,
                  Clock clock);

  bool Desired(const Set& s, const Node& n) const;
  // The node's reports as the probe-status view (probe_status.h) reads them.
  static NodeReports ReportsOf(const std::string& name, const Node& n);
  // Fleet probes of the node's last heartbeat that a budget acted on.
  static uint32_t BudgetBreachesLocked(const Node& n);
  std::vector<std::string> DesiredSetsLocked(const Node& n) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushLocked(Node& n, bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Advances the rollouts due (or all with `all`): those whose nodes' parts changed since the last
  // evaluation, and every live one when a time-based step (canary soak or timeout, the restart
  // grace) is due or this replica just became the leader. Pushes desired state if it changed.
  void EvaluateLocked(bool all = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Part PartLocked(const Set& s, const std::string& name, const Node& n) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The sets in CANARY or ROLLING (rebuilt after a set was added, removed or changed state).
  const std::vector<Set*>& LiveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetsChangedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { live_valid_ = false; }
  // Around every change of a node (up/down, registration, set statuses) or its removal:
  // PartsLocked before, RepartLocked after (`n` null: the node is gone). Moves the counts
  // and marks the rollouts whose inputs changed.
  struct Parts {
    uint64_t live_gen;
    std::vector<Part> parts;  // one per LiveLocked() entry
  };
  Parts PartsLocked(const std::string& name, const Node* n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RepartLocked(const std::string& name, const Node* n, const Parts& before)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountLocked(Set& s, Part p, int d) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecountLocked(Set& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every count is redone (after a Sync, or when the restart grace ends).
  void InvalidateCountsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void GraceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Recounts every counted rollout and repairs (and logs) a count that drifted.
  void CheckCountsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool FinishLocked(Set& s, v1::RolloutState state, const std::string& message, const char* outcome)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes a rollout change; false if it was not written. With replicas nothing is kept
  // that the store refused (the leader may have lost its lease): the caller reverts.
  bool PersistLocked(const Set& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ActingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked(const Node& n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Rollout RolloutLocked(const Set& s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkDownLocked(Node& n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts the hits of `hb` since the node's marks (counters, and updates for watchers
  // stamped `at_ns`) and moves the marks. Returns the hits counted.
  uint64_t CountHitsLocked(const std::string& node, Node& n, const v1::AgentHeartbeat& hb,
                           int64_t at_ns, std::vector<v1::FleetHitUpdate>* updates)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps a node's reports index and hit marks while a delta heartbeat changes its view.
  class DeltaApplier;
  // Adds what the node's patched-kernel counters moved by since its previous report.
  void CountSlotsLocked(const std::string& node, Node& n, const v1::AgentHeartbeat& hb)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells watchers about replicas joining or gone and the store unreadable or back.
  void NoticeSourcesLocked(const absl::Status& read, const std::vector<std::string>& live)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t NowNs() const { return absl::ToUnixNanos(clock_()); }

  const Options opts_;
  std::unique_ptr<Store> store_;
  std::shared_ptr<FleetMetrics> metrics_;  // may be null
  const Clock clock_;
  // Until started_ + heartbeat_timeout, nodes known from the store that have not
  // reconnected yet count as pending (not excluded as down), so a restart does not end
  // a rollout before its nodes had a chance to come back.
  const absl::Time started_;
  HitHub hub_;

  absl::Mutex mu_;
  std::map<std::string, Node> nodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Set> sets_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Bumped by every write of this replica to the store: a Sync that read the store before
  // a local write does not apply what it read (it would undo that write until next time).
  uint64_t local_writes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Incremental evaluation (EvaluateLocked).
  std::set<std::string> due_ ABSL_GUARDED_BY(mu_);  // set ids whose inputs changed
  bool all_due_ ABSL_GUARDED_BY(mu_) = true;
  absl::Time next_wake_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();  // a time-based step
  bool was_acting_ ABSL_GUARDED_BY(mu_) = false;
  bool count_grace_ ABSL_GUARDED_BY(mu_) = true;     // the counts' view of the restart grace
  uint64_t drift_repairs_ ABSL_GUARDED_BY(mu_) = 0;  // CheckCountsLocked found a drift
  std::vector<Set*> live_ ABSL_GUARDED_BY(mu_);
  bool live_valid_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t live_gen_ ABSL_GUARDED_BY(mu_) = 0;  // bumped when live_ is rebuilt
  // Replicas: the live ones at the last sync, whether the store could be read.
  std::set<std::string> replicas_ ABSL_GUARDED_BY(mu_);
  bool sources_known_ ABSL_GUARDED_BY(mu_) = false;
  bool sources_readable_ ABSL_GUARDED_BY(mu_) = true;
  absl::Status sync_error_ ABSL_GUARDED_BY(mu_);  // of the last read of the statuses
  std::thread ticker_;
};

bool IsTerminal(v1::RolloutState s);

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_FLEET_H_
