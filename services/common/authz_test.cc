#include "services/common/authz.h"

#include "gtest/gtest.h"

namespace xolfleet {
namespace {

Identity Cn(const std::string& cn) {
  Identity i;
  i.common_name = cn;
  i.subject = "CN=" + cn + ",O=xolfleet-test";
  return i;
}

constexpr char kConfig[] = R"(
# capability   identity
admin          cn:admin
read-only      cn:viewer
attach-counts  cn:counter
attach-capture cn:capturer
agent          cn:node-*
read-only      subject:CN=auditor,O=xolfleet-test
)";

TEST(Authz, CapabilitiesNest) {
  auto a = Authorizer::FromString(kConfig);
  ASSERT_TRUE(a.ok()) << a.status();
  using C = Capability;
  struct Row {
    std::string who;
    bool ro, counts, capture, admin, agent;
  };
  for (const Row& r : std::vector<Row>{
           {"admin", true, true, true, true, false},
           {"capturer", true, true, true, false, false},
           {"counter", true, true, false, false, false},
           {"viewer", true, false, false, false, false},
           {"node-7", false, false, false, false, true},
           {"stranger", false, false, false, false, false},
       }) {
    Identity id = Cn(r.who);
    EXPECT_EQ(a->Has(id, C::kReadOnly), r.ro) << r.who;
    EXPECT_EQ(a->Has(id, C::kAttachCounts), r.counts) << r.who;
    EXPECT_EQ(a->Has(id, C::kAttachCapture), r.capture) << r.who;
    EXPECT_EQ(a->Has(id, C::kAdmin), r.admin) << r.who;
    EXPECT_EQ(a->Has(id, C::kAgent), r.agent) << r.who;
  }
  EXPECT_TRUE(a->Has(Cn("auditor"), C::kReadOnly));
}

TEST(Authz, DenialNamesTheCapability) {
  auto a = Authorizer::FromString(kConfig);
  ASSERT_TRUE(a.ok());
  absl::Status s = a->Check(Cn("viewer"), Capability::kAttachCapture);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("attach-capture"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("viewer"), std::string::npos) << s.message();
}

TEST(Authz, PlaintextOnlyWhenListed) {
  Identity local;
  local.plaintext = true;
  auto none = Authorizer::FromString(kConfig);
  EXPECT_FALSE(none->Has(local, Capability::kReadOnly));
  auto some = Authorizer::FromString("read-only insecure:local\n");
  EXPECT_TRUE(some->Has(local, Capability::kReadOnly));
  EXPECT_FALSE(some->Has(local, Capability::kAttachCounts));
  // A certificate identity never matches the plaintext rule.
  EXPECT_FALSE(some->Has(Cn("admin"), Capability::kReadOnly));
}

TEST(Authz, BadConfigIsRejectedWithLine) {
  auto a = Authorizer::FromString("admin cn:x\nsuperuser cn:y\n");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("line 2"), std::string::npos);
  EXPECT_FALSE(Authorizer::FromString("admin bob\n").ok());
  EXPECT_FALSE(Authorizer::FromString("admin\n").ok());
  EXPECT_FALSE(Authorizer::FromFile("/nonexistent/authz.conf").ok());
}

Identity Local(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  Identity i;
  i.local_peer = true;
  i.uid = uid;
  i.gid = gid;
  i.groups = std::move(groups);
  return i;
}

TEST(Authz, LocalPeersByUidUserAndGroup) {
  // root and nobody exist on every Debian host (uid 0 and 65534, group nogroup 65534).
  auto a = Authorizer::FromString(
      "admin uid:0\nattach-counts user:nobody\nread-only group:nogroup\nread-only gid:4242\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->Has(Local(0, 0), Capability::kAdmin));
  EXPECT_TRUE(a->Has(Local(65534, 65534), Capability::kAttachCounts));
  EXPECT_FALSE(a->Has(Local(65534, 65534), Capability::kAttachCapture));
  // Group membership: primary or supplementary.
  EXPECT_TRUE(a->Has(Local(1000, 65534), Capability::kReadOnly));
  EXPECT_TRUE(a->Has(Local(1000, 1000, {27, 4242}), Capability::kReadOnly));
  EXPECT_FALSE(a->Has(Local(1000, 1000, {27}), Capability::kReadOnly));
  EXPECT_FALSE(a->Has(Local(1000, 1000, {4242}), Capability::kAttachCounts));
  // uid rules never match a certificate or a plaintext TCP caller, whatever they claim.
  Identity tcp;
  tcp.plaintext = true;
  EXPECT_FALSE(a->Has(tcp, Capability::kReadOnly));
  EXPECT_FALSE(a->Has(Cn("0"), Capability::kReadOnly));
  // ...and certificate rules never match a local peer.
  auto c = Authorizer::FromString("admin cn:*\n");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->Has(Local(0, 0), Capability::kReadOnly));
  EXPECT_EQ(Local(1000, 1000).ToString(), "uid:1000");
}

TEST(Authz, UnknownUserOrGroupIsAnError) {
  auto a = Authorizer::FromString("admin user:no-such-user-xolfleet\n");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("no user named"), std::string::npos);
  EXPECT_FALSE(Authorizer::FromString("admin group:no-such-group-xolfleet\n").ok());
  EXPECT_FALSE(Authorizer::FromString("admin uid:root\n").ok());
}

}  // namespace
}  // namespace xolfleet
