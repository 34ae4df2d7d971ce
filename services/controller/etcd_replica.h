// Coordination of controller replicas through etcd (replica.h): a lease per replica,
// leadership as a key bound to that lease, agent statuses under it.
//
//   <prefix>leader          the leader's replica name, attached to its lease
//   <prefix>status/<node>   AgentStatusRecord, attached to the lease of the replica
//                           holding the node's stream
//   <prefix>replicas/<name> the replica's name, attached to its lease: the live replicas
//
// A background thread keeps the lease alive (every ttl/3), campaigns (a transaction that creates
// the leader key if nobody holds it), and flushes queued status writes. The lease is believed valid
// until the send time of the last successful keep-alive plus its TTL (etcd's own expiry is never
// earlier), minus a margin: when etcd cannot be reached that long, IsLeader() turns false on its
// own. A replica that stops cleanly revokes its lease, handing leadership over at once; one that is
// killed hands it over when its lease expires.
#ifndef XOLFLEET_SERVICES_CONTROLLER_ETCD_REPLICA_H_
#define XOLFLEET_SERVICES_CONTROLLER_ETCD_REPLICA_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/controller/etcd_store.h"
#include "services/controller/replica.h"

namespace xolfleet::controller {

class EtcdCoordinator final : public Coordinator {
 public:
  struct Options {
    std::string replica;  // unique per process
    absl::Duration lease_ttl = absl::Seconds(5);
    absl::Duration period = absl::Milliseconds(250);  // campaign / flush interval
  };
  // Called on every change of leadership, with the coordinator's lock held (must not
  // call back into it).
  using LeaderChange = std::function<void(bool leader)>;
  static std::unique_ptr<EtcdCoordinator> Start(std::shared_ptr<EtcdClient> client,
                                                std::string prefix, Options opts,
                                                LeaderChange on_change = nullptr);
  ~EtcdCoordinator() override;

  const std::string& replica() const override { return opts_.replica; }
  bool IsLeader() override;
  absl::Status PutSetAsLeader(const StoredSet& set) override;
  void PublishStatus(const AgentStatusRecord& record) override;
  void RetractStatus(const std::string& node) override;
  absl::StatusOr<std::vector<AgentStatusRecord>> LoadStatuses() override;
  absl::StatusOr<std::vector<std::string>> LoadReplicas() override;

  static std::string EncodeStatus(const AgentStatusRecord& r);
  static bool DecodeStatus(const std::string& b, AgentStatusRecord* r);

 private:
  EtcdCoordinator(std::shared_ptr<EtcdClient> client, std::string prefix, Options opts,
                  LeaderChange on_change)
      : client_(std::move(client)),
        prefix_(std::move(prefix)),
        opts_(std::move(opts)),
        on_change_(std::move(on_change)) {}
  void Run();
  void KeepLease();
  void Campaign();
  void Advertise();
  void Flush();
  void SetLeader(bool leader) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool LeaseValidLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<EtcdClient> client_;
  const std::string prefix_;
  const Options opts_;
  const LeaderChange on_change_;

  absl::Mutex mu_;
  int64_t lease_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time lease_valid_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time last_keepalive_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
  int64_t advertised_lease_ ABSL_GUARDED_BY(mu_) = 0;  // replicas/<name> is bound to it
  // node -> encoded record to write, or nullopt to withdraw.
  std::map<std::string, std::optional<std::string>> pending_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_ETCD_REPLICA_H_
