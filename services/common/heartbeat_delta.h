// Delta heartbeats on the agent link (issue 13).
//
// An agent heartbeats every interval with the status of every fleet probe and set it runs; most of
// it does not change from one heartbeat to the next. With a controller that accepts them
// (Registered.accepts_delta_heartbeats), the agent sends only what changed: a probe whose status
// differs in any field (hits included) or is new, a set likewise, and the local probe ids and set
// ids gone since the previous heartbeat on the stream. Every other heartbeat field is sent
// complete, so the controller's view of the node is kept exactly.
//
// Two kinds of delta. The periodic heartbeat carries every change, hits included. The
// heartbeat right after a reconcile of a new desired state (AgentHeartbeat.state_change)
// carries only state changes: a probe whose hit total alone moved stays out and the
// encoder keeps its previous hits as the base, so the next periodic heartbeat sends it
// (no hit is lost or counted twice, hits lag by at most one interval). A push to every
// agent then costs the controller what changed (the new set), not every probe's hits.
//
// The controller's decoder keeps the node's view in place: a delta replaces, adds and
// removes only the entries it names (an Observer is told of each, to keep indexes into
// the view), so applying it costs what it carries; nothing is rebuilt or copied.
//
// Rules that keep the two sides in step:
//   - the first heartbeat on a stream is full (the encoder is new or Reset());
//   - a controller that gets a delta it cannot apply (no full heartbeat before it on this
//     stream) asks for a full one (ControllerMessage.full_heartbeat) and drops the delta;
//   - a full heartbeat whose probes do not have distinct, non-empty local ids (or whose sets do not
//     have distinct ids) cannot be a base: the encoder sends full heartbeats while that lasts.
//
// The decoder also bounds what an agent can make the controller keep: probes and sets
// per heartbeat (after applying a delta), the length of ids (refused) and of status
// messages (cut at a UTF-8 boundary).
#ifndef XOLFLEET_SERVICES_COMMON_HEARTBEAT_DELTA_H_
#define XOLFLEET_SERVICES_COMMON_HEARTBEAT_DELTA_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet {

// Agent side.
class HeartbeatDeltaEncoder {
 public:
  enum class Kind {
    kPeriodic,     // every interval: every change, hits included
    kStateChange,  // right after a reconcile: state changes only (AgentHeartbeat.state_change)
  };
  // `hb` is a full heartbeat. Unless the next one must be full, replaces its probes and sets by the
  // changes since the previous call and sets `delta`. Remembers what it sent as the base for the
  // next call: with kStateChange, a probe whose hits alone moved is not sent and keeps its previous
  // hits in the base, so the next periodic heartbeat sends it.
  void Encode(v1::AgentHeartbeat* hb, Kind kind = Kind::kPeriodic);
  // The next heartbeat is sent full (a new stream, or the controller asked).
  void Reset() { have_base_ = false; }

 private:
  struct Sent {
    std::string bytes;  // the status serialized without its hits
    uint64_t hits = 0;
  };
  bool have_base_ = false;
  std::map<std::string, Sent> probes_;       // local probe id -> as last sent
  std::map<std::string, std::string> sets_;  // set id -> serialized status
};

// Controller side: the node's heartbeat as its agent last described it, kept up to date
// in place by each heartbeat on the stream (full or delta). Nothing is rebuilt or copied
// for an entry a delta does not name: a delta costs what it carries.
class HeartbeatDeltaDecoder {
 public:
  struct Limits {
    size_t max_probes = 100000;
    size_t max_sets = 20000;
    size_t max_id_bytes = 512;        // fleet probe, local probe and set ids
    size_t max_message_bytes = 1024;  // status messages beyond are cut
  };
  // Told of each entry of the view a delta changes, so that the consumer can keep its own
  // indexes into the view without rebuilding them. An entry keeps its address from the
  // time it entered until it leaves.
  class Observer {
   public:
    virtual ~Observer() = default;
    // `old` is about to be overwritten in place by `incoming`, a report with the same
    // local id (ProbeEntered follows for the same object), or removed (`incoming` null).
    virtual void ProbeLeaving(const v1::AgentProbeStatus& old,
                              const v1::AgentProbeStatus* incoming) = 0;
    virtual void ProbeEntered(const v1::AgentProbeStatus& now) = 0;
    // Sets are known by their id: one overwritten in place keeps it.
    virtual void SetLeaving(const v1::AgentSetStatus& old, bool gone) = 0;
    virtual void SetEntered(const v1::AgentSetStatus& now, bool added) = 0;
  };
  enum class Applied {
    kReplaced,  // a full heartbeat: the whole view was replaced (the observer is not told)
    kChanged,   // a delta: the observer was told of every entry that changed
  };

  HeartbeatDeltaDecoder() = default;
  explicit HeartbeatDeltaDecoder(Limits limits) : limits_(limits) {}

  // Applies `hb` to the view. FAILED_PRECONDITION: a delta without a base (ask the agent
  // for a full heartbeat; nothing changed); INVALID_ARGUMENT: over the limits (a delta
  // that grows the view past them leaves it applied, without a base).
  absl::StatusOr<Applied> Apply(v1::AgentHeartbeat hb, Observer* observer = nullptr);
  // The full heartbeat the agent stands for (never `delta`, no removals; the order of
  // `probes` and `sets` is not the agent's). Empty before the first full heartbeat.
  const v1::AgentHeartbeat& view() const { return view_; }
  // A new stream: deltas are refused until the next full heartbeat (the view stays).
  void Reset() { have_base_ = false; }

 private:
  absl::Status Check(v1::AgentHeartbeat* hb) const;
  void RemoveProbe(const std::string& local_id, Observer* observer);
  void RemoveSet(const std::string& set_id, Observer* observer);

  Limits limits_;
  bool have_base_ = false;
  v1::AgentHeartbeat view_;
  absl::flat_hash_map<std::string, int> probes_;  // local probe id -> index in view_.probes
  absl::flat_hash_map<std::string, int> sets_;    // set id -> index in view_.sets
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_HEARTBEAT_DELTA_H_
