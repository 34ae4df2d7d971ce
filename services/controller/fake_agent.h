// Test doubles for the controller's side of the agent link (fleet_test, replica_test): a
// session that records what the controller sends, and the heartbeat of an agent running
// everything it was told to.
#ifndef XOLFLEET_SERVICES_CONTROLLER_FAKE_AGENT_H_
#define XOLFLEET_SERVICES_CONTROLLER_FAKE_AGENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "services/controller/fleet.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

class FakeSession : public AgentSession {
 public:
  void Send(const v1::ControllerMessage& m) override {
    absl::MutexLock l(&mu);
    if (m.has_desired()) last_desired = m.desired();
    ++sent;
  }
  void Close() override {
    absl::MutexLock l(&mu);
    closed = true;
  }
  v1::DesiredState Desired() {
    absl::MutexLock l(&mu);
    return last_desired;
  }
  std::vector<std::string> DesiredIds() {
    absl::MutexLock l(&mu);
    std::vector<std::string> ids;
    for (const auto& s : last_desired.sets()) ids.push_back(s.set_id());
    return ids;
  }
  absl::Mutex mu;
  v1::DesiredState last_desired;
  int sent = 0;
  bool closed = false;
};

// The full heartbeat of an agent running every set of `desired` attached, one probe per spec
// ("<set>/<i>", local id "<set>-<i>", EMULATED) with `hits` each.
inline v1::AgentHeartbeat AttachedHeartbeat(const v1::DesiredState& desired, uint64_t hits = 0) {
  v1::AgentHeartbeat hb;
  for (const auto& ds : desired.sets()) {
    auto* st = hb.add_sets();
    st->set_set_id(ds.set_id());
    st->set_state(v1::SET_STATE_ATTACHED);
    for (int i = 0; i < ds.specs_size(); ++i) {
      auto* p = hb.add_probes();
      p->set_fleet_probe_id(absl::StrCat(ds.set_id(), "/", i));
      p->set_set_id(ds.set_id());
      p->set_local_probe_id(absl::StrCat(ds.set_id(), "-", i));
      p->set_state(v1::PROBE_STATE_ATTACHED);
      p->set_placement(v1::PLACEMENT_EMULATED);
      p->set_hits(hits);
    }
  }
  return hb;
}

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_FAKE_AGENT_H_
