#include "services/common/heartbeat_delta.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace xolfleet {
namespace {

// The messages compared have no map fields, so equal content serializes to equal bytes.
std::string Bytes(const google::protobuf::Message& m) { return m.SerializeAsString(); }

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence (proto3 strings must
// stay valid UTF-8).
void Cut(std::string* s, size_t max) {
  if (s->size() <= max) return;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>((*s)[n]) & 0xC0) == 0x80) --n;
  s->resize(n);
}

}  // namespace

void HeartbeatDeltaEncoder::Encode(v1::AgentHeartbeat* hb, Kind kind) {
  std::map<std::string, Sent> probes;
  std::map<std::string, std::string> sets;
  bool usable = true;  // distinct, non-empty local ids and distinct set ids
  for (auto& p : *hb->mutable_probes()) {
    Sent sent;
    sent.hits = p.hits();
    p.clear_hits();
    sent.bytes = Bytes(p);
    p.set_hits(sent.hits);
    if (p.local_probe_id().empty() || !probes.emplace(p.local_probe_id(), std::move(sent)).second) {
      usable = false;
    }
  }
  for (const auto& s : hb->sets()) {
    if (!sets.emplace(s.set_id(), Bytes(s)).second) usable = false;
  }
  if (!have_base_ || !usable) {
    have_base_ = usable;
    probes_ = std::move(probes);
    sets_ = std::move(sets);
    return;
  }
  const bool state_only = kind == Kind::kStateChange;
  google::protobuf::RepeatedPtrField<v1::AgentProbeStatus> changed_probes;
  for (auto& p : *hb->mutable_probes()) {
    auto it = probes_.find(p.local_probe_id());
    Sent& now = probes[p.local_probe_id()];
    if (it != probes_.end() && it->second.bytes == now.bytes &&
        (state_only || it->second.hits == now.hits)) {
      // Not sent: the base keeps what the controller has (with kStateChange, the old hits).
      now.hits = it->second.hits;
      continue;
    }
    *changed_probes.Add() = std::move(p);
  }
  google::protobuf::RepeatedPtrField<v1::AgentSetStatus> changed_sets;
  for (auto& s : *hb->mutable_sets()) {
    auto it = sets_.find(s.set_id());
    if (it == sets_.end() || it->second != sets[s.set_id()]) *changed_sets.Add() = std::move(s);
  }
  hb->mutable_probes()->Swap(&changed_probes);
  hb->mutable_sets()->Swap(&changed_sets);
  for (const auto& [id, _] : probes_) {
    if (!probes.count(id)) hb->add_removed_local_probe_ids(id);
  }
  for (const auto& [id, _] : sets_) {
    if (!sets.count(id)) hb->add_removed_set_ids(id);
  }
  hb->set_delta(true);
  hb->set_state_change(state_only);
  probes_ = std::move(probes);
  sets_ = std::move(sets);
}

absl::Status HeartbeatDeltaDecoder::Check(v1::AgentHeartbeat* hb) const {
  if (static_cast<size_t>(hb->probes_size()) > limits_.max_probes ||
      static_cast<size_t>(hb->sets_size()) > limits_.max_sets) {
    return absl::InvalidArgumentError(
        absl::StrCat("heartbeat too large: ", hb->probes_size(), " probes, ", hb->sets_size(),
                     " sets (limits ", limits_.max_probes, ", ", limits_.max_sets, ")"));
  }
  auto id_ok = [this](const std::string& id) { return id.size() <= limits_.max_id_bytes; };
  for (auto& p : *hb->mutable_probes()) {
    if (!id_ok(p.fleet_probe_id()) || !id_ok(p.set_id()) || !id_ok(p.local_probe_id())) {
      return absl::InvalidArgumentError(
          absl::StrCat("heartbeat: a probe id is longer than ", limits_.max_id_bytes, " bytes"));
    }
    Cut(p.mutable_status_message(), limits_.max_message_bytes);
    if (p.has_cost()) Cut(p.mutable_cost()->mutable_budget_message(), limits_.max_message_bytes);
  }
  for (auto& s : *hb->mutable_sets()) {
    if (!id_ok(s.set_id())) {
      return absl::InvalidArgumentError(
          absl::StrCat("heartbeat: a set id is longer than ", limits_.max_id_bytes, " bytes"));
    }
    Cut(s.mutable_status_message(), limits_.max_message_bytes);
  }
  return absl::OkStatus();
}

void HeartbeatDeltaDecoder::RemoveProbe(const std::string& local_id, Observer* observer) {
  auto it = probes_.find(local_id);
  if (it == probes_.end()) return;
  auto* probes = view_.mutable_probes();
  const int i = it->second, last = probes->size() - 1;
  if (observer) observer->ProbeLeaving(probes->Get(i), /*incoming=*/nullptr);
  probes_.erase(it);
  if (i != last) {
    probes->SwapElements(i, last);  // swaps pointers: no entry moves in memory
    probes_[probes->Get(i).local_probe_id()] = i;
  }
  probes->RemoveLast();
}

void HeartbeatDeltaDecoder::RemoveSet(const std::string& set_id, Observer* observer) {
  auto it = sets_.find(set_id);
  if (it == sets_.end()) return;
  auto* sets = view_.mutable_sets();
  const int i = it->second, last = sets->size() - 1;
  if (observer) observer->SetLeaving(sets->Get(i), /*gone=*/true);
  sets_.erase(it);
  if (i != last) {
    sets->SwapElements(i, last);
    sets_[sets->Get(i).set_id()] = i;
  }
  sets->RemoveLast();
}

absl::StatusOr<HeartbeatDeltaDecoder::Applied> HeartbeatDeltaDecoder::Apply(v1::AgentHeartbeat hb,
                                                                            Observer* observer) {
  if (!hb.delta()) {
    if (auto s = Check(&hb); !s.ok()) return s;
    hb.clear_removed_local_probe_ids();
    hb.clear_removed_set_ids();
    hb.clear_state_change();
    view_.Swap(&hb);  // same arena (none): the entries themselves do not move
    probes_.clear();
    sets_.clear();
    have_base_ = true;
    probes_.reserve(view_.probes_size());
    for (int i = 0; i < view_.probes_size(); ++i) {
      const std::string& id = view_.probes(i).local_probe_id();
      if (id.empty() || !probes_.emplace(id, i).second) {
        have_base_ = false;  // cannot be a base; the agent sends full heartbeats then
      }
    }
    sets_.reserve(view_.sets_size());
    for (int i = 0; i < view_.sets_size(); ++i) {
      if (!sets_.emplace(view_.sets(i).set_id(), i).second) have_base_ = false;
    }
    return Applied::kReplaced;
  }
  if (!have_base_) {
    return absl::FailedPreconditionError("a delta heartbeat without a full one before it");
  }
  if (static_cast<size_t>(hb.removed_local_probe_ids_size() + hb.removed_set_ids_size()) >
      limits_.max_probes + limits_.max_sets) {
    return absl::InvalidArgumentError("heartbeat too large: too many removals");
  }
  if (auto s = Check(&hb); !s.ok()) return s;
  for (const auto& id : hb.removed_local_probe_ids()) RemoveProbe(id, observer);
  for (const auto& id : hb.removed_set_ids()) RemoveSet(id, observer);
  google::protobuf::RepeatedPtrField<v1::AgentProbeStatus> probes;
  google::protobuf::RepeatedPtrField<v1::AgentSetStatus> sets;
  probes.Swap(hb.mutable_probes());
  sets.Swap(hb.mutable_sets());
  // Every other field is complete: it replaces the view's, whose entries stay put.
  hb.clear_removed_local_probe_ids();
  hb.clear_removed_set_ids();
  hb.clear_delta();
  hb.clear_state_change();
  hb.mutable_probes()->Swap(view_.mutable_probes());
  hb.mutable_sets()->Swap(view_.mutable_sets());
  view_.Swap(&hb);
  for (auto& p : probes) {
    auto [it, added] = probes_.try_emplace(p.local_probe_id(), view_.probes_size());
    if (added) {
      v1::AgentProbeStatus* now = view_.add_probes();
      now->Swap(&p);
      if (observer) observer->ProbeEntered(*now);
      continue;
    }
    v1::AgentProbeStatus* now = view_.mutable_probes(it->second);
    if (observer) observer->ProbeLeaving(*now, &p);
    now->Swap(&p);
    if (observer) observer->ProbeEntered(*now);
  }
  for (auto& s : sets) {
    auto [it, added] = sets_.try_emplace(s.set_id(), view_.sets_size());
    v1::AgentSetStatus* now = added ? view_.add_sets() : view_.mutable_sets(it->second);
    if (!added && observer) observer->SetLeaving(*now, /*gone=*/false);
    now->Swap(&s);
    if (observer) observer->SetEntered(*now, added);
  }
  if (probes_.size() > limits_.max_probes || sets_.size() > limits_.max_sets) {
    have_base_ = false;
    return absl::InvalidArgumentError(
        absl::StrCat("heartbeat too large after applying the delta: ", probes_.size(), " probes, ",
                     sets_.size(), " sets"));
  }
  return Applied::kChanged;
}

}  // namespace xolfleet
