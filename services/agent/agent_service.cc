#include "services/agent/agent_service.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/agent/status_util.h"

namespace xolfleet {
namespace {

template <typename T>
grpc::Status Reply(absl::StatusOr<T> r, T* out) {
  if (!r.ok()) return ToGrpcStatus(r.status());
  *out = std::move(*r);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status AgentServiceImpl::Attach(grpc::ServerContext*,
                                      const v1::AttachRequest* req,
                                      v1::AttachResponse* resp) {
  return Reply(manager_->Attach(*req), resp);
}

grpc::Status AgentServiceImpl::Detach(grpc::ServerContext*,
                                      const v1::DetachRequest* req,
                                      v1::DetachResponse* resp) {
  return Reply(manager_->Detach(*req), resp);
}

grpc::Status AgentServiceImpl::List(grpc::ServerContext*,
                                    const v1::ListRequest* req,
                                    v1::ListResponse* resp) {
  return Reply(manager_->List(*req), resp);
}

grpc::Status AgentServiceImpl::Classify(grpc::ServerContext*,
                                        const v1::ClassifyRequest* req,
                                        v1::ClassifyResponse* resp) {
  return Reply(manager_->Classify(*req), resp);
}

grpc::Status AgentServiceImpl::GetNodeInfo(grpc::ServerContext*,
                                           const v1::GetNodeInfoRequest*,
                                           v1::NodeInfo* resp) {
  return Reply(manager_->GetNodeInfo(), resp);
}

// Streams hit events in batches. Flow control: Write() blocks while the
// client's HTTP/2 window is full; meanwhile the ring-buffer reader keeps
// filling this stream's bounded queue and counts what does not fit. Every batch
// carries dropped_total: events lost by this stream's queue plus events the
// kernel could not put in the ring buffer (for the watched probes) since the
// stream started, so a client can account for every event.
grpc::Status AgentServiceImpl::WatchHits(
    grpc::ServerContext* ctx, const v1::WatchHitsRequest* req,
    grpc::ServerWriter<v1::HitBatch>* writer) {
  std::vector<std::string> ids(req->probe_ids().begin(),
                               req->probe_ids().end());
  absl::StatusOr<absl::flat_hash_set<uint64_t>> nums =
      manager_->ProbeNumbers(ids);
  if (!nums.ok()) return ToGrpcStatus(nums.status());
  size_t max_batch =
      req->max_batch() ? req->max_batch() : options_.default_max_batch;
  max_batch = std::min<size_t>(max_batch, options_.max_batch_limit);

  const uint64_t kernel_dropped_base = manager_->KernelDropped(*nums);
  absl::StatusOr<std::shared_ptr<Watcher>> added =
      hub_->AddWatcher(*nums, options_.watch_queue_events);
  if (!added.ok()) return ToGrpcStatus(added.status());
  std::shared_ptr<Watcher> w = std::move(*added);
  // Tells the client the stream is registered (it may wait for this before
  // producing the hits it wants to see).
  writer->SendInitialMetadata();
  uint64_t kernel_dropped = 0, last_sent_dropped = 0;
  absl::Time next_kernel_read = absl::InfinitePast();
  std::vector<RoutedHit> hits;
  hits.reserve(max_batch);
  grpc::Status result = grpc::Status::OK;
  while (!ctx->IsCancelled() && !shutting_down_) {
    hits.clear();
    w->Take(&hits, max_batch, absl::Milliseconds(200));
    absl::Time now = absl::Now();
    if (now >= next_kernel_read) {
      kernel_dropped = manager_->KernelDropped(*nums) - kernel_dropped_base;
      next_kernel_read = now + absl::Milliseconds(250);
    }
    uint64_t dropped = w->dropped() + kernel_dropped;
    if (hits.empty() && dropped == last_sent_dropped) continue;
    v1::HitBatch batch;
    batch.mutable_events()->Reserve(hits.size());
    for (const RoutedHit& h : hits) {
      v1::HitEvent* e = batch.add_events();
      e->set_probe_id(absl::StrCat("p", h.probe_num));
      e->set_pid(h.event.pid);
      e->set_tid(h.event.tid);
      e->set_cpu(h.event.cpu);
      e->set_ktime_ns(h.event.ktime_ns);
      for (int i = 0; i < XOL_NUM_REGS; ++i) {
        if (h.event.capture_mask & (1u << i)) {
          v1::RegisterValue* r = e->add_regs();
          r->set_reg(static_cast<v1::Register>(i + 1));
          r->set_value(h.event.regs[i]);
        }
      }
    }
    batch.set_dropped_total(dropped);
    last_sent_dropped = dropped;
    if (!writer->Write(batch)) break;  // client went away
  }
  hub_->RemoveWatcher(w);
  return result;
}

}  // namespace xolfleet
