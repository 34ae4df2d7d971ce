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

// Every page of List for `req` (its page_token ignored), concatenated: for the agent's own
// callers (controller link, the ownership check of Detach), which need every probe.
inline absl::StatusOr<v1::ListResponse> ListAll(AgentApi& api, v1::ListRequest req) {
  req.clear_page_token();
  req.set_page_size(0x7fffffff);  // clamped to the maximum
  v1::ListResponse all;
  while (true) {
    absl::StatusOr<v1::ListResponse> page = api.List(req);
    if (!page.ok()) return page.status();
    for (v1::Probe& p : *page->mutable_probes()) *all.add_probes() = std::move(p);
    if (page->next_page_token().empty()) return all;
    req.set_page_token(page->next_page_token());
  }
}

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_AGENT_API_H_
