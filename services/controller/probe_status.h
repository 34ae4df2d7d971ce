// The controller's per-probe status view: one row per (node, fleet probe) that is desired
// on the node or reported by it, built from the node's last reports. ListFleetProbes
// returns these rows; the xolfleet_controller_probes gauge counts them by
// ProbeGaugeLabels. Both read the same rows, so the API and the metrics cannot disagree.
//
// A row's actual state, in order of precedence:
//   node down                  UNKNOWN (the rest of the row still shows the last report)
//   reported by the agent      the agent's state, placement, hits, cost (first local copy)
//   not reported, set FAILED   FAILED with the set's message
//   otherwise                  PENDING
#ifndef XOLFLEET_SERVICES_CONTROLLER_PROBE_STATUS_H_
#define XOLFLEET_SERVICES_CONTROLLER_PROBE_STATUS_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

// A node's last heartbeat looked up by set id and by fleet probe id, without copying the
// reports: the values point into the heartbeat's entries. Build again after replacing the
// heartbeat. An entry changed in place (a delta, heartbeat_delta.h) keeps its address: it
// stays indexed if its key (set id, fleet probe id) is the same, else it is taken out
// before it changes and put back after (Remove*/Add*). A fleet probe id the agent reports
// more than once (local copies, which it cleans up) has all its reports, in the order
// they came.
class HeartbeatIndex {
 public:
  using ProbeReports = absl::InlinedVector<const v1::AgentProbeStatus*, 1>;

  void Build(const v1::AgentHeartbeat& hb);
  void Clear();
  void AddProbe(const v1::AgentProbeStatus& p);
  void RemoveProbe(const v1::AgentProbeStatus& p);
  void AddSet(const v1::AgentSetStatus& s);
  void RemoveSet(const v1::AgentSetStatus& s);
  const v1::AgentSetStatus* Set(absl::string_view set_id) const;
  const ProbeReports* Probe(absl::string_view fleet_probe_id) const;

 private:
  // Keys of their own: an entry overwritten in place keeps its key's string valid.
  absl::flat_hash_map<std::string, const v1::AgentSetStatus*> sets_;
  absl::flat_hash_map<std::string, ProbeReports> probes_;
};

// What one node last told the controller, as the status view needs it. Not owning.
struct NodeReports {
  const std::string& name;
  bool up;
  const std::string& kernel_profile;
  const HeartbeatIndex& reports;
};

// Appends a row for every probe of set `set_id` (its `specs`) that is desired on the node
// or reported by it.
void AppendProbeStatus(const NodeReports& node, const std::string& set_id,
                       const google::protobuf::RepeatedPtrField<v1::ProbeSpec>& specs, bool desired,
                       google::protobuf::RepeatedPtrField<v1::FleetProbeStatus>* rows);

// "UNKNOWN" for PLACEMENT_UNSPECIFIED, else the enum name: the metrics' placement label.
std::string PlacementLabel(v1::Placement p);

// The (placement, state) labels a row is counted under in xolfleet_controller_probes: a
// down node's probes count as UNKNOWN/UNKNOWN.
std::pair<std::string, std::string> ProbeGaugeLabels(const v1::FleetProbeStatus& row, bool node_up);

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_PROBE_STATUS_H_
