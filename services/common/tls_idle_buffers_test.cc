// The SSL_CTX_new wrapper with a real gRPC server and client over mTLS: the contexts gRPC
// makes for both ends go through it, and every one has SSL_MODE_RELEASE_BUFFERS.
#include "services/common/tls_idle_buffers.h"

#include <openssl/ssl.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "services/common/tls.h"

namespace xolfleet::tls {
namespace {

std::string Dir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d != nullptr ? d : "/tmp";
}

TEST(TlsIdleBuffers, TheProcessResolvesSslCtxNewToTheWrapper) {
  EXPECT_TRUE(CheckIdleBuffersReleased().ok()) << CheckIdleBuffersReleased();
  const uint64_t before = ContextsWithIdleBuffersReleased();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  EXPECT_NE(SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS, 0u);
  SSL_CTX_free(ctx);
  EXPECT_EQ(ContextsWithIdleBuffersReleased(), before + 1);
}

TEST(TlsIdleBuffers, GrpcMakesItsContextsThroughTheWrapper) {
  const std::string ca = Dir() + "/ca";
  const std::string cmd =
      absl::StrCat("scripts/make-test-ca.sh ", ca, " --agents 1 --clients admin >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const uint64_t before = ContextsWithIdleBuffersReleased();
  auto server_creds = ServerCredentials(
      {ca + "/ca.crt", ca + "/controller.crt", ca + "/controller.key"}, "127.0.0.1:0");
  ASSERT_TRUE(server_creds.ok()) << server_creds.status();
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", *server_creds, &port);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string target = absl::StrCat("127.0.0.1:", port);
  auto client_creds =
      ChannelCredentials({ca + "/ca.crt", ca + "/node-1.crt", ca + "/node-1.key"}, target);
  ASSERT_TRUE(client_creds.ok()) << client_creds.status();
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("xolfleet-controller");
  auto channel = grpc::CreateCustomChannel(target, *client_creds, args);
  ASSERT_TRUE(
      channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5)));
  // A completed mTLS handshake needs a client and a server context: both were made by
  // gRPC after `before`, and only through the wrapper (it counts what it makes).
  EXPECT_GE(ContextsWithIdleBuffersReleased(), before + 2);
  server->Shutdown();
}

}  // namespace
}  // namespace xolfleet::tls
