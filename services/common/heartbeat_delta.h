// Delta heartbeats on the agent link (issue 13).
//
// An agent heartbeats every interval with the status of every fleet probe and set it
// runs; most of it does not change from one heartbeat to the next. With a controller
// that accepts them (Registered.accepts_delta_heartbeats), the agent sends only what
// changed: a probe whose status differs in any field (hits included) or is new, a set
// likewise, and the local probe ids and set ids gone since the previous heartbeat on the
// stream. Every other heartbeat field is sent complete, so the controller's view of the
// node is rebuilt exactly.
//
// Rules that keep the two sides in step:
//   - the first heartbeat on a stream is full (the encoder is new or Reset());
//   - a controller that gets a delta it cannot apply (no full heartbeat before it on this
//     stream) asks for a full one (ControllerMessage.full_heartbeat) and drops the delta;
//   - a full heartbeat whose probes do not have distinct, non-empty local ids cannot be a
//     base: the encoder sends full heartbeats while that lasts.
//
// The decoder also bounds what an agent can make the controller keep: probes and sets
// per heartbeat (after applying a delta), the length of ids (refused) and of status
// messages (cut at a UTF-8 boundary).
#ifndef XOLFLEET_SERVICES_COMMON_HEARTBEAT_DELTA_H_
#define XOLFLEET_SERVICES_COMMON_HEARTBEAT_DELTA_H_

#include <cstddef>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet {

// Agent side.
class HeartbeatDeltaEncoder {
 public:
  // `hb` is a full heartbeat. Unless the next one must be full, replaces its probes and
  // sets by the changes since the previous call and sets `delta`. Remembers `hb` as the
  // base for the next call either way.
  void Encode(v1::AgentHeartbeat* hb);
  // The next heartbeat is sent full (a new stream, or the controller asked).
  void Reset() { have_base_ = false; }

 private:
  bool have_base_ = false;
  std::map<std::string, std::string> probes_;  // local probe id -> serialized status
  std::map<std::string, std::string> sets_;    // set id -> serialized status
};

// Controller side: one per stream.
class HeartbeatDeltaDecoder {
 public:
  struct Limits {
    size_t max_probes = 100000;
    size_t max_sets = 20000;
    size_t max_id_bytes = 512;        // fleet probe, local probe and set ids
    size_t max_message_bytes = 1024;  // status messages beyond are cut
  };
  HeartbeatDeltaDecoder() = default;
  explicit HeartbeatDeltaDecoder(Limits limits) : limits_(limits) {}

  // Returns the full heartbeat `hb` stands for. FAILED_PRECONDITION: a delta without a
  // base (ask the agent for a full heartbeat); INVALID_ARGUMENT: over the limits.
  absl::StatusOr<v1::AgentHeartbeat> Apply(v1::AgentHeartbeat hb);

 private:
  absl::Status Check(v1::AgentHeartbeat* hb) const;

  const Limits limits_;
  bool have_base_ = false;
  std::map<std::string, v1::AgentProbeStatus> probes_;  // by local probe id
  std::map<std::string, v1::AgentSetStatus> sets_;      // by set id
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_HEARTBEAT_DELTA_H_
