#include "services/controller/probe_status.h"

#include <algorithm>

#include "services/common/enum_names.h"
#include "services/common/probe_spec.h"

namespace xolfleet::controller {

void HeartbeatIndex::Build(const v1::AgentHeartbeat& hb) {
  Clear();
  sets_.reserve(hb.sets_size());
  for (const auto& st : hb.sets()) sets_[st.set_id()] = &st;  // the last one counts
  probes_.reserve(hb.probes_size());
  for (const auto& p : hb.probes()) probes_[p.fleet_probe_id()].push_back(&p);
}

void HeartbeatIndex::Clear() {
  sets_.clear();
  probes_.clear();
}

void HeartbeatIndex::AddProbe(const v1::AgentProbeStatus& p) {
  probes_[p.fleet_probe_id()].push_back(&p);
}

void HeartbeatIndex::RemoveProbe(const v1::AgentProbeStatus& p) {
  auto it = probes_.find(p.fleet_probe_id());
  if (it == probes_.end()) return;
  ProbeReports& r = it->second;
  r.erase(std::remove(r.begin(), r.end(), &p), r.end());
  if (r.empty()) probes_.erase(it);
}

void HeartbeatIndex::AddSet(const v1::AgentSetStatus& s) { sets_[s.set_id()] = &s; }

void HeartbeatIndex::RemoveSet(const v1::AgentSetStatus& s) {
  auto it = sets_.find(s.set_id());
  if (it != sets_.end() && it->second == &s) sets_.erase(it);
}

const v1::AgentSetStatus* HeartbeatIndex::Set(absl::string_view set_id) const {
  auto it = sets_.find(set_id);
  return it == sets_.end() ? nullptr : it->second;
}

const HeartbeatIndex::ProbeReports* HeartbeatIndex::Probe(absl::string_view fleet_probe_id) const {
  auto it = probes_.find(fleet_probe_id);
  return it == probes_.end() ? nullptr : &it->second;
}

void AppendProbeStatus(const NodeReports& node, const std::string& set_id,
                       const google::protobuf::RepeatedPtrField<v1::ProbeSpec>& specs, bool desired,
                       google::protobuf::RepeatedPtrField<v1::FleetProbeStatus>* rows) {
  const v1::AgentSetStatus* set = node.reports.Set(set_id);
  for (int i = 0; i < specs.size(); ++i) {
    std::string fid = FleetProbeId(set_id, i);
    const HeartbeatIndex::ProbeReports* reports = node.reports.Probe(fid);
    bool present = reports != nullptr && !reports->empty();
    if (!desired && !present) continue;
    v1::FleetProbeStatus st;
    st.set_node_name(node.name);
    st.set_set_id(set_id);
    st.set_fleet_probe_id(fid);
    *st.mutable_spec() = specs.Get(i);
    st.set_desired(desired);
    st.set_kernel_profile(node.kernel_profile);
    if (present) {
      const v1::AgentProbeStatus& p = *reports->front();
      st.set_local_copies(reports->size());
      st.set_local_probe_id(p.local_probe_id());
      st.set_placement(p.placement());
      st.set_predicted_placement(p.predicted_placement());
      st.set_kernel_placement(p.kernel_placement());
      st.set_hits(p.hits());
      st.set_actual(p.state());
      st.set_status_message(p.status_message());
      *st.mutable_cost() = p.cost();
    } else if (set != nullptr && set->state() == v1::SET_STATE_FAILED) {
      st.set_actual(v1::PROBE_STATE_FAILED);
      st.set_status_message(set->status_message());
    } else {
      st.set_actual(v1::PROBE_STATE_PENDING);
    }
    if (!node.up) st.set_actual(v1::PROBE_STATE_UNKNOWN);
    *rows->Add() = std::move(st);
  }
}

std::string PlacementLabel(v1::Placement p) {
  return p == v1::PLACEMENT_UNSPECIFIED ? "UNKNOWN" : ShortName(p);
}

std::pair<std::string, std::string> ProbeGaugeLabels(const v1::FleetProbeStatus& row,
                                                     bool node_up) {
  // A row not reported by the agent has no placement: PlacementLabel gives UNKNOWN.
  if (!node_up) return {"UNKNOWN", "UNKNOWN"};
  return {PlacementLabel(row.placement()), ShortName(row.actual())};
}

}  // namespace xolfleet::controller
