// Desired state of the fleet in SQLite: probe sets (the attach request and its rollout)
// and the agents the controller has seen. The controller keeps everything in memory and
// writes through here, so a restart (even kill -9) loses nothing it acknowledged.
//
// Records are protobuf messages stored as blobs, keyed by id; the schema version lives
// in `PRAGMA user_version`. Journal mode is WAL with synchronous=NORMAL: a committed
// transaction survives a process crash (it is in the WAL before the call returns); only
// power loss may lose the last transactions, which agents then re-report.
#ifndef XOLFLEET_SERVICES_CONTROLLER_STORE_H_
#define XOLFLEET_SERVICES_CONTROLLER_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "xolfleet/v1/controller.pb.h"

struct sqlite3;

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
  // Opens the database at `path` (":memory:" for tests).
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path,
                                                     OpenMode mode = OpenMode::kCreateIfMissing);
  // Checkpoints the WAL into the database file (TRUNCATE), so the file alone holds every
  // committed transaction, then closes.
  ~Store();

  // Moves every committed transaction from the WAL into the database file.
  absl::Status Checkpoint();
  // Writes a consistent copy of the database to `dest` (VACUUM INTO: one read transaction,
  // safe while the controller runs). ALREADY_EXISTS if `dest` exists.
  absl::Status Backup(const std::string& dest);
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Inserts or replaces one set.
  absl::Status PutSet(const StoredSet& set);
  // Deletes every listed set in one transaction; NOT_FOUND (nothing deleted) if any is
  // missing.
  absl::Status DeleteSets(const std::vector<std::string>& set_ids);
  absl::StatusOr<std::vector<StoredSet>> LoadSets();

  absl::Status PutAgent(const StoredAgent& agent);
  absl::Status DeleteAgent(const std::string& node_name);
  absl::StatusOr<std::vector<StoredAgent>> LoadAgents();

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_STORE_H_
