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

void HeartbeatDeltaEncoder::Encode(v1::AgentHeartbeat* hb) {
  std::map<std::string, std::string> probes, sets;
  bool usable = true;  // distinct, non-empty local ids
  for (const auto& p : hb->probes()) {
    if (p.local_probe_id().empty() || !probes.emplace(p.local_probe_id(), Bytes(p)).second) {
      usable = false;
    }
  }
  for (const auto& s : hb->sets()) {
    if (!sets.emplace(s.set_id(), Bytes(s)).second) usable = false;
  }
  if (have_base_ && usable) {
    google::protobuf::RepeatedPtrField<v1::AgentProbeStatus> changed_probes;
    for (auto& p : *hb->mutable_probes()) {
      auto it = probes_.find(p.local_probe_id());
      if (it == probes_.end() || it->second != probes[p.local_probe_id()]) {
        *changed_probes.Add() = std::move(p);
      }
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
  }
  have_base_ = usable;
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

absl::StatusOr<v1::AgentHeartbeat> HeartbeatDeltaDecoder::Apply(v1::AgentHeartbeat hb) {
  if (!hb.delta()) {
    if (auto s = Check(&hb); !s.ok()) return s;
    probes_.clear();
    sets_.clear();
    have_base_ = true;
    for (const auto& p : hb.probes()) {
      if (p.local_probe_id().empty() || !probes_.emplace(p.local_probe_id(), p).second) {
        have_base_ = false;  // cannot be a base; the agent sends full heartbeats then
      }
    }
    for (const auto& s : hb.sets()) sets_[s.set_id()] = s;
    hb.clear_removed_local_probe_ids();
    hb.clear_removed_set_ids();
    return hb;
  }
  if (!have_base_) {
    return absl::FailedPreconditionError("a delta heartbeat without a full one before it");
  }
  if (static_cast<size_t>(hb.removed_local_probe_ids_size() + hb.removed_set_ids_size()) >
      limits_.max_probes + limits_.max_sets) {
    return absl::InvalidArgumentError("heartbeat too large: too many removals");
  }
  if (auto s = Check(&hb); !s.ok()) return s;
  for (const auto& id : hb.removed_local_probe_ids()) probes_.erase(id);
  for (const auto& id : hb.removed_set_ids()) sets_.erase(id);
  for (auto& p : *hb.mutable_probes()) {
    std::string id = p.local_probe_id();
    probes_[id] = std::move(p);
  }
  for (auto& s : *hb.mutable_sets()) {
    std::string id = s.set_id();
    sets_[id] = std::move(s);
  }
  if (probes_.size() > limits_.max_probes || sets_.size() > limits_.max_sets) {
    have_base_ = false;
    return absl::InvalidArgumentError(
        absl::StrCat("heartbeat too large after applying the delta: ", probes_.size(), " probes, ",
                     sets_.size(), " sets"));
  }
  hb.clear_probes();
  hb.clear_sets();
  hb.clear_removed_local_probe_ids();
  hb.clear_removed_set_ids();
  hb.set_delta(false);
  hb.mutable_probes()->Reserve(static_cast<int>(probes_.size()));
  for (const auto& [id, p] : probes_) *hb.add_probes() = p;
  for (const auto& [id, s] : sets_) *hb.add_sets() = s;
  return hb;
}

}  // namespace xolfleet
