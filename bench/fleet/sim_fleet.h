// Thousands of simulated agents in one process, speaking the real agent link
// (xolfleet.v1.AgentLink/Connect) to a real controller over gRPC + mTLS.
//
// Why not N ControllerLinks? The agent's link has two threads per stream and its own reconciliation
// against an AgentApi: right for one node, 20,000 threads for 10,000. Here each agent is a
// ClientBidiReactor (gRPC's callback API) on its own channel, so its own TCP connection and TLS
// session, as a real node would have; the agent side is a little state in memory:
//   - it registers (node name, labels, a stock 6.18 kernel profile);
//   - every `desired` state is "attached" at once: each set is reported SET_ATTACHED and
//     each spec as an ATTACHED, EMULATED probe whose local id changes on every attach;
//   - it heartbeats right after each desired state (as the agent does after reconciling)
//     and every interval the controller asks for; every heartbeat adds `hits_per_heartbeat`
//     hits to each probe;
//   - heartbeats are deltas when the controller accepts them (heartbeat_delta.h), with the
//     agent's own encoder and rules: in the periodic ones only probes whose hits changed
//     travel (hits_per_heartbeat 0: none); the one right after a desired state carries
//     state changes only (AgentHeartbeat.state_change: the new set's probes), the hits
//     wait for the next periodic one, which keeps its pace;
//   - a stream the controller ends is dialled again after `reconnect_delay`.
// Stop() half-closes every stream and waits until the controller has finished each one:
// every heartbeat counted as sent has then been handled by the controller, so the
// controller's xolfleet_controller_heartbeats_total equals heartbeats_sent exactly.
#ifndef XOLFLEET_BENCH_FLEET_SIM_FLEET_H_
#define XOLFLEET_BENCH_FLEET_SIM_FLEET_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"

namespace xolfleet::sim {

class SimAgent;

class SimFleet {
 public:
  struct Options {
    std::string target;  // controller address
    // Credentials of agent `i` (1-based); every agent gets its own channel either way.
    std::function<std::shared_ptr<grpc::ChannelCredentials>(int)> credentials;
    int agents = 100;
    int first_index = 1;
    std::string name_prefix = "node-";
    std::function<std::map<std::string, std::string>(int)> labels;  // optional
    double connect_rate = 500;  // new streams per second while starting (TLS handshakes)
    // At most this many streams dialled and not yet acknowledged (0: no limit): a loaded
    // controller sets the pace of the ramp-up instead of a backlog of handshakes.
    int max_pending_dials = 0;
    // Keepalive: the agent link's (20 s, 10 s to answer) unless set. Thousands of agents
    // on the controller's machine can keep it from answering a ping within 10 s.
    absl::Duration keepalive_time = absl::ZeroDuration();
    absl::Duration keepalive_timeout = absl::ZeroDuration();
    absl::Duration reconnect_delay = absl::Seconds(1);
    uint64_t hits_per_heartbeat = 1;
    // Send delta heartbeats to a controller that accepts them (as the agent does).
    bool delta_heartbeats = true;
  };

  struct Stats {
    int agents = 0;
    int registered = 0;          // streams the controller has acknowledged, now
    uint64_t registrations = 0;  // `registered` messages received, ever
    uint64_t desired = 0;        // `desired` messages received
    uint64_t heartbeats_sent = 0;
    uint64_t delta_heartbeats = 0;         // of the heartbeats started, those sent as deltas
    uint64_t state_change_heartbeats = 0;  // of those, state changes only (after a push)
    uint64_t stream_ends = 0;              // registered streams ended (by either side)
    uint64_t stream_errors = 0;            // of which with a status other than OK
    uint64_t failed_dials = 0;             // streams that ended before the controller acknowledged
    std::string last_error;
  };

  static absl::StatusOr<std::unique_ptr<SimFleet>> Start(Options opts);
  ~SimFleet();  // Stop()
  SimFleet(const SimFleet&) = delete;
  SimFleet& operator=(const SimFleet&) = delete;

  // Half-closes every stream, waits (up to `timeout`) until the controller finished all.
  // True if every stream ended.
  bool Stop(absl::Duration timeout = absl::Seconds(30));

  Stats stats() const;
  // Per set id: agents whose desired state holds it and whose last heartbeat reported it
  // attached. `without_sets`: agents holding no set (after their first desired state).
  std::map<std::string, int> SetCounts(int* without_sets = nullptr) const;

  // Used by the agents.
  struct Counters {
    std::atomic<uint64_t> registrations{0}, desired{0}, heartbeats{0}, ends{0}, errors{0},
        failed_dials{0}, delta_heartbeats{0}, state_change_heartbeats{0};
    std::atomic<int> registered{0};
    std::atomic<int> live_streams{0};
    mutable absl::Mutex err_mu;
    std::string last_error ABSL_GUARDED_BY(err_mu);
  };

 private:
  explicit SimFleet(Options opts);
  void Ticker();

  const Options opts_;
  Counters counters_;
  std::vector<std::unique_ptr<SimAgent>> agents_;
  std::thread ticker_;
  std::atomic<bool> stopping_{false};
};

}  // namespace xolfleet::sim

#endif  // XOLFLEET_BENCH_FLEET_SIM_FLEET_H_
