// Fan-out of hit count updates from agents to fleet watchers (WatchFleetHits).
//
// Agents report per-probe hit totals in heartbeats; the controller turns them into
// updates and publishes them here. Each watcher has a bounded queue: when it is full the
// update is dropped and counted for that watcher (reported in every batch it receives)
// and in the controller's metrics. Publishing never blocks on a slow watcher.
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
#include "xolfleet/v1/controller.pb.h"

namespace xolfleet::controller {

class HitWatcher {
 public:
  HitWatcher(std::set<std::string> sets, std::set<std::string> nodes, size_t capacity)
      : sets_(std::move(sets)), nodes_(std::move(nodes)), capacity_(capacity) {}

  // Waits up to `timeout` for updates; fills `out` with at most `max` of them and the
  // watcher's drop count. False once the watcher is closed and drained.
  bool Next(size_t max, absl::Duration timeout, v1::FleetHitBatch* out);
  void Close();
  // Queues a notice for this watcher alone (at most HitHub::kMaxNotices are kept).
  void Notice(const std::string& text);

 private:
  friend class HitHub;
  bool Wants(const v1::FleetHitUpdate& u) const;
  // Returns false (and counts a drop) when the queue is full.
  bool Offer(const v1::FleetHitUpdate& u);

  const std::set<std::string> sets_, nodes_;
  const size_t capacity_;
  absl::Mutex mu_;
  std::deque<v1::FleetHitUpdate> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> notices_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

class HitHub {
 public:
  static constexpr size_t kMaxNotices = 16;

  explicit HitHub(std::function<void(uint64_t)> on_drop = nullptr) : on_drop_(std::move(on_drop)) {}

  std::shared_ptr<HitWatcher> Subscribe(std::set<std::string> sets, std::set<std::string> nodes,
                                        size_t capacity);
  void Unsubscribe(const std::shared_ptr<HitWatcher>& w);
  void Publish(const std::vector<v1::FleetHitUpdate>& updates);
  // To every watcher.
  void Notice(const std::string& text);
  size_t watchers() const;

 private:
  std::function<void(uint64_t)> on_drop_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<HitWatcher>> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_HIT_HUB_H_
