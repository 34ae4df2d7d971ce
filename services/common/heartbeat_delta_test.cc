#include "services/common/heartbeat_delta.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace xolfleet {
namespace {

v1::AgentProbeStatus Probe(const std::string& local, uint64_t hits) {
  v1::AgentProbeStatus p;
  p.set_local_probe_id(local);
  p.set_fleet_probe_id(absl::StrCat("ps-1/", local));
  p.set_set_id("ps-1");
  p.set_state(v1::PROBE_STATE_ATTACHED);
  p.set_placement(v1::PLACEMENT_EMULATED);
  p.set_hits(hits);
  return p;
}

v1::AgentHeartbeat Full(std::vector<std::pair<std::string, uint64_t>> probes,
                        std::vector<std::string> sets = {"ps-1"}) {
  v1::AgentHeartbeat hb;
  for (const auto& [id, hits] : probes) *hb.add_probes() = Probe(id, hits);
  for (const auto& s : sets) {
    auto* st = hb.add_sets();
    st->set_set_id(s);
    st->set_state(v1::SET_STATE_ATTACHED);
  }
  hb.set_probes_attached(static_cast<uint32_t>(probes.size()));
  hb.set_desired_generation(7);
  hb.set_kernel_profile("linux-6.18");
  return hb;
}

// The heartbeat as the core sees it, independent of order.
std::string Canon(v1::AgentHeartbeat hb) {
  std::sort(hb.mutable_probes()->begin(), hb.mutable_probes()->end(),
            [](const auto& a, const auto& b) { return a.local_probe_id() < b.local_probe_id(); });
  std::sort(hb.mutable_sets()->begin(), hb.mutable_sets()->end(),
            [](const auto& a, const auto& b) { return a.set_id() < b.set_id(); });
  return hb.DebugString();
}

TEST(HeartbeatDelta, OnlyChangesTravelAndTheControllerSeesEveryHeartbeatWhole) {
  HeartbeatDeltaEncoder enc;
  HeartbeatDeltaDecoder dec;
  std::vector<v1::AgentHeartbeat> fulls = {
      Full({{"1", 0}, {"2", 0}, {"3", 0}}),
      Full({{"1", 0}, {"2", 0}, {"3", 0}}),                    // nothing changed
      Full({{"1", 5}, {"2", 0}, {"3", 0}}),                    // hits on one probe
      Full({{"1", 5}, {"3", 0}, {"4", 0}}, {"ps-1", "ps-2"}),  // one gone, one new, a new set
      Full({{"4", 1}}, {"ps-2"}),                              // most gone
  };
  std::vector<int> sent_probes;
  for (const auto& f : fulls) {
    v1::AgentHeartbeat wire = f;
    enc.Encode(&wire);
    sent_probes.push_back(wire.probes_size());
    auto got = dec.Apply(wire);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_FALSE(got->delta());
    EXPECT_EQ(Canon(*got), Canon(f));
  }
  EXPECT_EQ(sent_probes, (std::vector<int>{3, 0, 1, 1, 1}));
}

TEST(HeartbeatDelta, FirstAndAfterResetAreFullAndCarryRemovals) {
  HeartbeatDeltaEncoder enc;
  v1::AgentHeartbeat a = Full({{"1", 0}, {"2", 0}});
  enc.Encode(&a);
  EXPECT_FALSE(a.delta());
  EXPECT_EQ(a.probes_size(), 2);
  v1::AgentHeartbeat b = Full({{"1", 0}});
  enc.Encode(&b);
  EXPECT_TRUE(b.delta());
  EXPECT_EQ(b.probes_size(), 0);
  ASSERT_EQ(b.removed_local_probe_ids_size(), 1);
  EXPECT_EQ(b.removed_local_probe_ids(0), "2");
  EXPECT_EQ(b.desired_generation(), 7u);  // other fields always complete
  enc.Reset();
  v1::AgentHeartbeat c = Full({{"1", 0}});
  enc.Encode(&c);
  EXPECT_FALSE(c.delta());
  EXPECT_EQ(c.probes_size(), 1);
}

TEST(HeartbeatDelta, DuplicateLocalIdsMeanFullHeartbeats) {
  HeartbeatDeltaEncoder enc;
  for (int i = 0; i < 3; ++i) {
    v1::AgentHeartbeat hb = Full({{"1", 0}, {"1", 0}});
    enc.Encode(&hb);
    EXPECT_FALSE(hb.delta());
    EXPECT_EQ(hb.probes_size(), 2);
  }
}

TEST(HeartbeatDelta, DeltaWithoutBaseAsksForAFullOne) {
  HeartbeatDeltaDecoder dec;
  v1::AgentHeartbeat hb;
  hb.set_delta(true);
  auto got = dec.Apply(hb);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(dec.Apply(Full({{"1", 0}})).ok());
  EXPECT_TRUE(dec.Apply(hb).ok());
}

TEST(HeartbeatDelta, LimitsBoundWhatTheControllerKeeps) {
  HeartbeatDeltaDecoder::Limits lim;
  lim.max_probes = 3;
  lim.max_id_bytes = 8;
  lim.max_message_bytes = 4;
  HeartbeatDeltaDecoder dec(lim);
  EXPECT_EQ(dec.Apply(Full({{"1", 0}, {"2", 0}, {"3", 0}, {"4", 0}})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dec.Apply(Full({{"123456789", 0}})).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A delta may not grow the node past the limit either.
  ASSERT_TRUE(dec.Apply(Full({{"1", 0}, {"2", 0}, {"3", 0}})).ok());
  v1::AgentHeartbeat more;
  more.set_delta(true);
  *more.add_probes() = Probe("4", 0);
  EXPECT_EQ(dec.Apply(more).status().code(), absl::StatusCode::kInvalidArgument);
  // Status messages are cut, never in the middle of a UTF-8 sequence.
  v1::AgentHeartbeat msg = Full({{"1", 0}});
  msg.mutable_probes(0)->set_status_message("ab\xC3\xA9xyz");  // "abé..." : é is 2 bytes
  auto got = dec.Apply(msg);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->probes(0).status_message(), "ab\xC3\xA9");
  msg.mutable_probes(0)->set_status_message("abc\xC3\xA9");
  got = dec.Apply(msg);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->probes(0).status_message(), "abc");
}

}  // namespace
}  // namespace xolfleet
