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

// One agent stream as the core sees it. Messages are queued and written by a writer
// thread, so the core never blocks on a slow agent. Desired state is level-triggered, so
// a queued desired state is replaced by a newer one (the queue stays bounded).
class StreamSession final : public AgentSession {
 public:
  StreamSession(grpc::ServerContext* ctx,
                grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>* stream)
      : ctx_(ctx), stream_(stream) {
    writer_ = std::thread([this] { WriteLoop(); });
  }
  ~StreamSession() override { Finish(); }

  void Send(const v1::ControllerMessage& msg) override {
    absl::MutexLock l(&mu_);
    if (closed_) return;
    if (msg.has_desired()) {
      for (auto it = queue_.begin(); it != queue_.end();) {
        it = it->has_desired() ? queue_.erase(it) : it + 1;
      }
    }
    queue_.push_back(msg);
  }

  void Close() override {
    absl::MutexLock l(&mu_);
    if (closed_) return;
    closed_ = true;
    if (!finished_) ctx_->TryCancel();
  }

  // Called by the handler before it returns: stops the writer; ctx/stream go away after.
  void Finish() {
    {
      absl::MutexLock l(&mu_);
      closed_ = true;
      finished_ = true;
    }
    if (writer_.joinable()) writer_.join();
  }

 private:
  void WriteLoop() {
    for (;;) {
      v1::ControllerMessage msg;
      {
        absl::MutexLock l(&mu_);
        auto ready = [this]()
                         ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || closed_; };
        mu_.Await(absl::Condition(&ready));
        if (closed_) return;
        msg = std::move(queue_.front());
        queue_.pop_front();
      }
      if (!stream_->Write(msg)) {
        absl::MutexLock l(&mu_);
        closed_ = true;
        if (!finished_) ctx_->TryCancel();
        return;
      }
    }
  }

  grpc::ServerContext* const ctx_;
  grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>* const stream_;
  absl::Mutex mu_;
  std::deque<v1::ControllerMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;
};

}  // namespace

grpc::Status AgentLinkService::Connect(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::ControllerMessage, v1::AgentMessage>* stream) {
  Identity who = tls::PeerIdentity(*ctx);
  if (auto s = authz_->Check(who, Capability::kAgent); !s.ok()) {
    if (metrics_) metrics_->Denied("AgentLink.Connect", "agent");
    return ToGrpcStatus(s);
  }
  v1::AgentMessage first;
  if (!stream->Read(&first)) return grpc::Status(grpc::StatusCode::CANCELLED, "no register");
  if (!first.has_register_()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on the agent link must be register");
  }
  const std::string node = first.register_().node_name();
  if (opts_.agent_cn_must_match_node && !who.plaintext && who.common_name != node) {
    if (metrics_) metrics_->Denied("AgentLink.Connect", "agent");
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("certificate CN \"", who.common_name,
                                     "\" may not register as node \"", node, "\""));
  }
  auto session = std::make_shared<StreamSession>(ctx, stream);
  if (auto s = fleet_->Register(session, first.register_(), who.ToString(), ctx->peer()); !s.ok()) {
    session->Finish();
    return ToGrpcStatus(s);
  }
  grpc::Status result = grpc::Status::OK;
  v1::AgentMessage msg;
  while (stream->Read(&msg)) {
    if (msg.has_heartbeat()) {
      if (auto s = fleet_->Heartbeat(session.get(), node, msg.heartbeat()); !s.ok()) {
        result = ToGrpcStatus(s);
        break;
      }
    } else if (msg.has_register_()) {
      result = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "register sent twice");
      break;
    }
  }
  fleet_->Disconnect(session.get(), node);
  session->Finish();
  return result;
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
        const std::string key = who.ToString();
        {
          // One identity cannot take every slot.
          absl::MutexLock l(&watchers_mu_);
          size_t& mine = watchers_by_identity_[key];
          if (mine >= opts_.max_watchers_per_identity) {
            return absl::ResourceExhaustedError(
                absl::StrCat(key, " already has ", mine,
                             " WatchFleetHits streams open, the most one identity "
                             "may have (--max_watchers_per_identity)"));
          }
          ++mine;
        }
        struct Release {
          FleetServiceImpl* self;
          std::string key;
          ~Release() {
            absl::MutexLock l(&self->watchers_mu_);
            if (--self->watchers_by_identity_[key] == 0) self->watchers_by_identity_.erase(key);
          }
        } release{this, key};
        if (watchers_.fetch_add(1) >= opts_.max_watchers) {
          watchers_.fetch_sub(1);
          return absl::ResourceExhaustedError(
              absl::StrCat("too many hit watchers (limit ", opts_.max_watchers, ")"));
        }
        auto w =
            fleet_->hits().Subscribe({req->set_ids().begin(), req->set_ids().end()},
                                     {req->node_names().begin(), req->node_names().end()}, 4096);
        v1::FleetHitBatch batch;
        uint64_t reported_drops = 0;
        while (!ctx->IsCancelled()) {
          if (!w->Next(1024, absl::Milliseconds(500), &batch)) break;
          if (batch.updates_size() == 0 && batch.dropped_total() == reported_drops) {
            continue;
          }
          reported_drops = batch.dropped_total();
          if (!writer->Write(batch)) break;
        }
        fleet_->hits().Unsubscribe(w);
        watchers_.fetch_sub(1);
        return absl::OkStatus();
      });
}

}  // namespace xolfleet::controller
