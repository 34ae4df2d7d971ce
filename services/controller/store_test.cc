#include "services/controller/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace xolfleet::controller {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const char* suffix : {"", "-wal", "-shm"}) unlink((path_ + suffix).c_str());
  }
  std::string path_ = absl::StrCat(::testing::TempDir(), "/store-", getpid(), ".db");
};

StoredSet MakeSet(const std::string& id) {
  StoredSet s;
  s.rollout.set_set_id(id);
  s.rollout.set_state(v1::ROLLOUT_CANARY);
  s.request.mutable_selector()->set_all(true);
  s.request.add_specs()->set_binary_path("/bin/sh");
  s.created_by = "CN=admin";
  return s;
}

TEST_F(StoreTest, SurvivesReopen) {
  {
    auto st = Store::Open(path_);
    ASSERT_TRUE(st.ok()) << st.status();
    ASSERT_TRUE((*st)->PutSet(MakeSet("ps-a")).ok());
    ASSERT_TRUE((*st)->PutSet(MakeSet("ps-b")).ok());
    StoredAgent a;
    a.registration.set_node_name("n1");
    (*a.registration.mutable_labels())["zone"] = "a";
    a.identity = "CN=n1";
    ASSERT_TRUE((*st)->PutAgent(a).ok());
  }
  auto st = Store::Open(path_);
  ASSERT_TRUE(st.ok());
  auto sets = (*st)->LoadSets();
  ASSERT_TRUE(sets.ok());
  ASSERT_EQ(sets->size(), 2u);
  EXPECT_EQ((*sets)[0].rollout.set_id(), "ps-a");
  EXPECT_EQ((*sets)[0].request.specs(0).binary_path(), "/bin/sh");
  EXPECT_EQ((*sets)[0].created_by, "CN=admin");
  auto agents = (*st)->LoadAgents();
  ASSERT_TRUE(agents.ok());
  ASSERT_EQ(agents->size(), 1u);
  EXPECT_EQ((*agents)[0].registration.labels().at("zone"), "a");
}

TEST_F(StoreTest, DeleteIsAllOrNothing) {
  auto st = Store::Open(path_);
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE((*st)->PutSet(MakeSet("ps-a")).ok());
  ASSERT_TRUE((*st)->PutSet(MakeSet("ps-b")).ok());
  auto s = (*st)->DeleteSets({"ps-a", "ps-missing"});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*st)->LoadSets()->size(), 2u);
  ASSERT_TRUE((*st)->DeleteSets({"ps-a", "ps-b"}).ok());
  EXPECT_TRUE((*st)->LoadSets()->empty());
}

TEST_F(StoreTest, ReplaceUpdatesRollout) {
  auto st = Store::Open(path_);
  ASSERT_TRUE(st.ok());
  StoredSet s = MakeSet("ps-a");
  ASSERT_TRUE((*st)->PutSet(s).ok());
  s.rollout.set_state(v1::ROLLOUT_COMPLETE);
  ASSERT_TRUE((*st)->PutSet(s).ok());
  auto sets = (*st)->LoadSets();
  ASSERT_EQ(sets->size(), 1u);
  EXPECT_EQ((*sets)[0].rollout.state(), v1::ROLLOUT_COMPLETE);
}

TEST_F(StoreTest, UnopenablePathIsAnError) {
  auto st = Store::Open("/nonexistent-dir/xolfleet/state.db");
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.status().message().find("/nonexistent-dir"), std::string::npos);
}

TEST_F(StoreTest, MissingDatabaseIsAnErrorUnlessInit) {
  auto st = Store::Open(path_, Store::OpenMode::kMustExist);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.status().message().find("--init"), std::string::npos) << st.status();
  EXPECT_NE(access(path_.c_str(), F_OK), 0) << "a database was created";
  ASSERT_TRUE(Store::Open(path_, Store::OpenMode::kCreateIfMissing).ok());
  EXPECT_TRUE(Store::Open(path_, Store::OpenMode::kMustExist).ok());
}

std::vector<std::string> SetIdsIn(const std::string& path) {
  auto st = Store::Open(path, Store::OpenMode::kMustExist);
  if (!st.ok()) return {"error: " + std::string(st.status().message())};
  absl::StatusOr<std::vector<StoredSet>> sets = (*st)->LoadSets();
  if (!sets.ok()) return {"error: " + std::string(sets.status().message())};
  std::vector<std::string> ids;
  for (const StoredSet& s : *sets) ids.push_back(s.rollout.set_id());
  return ids;
}

std::string CopyFile(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
  return to;
}

TEST_F(StoreTest, ClosedDatabaseFileAloneHoldsEverything) {
  {
    auto st = Store::Open(path_);
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE((*st)->PutSet(MakeSet("ps-a")).ok());
  }
  // A plain file copy (no -wal next to it) has the data: the WAL was checkpointed.
  struct stat wal;
  EXPECT_TRUE(stat((path_ + "-wal").c_str(), &wal) != 0 || wal.st_size == 0);
  const std::string copy = CopyFile(path_, path_ + ".copy");
  EXPECT_EQ(SetIdsIn(copy), std::vector<std::string>{"ps-a"});
}

TEST_F(StoreTest, BackupWhileOpenIsConsistent) {
  auto st = Store::Open(path_);
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE((*st)->PutSet(MakeSet("ps-a")).ok());
  ASSERT_TRUE((*st)->PutSet(MakeSet("ps-b")).ok());
  const std::string dest = path_ + ".backup";
  ASSERT_TRUE((*st)->Backup(dest).ok());
  EXPECT_EQ(SetIdsIn(dest), (std::vector<std::string>{"ps-a", "ps-b"}));
  EXPECT_EQ((*st)->Backup(dest).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace xolfleet::controller
