// Fan-out of hit events from the BPF ring buffer to WatchHits streams.
//
// The ring-buffer reader thread publishes raw events; the hub routes each to its probe
// (slot and generation from the BPF cookie) and hands the batch to a BoundedFanOut
// (services/common/bounded_fan_out.h), one watcher per stream. A watcher that cannot keep
// up loses events, and every lost event is counted on that watcher
// (HitBatch.dropped_total), never silently: the reader never blocks on a client, so one
// slow client cannot stall the others or the kernel side.
//
// Memory: a queue grows with the events actually waiting in it (nothing is allocated up front: 100
// idle streams once cost 12 MB each), each queue is bounded by its capacity, all queues together by
// the hub's `max_queued_events`, and the number of watchers by `max_watchers`.
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
#include "services/common/bounded_fan_out.h"

struct ring_buffer;  // libbpf

namespace xolfleet {

// An event routed to a probe: `probe_num` is the number in the probe id ("p<num>").
struct RoutedHit {
  uint64_t probe_num;
  xol_hit_event event;
};

// A batch of routed events as the reader publishes it, shared (never copied) by every
// watcher that wants all of it.
using HitChunk = std::vector<RoutedHit>;

// One WatchHits stream's queue: Take, dropped, Close (services/common/bounded_fan_out.h).
using Watcher = BoundedFanOut<RoutedHit>::Watcher;

class HitHub {
 public:
  struct Limits {
    size_t max_watchers = 64;               // concurrent WatchHits streams
    uint64_t max_queued_events = 1u << 20;  // in all watcher queues together
  };
  explicit HitHub(uint32_t max_slots) : HitHub(max_slots, Limits()) {}
  HitHub(uint32_t max_slots, Limits limits);

  // Routes events of `slot` with generation >= `first_generation` to probe `probe_num`. (A probe
  // keeps its slot when it is re-linked with a newer generation.)
  void RouteSlot(uint32_t slot, uint32_t first_generation, uint64_t probe_num);
  void UnrouteSlot(uint32_t slot);

  // RESOURCE_EXHAUSTED (naming the limit) with `max_watchers` watchers already.
  absl::StatusOr<std::shared_ptr<Watcher>> AddWatcher(absl::flat_hash_set<uint64_t> probe_nums,
                                                      size_t capacity);
  void RemoveWatcher(const std::shared_ptr<Watcher>& w);
  size_t watchers() const;

  // Reader side.
  void Publish(absl::Span<const xol_hit_event> events);
  // The same for events the reader copied straight into `hits` (probe_num not set yet):
  // routes them in place, drops those of detached probes, offers the rest to every
  // watcher. `hits` is empty afterwards, ready for the next batch.
  void Publish(std::shared_ptr<HitChunk>* hits);
  // An empty chunk to fill for Publish, from a pool of returned ones when it can.
  std::shared_ptr<HitChunk> NewChunk();

  uint64_t published() const { return published_.load(std::memory_order_relaxed); }
  // Events whose probe was already detached (stale in the ring buffer).
  uint64_t unrouted() const { return unrouted_.load(std::memory_order_relaxed); }
  // Sum of `dropped()` over every watcher, past and present.
  uint64_t watcher_dropped_total() const { return fan_out_.dropped_total(); }
  // Events waiting in all watcher queues now.
  uint64_t queued_events() const { return fan_out_.queued_total(); }
  const Limits& limits() const { return limits_; }

 private:
  struct Route {
    bool active = false;
    uint32_t first_generation = 0;
    uint64_t probe_num = 0;
  };
  const Limits limits_;
  mutable absl::Mutex mu_;
  std::vector<Route> routes_ ABSL_GUARDED_BY(mu_);
  BoundedFanOut<RoutedHit> fan_out_;
  // Chunks come back here when the last watcher has taken their events, so the reader
  // fills the same few buffers again (a new 800 KB vector per batch page-faulted on
  // every first touch). Shared: a chunk may outlive the hub in a watcher's queue.
  struct ChunkPool {
    absl::Mutex mu;
    std::vector<std::unique_ptr<HitChunk>> free ABSL_GUARDED_BY(mu);
  };
  const std::shared_ptr<ChunkPool> pool_ = std::make_shared<ChunkPool>();
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> unrouted_{0};
};

// Polls the probe program's ring buffer on a thread and publishes into a HitHub.
class RingBufferReader {
 public:
  // Events published to the hub at most at once (a long burst reaches the watchers
  // while it is being consumed).
  static constexpr size_t kPublishEvery = 1024;
  static absl::StatusOr<std::unique_ptr<RingBufferReader>> Start(int ringbuf_fd, HitHub* hub);
  ~RingBufferReader();  // stops the thread

 private:
  RingBufferReader(HitHub* hub) : hub_(hub) {}
  static int OnEvent(void* ctx, void* data, size_t size);
  void Run();
  HitHub* hub_;
  ring_buffer* rb_ = nullptr;
  std::shared_ptr<HitChunk> pending_;  // events copied out of the ring, not published yet
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_HIT_HUB_H_
