// The agent's operations, independent of transport. The gRPC service (the edge) and the
// controller link (desired state pushed by the controller) both call this, so a probe
// attached either way goes through the same validation and bookkeeping.
#ifndef XOLFLEET_SERVICES_AGENT_AGENT_API_H_
#define XOLFLEET_SERVICES_AGENT_AGENT_API_H_

#include "absl/status/statusor.h"
#include "xolfleet/v1/agent.pb.h"

namespace xolfleet {

class AgentApi {
 public:
  virtual ~AgentApi() = default;
  virtual absl::StatusOr<v1::AttachResponse> Attach(const v1::AttachRequest& req) = 0;
  virtual absl::StatusOr<v1::DetachResponse> Detach(const v1::DetachRequest& req) = 0;
  virtual absl::StatusOr<v1::ListResponse> List(const v1::ListRequest& req) = 0;
  virtual absl::StatusOr<v1::ClassifyResponse> Classify(const v1::ClassifyRequest& req) = 0;
  virtual absl::StatusOr<v1::NodeInfo> GetNodeInfo() = 0;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_AGENT_API_H_
