// The probe manager's bookkeeping on an in-memory ProbeProgram, without root: slots taken
// and given back, an Attach rolled back whole when one of its links fails, slots reused
// with a new generation, and a partially detached multi link re-linked without losing or
// double-counting a hit. The in-memory program keeps the contract of bpf/probe.bpf.c: a
// hit through a link counts in the slot of its cookie only while the slot's config carries
// the cookie's generation. Probes are placed on copies of services/common/elf_fixture
// (real files, resolved and classified by the real resolver).
#include "services/agent/probe_manager.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "services/agent/hit_hub.h"
#include "services/agent/kernel_features.h"
#include "services/agent/probe_program.h"
#include "services/agent/slot_table.h"
#include "services/common/proto_time.h"
#include "xolfleet/v1/agent.pb.h"

namespace xolfleet {
namespace {

constexpr char kFixture[] = "services/common/elf_fixture";
constexpr char kWorkload[] = "tests/workloads/hit_workload";
constexpr uint32_t kMaxProbes = 16;

// What the fake kernel holds: maps, live links, and the failures a test asks for.
struct FakeKernel {
  struct LiveLink {
    uint64_t id;
    dev_t device;
    ino_t inode;
    int pid;
    std::vector<uint64_t> offsets, cookies;
  };
  absl::Mutex mu;
  std::map<uint32_t, xol_probe_config> configs ABSL_GUARDED_BY(mu);
  std::map<uint32_t, xol_probe_counters> counters ABSL_GUARDED_BY(mu);
  xol_probe_counters totals ABSL_GUARDED_BY(mu) = {};
  std::map<uint64_t, LiveLink> links ABSL_GUARDED_BY(mu);  // by id
  uint64_t next_link = 1 ABSL_GUARDED_BY(mu);
  size_t link_calls ABSL_GUARDED_BY(mu) = 0;
  size_t links_closed ABSL_GUARDED_BY(mu) = 0;
  // Failures to inject: links on files whose path contains this, the Nth Link call
  // (1-based) from now, config writes.
  std::string fail_links_on ABSL_GUARDED_BY(mu);
  size_t fail_link_call ABSL_GUARDED_BY(mu) = 0;
  bool fail_set_config ABSL_GUARDED_BY(mu) = false;
  // Runs in every successful Link, before it returns (no lock held).
  std::function<void()> on_link;

  // A hit of a process `pid` at `offset` of the file: every live link there runs the
  // program once (as the kernel does for several links on one instruction).
  std::vector<xol_hit_event> Hit(const OpenFile& file, uint64_t offset, int pid = 1) {
    absl::MutexLock l(&mu);
    std::vector<xol_hit_event> events;
    for (const auto& [id, link] : links) {
      if (link.device != file.device() || link.inode != file.inode()) continue;
      if (link.pid > 0 && link.pid != pid) continue;
      for (size_t i = 0; i < link.offsets.size(); ++i) {
        if (link.offsets[i] != offset) continue;
        const uint64_t cookie = link.cookies[i];
        const uint32_t slot = static_cast<uint32_t>(cookie);
        auto cfg = configs.find(slot);
        if (cfg == configs.end() || cfg->second.generation != static_cast<uint32_t>(cookie >> 32)) {
          continue;
        }
        ++counters[slot].hits;
        ++totals.hits;
        xol_hit_event e = {};
        e.cookie = cookie;
        events.push_back(e);
      }
    }
    return events;
  }
  size_t live_links() {
    absl::MutexLock l(&mu);
    return links.size();
  }
  size_t config_entries() {
    absl::MutexLock l(&mu);
    return configs.size();
  }
};

class FakeAttachment final : public Attachment {
 public:
  FakeAttachment(std::shared_ptr<FakeKernel> k, uint64_t id, size_t links)
      : k_(std::move(k)), id_(id), links_(links) {}
  ~FakeAttachment() override {
    absl::MutexLock l(&k_->mu);
    k_->links.erase(id_);
    ++k_->links_closed;
  }
  size_t link_count() const override { return links_; }

 private:
  std::shared_ptr<FakeKernel> k_;
  uint64_t id_;
  size_t links_;
};

class FakeProbeProgram final : public ProbeProgram {
 public:
  FakeProbeProgram(std::shared_ptr<FakeKernel> k, v1::LinkMode mode)
      : k_(std::move(k)), mode_(mode) {}
  using ProbeProgram::ReadCounters;
  using ProbeProgram::ResetCounters;

  v1::LinkMode link_mode() const override { return mode_; }
  uint32_t max_probes() const override { return kMaxProbes; }
  int events_fd() const override { return -1; }

  absl::Status SetConfig(uint32_t slot, const xol_probe_config& config) override {
    absl::MutexLock l(&k_->mu);
    if (slot >= kMaxProbes) return absl::InvalidArgumentError("slot out of range");
    if (k_->fail_set_config) return absl::ResourceExhaustedError("injected: config map full");
    k_->configs[slot] = config;
    return absl::OkStatus();
  }
  absl::Status DeleteConfig(uint32_t slot) override {
    absl::MutexLock l(&k_->mu);
    k_->configs.erase(slot);
    return absl::OkStatus();
  }
  absl::StatusOr<xol_probe_config> GetConfig(uint32_t slot) const override {
    absl::MutexLock l(&k_->mu);
    auto it = k_->configs.find(slot);
    if (it == k_->configs.end()) return absl::NotFoundError(absl::StrCat("no config ", slot));
    return it->second;
  }
  size_t CountConfigEntries() const override { return k_->config_entries(); }
  absl::StatusOr<xol_probe_counters> ReadCounters(uint32_t slot) const override {
    absl::MutexLock l(&k_->mu);
    if (slot >= kMaxProbes) return absl::InvalidArgumentError("slot out of range");
    auto it = k_->counters.find(slot);
    return it == k_->counters.end() ? xol_probe_counters{} : it->second;
  }
  absl::Status ResetCounters(uint32_t slot) override {
    absl::MutexLock l(&k_->mu);
    k_->counters.erase(slot);
    return absl::OkStatus();
  }
  xol_probe_counters ReadTotals() const override {
    absl::MutexLock l(&k_->mu);
    return k_->totals;
  }
  absl::StatusOr<std::unique_ptr<Attachment>> Link(const OpenFile& file,
                                                   absl::Span<const uint64_t> offsets,
                                                   absl::Span<const uint64_t> cookies,
                                                   int pid) const override {
    absl::ReleasableMutexLock l(&k_->mu);
    const size_t call = ++k_->link_calls;
    if ((!k_->fail_links_on.empty() && absl::StrContains(file.path(), k_->fail_links_on)) ||
        call == k_->fail_link_call) {
      return absl::InvalidArgumentError(absl::StrCat("injected link failure on ", file.path()));
    }
    const uint64_t id = k_->next_link++;
    k_->links[id] = FakeKernel::LiveLink{id,
                                         file.device(),
                                         file.inode(),
                                         pid,
                                         {offsets.begin(), offsets.end()},
                                         {cookies.begin(), cookies.end()}};
    const size_t kernel_links = mode_ == v1::LINK_MODE_UPROBE_MULTI ? 1 : offsets.size();
    auto att = std::unique_ptr<Attachment>(new FakeAttachment(k_, id, kernel_links));
    if (k_->on_link) {
      l.Release();
      k_->on_link();
    }
    return att;
  }

 private:
  std::shared_ptr<FakeKernel> k_;
  v1::LinkMode mode_;
};

class ProbeManagerTest : public ::testing::TestWithParam<v1::LinkMode> {
 protected:
  void SetUp() override {
    // Four copies of the fixture: four files, so four multi link groups.
    const std::string dir = absl::StrCat(getenv("TEST_TMPDIR"), "/pm");
    std::filesystem::create_directories(dir);
    for (int i = 0; i < 4; ++i) {
      files_.push_back(absl::StrCat(std::filesystem::absolute(dir).string(), "/bin", i));
      std::filesystem::copy_file(kFixture, files_.back(),
                                 std::filesystem::copy_options::overwrite_existing);
    }
    kernel_ = std::make_shared<FakeKernel>();
    hub_ = std::make_unique<HitHub>(kMaxProbes);
    ProbeManager::Options o;
    o.calibrate = false;
    o.slot_stats_path = o.placements_path = o.uprobes_boost_path = dir + "/absent";
    KernelInfo k;
    k.release = "6.18.0-test";
    k.version = {6, 18};
    k.profile = ChooseKernelProfile(k.version, std::nullopt);
    auto m = ProbeManager::Create(o, std::make_unique<FakeProbeProgram>(kernel_, GetParam()), k,
                                  hub_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    manager_ = std::move(*m);
  }

  static v1::ProbeSpec Spec(const std::string& path, const std::string& symbol) {
    v1::ProbeSpec s;
    s.set_binary_path(path);
    s.set_symbol(symbol);
    return s;
  }
  // `per_file` probes (distinct functions) on each of the first `files` files.
  v1::AttachRequest Request(int files, int per_file) const {
    static const char* kSymbols[] = {"fx_plain", "fx_endbr_push", "fx_endbr_loop", "fx_endbr_mov"};
    v1::AttachRequest req;
    for (int f = 0; f < files; ++f) {
      for (int k = 0; k < per_file; ++k) *req.add_specs() = Spec(files_[f], kSymbols[k]);
    }
    return req;
  }
  std::shared_ptr<const OpenFile> Open(int f) const {
    auto file = OpenFile::Open(files_[f]);
    EXPECT_TRUE(file.ok()) << file.status();
    return *file;
  }
  std::map<std::string, v1::Probe> Listed() {
    v1::ListRequest lr;
    auto resp = manager_->List(lr);
    EXPECT_TRUE(resp.ok()) << resp.status();
    std::map<std::string, v1::Probe> out;
    for (const v1::Probe& p : resp->probes()) out[p.id()] = p;
    return out;
  }
  // The kernel state of a request fully undone.
  void ExpectNothingLeft() {
    EXPECT_EQ(manager_->attached_count(), 0u);
    EXPECT_EQ(manager_->free_slots(), kMaxProbes);
    EXPECT_EQ(kernel_->config_entries(), 0u);
    EXPECT_EQ(kernel_->live_links(), 0u);
    EXPECT_EQ(manager_->link_count(), 0u);
  }

  std::vector<std::string> files_;
  std::shared_ptr<FakeKernel> kernel_;
  std::unique_ptr<HitHub> hub_;
  std::unique_ptr<ProbeManager> manager_;
};

TEST_P(ProbeManagerTest, AttachTakesOneSlotPerProbeAndLinksPerGroup) {
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(Request(3, 2));
  ASSERT_TRUE(resp.ok()) << resp.status();
  ASSERT_EQ(resp->probes_size(), 6);
  EXPECT_EQ(manager_->attached_count(), 6u);
  EXPECT_EQ(manager_->free_slots(), kMaxProbes - 6);
  EXPECT_EQ(kernel_->config_entries(), 6u);
  // Multi: one link per file; perf: one per probe. Either way six kernel links' worth of
  // probes, each with its own slot and generation 1.
  EXPECT_EQ(kernel_->live_links(), GetParam() == v1::LINK_MODE_UPROBE_MULTI ? 3u : 6u);
  EXPECT_EQ(manager_->link_count(), GetParam() == v1::LINK_MODE_UPROBE_MULTI ? 3u : 6u);
  std::set<uint32_t> slots;
  {
    absl::MutexLock l(&kernel_->mu);
    for (const auto& [slot, cfg] : kernel_->configs) {
      slots.insert(slot);
      EXPECT_EQ(cfg.generation, 1u) << "slot " << slot;
    }
  }
  EXPECT_EQ(slots, (std::set<uint32_t>{0, 1, 2, 3, 4, 5}));
  // Every probe counts its own hits only.
  const auto f0 = Open(0);
  const v1::Probe& p0 = resp->probes(0);
  for (int i = 0; i < 3; ++i) kernel_->Hit(*f0, p0.site().file_offset());
  auto listed = Listed();
  EXPECT_EQ(listed[p0.id()].hits(), 3u);
  EXPECT_EQ(listed[resp->probes(1).id()].hits(), 0u);
  EXPECT_EQ(listed[resp->probes(2).id()].hits(), 0u);  // same function, another file
}

// A link failing on the third group of a request undoes the whole request: every link
// made, every map entry, every slot, every route of the hit hub.
TEST_P(ProbeManagerTest, LinkFailureOnThirdGroupRollsBackEverything) {
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->fail_links_on = "/bin2";  // the third file: the third group (multi)
    if (GetParam() == v1::LINK_MODE_PERF_EVENT) {
      kernel_->fail_links_on.clear();
      kernel_->fail_link_call = 3;  // perf: one group per probe
    }
  }
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(Request(4, 2));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument) << resp.status();
  EXPECT_TRUE(absl::StrContains(resp.status().message(), "nothing attached (rolled back 8 probes)"))
      << resp.status();
  EXPECT_TRUE(absl::StrContains(resp.status().message(), "injected link failure")) << resp.status();
  ExpectNothingLeft();
  {
    absl::MutexLock l(&kernel_->mu);
    // Every link made before the failure was closed again. Perf links are made one after
    // the other: two made, the third refused, the rest never asked for.
    EXPECT_GE(kernel_->link_calls, 1u);
    EXPECT_EQ(kernel_->links_closed, kernel_->link_calls - 1);
    if (GetParam() == v1::LINK_MODE_PERF_EVENT) {
      EXPECT_EQ(kernel_->link_calls, 3u);
    }
  }
  // No slot routes events any more: an event of the request's first probe is stale.
  xol_hit_event e = {};
  e.cookie = XOL_COOKIE(1, 0);
  const uint64_t before = hub_->unrouted();
  hub_->Publish(absl::MakeConstSpan(&e, 1));
  EXPECT_EQ(hub_->unrouted(), before + 1);
  // Every slot is free: a request for all of them succeeds now.
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->fail_links_on.clear();
    kernel_->fail_link_call = 0;
  }
  resp = manager_->Attach(Request(4, 4));
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(manager_->free_slots(), 0u);
  EXPECT_EQ(kernel_->config_entries(), kMaxProbes);
}

TEST_P(ProbeManagerTest, ConfigWriteFailureFreesTheSlots) {
  {
    absl::MutexLock l(&kernel_->mu);
    kernel_->fail_set_config = true;
  }
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(Request(2, 2));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kResourceExhausted) << resp.status();
  EXPECT_TRUE(absl::StartsWith(resp.status().message(), "nothing attached: injected"))
      << resp.status();
  ExpectNothingLeft();
  {
    absl::MutexLock l(&kernel_->mu);
    EXPECT_EQ(kernel_->link_calls, 0u);  // the kernel was never asked for a link
  }
}

TEST_P(ProbeManagerTest, MoreProbesThanSlotsIsRefusedWithNothingTaken) {
  ASSERT_TRUE(manager_->Attach(Request(4, 3)).ok());                          // 12 of 16
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(Request(2, 4));  // 8 more
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(resp.status().message(), "limit of 16 (--max-probes; 12"))
      << resp.status();
  EXPECT_EQ(manager_->free_slots(), 4u);
  EXPECT_EQ(kernel_->config_entries(), 12u);
}

// A detached probe's slot is the next one taken, with the next generation and zeroed
// counters: the old owner's hits never show on the new probe.
TEST_P(ProbeManagerTest, SlotReusedWithNewGenerationAndZeroCounts) {
  absl::StatusOr<v1::AttachResponse> first = manager_->Attach(Request(1, 2));
  ASSERT_TRUE(first.ok()) << first.status();
  const auto f0 = Open(0);
  const v1::Probe gone = first->probes(0);
  for (int i = 0; i < 5; ++i) kernel_->Hit(*f0, gone.site().file_offset());
  v1::DetachRequest dr;
  dr.add_probe_ids(gone.id());
  ASSERT_TRUE(manager_->Detach(dr).ok());
  EXPECT_EQ(manager_->free_slots(), kMaxProbes - 1);
  const uint32_t freed_slot = 0;  // the first probe's
  {
    absl::MutexLock l(&kernel_->mu);
    EXPECT_EQ(kernel_->configs.size(), 1u);
    EXPECT_FALSE(kernel_->configs.count(freed_slot));
  }
  // Its final count is kept.
  v1::ListRequest lr;
  lr.set_include_inactive(true);
  lr.add_probe_ids(gone.id());
  auto listed = manager_->List(lr);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->probes_size(), 1);
  EXPECT_EQ(listed->probes(0).hits(), 5u);
  EXPECT_EQ(listed->probes(0).state(), v1::PROBE_STATE_DETACHED);

  v1::AttachRequest again;
  *again.add_specs() = Spec(files_[1], "fx_plain");
  absl::StatusOr<v1::AttachResponse> second = manager_->Attach(again);
  ASSERT_TRUE(second.ok()) << second.status();
  {
    absl::MutexLock l(&kernel_->mu);
    ASSERT_TRUE(kernel_->configs.count(freed_slot));
    EXPECT_EQ(kernel_->configs[freed_slot].generation, 2u);
    EXPECT_EQ(kernel_->counters[freed_slot].hits, 0u);
  }
  EXPECT_EQ(Listed()[second->probes(0).id()].hits(), 0u);
  const auto f1 = Open(1);
  kernel_->Hit(*f1, second->probes(0).site().file_offset());
  EXPECT_EQ(Listed()[second->probes(0).id()].hits(), 1u);
}

// Detaching some probes of a multi link re-links the others: a new link, the survivors'
// configs moved to the next generation, their counts kept, the old link closed; a hit
// afterwards counts exactly once.
TEST_P(ProbeManagerTest, PartialDetachRelinksSurvivorsKeepingCounts) {
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(Request(1, 4));
  ASSERT_TRUE(resp.ok()) << resp.status();
  const auto f0 = Open(0);
  for (int k = 0; k < 4; ++k) {
    for (int i = 0; i <= k; ++i) kernel_->Hit(*f0, resp->probes(k).site().file_offset());
  }
  size_t calls_before;
  {
    absl::MutexLock l(&kernel_->mu);
    calls_before = kernel_->link_calls;
  }
  v1::DetachRequest dr;
  dr.add_probe_ids(resp->probes(1).id());
  ASSERT_TRUE(manager_->Detach(dr).ok());
  auto listed = Listed();
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[resp->probes(0).id()].hits(), 1u);
  EXPECT_EQ(listed[resp->probes(2).id()].hits(), 3u);
  EXPECT_EQ(listed[resp->probes(3).id()].hits(), 4u);
  EXPECT_EQ(kernel_->config_entries(), 3u);
  EXPECT_EQ(manager_->free_slots(), kMaxProbes - 3);
  {
    absl::MutexLock l(&kernel_->mu);
    if (GetParam() == v1::LINK_MODE_UPROBE_MULTI) {
      // One new link with the three survivors, at generation 2.
      EXPECT_EQ(kernel_->link_calls, calls_before + 1);
      ASSERT_EQ(kernel_->links.size(), 1u);
      const FakeKernel::LiveLink& link = kernel_->links.begin()->second;
      EXPECT_EQ(link.offsets.size(), 3u);
      for (uint64_t cookie : link.cookies) EXPECT_EQ(cookie >> 32, 2u);
      for (const auto& [slot, cfg] : kernel_->configs) EXPECT_EQ(cfg.generation, 2u);
    } else {
      // Perf: the detached probe's own link closed, nothing re-linked.
      EXPECT_EQ(kernel_->link_calls, calls_before);
      EXPECT_EQ(kernel_->links.size(), 3u);
    }
  }
  for (int k : {0, 2, 3}) kernel_->Hit(*f0, resp->probes(k).site().file_offset());
  listed = Listed();
  EXPECT_EQ(listed[resp->probes(0).id()].hits(), 2u);
  EXPECT_EQ(listed[resp->probes(2).id()].hits(), 4u);
  EXPECT_EQ(listed[resp->probes(3).id()].hits(), 5u);
  // The detached probe's site no longer counts anywhere.
  EXPECT_TRUE(kernel_->Hit(*f0, resp->probes(1).site().file_offset()).empty());
}

// A re-link the kernel refuses keeps the old link: the survivors still count, once.
// Perf mode: every probe has a link of its own, so nothing is re-linked and the refusal
// the kernel has ready is never met.
TEST_P(ProbeManagerTest, FailedRelinkKeepsTheOldLink) {
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(Request(1, 3));
  ASSERT_TRUE(resp.ok()) << resp.status();
  size_t calls = 0;
  {
    absl::MutexLock l(&kernel_->mu);
    calls = kernel_->link_calls;
    kernel_->fail_link_call = calls + 1;
  }
  v1::DetachRequest dr;
  dr.add_probe_ids(resp->probes(0).id());
  ASSERT_TRUE(manager_->Detach(dr).ok());
  {
    absl::MutexLock l(&kernel_->mu);
    // Multi: one re-link tried (and refused); perf: none.
    EXPECT_EQ(kernel_->link_calls, calls + (GetParam() == v1::LINK_MODE_UPROBE_MULTI ? 1 : 0));
  }
  EXPECT_EQ(kernel_->live_links(), GetParam() == v1::LINK_MODE_UPROBE_MULTI ? 1u : 2u);
  EXPECT_EQ(kernel_->config_entries(), 2u);
  const auto f0 = Open(0);
  kernel_->Hit(*f0, resp->probes(1).site().file_offset());
  EXPECT_TRUE(kernel_->Hit(*f0, resp->probes(0).site().file_offset()).empty());
  auto listed = Listed();
  EXPECT_EQ(listed[resp->probes(1).id()].hits(), 1u);
  EXPECT_EQ(listed[resp->probes(2).id()].hits(), 0u);
  // Detaching the rest closes it.
  v1::DetachRequest all;
  all.set_all(true);
  ASSERT_TRUE(manager_->Detach(all).ok());
  ExpectNothingLeft();
}

TEST_P(ProbeManagerTest, ResolutionFailureTouchesNothing) {
  v1::AttachRequest req = Request(2, 1);
  *req.add_specs() = Spec(files_[3], "no_such_function");
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_TRUE(absl::StrContains(resp.status().message(), "nothing attached: 1 of 3 specs failed"))
      << resp.status();
  ExpectNothingLeft();
  absl::MutexLock l(&kernel_->mu);
  EXPECT_EQ(kernel_->link_calls, 0u);
}

// A dry run's rate sample lasts 1-10 s: anything else is refused before a probe is attached,
// and a TTL is a Duration like any other (sub-second included).
TEST_P(ProbeManagerTest, SampleDurationOutsideOneToTenSecondsIsRefused) {
  for (absl::Duration d : {absl::Milliseconds(500), absl::Seconds(11), -absl::Seconds(1)}) {
    v1::AttachRequest req = Request(1, 1);
    req.set_dry_run(true);
    *req.mutable_sample_duration() = ToDurationProto(d);
    absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(req);
    ASSERT_FALSE(resp.ok()) << absl::FormatDuration(d);
    EXPECT_EQ(resp.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(resp.status().message(), "sample_duration")) << resp.status();
    ExpectNothingLeft();
  }
  v1::AttachRequest req = Request(1, 1);
  *req.mutable_specs(0)->mutable_ttl() = ToDurationProto(absl::Milliseconds(1500));
  const absl::Time before = absl::Now();
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(req);
  ASSERT_TRUE(resp.ok()) << resp.status();
  const v1::Probe& p = resp->probes(0);
  ASSERT_TRUE(p.has_attached_at() && p.has_expires_at());
  EXPECT_GE(FromTimestamp(p.attached_at()), before);
  EXPECT_EQ(FromTimestamp(p.expires_at()) - FromTimestamp(p.attached_at()),
            absl::Milliseconds(1500));
}

// A process that exits while its probes are being linked (its pid may be another's by the
// time the links are live): NOT_FOUND, and the request rolled back.
TEST_P(ProbeManagerTest, ProcessExitingDuringLinkRollsBack) {
  const std::string workload = std::filesystem::absolute(kWorkload).string();
  int out[2], in[2];
  ASSERT_EQ(pipe(out), 0);
  ASSERT_EQ(pipe(in), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    execl(workload.c_str(), workload.c_str(), nullptr);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  char ready[64] = {};
  ASSERT_GT(read(out[0], ready, sizeof(ready) - 1), 0);  // "ready PID": it maps the binary
  ASSERT_TRUE(absl::StartsWith(ready, "ready ")) << ready;
  std::atomic<bool> reaped{false};  // links of different groups are made side by side
  kernel_->on_link = [&] {
    if (reaped.exchange(true)) return;
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
  };
  v1::AttachRequest req = Request(2, 1);
  v1::ProbeSpec* s = req.add_specs();
  *s = Spec(workload, "xol_target_add");
  s->set_pid(child);
  absl::StatusOr<v1::AttachResponse> resp = manager_->Attach(req);
  EXPECT_TRUE(reaped);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kNotFound) << resp.status();
  EXPECT_TRUE(absl::StrContains(resp.status().message(), "nothing attached (rolled back 3 probes)"))
      << resp.status();
  EXPECT_TRUE(absl::StrContains(resp.status().message(),
                                absl::StrCat("process ", child, " exited during the request")))
      << resp.status();
  ExpectNothingLeft();
  close(in[1]);
  close(out[0]);
  if (!reaped) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
  }
}

TEST_P(ProbeManagerTest, StoppingTheManagerDetachesEverything) {
  ASSERT_TRUE(manager_->Attach(Request(4, 2)).ok());
  EXPECT_GT(kernel_->live_links(), 0u);
  manager_.reset();
  EXPECT_EQ(kernel_->live_links(), 0u);
  EXPECT_EQ(kernel_->config_entries(), 0u);
}

// Every page of List for `req` with `page_size`, in order: full pages but the last, a
// token on each but the last.
std::vector<std::string> ListPages(ProbeManager& m, v1::ListRequest req, int page_size) {
  std::vector<std::string> ids;
  req.set_page_size(page_size);
  for (int pages = 0; pages < 100; ++pages) {
    absl::StatusOr<v1::ListResponse> page = m.List(req);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    for (const v1::Probe& p : page->probes()) ids.push_back(p.id());
    if (page->next_page_token().empty()) return ids;
    EXPECT_EQ(page->probes_size(), page_size);
    req.set_page_token(page->next_page_token());
  }
  ADD_FAILURE() << "more than 100 pages";
  return ids;
}

// Pages of 1, 2, 3 and the default size list every probe once, in the order of one
// unpaged answer: active probes by attach order, then the inactive ones.
TEST_P(ProbeManagerTest, ListPagesCoverEveryProbeOnceInOrder) {
  absl::StatusOr<v1::AttachResponse> a = manager_->Attach(Request(4, 2));
  ASSERT_TRUE(a.ok()) << a.status();
  v1::DetachRequest dr;
  dr.add_probe_ids(a->probes(5).id());
  dr.add_probe_ids(a->probes(1).id());
  ASSERT_TRUE(manager_->Detach(dr).ok());
  v1::ListRequest req;
  req.set_include_inactive(true);
  absl::StatusOr<v1::ListResponse> all = manager_->List(req);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->next_page_token().empty());
  std::vector<std::string> expected;
  for (int k : {0, 2, 3, 4, 6, 7}) expected.push_back(a->probes(k).id());
  // Inactive by the time they stopped: 5 and 1 in the request's order.
  std::vector<std::string> inactive;
  for (size_t i = 6; i < static_cast<size_t>(all->probes_size()); ++i) {
    inactive.push_back(all->probes(i).id());
  }
  EXPECT_EQ(std::set<std::string>(inactive.begin(), inactive.end()),
            (std::set<std::string>{a->probes(1).id(), a->probes(5).id()}));
  expected.insert(expected.end(), inactive.begin(), inactive.end());
  std::vector<std::string> unpaged;
  for (const v1::Probe& p : all->probes()) unpaged.push_back(p.id());
  EXPECT_EQ(unpaged, expected);
  for (int size : {1, 2, 3, 0}) EXPECT_EQ(ListPages(*manager_, req, size), expected) << size;
  // A filter pages the same way.
  v1::ListRequest some;
  some.add_probe_ids(a->probes(7).id());
  some.add_probe_ids(a->probes(1).id());
  some.add_probe_ids(a->probes(2).id());
  some.set_include_inactive(true);
  EXPECT_EQ(ListPages(*manager_, some, 1),
            (std::vector<std::string>{a->probes(2).id(), a->probes(7).id(), a->probes(1).id()}));
  req.set_include_inactive(false);
  EXPECT_EQ(ListPages(*manager_, req, 4),
            std::vector<std::string>(expected.begin(), expected.begin() + 6));
}

TEST_P(ProbeManagerTest, ListRefusesMalformedAndForeignTokens) {
  ASSERT_TRUE(manager_->Attach(Request(2, 2)).ok());
  v1::ListRequest req;
  req.set_page_size(1);
  absl::StatusOr<v1::ListResponse> first = manager_->List(req);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(first->next_page_token().empty());
  v1::ListRequest bad = req;
  bad.set_page_token("not a token");
  absl::Status s = manager_->List(bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "malformed page_token")) << s;
  // The token of a request with other filters.
  v1::ListRequest other = req;
  other.set_include_inactive(true);
  other.set_page_token(first->next_page_token());
  s = manager_->List(other).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "page_token does not belong to this request")) << s;
  // Another page size with the same filters is fine.
  v1::ListRequest bigger = req;
  bigger.set_page_size(10);
  bigger.set_page_token(first->next_page_token());
  absl::StatusOr<v1::ListResponse> rest = manager_->List(bigger);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->probes_size(), 3);
  v1::ListRequest negative;
  negative.set_page_size(-1);
  EXPECT_EQ(manager_->List(negative).status().code(), absl::StatusCode::kInvalidArgument);
}

// Probes attached and detached between two pages: a probe that stayed (active or inactive
// on both sides) is on a later page once if it was not listed yet, and not again if it was.
TEST_P(ProbeManagerTest, ListPagesSurviveChangesBetweenPages) {
  absl::StatusOr<v1::AttachResponse> a = manager_->Attach(Request(4, 2));
  ASSERT_TRUE(a.ok()) << a.status();
  v1::DetachRequest dr;
  dr.add_probe_ids(a->probes(6).id());
  ASSERT_TRUE(manager_->Detach(dr).ok());
  v1::ListRequest req;
  req.set_include_inactive(true);
  req.set_page_size(3);
  absl::StatusOr<v1::ListResponse> page = manager_->List(req);
  ASSERT_TRUE(page.ok()) << page.status();
  std::vector<std::string> seen;
  for (const v1::Probe& p : page->probes()) seen.push_back(p.id());
  ASSERT_EQ(seen,
            (std::vector<std::string>{a->probes(0).id(), a->probes(1).id(), a->probes(2).id()}));
  // A listed probe and an unlisted one detached, more attached.
  dr.clear_probe_ids();
  dr.add_probe_ids(a->probes(0).id());
  dr.add_probe_ids(a->probes(4).id());
  ASSERT_TRUE(manager_->Detach(dr).ok());
  absl::StatusOr<v1::AttachResponse> more = manager_->Attach(Request(1, 1));
  ASSERT_TRUE(more.ok()) << more.status();
  req.set_page_token(page->next_page_token());
  req.set_page_size(2);
  std::vector<std::string> rest = ListPages(*manager_, req, 2);
  EXPECT_EQ(std::set<std::string>(rest.begin(), rest.end()).size(), rest.size()) << "a repeat";
  for (int k : {1, 2}) {  // stayed, listed before the change
    EXPECT_EQ(std::count(rest.begin(), rest.end(), a->probes(k).id()), 0) << k;
  }
  for (int k : {3, 5, 7, 6}) {  // stayed, not listed before the change
    EXPECT_EQ(std::count(rest.begin(), rest.end(), a->probes(k).id()), 1) << k;
  }
  // Changed: the new probe once; the detached ones once each, as their inactive records
  // (probe 0 was listed active before it stopped).
  for (const std::string& id : {more->probes(0).id(), a->probes(0).id(), a->probes(4).id()}) {
    EXPECT_EQ(std::count(rest.begin(), rest.end(), id), 1) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(LinkModes, ProbeManagerTest,
                         ::testing::Values(v1::LINK_MODE_UPROBE_MULTI, v1::LINK_MODE_PERF_EVENT),
                         [](const ::testing::TestParamInfo<v1::LinkMode>& i) {
                           return i.param == v1::LINK_MODE_UPROBE_MULTI ? "Multi" : "Perf";
                         });

TEST(SlotTable, TakesLowestFirstThenReusesFreedWithNextGeneration) {
  SlotTable t(4);
  std::vector<SlotTable::Grant> g = t.Take(3);
  ASSERT_EQ(g.size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(g[i].slot, i);
    EXPECT_EQ(g[i].generation, 1u);
  }
  EXPECT_EQ(t.free_count(), 1u);
  EXPECT_TRUE(t.Free(1));
  EXPECT_FALSE(t.Free(1));  // not in use any more: nothing changes
  EXPECT_FALSE(t.Free(3));  // never taken
  EXPECT_EQ(t.free_count(), 2u);
  std::optional<SlotTable::Grant> again = t.Take();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->slot, 1u);
  EXPECT_EQ(again->generation, 2u);
}

TEST(SlotTable, TakeIsAllOrNothing) {
  SlotTable t(3);
  EXPECT_TRUE(t.Take(4).empty());
  EXPECT_EQ(t.free_count(), 3u);
  EXPECT_EQ(t.Take(3).size(), 3u);
  EXPECT_FALSE(t.Take().has_value());
  EXPECT_EQ(t.used_count(), 3u);
}

TEST(SlotTable, RelinkGenerationAdvancesWithoutFreeing) {
  SlotTable t(2);
  std::optional<SlotTable::Grant> g = t.Take();
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(t.next_generation(g->slot), 2u);
  EXPECT_EQ(t.AdvanceGeneration(g->slot), 2u);
  EXPECT_TRUE(t.in_use(g->slot));
  EXPECT_EQ(t.free_count(), 1u);
  EXPECT_TRUE(t.Free(g->slot));
  EXPECT_EQ(t.Take()->generation, 3u);  // the slot taken again (LIFO), one generation on
}

}  // namespace
}  // namespace xolfleet
