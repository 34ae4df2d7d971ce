// Unit tests of the agent's pure parts: kernel profile choice, debugfs parsers, the rate limiter
// shared with the BPF program, error mapping, and the hit fan-out.
#include <sys/sysmacros.h>

#include <atomic>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/agent/attachment.h"
#include "services/agent/bpf/probe.h"
#include "services/agent/bpf/ratelimit.h"
#include "services/agent/hit_hub.h"
#include "services/agent/kernel_features.h"
#include "services/agent/kernel_stats.h"
#include "services/common/grpc_status.h"

namespace xolfleet {
namespace {

TEST(RunInParallel, RunsEveryIndexExactlyOnce) {
  for (size_t threads : {0, 1, 2, 4, 64}) {
    for (size_t n : {0, 1, 3, 100}) {
      std::vector<std::atomic<int>> runs(n);
      RunInParallel(n, threads, [&](size_t i) { ++runs[i]; });
      for (size_t i = 0; i < n; ++i) {
        EXPECT_EQ(runs[i].load(), 1)
            << "index " << i << " of " << n << ", " << threads << " threads";
      }
    }
  }
}

class CountingAttachment final : public Attachment {
 public:
  explicit CountingAttachment(std::atomic<int>* destroyed) : destroyed_(destroyed) {}
  ~CountingAttachment() override { ++*destroyed_; }
  size_t link_count() const override { return 1; }

 private:
  std::atomic<int>* destroyed_;
};

TEST(RunInParallel, DestroysEveryAttachmentIncludingNulls) {
  std::atomic<int> destroyed{0};
  std::vector<std::unique_ptr<Attachment>> atts;
  for (int i = 0; i < 7; ++i) atts.push_back(std::make_unique<CountingAttachment>(&destroyed));
  atts.push_back(nullptr);  // a group whose link was never made (a rolled-back request)
  DestroyInParallel(std::move(atts), 4);
  EXPECT_EQ(destroyed.load(), 7);
}

TEST(KernelRelease, Parses) {
  absl::StatusOr<KernelVersion> v = ParseKernelRelease("6.18.44-fc-v782");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->major, 6);
  EXPECT_EQ(v->minor, 18);
  v = ParseKernelRelease("6.1.0-27-amd64");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->minor, 1);
  v = ParseKernelRelease("6.16");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->minor, 16);
  EXPECT_FALSE(ParseKernelRelease("linux").ok());
  EXPECT_FALSE(ParseKernelRelease("6").ok());
  EXPECT_FALSE(ParseKernelRelease("6.x").ok());
}

TEST(KernelProfile, StockKernelsByVersion) {
  EXPECT_EQ(ChooseKernelProfile({6, 1}, std::nullopt).profile, KernelProfile::kLinux61);
  EXPECT_EQ(ChooseKernelProfile({6, 15}, std::nullopt).profile, KernelProfile::kLinux61);
  EXPECT_EQ(ChooseKernelProfile({6, 16}, std::nullopt).profile, KernelProfile::kLinux618);
  EXPECT_EQ(ChooseKernelProfile({6, 18}, std::nullopt).profile, KernelProfile::kLinux618);
  EXPECT_EQ(ChooseKernelProfile({7, 0}, std::nullopt).profile, KernelProfile::kLinux618);
  EXPECT_EQ(ChooseKernelProfile({5, 15}, std::nullopt).profile, KernelProfile::kLinux61);
  EXPECT_FALSE(ChooseKernelProfile({6, 18}, std::nullopt).patched);
}

TEST(KernelProfile, PatchedKernelFollowsTheBoostSwitch) {
  KernelProfileChoice on = ChooseKernelProfile({6, 1}, 1);
  EXPECT_EQ(on.profile, KernelProfile::kXolfleet61);
  EXPECT_TRUE(on.patched);
  EXPECT_TRUE(on.boosts);
  KernelProfileChoice off = ChooseKernelProfile({6, 1}, 0);
  EXPECT_EQ(off.profile, KernelProfile::kXolfleet61NoBoost);
  EXPECT_TRUE(off.patched);
  EXPECT_FALSE(off.boosts);
}

constexpr char kStatsFixture[] =
    "hits_emulated 12\n"
    "hits_boosted 3400\n"
    "hits_boosted_riprel 56\n"
    "hits_single_step 7\n"
    "slot_reinstalls 1\n"
    "slot_migrations 9\n"
    "signals_deferred 2\n"
    "signals_translated 4\n"
    "fault_rollbacks 5\n"
    "rep_rollbacks 6\n"
    "some_future_counter 77\n";

TEST(SlotStats, ParsesEveryCounterAndIgnoresUnknownOnes) {
  absl::StatusOr<v1::KernelSlotStats> s = ParseSlotStats(kStatsFixture);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->available());
  EXPECT_EQ(s->hits_emulated(), 12u);
  EXPECT_EQ(s->hits_boosted(), 3400u);
  EXPECT_EQ(s->hits_boosted_riprel(), 56u);
  EXPECT_EQ(s->hits_single_step(), 7u);
  EXPECT_EQ(s->slot_reinstalls(), 1u);
  EXPECT_EQ(s->slot_migrations(), 9u);
  EXPECT_EQ(s->signals_deferred(), 2u);
  EXPECT_EQ(s->signals_translated(), 4u);
  EXPECT_EQ(s->fault_rollbacks(), 5u);
  EXPECT_EQ(s->rep_rollbacks(), 6u);
}

// A kernel of the series before rep_rollbacks existed: the counter reads 0.
TEST(SlotStats, OlderKernelWithoutRepRollbacks) {
  absl::StatusOr<v1::KernelSlotStats> s =
      ParseSlotStats("signals_translated 4\nfault_rollbacks 5\n");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->signals_translated(), 4u);
  EXPECT_EQ(s->rep_rollbacks(), 0u);
}

TEST(SlotStats, TabsBlankLinesAndComments) {
  absl::StatusOr<v1::KernelSlotStats> s =
      ParseSlotStats("# counters\n\nhits_boosted\t10\n  slot_migrations   3  \n");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->hits_boosted(), 10u);
  EXPECT_EQ(s->slot_migrations(), 3u);
}

TEST(SlotStats, RejectsMalformedLinesNamingThem) {
  absl::StatusOr<v1::KernelSlotStats> s = ParseSlotStats("hits_boosted ten\n");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("line 1"), absl::string_view::npos);
  EXPECT_FALSE(ParseSlotStats("hits_boosted 1 2\n").ok());
  EXPECT_FALSE(ParseSlotStats("hits_boosted -1\n").ok());
}

TEST(Placements, ParsesFixture) {
  absl::StatusOr<KernelPlacements> p = ParsePlacements(
      "8:1 1234 0x1a2f BOOSTED\n"
      "8:1 1234 0x1a40 BOOSTED_RIPREL\n"
      "259:3 99 0x0 EMULATED\n"
      "259:3 99 0xfff SINGLE_STEP\n");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 4u);
  const uint64_t sda1 = makedev(8, 1), nvme = makedev(259, 3);
  EXPECT_EQ(p->Find(sda1, 1234, 0x1a2f), Placement::kBoosted);
  EXPECT_EQ(p->Find(sda1, 1234, 0x1a40), Placement::kBoostedRipRel);
  EXPECT_EQ(p->Find(nvme, 99, 0), Placement::kEmulated);
  EXPECT_EQ(p->Find(nvme, 99, 0xfff), Placement::kSingleStep);
  EXPECT_EQ(p->Find(sda1, 1234, 0x1a30), std::nullopt);  // no probe at that offset
}

// The same inode number on two file systems: only the device tells the probes apart.
TEST(Placements, SameInodeOnTwoDevicesIsToldApartByTheDevice) {
  absl::StatusOr<KernelPlacements> p = ParsePlacements(
      "8:1 1234 0x10 BOOSTED\n"
      "0:25 1234 0x10 SINGLE_STEP\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Find(makedev(8, 1), 1234, 0x10), Placement::kBoosted);
  EXPECT_EQ(p->Find(makedev(0, 25), 1234, 0x10), Placement::kSingleStep);
  // A third device (stat() and the super block disagree): two candidates, no answer.
  EXPECT_EQ(p->Find(makedev(0, 26), 1234, 0x10), std::nullopt);
}

// stat() on a btrfs subvolume or an overlayfs path reports another device than the
// kernel's super block: a single line for the inode and offset still answers.
TEST(Placements, UniqueInodeAnswersWhateverTheDevice) {
  absl::StatusOr<KernelPlacements> p = ParsePlacements("0:31 77 0x40 EMULATED\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Find(makedev(0, 45), 77, 0x40), Placement::kEmulated);
}

// Kernels of the series before the device was added print "<inode> 0x<offset> <PLACEMENT>".
TEST(Placements, ReadsTheInodeOnlyFormat) {
  absl::StatusOr<KernelPlacements> p = ParsePlacements(
      "1234 0x1a2f BOOSTED\n"
      "99 0xfff SINGLE_STEP\n");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ(p->Find(makedev(8, 1), 1234, 0x1a2f), Placement::kBoosted);
  EXPECT_EQ(p->Find(makedev(259, 3), 99, 0xfff), Placement::kSingleStep);
}

// The kernel lists a probe as UNKNOWN until a process maps its file (kernel/README.md);
// such a line must neither fail the whole file nor count as a placement.
TEST(Placements, SkipsProbesNotAnalysedYet) {
  absl::StatusOr<KernelPlacements> p = ParsePlacements(
      "8:1 1234 0x1a2f UNKNOWN\n"
      "8:1 1234 0x1a40 BOOSTED\n"
      "99 0x10 UNKNOWN\n");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 1u);
  EXPECT_EQ(p->Find(makedev(8, 1), 1234, 0x1a2f), std::nullopt);
  EXPECT_EQ(p->Find(makedev(8, 1), 1234, 0x1a40), Placement::kBoosted);
}

TEST(Placements, RejectsMalformedLines) {
  EXPECT_FALSE(ParsePlacements("8:1 1234 1a2f BOOSTED\n").ok());    // no 0x
  EXPECT_FALSE(ParsePlacements("8:1 1234 0x1a2f FAST\n").ok());     // unknown placement
  EXPECT_FALSE(ParsePlacements("8:1 abc 0x1a2f BOOSTED\n").ok());   // bad inode
  EXPECT_FALSE(ParsePlacements("8:1 1234 0x1a2f\n").ok());          // missing field
  EXPECT_FALSE(ParsePlacements("8 1234 0x1a2f BOOSTED\n").ok());    // no minor
  EXPECT_FALSE(ParsePlacements("8:x 1234 0x1a2f BOOSTED\n").ok());  // bad minor
  EXPECT_FALSE(ParsePlacements("1234 1a2f BOOSTED\n").ok());        // old format, no 0x
  EXPECT_FALSE(ParsePlacements("abc 0x1a2f BOOSTED\n").ok());       // old format, bad inode
  absl::StatusOr<KernelPlacements> p = ParsePlacements("8:1 1 0x1 EMULATED\nbad\n");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("line 2"), absl::string_view::npos);
}

TEST(SlotStatsFiles, MissingFileIsNotFound) {
  EXPECT_EQ(ReadSlotStats("/nonexistent/uprobes/stats").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadPlacements("/nonexistent/uprobes/placements").status().code(),
            absl::StatusCode::kNotFound);
}

// The rate limiter is the same code the BPF program runs (bpf/ratelimit.h).
constexpr uint64_t kSec = 1000000000ull;

TEST(RateLimit, BurstOfOneSecondThenSteadyRate) {
  const uint64_t limit = 10, interval = kSec / limit;
  __u64 tat = 0;
  uint64_t now = 5 * kSec;
  int admitted = 0;
  for (int i = 0; i < 100; ++i) admitted += xol_gcra_admit(&tat, now, interval, kSec);
  EXPECT_EQ(admitted, 10);  // a full bucket: one second's worth
  // Half a second later, half a bucket has refilled.
  now += kSec / 2;
  admitted = 0;
  for (int i = 0; i < 100; ++i) admitted += xol_gcra_admit(&tat, now, interval, kSec);
  EXPECT_EQ(admitted, 5);
  // Spread out at exactly the rate: every event passes.
  admitted = 0;
  for (int i = 0; i < 50; ++i) {
    now += interval;
    admitted += xol_gcra_admit(&tat, now, interval, kSec);
  }
  EXPECT_EQ(admitted, 50);
}

TEST(RateLimit, NeverExceedsLimitOverAnyWindow) {
  const uint64_t limit = 1000, interval = kSec / limit;
  __u64 tat = 0;
  uint64_t now = kSec;
  uint64_t admitted = 0;
  // 10 s of hits every 100 us (10x the limit): at most burst + rate * time.
  for (int i = 0; i < 100000; ++i) {
    now += 100000;
    admitted += xol_gcra_admit(&tat, now, interval, kSec);
  }
  EXPECT_LE(admitted, limit + limit * 10);
  EXPECT_GE(admitted, limit * 10);
}

TEST(RateLimit, ConcurrentCallersNeverExceedTheBucket) {
  const uint64_t limit = 100, interval = kSec / limit;
  __u64 tat = 0;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        admitted += xol_gcra_admit(&tat, 7 * kSec, interval, kSec);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 100);  // same instant: exactly one bucket
}

TEST(StatusMapping, CodesAndMessagesSurvive) {
  const absl::StatusCode codes[] = {
      absl::StatusCode::kInvalidArgument,    absl::StatusCode::kNotFound,
      absl::StatusCode::kFailedPrecondition, absl::StatusCode::kResourceExhausted,
      absl::StatusCode::kPermissionDenied,   absl::StatusCode::kInternal,
      absl::StatusCode::kUnavailable};
  const grpc::StatusCode want[] = {
      grpc::StatusCode::INVALID_ARGUMENT,    grpc::StatusCode::NOT_FOUND,
      grpc::StatusCode::FAILED_PRECONDITION, grpc::StatusCode::RESOURCE_EXHAUSTED,
      grpc::StatusCode::PERMISSION_DENIED,   grpc::StatusCode::INTERNAL,
      grpc::StatusCode::UNAVAILABLE};
  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); ++i) {
    grpc::Status g = ToGrpcStatus(absl::Status(codes[i], "why and what to do"));
    EXPECT_EQ(g.error_code(), want[i]);
    EXPECT_EQ(g.error_message(), "why and what to do");
    EXPECT_EQ(FromGrpcStatus(g).code(), codes[i]);
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

// Issue 12: events carry register slots in a fixed order, the arguments first.
TEST(HitEvent, SlotsPutTheArgumentsFirstAndCoverEveryRegister) {
  std::set<uint32_t> slots;
  for (uint32_t r = 0; r < XOL_NUM_REGS; ++r) slots.insert(xol_reg_slot(r));
  EXPECT_EQ(slots.size(), static_cast<size_t>(XOL_NUM_REGS));
  EXPECT_EQ(*slots.rbegin(), XOL_NUM_REGS - 1u);
  EXPECT_EQ(xol_event_slots(0), 0u);
  EXPECT_EQ(xol_event_slots(1u << XOL_REG_RDI), 1u);
  EXPECT_EQ(xol_event_slots(1u << XOL_REG_RSI), 2u);
  EXPECT_EQ(xol_event_slots((1u << XOL_REG_RDI) | (1u << XOL_REG_R9)), 6u);
  EXPECT_EQ(xol_event_slots(1u << XOL_REG_RAX), 7u);
  EXPECT_EQ(xol_event_slots(1u << XOL_REG_EFLAGS), static_cast<uint32_t>(XOL_NUM_REGS));
  EXPECT_EQ(XOL_EVENT_BYTES(1), 40u);
  EXPECT_EQ(XOL_EVENT_BYTES(XOL_NUM_REGS), sizeof(xol_hit_event));
}

xol_hit_event Event(uint32_t gen, uint32_t slot, uint64_t rdi) {
  xol_hit_event e = {};
  e.cookie = XOL_COOKIE(gen, slot);
  e.capture_mask = 1u << XOL_REG_RDI;
  e.regs[xol_reg_slot(XOL_REG_RDI)] = rdi;
  return e;
}

TEST(HitHub, RoutesByCookieAndDropsStaleGenerations) {
  HitHub hub(8);
  hub.RouteSlot(3, /*first_generation=*/5, /*probe_num=*/42);
  std::shared_ptr<Watcher> w = hub.AddWatcher({}, 100).value();
  std::vector<xol_hit_event> evs = {Event(5, 3, 1), Event(6, 3, 2),  // 6: after a re-link
                                    Event(4, 3, 3),                  // older probe in slot 3
                                    Event(1, 7, 4)};                 // unrouted slot
  hub.Publish(evs);
  std::vector<RoutedHit> got;
  w->Take(&got, 100, absl::ZeroDuration());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].probe_num, 42u);
  EXPECT_EQ(got[0].event.regs[xol_reg_slot(XOL_REG_RDI)], 1u);
  EXPECT_EQ(got[1].event.regs[xol_reg_slot(XOL_REG_RDI)], 2u);
  EXPECT_EQ(hub.unrouted(), 2u);
  EXPECT_EQ(hub.published(), 4u);
  hub.UnrouteSlot(3);
  hub.Publish(evs);
  got.clear();
  w->Take(&got, 100, absl::ZeroDuration());
  EXPECT_TRUE(got.empty());
}

TEST(HitHub, FullQueueDropsAndCountsEveryLostEvent) {
  HitHub hub(4);
  hub.RouteSlot(0, 1, 1);
  hub.RouteSlot(1, 1, 2);
  std::shared_ptr<Watcher> all = hub.AddWatcher({}, 10).value();
  std::shared_ptr<Watcher> only2 = hub.AddWatcher({2}, 1000).value();
  std::vector<xol_hit_event> evs;
  for (int i = 0; i < 25; ++i) evs.push_back(Event(1, i % 2, i));
  hub.Publish(evs);
  EXPECT_EQ(all->dropped(), 15u);
  EXPECT_EQ(only2->dropped(), 0u);
  std::vector<RoutedHit> got;
  while (all->Take(&got, 3, absl::ZeroDuration()) && got.size() < 10) {
  }
  EXPECT_EQ(got.size(), 10u);
  EXPECT_EQ(got.size() + all->dropped(), 25u);  // every event accounted for
  got.clear();
  only2->Take(&got, 100, absl::ZeroDuration());
  EXPECT_EQ(got.size(), 12u);  // odd i: slot 1 -> probe 2
  for (const RoutedHit& h : got) EXPECT_EQ(h.probe_num, 2u);
  hub.RemoveWatcher(all);
  EXPECT_EQ(hub.watcher_dropped_total(), 15u);
  EXPECT_EQ(hub.watchers(), 1u);
}

// Issue 9: queues take memory only for events waiting in them, all queues
// together are bounded, and so is the number of watchers.
TEST(HitHub, QueuesAreLazyAndBoundedInTotal) {
  HitHub::Limits limits;
  limits.max_watchers = 2;
  limits.max_queued_events = 30;
  HitHub hub(2, limits);
  hub.RouteSlot(0, 1, 1);
  std::shared_ptr<Watcher> a = hub.AddWatcher({}, 1 << 20).value();
  std::shared_ptr<Watcher> b = hub.AddWatcher({}, 1 << 20).value();
  EXPECT_EQ(a->queued_now(), 0u);
  absl::StatusOr<std::shared_ptr<Watcher>> c = hub.AddWatcher({}, 10);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("--max-watch-streams=2"), absl::string_view::npos)
      << c.status();
  std::vector<xol_hit_event> evs;
  for (int i = 0; i < 20; ++i) evs.push_back(Event(1, 0, i));
  hub.Publish(evs);
  // 40 events offered, 30 fit the shared budget: a gets 20, b 10.
  EXPECT_EQ(a->queued_now() + b->queued_now(), 30u);
  EXPECT_EQ(a->dropped() + b->dropped(), 10u);
  EXPECT_EQ(hub.queued_events(), 30u);
  std::vector<RoutedHit> got;
  a->Take(&got, 100, absl::ZeroDuration());
  EXPECT_EQ(hub.queued_events(), b->queued_now());
  hub.RemoveWatcher(b);
  b.reset();
  EXPECT_EQ(hub.queued_events(), 0u);
  EXPECT_TRUE(hub.AddWatcher({}, 10).ok());  // a slot is free again
}

TEST(HitHub, TakeWaitsForEventsAndReturnsFalseWhenClosed) {
  HitHub hub(1);
  hub.RouteSlot(0, 1, 7);
  std::shared_ptr<Watcher> w = hub.AddWatcher({}, 16).value();
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    std::vector<xol_hit_event> one = {Event(1, 0, 9)};
    hub.Publish(one);
  });
  std::vector<RoutedHit> got;
  EXPECT_TRUE(w->Take(&got, 16, absl::Seconds(10)));
  producer.join();
  ASSERT_EQ(got.size(), 1u);
  w->Close();
  got.clear();
  EXPECT_FALSE(w->Take(&got, 16, absl::Seconds(10)));
}

}  // namespace
}  // namespace xolfleet
