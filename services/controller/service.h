// The controller's gRPC edge: AgentLink (agents) and FleetService (clients). Each call
// is authorized by the caller's certificate identity, then handed to FleetController;
// absl::Status turns into grpc::Status here and nowhere else.
#ifndef XOLFLEET_SERVICES_CONTROLLER_SERVICE_H_
#define XOLFLEET_SERVICES_CONTROLLER_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "services/common/authz.h"
#include "services/common/per_key_limiter.h"
#include "services/controller/fleet.h"
#include "services/controller/metrics.h"
#include "xolfleet/v1/controller.grpc.pb.h"

namespace xolfleet::controller {

struct ServiceOptions {
  // Require an agent certificate's CN to equal the node name it registers.
  bool agent_cn_must_match_node = false;
  size_t max_watchers = 64;
  size_t max_watchers_per_identity = 8;
};

// The agent link on gRPC's callback API: one reactor per agent stream, no thread per
// stream (a controller holds thousands of agents on a few gRPC threads). The reactor's
// callbacks call into FleetController directly; none of them waits on the network.
class AgentLinkService final : public v1::AgentLink::CallbackService {
 public:
  AgentLinkService(FleetController* fleet, const AuthzPolicy* authz,
                   std::shared_ptr<FleetMetrics> metrics, ServiceOptions opts)
      : fleet_(fleet), authz_(authz), metrics_(std::move(metrics)), opts_(opts) {}
  // Waits until every stream's reactor is done (the server shut down first), so no
  // callback runs into a destroyed FleetController.
  ~AgentLinkService() override;

  grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;

  // Streams whose reactor has not finished yet.
  size_t active_streams() const;

 private:
  friend class AgentStream;
  void StreamDone();

  FleetController* fleet_;
  const AuthzPolicy* authz_;
  std::shared_ptr<FleetMetrics> metrics_;
  ServiceOptions opts_;
  mutable absl::Mutex streams_mu_;
  size_t streams_ ABSL_GUARDED_BY(streams_mu_) = 0;
};

class FleetServiceImpl final : public v1::FleetService::Service {
 public:
  FleetServiceImpl(FleetController* fleet, const AuthzPolicy* authz,
                   std::shared_ptr<FleetMetrics> metrics, ServiceOptions opts)
      : fleet_(fleet),
        authz_(authz),
        metrics_(std::move(metrics)),
        opts_(opts),
        watchers_(WatcherLimits(opts)) {}

  grpc::Status AttachFleet(grpc::ServerContext* ctx, const v1::FleetAttachRequest* req,
                           v1::FleetAttachResponse* resp) override;
  grpc::Status DetachFleet(grpc::ServerContext* ctx, const v1::FleetDetachRequest* req,
                           v1::FleetDetachResponse* resp) override;
  grpc::Status GetRollout(grpc::ServerContext* ctx, const v1::GetRolloutRequest* req,
                          v1::Rollout* resp) override;
  grpc::Status ListFleetProbes(grpc::ServerContext* ctx, const v1::ListFleetProbesRequest* req,
                               v1::ListFleetProbesResponse* resp) override;
  grpc::Status ListAgents(grpc::ServerContext* ctx, const v1::ListAgentsRequest* req,
                          v1::ListAgentsResponse* resp) override;
  grpc::Status WatchFleetHits(grpc::ServerContext* ctx, const v1::WatchFleetHitsRequest* req,
                              grpc::ServerWriter<v1::FleetHitBatch>* writer) override;
  grpc::Status ForgetAgent(grpc::ServerContext* ctx, const v1::ForgetAgentRequest* req,
                           v1::ForgetAgentResponse* resp) override;

 private:
  // Authorizes, runs `fn`, records latency and the outcome.
  template <typename Fn>
  grpc::Status Handle(const char* method, grpc::ServerContext* ctx, Capability cap, Fn fn);

  FleetController* fleet_;
  const AuthzPolicy* authz_;
  std::shared_ptr<FleetMetrics> metrics_;
  ServiceOptions opts_;
  // WatchFleetHits streams per identity and in all: one identity cannot take every one.
  static PerKeyLimiter::Options WatcherLimits(const ServiceOptions& opts);
  PerKeyLimiter watchers_;
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_SERVICE_H_
