// CertificateReloader with a real gRPC server and clients: a certificate from a new CA is
// served after a reload without a restart, and a key that does not match its certificate
// is refused while the server keeps serving with the previous pair.
#include "services/common/cert_reloader.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "services/common/config_reload.h"

namespace xolfleet::tls {
namespace {

std::string Dir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d != nullptr ? d : "/tmp";
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Put(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0);
}

std::string CaFile(const char* ca, const char* file) {
  return absl::StrCat(Dir(), "/", ca, "/", file);
}

// Two independent test CAs (scripts/make-test-ca.sh), made once.
class CertReloaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (const char* ca : {"a", "b"}) {
      std::string cmd = absl::StrCat("scripts/make-test-ca.sh ", Dir(), "/", ca,
                                     " --agents 1 --clients admin >/dev/null 2>&1");
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
  }
  static std::string F(const char* ca, const char* file) { return CaFile(ca, file); }
};

TEST_F(CertReloaderTest, CheckKeyMaterialSaysWhatIsWrong) {
  const std::string ca = Slurp(F("a", "ca.crt")), crt = Slurp(F("a", "controller.crt")),
                    key = Slurp(F("a", "controller.key"));
  EXPECT_TRUE(CheckKeyMaterial(ca, crt, key).ok());
  absl::Status st = CheckKeyMaterial(ca, crt, Slurp(F("a", "node-1.key")));
  EXPECT_NE(st.message().find("does not match"), std::string::npos) << st;
  st = CheckKeyMaterial(ca, Slurp(F("b", "controller.crt")), Slurp(F("b", "controller.key")));
  EXPECT_NE(st.message().find("does not verify"), std::string::npos) << st;
  st = CheckKeyMaterial(ca, crt, "-----BEGIN PRIVATE KEY-----\ngarbage\n");
  EXPECT_NE(st.message().find("no PEM private key"), std::string::npos) << st;
  st = CheckKeyMaterial("", crt, key);
  EXPECT_NE(st.message().find("CA file"), std::string::npos) << st;
  // A bundle of both CAs verifies certificates of either (the middle of a CA rotation).
  EXPECT_TRUE(CheckKeyMaterial(ca + Slurp(F("b", "ca.crt")), Slurp(F("b", "controller.crt")),
                               Slurp(F("b", "controller.key")))
                  .ok());
}

struct Counts : ReloadObserver {
  int applied = 0, refused = 0;
  void OnConfigReload(absl::string_view, bool ok) override { ++(ok ? applied : refused); }
};

// Whether a client of CA `ca` (its CA file and node-1 certificate) completes an mTLS
// handshake with the server: each side must verify the other.
bool ConnectsAs(const std::string& target, const char* ca) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = Slurp(CaFile(ca, "ca.crt"));
  o.pem_cert_chain = Slurp(CaFile(ca, "node-1.crt"));
  o.pem_private_key = Slurp(CaFile(ca, "node-1.key"));
  grpc::ChannelArguments args;
  args.SetInt("grpc.use_local_subchannel_pool", 1);  // a fresh connection per check
  auto channel = grpc::CreateCustomChannel(target, grpc::SslCredentials(o), args);
  return channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(3));
}

// The provider re-reads what the reloader published every second.
void AwaitProvider() { absl::SleepFor(absl::Milliseconds(2500)); }

TEST_F(CertReloaderTest, ServesANewCaAfterReloadAndRefusesAMismatchedKey) {
  const std::string ca = Dir() + "/srv-ca.crt", crt = Dir() + "/srv.crt", key = Dir() + "/srv.key";
  Put(ca, Slurp(F("a", "ca.crt")));
  Put(crt, Slurp(F("a", "controller.crt")));
  Put(key, Slurp(F("a", "controller.key")));
  Counts counts;
  auto r = CertificateReloader::Start({{ca, crt, key}, "tls", absl::ZeroDuration(), &counts});
  ASSERT_TRUE(r.ok()) << r.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", (*r)->ServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string target = absl::StrCat("localhost:", port);
  EXPECT_TRUE(ConnectsAs(target, "a"));
  EXPECT_FALSE(ConnectsAs(target, "b"));

  // CA rotation: trust both CAs, then serve the new CA's certificate.
  Put(ca, Slurp(F("a", "ca.crt")) + Slurp(F("b", "ca.crt")));
  Put(crt, Slurp(F("b", "controller.crt")));
  Put(key, Slurp(F("b", "controller.key")));
  ASSERT_TRUE((*r)->PollNow().ok());
  AwaitProvider();
  EXPECT_TRUE(ConnectsAs(target, "b"));
  EXPECT_FALSE(ConnectsAs(target, "a"));  // a's clients do not trust b's server certificate

  // A key that does not match: refused, and the server goes on with b's pair.
  Put(key, Slurp(F("a", "controller.key")));
  absl::Status st = (*r)->PollNow();
  EXPECT_NE(st.message().find("does not match"), std::string::npos) << st;
  AwaitProvider();
  EXPECT_TRUE(ConnectsAs(target, "b"));
  EXPECT_EQ(counts.applied, 1);
  EXPECT_EQ(counts.refused, 1);
  server->Shutdown();
}

// The client side (the agent's controller link) verifies the server's chain and its name.
TEST_F(CertReloaderTest, ChannelCredentialsVerifyTheServerName) {
  auto server_side = CertificateReloader::Start(
      {{F("a", "ca.crt"), F("a", "controller.crt"), F("a", "controller.key")},
       "tls",
       absl::ZeroDuration(),
       nullptr});
  ASSERT_TRUE(server_side.ok()) << server_side.status();
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", (*server_side)->ServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto connects = [port](const char* ca, const char* name) {
    auto client = CertificateReloader::Start(
        {{CaFile(ca, "ca.crt"), CaFile(ca, "node-1.crt"), CaFile(ca, "node-1.key")},
         "controller_tls",
         absl::ZeroDuration(),
         nullptr});
    EXPECT_TRUE(client.ok()) << client.status();
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    args.SetSslTargetNameOverride(name);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                             (*client)->ChannelCredentials(), args);
    return channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(3));
  };
  EXPECT_TRUE(connects("a", "xolfleet-controller"));   // a name in the certificate
  EXPECT_FALSE(connects("a", "evil.example"));         // not in it
  EXPECT_FALSE(connects("b", "xolfleet-controller"));  // a CA the server's chain is not from
  server->Shutdown();
}

}  // namespace
}  // namespace xolfleet::tls
