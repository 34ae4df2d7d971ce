#include "services/agent/controller_link.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "services/common/enum_names.h"
#include "services/common/grpc_status.h"
#include "services/common/heartbeat_delta.h"
#include "services/common/link_channel.h"
#include "services/common/log.h"
#include "services/common/probe_spec.h"
#include "services/common/proto_time.h"
#include "xolfleet/v1/controller.grpc.pb.h"

namespace xolfleet {
namespace {

struct LocalFleetProbe {
  const v1::Probe* probe;
  std::string set_id;
  int index;
};

// Parses the fleet labels of a local probe; false if it is not a fleet probe.
bool FleetLabels(const v1::Probe& p, std::string* set_id, int* index) {
  auto it = p.spec().labels().find(kFleetProbeLabel);
  if (it == p.spec().labels().end()) return false;
  std::vector<std::string> parts = absl::StrSplit(it->second, absl::MaxSplits('/', 1));
  *index = -1;
  if (parts.size() == 2) {
    *set_id = parts[0];
    if (!absl::SimpleAtoi(parts[1], index)) *index = -1;
  } else {
    *set_id = it->second;
  }
  return true;
}

bool IsActive(const v1::Probe& p) { return p.state() == v1::PROBE_STATE_ATTACHED; }

}  // namespace

std::map<std::string, std::string> BudgetBreaches(const v1::ListResponse& local,
                                                  const v1::ListResponse& gone) {
  std::map<std::string, std::string> out;
  auto note = [&out](const v1::Probe& p) {
    std::string set_id;
    int index;
    if (!FleetLabels(p, &set_id, &index)) return;
    const v1::BudgetState st = p.cost().budget_state();
    if (st != v1::BUDGET_STATE_ALERTED && st != v1::BUDGET_STATE_THROTTLED &&
        st != v1::BUDGET_STATE_DETACHED) {
      return;
    }
    out.emplace(set_id, absl::StrCat("over budget: probe ", p.id(), " ", ShortName(st), ": ",
                                     p.cost().budget_message()));
  };
  for (const auto& p : local.probes()) {
    if (IsActive(p)) note(p);
  }
  for (const auto& p : gone.probes()) {
    if (p.cost().budget_state() == v1::BUDGET_STATE_DETACHED) note(p);
  }
  return out;
}

ReconcilePlan PlanReconcile(const v1::DesiredState& desired, const v1::ListResponse& local,
                            const std::map<std::string, std::string>& failed,
                            const std::map<std::string, absl::Time>& expires, absl::Time now,
                            const std::map<std::string, std::string>& breached) {
  ReconcilePlan plan;
  std::map<std::string, const v1::DesiredProbeSet*> want;
  for (const auto& s : desired.sets()) want[s.set_id()] = &s;

  // set id -> index -> active local probe ids; and sets with expired probes.
  std::map<std::string, std::map<int, std::vector<std::string>>> active;
  std::set<std::string> expired;
  for (const auto& p : local.probes()) {
    std::string set_id;
    int index;
    if (!FleetLabels(p, &set_id, &index)) continue;  // not ours: never touched
    if (IsActive(p)) {
      auto w = want.find(set_id);
      if (w == want.end() || index < 0 || index >= w->second->specs_size()) {
        plan.detach.push_back(p.id());  // leftover
      } else {
        active[set_id][index].push_back(p.id());
      }
    } else if (p.state() == v1::PROBE_STATE_EXPIRED) {
      expired.insert(set_id);
    }
  }

  for (const auto& [set_id, ds] : want) {
    auto& by_index = active[set_id];
    bool complete = true;
    for (int i = 0; i < ds->specs_size(); ++i) {
      auto it = by_index.find(i);
      if (it == by_index.end() || it->second.empty()) complete = false;
    }
    v1::AgentSetStatus st;
    st.set_set_id(set_id);
    if (complete) {
      // Keep one copy of each; detach duplicates.
      for (auto& [i, ids] : by_index) {
        for (size_t k = 1; k < ids.size(); ++k) plan.detach.push_back(ids[k]);
      }
      st.set_state(v1::SET_STATE_ATTACHED);
      if (auto b = breached.find(set_id); b != breached.end()) {
        // Still attached (alerted or throttled): the controller decides what a breach
        // means (a failed canary during a rollout, a flag afterwards).
        st.set_over_budget(true);
        st.set_status_message(b->second);
      }
    } else {
      // Partial (or absent): whatever is left goes, then the whole set comes back as one
      // batch, unless it expired here or failed recently.
      for (auto& [i, ids] : by_index) {
        for (const auto& id : ids) plan.detach.push_back(id);
      }
      auto exp = expires.find(set_id);
      bool ttl_over = exp != expires.end() && exp->second <= now;
      if ((expired.count(set_id) && by_index.empty()) || ttl_over) {
        st.set_state(v1::SET_STATE_EXPIRED);
        st.set_status_message("TTL expired on this node");
      } else if (auto b = breached.find(set_id); b != breached.end()) {
        st.set_state(v1::SET_STATE_FAILED);
        st.set_status_message(b->second);
      } else if (auto f = failed.find(set_id); f != failed.end()) {
        st.set_state(v1::SET_STATE_FAILED);
        st.set_status_message(f->second);
      } else {
        st.set_state(v1::SET_STATE_PENDING);
        ReconcilePlan::Batch b;
        b.set_id = set_id;
        for (int i = 0; i < ds->specs_size(); ++i) {
          v1::ProbeSpec* spec = b.request.add_specs();
          *spec = ds->specs(i);
          (*spec->mutable_labels())[kFleetProbeLabel] = FleetProbeId(set_id, i);
          (*spec->mutable_labels())[kProbeSetLabel] = set_id;
        }
        plan.attach.push_back(std::move(b));
      }
    }
    plan.status[set_id] = st;
  }
  return plan;
}

absl::StatusOr<std::unique_ptr<ControllerLink>> ControllerLink::Start(const Options& opts,
                                                                      AgentApi* api) {
  std::vector<std::string> targets = absl::StrSplit(opts.target, ',', absl::SkipWhitespace());
  if (targets.empty()) return absl::InvalidArgumentError("controller address is empty");
  std::shared_ptr<grpc::ChannelCredentials> creds = opts.credentials;
  for (const std::string& t : targets) {
    if (opts.credentials != nullptr) break;  // given by the caller, as they are
    // Every address is checked (plaintext only to loopback); one credential serves all.
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> c =
        tls::ChannelCredentials(opts.tls, t);
    if (!c.ok()) return c.status();
    if (creds == nullptr) creds = *std::move(c);
  }
  std::unique_ptr<ControllerLink> link(
      new ControllerLink(opts, api, std::move(creds), std::move(targets)));
  link->thread_ = std::thread([l = link.get()] { l->Run(); });
  return link;
}

ControllerLink::~ControllerLink() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    if (ctx_) ctx_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

std::string ControllerLink::CurrentTarget() const {
  absl::MutexLock l(&mu_);
  return targets_[target_index_];
}

ControllerLink::Status ControllerLink::status() const {
  absl::MutexLock l(&mu_);
  return status_;
}

void ControllerLink::Run() {
  absl::BitGen rng;
  absl::Duration backoff = opts_.min_backoff;
  // The link retries forever; an operator must still see why it is not connected (a full
  // disk on the controller, a certificate it refuses): the first failure, every change of
  // reason, and the same reason again at most once a minute.
  std::string last_logged;
  absl::Time last_log = absl::InfinitePast();
  for (;;) {
    absl::Time started = absl::Now();
    absl::Status why = RunStream();
    absl::MutexLock l(&mu_);
    const bool was_connected = status_.connected;
    status_.connected = false;
    status_.last_error = std::string(why.message());
    if (stopping_) return;
    const std::string target = targets_[target_index_];
    // Several replicas: the next connection goes to the next one.
    target_index_ = (target_index_ + 1) % targets_.size();
    if (absl::Now() - started > absl::Seconds(10)) backoff = opts_.min_backoff;
    absl::Duration wait = backoff * absl::Uniform(rng, 0.5, 1.0);
    backoff = std::min(backoff * 2, opts_.max_backoff);
    const std::string reason =
        absl::StrCat(absl::StatusCodeToString(why.code()), ": ", why.message());
    if (was_connected || reason != last_logged || absl::Now() - last_log > absl::Minutes(1)) {
      Log("controller link to ", target, (was_connected ? " lost: " : " failed: "), reason,
          "; retrying in ", absl::FormatDuration(absl::Trunc(wait, absl::Milliseconds(1))));
      last_logged = reason;
      last_log = absl::Now();
    }
    auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stop), wait)) return;
  }
}

absl::Status ControllerLink::RunStream() {
  v1::AgentRegister reg;
  {
    auto info = api_->GetNodeInfo();
    if (!info.ok()) return info.status();
    reg.set_node_name(opts_.node_name.empty() ? info->node_name() : opts_.node_name);
    for (const auto& [k, v] : info->labels()) (*reg.mutable_labels())[k] = v;
    for (const auto& [k, v] : opts_.labels) (*reg.mutable_labels())[k] = v;
    reg.set_kernel_release(info->kernel_release());
    reg.set_kernel_profile(info->kernel_profile());
    reg.set_kernel_boosts(info->kernel_boosts());
    reg.set_agent_version(info->agent_version());
    for (const auto& f : info->features()) reg.add_features(f);
  }

  grpc::ChannelArguments args = AgentLinkChannelArguments();
  const std::string target = CurrentTarget();
  auto channel = grpc::CreateCustomChannel(target, creds_, args);
  auto stub = v1::AgentLink::NewStub(channel);
  grpc::ClientContext ctx;
  {
    absl::MutexLock l(&mu_);
    if (stopping_) return absl::CancelledError("stopping");
    ctx_ = &ctx;
    stream_done_ = false;
    dirty_ = false;
    deltas_ok_ = false;
    full_requested_ = false;
    desired_.Clear();
  }
  auto stream = stub->Connect(&ctx);
  v1::AgentMessage first;
  *first.mutable_register_() = reg;
  bool ok = stream->Write(first);

  std::thread reader([this, &stream, &target] {
    v1::ControllerMessage msg;
    while (stream->Read(&msg)) {
      absl::MutexLock l(&mu_);
      if (msg.has_registered()) {
        status_.connected = true;
        status_.connects++;
        Log("controller link to ", target, ": registered (connect #", status_.connects, ")");
        if (msg.registered().has_heartbeat_interval()) {
          interval_ = std::max(absl::Milliseconds(50),
                               FromDurationProto(msg.registered().heartbeat_interval()));
        }
        deltas_ok_ = msg.registered().accepts_delta_heartbeats();
      } else if (msg.has_full_heartbeat()) {
        full_requested_ = true;
      } else if (msg.has_desired()) {
        desired_ = msg.desired();
        expires_.clear();
        absl::Time now = absl::Now();
        for (const auto& ds : desired_.sets()) {
          if (ds.specs_size() > 0 && FromDurationProto(ds.specs(0).ttl()) > absl::ZeroDuration()) {
            expires_[ds.set_id()] = now + FromDurationProto(ds.specs(0).ttl());
          }
        }
        dirty_ = true;
      }
    }
    absl::MutexLock l(&mu_);
    stream_done_ = true;
  });

  // A fresh stream: retry failed sets right away (the controller may have fixed them).
  failed_.clear();
  // Delta heartbeats, if the controller accepts them: the first one on the stream is full.
  HeartbeatDeltaEncoder encoder;
  absl::Time last_repair = absl::Now();
  // Periodic heartbeats (every change, hits included) keep their pace whatever the pushes
  // in between: a heartbeat right after reconciling a new desired state carries state
  // changes only (HeartbeatDeltaEncoder::Kind::kStateChange), unless a periodic one is due.
  absl::Time last_periodic = absl::Now();
  while (ok) {
    v1::DesiredState desired;
    std::map<std::string, absl::Time> expires;
    bool apply = false;
    bool deltas = false;
    HeartbeatDeltaEncoder::Kind kind = HeartbeatDeltaEncoder::Kind::kPeriodic;
    {
      absl::MutexLock l(&mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return dirty_ || stream_done_ || stopping_;
      };
      // interval_ is the controller's once registered: the deadline follows it.
      mu_.AwaitWithDeadline(absl::Condition(&wake), last_periodic + interval_);
      if (stream_done_ || stopping_) break;
      const absl::Time now = absl::Now();
      if (!status_.connected) {  // not registered yet
        last_periodic = now;
        continue;
      }
      if (now >= last_periodic + interval_) {
        last_periodic = now;
      } else {
        kind = HeartbeatDeltaEncoder::Kind::kStateChange;  // woken by a push
      }
      // Never apply before this stream's first desired state: an empty one would
      // detach every fleet probe the node runs.
      apply = desired_.generation() != 0 &&
              (dirty_ || absl::Now() - last_repair >= opts_.repair_interval);
      dirty_ = false;
      desired = desired_;
      expires = expires_;
      deltas = deltas_ok_;
      if (full_requested_) encoder.Reset();
      full_requested_ = false;
    }
    if (apply) last_repair = absl::Now();
    v1::AgentMessage msg;
    Reconcile(desired, expires, apply, msg.mutable_heartbeat());
    msg.mutable_heartbeat()->set_desired_generation(desired.generation());
    if (deltas) encoder.Encode(msg.mutable_heartbeat(), kind);
    if (!stream->Write(msg)) break;
  }
  bool server_ended = false;
  {
    absl::MutexLock l(&mu_);
    ctx_ = nullptr;
    server_ended = stream_done_;
  }
  // When the controller ended the stream its status says why (PERMISSION_DENIED for a
  // certificate that may not register this node): cancelling would replace it with CANCELLED.
  if (!server_ended) ctx.TryCancel();
  reader.join();
  grpc::Status st = stream->Finish();
  if (!ok) return absl::UnavailableError("could not send registration");
  absl::Status why = FromGrpcStatus(st);
  return absl::Status(why.code(), absl::StrCat("controller stream ended: ", why.message()));
}

void ControllerLink::Reconcile(const v1::DesiredState& desired,
                               const std::map<std::string, absl::Time>& expires, bool apply,
                               v1::AgentHeartbeat* hb) {
  v1::ListRequest lreq;
  // Active probes only: the inactive history (up to the agent's retention) would be
  // copied on every pass; expiry comes from the TTLs in the desired state instead.
  absl::Time now = absl::Now();
  for (auto it = failed_.begin(); it != failed_.end();) {
    it = now - it->second.second > opts_.failed_retry ? failed_.erase(it) : std::next(it);
  }
  std::map<std::string, std::string> failed;
  for (const auto& [k, v] : failed_) failed[k] = v.first;

  auto local = ListAll(*api_, lreq);
  if (!local.ok()) {
    absl::MutexLock l(&mu_);
    status_.last_error = std::string(local.status().message());
    return;
  }
  // Budget breaches: probes the agent acted on. A fleet probe that was active last pass
  // and is gone now (not detached by this link, which only detaches before listing again)
  // may have been detached over budget: its final record says.
  {
    std::set<std::string> now_ids;
    for (const auto& p : local->probes()) {
      std::string set_id;
      int index;
      if (IsActive(p) && FleetLabels(p, &set_id, &index)) now_ids.insert(p.id());
    }
    v1::ListResponse gone;
    v1::ListRequest greq;
    greq.set_include_inactive(true);
    for (const auto& id : last_fleet_ids_) {
      if (!now_ids.count(id)) greq.add_probe_ids(id);
    }
    if (greq.probe_ids_size() > 0) {
      if (auto g = ListAll(*api_, greq); g.ok()) gone = std::move(*g);
    }
    last_fleet_ids_ = std::move(now_ids);
    for (auto& [set_id, msg] : BudgetBreaches(*local, gone)) {
      if (breached_.emplace(set_id, msg).second) Log("fleet set ", set_id, ": ", msg);
    }
    std::set<std::string> want;
    for (const auto& s : desired.sets()) want.insert(s.set_id());
    for (auto it = breached_.begin(); it != breached_.end();) {
      it = want.count(it->first) ? std::next(it) : breached_.erase(it);
    }
  }
  ReconcilePlan plan = PlanReconcile(desired, *local, failed, expires, absl::Now(), breached_);
  if (apply) {
    if (!plan.detach.empty()) {
      v1::DetachRequest d;
      for (const auto& id : plan.detach) d.add_probe_ids(id);
      if (!api_->Detach(d).ok()) {
        // One of them may have expired since List: detach one by one, ignoring NOT_FOUND.
        for (const auto& id : plan.detach) {
          v1::DetachRequest one;
          one.add_probe_ids(id);
          api_->Detach(one).IgnoreError();
        }
      }
    }
    for (auto& b : plan.attach) {
      auto r = api_->Attach(b.request);
      auto& st = plan.status[b.set_id];
      if (r.ok()) {
        st.set_state(v1::SET_STATE_ATTACHED);
      } else {
        std::string msg =
            absl::StrCat(absl::StatusCodeToString(r.status().code()), ": ", r.status().message());
        failed_[b.set_id] = {msg, absl::Now()};
        st.set_state(v1::SET_STATE_FAILED);
        st.set_status_message(msg);
      }
    }
    if (!plan.detach.empty() || !plan.attach.empty()) {
      local = ListAll(*api_, lreq);  // report what is there now
    }
    absl::MutexLock l(&mu_);
    status_.reconciles++;
    status_.desired_generation = desired.generation();
  }
  for (const auto& [id, st] : plan.status) *hb->add_sets() = st;
  std::set<std::string> want;
  for (const auto& s : desired.sets()) want.insert(s.set_id());
  if (local.ok()) {
    uint32_t attached = 0;
    for (const auto& p : local->probes()) {
      if (IsActive(p)) ++attached;
      std::string set_id;
      int index;
      if (!FleetLabels(p, &set_id, &index)) continue;
      if (!IsActive(p) && !(p.state() == v1::PROBE_STATE_EXPIRED && want.count(set_id))) continue;
      auto* s = hb->add_probes();
      s->set_fleet_probe_id(p.spec().labels().at(kFleetProbeLabel));
      s->set_set_id(set_id);
      s->set_local_probe_id(p.id());
      s->set_state(p.state());
      s->set_placement(p.kernel_placement() != v1::PLACEMENT_UNSPECIFIED ? p.kernel_placement()
                                                                         : p.site().placement());
      s->set_predicted_placement(p.site().placement());
      s->set_kernel_placement(p.kernel_placement());
      s->set_hits(p.hits());
      s->set_status_message(p.status_message());
      *s->mutable_cost() = p.cost();
    }
    hb->set_probes_attached(attached);
  }
  if (auto info = api_->GetNodeInfo(); info.ok()) {
    *hb->mutable_slot_stats() = info->slot_stats();
    hb->set_kernel_profile(info->kernel_profile());
    hb->set_kernel_boosts(info->kernel_boosts());
    hb->set_placement_mismatches(info->placement_mismatches());
    *hb->mutable_calibration() = info->calibration();
    *hb->mutable_cost() = info->cost();
  }
}

}  // namespace xolfleet
