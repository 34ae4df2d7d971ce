// ConfigPoller and the followed authorization policy: a changed file is applied, a broken
// one refused (once) while the previous version stays in force.
#include "services/common/config_reload.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/common/authz.h"

namespace xolfleet {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

void Write(const std::string& path, const std::string& text) {
  // Replaced in one step, as an operator (or Kubernetes) should.
  std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0);
}

struct Counts : ReloadObserver {
  int applied = 0, refused = 0;
  bool in_force = true;
  void OnConfigReload(absl::string_view, bool ok) override { ++(ok ? applied : refused); }
  void OnConfigInForce(absl::string_view, bool yes) override { in_force = yes; }
};

TEST(ConfigPoller, AppliesChangesRefusesBrokenOnesOnce) {
  const std::string path = TempPath("poller.conf");
  Write(path, "good 1");
  Counts counts;
  std::string in_force = "good 1";
  ConfigPoller::Options o;
  o.name = "test";
  o.paths = {path};
  o.interval = absl::ZeroDuration();
  o.observer = &counts;
  ConfigPoller p(o, {"good 1"}, [&](const std::vector<std::string>& c) -> absl::Status {
    if (c[0].rfind("good", 0) != 0) return absl::InvalidArgumentError("not good");
    in_force = c[0];
    return absl::OkStatus();
  });
  EXPECT_TRUE(p.PollNow().ok());  // unchanged: nothing loaded
  EXPECT_EQ(counts.applied + counts.refused, 0);
  Write(path, "good 2");
  EXPECT_TRUE(p.PollNow().ok());
  EXPECT_EQ(in_force, "good 2");
  Write(path, "broken");
  EXPECT_EQ(p.PollNow().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(in_force, "good 2");
  EXPECT_TRUE(p.PollNow().ok());  // the same broken version: neither loaded nor counted again
  EXPECT_EQ(counts.refused, 1);
  Write(path, "");  // what a truncating writer leaves: refused, not loaded
  EXPECT_EQ(p.PollNow().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(in_force, "good 2");
  EXPECT_FALSE(counts.in_force);
  Write(path, "good 3");
  EXPECT_TRUE(p.PollNow().ok());
  EXPECT_EQ(in_force, "good 3");
  EXPECT_TRUE(counts.in_force);
  EXPECT_EQ(counts.applied, 2);
  EXPECT_EQ(counts.refused, 2);
  // Emptied and written back unchanged (a truncating writer): in force again, no reload.
  Write(path, "");
  EXPECT_FALSE(p.PollNow().ok());
  EXPECT_FALSE(counts.in_force);
  Write(path, "good 3");
  EXPECT_TRUE(p.PollNow().ok());
  EXPECT_TRUE(counts.in_force);
  EXPECT_EQ(counts.applied, 2);
  // Refused, emptied, refused version back: still not in force.
  Write(path, "broken again");
  EXPECT_FALSE(p.PollNow().ok());
  Write(path, "");
  EXPECT_FALSE(p.PollNow().ok());
  Write(path, "broken again");
  EXPECT_TRUE(p.PollNow().ok());
  EXPECT_FALSE(counts.in_force);
  EXPECT_EQ(in_force, "good 3");
}

TEST(FollowedPolicy, ReloadsAValidPolicyKeepsTheOldOnAnInvalidOne) {
  const std::string path = TempPath("authz.conf");
  Write(path, "admin cn:alice\n");
  Counts counts;
  // Interval 0: no thread; the test polls.
  absl::StatusOr<FollowedPolicy> f = LoadAndFollowPolicy(path, absl::ZeroDuration(), &counts);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->poller, nullptr);
  Identity alice, bob;
  alice.common_name = "alice";
  alice.subject = "CN=alice";
  bob.common_name = "bob";
  bob.subject = "CN=bob";
  EXPECT_TRUE(f->policy->Has(alice, Capability::kAdmin));
  EXPECT_FALSE(f->policy->Has(bob, Capability::kReadOnly));

  f = LoadAndFollowPolicy(path, absl::Hours(1), &counts);  // a thread that will not poll soon
  ASSERT_TRUE(f.ok());
  ASSERT_NE(f->poller, nullptr);
  Write(path, "read-only cn:bob\n");
  EXPECT_TRUE(f->poller->PollNow().ok());
  EXPECT_TRUE(f->policy->Has(bob, Capability::kReadOnly));
  EXPECT_FALSE(f->policy->Has(alice, Capability::kReadOnly));
  Write(path, "superuser cn:mallory\n");  // unknown capability
  absl::Status st = f->poller->PollNow();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE(f->policy->Has(bob, Capability::kReadOnly));  // still the last valid one
  EXPECT_EQ(counts.applied, 1);
  EXPECT_EQ(counts.refused, 1);
}

}  // namespace
}  // namespace xolfleet
