// Node selectors (all / names / labels) and validation of every fleet request.
// Validation runs before anything is changed, so a request is applied whole or not at all.
#ifndef XOLFLEET_SERVICES_CONTROLLER_SELECTOR_H_
#define XOLFLEET_SERVICES_CONTROLLER_SELECTOR_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/common/probe_spec.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

// Limits on what a client may ask for (documented in README.md).
inline constexpr int kMaxSpecsPerSet = 1024;
inline constexpr int kMaxSelectorNames = 10000;
inline constexpr size_t kMaxNodeNameBytes = 253;
inline constexpr int kMaxSetIdsPerRequest = 1000;
inline constexpr absl::Duration kMaxCanaryTimeout = absl::Hours(1);
// Spec limits (paths, symbols, labels, TTL) are services/common/probe_spec.h's, shared with
// the agent and xolctl.

// True if `sel` picks the node registered as `node`.
bool Matches(const v1::NodeSelector& sel, const v1::AgentRegister& node);

// INVALID_ARGUMENT unless exactly one of all / node_names / match_labels is set and every
// name and label is well formed.
absl::Status ValidateSelector(const v1::NodeSelector& sel);
absl::Status ValidateNodeName(absl::string_view name);
absl::Status ValidateLabels(const google::protobuf::Map<std::string, std::string>& labels,
                            bool allow_reserved);
absl::Status ValidateSpec(const v1::ProbeSpec& spec, int index);
absl::Status ValidateAttach(const v1::FleetAttachRequest& req);
absl::Status ValidateSetIds(const google::protobuf::RepeatedPtrField<std::string>& ids,
                            bool allow_empty);
absl::Status ValidateRegister(const v1::AgentRegister& reg);

// True if any spec captures registers (needs the attach-capture capability).
bool CapturesRegisters(const v1::FleetAttachRequest& req);

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_SELECTOR_H_
