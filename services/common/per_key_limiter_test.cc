#include "services/common/per_key_limiter.h"

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace xolfleet {
namespace {

PerKeyLimiter::Options Opts(size_t per_key, size_t total = 0) {
  PerKeyLimiter::Options o;
  o.per_key = per_key;
  o.total = total;
  o.what = "WatchHits streams";
  o.per_key_flag = "--max-watch-streams-per-identity";
  o.total_flag = "--max-watch-streams";
  o.server = "this agent";
  return o;
}

TEST(PerKeyLimiter, AnotherKeyIsServedWhileOneIsAtItsLimit) {
  PerKeyLimiter l(Opts(2));
  std::vector<PerKeyLimiter::Lease> alice;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<PerKeyLimiter::Lease> lease = l.Acquire("uid:1000");
    ASSERT_TRUE(lease.ok()) << lease.status();
    alice.push_back(std::move(*lease));
  }
  absl::StatusOr<PerKeyLimiter::Lease> third = l.Acquire("uid:1000");
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(third.status().message(),
            "uid:1000 already has 2 WatchHits streams open, the most one caller may have "
            "(--max-watch-streams-per-identity=2): close one of them, or ask the operator to raise "
            "the limit");
  EXPECT_EQ(l.count("uid:1000"), 2u);  // nothing taken by the refusal
  absl::StatusOr<PerKeyLimiter::Lease> bob = l.Acquire("uid:1001");
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(l.total(), 3u);
  EXPECT_EQ(l.keys(), 2u);
}

TEST(PerKeyLimiter, ALeaseGivesItsPlaceBackOnce) {
  PerKeyLimiter l(Opts(1));
  {
    absl::StatusOr<PerKeyLimiter::Lease> a = l.Acquire("k");
    ASSERT_TRUE(a.ok());
    EXPECT_FALSE(l.Acquire("k").ok());
    PerKeyLimiter::Lease moved = std::move(*a);
    EXPECT_FALSE(a->held());
    EXPECT_TRUE(moved.held());
    EXPECT_EQ(l.count("k"), 1u);
    moved.Release();
    moved.Release();  // a second release gives nothing back
    EXPECT_EQ(l.count("k"), 0u);
    EXPECT_EQ(l.total(), 0u);
  }
  absl::StatusOr<PerKeyLimiter::Lease> b = l.Acquire("k");
  ASSERT_TRUE(b.ok());
  {
    PerKeyLimiter::Lease other;
    other = std::move(*b);  // move-assigned: still one place
    EXPECT_EQ(l.total(), 1u);
  }
  EXPECT_EQ(l.total(), 0u);
  EXPECT_EQ(l.keys(), 0u);
}

TEST(PerKeyLimiter, TotalBoundsAllKeysTogether) {
  PerKeyLimiter l(Opts(2, 3));
  std::vector<PerKeyLimiter::Lease> held;
  for (const char* k : {"a", "a", "b"}) {
    absl::StatusOr<PerKeyLimiter::Lease> lease = l.Acquire(k);
    ASSERT_TRUE(lease.ok()) << k << ": " << lease.status();
    held.push_back(std::move(*lease));
  }
  absl::StatusOr<PerKeyLimiter::Lease> c = l.Acquire("c");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(
      c.status().message(),
      "3 WatchHits streams open in all, the most this agent serves (--max-watch-streams=3)"))
      << c.status();
  // The per-key limit is checked first: "a" is told about its own share.
  absl::StatusOr<PerKeyLimiter::Lease> a = l.Acquire("a");
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(absl::StrContains(a.status().message(), "a already has 2"));
  held.pop_back();  // "b" closes one
  EXPECT_TRUE(l.Acquire("c").ok());
}

TEST(PerKeyLimiter, ConcurrentAcquiresNeverExceedTheLimit) {
  PerKeyLimiter l(Opts(5));
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  std::vector<std::optional<PerKeyLimiter::Lease>> leases(64);
  for (int i = 0; i < 64; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<PerKeyLimiter::Lease> lease = l.Acquire("same");
      if (lease.ok()) {
        ++granted;
        leases[i] = std::move(*lease);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(granted.load(), 5);
  EXPECT_EQ(l.count("same"), 5u);
  leases.clear();
  EXPECT_EQ(l.total(), 0u);
}

}  // namespace
}  // namespace xolfleet
