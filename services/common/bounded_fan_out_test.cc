// BoundedFanOut: capacity, the shared budget, drops counted (never silent), filters,
// close and drain, the watcher limit, and concurrent producers and consumers with every
// item either taken or counted.
#include "services/common/bounded_fan_out.h"

#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace xolfleet {
namespace {

using FanOut = BoundedFanOut<int>;

std::vector<int> Range(int from, int n) {
  std::vector<int> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

TEST(BoundedFanOutTest, CapacityKeepsTheOldestAndCountsTheRest) {
  FanOut fan;
  auto w = fan.AddWatcher(nullptr, 5).value();
  EXPECT_EQ(fan.Publish(Range(0, 3)), 0u);
  EXPECT_EQ(fan.Publish(Range(3, 4)), 2u);  // 2 of these fit
  EXPECT_EQ(w->queued_now(), 5u);
  EXPECT_EQ(w->dropped(), 2u);
  std::vector<int> got;
  ASSERT_TRUE(w->Take(&got, 2, absl::ZeroDuration()));  // across chunks, in order
  ASSERT_TRUE(w->Take(&got, 100, absl::ZeroDuration()));
  EXPECT_EQ(got, Range(0, 5));
  EXPECT_EQ(w->queued_now(), 0u);
  EXPECT_EQ(fan.Publish(Range(7, 1)), 0u);  // room again
  EXPECT_EQ(fan.dropped_total(), 2u);
}

TEST(BoundedFanOutTest, ZeroCapacityMeansOne) {
  FanOut fan;
  auto w = fan.AddWatcher(nullptr, 0).value();
  EXPECT_EQ(fan.Publish(Range(0, 3)), 2u);
  std::vector<int> got;
  w->Take(&got, 10, absl::ZeroDuration());
  EXPECT_EQ(got, Range(0, 1));
}

TEST(BoundedFanOutTest, FilterCopiesOnlyWhatItWantsAndSharesOtherwise) {
  FanOut fan;
  auto all = fan.AddWatcher(nullptr, 100).value();
  auto even = fan.AddWatcher([](const int& i) { return i % 2 == 0; }, 2).value();
  auto chunk = std::make_shared<const FanOut::Chunk>(Range(0, 7));
  // `even` wants 0 2 4 6, keeps 2 of them.
  EXPECT_EQ(fan.Publish(chunk), 2u);
  EXPECT_EQ(chunk.use_count(), 2);  // `all` holds the chunk itself, no copy
  std::vector<int> got;
  even->Take(&got, 10, absl::ZeroDuration());
  EXPECT_EQ(got, (std::vector<int>{0, 2}));
  EXPECT_EQ(even->dropped(), 2u);
  EXPECT_EQ(all->dropped(), 0u);
  got.clear();
  all->Take(&got, 10, absl::ZeroDuration());
  EXPECT_EQ(got, Range(0, 7));
  EXPECT_EQ(chunk.use_count(), 1);  // let go once taken
}

TEST(BoundedFanOutTest, BudgetBoundsAllQueuesTogether) {
  FanOut::Limits limits;
  limits.max_queued = 10;
  FanOut fan(limits);
  auto a = fan.AddWatcher(nullptr, 1000).value();
  auto b = fan.AddWatcher(nullptr, 1000).value();
  // a takes 8, b the 2 left of the budget and drops 6.
  EXPECT_EQ(fan.Publish(Range(0, 8)), 6u);
  EXPECT_EQ(a->queued_now(), 8u);
  EXPECT_EQ(b->queued_now(), 2u);
  EXPECT_EQ(b->dropped(), 6u);
  EXPECT_EQ(fan.queued_total(), 10u);
  std::vector<int> got;
  a->Take(&got, 5, absl::ZeroDuration());
  EXPECT_EQ(fan.queued_total(), 5u);        // given back as taken
  EXPECT_EQ(fan.Publish(Range(8, 5)), 5u);  // 5 of room: a takes them, b none
  EXPECT_EQ(a->queued_now(), 8u);
  // A watcher removed with items queued gives its share back when it goes away.
  fan.RemoveWatcher(b);
  b.reset();
  EXPECT_EQ(fan.queued_total(), 8u);
  EXPECT_EQ(fan.dropped_total(), 11u);  // b's drops stay counted
}

TEST(BoundedFanOutTest, WithoutBudgetNothingIsCountedInTotal) {
  FanOut fan;
  auto w = fan.AddWatcher(nullptr, 10).value();
  fan.Publish(Range(0, 4));
  EXPECT_EQ(w->queued_now(), 4u);
  EXPECT_EQ(fan.queued_total(), 0u);
}

TEST(BoundedFanOutTest, WatcherLimitNamesItself) {
  FanOut::Limits limits;
  limits.max_watchers = 2;
  limits.limit_message = [](size_t open) {
    return std::to_string(open) + " streams, --max-streams=2: close one";
  };
  FanOut fan(limits);
  auto a = fan.AddWatcher(nullptr, 1).value();
  auto b = fan.AddWatcher(nullptr, 1).value();
  absl::StatusOr<std::shared_ptr<FanOut::Watcher>> c = fan.AddWatcher(nullptr, 1);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(c.status().message(), "2 streams, --max-streams=2: close one");
  EXPECT_EQ(fan.watchers(), 2u);
  fan.RemoveWatcher(a);
  EXPECT_TRUE(fan.AddWatcher(nullptr, 1).ok());
  limits.max_watchers = 0;
  limits.limit_message = nullptr;
  FanOut none(limits);
  absl::StatusOr<std::shared_ptr<FanOut::Watcher>> d = none.AddWatcher(nullptr, 1);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("limit (0)"), absl::string_view::npos) << d.status();
}

TEST(BoundedFanOutTest, CloseDrainsThenEnds) {
  FanOut fan;
  auto w = fan.AddWatcher(nullptr, 10).value();
  fan.Publish(Range(0, 3));
  fan.RemoveWatcher(w);
  EXPECT_EQ(fan.watchers(), 0u);
  EXPECT_EQ(fan.Publish(Range(3, 3)), 0u);  // nobody left: nothing queued, nothing lost
  std::vector<int> got;
  EXPECT_TRUE(w->Take(&got, 2, absl::Seconds(10)));  // what it held is still taken
  EXPECT_TRUE(w->Take(&got, 2, absl::Seconds(10)));
  EXPECT_EQ(got, Range(0, 3));
  EXPECT_FALSE(w->Take(&got, 2, absl::Seconds(10)));  // closed and drained: at once
  // A closed watcher offered a chunk directly queues nothing and counts nothing.
  EXPECT_EQ(w->Offer(std::make_shared<const FanOut::Chunk>(Range(0, 2))), 0u);
  EXPECT_EQ(w->dropped(), 0u);
}

TEST(BoundedFanOutTest, TakeWaitsForItemsCloseOrWake) {
  FanOut fan;
  auto w = fan.AddWatcher(nullptr, 10).value();
  std::vector<int> got;
  std::thread producer([&] { fan.Publish(Range(0, 2)); });
  EXPECT_TRUE(w->Take(&got, 10, absl::InfiniteDuration()));
  producer.join();
  while (got.size() < 2) w->Take(&got, 10, absl::InfiniteDuration());
  EXPECT_EQ(got, Range(0, 2));
  // Wake: the waiting Take returns with nothing, the watcher still open.
  std::thread waker([&] { w->Wake(); });
  got.clear();
  EXPECT_TRUE(w->Take(&got, 10, absl::InfiniteDuration()));
  waker.join();
  EXPECT_TRUE(got.empty());
  std::thread closer([&] { fan.RemoveWatcher(w); });
  while (w->Take(&got, 10, absl::InfiniteDuration())) {
  }
  closer.join();
  EXPECT_TRUE(got.empty());
}

// Several producers, several consumers, small queues and a small budget: every item
// published reaches each watcher or is counted as dropped for it, exactly.
TEST(BoundedFanOutTest, ConcurrentProducersAndConsumersAccountForEveryItem) {
  constexpr int kProducers = 3, kChunks = 2000, kChunkSize = 7;
  FanOut::Limits limits;
  limits.max_queued = 200;
  FanOut fan(limits);
  std::vector<std::shared_ptr<FanOut::Watcher>> ws;
  ws.push_back(fan.AddWatcher(nullptr, 64).value());
  ws.push_back(fan.AddWatcher(nullptr, 1000).value());
  ws.push_back(fan.AddWatcher([](const int& i) { return i % 3 == 0; }, 16).value());
  std::vector<uint64_t> taken(ws.size()), wanted(ws.size());
  std::vector<std::thread> consumers;
  for (size_t k = 0; k < ws.size(); ++k) {
    consumers.emplace_back([&, k] {
      std::vector<int> got;
      while (true) {
        got.clear();
        if (!ws[k]->Take(&got, 5, absl::Milliseconds(50))) break;
        taken[k] += got.size();
      }
    });
  }
  std::vector<std::thread> producers;
  std::vector<uint64_t> lost(kProducers);
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int c = 0; c < kChunks; ++c) lost[p] += fan.Publish(Range(c * kChunkSize, kChunkSize));
    });
  }
  for (auto& t : producers) t.join();
  for (int c = 0; c < kChunks; ++c) {
    for (int i : Range(c * kChunkSize, kChunkSize)) wanted[2] += (i % 3 == 0) ? kProducers : 0;
  }
  wanted[0] = wanted[1] = uint64_t{kProducers} * kChunks * kChunkSize;
  for (const auto& w : ws) fan.RemoveWatcher(w);
  for (auto& t : consumers) t.join();
  uint64_t dropped = 0;
  for (size_t k = 0; k < ws.size(); ++k) {
    EXPECT_EQ(taken[k] + ws[k]->dropped(), wanted[k]) << "watcher " << k;
    dropped += ws[k]->dropped();
  }
  EXPECT_EQ(std::accumulate(lost.begin(), lost.end(), uint64_t{0}), dropped);
  EXPECT_EQ(fan.dropped_total(), dropped);
  EXPECT_EQ(fan.queued_total(), 0u);
}

}  // namespace
}  // namespace xolfleet
