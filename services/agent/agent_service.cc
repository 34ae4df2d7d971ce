#include "services/agent/agent_service.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "services/common/grpc_status.h"
#include "services/common/open_file.h"
#include "services/common/tls.h"

namespace xolfleet {
namespace {

template <typename T>
grpc::Status Reply(absl::StatusOr<T> r, T* out) {
  if (!r.ok()) return ToGrpcStatus(r.status());
  *out = std::move(*r);
  return grpc::Status::OK;
}

// A local caller that is not root: the kernel's file permissions apply to it.
bool Unprivileged(const Identity& who) { return who.local_peer && who.uid != 0; }

// The real uid of a process, or -1 if it is gone.
int64_t ProcessUid(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string text;
  while (std::getline(in, text)) {
    uint32_t uid = 0;
    absl::string_view line = text;
    if (absl::ConsumePrefix(&line, "Uid:")) {
      absl::string_view v = absl::StripLeadingAsciiWhitespace(line);
      if (absl::SimpleAtoi(v.substr(0, v.find_first_of(" \t")), &uid)) return uid;
    }
  }
  return -1;
}

}  // namespace

absl::StatusOr<Identity> AgentServiceImpl::Authorize(const grpc::ServerContext& ctx,
                                                     Capability need) const {
  Identity who;
  const std::string peer = ctx.peer();
  if (local_ != nullptr && absl::StartsWith(peer, "fd:")) {
    absl::StatusOr<Identity> local = local_->Peer(peer);
    if (!local.ok()) return local.status();
    who = *std::move(local);
  } else {
    who = tls::PeerIdentity(ctx);
  }
  if (absl::Status st = authz_->Check(who, need); !st.ok()) return st;
  return who;
}

namespace {

// A local caller other than root reaches only what the kernel lets it reach: a binary in
// one of its own processes (the agent opens /proc/PID/root for it, which the caller's own
// ptrace rights would allow), not one in another user's process or in a container.
absl::Status CheckWhere(const Identity& who, const v1::ProbeSpec& s, absl::string_view name) {
  if (!Unprivileged(who)) return absl::OkStatus();
  if (!s.container_id().empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        name, ": container_id: uid ", who.uid,
        " may not name a container (its files are reached through another process's root); "
        "root or a certificate identity may"));
  }
  if (s.pid() > 0) {
    const int64_t owner = ProcessUid(s.pid());
    if (owner >= 0 && owner != static_cast<int64_t>(who.uid)) {
      return absl::PermissionDeniedError(
          absl::StrCat(name, ": pid ", s.pid(), " belongs to another user; uid ", who.uid,
                       " may scope probes only to its own processes"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AgentServiceImpl::CheckSpecs(const Identity& who, const v1::AttachRequest& req) const {
  bool capture = false;
  for (int i = 0; i < req.specs_size(); ++i) {
    const v1::ProbeSpec& s = req.specs(i);
    capture |= s.capture_size() > 0;
    for (const auto& [k, v] : s.labels()) {
      if (absl::StartsWith(k, kReservedLabelPrefix)) {
        return AddFieldViolation(
            absl::InvalidArgumentError(
                absl::StrCat("spec[", i, "]: label keys starting with ", kReservedLabelPrefix,
                             " are reserved (the agent and the controller set them)")),
            absl::StrCat("specs[", i, "].labels"), absl::StrCat("label key ", k, " is reserved"));
      }
    }
    if (absl::Status st = CheckWhere(who, s, absl::StrCat("spec[", i, "]")); !st.ok()) return st;
  }
  if (capture) return authz_->Check(who, Capability::kAttachCapture);
  return absl::OkStatus();
}

absl::StatusOr<Identity> AgentServiceImpl::PrepareAttach(const grpc::ServerContext& ctx,
                                                         const v1::AttachRequest& req,
                                                         v1::AttachRequest* owned) const {
  absl::StatusOr<Identity> who = Authorize(ctx, Capability::kAttachCounts);
  if (!who.ok()) return who.status();
  if (absl::Status st = CheckSpecs(*who, req); !st.ok()) return st;
  *owned = req;
  for (v1::ProbeSpec& s : *owned->mutable_specs()) {
    (*s.mutable_labels())[kOwnerLabel] = who->ToString();
  }
  return who;
}

grpc::Status AgentServiceImpl::Attach(grpc::ServerContext* ctx, const v1::AttachRequest* req,
                                      v1::AttachResponse* resp) {
  v1::AttachRequest owned;
  absl::StatusOr<Identity> who = PrepareAttach(*ctx, *req, &owned);
  if (!who.ok()) return ToGrpcStatus(who.status());
  std::optional<ScopedOpenAs> as;
  if (Unprivileged(*who)) as.emplace(who->uid, who->gid, who->groups);
  return Reply(manager_->Attach(owned), resp);
}

// The same path as Attach (authorization included); progress messages are written from
// the manager's callback, which runs before any link of the request is live.
grpc::Status AgentServiceImpl::AttachWithProgress(grpc::ServerContext* ctx,
                                                  const v1::AttachRequest* req,
                                                  grpc::ServerWriter<v1::AttachProgress>* writer) {
  v1::AttachRequest owned;
  absl::StatusOr<Identity> who = PrepareAttach(*ctx, *req, &owned);
  if (!who.ok()) return ToGrpcStatus(who.status());
  absl::StatusOr<v1::AttachResponse> result;
  {
    std::optional<ScopedOpenAs> as;
    if (Unprivileged(*who)) as.emplace(who->uid, who->gid, who->groups);
    // A client that went away does not stop the attach (all or nothing): writes just fail.
    result = manager_->AttachWithProgress(
        owned, [writer](v1::AttachPhase phase, uint32_t done, uint32_t total) {
          v1::AttachProgress p;
          p.set_phase(phase);
          p.set_done(done);
          p.set_total(total);
          (void)writer->Write(p);
        });
  }
  if (!result.ok()) return ToGrpcStatus(result.status());
  v1::AttachProgress last;
  last.set_phase(v1::ATTACH_PHASE_DONE);
  last.set_done(owned.specs_size());
  last.set_total(owned.specs_size());
  *last.mutable_result() = *std::move(result);
  writer->Write(last);
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::Detach(grpc::ServerContext* ctx, const v1::DetachRequest* req,
                                      v1::DetachResponse* resp) {
  absl::StatusOr<Identity> who = Authorize(*ctx, Capability::kAttachCounts);
  if (!who.ok()) return ToGrpcStatus(who.status());
  if (authz_->Has(*who, Capability::kAdmin)) return Reply(manager_->Detach(*req), resp);
  // Not an admin: only the caller's own probes.
  absl::StatusOr<v1::ListResponse> active = ListAll(*manager_, v1::ListRequest());
  if (!active.ok()) return ToGrpcStatus(active.status());
  const std::string me = who->ToString();
  absl::flat_hash_map<std::string, std::string> owner_of;
  for (const v1::Probe& p : active->probes()) {
    auto it = p.spec().labels().find(kOwnerLabel);
    owner_of[p.id()] = it == p.spec().labels().end() ? "the controller" : it->second;
  }
  v1::DetachRequest mine;
  if (req->all()) {
    for (const auto& [id, owner] : owner_of) {
      if (owner == me) mine.add_probe_ids(id);
    }
    if (mine.probe_ids_size() == 0) return grpc::Status::OK;
  } else {
    for (const std::string& id : req->probe_ids()) {
      auto it = owner_of.find(id);
      if (it != owner_of.end() && it->second != me) {
        return ToGrpcStatus(absl::PermissionDeniedError(
            absl::StrCat("probe ", Truncated(id), " belongs to ", it->second, ", not to ", me,
                         "; detaching other callers' probes needs the admin capability")));
      }
      mine.add_probe_ids(id);
    }
  }
  return Reply(manager_->Detach(mine), resp);
}

grpc::Status AgentServiceImpl::List(grpc::ServerContext* ctx, const v1::ListRequest* req,
                                    v1::ListResponse* resp) {
  absl::StatusOr<Identity> who = Authorize(*ctx, Capability::kReadOnly);
  if (!who.ok()) return ToGrpcStatus(who.status());
  return Reply(manager_->List(*req), resp);
}

grpc::Status AgentServiceImpl::Classify(grpc::ServerContext* ctx, const v1::ClassifyRequest* req,
                                        v1::ClassifyResponse* resp) {
  absl::StatusOr<Identity> who = Authorize(*ctx, Capability::kReadOnly);
  if (!who.ok()) return ToGrpcStatus(who.status());
  for (int i = 0; i < req->sites_size(); ++i) {
    if (absl::Status st = CheckWhere(*who, req->sites(i), absl::StrCat("sites[", i, "]"));
        !st.ok()) {
      return ToGrpcStatus(st);
    }
  }
  std::optional<ScopedOpenAs> as;
  if (Unprivileged(*who)) as.emplace(who->uid, who->gid, who->groups);
  return Reply(manager_->Classify(*req), resp);
}

grpc::Status AgentServiceImpl::GetNodeInfo(grpc::ServerContext* ctx,
                                           const v1::GetNodeInfoRequest* req, v1::NodeInfo* resp) {
  // Recalibrating places probes (on the agent's own helper) and spends about a second of
  // CPU: it needs the capability to attach.
  absl::StatusOr<Identity> who =
      Authorize(*ctx, req->recalibrate() ? Capability::kAttachCounts : Capability::kReadOnly);
  if (!who.ok()) return ToGrpcStatus(who.status());
  if (req->recalibrate()) (void)manager_->Calibrate();  // a failure shows in the status
  return Reply(manager_->GetNodeInfo(), resp);
}

// Streams hit events in batches. Flow control: Write() blocks while the
// client's HTTP/2 window is full; meanwhile the ring-buffer reader keeps
// filling this stream's bounded queue and counts what does not fit. Every batch
// carries dropped_total: events lost by this stream's queue plus events the
// kernel could not put in the ring buffer (for the watched probes) since the
// stream started, so a client can account for every event.
PerKeyLimiter::Options AgentServiceImpl::WatchLimits(const Options& options) {
  PerKeyLimiter::Options o;
  o.per_key = options.max_watch_streams_per_identity;
  o.what = "WatchHits streams";
  o.holder = "caller";
  o.per_key_flag = "--max-watch-streams-per-identity";
  o.advice = "close one of them (xolctl watch), or ask the operator to raise the flag";
  return o;
}

grpc::Status AgentServiceImpl::WatchHits(grpc::ServerContext* ctx, const v1::WatchHitsRequest* req,
                                         grpc::ServerWriter<v1::HitBatch>* writer) {
  absl::StatusOr<Identity> who = Authorize(*ctx, Capability::kReadOnly);
  if (!who.ok()) return ToGrpcStatus(who.status());
  // Register values are what the capture capability protects.
  const bool with_regs = authz_->Has(*who, Capability::kAttachCapture);
  // One caller cannot take every stream (the lease is given back when the stream ends).
  absl::StatusOr<PerKeyLimiter::Lease> lease = watch_streams_.Acquire(who->ToString());
  if (!lease.ok()) return ToGrpcStatus(lease.status());
  std::vector<std::string> ids(req->probe_ids().begin(), req->probe_ids().end());
  absl::StatusOr<absl::flat_hash_set<uint64_t>> nums = manager_->ProbeNumbers(ids);
  if (!nums.ok()) return ToGrpcStatus(nums.status());
  size_t max_batch = req->max_batch() ? req->max_batch() : options_.default_max_batch;
  max_batch = std::min<size_t>(max_batch, options_.max_batch_limit);

  const uint64_t kernel_dropped_base = manager_->KernelDropped(*nums);
  absl::StatusOr<std::shared_ptr<Watcher>> added =
      hub_->AddWatcher(*nums, options_.watch_queue_events);
  if (!added.ok()) return ToGrpcStatus(added.status());
  std::shared_ptr<Watcher> w = std::move(*added);
  // Tells the client the stream is registered (it may wait for this before
  // producing the hits it wants to see).
  writer->SendInitialMetadata();
  uint64_t kernel_dropped = 0, last_sent_dropped = 0;
  uint64_t budget_seq = manager_->budget_event_seq();
  absl::Time next_kernel_read = absl::InfinitePast();
  std::vector<RoutedHit> hits;
  hits.reserve(max_batch);
  // One HitBatch, cleared and refilled for every write: a cleared repeated field keeps its
  // HitEvents, their strings and registers, so a batch like the one before costs no
  // allocation at all. (An arena reset after every write still allocated each event and
  // register and ran a destructor for every probe id string; before the arena, every
  // event was three heap allocations and frees.) Probe ids are formatted once per probe.
  // A stream that goes quiet gives that memory back (up to max_batch events of it).
  v1::HitBatch reused;
  bool reused_holds_events = false;
  absl::flat_hash_map<uint64_t, std::string> probe_ids;
  grpc::Status result = grpc::Status::OK;
  while (!ctx->IsCancelled() && !shutting_down_) {
    hits.clear();
    w->Take(&hits, max_batch, absl::Milliseconds(200));
    absl::Time now = absl::Now();
    if (now >= next_kernel_read) {
      kernel_dropped = manager_->KernelDropped(*nums) - kernel_dropped_base;
      next_kernel_read = now + absl::Milliseconds(250);
    }
    uint64_t dropped = w->dropped() + kernel_dropped;
    std::vector<v1::BudgetEvent> budget = manager_->BudgetEventsSince(&budget_seq, *nums);
    if (hits.empty() && reused_holds_events) {
      reused = v1::HitBatch();
      reused_holds_events = false;
    }
    if (hits.empty() && dropped == last_sent_dropped && budget.empty()) continue;
    v1::HitBatch* batch = &reused;
    batch->Clear();
    reused_holds_events |= !hits.empty();
    for (v1::BudgetEvent& b : budget) *batch->add_budget_events() = std::move(b);
    batch->mutable_events()->Reserve(hits.size());
    for (const RoutedHit& h : hits) {
      v1::HitEvent* e = batch->add_events();
      auto id = probe_ids.find(h.probe_num);
      if (id == probe_ids.end()) {
        if (probe_ids.size() >= 4096) probe_ids.clear();  // many probes: stay bounded
        id = probe_ids.emplace(h.probe_num, absl::StrCat("p", h.probe_num)).first;
      }
      e->set_probe_id(id->second);
      e->set_pid(h.event.pid);
      e->set_tid(h.event.tid);
      e->set_cpu(h.event.cpu);
      e->set_ktime_ns(h.event.ktime_ns);
      for (int i = 0; with_regs && i < XOL_NUM_REGS; ++i) {
        if (h.event.capture_mask & (1u << i)) {
          v1::RegisterValue* r = e->add_regs();
          r->set_reg(static_cast<v1::Register>(i + 1));
          r->set_value(h.event.regs[xol_reg_slot(i)]);
        }
      }
    }
    batch->set_dropped_total(dropped);
    last_sent_dropped = dropped;
    if (!writer->Write(*batch)) break;  // client went away
  }
  hub_->RemoveWatcher(w);
  return result;
}

}  // namespace xolfleet
