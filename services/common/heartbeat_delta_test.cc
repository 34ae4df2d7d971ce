#include "services/common/heartbeat_delta.h"

#include <algorithm>
#include <map>
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
    EXPECT_FALSE(dec.view().delta());
    EXPECT_EQ(Canon(dec.view()), Canon(f));
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
  EXPECT_EQ(dec.view().probes(0).status_message(), "ab\xC3\xA9");
  msg.mutable_probes(0)->set_status_message("abc\xC3\xA9");
  got = dec.Apply(msg);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(dec.view().probes(0).status_message(), "abc");
}

// Keeps what a consumer would: each probe's entry by local id (checking that entries enter
// and leave in step with the view) and the hits counted from the reports, as the
// controller counts them (the difference from the last report of the same local probe).
class Recorder : public HeartbeatDeltaDecoder::Observer {
 public:
  void ProbeLeaving(const v1::AgentProbeStatus& old,
                    const v1::AgentProbeStatus* incoming) override {
    auto it = entries.find(old.local_probe_id());
    ASSERT_NE(it, entries.end());
    EXPECT_EQ(it->second, &old);
    if (incoming) EXPECT_EQ(incoming->local_probe_id(), old.local_probe_id());
    if (!incoming) {
      entries.erase(it);
      marks.erase(old.local_probe_id());
    }
  }
  void ProbeEntered(const v1::AgentProbeStatus& now) override {
    entries[now.local_probe_id()] = &now;
    uint64_t& mark = marks[now.local_probe_id()];
    counted += now.hits() - mark;
    mark = now.hits();
  }
  void SetLeaving(const v1::AgentSetStatus& old, bool gone) override { sets -= gone; }
  void SetEntered(const v1::AgentSetStatus& now, bool added) override { sets += added; }
  // Rebuilt after a full heartbeat (the observer is not told of those).
  void Replaced(const v1::AgentHeartbeat& view) {
    entries.clear();
    for (const auto& p : view.probes()) {
      entries[p.local_probe_id()] = &p;
      counted += p.hits() - marks[p.local_probe_id()];
      marks[p.local_probe_id()] = p.hits();
    }
    sets = view.sets_size();
  }
  std::map<std::string, const v1::AgentProbeStatus*> entries;
  std::map<std::string, uint64_t> marks;
  uint64_t counted = 0;
  int sets = 0;
};

TEST(HeartbeatDelta, StateChangeThenPeriodicGivesTheViewOfFullHeartbeats) {
  HeartbeatDeltaEncoder enc;
  HeartbeatDeltaDecoder dec;
  Recorder rec;
  using Kind = HeartbeatDeltaEncoder::Kind;
  struct Step {
    v1::AgentHeartbeat full;
    Kind kind;
  };
  v1::AgentHeartbeat failed = Full({{"1", 9}, {"2", 4}, {"5", 0}}, {"ps-1", "ps-3"});
  failed.mutable_probes(2)->set_state(v1::PROBE_STATE_FAILED);
  failed.mutable_probes(2)->set_status_message("no such symbol");
  std::vector<Step> steps = {
      {Full({{"1", 0}, {"2", 0}}), Kind::kStateChange},  // no base yet: full
      {Full({{"1", 3}, {"2", 1}}), Kind::kPeriodic},
      // A new set attached: only it travels, the hits of 1 and 2 wait.
      {Full({{"1", 5}, {"2", 2}, {"3", 0}}, {"ps-1", "ps-2"}), Kind::kStateChange},
      {Full({{"1", 6}, {"2", 2}, {"3", 1}}, {"ps-1", "ps-2"}), Kind::kPeriodic},
      // A set detached, another failing, hits moving everywhere.
      {Full({{"1", 8}, {"2", 3}}, {"ps-1"}), Kind::kStateChange},
      {failed, Kind::kStateChange},
      {failed, Kind::kPeriodic},
  };
  std::vector<int> sent_probes;
  uint64_t last_hits_total = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& st = steps[i];
    v1::AgentHeartbeat wire = st.full;
    enc.Encode(&wire, st.kind);
    EXPECT_EQ(wire.state_change(), wire.delta() && st.kind == Kind::kStateChange) << i;
    sent_probes.push_back(wire.probes_size());
    auto got = dec.Apply(wire, &rec);
    ASSERT_TRUE(got.ok()) << got.status();
    if (*got == HeartbeatDeltaDecoder::Applied::kReplaced) rec.Replaced(dec.view());
    EXPECT_FALSE(dec.view().delta());
    EXPECT_FALSE(dec.view().state_change());
    ASSERT_EQ(rec.entries.size(), static_cast<size_t>(dec.view().probes_size())) << i;
    ASSERT_EQ(rec.sets, dec.view().sets_size()) << i;
    if (st.kind == Kind::kPeriodic) {
      // The same view as a full heartbeat, and every hit counted once.
      EXPECT_EQ(Canon(dec.view()), Canon(st.full)) << i;
      uint64_t total = 0;
      for (const auto& p : st.full.probes()) total += p.hits();
      EXPECT_GE(rec.counted, total) << i;
      last_hits_total = total;
    } else {
      // Everything but the hits of probes whose state did not change.
      v1::AgentHeartbeat want = st.full;
      for (auto& p : *want.mutable_probes()) {
        for (const auto& q : dec.view().probes()) {
          if (q.local_probe_id() == p.local_probe_id() && q.state() == p.state()) {
            EXPECT_LE(q.hits(), p.hits()) << i;
            p.set_hits(q.hits());
          }
        }
      }
      EXPECT_EQ(Canon(dec.view()), Canon(want)) << i;
    }
  }
  // Only changes travel: state changes alone (the new probe; nothing; the failed one) right
  // after a reconcile, every hit that moved in the periodic ones.
  EXPECT_EQ(sent_probes, (std::vector<int>{2, 2, 1, 3, 0, 1, 2}));
  // Hits counted per local probe sum to the totals: 1 and 2 reported 9 + 4, 3 reached 1
  // before it went, 5 none.
  EXPECT_EQ(last_hits_total, 13u);
  EXPECT_EQ(rec.counted, 14u);
}

TEST(HeartbeatDelta, UnchangedEntriesStayPut) {
  HeartbeatDeltaEncoder enc;
  HeartbeatDeltaDecoder dec;
  Recorder rec;
  v1::AgentHeartbeat a = Full({{"1", 0}, {"2", 0}, {"3", 0}});
  enc.Encode(&a);
  ASSERT_TRUE(dec.Apply(a, &rec).ok());
  rec.Replaced(dec.view());
  std::map<std::string, const v1::AgentProbeStatus*> before = rec.entries;
  v1::AgentHeartbeat b = Full({{"2", 0}, {"3", 7}, {"4", 0}});  // 1 gone, 3 hit, 4 new
  enc.Encode(&b);
  ASSERT_EQ(*dec.Apply(b, &rec), HeartbeatDeltaDecoder::Applied::kChanged);
  EXPECT_EQ(rec.entries["2"], before["2"]);
  EXPECT_EQ(rec.entries["3"], before["3"]);  // overwritten in place
  for (const auto& p : dec.view().probes()) EXPECT_EQ(rec.entries[p.local_probe_id()], &p);
  EXPECT_EQ(dec.view().probes_size(), 3);
}

TEST(HeartbeatDelta, StateChangeBeforeAnyBaseIsFullOrAsksForOne) {
  // The encoder has no base on a new stream: even a state-change heartbeat is full.
  HeartbeatDeltaEncoder enc;
  v1::AgentHeartbeat a = Full({{"1", 4}});
  enc.Encode(&a, HeartbeatDeltaEncoder::Kind::kStateChange);
  EXPECT_FALSE(a.delta());
  EXPECT_FALSE(a.state_change());
  EXPECT_EQ(a.probes(0).hits(), 4u);
  // A controller without a base (a new stream) refuses one and changes nothing.
  HeartbeatDeltaDecoder dec;
  v1::AgentHeartbeat hb;
  hb.set_delta(true);
  hb.set_state_change(true);
  *hb.add_probes() = Probe("1", 0);
  EXPECT_EQ(dec.Apply(hb).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dec.view().probes_size(), 0);
  ASSERT_TRUE(dec.Apply(Full({{"1", 0}, {"2", 0}})).ok());
  dec.Reset();  // the stream was replaced
  EXPECT_EQ(dec.Apply(hb).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(dec.view().probes_size(), 2);  // the last view stays
}

TEST(HeartbeatDelta, DuplicateSetIdsMeanFullHeartbeats) {
  HeartbeatDeltaEncoder enc;
  for (int i = 0; i < 2; ++i) {
    v1::AgentHeartbeat hb = Full({{"1", 0}}, {"ps-1", "ps-1"});
    enc.Encode(&hb);
    EXPECT_FALSE(hb.delta());
  }
}

}  // namespace
}  // namespace xolfleet
