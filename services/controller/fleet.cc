#include "services/controller/fleet.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "services/agent/cost.h"
#include "services/agent/probe_convert.h"
#include "services/common/enum_names.h"
#include "services/common/log.h"
#include "services/common/open_file.h"
#include "services/common/page_token.h"
#include "services/common/placement.h"
#include "services/common/probe_spec.h"
#include "services/common/proto_time.h"
#include "services/controller/probe_status.h"
#include "services/controller/selector.h"

namespace xolfleet::controller {
namespace {

bool Active(v1::RolloutState s) {
  return s == v1::ROLLOUT_STATE_CANARY || s == v1::ROLLOUT_STATE_ROLLING ||
         s == v1::ROLLOUT_STATE_COMPLETE || s == v1::ROLLOUT_STATE_DEGRADED;
}

std::string NewSetId() {
  static absl::BitGen* gen = new absl::BitGen();
  static absl::Mutex* mu = new absl::Mutex();
  absl::MutexLock l(mu);
  return absl::StrFormat("ps-%012x", absl::Uniform<uint64_t>(*gen) & 0xffffffffffffULL);
}

// The index of a fleet probe in its set, from its id "<set_id>/<index>" (FleetProbeId).
int ProbeIndexOf(absl::string_view fleet_probe_id) {
  int index = -1;
  (void)absl::SimpleAtoi(fleet_probe_id.substr(fleet_probe_id.rfind('/') + 1), &index);
  return index;
}

}  // namespace

bool IsTerminal(v1::RolloutState s) {
  return s == v1::ROLLOUT_STATE_COMPLETE || s == v1::ROLLOUT_STATE_ROLLED_BACK ||
         s == v1::ROLLOUT_STATE_DEGRADED || s == v1::ROLLOUT_STATE_DETACHED ||
         s == v1::ROLLOUT_STATE_EXPIRED;
}

FleetController::FleetController(Options opts, std::unique_ptr<Store> store,
                                 std::shared_ptr<FleetMetrics> metrics, Clock clock)
    : opts_(opts),
      store_(std::move(store)),
      metrics_(std::move(metrics)),
      clock_(std::move(clock)),
      started_(clock_()),
      hub_([m = metrics_](uint64_t n) {
        if (m) m->HitUpdatesDropped(n);
      }) {}

absl::StatusOr<std::unique_ptr<FleetController>> FleetController::Create(
    Options opts, std::unique_ptr<Store> store, std::shared_ptr<FleetMetrics> metrics,
    Clock clock) {
  auto sets = store->LoadSets();
  if (!sets.ok()) return sets.status();
  auto agents = store->LoadAgents();
  if (!agents.ok()) return agents.status();
  std::unique_ptr<FleetController> c(
      new FleetController(opts, std::move(store), std::move(metrics), std::move(clock)));
  absl::MutexLock l(&c->mu_);
  for (auto& a : *agents) {
    Node& n = c->nodes_[a.registration.node_name()];
    n.reg = std::move(a.registration);
    n.identity = a.identity;
    n.last_seen = absl::FromUnixNanos(a.last_seen_unix_ns);
  }
  for (auto& s : *sets) {
    Set& set = c->sets_[s.rollout.set_id()];
    set.canary.insert(s.rollout.canary_nodes().begin(), s.rollout.canary_nodes().end());
    set.stored = std::move(s);
  }
  return c;
}

FleetController::~FleetController() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
}

void FleetController::Start() {
  ticker_ = std::thread([this] {
    for (;;) {
      {
        absl::MutexLock l(&mu_);
        auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
        if (mu_.AwaitWithTimeout(absl::Condition(&stop), opts_.tick)) return;
      }
      Sync();
      Tick();
    }
  });
}

bool FleetController::Acting() {
  absl::MutexLock l(&mu_);
  return ActingLocked();
}

bool FleetController::ActingLocked() {
  return opts_.coordinator == nullptr || opts_.coordinator->IsLeader();
}

void FleetController::PublishLocked(const Node& n) {
  if (!opts_.coordinator || !n.session) return;
  AgentStatusRecord r;
  r.replica = opts_.coordinator->replica();
  r.peer = n.peer;
  r.identity = n.identity;
  r.registration = n.reg;
  r.have_heartbeat = n.have_heartbeat;
  if (n.have_heartbeat) r.heartbeat = n.last_hb();
  r.last_seen_unix_ns = absl::ToUnixNanos(n.last_seen);
  opts_.coordinator->PublishStatus(r);
}

void FleetController::Sync() {
  Coordinator* coord = opts_.coordinator.get();
  if (!coord) return;
  uint64_t writes;
  {
    absl::MutexLock l(&mu_);
    writes = local_writes_;
  }
  // Store I/O without the lock: reads keep being served while etcd is slow or down.
  auto sets = store_->LoadSets();
  auto agents = store_->LoadAgents();
  auto statuses = coord->LoadStatuses();
  auto replicas = coord->LoadReplicas();
  std::vector<v1::FleetHitUpdate> updates;
  absl::MutexLock l(&mu_);
  if (sets.ok() && agents.ok() && writes == local_writes_) {
    std::map<std::string, Set> next;
    for (auto& st : *sets) {
      Set& set = next[st.rollout.set_id()];
      set.canary.insert(st.rollout.canary_nodes().begin(), st.rollout.canary_nodes().end());
      set.stored = std::move(st);
    }
    sets_ = std::move(next);
    std::set<std::string> known;
    for (auto& a : *agents) {
      const std::string name = a.registration.node_name();
      known.insert(name);
      auto [it, added] = nodes_.try_emplace(name);
      if (added) {
        it->second.reg = std::move(a.registration);
        it->second.identity = a.identity;
        it->second.last_seen = absl::FromUnixNanos(a.last_seen_unix_ns);
      }
    }
    for (auto it = nodes_.begin(); it != nodes_.end();) {
      // Forgotten on another replica (ForgetAgent needs the node down everywhere).
      if (!known.count(it->first) && !it->second.session) {
        it = nodes_.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (statuses.ok()) {
    std::map<std::string, AgentStatusRecord*> by_node;
    for (auto& r : *statuses) {
      if (r.replica != coord->replica()) by_node[r.registration.node_name()] = &r;
    }
    const absl::Time now = clock_();
    for (auto& [name, n] : nodes_) {
      if (n.session) continue;  // connected here: our own view is first-hand
      auto it = by_node.find(name);
      if (it == by_node.end()) {
        if (n.remote) n.up = false;  // its replica withdrew it, or died (lease expired)
        n.remote = false;
        continue;
      }
      AgentStatusRecord& r = *it->second;
      n.remote = true;
      // Hits (fleet.h, "Hits across replicas"): counted from a record newer than the
      // last one counted for the node. An older one is a stale write of a replica the
      // agent has left; an equal one was counted at the previous sync.
      const bool fresh = r.have_heartbeat && r.last_seen_unix_ns > n.hits_seen_ns;
      n.replica = r.replica;
      n.reg = std::move(r.registration);
      n.identity = r.identity;
      n.peer = r.peer;
      n.last_seen = absl::FromUnixNanos(r.last_seen_unix_ns);
      n.up = now - n.last_seen <= opts_.heartbeat_timeout;
      n.have_heartbeat = r.have_heartbeat;
      // A record holds a full heartbeat: it replaces the view (one over the limits is
      // refused and the previous view stays).
      r.heartbeat.clear_delta();
      if (auto applied = n.hb.Apply(std::move(r.heartbeat)); !applied.ok()) {
        Log("controller: node ", name, ": status record of replica ", n.replica,
            " not taken: ", applied.status().message());
      }
      n.reports.Build(n.last_hb());
      if (fresh) {
        const uint64_t counted =
            CountHitsLocked(name, n, n.last_hb(), r.last_seen_unix_ns, &updates);
        n.hits_seen_ns = r.last_seen_unix_ns;
        CountSlotsLocked(name, n, n.last_hb());
        if (metrics_ && counted > 0) {
          metrics_->RemoteHitsDelay(absl::ToDoubleSeconds(now - n.last_seen));
        }
      } else if (n.last_hb().has_slot_stats() && n.last_hb().slot_stats().available() &&
                 !n.have_slots) {
        n.slots = n.last_hb().slot_stats();
        n.have_slots = true;
      }
    }
  }
  NoticeSourcesLocked(statuses.ok() ? replicas.status() : statuses.status(),
                      replicas.ok() ? *replicas : std::vector<std::string>{});
  hub_.Publish(updates);
  // Sets and nodes may all have changed: every rollout is counted and evaluated afresh.
  SetsChangedLocked();
  InvalidateCountsLocked();
  PushAllLocked();
}

void FleetController::NoticeSourcesLocked(const absl::Status& read,
                                          const std::vector<std::string>& live) {
  Coordinator* coord = opts_.coordinator.get();
  sync_error_ = read;
  if (!read.ok()) {
    if (sources_readable_) {
      sources_readable_ = false;
      hub_.Notice(
          absl::StrCat("cannot read the other replicas' agent statuses from etcd (", read.message(),
                       "): hits of agents connected to other replicas are delayed until it can"));
    }
    return;
  }
  if (!sources_readable_) {
    sources_readable_ = true;
    hub_.Notice(
        "the other replicas' agent statuses are readable again: their agents' hits resume, none "
        "lost (totals are cumulative)");
  }
  std::set<std::string> now(live.begin(), live.end());
  if (!sources_known_) {
    sources_known_ = true;
    replicas_ = std::move(now);
    return;
  }
  for (const std::string& r : now) {
    if (!replicas_.count(r) && r != coord->replica()) {
      hub_.Notice(absl::StrCat("replica ", r, " joined: hits of the agents it holds are merged"));
    }
  }
  for (const std::string& r : replicas_) {
    if (now.count(r) || r == coord->replica()) continue;
    std::vector<std::string> held;
    for (const auto& [name, n] : nodes_) {
      if (!n.session && !n.remote && n.replica == r) held.push_back(name);
    }
    hub_.Notice(absl::StrCat(
        "replica ", r,
        " is gone (stopped, or killed and its etcd lease expired): hits of the agents it held (",
        held.empty() ? "none" : absl::StrJoin(held, ", "),
        ") are not seen until they reconnect to a live replica; none are lost"));
  }
  replicas_ = std::move(now);
}

std::string FleetController::HitSourcesNotice() {
  Coordinator* coord = opts_.coordinator.get();
  if (!coord) return "";
  absl::MutexLock l(&mu_);
  std::set<std::string> all = replicas_;
  all.insert(coord->replica());
  std::vector<std::string> names;
  for (const std::string& r : all) {
    names.push_back(r == coord->replica() ? absl::StrCat(r, " (this one)") : r);
  }
  return absl::StrCat(
      "merging the hits of the agents of every replica: ", absl::StrJoin(names, ", "),
      sources_readable_ ? "" : " (the store is unreadable now: others delayed)");
}

uint32_t FleetController::BudgetBreachesLocked(const Node& n) {
  uint32_t k = 0;
  for (const auto& p : n.last_hb().probes()) {
    const v1::BudgetState st = p.cost().budget_state();
    if (st == v1::BUDGET_STATE_ALERTED || st == v1::BUDGET_STATE_THROTTLED ||
        st == v1::BUDGET_STATE_DETACHED)
      ++k;
  }
  return k;
}

absl::StatusOr<v1::FleetAttachResponse> FleetController::DryRun(const v1::FleetAttachRequest& req) {
  if (auto s = ValidateAttach(req); !s.ok()) return s;
  struct NodeView {
    std::string name, profile;
    bool up;
    v1::Calibration calibration;
    v1::NodeCost cost;
  };
  std::vector<NodeView> nodes;
  {
    absl::MutexLock l(&mu_);
    for (const auto& [name, n] : nodes_) {
      if (!Matches(req.selector(), n.reg)) continue;
      nodes.push_back(
          {name, n.reg.kernel_profile(), n.up, n.last_hb().calibration(), n.last_hb().cost()});
    }
  }
  if (nodes.empty()) {
    return absl::FailedPreconditionError("the selector matches no known agent; nothing to predict");
  }
  // Classified once per kernel profile, outside the lock (it reads the binaries).
  v1::ClassifyRequest creq;
  for (const auto& spec : req.specs()) {
    v1::ProbeSpec* site = creq.add_sites();
    site->set_binary_path(spec.binary_path());
    site->set_symbol(spec.symbol());
    site->set_offset(spec.offset());
    site->set_allow_relocate(spec.allow_relocate());
    site->set_confirm_raw_offset(spec.confirm_raw_offset());
  }
  std::map<std::string, v1::ClassifyResponse> by_profile;
  for (const auto& nv : nodes) {
    if (by_profile.count(nv.profile)) continue;
    absl::StatusOr<KernelProfile> kp = ParseProfile(nv.profile);
    if (!kp.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("node ", nv.name, " reports kernel profile '", nv.profile,
                       "', which the controller cannot classify for"));
    }
    absl::StatusOr<v1::ClassifyResponse> r = ClassifySites(
        creq, *kp, [](const v1::ProbeSpec& s) { return OpenFile::Open(s.binary_path()); });
    if (!r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat("classifying on the controller's copy of the binaries (a "
                                       "fleet dry run needs them here): ",
                                       r.status().message()));
    }
    by_profile[nv.profile] = std::move(*r);
  }
  const double rate = req.expected_calls_per_sec();
  v1::FleetAttachResponse resp;
  struct ProfileSum {
    uint32_t nodes = 0, calibrated_sites = 0;
    double ns_sum = 0, cpu_sum = 0;
  };
  std::map<std::string, ProfileSum> sums;
  for (const auto& nv : nodes) {
    const v1::ClassifyResponse& cr = by_profile[nv.profile];
    const CostModel model(nv.calibration);
    v1::NodeCostPrediction* np = resp.add_predictions();
    np->set_node_name(nv.name);
    np->set_kernel_profile(nv.profile);
    np->set_up(nv.up);
    np->set_calibrated(!model.empty());
    double cpu = 0;
    ProfileSum& ps = sums[nv.profile];
    ++ps.nodes;
    for (int i = 0; i < cr.sites_size(); ++i) {
      v1::SitePlacement* site = np->add_sites();
      *site = cr.sites(i);
      std::optional<double> ns = model.NsPerHit(site->placement());
      site->set_expected_ns_per_hit(ns.value_or(0));
      if (ns) {
        ps.ns_sum += *ns;
        ++ps.calibrated_sites;
      }
      const v1::ProbeSpec& spec = req.specs(i < req.specs_size() ? i : 0);
      double events = spec.capture_size() > 0 ? rate : 0;
      if (spec.rate_limit_per_sec() > 0)
        events = std::min<double>(events, spec.rate_limit_per_sec());
      v1::ProbeCost c;
      EstimateCost(model, site->placement(), rate, events, &c);
      cpu += c.cpu_seconds_per_sec();
    }
    np->set_predicted_cpu_seconds_per_sec(cpu);
    np->set_current_cpu_seconds_per_sec(nv.cost.cpu_seconds_per_sec());
    np->set_node_budget(nv.cost.node_budget());
    np->set_over_budget(nv.cost.node_budget() > 0 &&
                        cpu + nv.cost.cpu_seconds_per_sec() > nv.cost.node_budget());
    ps.cpu_sum += cpu;
  }
  for (const auto& [profile, ps] : sums) {
    v1::ProfileCostPrediction* pp = resp.add_profiles();
    pp->set_kernel_profile(profile);
    pp->set_nodes(ps.nodes);
    for (const auto& [name, n] : by_profile[profile].totals())
      (*pp->mutable_placements())[name] = n;
    pp->set_mean_ns_per_hit(ps.calibrated_sites ? ps.ns_sum / ps.calibrated_sites : 0);
    pp->set_predicted_cpu_seconds_per_sec(ps.nodes ? ps.cpu_sum / ps.nodes : 0);
  }
  return resp;
}

bool FleetController::Desired(const Set& s, const Node& n) const {
  switch (s.stored.rollout.state()) {
    case v1::ROLLOUT_STATE_CANARY:
      return s.canary.count(n.reg.node_name()) > 0;
    case v1::ROLLOUT_STATE_ROLLING:
    case v1::ROLLOUT_STATE_COMPLETE:
    case v1::ROLLOUT_STATE_DEGRADED:
      return Matches(s.stored.request.selector(), n.reg);
    default:
      return false;
  }
}

std::vector<std::string> FleetController::DesiredSetsLocked(const Node& n) const {
  std::vector<std::string> out;
  for (const auto& [id, s] : sets_) {
    if (Desired(s, n)) out.push_back(id);
  }
  return out;
}

void FleetController::PushLocked(Node& n, bool force) {
  if (!n.session) return;
  std::vector<std::string> want = DesiredSetsLocked(n);
  if (!force && want == n.pushed) return;
  v1::ControllerMessage msg;
  auto* d = msg.mutable_desired();
  d->set_generation(++generation_);
  absl::Time now = clock_();
  for (const auto& id : want) {
    const Set& s = sets_.at(id);
    auto* ds = d->add_sets();
    ds->set_set_id(id);
    // The TTL left fleet-wide, whole seconds rounded up (at least one).
    absl::Duration left = absl::ZeroDuration();
    if (s.stored.rollout.has_expires_at()) {
      left = std::max(
          absl::Seconds(1),
          absl::Ceil(FromTimestamp(s.stored.rollout.expires_at()) - now, absl::Seconds(1)));
    }
    for (const auto& spec : s.stored.request.specs()) {
      auto* out = ds->add_specs();
      *out = spec;
      if (left > absl::ZeroDuration()) {
        *out->mutable_ttl() = ToDurationProto(left);
      } else {
        out->clear_ttl();
      }
    }
  }
  n.pushed = std::move(want);
  n.session->Send(msg);
}

void FleetController::PushAllLocked() {
  for (auto& [name, n] : nodes_) PushLocked(n, false);
}

bool FleetController::PersistLocked(const Set& s) {
  ++local_writes_;
  if (opts_.coordinator) {
    // Fenced: written only while this replica is still the leader. What is not written
    // is not kept (the caller reverts; the next Sync shows the store's state).
    if (auto st = opts_.coordinator->PutSetAsLeader(s.stored); !st.ok()) {
      Log("controller: set ", s.stored.rollout.set_id(), ": ", st.message());
      return false;
    }
    return true;
  }
  if (auto st = store_->PutSet(s.stored); !st.ok()) {
    // Memory stays ahead of the store only for a rollout state change; the next
    // transition (or a restart, which re-evaluates from the stored state) repairs it.
    Log("controller: persisting set ", s.stored.rollout.set_id(), ": ", st.message());
  }
  return true;
}

bool FleetController::FinishLocked(Set& s, v1::RolloutState state, const std::string& message,
                                   const char* outcome) {
  auto& r = s.stored.rollout;
  const v1::Rollout before = r;
  r.set_state(state);
  r.set_message(message);
  *r.mutable_finished_at() = ToTimestamp(absl::FromUnixNanos(NowNs()));
  SetsChangedLocked();
  s.counted = false;
  if (!PersistLocked(s)) {
    r = before;
    return false;
  }
  if (metrics_ && outcome) metrics_->RolloutFinished(outcome);
  return true;
}

v1::Rollout FleetController::RolloutLocked(const Set& s) const {
  v1::Rollout r = s.stored.rollout;
  uint32_t attached = 0, failed = 0, pending = 0;
  bool grace = clock_() < started_ + opts_.heartbeat_timeout;
  for (const auto& [name, n] : nodes_) {
    if (!Desired(s, n)) continue;
    if (!n.up) {
      if (grace && !n.seen_this_run) ++pending;  // may still be reconnecting
      continue;
    }
    const v1::AgentSetStatus* set = n.reports.Set(r.set_id());
    v1::SetState st = set == nullptr ? v1::SET_STATE_PENDING : set->state();
    if (st == v1::SET_STATE_ATTACHED || st == v1::SET_STATE_EXPIRED) {
      ++attached;
    } else if (st == v1::SET_STATE_FAILED) {
      ++failed;
    } else {
      ++pending;
    }
  }
  r.set_nodes_attached(attached);
  r.set_nodes_failed(failed);
  r.set_nodes_pending(pending);
  return r;
}

FleetController::Part FleetController::PartLocked(const Set& s, const std::string& name,
                                                  const Node& n) const {
  const std::string& id = s.stored.rollout.set_id();
  switch (s.stored.rollout.state()) {
    case v1::ROLLOUT_STATE_CANARY: {
      if (!s.canary.count(name)) return Part::kNone;
      const v1::AgentSetStatus* set = n.reports.Set(id);
      if (n.up && set != nullptr && (set->state() == v1::SET_STATE_FAILED || set->over_budget())) {
        return Part::kCanaryFailed;
      }
      if (!n.up || set == nullptr || set->state() != v1::SET_STATE_ATTACHED) {
        return Part::kCanaryWaiting;
      }
      return Part::kCanaryAttached;
    }
    case v1::ROLLOUT_STATE_ROLLING: {
      if (!Desired(s, n)) return Part::kNone;
      if (!n.up) return count_grace_ && !n.seen_this_run ? Part::kPending : Part::kNone;
      const v1::AgentSetStatus* set = n.reports.Set(id);
      v1::SetState st = set == nullptr ? v1::SET_STATE_PENDING : set->state();
      if (st == v1::SET_STATE_ATTACHED || st == v1::SET_STATE_EXPIRED) return Part::kAttached;
      if (st == v1::SET_STATE_FAILED) return Part::kFailed;
      return Part::kPending;
    }
    default:
      return Part::kNone;
  }
}

const std::vector<FleetController::Set*>& FleetController::LiveLocked() {
  if (!live_valid_) {
    live_.clear();
    for (auto& [id, s] : sets_) {
      v1::RolloutState st = s.stored.rollout.state();
      if (st == v1::ROLLOUT_STATE_CANARY || st == v1::ROLLOUT_STATE_ROLLING) live_.push_back(&s);
    }
    live_valid_ = true;
    ++live_gen_;
  }
  return live_;
}

FleetController::Parts FleetController::PartsLocked(const std::string& name, const Node* n) {
  GraceLocked();
  const std::vector<Set*>& live = LiveLocked();
  Parts out{live_gen_, {}};
  out.parts.reserve(live.size());
  for (const Set* s : live) out.parts.push_back(n ? PartLocked(*s, name, *n) : Part::kNone);
  return out;
}

void FleetController::RepartLocked(const std::string& name, const Node* n, const Parts& before) {
  const std::vector<Set*>& live = LiveLocked();
  if (live_gen_ != before.live_gen) {  // sets changed in between (not expected): recount
    InvalidateCountsLocked();
    return;
  }
  for (size_t i = 0; i < live.size(); ++i) {
    Set& s = *live[i];
    Part after = n ? PartLocked(s, name, *n) : Part::kNone;
    if (after == before.parts[i]) continue;
    CountLocked(s, before.parts[i], -1);
    CountLocked(s, after, +1);
    due_.insert(s.stored.rollout.set_id());
  }
}

void FleetController::CountLocked(Set& s, Part p, int d) const {
  if (!s.counted || s.stored.rollout.state() != v1::ROLLOUT_STATE_ROLLING) return;
  switch (p) {
    case Part::kAttached:
      s.attached += d;
      break;
    case Part::kFailed:
      s.failed += d;
      break;
    case Part::kPending:
      s.pending += d;
      break;
    default:
      break;
  }
}

void FleetController::RecountLocked(Set& s) {
  s.attached = s.failed = s.pending = 0;
  s.counted = true;
  for (const auto& [name, n] : nodes_) CountLocked(s, PartLocked(s, name, n), +1);
}

void FleetController::InvalidateCountsLocked() {
  for (auto& [id, s] : sets_) s.counted = false;
  all_due_ = true;
}

void FleetController::GraceLocked() {
  bool grace = clock_() < started_ + opts_.heartbeat_timeout;
  if (grace == count_grace_) return;
  count_grace_ = grace;  // down nodes not seen since the restart stop counting as pending
  InvalidateCountsLocked();
}

void FleetController::CheckCountsLocked() {
  GraceLocked();
  for (auto& [id, s] : sets_) {
    if (!s.counted || s.stored.rollout.state() != v1::ROLLOUT_STATE_ROLLING) continue;
    const uint32_t a = s.attached, f = s.failed, p = s.pending;
    RecountLocked(s);
    if (a != s.attached || f != s.failed || p != s.pending) {
      Log("controller: BUG: set ", id, ": rollout counts drifted (attached/failed/pending ", a, "/",
          f, "/", p, ", recounted ", s.attached, "/", s.failed, "/", s.pending, ")");
      due_.insert(id);
      ++drift_repairs_;
    }
  }
}

FleetController::CountCheck FleetController::CheckCountsForTest() {
  absl::MutexLock l(&mu_);
  CountCheck out;
  out.repaired = drift_repairs_;
  // Once the restart grace has ended but no call has taken that in yet (GraceLocked), the
  // counts are still those of the grace and are recounted at the next call: the Rollout
  // view (which reads the clock) is compared only when both agree on the grace.
  const bool grace = clock_() < started_ + opts_.heartbeat_timeout;
  for (const auto& [id, s] : sets_) {
    if (!s.counted || s.stored.rollout.state() != v1::ROLLOUT_STATE_ROLLING) continue;
    ++out.checked;
    Set fresh = s;  // a copy recounted from scratch, the kept counts left as they are
    RecountLocked(fresh);
    const uint32_t a = fresh.attached, f = fresh.failed, p = fresh.pending;
    const v1::Rollout r = RolloutLocked(s);
    const bool view = grace == count_grace_;
    if (a != s.attached || f != s.failed || p != s.pending ||
        (view && (r.nodes_attached() != s.attached || r.nodes_failed() != s.failed ||
                  r.nodes_pending() != s.pending))) {
      out.drifted.push_back(absl::StrCat(
          id, ": kept attached/failed/pending ", s.attached, "/", s.failed, "/", s.pending,
          ", recounted ", a, "/", f, "/", p, view ? ", rollout view " : "",
          view ? absl::StrCat(r.nodes_attached(), "/", r.nodes_failed(), "/", r.nodes_pending())
               : ""));
    }
  }
  return out;
}

void FleetController::EvaluateLocked(bool all) {
  if (!ActingLocked()) {  // another replica leads
    was_acting_ = false;
    return;
  }
  GraceLocked();
  absl::Time now = clock_();
  if (!was_acting_ || all_due_ || now >= next_wake_) all = true;
  was_acting_ = true;
  std::vector<std::string> ids;
  if (all) {
    for (const Set* s : LiveLocked()) ids.push_back(s->stored.rollout.set_id());
    next_wake_ = absl::InfiniteFuture();
    all_due_ = false;
  } else {
    ids.assign(due_.begin(), due_.end());
  }
  due_.clear();
  // The restart grace ends: down nodes not seen since stop counting as pending.
  if (count_grace_) next_wake_ = std::min(next_wake_, started_ + opts_.heartbeat_timeout);
  bool changed = false;
  for (const std::string& id : ids) {
    auto sit = sets_.find(id);
    if (sit == sets_.end()) continue;  // detached
    Set& s = sit->second;
    auto& r = s.stored.rollout;
    if (r.state() == v1::ROLLOUT_STATE_CANARY) {
      std::vector<std::string> waiting;
      std::string failure;
      for (const auto& c : s.canary) {
        auto nit = nodes_.find(c);
        if (nit == nodes_.end()) continue;  // forgotten node: nothing to wait for
        const Node& n = nit->second;
        const v1::AgentSetStatus* set = n.reports.Set(id);
        if (n.up && set != nullptr &&
            (set->state() == v1::SET_STATE_FAILED || set->over_budget())) {
          failure = absl::StrCat("canary node ", c, " failed: ", set->status_message());
          break;
        }
        if (!n.up || set == nullptr || set->state() != v1::SET_STATE_ATTACHED) {
          waiting.push_back(c);
        }
      }
      const v1::RolloutPolicy& pol = s.stored.request.policy();
      absl::Duration timeout =
          pol.has_canary_timeout() && FromDurationProto(pol.canary_timeout()) > absl::ZeroDuration()
              ? FromDurationProto(pol.canary_timeout())
              : opts_.default_canary_timeout;
      // A soak: every canary must keep the set without failing (a budget breach is a
      // failure: SET_FAILED after a budget detach, over_budget after an alert or a
      // throttle) for this long before it rolls out.
      const absl::Duration soak = FromDurationProto(pol.canary_soak());
      timeout = std::max(timeout, soak + absl::Seconds(30));
      const absl::Time created = FromTimestamp(r.created_at());
      // Time-based steps: the soak ends, the timeout passes.
      if (created + soak > now) next_wake_ = std::min(next_wake_, created + soak);
      if (created + timeout >= now) {
        next_wake_ = std::min(next_wake_, created + timeout + absl::Nanoseconds(1));
      }
      if (failure.empty() && waiting.empty() && now < created + soak) {
        continue;  // healthy so far; still soaking
      }
      if (failure.empty() && !waiting.empty() && now > created + timeout) {
        failure = absl::StrCat("canary timed out after ", absl::FormatDuration(timeout),
                               "; not attached on: ", absl::StrJoin(waiting, ","));
      }
      if (!failure.empty()) {
        if (FinishLocked(s, v1::ROLLOUT_STATE_ROLLED_BACK, absl::StrCat(failure, "; rolled back"),
                         "rolled_back")) {
          changed = true;
        } else {
          due_.insert(id);  // not written (replicas): tried again on the next evaluation
        }
      } else if (waiting.empty()) {
        const v1::Rollout before = r;
        r.set_state(v1::ROLLOUT_STATE_ROLLING);
        r.set_message("canary healthy; rolling out to every selected node");
        SetsChangedLocked();
        s.counted = false;
        if (PersistLocked(s)) {
          changed = true;
        } else {
          r = before;
          due_.insert(id);
        }
      }
    }
    if (r.state() == v1::ROLLOUT_STATE_ROLLING) {
      if (!s.counted) RecountLocked(s);
      // Done when no selected node that is up (or still expected back) is pending,
      // and at least one node answered.
      if (s.pending == 0 && s.attached + s.failed > 0) {
        bool done;
        if (s.failed > 0) {
          done =
              FinishLocked(s, v1::ROLLOUT_STATE_DEGRADED,
                           absl::StrCat(s.failed, " node(s) failed after the canary"), "degraded");
        } else {
          done = FinishLocked(s, v1::ROLLOUT_STATE_COMPLETE,
                              absl::StrCat("attached on ", s.attached, " node(s)"), "complete");
        }
        changed |= done;
        if (!done) due_.insert(id);
      }
    }
  }
  if (changed) PushAllLocked();
}

absl::Status FleetController::Register(std::shared_ptr<AgentSession> session,
                                       const v1::AgentRegister& reg, const std::string& identity,
                                       const std::string& peer) {
  if (auto s = ValidateRegister(reg); !s.ok()) return s;
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(reg.node_name());
  if (it == nodes_.end() && nodes_.size() >= opts_.max_agents) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the controller already knows ", nodes_.size(), " agents (limit)"));
  }
  StoredAgent rec{reg, NowNs(), identity};
  ++local_writes_;
  if (auto s = store_->PutAgent(rec); !s.ok()) return s;
  const std::string& name = reg.node_name();
  const bool known = it != nodes_.end();
  const Parts before = PartsLocked(name, known ? &it->second : nullptr);
  Node& n = nodes_[name];
  if (n.session && n.session != session) n.session->Close();
  n.reg = reg;
  n.identity = identity;
  n.peer = peer;
  n.session = std::move(session);
  n.up = true;
  n.remote = false;
  n.replica = opts_.coordinator ? opts_.coordinator->replica() : "";
  n.seen_this_run = true;
  n.last_seen = clock_();
  n.have_heartbeat = false;
  n.hb.Reset();  // a new stream: its first heartbeat is full
  n.reports.Clear();
  RepartLocked(name, &n, before);
  if (metrics_) metrics_->AgentConnected();
  v1::ControllerMessage ack;
  *ack.mutable_registered()->mutable_heartbeat_interval() =
      ToDurationProto(opts_.heartbeat_interval);
  n.session->Send(ack);
  PushLocked(n, /*force=*/true);
  PublishLocked(n);
  return absl::OkStatus();
}

// Keeps the node's reports index in step with its view while a delta changes it, and
// counts the hits of each probe report that enters (as CountHitsLocked does for a whole
// heartbeat): a delta costs what it carries.
class FleetController::DeltaApplier : public HeartbeatDeltaDecoder::Observer {
 public:
  DeltaApplier(FleetController* fc, const std::string& node, Node& n, int64_t at_ns,
               std::vector<v1::FleetHitUpdate>* updates)
      : fc_(fc), node_(node), n_(n), at_ns_(at_ns), updates_(updates) {}

  void ProbeLeaving(const v1::AgentProbeStatus& old,
                    const v1::AgentProbeStatus* incoming) override {
    // Overwritten in place under the same fleet probe id: the index stays as it is.
    reindex_ = incoming == nullptr || incoming->fleet_probe_id() != old.fleet_probe_id();
    if (reindex_) n_.reports.RemoveProbe(old);
    if (!incoming) ForgetMark(old);
    leaving_ = incoming != nullptr;
  }
  void ProbeEntered(const v1::AgentProbeStatus& p) override {
    if (!leaving_ || reindex_) n_.reports.AddProbe(p);
    leaving_ = false;
    if (!Counted(p)) {
      ForgetMark(p);
      return;
    }
    auto [mit, added] = n_.hit_marks.try_emplace(p.fleet_probe_id());
    uint64_t delta = p.hits();  // a new local probe (agent restart or reattach)
    if (!added && mit->second.first == p.local_probe_id() && p.hits() >= mit->second.second) {
      delta = p.hits() - mit->second.second;
    }
    mit->second.first = p.local_probe_id();
    mit->second.second = p.hits();
    if (delta == 0) return;
    placement_hits_[p.placement()] += delta;
    if (fc_->hub_.watchers() == 0) return;  // updates are built only for someone
    v1::FleetHitUpdate u;
    u.set_node_name(node_);
    u.set_set_id(p.set_id());
    u.set_fleet_probe_id(p.fleet_probe_id());
    u.set_placement(p.placement());
    u.set_hits_total(p.hits());
    u.set_hits_delta(delta);
    *u.mutable_at() = ToTimestamp(absl::FromUnixNanos(at_ns_));
    u.set_replica(fc_->opts_.coordinator ? fc_->opts_.coordinator->replica() : "");
    updates_->push_back(std::move(u));
  }
  void SetLeaving(const v1::AgentSetStatus& old, bool gone) override {
    if (gone) n_.reports.RemoveSet(old);
  }
  void SetEntered(const v1::AgentSetStatus& now, bool added) override {
    if (added) n_.reports.AddSet(now);
  }

  // Adds the hits counted to the node's counters, once per placement.
  void Finish() {
    if (!fc_->metrics_) return;
    for (const auto& [placement, hits] : placement_hits_) {
      fc_->metrics_->AddHits(node_, PlacementLabel(placement), hits);
    }
  }

 private:
  static bool Counted(const v1::AgentProbeStatus& p) {
    return p.state() == v1::PROBE_STATE_ATTACHED || p.state() == v1::PROBE_STATE_EXPIRED;
  }
  // A report no longer counted drops its mark (as a whole heartbeat without it would).
  void ForgetMark(const v1::AgentProbeStatus& p) {
    auto mit = n_.hit_marks.find(p.fleet_probe_id());
    if (mit != n_.hit_marks.end() && mit->second.first == p.local_probe_id()) {
      n_.hit_marks.erase(mit);
    }
  }

  FleetController* const fc_;
  const std::string& node_;
  Node& n_;
  const int64_t at_ns_;
  std::vector<v1::FleetHitUpdate>* const updates_;
  std::map<v1::Placement, uint64_t> placement_hits_;
  bool leaving_ = false;  // between ProbeLeaving (overwritten) and ProbeEntered
  bool reindex_ = false;  // ... under another fleet probe id
};

absl::Status FleetController::Heartbeat(const AgentSession* session, const std::string& node,
                                        v1::AgentHeartbeat hb, bool* want_full) {
  if (hb.probes_size() > 100000 || hb.sets_size() > 20000) {
    return absl::InvalidArgumentError("heartbeat too large");
  }
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(node);
  if (it == nodes_.end() || it->second.session.get() != session) {
    return absl::FailedPreconditionError("stream replaced by a newer one for this node");
  }
  Node& n = it->second;
  const Parts before = PartsLocked(node, &n);
  std::vector<v1::FleetHitUpdate> updates;
  const int64_t now_ns = NowNs();
  DeltaApplier applier(this, node, n, now_ns, &updates);
  absl::StatusOr<HeartbeatDeltaDecoder::Applied> applied = n.hb.Apply(std::move(hb), &applier);
  if (applied.status().code() == absl::StatusCode::kFailedPrecondition && want_full) {
    *want_full = true;  // nothing changed
    return absl::OkStatus();
  }
  if (!applied.ok()) {
    // A refused delta may have changed part of the view (and told the applier): keep
    // the node's counts in step before the caller ends the stream.
    applier.Finish();
    RepartLocked(node, &n, before);
    return applied.status();
  }
  n.up = true;
  n.last_seen = clock_();
  n.have_heartbeat = true;
  const v1::AgentHeartbeat& cur = n.last_hb();
  if (*applied == HeartbeatDeltaDecoder::Applied::kReplaced) {
    n.reports.Build(cur);
    CountHitsLocked(node, n, cur, now_ns, &updates);
  } else {
    applier.Finish();
  }
  n.hits_seen_ns = now_ns;
  n.replica = opts_.coordinator ? opts_.coordinator->replica() : "";
  CountSlotsLocked(node, n, cur);
  // The patched kernel's boost switch can change at run time: the node's profile follows.
  if (!cur.kernel_profile().empty() && (cur.kernel_profile() != n.reg.kernel_profile() ||
                                        cur.kernel_boosts() != n.reg.kernel_boosts())) {
    Log("controller: node ", node, ": kernel profile ", n.reg.kernel_profile(), " -> ",
        cur.kernel_profile());
    n.reg.set_kernel_profile(cur.kernel_profile());
    n.reg.set_kernel_boosts(cur.kernel_boosts());
  }
  RepartLocked(node, &n, before);
  PublishLocked(n);
  if (metrics_) metrics_->Heartbeat();
  hub_.Publish(updates);
  EvaluateLocked();
  return absl::OkStatus();
}

uint64_t FleetController::CountHitsLocked(const std::string& node, Node& n,
                                          const v1::AgentHeartbeat& hb, int64_t at_ns,
                                          std::vector<v1::FleetHitUpdate>* updates) {
  const google::protobuf::Timestamp at = ToTimestamp(absl::FromUnixNanos(at_ns));
  const bool watched = hub_.watchers() > 0;  // updates are built only for someone
  static const std::string* const kAlone = new std::string();
  const std::string& replica = n.remote            ? n.replica
                               : opts_.coordinator ? opts_.coordinator->replica()
                                                   : *kAlone;
  // Hits per placement, added to the counters once per heartbeat (not once per probe).
  std::map<v1::Placement, uint64_t> placement_hits;
  // The new marks, computed from the old ones (a duplicate probe too compares with the
  // previous heartbeat's mark), then stored reusing the old entries.
  std::vector<std::pair<const v1::AgentProbeStatus*, uint64_t>> marked;
  for (const auto& p : hb.probes()) {
    if (p.state() != v1::PROBE_STATE_ATTACHED && p.state() != v1::PROBE_STATE_EXPIRED) continue;
    auto mit = n.hit_marks.find(p.fleet_probe_id());
    uint64_t delta = 0;
    if (mit != n.hit_marks.end() && mit->second.first == p.local_probe_id() &&
        p.hits() >= mit->second.second) {
      delta = p.hits() - mit->second.second;
    } else {
      delta = p.hits();  // a new local probe (agent restart or reattach)
    }
    marked.emplace_back(&p, delta);
    if (delta > 0) {
      placement_hits[p.placement()] += delta;
      if (!watched) continue;
      v1::FleetHitUpdate u;
      u.set_node_name(node);
      u.set_set_id(p.set_id());
      u.set_fleet_probe_id(p.fleet_probe_id());
      u.set_placement(p.placement());
      u.set_hits_total(p.hits());
      u.set_hits_delta(delta);
      *u.mutable_at() = at;
      u.set_replica(replica);
      updates->push_back(std::move(u));
    }
  }
  uint64_t counted = 0;
  for (const auto& [placement, hits] : placement_hits) {
    counted += hits;
    if (metrics_) metrics_->AddHits(node, PlacementLabel(placement), hits);
  }
  auto old = std::move(n.hit_marks);
  n.hit_marks.clear();
  for (const auto& [p, delta] : marked) {
    std::pair<std::string, uint64_t> mark{p->local_probe_id(), p->hits()};
    auto nit = n.hit_marks.find(p->fleet_probe_id());
    if (nit != n.hit_marks.end()) {
      nit->second = std::move(mark);  // a duplicate: the last one counts
      continue;
    }
    auto nh = old.extract(p->fleet_probe_id());
    if (nh) {
      nh.mapped() = std::move(mark);
      n.hit_marks.insert(std::move(nh));
    } else {
      n.hit_marks.emplace(p->fleet_probe_id(), std::move(mark));
    }
  }
  return counted;
}

void FleetController::CountSlotsLocked(const std::string& node, Node& n,
                                       const v1::AgentHeartbeat& hb) {
  if (!hb.has_slot_stats() || !hb.slot_stats().available()) return;
  const auto& s = hb.slot_stats();
  // Deltas since the previous heartbeat; the first report of a node (or one after its
  // kernel counters went backwards: a reboot) counts from zero.
  v1::KernelSlotStats d = s;
  const v1::KernelSlotStats& o = n.slots;
  if (n.have_slots && s.slot_migrations() >= o.slot_migrations() &&
      s.slot_reinstalls() >= o.slot_reinstalls() && s.hits_emulated() >= o.hits_emulated() &&
      s.hits_boosted() >= o.hits_boosted() && s.hits_boosted_riprel() >= o.hits_boosted_riprel() &&
      s.hits_single_step() >= o.hits_single_step()) {
    d.set_slot_migrations(s.slot_migrations() - o.slot_migrations());
    d.set_slot_reinstalls(s.slot_reinstalls() - o.slot_reinstalls());
    d.set_hits_emulated(s.hits_emulated() - o.hits_emulated());
    d.set_hits_boosted(s.hits_boosted() - o.hits_boosted());
    d.set_hits_boosted_riprel(s.hits_boosted_riprel() - o.hits_boosted_riprel());
    d.set_hits_single_step(s.hits_single_step() - o.hits_single_step());
  }
  if (metrics_) metrics_->AddKernelCounters(node, d);
  n.slots = s;
  n.have_slots = true;
}

void FleetController::MarkDownLocked(Node& n) {
  const std::string name = n.reg.node_name();
  const Parts before = PartsLocked(name, &n);
  if (n.session && opts_.coordinator) opts_.coordinator->RetractStatus(name);
  n.up = false;
  if (n.session) n.session->Close();
  n.session.reset();
  n.pushed.clear();
  RepartLocked(name, &n, before);
}

void FleetController::Disconnect(const AgentSession* session, const std::string& node) {
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(node);
  if (it == nodes_.end() || it->second.session.get() != session) return;
  MarkDownLocked(it->second);
  EvaluateLocked();
}

void FleetController::Tick() {
  absl::MutexLock l(&mu_);
  absl::Time now = clock_();
  for (auto& [name, n] : nodes_) {
    if (n.up && now - n.last_seen > opts_.heartbeat_timeout) MarkDownLocked(n);
  }
  bool changed = false;
  for (auto& [id, s] : sets_) {
    if (!ActingLocked()) break;  // the leader expires TTLs
    if (s.stored.rollout.has_expires_at() && Active(s.stored.rollout.state()) &&
        FromTimestamp(s.stored.rollout.expires_at()) <= now) {
      bool was_canary = s.stored.rollout.state() == v1::ROLLOUT_STATE_CANARY;
      if (!FinishLocked(s, v1::ROLLOUT_STATE_EXPIRED, "TTL expired fleet-wide", nullptr)) continue;
      if (was_canary && metrics_) metrics_->RolloutFinished("rolled_back");
      changed = true;
    }
  }
  if (changed) PushAllLocked();
  CheckCountsLocked();
  EvaluateLocked(/*all=*/true);
}

absl::StatusOr<v1::Rollout> FleetController::Attach(const v1::FleetAttachRequest& req,
                                                    const std::string& who,
                                                    absl::Time wait_deadline) {
  if (auto s = ValidateAttach(req); !s.ok()) return s;
  std::string id;
  {
    absl::MutexLock l(&mu_);
    size_t active = 0;
    for (const auto& [sid, s] : sets_) active += Active(s.stored.rollout.state()) ? 1 : 0;
    if (sets_.size() >= opts_.max_sets) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the controller holds ", sets_.size(), " probe sets (", active,
                       " active), the limit; detach some (xolctl fleet detach)"));
    }
    const auto& sel = req.selector();
    for (const auto& name : sel.node_names()) {
      if (!nodes_.count(name)) {
        return absl::NotFoundError(absl::StrCat(
            "node ", name, " has never registered (xolctl fleet agents lists the nodes)"));
      }
    }
    std::vector<std::string> selected, up;
    for (const auto& [name, n] : nodes_) {
      if (!Matches(sel, n.reg)) continue;
      selected.push_back(name);
      if (n.up) up.push_back(name);
    }
    if (up.empty() && !sync_error_.ok()) {
      // Replicas: the other replicas' agents look down because their statuses cannot be
      // read (they age past the heartbeat timeout), not because they are.
      return absl::UnavailableError(
          absl::StrCat("the selector matches no agent this replica knows to be up: it cannot read "
                       "the other replicas' agent statuses (",
                       sync_error_.message(), ")"));
    }
    if (up.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the selector matches no agent that is up (", selected.size(),
                       " known but down); nothing attached"));
    }
    double f = req.policy().canary_fraction();
    size_t ncanary = 0;
    if (f > 0) {
      ncanary = std::max<size_t>(1, static_cast<size_t>(std::ceil(f * up.size() - 1e-9)));
      ncanary = std::min(ncanary, up.size());
    }
    Set s;
    s.stored.request = req;
    s.stored.request.set_wait(false);
    s.stored.created_by = who;
    auto& r = s.stored.rollout;
    do {
      id = NewSetId();
    } while (sets_.count(id));
    r.set_set_id(id);
    const absl::Time now = absl::FromUnixNanos(NowNs());
    *r.mutable_created_at() = ToTimestamp(now);
    if (const absl::Duration ttl = FromDurationProto(req.specs(0).ttl());
        ttl > absl::ZeroDuration()) {
      *r.mutable_expires_at() = ToTimestamp(now + ttl);
    }
    for (const auto& n : selected) r.add_selected_nodes(n);
    for (size_t i = 0; i < ncanary; ++i) {
      r.add_canary_nodes(up[i]);
      s.canary.insert(up[i]);
    }
    if (ncanary > 0) {
      r.set_state(v1::ROLLOUT_STATE_CANARY);
      r.set_message(absl::StrCat("canary on ", ncanary, " of ", up.size(), " node(s)"));
    } else {
      r.set_state(v1::ROLLOUT_STATE_ROLLING);
      r.set_message(absl::StrCat("rolling out to ", up.size(), " node(s)"));
    }
    ++local_writes_;
    if (auto st = store_->PutSet(s.stored); !st.ok()) return st;  // nothing applied
    sets_.emplace(id, std::move(s));
    SetsChangedLocked();
    due_.insert(id);
    PushAllLocked();
    EvaluateLocked();
    if (!req.wait()) return RolloutLocked(sets_.at(id));
  }
  absl::MutexLock l(&mu_);
  auto done = [this, &id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = sets_.find(id);
    return it == sets_.end() || IsTerminal(it->second.stored.rollout.state()) || stopping_;
  };
  mu_.AwaitWithDeadline(absl::Condition(&done), wait_deadline);
  auto it = sets_.find(id);
  if (it == sets_.end()) return absl::AbortedError(absl::StrCat("set ", id, " was detached"));
  return RolloutLocked(it->second);
}

absl::StatusOr<v1::FleetDetachResponse> FleetController::Detach(const v1::FleetDetachRequest& req) {
  if (auto s = ValidateSetIds(req.set_ids(), /*allow_empty=*/false); !s.ok()) return s;
  absl::MutexLock l(&mu_);
  std::vector<std::string> ids(req.set_ids().begin(), req.set_ids().end());
  std::vector<std::string> missing;
  for (const auto& id : ids) {
    if (!sets_.count(id)) missing.push_back(id);
  }
  if (!missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no probe set ", absl::StrJoin(missing, ", "), "; nothing detached"));
  }
  ++local_writes_;
  if (auto s = store_->DeleteSets(ids); !s.ok()) return s;
  v1::FleetDetachResponse resp;
  for (const auto& id : ids) {
    sets_.erase(id);
    resp.add_detached_set_ids(id);
  }
  SetsChangedLocked();
  PushAllLocked();
  return resp;
}

absl::StatusOr<v1::Rollout> FleetController::GetRollout(const std::string& set_id) {
  absl::MutexLock l(&mu_);
  auto it = sets_.find(set_id);
  if (it == sets_.end()) return absl::NotFoundError(absl::StrCat("no probe set ", set_id));
  return RolloutLocked(it->second);
}

NodeReports FleetController::ReportsOf(const std::string& name, const Node& n) {
  return NodeReports{name, n.up, n.reg.kernel_profile(), n.reports};
}

absl::StatusOr<v1::ListFleetProbesResponse> FleetController::ListProbes(
    const v1::ListFleetProbesRequest& req) {
  if (auto s = ValidateSetIds(req.set_ids(), /*allow_empty=*/true); !s.ok()) return s;
  for (const auto& n : req.node_names()) {
    if (auto s = ValidateNodeName(n); !s.ok()) return s;
  }
  // Page key: {node name, set id, index of the probe in its set}.
  const uint64_t digest = FilterDigest(req);
  absl::StatusOr<PageStart> page = StartPage(req.page_size(), req.page_token(), digest, 3);
  if (!page.ok()) return page.status();
  std::tuple<std::string, std::string, int> after;
  if (!page->first) {
    std::get<0>(after) = page->after[0];
    std::get<1>(after) = page->after[1];
    if (!absl::SimpleAtoi(page->after[2], &std::get<2>(after))) {
      return absl::InvalidArgumentError(
          "malformed page_token: pass the next_page_token of the previous response unchanged");
    }
  }
  std::set<std::string> want_nodes(req.node_names().begin(), req.node_names().end());
  std::set<std::string> want_sets(req.set_ids().begin(), req.set_ids().end());
  absl::MutexLock l(&mu_);
  for (const auto& id : want_sets) {
    if (!sets_.count(id)) return absl::NotFoundError(absl::StrCat("no probe set ", id));
  }
  v1::ListFleetProbesResponse resp;
  google::protobuf::RepeatedPtrField<v1::FleetProbeStatus> rows;
  std::tuple<std::string, std::string, int> last;
  bool more = false;
  for (auto nit = page->first ? nodes_.begin() : nodes_.lower_bound(std::get<0>(after));
       nit != nodes_.end() && !more; ++nit) {
    const auto& [name, n] = *nit;
    if (!want_nodes.empty() && !want_nodes.count(name)) continue;
    for (const auto& [id, s] : sets_) {
      if (!want_sets.empty() && !want_sets.count(id)) continue;
      if (!page->first && std::tie(name, id) < std::tie(std::get<0>(after), std::get<1>(after))) {
        continue;
      }
      rows.Clear();
      AppendProbeStatus(ReportsOf(name, n), id, s.stored.request.specs(), Desired(s, n), &rows);
      for (v1::FleetProbeStatus& row : rows) {
        int index = ProbeIndexOf(row.fleet_probe_id());
        if (!page->first && std::tie(name, id, index) <= after) continue;
        if (static_cast<size_t>(resp.probes_size()) == page->size) {
          more = true;
          break;
        }
        last = {name, id, index};
        *resp.add_probes() = std::move(row);
      }
      if (more) break;
    }
  }
  if (page->first) {
    for (const auto& [id, s] : sets_) {
      if (!want_sets.empty() && !want_sets.count(id)) continue;
      *resp.add_rollouts() = RolloutLocked(s);
    }
  }
  if (more) {
    resp.set_next_page_token(EncodePageToken(
        digest, {std::get<0>(last), std::get<1>(last), absl::StrCat(std::get<2>(last))}));
  }
  return resp;
}

absl::StatusOr<v1::ListAgentsResponse> FleetController::ListAgents(
    const v1::ListAgentsRequest& req) {
  bool filter = req.has_selector();
  if (filter) {
    if (auto s = ValidateSelector(req.selector()); !s.ok()) return s;
  }
  // Page key: {node name}.
  const uint64_t digest = FilterDigest(req);
  absl::StatusOr<PageStart> page = StartPage(req.page_size(), req.page_token(), digest, 1);
  if (!page.ok()) return page.status();
  absl::MutexLock l(&mu_);
  v1::ListAgentsResponse resp;
  std::string last;
  for (auto it = page->first ? nodes_.begin() : nodes_.upper_bound(page->after[0]);
       it != nodes_.end(); ++it) {
    const auto& [name, n] = *it;
    if (filter && !Matches(req.selector(), n.reg)) continue;
    if (static_cast<size_t>(resp.agents_size()) == page->size) {
      resp.set_next_page_token(EncodePageToken(digest, {last}));
      break;
    }
    last = name;
    auto* a = resp.add_agents();
    *a->mutable_registration() = n.reg;
    a->set_health(n.up ? v1::AGENT_HEALTH_UP : v1::AGENT_HEALTH_DOWN);
    if (n.last_seen > absl::UnixEpoch()) *a->mutable_last_seen() = ToTimestamp(n.last_seen);
    a->set_probes_attached(n.last_hb().probes_attached());
    auto desired = DesiredSetsLocked(n);
    a->set_sets_desired(desired.size());
    uint32_t converged = 0;
    for (const auto& id : desired) {
      const v1::AgentSetStatus* set = n.reports.Set(id);
      if (set != nullptr && set->state() == v1::SET_STATE_ATTACHED) ++converged;
    }
    a->set_sets_converged(converged);
    *a->mutable_slot_stats() = n.slots;
    a->set_placement_mismatches(n.last_hb().placement_mismatches());
    *a->mutable_calibration() = n.last_hb().calibration();
    *a->mutable_cost() = n.last_hb().cost();
    a->set_budget_breaches(BudgetBreachesLocked(n));
    a->set_peer(n.peer);
    a->set_identity(n.identity);
    if (n.session || n.remote) a->set_replica(n.replica);
  }
  return resp;
}

absl::Status FleetController::ForgetAgent(const std::string& node) {
  if (auto s = ValidateNodeName(node); !s.ok()) return s;
  absl::MutexLock l(&mu_);
  auto it = nodes_.find(node);
  if (it == nodes_.end()) return absl::NotFoundError(absl::StrCat("no agent named ", node));
  if (it->second.up) {
    return absl::FailedPreconditionError(
        absl::StrCat("agent ", node, " is up; stop it before forgetting it"));
  }
  ++local_writes_;
  if (auto s = store_->DeleteAgent(node); !s.ok()) return s;
  const Parts before = PartsLocked(node, &it->second);
  nodes_.erase(it);
  RepartLocked(node, nullptr, before);
  EvaluateLocked();
  return absl::OkStatus();
}

std::vector<GaugeFamily> FleetController::CollectGauges() {
  absl::MutexLock l(&mu_);
  GaugeFamily agents{"xolfleet_controller_agents",
                     "Agents known to the controller, by health and kernel profile",
                     {}};
  GaugeFamily up{"xolfleet_controller_agent_up", "1 if the node's agent is up, else 0", {}};
  GaugeFamily probes{"xolfleet_controller_probes",
                     "Fleet probes per node, by placement and state (desired or reported)",
                     {}};
  GaugeFamily sets{"xolfleet_controller_probe_sets", "Probe sets by rollout state", {}};
  GaugeFamily watchers{"xolfleet_controller_hit_watchers", "Open WatchFleetHits streams", {}};
  GaugeFamily info{"xolfleet_controller_node_info",
                   "1 per known node, with its kernel release and placement profile",
                   {}};
  GaugeFamily mism{"xolfleet_controller_node_placement_mismatches",
                   "Attached probes whose kernel placement differs from the prediction",
                   {}};
  GaugeFamily cost{"xolfleet_controller_node_cpu_seconds_per_second",
                   "Estimated CPU time per second the node's probes cost (its agent's estimate)",
                   {}};
  GaugeFamily budget{"xolfleet_controller_node_budget_cpu",
                     "The node's probe budget, fraction of one CPU (0: none)",
                     {}};
  GaugeFamily breaches{"xolfleet_controller_node_budget_breaches",
                       "Fleet probes on the node a budget acted on (alerted, throttled, detached)",
                       {}};
  GaugeFamily calib{"xolfleet_controller_node_calibration_seconds_per_hit",
                    "The node's measured cost of one counting probe hit, by placement",
                    {}};
  std::map<std::pair<std::string, std::string>, int> by_state;
  for (const auto& [name, n] : nodes_) {
    std::string profile = n.reg.kernel_profile().empty() ? "unknown" : n.reg.kernel_profile();
    by_state[{n.up ? "up" : "down", profile}]++;
    up.samples.push_back({{{"node", name}}, n.up ? 1.0 : 0.0});
    info.samples.push_back({{{"node", name},
                             {"kernel_profile", profile},
                             {"kernel_release", n.reg.kernel_release()},
                             {"boosts", n.reg.kernel_boosts() ? "true" : "false"}},
                            1.0});
    mism.samples.push_back(
        {{{"node", name}}, static_cast<double>(n.last_hb().placement_mismatches())});
    cost.samples.push_back({{{"node", name}}, n.last_hb().cost().cpu_seconds_per_sec()});
    budget.samples.push_back({{{"node", name}}, n.last_hb().cost().node_budget()});
    breaches.samples.push_back({{{"node", name}}, static_cast<double>(BudgetBreachesLocked(n))});
    for (const auto& f : n.last_hb().calibration().figures()) {
      if (f.capture()) continue;
      calib.samples.push_back(
          {{{"node", name}, {"placement", PlacementLabel(f.placement())}}, f.ns_per_hit() * 1e-9});
    }
    std::map<std::pair<std::string, std::string>, int> counts;  // placement,state
    google::protobuf::RepeatedPtrField<v1::FleetProbeStatus> rows;
    for (const auto& [id, s] : sets_) {
      AppendProbeStatus(ReportsOf(name, n), id, s.stored.request.specs(), Desired(s, n), &rows);
    }
    for (const auto& row : rows) counts[ProbeGaugeLabels(row, n.up)]++;
    for (const auto& [k, v] : counts) {
      probes.samples.push_back(
          {{{"node", name}, {"placement", k.first}, {"state", k.second}}, static_cast<double>(v)});
    }
  }
  for (const char* st : {"up", "down"}) {
    bool any = false;
    for (const auto& [k, v] : by_state) {
      if (k.first == st) {
        agents.samples.push_back(
            {{{"state", k.first}, {"kernel_profile", k.second}}, static_cast<double>(v)});
        any = true;
      }
    }
    if (!any) agents.samples.push_back({{{"state", st}, {"kernel_profile", "any"}}, 0});
  }
  std::map<std::string, int> set_counts;
  for (int s = v1::ROLLOUT_STATE_CANARY; s <= v1::ROLLOUT_STATE_DEGRADED; ++s) {
    set_counts[ShortName(static_cast<v1::RolloutState>(s))] = 0;
  }
  for (const auto& [id, s] : sets_) set_counts[ShortName(s.stored.rollout.state())]++;
  for (const auto& [k, v] : set_counts) {
    sets.samples.push_back({{{"state", k}}, static_cast<double>(v)});
  }
  watchers.samples.push_back({{}, static_cast<double>(hub_.watchers())});
  std::vector<GaugeFamily> out = {agents, up,   probes, sets,     watchers, info,
                                  mism,   cost, budget, breaches, calib};
  if (opts_.coordinator) {
    out.push_back({"xolfleet_controller_leader",
                   "1 if this replica is the leader (drives rollouts and TTL expiry), else 0",
                   {{{}, ActingLocked() ? 1.0 : 0.0}}});
  }
  return out;
}

}  // namespace xolfleet::controller
