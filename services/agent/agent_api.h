// The agent's operations, independent of transport. The gRPC service (the edge) and the
// controller link (desired state pushed by the controller) both call this, so a probe
// attached either way goes through the same validation and bookkeeping.
#ifndef XOLFLEET_SERVICES_AGENT_AGENT_API_H_
#define XOLFLEET_SERVICES_AGENT_AGENT_API_H_

#include "absl/status/statusor.h"
#include "services/common/page_token.h"
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
  absl::Status st = ForEachPage<v1::ListResponse>(
      std::move(req),
      [&api](const v1::ListRequest& r, v1::ListResponse* page) {
        absl::StatusOr<v1::ListResponse> got = api.List(r);
        if (!got.ok()) return got.status();
        *page = *std::move(got);
        return absl::OkStatus();
      },
      [&all](v1::ListResponse& page) {
        for (v1::Probe& p : *page.mutable_probes()) *all.add_probes() = std::move(p);
      });
  if (!st.ok()) return st;
  return all;
}

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_AGENT_API_H_
