#include "bench/fleet/sim_fleet.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "services/common/heartbeat_delta.h"
#include "services/common/link_channel.h"
#include "services/common/proto_time.h"
#include "xolfleet/v1/controller.grpc.pb.h"

namespace xolfleet::sim {

// One simulated node: its in-memory agent side and, while connected, one stream.
//
// Locking: mu_ guards everything below it, including the stream's reactor state; gRPC's
// client reactions never run inline from a Start* call (can_inline=false in 1.51), so
// Start* may be called with mu_ held. A write is started only while a read is
// outstanding (read_failed_ false): the call cannot have reached OnDone then.
class SimAgent {
 public:
  SimAgent(const SimFleet::Options& o, int index, SimFleet::Counters* c)
      : opts_(o), counters_(c), name_(absl::StrCat(o.name_prefix, index)) {
    reg_.set_node_name(name_);
    if (o.labels) {
      for (const auto& [k, v] : o.labels(index)) (*reg_.mutable_labels())[k] = v;
    }
    reg_.set_kernel_release("6.18.0-sim");
    reg_.set_kernel_profile("linux-6.18");
    reg_.set_agent_version("simagents");
    creds_ = o.credentials(index);
  }

  // Dials if a stream is due; heartbeats if one is due. Returns true if it dialled.
  bool Tick(absl::Time now, bool may_dial) {
    absl::MutexLock l(&mu_);
    if (stopping_) return false;
    if (call_ == nullptr) {
      if (!may_dial || now < next_dial_) return false;
      DialLocked();
      return true;
    }
    if (registered_ && now >= next_hb_) {
      hb_wanted_ = true;
      state_change_ = false;  // a periodic heartbeat is due: every change travels
      MaybeWriteLocked();
    }
    return false;
  }

  // Half-closes the stream; true if there is none left.
  void Stop() {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    hb_wanted_ = false;
    if (call_ != nullptr) MaybeWriteLocked();
  }

  // Adds the sets this node holds (desired and reported in its last heartbeat) to
  // `counts`; true if it holds none (after at least one desired state).
  bool CountSets(std::map<std::string, int>* counts) {
    absl::MutexLock l(&mu_);
    for (const auto& id : reported_) {
      if (sets_.count(id)) ++(*counts)[id];
    }
    return generation_ != 0 && sets_.empty() && reported_.empty();
  }

 private:
  class Call final : public grpc::ClientBidiReactor<v1::AgentMessage, v1::ControllerMessage> {
   public:
    explicit Call(SimAgent* a) : a_(a) {}
    void OnReadDone(bool ok) override { a_->OnRead(ok); }
    void OnWriteDone(bool ok) override { a_->OnWrite(ok); }
    void OnDone(const grpc::Status& s) override {
      a_->OnDone(s);
      delete this;
    }
    grpc::ClientContext ctx;
    v1::AgentMessage out;
    v1::ControllerMessage in;

   private:
    SimAgent* const a_;
  };

  void DialLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (channel_ == nullptr) {
      grpc::ChannelArguments args = AgentLinkChannelArguments();
      // Its own connection, as a separate node would have (channels with equal
      // arguments would otherwise share one subchannel, i.e. one TCP connection).
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      if (opts_.keepalive_time > absl::ZeroDuration()) {
        args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                    static_cast<int>(absl::ToInt64Milliseconds(opts_.keepalive_time)));
      }
      if (opts_.keepalive_timeout > absl::ZeroDuration()) {
        args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                    static_cast<int>(absl::ToInt64Milliseconds(opts_.keepalive_timeout)));
      }
      channel_ = grpc::CreateCustomChannel(opts_.target, creds_, args);
      stub_ = v1::AgentLink::NewStub(channel_);
    }
    call_ = new Call(this);
    counters_->live_streams++;
    registered_ = false;
    deltas_ = false;
    encoder_.Reset();  // the first heartbeat on a stream is full
    read_failed_ = false;
    writes_done_ = false;
    hb_wanted_ = false;
    stub_->async()->Connect(&call_->ctx, call_);
    *call_->out.mutable_register_() = reg_;
    writing_ = true;
    call_->StartWrite(&call_->out);
    call_->StartRead(&call_->in);
    call_->StartCall();
  }

  void OnRead(bool ok) {
    absl::MutexLock l(&mu_);
    if (!ok) {
      read_failed_ = true;
      return;
    }
    const v1::ControllerMessage& m = call_->in;
    if (m.has_registered()) {
      registered_ = true;
      counters_->registrations++;
      counters_->registered++;
      if (m.registered().has_heartbeat_interval()) {
        interval_ = std::max(absl::Milliseconds(50),
                             FromDurationProto(m.registered().heartbeat_interval()));
      }
      next_hb_ = absl::Now() + interval_;
      deltas_ = opts_.delta_heartbeats && m.registered().accepts_delta_heartbeats();
    } else if (m.has_full_heartbeat()) {
      encoder_.Reset();
    } else if (m.has_desired()) {
      counters_->desired++;
      Apply(m.desired());
      hb_wanted_ = true;  // the agent heartbeats right after reconciling: state changes only
      state_change_ = true;
      MaybeWriteLocked();
    }
    call_->StartRead(&call_->in);
  }

  void OnWrite(bool ok) {
    absl::MutexLock l(&mu_);
    writing_ = false;
    if (!ok) return;  // the read fails too; OnDone follows
    if (sent_heartbeat_) counters_->heartbeats++;
    sent_heartbeat_ = false;
    MaybeWriteLocked();
  }

  void OnDone(const grpc::Status& s) {
    absl::MutexLock l(&mu_);
    if (registered_) {
      counters_->ends++;
      if (!s.ok()) counters_->errors++;
    } else {
      counters_->failed_dials++;
    }
    if (!s.ok()) {
      absl::MutexLock e(&counters_->err_mu);
      counters_->last_error = absl::StrCat(name_, ": ", s.error_code(), " ", s.error_message());
    }
    if (registered_) counters_->registered--;
    registered_ = false;
    call_ = nullptr;
    writing_ = false;
    reported_.clear();
    next_dial_ = absl::Now() + opts_.reconnect_delay;
    counters_->live_streams--;
  }

  // "Attaches" the desired state: a set new to this node (or with other specs) gets new
  // local probes, whose hit counts start from zero.
  void Apply(const v1::DesiredState& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::map<std::string, SetState> next;
    for (const auto& s : d.sets()) {
      auto it = sets_.find(s.set_id());
      if (it != sets_.end() && it->second.specs == s.specs_size()) {
        next.emplace(s.set_id(), it->second);
      } else {
        next.emplace(s.set_id(), SetState{s.specs_size(), ++attaches_, 0});
      }
    }
    sets_ = std::move(next);
    generation_ = d.generation();
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (call_ == nullptr || writing_ || read_failed_ || writes_done_) return;
    if (stopping_) {
      writes_done_ = true;
      call_->StartWritesDone();
      return;
    }
    if (!hb_wanted_ || !registered_) return;
    hb_wanted_ = false;
    call_->out.Clear();
    v1::AgentHeartbeat* hb = call_->out.mutable_heartbeat();
    reported_.clear();
    uint32_t probes = 0;
    for (auto& [id, st] : sets_) {
      st.hits += opts_.hits_per_heartbeat;
      v1::AgentSetStatus* ss = hb->add_sets();
      ss->set_set_id(id);
      ss->set_state(v1::SET_STATE_ATTACHED);
      for (int i = 0; i < st.specs; ++i) {
        v1::AgentProbeStatus* p = hb->add_probes();
        p->set_fleet_probe_id(absl::StrCat(id, "/", i));
        p->set_set_id(id);
        p->set_local_probe_id(absl::StrCat("sim-", st.attach, "-", i));
        p->set_state(v1::PROBE_STATE_ATTACHED);
        p->set_placement(v1::PLACEMENT_EMULATED);
        p->set_predicted_placement(v1::PLACEMENT_EMULATED);
        p->set_hits(st.hits);
        ++probes;
      }
      reported_.insert(id);
    }
    hb->set_probes_attached(probes);
    hb->set_desired_generation(generation_);
    hb->set_kernel_profile(reg_.kernel_profile());
    // As the agent (controller_link.cc): periodic heartbeats keep their pace; one right
    // after a desired state, between them, carries state changes only.
    const absl::Time now = absl::Now();
    const bool state_change = state_change_ && now < next_hb_;
    state_change_ = false;
    if (deltas_) {
      encoder_.Encode(hb, state_change ? HeartbeatDeltaEncoder::Kind::kStateChange
                                       : HeartbeatDeltaEncoder::Kind::kPeriodic);
    }
    if (hb->delta()) counters_->delta_heartbeats++;
    if (hb->state_change()) counters_->state_change_heartbeats++;
    if (!state_change) next_hb_ = now + interval_;
    writing_ = true;
    sent_heartbeat_ = true;
    call_->StartWrite(&call_->out);
  }

  struct SetState {
    int specs;
    uint64_t attach;
    uint64_t hits;
  };

  const SimFleet::Options& opts_;
  SimFleet::Counters* const counters_;
  const std::string name_;
  v1::AgentRegister reg_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;

  absl::Mutex mu_;
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<v1::AgentLink::Stub> stub_ ABSL_GUARDED_BY(mu_);
  Call* call_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  bool deltas_ ABSL_GUARDED_BY(mu_) = false;  // the controller accepts delta heartbeats
  HeartbeatDeltaEncoder encoder_ ABSL_GUARDED_BY(mu_);
  bool read_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool hb_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool state_change_ ABSL_GUARDED_BY(mu_) = false;  // the wanted heartbeat follows a push
  bool sent_heartbeat_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time next_dial_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time next_hb_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Duration interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(1);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t attaches_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, SetState> sets_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> reported_ ABSL_GUARDED_BY(mu_);  // sets in the last heartbeat sent
};

SimFleet::SimFleet(Options opts) : opts_(std::move(opts)) {}

absl::StatusOr<std::unique_ptr<SimFleet>> SimFleet::Start(Options opts) {
  if (opts.target.empty()) return absl::InvalidArgumentError("no controller address");
  if (!opts.credentials) return absl::InvalidArgumentError("no credentials");
  if (opts.agents <= 0) return absl::InvalidArgumentError("no agents");
  std::unique_ptr<SimFleet> f(new SimFleet(std::move(opts)));
  f->agents_.reserve(f->opts_.agents);
  for (int i = 0; i < f->opts_.agents; ++i) {
    f->agents_.push_back(
        std::make_unique<SimAgent>(f->opts_, f->opts_.first_index + i, &f->counters_));
  }
  f->ticker_ = std::thread([p = f.get()] { p->Ticker(); });
  return f;
}

SimFleet::~SimFleet() { Stop(); }

void SimFleet::Ticker() {
  const absl::Duration tick = absl::Milliseconds(50);
  double budget = 0;  // dials allowed now (connect_rate)
  while (!stopping_.load()) {
    absl::Time now = absl::Now();
    budget = std::min(budget + opts_.connect_rate * absl::ToDoubleSeconds(tick),
                      std::max(1.0, opts_.connect_rate));
    for (auto& a : agents_) {
      if (stopping_.load()) break;
      bool may_dial = budget >= 1;
      if (may_dial && opts_.max_pending_dials > 0) {
        may_dial =
            counters_.live_streams.load() - counters_.registered.load() < opts_.max_pending_dials;
      }
      if (a->Tick(now, may_dial)) budget -= 1;
    }
    absl::SleepFor(tick - std::min(tick, absl::Now() - now));
  }
}

bool SimFleet::Stop(absl::Duration timeout) {
  if (!stopping_.exchange(true)) {
    if (ticker_.joinable()) ticker_.join();
    for (auto& a : agents_) a->Stop();
  }
  absl::Time end = absl::Now() + timeout;
  while (counters_.live_streams.load() > 0 && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  return counters_.live_streams.load() == 0;
}

SimFleet::Stats SimFleet::stats() const {
  Stats s;
  s.agents = static_cast<int>(agents_.size());
  s.registered = counters_.registered.load();
  s.registrations = counters_.registrations.load();
  s.desired = counters_.desired.load();
  s.heartbeats_sent = counters_.heartbeats.load();
  s.delta_heartbeats = counters_.delta_heartbeats.load();
  s.state_change_heartbeats = counters_.state_change_heartbeats.load();
  s.stream_ends = counters_.ends.load();
  s.stream_errors = counters_.errors.load();
  s.failed_dials = counters_.failed_dials.load();
  absl::MutexLock l(&counters_.err_mu);
  s.last_error = counters_.last_error;
  return s;
}

std::map<std::string, int> SimFleet::SetCounts(int* without_sets) const {
  std::map<std::string, int> counts;
  int none = 0;
  for (const auto& a : agents_) none += a->CountSets(&counts);
  if (without_sets) *without_sets = none;
  return counts;
}

}  // namespace xolfleet::sim
