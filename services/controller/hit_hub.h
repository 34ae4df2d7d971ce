// Fan-out of hit count updates from agents to fleet watchers (WatchFleetHits).
//
// Agents report per-probe hit totals in heartbeats; the controller turns them into updates and
// publishes them here, into a BoundedFanOut (services/common/bounded_fan_out.h) with one watcher
// per stream, filtered by probe set and node. Each watcher has a bounded queue: when it is full the
// update is dropped and counted for that watcher (reported in every batch it receives) and in the
// controller's metrics. Publishing never blocks on a slow watcher.
//
// Notices (replicas: a replica gone, the store unreadable) go to every watcher whatever
// its filters, at most kMaxNotices queued per watcher (older ones give way).
#ifndef XOLFLEET_SERVICES_CONTROLLER_HIT_HUB_H_
#define XOLFLEET_SERVICES_CONTROLLER_HIT_HUB_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/common/bounded_fan_out.h"
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

using HitFanOut = BoundedFanOut<v1::FleetHitUpdate>;

class HitWatcher {
 public:
  explicit HitWatcher(std::shared_ptr<HitFanOut::Watcher> updates) : updates_(std::move(updates)) {}

  // Waits up to `timeout` for updates or notices; fills `out` with the notices, at most `max`
  // updates and the watcher's drop count. False once the watcher is closed and drained.
  bool Take(v1::FleetHitBatch* out, size_t max, absl::Duration timeout);
  void Close() { updates_->Close(); }
  // Queues a notice for this watcher alone (at most HitHub::kMaxNotices are kept).
  void Notice(const std::string& text);

 private:
  friend class HitHub;
  const std::shared_ptr<HitFanOut::Watcher> updates_;
  absl::Mutex mu_;
  std::deque<std::string> notices_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::FleetHitUpdate> taken_;  // reused by Take (one stream: one caller at a time)
};

class HitHub {
 public:
  static constexpr size_t kMaxNotices = 16;

  explicit HitHub(std::function<void(uint64_t)> on_drop = nullptr) : on_drop_(std::move(on_drop)) {}

  // Empty `sets` / `nodes`: every set / node.
  std::shared_ptr<HitWatcher> AddWatcher(std::set<std::string> sets, std::set<std::string> nodes,
                                         size_t capacity);
  void RemoveWatcher(const std::shared_ptr<HitWatcher>& w);
  void Publish(const std::vector<v1::FleetHitUpdate>& updates);
  // To every watcher.
  void Notice(const std::string& text);
  size_t watchers() const;

 private:
  std::function<void(uint64_t)> on_drop_;
  HitFanOut fan_out_;  // the updates
  // The watchers again, with their notices (Notice reaches every one).
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<HitWatcher>> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_HIT_HUB_H_
