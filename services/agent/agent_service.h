// The gRPC edge of the agent: a thin AgentService over AgentApi (ProbeManager) plus the WatchHits
// stream over the HitHub. absl::Status from the core becomes grpc::Status here.
//
// Every call is authenticated and authorized here. The caller is a local process on the
// unix socket (uid/gid/groups from the kernel, LocalListener), a certificate on mTLS TCP,
// or "insecure:local" on plaintext loopback TCP (development only); the authorization
// config maps callers to capabilities:
//   read-only       List, GetNodeInfo, Classify, WatchHits (hit counts and times)
//   attach-counts   Attach without capture; Detach of the caller's own probes
//   attach-capture  Attach with register capture; register values in WatchHits
// (AttachWithProgress is Attach: the same checks on the same request.)
//   admin           Detach of any probe (fleet probes included)
// A local caller other than root also only reaches files it can read itself (Classify and
// Attach open the binary with its credentials) and scopes probes (pid) only to its own
// processes. Each probe records its owner in the reserved label `xolfleet.io/owner`;
// labels under `xolfleet.io/` cannot be set through this API.
#ifndef XOLFLEET_SERVICES_AGENT_AGENT_SERVICE_H_
#define XOLFLEET_SERVICES_AGENT_AGENT_SERVICE_H_

#include <atomic>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "services/agent/hit_hub.h"
#include "services/agent/local_listener.h"
#include "services/agent/probe_manager.h"
#include "services/common/authz.h"
#include "services/common/per_key_limiter.h"
#include "xolfleet/v1/agent.grpc.pb.h"

namespace xolfleet {

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  struct Options {
    size_t watch_queue_events = 65536;  // per WatchHits stream
    uint32_t default_max_batch = 1024;
    uint32_t max_batch_limit = 16384;
    uint32_t max_watch_streams_per_identity = 8;
  };
  // `local` (may be null) identifies callers on the unix socket; `authz` maps callers to
  // capabilities. Both must outlive the service.
  AgentServiceImpl(ProbeManager* manager, HitHub* hub, Options options, const AuthzPolicy* authz,
                   const LocalListener* local)
      : manager_(manager),
        hub_(hub),
        options_(options),
        authz_(authz),
        local_(local),
        watch_streams_(WatchLimits(options)) {}

  // Ends open WatchHits streams (server shutdown).
  void Shutdown() { shutting_down_ = true; }

  grpc::Status Attach(grpc::ServerContext* ctx, const v1::AttachRequest* req,
                      v1::AttachResponse* resp) override;
  grpc::Status AttachWithProgress(grpc::ServerContext* ctx, const v1::AttachRequest* req,
                                  grpc::ServerWriter<v1::AttachProgress>* writer) override;
  grpc::Status Detach(grpc::ServerContext* ctx, const v1::DetachRequest* req,
                      v1::DetachResponse* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const v1::ListRequest* req,
                    v1::ListResponse* resp) override;
  grpc::Status Classify(grpc::ServerContext* ctx, const v1::ClassifyRequest* req,
                        v1::ClassifyResponse* resp) override;
  grpc::Status WatchHits(grpc::ServerContext* ctx, const v1::WatchHitsRequest* req,
                         grpc::ServerWriter<v1::HitBatch>* writer) override;
  grpc::Status GetNodeInfo(grpc::ServerContext* ctx, const v1::GetNodeInfoRequest* req,
                           v1::NodeInfo* resp) override;

 private:
  // The caller, or the status to answer with (UNAUTHENTICATED, PERMISSION_DENIED naming the
  // capability, RESOURCE_EXHAUSTED for a connection over its limit).
  absl::StatusOr<Identity> Authorize(const grpc::ServerContext& ctx, Capability need) const;
  absl::Status CheckSpecs(const Identity& who, const v1::AttachRequest& req) const;
  // Attach and AttachWithProgress alike: authorizes the caller for `req` and copies it to
  // `owned` with the owner label set on every spec.
  absl::StatusOr<Identity> PrepareAttach(const grpc::ServerContext& ctx,
                                         const v1::AttachRequest& req,
                                         v1::AttachRequest* owned) const;

  ProbeManager* const manager_;
  HitHub* const hub_;
  const Options options_;
  const AuthzPolicy* const authz_;
  const LocalListener* const local_;
  // WatchHits streams per caller identity (the total is the hit hub's --max-watch-streams).
  static PerKeyLimiter::Options WatchLimits(const Options& options);
  PerKeyLimiter watch_streams_;
  std::atomic<bool> shutting_down_{false};
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_AGENT_SERVICE_H_
