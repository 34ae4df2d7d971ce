#include "services/controller/probe_status.h"

#include "services/common/enum_names.h"
#include "services/common/probe_spec.h"

namespace xolfleet::controller {

void AppendProbeStatus(const NodeReports& node, const std::string& set_id,
                       const google::protobuf::RepeatedPtrField<v1::ProbeSpec>& specs, bool desired,
                       google::protobuf::RepeatedPtrField<v1::FleetProbeStatus>* rows) {
  auto sit = node.set_status.find(set_id);
  for (int i = 0; i < specs.size(); ++i) {
    std::string fid = FleetProbeId(set_id, i);
    auto pit = node.probes.find(fid);
    bool present = pit != node.probes.end() && !pit->second.empty();
    if (!desired && !present) continue;
    v1::FleetProbeStatus st;
    st.set_node_name(node.name);
    st.set_set_id(set_id);
    st.set_fleet_probe_id(fid);
    *st.mutable_spec() = specs.Get(i);
    st.set_desired(desired);
    st.set_kernel_profile(node.kernel_profile);
    if (present) {
      const auto& p = pit->second.front();
      st.set_local_copies(pit->second.size());
      st.set_local_probe_id(p.local_probe_id());
      st.set_placement(p.placement());
      st.set_predicted_placement(p.predicted_placement());
      st.set_kernel_placement(p.kernel_placement());
      st.set_hits(p.hits());
      st.set_actual(p.state());
      st.set_status_message(p.status_message());
      *st.mutable_cost() = p.cost();
    } else if (sit != node.set_status.end() && sit->second.state() == v1::SET_STATE_FAILED) {
      st.set_actual(v1::PROBE_STATE_FAILED);
      st.set_status_message(sit->second.status_message());
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
