#include "services/agent/probe_manager.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <sstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/agent/binary_locator.h"
#include "services/agent/kernel_stats.h"
#include "services/agent/probe_convert.h"
#include "services/common/elf_file.h"
#include "services/common/enum_names.h"
#include "services/common/log.h"
#include "services/common/open_file.h"
#include "services/common/page_token.h"
#include "services/common/proto_time.h"
#include "services/common/site_resolver.h"
#include "services/common/x86_classifier.h"

namespace xolfleet {
namespace {

// Link groups made or closed at once (attachment.h, RunInParallel).
constexpr size_t kLinkThreads = 4;

// The compact form of an attached probe (AttachRequest.compact): what a client of a large
// batch needs to address and check its probes; List has the rest.
v1::Probe CompactProbe(const v1::Probe &p) {
  v1::Probe c;
  c.set_id(p.id());
  c.set_state(p.state());
  c.set_status_message(p.status_message());
  c.mutable_site()->set_placement(p.site().placement());
  c.mutable_site()->set_file_offset(p.site().file_offset());
  if (p.has_expires_at()) *c.mutable_expires_at() = p.expires_at();
  return c;
}

// What the BPF program needs of a probe (bpf/probe.h).
xol_probe_config ProbeConfig(const v1::ProbeSpec &spec, uint32_t generation) {
  xol_probe_config cfg = {};
  cfg.generation = generation;
  cfg.pid = static_cast<uint32_t>(spec.pid());
  for (int reg : spec.capture()) cfg.capture_mask |= 1u << (reg - 1);
  if (spec.rate_limit_per_sec() > 0) {  // < kMaxRateLimit (ValidateSpec)
    cfg.rate_interval_ns = 1000000000ull / spec.rate_limit_per_sec();
    cfg.rate_burst_ns = 1000000000ull;
  }
  return cfg;
}

}  // namespace

ProbeManager::ProbeManager(const Options &options, std::unique_ptr<ProbeProgram> program,
                           KernelInfo kernel, HitHub *hub)
    : options_(options),
      program_(std::move(program)),
      kernel_(std::move(kernel)),
      hub_(hub),
      profile_(kernel_.profile),
      slots_(program_->max_probes()) {}

KernelProfileChoice ProbeManager::Profile() const {
  absl::MutexLock l(&profile_mu_);
  return profile_;
}

absl::StatusOr<std::unique_ptr<ProbeManager>> ProbeManager::Create(
    const Options &options, std::unique_ptr<ProbeProgram> program, KernelInfo kernel, HitHub *hub) {
  if (program == nullptr || hub == nullptr) {
    return absl::InvalidArgumentError("ProbeManager needs a program and a hit hub");
  }
  BinaryLocator::Options lo;
  lo.host_root = options.host_root;
  lo.proc = options.proc;
  absl::StatusOr<std::unique_ptr<BinaryLocator>> locator = BinaryLocator::Create(lo);
  if (!locator.ok()) return locator.status();
  std::unique_ptr<ProbeManager> m(
      new ProbeManager(options, std::move(program), std::move(kernel), hub));
  m->locator_ = std::move(*locator);
  m->expiry_thread_ = std::thread([p = m.get()] { p->ExpiryLoop(); });
  {
    absl::MutexLock l(&m->mu_);
    // The first calibration is the caller's (the agent runs it before it serves, so nothing it does
    // races with the first requests); this thread re-runs it when the kernel profile changes.
    m->calibration_.set_status(options.calibrate ? "pending" : "off");
  }
  if (options.calibrate) {
    m->calibration_thread_ = std::thread([p = m.get()] { p->CalibrationLoop(); });
  }
  return m;
}

ProbeManager::~ProbeManager() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  if (calibration_thread_.joinable()) calibration_thread_.join();
  absl::MutexLock l(&mu_);
  std::vector<std::string> ids;
  for (const auto &[id, r] : active_) ids.push_back(id);
  if (!ids.empty()) {
    Log("agent stopping: detaching ", ids.size(), " probes");
    DetachLocked(ids, v1::PROBE_STATE_DETACHED, "agent stopped");
  }
}

absl::StatusOr<v1::AttachResponse> ProbeManager::Attach(const v1::AttachRequest &req) {
  return AttachWithProgress(req, nullptr);
}

absl::StatusOr<v1::AttachResponse> ProbeManager::AttachWithProgress(
    const v1::AttachRequest &req, const AttachProgressFn &progress) {
  const absl::Time start = absl::Now();
  auto observed = [&](absl::StatusOr<v1::AttachResponse> r) {
    if (observer_ != nullptr) {
      observer_->OnAttach(absl::Now() - start, r.ok() ? r->probes_size() : 0, r.ok());
    }
    return r;
  };
  if (absl::Status st = CheckRequestSize(req); !st.ok()) return observed(st);
  if (req.dry_run()) return DryRun(req);
  absl::StatusOr<std::vector<ResolvedSpec>> resolved = Resolve(req, progress);
  if (!resolved.ok()) return observed(resolved.status());
  if (progress) {
    progress(v1::ATTACH_PHASE_LINKING, req.specs_size(), req.specs_size());
  }
  const absl::Time resolved_at = absl::Now();
  absl::MutexLock l(&mu_);
  return observed(AttachLocked(req, *resolved, start, resolved_at));
}

absl::Status ProbeManager::CheckRequestSize(const v1::AttachRequest &req) const {
  if (req.specs_size() == 0) return absl::InvalidArgumentError("AttachRequest has no specs");
  if (static_cast<uint32_t>(req.specs_size()) > options_.max_specs_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AttachRequest has ", req.specs_size(), " specs, more than the ",
        options_.max_specs_per_request,
        " one request may carry (--max-specs-per-request): split it into smaller requests"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ResolvedSpec>> ProbeManager::Resolve(
    const v1::AttachRequest &req, const AttachProgressFn &progress) const {
  ResolveProgressFn resolving;
  if (progress) {
    resolving = [&progress](uint32_t done, uint32_t total) {
      progress(v1::ATTACH_PHASE_RESOLVING, done, total);
    };
  }
  return ResolveSpecs(*locator_, Profile().profile, req, resolving);
}

absl::StatusOr<v1::AttachResponse> ProbeManager::AttachLocked(
    const v1::AttachRequest &req, const std::vector<ResolvedSpec> &resolved, absl::Time start,
    absl::Time resolved_at) {
  const size_t n = resolved.size();
  if (absl::Status st = CheckCapacityLocked(req, resolved); !st.ok()) return st;
  std::vector<ProbeRecord> records = NewRecordsLocked(req, resolved);
  if (absl::Status st = WriteConfigsLocked(req, records); !st.ok()) return st;
  LinkBatch batch(program_->link_mode());
  for (size_t i = 0; i < n; ++i) {
    ProbeRecord &r = records[i];
    r.group =
        batch.Add(r.probe.id(), req.specs(i).binary_path(), resolved[i].file, req.specs(i).pid(),
                  r.probe.site().file_offset(), XOL_COOKIE(r.generation, r.slot));
  }
  v1::AttachResponse resp;
  resp.set_link_mode(program_->link_mode());
  for (const ProbeRecord &r : records) {
    *resp.add_probes() = req.compact() ? CompactProbe(r.probe) : r.probe;
    hub_->RouteSlot(r.slot, r.generation, r.num);
  }
  active_.reserve(active_.size() + n);
  absl::Status st = batch.Link(*program_, kLinkThreads);
  // A process that exited while the links were made (the kernel refuses a link for a pid
  // that is gone, ESRCH) gets the one answer of every stage: NOT_FOUND, nothing attached.
  for (const ResolvedSpec &r : resolved) {
    if (r.process == nullptr) continue;
    if (absl::Status gone = r.process->CheckRunning(); !gone.ok()) {
      st = gone;
      break;
    }
  }
  if (!st.ok()) {
    RollbackLocked(records, &batch);
    return absl::Status(
        st.code(), absl::StrCat("nothing attached (rolled back ", n, " probes): ", st.message()));
  }
  if (n >= 100) {
    // Large batches: say where the time went (the kernel's share grows with the number
    // of processes mapping each binary: it writes the breakpoint into every one of them).
    Log("attached ", n, " probes as ", batch.group_count(), " link group(s): resolve+classify ",
        absl::FormatDuration(resolved_at - start), ", kernel links ",
        absl::FormatDuration(absl::Now() - resolved_at));
  }
  for (ProbeRecord &r : records) {
    std::string id = r.probe.id();
    active_.emplace(std::move(id), std::move(r));
  }
  // Resolving a large batch reads whole ELF files, and the request and reply of a
  // large batch are freed by gRPC after this returns: give that memory back soon.
  if (n >= 1000) TrimSoonLocked();
  return resp;
}

absl::Status ProbeManager::CheckCapacityLocked(const v1::AttachRequest &req,
                                               const std::vector<ResolvedSpec> &resolved) const {
  const size_t n = resolved.size();
  if (n > slots_.free_count()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("nothing attached: ", n, " more probes would exceed the agent's limit of ",
                     program_->max_probes(), " (--max-probes; ", active_.size(),
                     " attached now): detach some first"));
  }
  // Every probe on an instruction is one more BPF program run on each of its hits, in the
  // probed process: a bounded number may share one instruction (the 5,001st copy of a
  // probe on one site was accepted before).
  using SiteKey = std::tuple<dev_t, ino_t, uint64_t>;
  absl::flat_hash_map<SiteKey, size_t> per_site;
  for (const auto &[id, r] : active_) {
    if (r.group && r.group->file) {
      ++per_site[{r.group->file->device(), r.group->file->inode(), r.probe.site().file_offset()}];
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const OpenFile &f = *resolved[i].file;
    size_t &count = per_site[{f.device(), f.inode(), resolved[i].site.file_offset}];
    if (++count > options_.max_probes_per_site) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "nothing attached: ", DescribeSpec(i, req.specs(i)), " would be probe ", count,
          " on the instruction at file offset 0x", absl::Hex(resolved[i].site.file_offset),
          "; at most ", options_.max_probes_per_site,
          " probes may share one instruction (--max-probes-per-site)"));
    }
  }
  return absl::OkStatus();
}

std::vector<ProbeManager::ProbeRecord> ProbeManager::NewRecordsLocked(
    const v1::AttachRequest &req, const std::vector<ResolvedSpec> &resolved) {
  const absl::Time now = absl::Now();
  const std::vector<SlotTable::Grant> grants = slots_.Take(resolved.size());  // checked
  std::vector<ProbeRecord> records(resolved.size());
  for (size_t i = 0; i < resolved.size(); ++i) {
    const v1::ProbeSpec &spec = req.specs(i);
    ProbeRecord &r = records[i];
    r.slot = grants[i].slot;
    r.generation = grants[i].generation;
    r.num = next_probe_num_++;
    r.device = resolved[i].file->device();
    r.inode = resolved[i].file->inode();
    r.placement = resolved[i].site.insn.placement;
    r.probe.set_id(absl::StrCat("p", r.num));
    *r.probe.mutable_spec() = spec;
    *r.probe.mutable_site() = ToSitePlacement(resolved[i].site);
    r.probe.set_state(v1::PROBE_STATE_ATTACHED);
    *r.probe.mutable_attached_at() = ToTimestamp(now);
    if (const absl::Duration ttl = FromDurationProto(spec.ttl()); ttl > absl::ZeroDuration()) {
      r.expires = now + ttl;
      *r.probe.mutable_expires_at() = ToTimestamp(r.expires);
    }
  }
  return records;
}

absl::Status ProbeManager::WriteConfigsLocked(const v1::AttachRequest &req,
                                              const std::vector<ProbeRecord> &records) {
  std::vector<uint32_t> slots;
  std::vector<xol_probe_config> configs;
  slots.reserve(records.size());
  configs.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    slots.push_back(records[i].slot);
    configs.push_back(ProbeConfig(req.specs(i), records[i].generation));
  }
  // Counters zeroed, then configs written, each in one batch call.
  absl::Status st = program_->ResetCounters(slots);
  if (st.ok()) st = program_->SetConfigs(slots, configs);
  if (st.ok()) return st;
  (void)program_->DeleteConfigs(slots);
  for (uint32_t slot : slots) slots_.Free(slot);
  return absl::Status(st.code(), absl::StrCat("nothing attached: ", st.message()));
}

void ProbeManager::RollbackLocked(const std::vector<ProbeRecord> &records, LinkBatch *batch) {
  // Every link of the request first, then every map entry and slot.
  batch->Close(kLinkThreads);
  for (const ProbeRecord &r : records) {
    hub_->UnrouteSlot(r.slot);
    (void)program_->DeleteConfig(r.slot);
    (void)program_->ResetCounters(r.slot);
    slots_.Free(r.slot);
  }
}
void ProbeManager::FillCountersLocked(const ProbeRecord &r, v1::Probe *out) const {
  absl::StatusOr<xol_probe_counters> c = program_->ReadCounters(r.slot);
  FillCountersLocked(r, c.ok() ? &*c : nullptr, out);
}

void ProbeManager::FillCountersLocked(const ProbeRecord &r, const xol_probe_counters *c,
                                      v1::Probe *out) const {
  if (c != nullptr) {
    out->set_hits(c->hits);
    out->set_events_emitted(c->emitted);
    out->set_events_dropped(c->dropped);
    out->set_rate_limited(c->rate_limited);
  }
  auto kp = kernel_placement_.find(r.probe.id());
  if (kp != kernel_placement_.end()) {
    out->set_kernel_placement(ToProtoPlacement(kp->second));
    out->set_placement_mismatch(kp->second != r.placement);
  }
}

absl::Duration ProbeManager::DetachLocked(const std::vector<std::string> &ids, v1::ProbeState state,
                                          const std::string &why) {
  std::vector<ProbeRecord *> records;
  records.reserve(ids.size());
  for (const std::string &id : ids) {
    auto it = active_.find(id);
    if (it != active_.end()) records.push_back(&it->second);
  }
  // Links that lose every member are closed first, before the per-probe bookkeeping: while a link
  // on libc or libstdc++ is live the agent's own calls into those libraries trap too, and a
  // 10,000-probe detach did most of its work under its own probes.
  std::vector<std::unique_ptr<Attachment>> closing;
  const std::vector<std::shared_ptr<LinkGroup>> partial = SplitGroups(records, &closing);
  // Closing the link(s) makes the kernel remove the uprobes; groups side by side.
  const absl::Time close_start = absl::Now();
  DestroyInParallel(std::move(closing), kLinkThreads);
  const absl::Duration closing_links = absl::Now() - close_start;
  const absl::flat_hash_set<std::string> gone = RetireLocked(records, state, why);
  for (const auto &g : partial) {
    auto &members = g->probe_ids;
    members.erase(std::remove_if(members.begin(), members.end(),
                                 [&gone](const std::string &m) { return gone.contains(m); }),
                  members.end());
    RelinkLocked(g.get());
  }
  return closing_links;
}

std::vector<std::shared_ptr<LinkGroup>> ProbeManager::SplitGroups(
    const std::vector<ProbeRecord *> &records, std::vector<std::unique_ptr<Attachment>> *closing) {
  absl::flat_hash_map<const LinkGroup *, size_t> leaving;
  for (const ProbeRecord *r : records) ++leaving[r->group.get()];
  std::vector<std::shared_ptr<LinkGroup>> partial;
  for (const ProbeRecord *r : records) {
    LinkGroup *g = r->group.get();
    auto lit = leaving.find(g);
    if (lit == leaving.end()) continue;  // already handled
    if (lit->second == g->probe_ids.size()) {
      closing->push_back(std::move(g->attachment));
    } else {
      partial.push_back(r->group);
    }
    leaving.erase(lit);
  }
  return partial;
}

absl::flat_hash_set<std::string> ProbeManager::RetireLocked(
    const std::vector<ProbeRecord *> &records, v1::ProbeState state, const std::string &why) {
  // Configs first: from here on the program ignores hits of these slots. Then the
  // final counts, then the counters zeroed; each one batch call for all the probes.
  std::vector<uint32_t> slots;
  slots.reserve(records.size());
  for (const ProbeRecord *r : records) slots.push_back(r->slot);
  (void)program_->DeleteConfigs(slots);
  // Only the last inactive_retention probes of the request stay visible in List: the
  // others' final states would be dropped at once, so they are not made.
  const size_t keep_from = records.size() > options_.inactive_retention
                               ? records.size() - options_.inactive_retention
                               : 0;
  absl::StatusOr<std::vector<xol_probe_counters>> counts =
      program_->ReadCounters(absl::MakeConstSpan(slots).subspan(keep_from));
  (void)program_->ResetCounters(slots);
  absl::flat_hash_set<std::string> gone;
  for (size_t i = 0; i < records.size(); ++i) {
    ProbeRecord &r = *records[i];
    hub_->UnrouteSlot(r.slot);
    slots_.Free(r.slot);
    const std::string id = r.probe.id();
    gone.insert(id);
    if (i >= keep_from) {
      FillCountersLocked(r, counts.ok() ? &(*counts)[i - keep_from] : nullptr, &r.probe);
      v1::Probe final_state = std::move(r.probe);  // r is erased below
      final_state.set_state(state);
      final_state.set_status_message(why);
      inactive_.push_back(std::move(final_state));
      ++inactive_pushed_;
      while (inactive_.size() > options_.inactive_retention) inactive_.pop_front();
    }
    kernel_placement_.erase(id);
    mismatch_logged_.erase(id);
    active_.erase(id);  // destroys r (and drops its reference to the group)
  }
  return gone;
}

// A multi link cannot drop some of its offsets, so the survivors move to a new link: make it with
// the next generation in the cookies (its hits are ignored until the config says so), switch each
// survivor's config to that generation (from then on the old link's hits are ignored), then close
// the old link. Every hit is counted exactly once.
void ProbeManager::RelinkLocked(LinkGroup *g) {
  std::vector<uint64_t> offsets, cookies;
  std::vector<ProbeRecord *> members;
  for (const std::string &id : g->probe_ids) {
    ProbeRecord &r = active_.at(id);
    members.push_back(&r);
    offsets.push_back(r.probe.site().file_offset());
    cookies.push_back(XOL_COOKIE(slots_.next_generation(r.slot), r.slot));
  }
  absl::StatusOr<std::unique_ptr<Attachment>> att =
      program_->Link(*g->file, offsets, cookies, g->pid);
  if (!att.ok()) {
    Log("re-linking ", members.size(), " probes on ", g->path,
        " failed; the old link stays until they are detached: ", att.status().message());
    return;
  }
  for (ProbeRecord *r : members) {
    uint32_t gen = slots_.AdvanceGeneration(r->slot);
    absl::StatusOr<xol_probe_config> cfg = program_->GetConfig(r->slot);
    if (cfg.ok()) {
      cfg->generation = gen;
      (void)program_->SetConfig(r->slot, *cfg);
    }
    r->generation = gen;
  }
  g->attachment = std::move(*att);
}

absl::StatusOr<v1::DetachResponse> ProbeManager::Detach(const v1::DetachRequest &req) {
  const absl::Time start = absl::Now();
  if (!req.all() && req.probe_ids_size() == 0) {
    return absl::InvalidArgumentError(
        "DetachRequest names no probe ids (set all to detach every probe)");
  }
  v1::DetachResponse resp;
  std::vector<std::string> ids;
  absl::Duration closing_links;
  {
    absl::MutexLock l(&mu_);
    if (req.all()) {
      for (const auto &[id, r] : active_) ids.push_back(id);
    } else {
      std::vector<std::string> unknown;
      for (const std::string &id : req.probe_ids()) {
        if (!active_.contains(id)) unknown.push_back(id);
        ids.push_back(id);
      }
      if (!unknown.empty()) {
        return absl::NotFoundError(absl::StrCat("nothing detached: no attached probe with id ",
                                                absl::StrJoin(unknown, ", "), " (see List)"));
      }
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    closing_links = DetachLocked(ids, v1::PROBE_STATE_DETACHED, "detached on request");
    if (ids.size() >= 1000) TrimSoonLocked();
  }
  for (const std::string &id : ids) resp.add_detached_ids(id);
  if (ids.size() >= 100) {
    Log("detached ", ids.size(), " probes in ", absl::FormatDuration(absl::Now() - start),
        " (kernel links closed in ", absl::FormatDuration(closing_links), ")");
  }
  if (observer_ != nullptr) observer_->OnDetach(absl::Now() - start, ids.size());
  return resp;
}

void ProbeManager::ExpireDue(absl::Time now) {
  const absl::Time start = absl::Now();
  std::vector<std::string> ids;
  {
    absl::MutexLock l(&mu_);
    for (const auto &[id, r] : active_) {
      if (r.expires <= now) ids.push_back(id);
    }
    if (ids.empty()) return;
    DetachLocked(ids, v1::PROBE_STATE_EXPIRED, "TTL expired");
  }
  Log("TTL expired: detached ", ids.size(), " probes");
  if (observer_ != nullptr) observer_->OnDetach(absl::Now() - start, ids.size());
}

void ProbeManager::ExpiryLoop() {
  absl::Time next_refresh = absl::Now();
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(100))) return;
    }
    ExpireDue(absl::Now());
    MaybeTrim(absl::Now());
    // Mismatches and a switched kernel.uprobes_boost show up in logs and /metrics even
    // when nobody calls List or GetNodeInfo.
    if (absl::Now() >= next_refresh) {
      RefreshKernel();
      UpdateCosts(absl::Now());
      next_refresh = absl::Now() + absl::Seconds(1);
    }
  }
}

void ProbeManager::TrimSoonLocked() { trim_at_ = absl::Now() + absl::Milliseconds(300); }

void ProbeManager::MaybeTrim(absl::Time now) {
  {
    absl::MutexLock l(&mu_);
    if (trim_at_ > now) return;
    trim_at_ = absl::InfiniteFuture();
  }
  // glibc keeps freed memory in its arenas (one per gRPC thread that allocated it) and
  // gives back only the top of each; malloc_trim also returns free whole pages inside
  // them. After a 10,000-probe attach that is about 60 MiB of the request, the reply,
  // the ELF tables read and the resolver's temporaries (bench/agent/results.txt).
  malloc_trim(0);
}

void ProbeManager::RefreshKernel() {
  absl::MutexLock l(&mu_);
  RefreshKernelLocked();
}

void ProbeManager::RefreshKernelLocked() {
  // The runtime switch first: the placements the kernel reports follow it.
  std::optional<int> boost = ReadUprobesBoost(options_.uprobes_boost_path);
  KernelProfileChoice now = ChooseKernelProfile(kernel_.version, boost);
  bool changed;
  {
    absl::MutexLock pl(&profile_mu_);
    changed = now.profile != profile_.profile || now.boosts != profile_.boosts;
    if (changed) profile_ = now;
  }
  if (changed) {
    size_t moved = 0;
    for (auto &[id, r] : active_) {
      const std::string &bytes = r.probe.site().insn_bytes();
      InsnPlacement ip = ClassifyInstruction(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size()),
          now.profile);
      if (ip.placement != r.placement) ++moved;
      r.placement = ip.placement;
      r.probe.mutable_site()->set_placement(ToProtoPlacement(ip.placement));
      r.probe.mutable_site()->set_reason(ip.reason);
    }
    kernel_placement_.clear();  // read again below, under the new switch
    mismatch_logged_.clear();
    // The figures were measured under the old profile: a site's class may have changed.
    if (options_.calibrate) calibrate_requested_ = true;
    Log("kernel profile changed to ", ProfileName(now.profile), " (", now.why,
        "): ", active_.size(), " attached probes predicted again, ", moved, " changed placement");
  }
  absl::StatusOr<KernelPlacements> kp = ReadPlacements(options_.placements_path);
  if (!kp.ok()) return;
  for (const auto &[id, r] : active_) {
    std::optional<Placement> kernel = kp->Find(r.device, r.inode, r.probe.site().file_offset());
    if (!kernel) continue;
    kernel_placement_[id] = *kernel;
    if (*kernel != r.placement && mismatch_logged_.insert(id).second) {
      Log("placement mismatch: probe ", id, " ", r.probe.spec().binary_path(), " at 0x",
          absl::Hex(r.probe.site().file_offset()), " (", r.probe.site().disassembly(),
          "): predicted ", PlacementName(r.placement), " under ", ProfileName(Profile().profile),
          ", the kernel placed it ", PlacementName(*kernel));
    }
  }
}

absl::StatusOr<v1::ListResponse> ProbeManager::List(const v1::ListRequest &req) {
  // Page key: {"a", attach number} for active probes, then {"i", inactive number}; numbers
  // never reused, so a probe attached or detached between two pages moves no other one.
  const uint64_t digest = FilterDigest(req);
  absl::StatusOr<PageStart> page = StartPage(req.page_size(), req.page_token(), digest, 2);
  if (!page.ok()) return page.status();
  bool after_active = false;
  uint64_t after_num = 0;
  if (!page->first) {
    const std::string &segment = page->after[0];
    if ((segment != "a" && segment != "i") || !absl::SimpleAtoi(page->after[1], &after_num)) {
      return absl::InvalidArgumentError(
          "malformed page_token: pass the next_page_token of the previous response unchanged");
    }
    after_active = segment == "i";  // past every active probe
  }
  absl::MutexLock l(&mu_);
  RefreshKernelLocked();
  absl::flat_hash_set<std::string> want(req.probe_ids().begin(), req.probe_ids().end());
  v1::ListResponse resp;
  std::vector<std::string> last;
  bool more = false;
  if (!after_active) {
    std::vector<const ProbeRecord *> recs;
    for (const auto &[id, r] : active_) {
      if ((want.empty() || want.contains(id)) && (page->first || r.num > after_num)) {
        recs.push_back(&r);
      }
    }
    std::sort(recs.begin(), recs.end(),
              [](const ProbeRecord *a, const ProbeRecord *b) { return a->num < b->num; });
    for (const ProbeRecord *r : recs) {
      if (static_cast<size_t>(resp.probes_size()) == page->size) {
        more = true;
        break;
      }
      v1::Probe *p = resp.add_probes();
      *p = r->probe;
      FillCountersLocked(*r, p);
      last = {"a", absl::StrCat(r->num)};
    }
  }
  if (req.include_inactive() && !more) {
    const uint64_t first_num = inactive_pushed_ - inactive_.size();
    for (size_t i = 0; i < inactive_.size(); ++i) {
      const uint64_t num = first_num + i;
      const v1::Probe &p = inactive_[i];
      if (after_active && num <= after_num) continue;
      if (!want.empty() && !want.contains(p.id())) continue;
      if (static_cast<size_t>(resp.probes_size()) == page->size) {
        more = true;
        break;
      }
      *resp.add_probes() = p;
      last = {"i", absl::StrCat(num)};
    }
  }
  if (more) resp.set_next_page_token(EncodePageToken(digest, last));
  return resp;
}

absl::StatusOr<v1::ClassifyResponse> ProbeManager::Classify(const v1::ClassifyRequest &req) {
  KernelProfile profile = Profile().profile;
  if (!req.profile().empty()) {
    absl::StatusOr<KernelProfile> p = ParseProfile(req.profile());
    if (!p.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown profile '", req.profile(), "': use one of ", ProfileNames()));
    }
    profile = *p;
  }
  BinaryLocator::Cache located;
  absl::StatusOr<v1::ClassifyResponse> resp =
      ClassifySites(req, profile, [&](const v1::ProbeSpec &spec) {
        absl::StatusOr<LocatedBinary> where = locator_->Open(spec, &located);
        if (!where.ok()) return absl::StatusOr<std::shared_ptr<const OpenFile>>(where.status());
        return absl::StatusOr<std::shared_ptr<const OpenFile>>(where->file);
      });
  malloc_trim(0);  // the ELF files read for it can be large (libgrpc: ~10 MB)
  // The expected cost of a hit on this node: only under the node's own profile (the
  // figures were measured on it).
  if (resp.ok() && profile == Profile().profile) {
    absl::MutexLock l(&mu_);
    for (v1::SitePlacement &site : *resp->mutable_sites()) {
      site.set_expected_ns_per_hit(cost_model_.NsPerHit(site.placement()).value_or(0));
    }
  }
  return resp;
}

absl::StatusOr<v1::NodeInfo> ProbeManager::GetNodeInfo() {
  v1::NodeInfo info;
  info.set_node_name(options_.node_name);
  info.set_kernel_release(kernel_.release);
  info.set_agent_version(options_.agent_version);
  std::string why;
  if (KernelSupportsUprobeMulti(&why)) info.add_features("uprobe_multi");
  info.add_features("bpf_cookie");
  info.add_features("ringbuf");
  if (kernel_.profile.patched) info.add_features("xolfleet_patched");
  info.set_link_mode(program_->link_mode());
  absl::StatusOr<v1::KernelSlotStats> stats = ReadSlotStats(options_.slot_stats_path);
  if (stats.ok()) *info.mutable_slot_stats() = *stats;
  for (const auto &[k, v] : options_.labels) (*info.mutable_labels())[k] = v;
  absl::MutexLock l(&mu_);
  RefreshKernelLocked();
  const KernelProfileChoice prof = Profile();
  info.set_kernel_profile(std::string(ProfileName(prof.profile)));
  info.set_kernel_boosts(prof.boosts);
  info.set_profile_reason(prof.why);
  info.set_probes_attached(active_.size());
  info.set_placement_mismatches(MismatchesLocked());
  *info.mutable_calibration() = calibration_;
  *info.mutable_cost() = NodeCostLocked();
  return info;
}

uint32_t ProbeManager::MismatchesLocked() const {
  uint32_t n = 0;
  for (const auto &[id, p] : kernel_placement_) {
    auto it = active_.find(id);
    if (it != active_.end() && it->second.placement != p) ++n;
  }
  return n;
}

absl::StatusOr<absl::flat_hash_set<uint64_t>> ProbeManager::ProbeNumbers(
    const std::vector<std::string> &ids) const {
  absl::flat_hash_set<uint64_t> out;
  std::vector<std::string> unknown;
  absl::MutexLock l(&mu_);
  for (const std::string &id : ids) {
    auto it = active_.find(id);
    if (it == active_.end()) {
      unknown.push_back(id);
    } else {
      out.insert(it->second.num);
    }
  }
  if (!unknown.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no attached probe with id ", absl::StrJoin(unknown, ", "), " (see List)"));
  }
  return out;
}

uint64_t ProbeManager::KernelDropped(const absl::flat_hash_set<uint64_t> &nums) const {
  if (nums.empty()) return program_->ReadTotals().dropped;
  uint64_t t = 0;
  absl::MutexLock l(&mu_);
  for (const auto &[id, r] : active_) {
    if (!nums.contains(r.num)) continue;
    absl::StatusOr<xol_probe_counters> c = program_->ReadCounters(r.slot);
    if (c.ok()) t += c->dropped;
  }
  return t;
}

std::vector<ProbeCounterSnapshot> ProbeManager::SnapshotCounters() const {
  absl::MutexLock l(&mu_);
  std::vector<ProbeCounterSnapshot> out;
  out.reserve(active_.size());
  for (const auto &[id, r] : active_) {
    ProbeCounterSnapshot s;
    s.id = id;
    s.placement = std::string(PlacementName(r.placement));
    absl::StatusOr<xol_probe_counters> c = program_->ReadCounters(r.slot);
    if (c.ok()) {
      s.hits = c->hits;
      s.emitted = c->emitted;
      s.dropped = c->dropped;
      s.rate_limited = c->rate_limited;
    }
    s.cpu_seconds_per_sec = r.probe.cost().cpu_seconds_per_sec();
    out.push_back(std::move(s));
  }
  return out;
}

std::map<std::pair<std::string, std::string>, size_t> ProbeManager::ProbeCountsByPlacementAndState()
    const {
  std::map<std::pair<std::string, std::string>, size_t> out;
  absl::MutexLock l(&mu_);
  for (const auto &[id, r] : active_) {
    ++out[{std::string(PlacementName(r.placement)), "ATTACHED"}];
  }
  for (const v1::Probe &p : inactive_) {
    ++out[{ShortName(p.site().placement()), ShortName(p.state())}];
  }
  return out;
}

uint64_t ProbeManager::placement_mismatches() const {
  absl::MutexLock l(&mu_);
  return MismatchesLocked();
}

std::map<std::pair<std::string, std::string>, size_t>
ProbeManager::ProbeCountsByPredictedAndKernelPlacement() const {
  std::map<std::pair<std::string, std::string>, size_t> out;
  absl::MutexLock l(&mu_);
  for (const auto &[id, r] : active_) {
    auto kp = kernel_placement_.find(id);
    ++out[{std::string(PlacementName(r.placement)),
           kp == kernel_placement_.end() ? "UNREPORTED" : std::string(PlacementName(kp->second))}];
  }
  return out;
}

xol_probe_counters ProbeManager::Totals() const {
  xol_probe_counters t = program_->ReadTotals();
  absl::MutexLock l(&mu_);
  t.hits -= std::min<uint64_t>(t.hits, calibration_hits_);
  t.emitted -= std::min<uint64_t>(t.emitted, calibration_events_);
  return t;
}

void ProbeManager::CalibrationLoop() {
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(this, &ProbeManager::CalibrationWanted));
      if (stopping_) return;
      calibrate_requested_ = false;
    }
    (void)Calibrate();
  }
}

absl::Status ProbeManager::Calibrate() {
  absl::MutexLock run(&calibrate_mu_);
  CalibrationSlot cs;
  {
    absl::MutexLock l(&mu_);
    std::optional<SlotTable::Grant> g = slots_.Take();
    if (!g) {
      calibration_.set_status("failed: no free probe slot (--max-probes reached)");
      return absl::ResourceExhaustedError("calibration needs a free probe slot");
    }
    cs.slot = g->slot;
    cs.generation = g->generation;
    calibration_.set_status("running");
  }
  const KernelProfile profile = Profile().profile;
  absl::StatusOr<CalibrationResult> r =
      RunCalibration(*program_, cs, profile, options_.calibration);
  absl::MutexLock l(&mu_);
  slots_.Free(cs.slot);
  if (!r.ok()) {
    // Figures measured before stay (they are still this node's best knowledge).
    calibration_.set_status(absl::StrCat("failed: ", r.status().message()));
    Log("calibration failed: ", r.status().message());
    return r.status();
  }
  calibration_hits_ += r->hits;
  calibration_events_ += r->events;
  calibration_ = r->calibration;
  cost_model_ = CostModel(calibration_);
  std::vector<std::string> parts;
  for (const v1::CalibrationFigure &f : calibration_.figures()) {
    parts.push_back(absl::StrCat(ShortName(f.placement()), f.capture() ? "+capture" : "", " ",
                                 absl::SixDigits(f.ns_per_hit() / 1000), " us"));
  }
  Log("calibration (", calibration_.profile(), ", ",
      absl::FormatDuration(FromDurationProto(calibration_.duration())), "): per hit ",
      absl::StrJoin(parts, ", "), "; a captured event ",
      absl::SixDigits(calibration_.capture_ns_per_event() / 1000), " us");
  return absl::OkStatus();
}

v1::Calibration ProbeManager::calibration() const {
  absl::MutexLock l(&mu_);
  return calibration_;
}

v1::Placement ProbeManager::CostPlacementLocked(const ProbeRecord &r) const {
  // The kernel's word when it reports one (patched kernel), else the prediction.
  auto kp = kernel_placement_.find(r.probe.id());
  return ToProtoPlacement(kp != kernel_placement_.end() ? kp->second : r.placement);
}

void ProbeManager::UpdateCosts(absl::Time now) {
  absl::MutexLock l(&mu_);
  const absl::Duration window = options_.budget.window;
  std::vector<ProbeBudgetInput> inputs;
  inputs.reserve(active_.size());
  double total = 0;
  for (auto &[id, r] : active_) {
    absl::StatusOr<xol_probe_counters> c = program_->ReadCounters(r.slot);
    if (!c.ok()) continue;
    r.window.Add(now, c->hits, c->emitted);
    r.window.Trim(window);
    v1::ProbeCost *cost = r.probe.mutable_cost();
    EstimateCost(cost_model_, CostPlacementLocked(r), r.window.HitsPerSec(),
                 r.window.EventsPerSec(), cost);
    if (cost->budget_state() == v1::BUDGET_STATE_UNSPECIFIED)
      cost->set_budget_state(v1::BUDGET_STATE_OK);
    total += cost->cpu_seconds_per_sec();
    inputs.push_back(
        {id, cost->cpu_seconds_per_sec(), r.window.Covers(window), cost->budget_state()});
  }
  node_cpu_ = total;
  // Without figures nothing can be estimated, so no budget can be enforced yet.
  if (cost_model_.empty()) return;
  for (const BudgetDecision &d : DecideBudgets(inputs, options_.budget)) ApplyBudgetLocked(d);
}

void ProbeManager::ApplyBudgetLocked(const BudgetDecision &d) {
  auto it = active_.find(d.id);
  if (it == active_.end()) return;
  ProbeRecord &r = it->second;
  v1::ProbeCost *cost = r.probe.mutable_cost();
  std::string what;
  switch (d.action) {
    case BudgetAction::kAlert:
      what = "alert only (--budget-action=alert)";
      break;
    case BudgetAction::kThrottle: {
      absl::StatusOr<xol_probe_config> cfg = program_->GetConfig(r.slot);
      const uint32_t rate = std::max<uint32_t>(options_.throttle_events_per_sec, 1);
      const uint64_t interval = 1000000000ull / rate;
      if (!cfg.ok()) {
        what = absl::StrCat("throttle failed: ", cfg.status().message());
      } else if (cfg->capture_mask == 0) {
        what = "throttled: counting only, so nothing to lower (its traps still cost the same)";
      } else {
        if (cfg->rate_interval_ns < interval) {
          cfg->rate_interval_ns = interval;
          cfg->rate_burst_ns = 1000000000ull;
          (void)program_->SetConfig(r.slot, *cfg);
        }
        what =
            absl::StrCat("throttled: capture limited to ", rate, " events/s (hits still counted)");
      }
      break;
    }
    case BudgetAction::kDetach:
      what = "detached (final counts kept)";
      break;
  }
  cost->set_budget_state(StateAfter(d.action));
  cost->set_budget_message(absl::StrCat(d.message, ": ", what));
  *cost->mutable_budget_changed_at() = ToTimestamp(absl::Now());
  ++budget_actions_[{std::string(BudgetActionName(d.action)), d.node_scope ? "node" : "probe"}];
  {
    v1::BudgetEvent ev;
    ev.set_probe_id(d.id);
    ev.set_state(cost->budget_state());
    ev.set_message(cost->budget_message());
    ev.set_cpu_seconds_per_sec(cost->cpu_seconds_per_sec());
    ev.set_node_scope(d.node_scope);
    *ev.mutable_at() = cost->budget_changed_at();
    budget_events_.push_back({++budget_seq_, r.num, std::move(ev)});
    while (budget_events_.size() > 1000) budget_events_.pop_front();
  }
  Log("budget: probe ", d.id, " ", r.probe.spec().binary_path(), " at 0x",
      absl::Hex(r.probe.site().file_offset()), ": ", cost->budget_message());
  if (d.action == BudgetAction::kDetach) {
    DetachLocked({d.id}, v1::PROBE_STATE_DETACHED, absl::StrCat("over budget: ", d.message));
  }
}

bool ProbeManager::CalibrationWanted() const { return stopping_ || calibrate_requested_; }

v1::NodeCost ProbeManager::node_cost() const {
  absl::MutexLock l(&mu_);
  return NodeCostLocked();
}

v1::NodeCost ProbeManager::NodeCostLocked() const {
  v1::NodeCost cost;
  cost.set_cpu_seconds_per_sec(node_cpu_);
  cost.set_node_budget(options_.budget.node_budget);
  cost.set_probe_budget(options_.budget.probe_budget);
  cost.set_budget_action(std::string(BudgetActionName(options_.budget.action)));
  *cost.mutable_budget_window() = ToDurationProto(options_.budget.window);
  uint64_t actions = 0;
  for (const auto &[k, n] : budget_actions_) actions += n;
  cost.set_budget_actions(actions);
  return cost;
}

std::map<std::pair<std::string, std::string>, uint64_t> ProbeManager::BudgetActions() const {
  absl::MutexLock l(&mu_);
  return budget_actions_;
}

std::vector<v1::BudgetEvent> ProbeManager::BudgetEventsSince(
    uint64_t *seq, const absl::flat_hash_set<uint64_t> &nums) const {
  absl::MutexLock l(&mu_);
  std::vector<v1::BudgetEvent> out;
  for (const NumberedBudgetEvent &e : budget_events_) {
    if (e.seq <= *seq) continue;
    if (nums.empty() || nums.contains(e.probe_num)) out.push_back(e.event);
  }
  *seq = budget_seq_;
  return out;
}

uint64_t ProbeManager::budget_event_seq() const {
  absl::MutexLock l(&mu_);
  return budget_seq_;
}

std::map<std::string, size_t> ProbeManager::ProbeCountsByBudgetState() const {
  absl::MutexLock l(&mu_);
  std::map<std::string, size_t> out;
  for (const auto &[id, r] : active_) {
    v1::BudgetState st = r.probe.cost().budget_state();
    if (st == v1::BUDGET_STATE_UNSPECIFIED) st = v1::BUDGET_STATE_OK;
    ++out[ShortName(st)];
  }
  return out;
}

absl::StatusOr<v1::AttachResponse> ProbeManager::DryRun(const v1::AttachRequest &req) {
  absl::StatusOr<std::vector<ResolvedSpec>> resolved_or = Resolve(req, nullptr);
  if (!resolved_or.ok()) return resolved_or.status();
  const std::vector<ResolvedSpec> &resolved = *resolved_or;
  std::vector<double> rates(resolved.size(), req.expected_calls_per_sec());
  if (req.has_sample_duration()) {
    if (absl::Status st =
            CheckDuration(req.sample_duration(), "sample_duration", absl::Seconds(10));
        !st.ok()) {
      return st;
    }
    if (FromDurationProto(req.sample_duration()) < absl::Seconds(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sample_duration ", absl::FormatDuration(FromDurationProto(req.sample_duration())),
          " is under the 1s minimum"));
    }
    // A short counting-only sample of the real call rate: the same sites without capture
    // or TTL, attached for sample_duration and detached again.
    const absl::Duration sample_for = FromDurationProto(req.sample_duration());
    v1::AttachRequest sample;
    for (const v1::ProbeSpec &s : req.specs()) {
      v1::ProbeSpec *c = sample.add_specs();
      *c = s;
      c->clear_capture();
      c->set_rate_limit_per_sec(0);
      *c->mutable_ttl() = ToDurationProto(sample_for + absl::Seconds(30));  // should this die
      (*c->mutable_labels())["xolfleet.io/purpose"] = "rate-sample";
    }
    absl::StatusOr<v1::AttachResponse> att = Attach(sample);
    if (!att.ok()) {
      return absl::Status(att.status().code(),
                          absl::StrCat("rate sample: ", att.status().message()));
    }
    const absl::Time start = absl::Now();
    absl::SleepFor(sample_for);
    v1::ListRequest lr;
    v1::DetachRequest dr;
    for (const v1::Probe &p : att->probes()) {
      lr.add_probe_ids(p.id());
      dr.add_probe_ids(p.id());
    }
    absl::StatusOr<v1::ListResponse> listed = List(lr);
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    (void)Detach(dr);
    if (!listed.ok()) return listed.status();
    absl::flat_hash_map<std::string, uint64_t> hits;
    for (const v1::Probe &p : listed->probes()) hits[p.id()] = p.hits();
    for (int i = 0; i < att->probes_size(); ++i) {
      rates[i] = static_cast<double>(hits[att->probes(i).id()]) / elapsed;
    }
  }
  v1::AttachResponse resp;
  resp.set_dry_run(true);
  resp.set_link_mode(program_->link_mode());
  absl::MutexLock l(&mu_);
  double total = 0;
  for (size_t i = 0; i < resolved.size(); ++i) {
    v1::Probe *p = resp.add_probes();
    *p->mutable_spec() = req.specs(i);
    *p->mutable_site() = ToSitePlacement(resolved[i].site);
    const v1::Placement pl = p->site().placement();
    p->mutable_site()->set_expected_ns_per_hit(cost_model_.NsPerHit(pl).value_or(0));
    // Every hit of a capturing probe writes an event unless its rate limit stops it.
    double events = req.specs(i).capture_size() > 0 ? rates[i] : 0;
    if (req.specs(i).rate_limit_per_sec() > 0) {
      events = std::min<double>(events, req.specs(i).rate_limit_per_sec());
    }
    EstimateCost(cost_model_, pl, rates[i], events, p->mutable_cost());
    total += p->cost().cpu_seconds_per_sec();
  }
  resp.set_predicted_cpu_seconds_per_sec(total);
  return resp;
}

size_t ProbeManager::attached_count() const {
  absl::MutexLock l(&mu_);
  return active_.size();
}

size_t ProbeManager::free_slots() const {
  absl::MutexLock l(&mu_);
  return slots_.free_count();
}

size_t ProbeManager::link_count() const {
  absl::MutexLock l(&mu_);
  absl::flat_hash_set<const LinkGroup *> seen;
  size_t n = 0;
  for (const auto &[id, r] : active_) {
    if (r.group && r.group->attachment && seen.insert(r.group.get()).second) {
      n += r.group->attachment->link_count();
    }
  }
  return n;
}

}  // namespace xolfleet
