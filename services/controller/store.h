// Desired state of the fleet: probe sets (the attach request and its rollout) and the agents the
// controller has seen. The controller keeps everything in memory and writes through here before it
// acknowledges a change, so a restart (even kill -9) loses nothing it acknowledged.
//
// Two backends sit behind this interface:
//   SQLite (sqlite_store.h)  the embedded default for one controller (--state_db);
//   etcd (etcd_store.h)      shared by several controller replicas (--store=etcd://...).
// Both give the same answers to the same calls (store_test.cc runs one contract on both).
#ifndef XOLFLEET_SERVICES_CONTROLLER_STORE_H_
#define XOLFLEET_SERVICES_CONTROLLER_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

struct StoredSet {
  v1::FleetAttachRequest request;  // selector, specs, policy (wait cleared)
  v1::Rollout rollout;
  std::string created_by;  // client identity
};

struct StoredAgent {
  v1::AgentRegister registration;
  int64_t last_seen_unix_ns = 0;
  std::string identity;
};

class Store {
 public:
  enum class OpenMode {
    kCreateIfMissing,  // a new empty database when there is none (--init; tests)
    kMustExist,        // FAILED_PRECONDITION when there is none (the default at start-up)
  };
  // The embedded default: the SQLite database at `path` (":memory:" for tests); see sqlite_store.h.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path,
                                                     OpenMode mode = OpenMode::kCreateIfMissing);

  virtual ~Store() = default;

  // Inserts or replaces one set.
  virtual absl::Status PutSet(const StoredSet& set) = 0;
  // Deletes every listed set at once; NOT_FOUND (nothing deleted) if any is missing.
  virtual absl::Status DeleteSets(const std::vector<std::string>& set_ids) = 0;
  // Every set, ordered by set id.
  virtual absl::StatusOr<std::vector<StoredSet>> LoadSets() = 0;

  virtual absl::Status PutAgent(const StoredAgent& agent) = 0;
  // NOT_FOUND if there is no such agent.
  virtual absl::Status DeleteAgent(const std::string& node_name) = 0;
  // Every agent, ordered by node name.
  virtual absl::StatusOr<std::vector<StoredAgent>> LoadAgents() = 0;

  // Writes a consistent copy of the state to `dest` (ALREADY_EXISTS if it exists).
  // UNIMPLEMENTED where the backend has its own tools (etcd: `etcdctl snapshot save`).
  virtual absl::Status Backup(const std::string& dest) {
    return absl::UnimplementedError(
        absl::StrCat("this store cannot back itself up to ", dest, "; use its own tools"));
  }
  // What and where, for logs ("sqlite:/var/lib/...", "etcd://a:2379,b:2379").
  virtual std::string Describe() const = 0;
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_STORE_H_
