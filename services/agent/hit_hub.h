// Fan-out of hit events from the BPF ring buffer to WatchHits streams.
//
// The ring-buffer reader thread publishes raw events; each watcher (one per
// stream) has a bounded queue. A watcher that cannot keep up loses events, and
// every lost event is counted on that watcher (HitBatch.dropped_total), never
// silently: the reader never blocks on a client, so one slow client cannot
// stall the others or the kernel side.
#ifndef XOLFLEET_SERVICES_AGENT_HIT_HUB_H_
#define XOLFLEET_SERVICES_AGENT_HIT_HUB_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "services/agent/bpf/probe.h"

struct ring_buffer;  // libbpf

namespace xolfleet {

// An event routed to a probe: `probe_num` is the number in the probe id
// ("p<num>").
struct RoutedHit {
  uint64_t probe_num;
  xol_hit_event event;
};

class Watcher {
 public:
  // `probe_nums` empty: every probe. `capacity`: events queued at most.
  Watcher(absl::flat_hash_set<uint64_t> probe_nums, size_t capacity);

  bool Wants(uint64_t probe_num) const {
    return probe_nums_.empty() || probe_nums_.contains(probe_num);
  }
  // Producer side: queues the events this watcher wants, counting the ones that
  // do not fit.
  void Offer(absl::Span<const RoutedHit> hits);
  // Consumer side: waits up to `timeout` for events, then moves at most `max`
  // into `out`. Returns false once the watcher is closed and drained.
  bool Take(std::vector<RoutedHit>* out, size_t max, absl::Duration timeout);
  void Close();
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  uint64_t delivered_to_queue() const {
    return queued_.load(std::memory_order_relaxed);
  }

 private:
  const absl::flat_hash_set<uint64_t> probe_nums_;
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::vector<RoutedHit> ring_ ABSL_GUARDED_BY(mu_);
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;
  size_t size_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> queued_{0};
};

class HitHub {
 public:
  explicit HitHub(uint32_t max_slots);

  // Routes events of `slot` with generation >= `first_generation` to probe
  // `probe_num`. (A probe keeps its slot when it is re-linked with a newer
  // generation.)
  void RouteSlot(uint32_t slot, uint32_t first_generation, uint64_t probe_num);
  void UnrouteSlot(uint32_t slot);

  std::shared_ptr<Watcher> AddWatcher(absl::flat_hash_set<uint64_t> probe_nums,
                                      size_t capacity);
  void RemoveWatcher(const std::shared_ptr<Watcher>& w);
  size_t watcher_count() const;

  // Reader side.
  void Publish(absl::Span<const xol_hit_event> events);

  uint64_t published() const {
    return published_.load(std::memory_order_relaxed);
  }
  // Events whose probe was already detached (stale in the ring buffer).
  uint64_t unrouted() const {
    return unrouted_.load(std::memory_order_relaxed);
  }
  // Sum of `dropped()` over every watcher, past and present.
  uint64_t watcher_dropped_total() const;

 private:
  struct Route {
    bool active = false;
    uint32_t first_generation = 0;
    uint64_t probe_num = 0;
  };
  mutable absl::Mutex mu_;
  std::vector<Route> routes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  uint64_t removed_watchers_dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> unrouted_{0};
};

// Polls the probe program's ring buffer on a thread and publishes into a
// HitHub.
class RingBufferReader {
 public:
  static absl::StatusOr<std::unique_ptr<RingBufferReader>> Start(int ringbuf_fd,
                                                                 HitHub* hub);
  ~RingBufferReader();  // stops the thread

 private:
  RingBufferReader(HitHub* hub) : hub_(hub) {}
  static int OnEvent(void* ctx, void* data, size_t size);
  void Run();
  HitHub* hub_;
  ring_buffer* rb_ = nullptr;
  std::vector<xol_hit_event> pending_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_HIT_HUB_H_
