#include "services/controller/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/common/cert_reloader.h"
#include "services/controller/etcd_store.h"
#include "services/controller/etcd_test_server.h"

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
  s.rollout.set_state(v1::ROLLOUT_STATE_CANARY);
  s.request.mutable_selector()->set_all(true);
  s.request.add_specs()->set_binary_path("/bin/sh");
  s.created_by = "CN=admin";
  return s;
}

// The contract both backends keep, run on each: SQLite in a file, etcd on a real
// one-member cluster on loopback started by the test.
class StoreContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    auto e = EtcdTestServer::Create(absl::StrCat(::testing::TempDir(), "/etcd-", getpid()));
    ASSERT_TRUE(e.ok()) << e.status();
    etcd_ = e->release();
  }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }
  void TearDown() override {
    for (const char* suffix : {"", "-wal", "-shm"}) unlink((path_ + suffix).c_str());
  }
  // A store on the same state each time it is called (a reopen, or another replica).
  std::unique_ptr<Store> Open() {
    if (GetParam() == "sqlite") {
      auto st = Store::Open(path_);
      EXPECT_TRUE(st.ok()) << st.status();
      return st.ok() ? std::move(*st) : nullptr;
    }
    auto st = EtcdStore::Open(etcd_->Url(prefix_));
    EXPECT_TRUE(st.ok()) << st.status();
    return st.ok() ? std::move(*st) : nullptr;
  }
  static EtcdTestServer* etcd_;
  const std::string path_ = absl::StrCat(::testing::TempDir(), "/store-", getpid(), ".db");
  // Each test its own key space on the shared etcd.
  const std::string prefix_ =
      absl::StrCat("/t/", ::testing::UnitTest::GetInstance()->current_test_info()->name(), "/");
};
EtcdTestServer* StoreContractTest::etcd_ = nullptr;

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractTest, ::testing::Values("sqlite", "etcd"),
                         [](const auto& info) { return info.param; });

TEST_P(StoreContractTest, SurvivesReopen) {
  {
    auto st = Open();
    ASSERT_TRUE(st);
    ASSERT_TRUE(st->PutSet(MakeSet("ps-b")).ok());
    ASSERT_TRUE(st->PutSet(MakeSet("ps-a")).ok());
    StoredAgent a;
    a.registration.set_node_name("n1");
    (*a.registration.mutable_labels())["zone"] = "a";
    a.identity = "CN=n1";
    a.last_seen_unix_ns = 1234567890123456789;
    ASSERT_TRUE(st->PutAgent(a).ok());
  }
  auto st = Open();
  ASSERT_TRUE(st);
  auto sets = st->LoadSets();
  ASSERT_TRUE(sets.ok()) << sets.status();
  ASSERT_EQ(sets->size(), 2u);
  EXPECT_EQ((*sets)[0].rollout.set_id(), "ps-a");
  EXPECT_EQ((*sets)[1].rollout.set_id(), "ps-b");
  EXPECT_EQ((*sets)[0].request.specs(0).binary_path(), "/bin/sh");
  EXPECT_EQ((*sets)[0].created_by, "CN=admin");
  auto agents = st->LoadAgents();
  ASSERT_TRUE(agents.ok());
  ASSERT_EQ(agents->size(), 1u);
  EXPECT_EQ((*agents)[0].registration.labels().at("zone"), "a");
  EXPECT_EQ((*agents)[0].identity, "CN=n1");
  EXPECT_EQ((*agents)[0].last_seen_unix_ns, 1234567890123456789);
}

TEST_P(StoreContractTest, DeleteIsAllOrNothing) {
  auto st = Open();
  ASSERT_TRUE(st);
  ASSERT_TRUE(st->PutSet(MakeSet("ps-a")).ok());
  ASSERT_TRUE(st->PutSet(MakeSet("ps-b")).ok());
  auto s = st->DeleteSets({"ps-a", "ps-missing"});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("ps-missing"), std::string::npos) << s;
  EXPECT_EQ(st->LoadSets()->size(), 2u);
  ASSERT_TRUE(st->DeleteSets({"ps-a", "ps-b"}).ok());
  EXPECT_TRUE(st->LoadSets()->empty());
}

TEST_P(StoreContractTest, ReplaceUpdatesRollout) {
  auto st = Open();
  ASSERT_TRUE(st);
  StoredSet s = MakeSet("ps-a");
  ASSERT_TRUE(st->PutSet(s).ok());
  s.rollout.set_state(v1::ROLLOUT_STATE_COMPLETE);
  ASSERT_TRUE(st->PutSet(s).ok());
  auto sets = st->LoadSets();
  ASSERT_EQ(sets->size(), 1u);
  EXPECT_EQ((*sets)[0].rollout.state(), v1::ROLLOUT_STATE_COMPLETE);
}

TEST_P(StoreContractTest, DeleteAgent) {
  auto st = Open();
  ASSERT_TRUE(st);
  StoredAgent a;
  a.registration.set_node_name("n1");
  ASSERT_TRUE(st->PutAgent(a).ok());
  EXPECT_EQ(st->DeleteAgent("n2").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(st->DeleteAgent("n1").ok());
  EXPECT_TRUE(st->LoadAgents()->empty());
  EXPECT_EQ(st->DeleteAgent("n1").code(), absl::StatusCode::kNotFound);
}

TEST(EtcdStoreTest, ParsesUrls) {
  EtcdClient::Options o;
  std::string prefix;
  ASSERT_TRUE(EtcdClient::ParseUrl("etcd://a:1,b:2", &o, &prefix).ok());
  EXPECT_EQ(o.endpoints, (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(prefix, "/xolfleet/");
  ASSERT_TRUE(EtcdClient::ParseUrl("etcd://127.0.0.1:2379/fleet-a", &o, &prefix).ok());
  EXPECT_EQ(prefix, "/fleet-a/");
  for (const char* bad : {"etcd://", "http://a:1", "etcd://a", "etcd://a:", "etcd://:1"}) {
    EXPECT_EQ(EtcdClient::ParseUrl(bad, &o, &prefix).code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(EtcdStoreTest, PrefixEnd) {
  EXPECT_EQ(PrefixEnd("/a/"), "/a0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
}

// The store gone (no member answers): every call is UNAVAILABLE with a message that says
// why; once the member is back the same store object works again, nothing reopened.
TEST(EtcdStoreTest, UnavailableWhileDownThenRecovers) {
  auto e = EtcdTestServer::Create(absl::StrCat(::testing::TempDir(), "/etcd-down-", getpid()));
  ASSERT_TRUE(e.ok()) << e.status();
  auto st = EtcdStore::Open((*e)->Url());
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_TRUE((*st)->PutSet(MakeSet("ps-a")).ok());
  (*e)->Stop();
  absl::Status down = (*st)->PutSet(MakeSet("ps-b"));
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  EXPECT_NE(down.message().find("desired-state store unavailable"), std::string::npos) << down;
  EXPECT_EQ((*st)->LoadSets().status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE((*e)->Start().ok());
  auto sets = (*st)->LoadSets();
  ASSERT_TRUE(sets.ok()) << sets.status();
  ASSERT_EQ(sets->size(), 1u);
  EXPECT_TRUE((*st)->PutSet(MakeSet("ps-b")).ok());
}

// Client TLS to a real etcd that serves https and requires client certificates
// (--client-cert-auth), with certificates the test makes (scripts/make-test-ca.sh).
TEST(EtcdStoreTest, ClientTlsToAMemberRequiringClientCertificates) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/etcd-tls-", getpid());
  const std::string cmd = absl::StrCat("scripts/make-test-ca.sh ", dir,
                                       "/ca --agents 1 --clients etcd-client >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string ca = dir + "/ca/";
  const tls::TlsFiles client{ca + "ca.crt", ca + "etcd-client.crt", ca + "etcd-client.key"};
  const EtcdTestServer::Tls server{ca + "ca.crt", ca + "controller.crt", ca + "controller.key",
                                   client};
  auto e = EtcdTestServer::Create(dir + "/etcd", &server);
  ASSERT_TRUE(e.ok()) << e.status();
  auto st = EtcdStore::Open((*e)->Url(), client);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_NE((*st)->Describe().find("client TLS"), std::string::npos) << (*st)->Describe();
  ASSERT_TRUE((*st)->PutSet(MakeSet("ps-tls")).ok());
  auto sets = (*st)->LoadSets();
  ASSERT_TRUE(sets.ok()) << sets.status();
  ASSERT_EQ(sets->size(), 1u);
  EXPECT_EQ((*sets)[0].rollout.set_id(), "ps-tls");
  // The member refuses a client without a certificate of its CA: plaintext, and a
  // certificate signed by another CA (make-test-ca.sh's rogue-admin).
  auto plain = EtcdStore::Open((*e)->Url());
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kUnavailable) << plain.status();
  // The member only closes the connection: the error says the controller spoke plaintext.
  EXPECT_NE(plain.status().message().find("speaks plaintext to etcd (no --etcd_tls_ca"),
            std::string::npos)
      << plain.status();
  auto rogue =
      EtcdStore::Open((*e)->Url(), {ca + "ca.crt", ca + "rogue-admin.crt", ca + "rogue-admin.key"});
  EXPECT_EQ(rogue.status().code(), absl::StatusCode::kUnavailable) << rogue.status();
  // A server certificate of another CA is refused by the client.
  auto wrong_ca = EtcdStore::Open((*e)->Url(), {ca + "rogue-ca.crt", client.cert, client.key});
  EXPECT_EQ(wrong_ca.status().code(), absl::StatusCode::kUnavailable) << wrong_ca.status();
}

// The controller's etcd client credentials follow their files (--etcd_tls_*, through a
// CertificateReloader): the client certificate is rotated to one of a new CA, the member
// then trusts only the new CA (restarted with the new bundle), and the same store keeps
// working without being reopened; the old certificate is refused.
TEST(EtcdStoreTest, ClientCertificateRotatedWithoutReopening) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/etcd-rot-", getpid());
  const std::string cmd = absl::StrCat("scripts/make-test-ca.sh ", dir,
                                       "/ca --agents 1 --clients etcd-client >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string ca = dir + "/ca/";
  auto copy = [](const std::string& from, const std::string& to) {
    std::string c = absl::StrCat("cp ", from, " ", to, ".new && mv ", to, ".new ", to);
    return std::system(c.c_str()) == 0;
  };
  // What the controller's flags name: the servers' CA (with the new one added in
  // advance), and its client certificate and key.
  const std::string live = dir + "/live-";
  ASSERT_EQ(std::system(
                absl::StrCat("cat ", ca, "ca.crt ", ca, "rogue-ca.crt > ", live, "ca.crt").c_str()),
            0);
  ASSERT_TRUE(copy(ca + "etcd-client.crt", live + "client.crt"));
  ASSERT_TRUE(copy(ca + "etcd-client.key", live + "client.key"));
  const tls::TlsFiles files{live + "ca.crt", live + "client.crt", live + "client.key"};
  auto reloader = tls::CertificateReloader::Start(
      {files, "etcd_tls", absl::ZeroDuration(), nullptr, /*cert_must_chain_to_ca=*/false});
  ASSERT_TRUE(reloader.ok()) << reloader.status();
  const tls::TlsFiles old_client{ca + "ca.crt", ca + "etcd-client.crt", ca + "etcd-client.key"};
  const EtcdTestServer::Tls server{ca + "ca.crt", ca + "controller.crt", ca + "controller.key",
                                   old_client};
  auto e = EtcdTestServer::Create(dir + "/etcd", &server);
  ASSERT_TRUE(e.ok()) << e.status();
  auto st = EtcdStore::Open((*e)->Url(), files, (*reloader)->ChannelCredentials());
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_TRUE((*st)->PutSet(MakeSet("ps-before")).ok());
  // Rotation: a certificate of the new CA (make-test-ca.sh's rogue CA plays it) in place
  // of the old one, picked up by the reloader; then the member trusts the new CA only.
  ASSERT_TRUE(copy(ca + "rogue-admin.crt", live + "client.crt"));
  ASSERT_TRUE(copy(ca + "rogue-admin.key", live + "client.key"));
  ASSERT_TRUE((*reloader)->PollNow().ok());
  const tls::TlsFiles new_client{ca + "ca.crt", ca + "rogue-admin.crt", ca + "rogue-admin.key"};
  ASSERT_TRUE(
      (*e)->Restart({ca + "rogue-ca.crt", ca + "controller.crt", ca + "controller.key", new_client})
          .ok());
  // The old certificate no longer gets in.
  auto old = EtcdStore::Open((*e)->Url(), old_client);
  EXPECT_EQ(old.status().code(), absl::StatusCode::kUnavailable) << old.status();
  // The same store reconnects with the new one (no timing asserted: up to 60 s).
  absl::Status put;
  for (int i = 0; i < 120; ++i) {
    put = (*st)->PutSet(MakeSet("ps-after"));
    if (put.ok()) break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  ASSERT_TRUE(put.ok()) << put;
  auto sets = (*st)->LoadSets();
  ASSERT_TRUE(sets.ok()) << sets.status();
  EXPECT_EQ(sets->size(), 2u);
}

// Plaintext only to loopback members; the TLS files go together. Refused before dialling.
TEST(EtcdStoreTest, PlaintextOnlyToLoopback) {
  auto off = EtcdStore::Open("etcd://127.0.0.1:1,192.0.2.1:2379");
  EXPECT_EQ(off.status().code(), absl::StatusCode::kInvalidArgument) << off.status();
  EXPECT_NE(off.status().message().find("refusing plaintext to etcd member 192.0.2.1:2379"),
            std::string::npos)
      << off.status();
  EXPECT_NE(off.status().message().find("--etcd_tls_ca"), std::string::npos) << off.status();
  EtcdClient::Options o{{"localhost:2379", "[::1]:2379"}};
  EXPECT_TRUE(EtcdClient::Credentials({}, &o).ok());
  EXPECT_FALSE(o.tls);
  tls::TlsFiles partial;
  partial.ca_cert = "/nonexistent/ca.crt";
  auto half = EtcdStore::Open("etcd://127.0.0.1:1", partial);
  EXPECT_EQ(half.status().code(), absl::StatusCode::kInvalidArgument) << half.status();
  EXPECT_NE(half.status().message().find("needs all of"), std::string::npos) << half.status();
}

TEST(EtcdStoreTest, UnreadableRecordIsDataLoss) {
  auto e = EtcdTestServer::Create(absl::StrCat(::testing::TempDir(), "/etcd-bad-", getpid()));
  ASSERT_TRUE(e.ok()) << e.status();
  auto st = EtcdStore::Open((*e)->Url());
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE((*st)->client()->Put("/xolfleet/sets/ps-x", "\xff\xff\xff").ok());
  EXPECT_EQ((*st)->LoadSets().status().code(), absl::StatusCode::kDataLoss);
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
