// Several controller replicas on one shared store (issue 13): what the core needs from
// the coordination layer. Without a Coordinator the controller is alone and acts on
// everything itself (SQLite, the embedded default).
//
// With one (etcd_replica.h):
//   - exactly one replica, the leader, drives rollouts and TTL expiry; it holds a lease
//     and every rollout write is fenced by it (a transaction that succeeds only while
//     this replica is still the leader), so a replica that lost its lease cannot write
//     and stops acting at once (IsLeader() turns false before the lease can expire);
//   - every replica serves agents, reads and fleet-wide views: each publishes the status
//     of the agents connected to it (registration and last heartbeat: probe states, set
//     states, slot statistics) under its own lease, so the status disappears with a
//     replica that dies, and reads the others' (FleetController syncs every tick);
//   - the hits in those statuses are how every replica counts and streams the whole
//     fleet's hits (fleet.h, "Hits across replicas").
#ifndef XOLFLEET_SERVICES_CONTROLLER_REPLICA_H_
#define XOLFLEET_SERVICES_CONTROLLER_REPLICA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/controller/store.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

// One agent's status as the replica holding its stream published it.
struct AgentStatusRecord {
  std::string replica;  // the replica holding the stream
  std::string peer, identity;
  v1::AgentRegister registration;
  bool have_heartbeat = false;
  v1::AgentHeartbeat heartbeat;  // the last one
  int64_t last_seen_unix_ns = 0;
};

class Coordinator {
 public:
  virtual ~Coordinator() = default;
  // This replica's name (unique per process).
  virtual const std::string& replica() const = 0;
  // True while this replica holds the leadership and its lease has not run out.
  virtual bool IsLeader() = 0;
  // Writes a set's new rollout state, only while this replica is the leader and the set
  // still exists (a detach elsewhere wins). FAILED_PRECONDITION otherwise.
  virtual absl::Status PutSetAsLeader(const StoredSet& set) = 0;
  // Publishes / withdraws the status of an agent connected here. Non-blocking: written
  // by a background thread, the latest per node wins.
  virtual void PublishStatus(const AgentStatusRecord& record) = 0;
  virtual void RetractStatus(const std::string& node) = 0;
  // Every replica's published statuses.
  virtual absl::StatusOr<std::vector<AgentStatusRecord>> LoadStatuses() = 0;
  // The names of the replicas alive now (this one included once it holds a lease): each advertises
  // itself under its lease, so a replica that stops or is killed drops out when its lease ends.
  virtual absl::StatusOr<std::vector<std::string>> LoadReplicas() = 0;
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_REPLICA_H_
