// The hit hub's fan-out: filters, the bounded queue and its drop count, and notices
// (replicas) that reach every watcher whatever its filters, bounded too.
#include "services/controller/hit_hub.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace xolfleet::controller {
namespace {

v1::FleetHitUpdate Update(const std::string& node, const std::string& set, uint64_t delta) {
  v1::FleetHitUpdate u;
  u.set_node_name(node);
  u.set_set_id(set);
  u.set_fleet_probe_id(set + "/0");
  u.set_hits_delta(delta);
  return u;
}

TEST(HitHubTest, FiltersBoundsAndDrops) {
  uint64_t dropped = 0;
  HitHub hub([&](uint64_t n) { dropped += n; });
  auto all = hub.AddWatcher({}, {}, 2);
  auto n1 = hub.AddWatcher({}, {"n1"}, 10);
  auto s2 = hub.AddWatcher({"ps-2"}, {}, 10);
  hub.Publish({Update("n1", "ps-1", 1), Update("n2", "ps-2", 2), Update("n1", "ps-2", 3)});
  v1::FleetHitBatch b;
  ASSERT_TRUE(all->Take(&b, 10, absl::ZeroDuration()));
  EXPECT_EQ(b.updates_size(), 2);  // the third did not fit
  EXPECT_EQ(b.dropped_total(), 1u);
  EXPECT_EQ(dropped, 1u);
  ASSERT_TRUE(n1->Take(&b, 10, absl::ZeroDuration()));
  ASSERT_EQ(b.updates_size(), 2);
  EXPECT_EQ(b.updates(0).hits_delta(), 1u);
  EXPECT_EQ(b.updates(1).hits_delta(), 3u);
  EXPECT_EQ(b.dropped_total(), 0u);
  ASSERT_TRUE(s2->Take(&b, 10, absl::ZeroDuration()));
  ASSERT_EQ(b.updates_size(), 2);
  EXPECT_EQ(b.updates(0).hits_delta(), 2u);
  EXPECT_EQ(hub.watchers(), 3u);
  hub.RemoveWatcher(all);
  hub.RemoveWatcher(n1);
  hub.RemoveWatcher(s2);
  EXPECT_EQ(hub.watchers(), 0u);
}

TEST(HitHubTest, NoticesReachEveryWatcherBounded) {
  HitHub hub;
  auto n1 = hub.AddWatcher({}, {"n1"}, 10);
  auto s2 = hub.AddWatcher({"ps-2"}, {}, 10);
  hub.Notice("replica r2 is gone");
  for (auto* w : {n1.get(), s2.get()}) {
    v1::FleetHitBatch b;
    ASSERT_TRUE(w->Take(&b, 10, absl::ZeroDuration()));
    EXPECT_EQ(b.updates_size(), 0);
    ASSERT_EQ(b.notices_size(), 1);
    EXPECT_EQ(b.notices(0), "replica r2 is gone");
  }
  // A watcher that does not read keeps the newest kMaxNotices.
  for (size_t i = 0; i < HitHub::kMaxNotices + 5; ++i) hub.Notice(absl::StrCat("notice ", i));
  v1::FleetHitBatch b;
  ASSERT_TRUE(n1->Take(&b, 10, absl::ZeroDuration()));
  ASSERT_EQ(b.notices_size(), static_cast<int>(HitHub::kMaxNotices));
  EXPECT_EQ(b.notices(0), "notice 5");
  // One for this watcher alone (the first batch of a stream).
  s2->Notice("merging r1, r2");
  hub.RemoveWatcher(n1);
  ASSERT_TRUE(s2->Take(&b, 100, absl::ZeroDuration()));
  EXPECT_EQ(b.notices(b.notices_size() - 1), "merging r1, r2");
  hub.RemoveWatcher(s2);
  // Closed and drained: the stream ends.
  EXPECT_FALSE(s2->Take(&b, 10, absl::ZeroDuration()));
}

}  // namespace
}  // namespace xolfleet::controller
