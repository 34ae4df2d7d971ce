#include "services/controller/service.h"

#include <deque>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "services/common/grpc_status.h"
#include "services/common/tls.h"
#include "services/controller/selector.h"

namespace xolfleet::controller {

namespace {

// gRPC and Abseil share status code numbering.
std::string CodeName(grpc::StatusCode c) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(c));
}

}  // namespace

// One agent stream: the reactor gRPC drives, and the session the core sends to.
//
// Reads. One read is outstanding at a time: the first message must be `register`, then
// heartbeats go to the core as they arrive. A failed read (the agent went away, or the
// core closed the session and the call was cancelled) ends the stream.
//
// Heartbeats may be deltas (services/common/heartbeat_delta.h): the core applies each to
// the node's view in place (its decoder, reset when the node registers, bounds what an
// agent can make the controller keep); a delta without a base gets a request for a full
// heartbeat. `registered` tells the agent this edge accepts deltas.
//
// Writes. Send() only queues, so the core may call it with its lock held; one write is in
// flight at a time and OnWriteDone starts the next. The queue is bounded by construction:
// it holds at most the `registered` message, one `desired` state (desired state is
// level-triggered: a newer one replaces a queued one) and one full-heartbeat request.
//
// Lifetime. The object is shared: gRPC drives it until OnDone, the core may hold it (as
// its AgentSession) longer. Finish is called exactly once, under mu_; after that Send and
// Close do nothing and the call's context is never touched again.
class AgentStream final : public grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage>,
                          public AgentSession {
 public:
  AgentStream(AgentLinkService* svc, grpc::CallbackServerContext* ctx) : svc_(svc), ctx_(ctx) {}

  // Authorizes the caller and reads the first message; or finishes at once.
  void Begin(std::shared_ptr<AgentStream> self) {
    self_ = std::move(self);
    who_ = tls::PeerIdentity(*ctx_);
    if (auto s = svc_->authz_->Check(who_, Capability::kAgent); !s.ok()) {
      if (svc_->metrics_) svc_->metrics_->Denied("AgentLink.Connect", "agent");
      FinishOnce(ToGrpcStatus(s));
      return;
    }
    StartRead(&in_);
  }

  void Send(const v1::ControllerMessage& msg) override {
    absl::MutexLock l(&mu_);
    if (finish_called_ || finish_wanted_) return;
    if (msg.has_desired()) {
      for (auto it = queue_.begin(); it != queue_.end();) {
        it = it->has_desired() ? queue_.erase(it) : it + 1;
      }
    }
    if (msg.has_full_heartbeat()) {
      for (const auto& m : queue_) {
        if (m.has_full_heartbeat()) return;  // one request is enough
      }
    }
    queue_.push_back(msg);
    // This edge decodes delta heartbeats (HeartbeatDeltaDecoder): say so to the agent.
    if (msg.has_registered())
      queue_.back().mutable_registered()->set_accepts_delta_heartbeats(true);
    MaybeWriteLocked();
  }

  void Close() override {
    absl::MutexLock l(&mu_);
    if (finish_called_ || cancelled_ || ending_) return;
    cancelled_ = true;
    // The outstanding read then fails, which ends the stream (OnReadDone).
    ctx_->TryCancel();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      if (!registered_) {
        FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "no register"));
        return;
      }
      End(grpc::Status::OK);
      return;
    }
    if (!registered_) {
      OnRegister();
      return;
    }
    if (in_.has_heartbeat()) {
      bool want_full = false;
      if (auto s =
              svc_->fleet_->Heartbeat(this, node_, std::move(*in_.mutable_heartbeat()), &want_full);
          !s.ok()) {
        End(ToGrpcStatus(s));
        return;
      }
      if (want_full) {
        // A delta this stream has no base for: ask for a full heartbeat (it was dropped).
        v1::ControllerMessage m;
        m.mutable_full_heartbeat();
        Send(m);
      }
    } else if (in_.has_register_()) {
      End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "register sent twice"));
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu_);
    writing_ = false;
    if (!ok) {
      // The agent is gone: drop what is queued; the failed read ends the stream.
      queue_.clear();
      if (!finish_called_ && !cancelled_) {
        cancelled_ = true;
        ctx_->TryCancel();
      }
    }
    if (finish_wanted_ && !finish_called_) {
      FinishLocked();
      return;
    }
    MaybeWriteLocked();
  }

  void OnDone() override {
    AgentLinkService* svc = svc_;
    self_.reset();  // may destroy this (unless the core still holds the session)
    svc->StreamDone();
  }

 private:
  void OnRegister() {
    if (!in_.has_register_()) {
      FinishOnce(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "the first message on the agent link must be register"));
      return;
    }
    node_ = in_.register_().node_name();
    if (svc_->opts_.agent_cn_must_match_node && !who_.plaintext && who_.common_name != node_) {
      if (svc_->metrics_) svc_->metrics_->Denied("AgentLink.Connect", "agent");
      FinishOnce(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                              absl::StrCat("certificate CN \"", who_.common_name,
                                           "\" may not register as node \"", node_, "\"")));
      return;
    }
    if (auto s = svc_->fleet_->Register(self_, in_.register_(), who_.ToString(), ctx_->peer());
        !s.ok()) {
      FinishOnce(ToGrpcStatus(s));
      return;
    }
    registered_ = true;
    StartRead(&in_);
  }

  // The stream of a registered node ends: the core forgets the session, then the call
  // finishes with `st`.
  void End(grpc::Status st) {
    {
      // The core closes the session it forgets: no need to cancel a call that is ending
      // anyway (an agent that half-closed gets this status, not CANCELLED).
      absl::MutexLock l(&mu_);
      ending_ = true;
    }
    svc_->fleet_->Disconnect(this, node_);
    FinishOnce(std::move(st));
  }

  void FinishOnce(grpc::Status st) {
    absl::MutexLock l(&mu_);
    if (finish_called_ || finish_wanted_) return;
    finish_wanted_ = true;
    status_ = std::move(st);
    queue_.clear();
    // A write in flight finishes first (OnWriteDone then calls Finish).
    if (!writing_) FinishLocked();
  }

  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finish_called_ = true;
    Finish(status_);
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || queue_.empty() || finish_called_ || finish_wanted_) return;
    out_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    StartWrite(&out_);
  }

  AgentLinkService* const svc_;
  grpc::CallbackServerContext* const ctx_;
  std::shared_ptr<AgentStream> self_;  // keeps the reactor alive until OnDone
  // Touched only by the read path (one read at a time).
  Identity who_;
  v1::AgentMessage in_;
  std::string node_;
  bool registered_ = false;

  absl::Mutex mu_;
  std::deque<v1::ControllerMessage> queue_ ABSL_GUARDED_BY(mu_);
  v1::ControllerMessage out_ ABSL_GUARDED_BY(mu_);  // the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

AgentLinkService::~AgentLinkService() {
  absl::MutexLock l(&streams_mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) { return streams_ == 0; };
  streams_mu_.Await(absl::Condition(&none));
}

size_t AgentLinkService::active_streams() const {
  absl::MutexLock l(&streams_mu_);
  return streams_;
}

void AgentLinkService::StreamDone() {
  absl::MutexLock l(&streams_mu_);
  --streams_;
}

grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage>* AgentLinkService::Connect(
    grpc::CallbackServerContext* ctx) {
  {
    absl::MutexLock l(&streams_mu_);
    ++streams_;
  }
  auto stream = std::make_shared<AgentStream>(this, ctx);
  AgentStream* raw = stream.get();
  raw->Begin(std::move(stream));
  return raw;
}

template <typename Fn>
grpc::Status FleetServiceImpl::Handle(const char* method, grpc::ServerContext* ctx, Capability cap,
                                      Fn fn) {
  absl::Time start = absl::Now();
  Identity who = tls::PeerIdentity(*ctx);
  grpc::Status st;
  if (auto s = authz_->Check(who, cap); !s.ok()) {
    if (metrics_) metrics_->Denied(method, std::string(CapabilityName(cap)));
    st = ToGrpcStatus(s);
  } else {
    st = ToGrpcStatus(fn(who));
  }
  if (metrics_) {
    metrics_->Request(method, CodeName(st.error_code()),
                      absl::ToDoubleSeconds(absl::Now() - start));
  }
  return st;
}

grpc::Status FleetServiceImpl::AttachFleet(grpc::ServerContext* ctx,
                                           const v1::FleetAttachRequest* req,
                                           v1::FleetAttachResponse* resp) {
  Capability cap = CapturesRegisters(*req) ? Capability::kAttachCapture : Capability::kAttachCounts;
  return Handle("AttachFleet", ctx, cap, [&](const Identity& who) -> absl::Status {
    if (req->dry_run()) {
      auto r = fleet_->DryRun(*req);
      if (!r.ok()) return r.status();
      *resp = std::move(*r);
      return absl::OkStatus();
    }
    // Wait at most until just before the client's deadline, and never over 10 minutes.
    absl::Time deadline = absl::Now() + absl::Minutes(10);
    if (ctx->deadline() < std::chrono::system_clock::now() + std::chrono::minutes(10)) {
      deadline = absl::FromChrono(ctx->deadline()) - absl::Milliseconds(50);
    }
    auto r = fleet_->Attach(*req, who.ToString(), deadline);
    if (!r.ok()) return r.status();
    *resp->mutable_rollout() = *r;
    return absl::OkStatus();
  });
}

grpc::Status FleetServiceImpl::DetachFleet(grpc::ServerContext* ctx,
                                           const v1::FleetDetachRequest* req,
                                           v1::FleetDetachResponse* resp) {
  return Handle("DetachFleet", ctx, Capability::kAttachCounts,
                [&](const Identity&) -> absl::Status {
                  auto r = fleet_->Detach(*req);
                  if (!r.ok()) return r.status();
                  *resp = *r;
                  return absl::OkStatus();
                });
}

grpc::Status FleetServiceImpl::GetRollout(grpc::ServerContext* ctx,
                                          const v1::GetRolloutRequest* req, v1::Rollout* resp) {
  return Handle("GetRollout", ctx, Capability::kReadOnly, [&](const Identity&) -> absl::Status {
    google::protobuf::RepeatedPtrField<std::string> ids;
    ids.Add()->assign(req->set_id());
    if (auto s = ValidateSetIds(ids, false); !s.ok()) return s;
    auto r = fleet_->GetRollout(req->set_id());
    if (!r.ok()) return r.status();
    *resp = *r;
    return absl::OkStatus();
  });
}

grpc::Status FleetServiceImpl::ListFleetProbes(grpc::ServerContext* ctx,
                                               const v1::ListFleetProbesRequest* req,
                                               v1::ListFleetProbesResponse* resp) {
  return Handle("ListFleetProbes", ctx, Capability::kReadOnly,
                [&](const Identity&) -> absl::Status {
                  auto r = fleet_->ListProbes(*req);
                  if (!r.ok()) return r.status();
                  *resp = std::move(*r);
                  return absl::OkStatus();
                });
}

grpc::Status FleetServiceImpl::ListAgents(grpc::ServerContext* ctx,
                                          const v1::ListAgentsRequest* req,
                                          v1::ListAgentsResponse* resp) {
  return Handle("ListAgents", ctx, Capability::kReadOnly, [&](const Identity&) -> absl::Status {
    auto r = fleet_->ListAgents(*req);
    if (!r.ok()) return r.status();
    *resp = std::move(*r);
    return absl::OkStatus();
  });
}

grpc::Status FleetServiceImpl::ForgetAgent(grpc::ServerContext* ctx,
                                           const v1::ForgetAgentRequest* req,
                                           v1::ForgetAgentResponse*) {
  return Handle("ForgetAgent", ctx, Capability::kAdmin,
                [&](const Identity&) { return fleet_->ForgetAgent(req->node_name()); });
}

PerKeyLimiter::Options FleetServiceImpl::WatcherLimits(const ServiceOptions& opts) {
  PerKeyLimiter::Options o;
  o.per_key = opts.max_watchers_per_identity;
  o.total = opts.max_watchers;
  o.what = "WatchFleetHits streams";
  o.holder = "identity";
  o.server = "this controller";
  o.per_key_flag = "--max_watchers_per_identity";
  o.total_flag = "--max_watchers";
  o.advice = "close one of them (xolctl fleet watch), or ask the operator to raise the flag";
  return o;
}

grpc::Status FleetServiceImpl::WatchFleetHits(grpc::ServerContext* ctx,
                                              const v1::WatchFleetHitsRequest* req,
                                              grpc::ServerWriter<v1::FleetHitBatch>* writer) {
  return Handle(
      "WatchFleetHits", ctx, Capability::kReadOnly, [&](const Identity& who) -> absl::Status {
        if (auto s = ValidateSetIds(req->set_ids(), true); !s.ok()) return s;
        if (req->node_names_size() > kMaxSelectorNames) {
          return absl::InvalidArgumentError("too many node names");
        }
        for (const auto& n : req->node_names()) {
          if (auto s = ValidateNodeName(n); !s.ok()) return s;
        }
        // Given back when the stream ends.
        absl::StatusOr<PerKeyLimiter::Lease> lease = watchers_.Acquire(who.ToString());
        if (!lease.ok()) return lease.status();
        auto w =
            fleet_->hits().AddWatcher({req->set_ids().begin(), req->set_ids().end()},
                                      {req->node_names().begin(), req->node_names().end()}, 4096);
        // Replicas: the first batch names the replicas whose agents' hits it merges.
        if (std::string n = fleet_->HitSourcesNotice(); !n.empty()) w->Notice(n);
        v1::FleetHitBatch batch;
        uint64_t reported_drops = 0;
        while (!ctx->IsCancelled()) {
          if (!w->Take(&batch, 1024, absl::Milliseconds(500))) break;
          if (batch.updates_size() == 0 && batch.notices_size() == 0 &&
              batch.dropped_total() == reported_drops) {
            continue;
          }
          reported_drops = batch.dropped_total();
          if (!writer->Write(batch)) break;
        }
        fleet_->hits().RemoveWatcher(w);
        return absl::OkStatus();
      });
}

}  // namespace xolfleet::controller
