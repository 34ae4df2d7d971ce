// The embedded store: desired state in one SQLite database (Store::Open).
//
// Records are protobuf messages stored as blobs, keyed by id; the schema version lives
// in `PRAGMA user_version`. Journal mode is WAL with synchronous=NORMAL: a committed
// transaction survives a process crash (it is in the WAL before the call returns); only
// power loss may lose the last transactions, which agents then re-report.
#ifndef XOLFLEET_SERVICES_CONTROLLER_SQLITE_STORE_H_
#define XOLFLEET_SERVICES_CONTROLLER_SQLITE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "services/controller/store.h"

struct sqlite3;

namespace xolfleet::controller {

class SqliteStore final : public Store {
 public:
  // Opens the database at `path` (":memory:" for tests).
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(
      const std::string& path, OpenMode mode = OpenMode::kCreateIfMissing);
  // Checkpoints the WAL into the database file (TRUNCATE), so the file alone holds every
  // committed transaction, then closes.
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Moves every committed transaction from the WAL into the database file.
  absl::Status Checkpoint();
  // A consistent copy of the database (VACUUM INTO: one read transaction, safe while the
  // controller runs). ALREADY_EXISTS if `dest` exists.
  absl::Status Backup(const std::string& dest) override;

  absl::Status PutSet(const StoredSet& set) override;
  absl::Status DeleteSets(const std::vector<std::string>& set_ids) override;
  absl::StatusOr<std::vector<StoredSet>> LoadSets() override;
  absl::Status PutAgent(const StoredAgent& agent) override;
  absl::Status DeleteAgent(const std::string& node_name) override;
  absl::StatusOr<std::vector<StoredAgent>> LoadAgents() override;
  std::string Describe() const override { return "sqlite:" + path_; }

 private:
  SqliteStore(sqlite3* db, std::string path) : path_(std::move(path)), db_(db) {}
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_SQLITE_STORE_H_
