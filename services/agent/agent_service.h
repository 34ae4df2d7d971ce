// The gRPC edge of the agent: a thin AgentService over AgentApi (ProbeManager)
// plus the WatchHits stream over the HitHub. absl::Status from the core becomes
// grpc::Status here.
#ifndef XOLFLEET_SERVICES_AGENT_AGENT_SERVICE_H_
#define XOLFLEET_SERVICES_AGENT_AGENT_SERVICE_H_

#include <atomic>

#include "services/agent/hit_hub.h"
#include "services/agent/probe_manager.h"
#include "xolfleet/v1/agent.grpc.pb.h"

namespace xolfleet {

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  struct Options {
    size_t watch_queue_events = 65536;  // per WatchHits stream
    uint32_t default_max_batch = 1024;
    uint32_t max_batch_limit = 16384;
  };
  AgentServiceImpl(ProbeManager* manager, HitHub* hub, Options options)
      : manager_(manager), hub_(hub), options_(options) {}

  // Ends open WatchHits streams (server shutdown).
  void Shutdown() { shutting_down_ = true; }

  grpc::Status Attach(grpc::ServerContext* ctx, const v1::AttachRequest* req,
                      v1::AttachResponse* resp) override;
  grpc::Status Detach(grpc::ServerContext* ctx, const v1::DetachRequest* req,
                      v1::DetachResponse* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const v1::ListRequest* req,
                    v1::ListResponse* resp) override;
  grpc::Status Classify(grpc::ServerContext* ctx,
                        const v1::ClassifyRequest* req,
                        v1::ClassifyResponse* resp) override;
  grpc::Status WatchHits(grpc::ServerContext* ctx,
                         const v1::WatchHitsRequest* req,
                         grpc::ServerWriter<v1::HitBatch>* writer) override;
  grpc::Status GetNodeInfo(grpc::ServerContext* ctx,
                           const v1::GetNodeInfoRequest* req,
                           v1::NodeInfo* resp) override;

 private:
  ProbeManager* const manager_;
  HitHub* const hub_;
  const Options options_;
  std::atomic<bool> shutting_down_{false};
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_AGENT_SERVICE_H_
