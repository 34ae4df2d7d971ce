#include "services/controller/sqlite_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/common/log.h"

namespace xolfleet::controller {
namespace {

constexpr int kSchemaVersion = 1;

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("sqlite: ", what, ": ", sqlite3_errmsg(db)));
}

// One prepared statement, finalized on every path.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void BindText(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void BindInt(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  std::string Column(int i) {
    const void* p = sqlite3_column_blob(stmt_, i);
    int n = sqlite3_column_bytes(stmt_, i);
    return p ? std::string(static_cast<const char*>(p), n) : std::string();
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path, OpenMode mode) {
  absl::StatusOr<std::unique_ptr<SqliteStore>> s = SqliteStore::Open(path, mode);
  if (!s.ok()) return s.status();
  return std::unique_ptr<Store>(std::move(*s));
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path,
                                                               OpenMode mode) {
  if (mode == OpenMode::kMustExist && path != ":memory:" && access(path.c_str(), F_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("state database ", path,
                     " does not exist: check --state_db, or start once with --init to create a new "
                     "empty one (every node then detaches the fleet probes it holds)"));
  }
  sqlite3* db = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX;
  if (mode == OpenMode::kCreateIfMissing) flags |= SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open state database ", path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, path));
  absl::MutexLock l(&store->mu_);
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           "PRAGMA synchronous=NORMAL",
           "CREATE TABLE IF NOT EXISTS probe_sets (set_id TEXT PRIMARY KEY, request BLOB NOT NULL, "
           "rollout BLOB NOT NULL, created_by TEXT NOT NULL)",
           "CREATE TABLE IF NOT EXISTS agents (node_name TEXT PRIMARY KEY, registration BLOB NOT "
           "NULL, last_seen_unix_ns INTEGER NOT NULL, identity TEXT NOT NULL)",
       }) {
    if (auto s = store->Exec(sql); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("state database ", path, ": ", s.message()));
    }
  }
  Stmt v(db, "PRAGMA user_version");
  int version = 0;
  if (v.ok() && sqlite3_step(v.get()) == SQLITE_ROW) version = sqlite3_column_int(v.get(), 0);
  if (version == 0) {
    if (auto s = store->Exec("PRAGMA user_version=1"); !s.ok()) return s;
  } else if (version != kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("state database ", path,
                                                      " has schema version ", version,
                                                      "; this controller reads ", kSchemaVersion));
  }
  return store;
}

SqliteStore::~SqliteStore() {
  if (absl::Status st = Checkpoint(); !st.ok()) {
    Log("xolfleet-controller: state database checkpoint at close: ", st.message());
  }
  absl::MutexLock l(&mu_);
  if (sqlite3_close(db_) != SQLITE_OK) {
    Log("xolfleet-controller: closing the state database: ", sqlite3_errmsg(db_));
  }
}

absl::Status SqliteStore::Checkpoint() {
  absl::MutexLock l(&mu_);
  int log_frames = 0, checkpointed = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log_frames,
                                           &checkpointed);
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("WAL checkpoint: ", sqlite3_errmsg(db_)));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::Backup(const std::string& dest) {
  if (access(dest.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(dest, " exists: not overwriting it"));
  }
  absl::MutexLock l(&mu_);
  Stmt st(db_, "VACUUM INTO ?1");
  if (!st.ok()) return absl::InternalError(absl::StrCat("backup: ", sqlite3_errmsg(db_)));
  st.BindText(1, dest);
  if (sqlite3_step(st.get()) != SQLITE_DONE) {
    return absl::UnavailableError(absl::StrCat("backup to ", dest, ": ", sqlite3_errmsg(db_)));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sqlite: ", sql, ": ", msg));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::PutSet(const StoredSet& set) {
  absl::MutexLock l(&mu_);
  Stmt st(db_,
          "INSERT OR REPLACE INTO probe_sets (set_id, request, rollout, created_by) VALUES (?, ?, "
          "?, ?)");
  if (!st.ok()) return SqlError(db_, "prepare put set");
  st.BindText(1, set.rollout.set_id());
  st.BindBlob(2, set.request.SerializeAsString());
  st.BindBlob(3, set.rollout.SerializeAsString());
  st.BindText(4, set.created_by);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(db_, "put set");
  return absl::OkStatus();
}

absl::Status SqliteStore::DeleteSets(const std::vector<std::string>& set_ids) {
  absl::MutexLock l(&mu_);
  if (auto s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  for (const auto& id : set_ids) {
    Stmt st(db_, "DELETE FROM probe_sets WHERE set_id = ?");
    if (!st.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return SqlError(db_, "prepare delete set");
    }
    st.BindText(1, id);
    if (sqlite3_step(st.get()) != SQLITE_DONE) {
      auto err = SqlError(db_, "delete set");
      Exec("ROLLBACK").IgnoreError();
      return err;
    }
    if (sqlite3_changes(db_) != 1) {
      Exec("ROLLBACK").IgnoreError();
      return absl::NotFoundError(absl::StrCat("no probe set ", id, "; nothing deleted"));
    }
  }
  return Exec("COMMIT");
}

absl::StatusOr<std::vector<StoredSet>> SqliteStore::LoadSets() {
  absl::MutexLock l(&mu_);
  Stmt st(db_, "SELECT request, rollout, created_by FROM probe_sets ORDER BY set_id");
  if (!st.ok()) return SqlError(db_, "prepare load sets");
  std::vector<StoredSet> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    StoredSet s;
    if (!s.request.ParseFromString(st.Column(0)) || !s.rollout.ParseFromString(st.Column(1))) {
      return absl::DataLossError("state database: unreadable probe set record");
    }
    s.created_by = st.Column(2);
    out.push_back(std::move(s));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "load sets");
  return out;
}

absl::Status SqliteStore::PutAgent(const StoredAgent& agent) {
  absl::MutexLock l(&mu_);
  Stmt st(db_,
          "INSERT OR REPLACE INTO agents (node_name, registration, last_seen_unix_ns, identity) "
          "VALUES (?, ?, ?, ?)");
  if (!st.ok()) return SqlError(db_, "prepare put agent");
  st.BindText(1, agent.registration.node_name());
  st.BindBlob(2, agent.registration.SerializeAsString());
  st.BindInt(3, agent.last_seen_unix_ns);
  st.BindText(4, agent.identity);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(db_, "put agent");
  return absl::OkStatus();
}

absl::Status SqliteStore::DeleteAgent(const std::string& node_name) {
  absl::MutexLock l(&mu_);
  Stmt st(db_, "DELETE FROM agents WHERE node_name = ?");
  if (!st.ok()) return SqlError(db_, "prepare delete agent");
  st.BindText(1, node_name);
  if (sqlite3_step(st.get()) != SQLITE_DONE) return SqlError(db_, "delete agent");
  if (sqlite3_changes(db_) != 1) {
    return absl::NotFoundError(absl::StrCat("no agent named ", node_name));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StoredAgent>> SqliteStore::LoadAgents() {
  absl::MutexLock l(&mu_);
  Stmt st(db_, "SELECT registration, last_seen_unix_ns, identity FROM agents ORDER BY node_name");
  if (!st.ok()) return SqlError(db_, "prepare load agents");
  std::vector<StoredAgent> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    StoredAgent a;
    if (!a.registration.ParseFromString(st.Column(0))) {
      return absl::DataLossError("state database: unreadable agent record");
    }
    a.last_seen_unix_ns = sqlite3_column_int64(st.get(), 1);
    a.identity = st.Column(2);
    out.push_back(std::move(a));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "load agents");
  return out;
}

}  // namespace xolfleet::controller
