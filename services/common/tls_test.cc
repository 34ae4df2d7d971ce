#include "services/common/tls.h"

#include "gtest/gtest.h"

namespace xolfleet::tls {
namespace {

TEST(Tls, LocalAddressesAreResolvedNotSpelled) {
  EXPECT_TRUE(IsLocalAddress("unix:/run/xolfleet/agent.sock"));
  EXPECT_TRUE(IsLocalAddress("127.0.0.1:7443"));
  EXPECT_TRUE(IsLocalAddress("127.1.2.3:7443"));
  EXPECT_TRUE(IsLocalAddress("[::1]:7443"));
  EXPECT_TRUE(IsLocalAddress("localhost:7443"));
  EXPECT_TRUE(IsLocalAddress("ipv4:127.0.0.1:7443"));
  EXPECT_TRUE(IsLocalAddress("dns:///localhost:7443"));
  EXPECT_FALSE(IsLocalAddress("0.0.0.0:7443"));
  EXPECT_FALSE(IsLocalAddress("[::]:7443"));
  EXPECT_FALSE(IsLocalAddress(":7443"));
  EXPECT_FALSE(IsLocalAddress("10.0.0.1:7443"));
  // Spelled like loopback, resolves elsewhere (or nowhere: .invalid never resolves).
  EXPECT_FALSE(IsLocalAddress("127.0.0.1.evil.invalid:7443"));
  EXPECT_FALSE(IsLocalAddress("localhost.invalid:7443"));
}

TEST(Tls, PlaintextOnlyOnLoopback) {
  TlsFiles plain;
  plain.insecure_plaintext = true;
  EXPECT_TRUE(ServerCredentials(plain, "127.0.0.1:0").ok());
  auto off = ServerCredentials(plain, "0.0.0.0:7443");
  EXPECT_EQ(off.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(off.status().message().find("refusing plaintext"), std::string::npos);
  // Without the opt-in, TLS files are required.
  EXPECT_EQ(ServerCredentials(TlsFiles(), "127.0.0.1:0").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xolfleet::tls
