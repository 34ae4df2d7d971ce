// The agent's link to the xolfleet controller (optional: the agent works without one).
//
// Wiring (agent main.cc, `--controller=HOST:PORT`):
//
//   ControllerLink::Options lo;
//   lo.target = absl::GetFlag(FLAGS_controller);            // e.g. "10.0.0.1:7443"
//   lo.tls = {ca, cert, key, /*insecure_plaintext=*/false};  // --controller_tls_* flags
//   auto link = ControllerLink::Start(lo, manager.get());     // AgentApi*
//   ...                                                       // destroy before the manager
//
// What it does. The agent dials the controller (so it works behind NAT) and keeps one bidi stream
// (xolfleet.v1.AgentLink/Connect): it registers (node name, labels, kernel release/profile,
// boosting), then heartbeats every interval the controller asks for with the status of every fleet
// probe (state, placement, hit total), the status of each probe set and the kernel's slot counters;
// to a controller that accepts them, only what changed since the previous heartbeat
// (services/common/heartbeat_delta.h), the first heartbeat on each stream full. The controller
// sends the node's complete desired state whenever it changes; the link reconciles it through
// AgentApi and heartbeats at once with the state changes only (hit totals that moved wait for the
// next periodic heartbeat, which keeps its pace whatever the pushes):
//
//   - every fleet probe is an ordinary agent probe carrying two labels,
//     `xolfleet.io/fleet-probe` = "<set id>/<index>" and `xolfleet.io/probe-set` = set id,
//     so List shows exactly what the controller placed;
//   - a desired set with every probe present is left alone; one with some missing is
//     detached and attached again as one batch (all or nothing, like any Attach);
//   - fleet probes of sets no longer desired, and duplicates, are detached;
//   - a set whose Attach failed is reported FAILED and not retried for a minute (or until
//     the link reconnects); a set whose TTL expired on the node is reported EXPIRED.
//
// A reconnecting or restarted agent therefore ends with exactly its desired probes: no
// duplicates, no leftovers. Probes attached through the agent's own API (without the
// labels) are never touched. On a broken stream the link reconnects with exponential
// backoff (0.1 s .. 3 s, jittered: a restarted controller
// has its fleet back within seconds); the node's probes stay as they are meanwhile.
#ifndef XOLFLEET_SERVICES_AGENT_CONTROLLER_LINK_H_
#define XOLFLEET_SERVICES_AGENT_CONTROLLER_LINK_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/agent/agent_api.h"
#include "services/common/tls.h"
#include "xolfleet/v1/controller.pb.h"

namespace grpc {
class ClientContext;
}

namespace xolfleet {

inline constexpr char kFleetProbeLabel[] = "xolfleet.io/fleet-probe";
inline constexpr char kProbeSetLabel[] = "xolfleet.io/probe-set";

// What one reconciliation pass does; computed from the desired state and the agent's List.
struct ReconcilePlan {
  std::vector<std::string> detach;  // local probe ids
  struct Batch {
    std::string set_id;
    v1::AttachRequest request;  // specs carry the fleet labels
  };
  std::vector<Batch> attach;
  std::map<std::string, v1::AgentSetStatus> status;  // per desired set (before attaching)
};

// Pure: `failed` maps set ids whose Attach failed recently to the error; `expires` maps
// set ids to when their fleet-wide TTL ends (as of receiving the desired state): a set
// past it is reported EXPIRED and not attached again (its local probes may have expired
// without being listed: the link lists active probes only, not the inactive history).
// `breached` maps set ids to a budget breach on this node (BudgetBreaches): such a set is
// reported FAILED with that message whether or not its probes are still attached (alert,
// throttle), and is not attached again while it stays desired (a detached one would come
// back, cost the same, and be detached again): a canary's breach rolls the set back.
ReconcilePlan PlanReconcile(const v1::DesiredState& desired, const v1::ListResponse& local,
                            const std::map<std::string, std::string>& failed,
                            const std::map<std::string, absl::Time>& expires = {},
                            absl::Time now = absl::InfinitePast(),
                            const std::map<std::string, std::string>& breached = {});

// Fleet sets a budget acted on: active fleet probes of `local` the agent alerted on or
// throttled, and fleet probes of `gone` (the final records of probes no longer active)
// it detached over budget. Set id -> message.
std::map<std::string, std::string> BudgetBreaches(const v1::ListResponse& local,
                                                  const v1::ListResponse& gone);

class ControllerLink {
 public:
  struct Options {
    // Controller address, e.g. "10.0.0.1:7443" or "unix:/path", or several replicas'
    // addresses separated by commas: the link keeps to one while it works and moves to
    // the next when a connection fails or ends (a replica killed or restarted).
    std::string target;
    tls::TlsFiles tls;
    // If set, used instead of credentials read once from `tls` (e.g. credentials that
    // follow their files: services/common/cert_reloader.h). New connections use them.
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    std::string node_name;                      // empty: AgentApi::GetNodeInfo().node_name
    std::map<std::string, std::string> labels;  // merged over NodeInfo.labels
    absl::Duration min_backoff = absl::Milliseconds(100);
    absl::Duration max_backoff = absl::Seconds(3);
    absl::Duration failed_retry = absl::Seconds(60);
    absl::Duration repair_interval = absl::Seconds(5);  // reconcile even without changes
  };

  struct Status {
    bool connected = false;
    uint64_t connects = 0;
    uint64_t desired_generation = 0;  // last applied
    uint64_t reconciles = 0;
    std::string last_error;
  };

  // Validates the options (credentials, target) and starts the link's thread.
  static absl::StatusOr<std::unique_ptr<ControllerLink>> Start(const Options& opts, AgentApi* api);
  ~ControllerLink();  // closes the stream; leaves the node's probes as they are
  ControllerLink(const ControllerLink&) = delete;
  ControllerLink& operator=(const ControllerLink&) = delete;

  Status status() const;

 private:
  ControllerLink(Options opts, AgentApi* api, std::shared_ptr<grpc::ChannelCredentials> creds,
                 std::vector<std::string> targets)
      : opts_(std::move(opts)), api_(api), creds_(std::move(creds)), targets_(std::move(targets)) {}
  std::string CurrentTarget() const;
  void Run();
  // One stream's life; returns why it ended.
  absl::Status RunStream();
  // Applies the desired state; fills `hb` with what the node runs now.
  void Reconcile(const v1::DesiredState& desired, const std::map<std::string, absl::Time>& expires,
                 bool apply, v1::AgentHeartbeat* hb);

  const Options opts_;
  AgentApi* const api_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  const std::vector<std::string> targets_;  // opts_.target split at commas
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  size_t target_index_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  v1::DesiredState desired_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> expires_ ABSL_GUARDED_BY(mu_);  // set -> TTL end
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_done_ ABSL_GUARDED_BY(mu_) = false;
  bool deltas_ok_ ABSL_GUARDED_BY(mu_) = false;       // the controller accepts delta heartbeats
  bool full_requested_ ABSL_GUARDED_BY(mu_) = false;  // the controller asked for a full one
  absl::Duration interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(1);
  Status status_ ABSL_GUARDED_BY(mu_);
  // Only the link thread touches these.
  std::map<std::string, std::pair<std::string, absl::Time>> failed_;  // set -> (msg, when)
  // Budget breaches, kept while the set stays desired; fleet probes seen active last pass.
  std::map<std::string, std::string> breached_;
  std::set<std::string> last_fleet_ids_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_CONTROLLER_LINK_H_
