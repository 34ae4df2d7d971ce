// Fan-out of hit events from the BPF ring buffer to WatchHits streams.
//
// The ring-buffer reader thread publishes raw events; each watcher (one per
// stream) has a bounded queue. A watcher that cannot keep up loses events, and
// every lost event is counted on that watcher (HitBatch.dropped_total), never
// silently: the reader never blocks on a client, so one slow client cannot
// stall the others or the kernel side.
//
// Memory: a queue grows with the events actually waiting in it (nothing is
// allocated up front: 100 idle streams once cost 12 MB each), each queue is
// bounded by its capacity, all queues together by the hub's
// `max_queued_events`, and the number of watchers by `max_watchers`.
#ifndef XOLFLEET_SERVICES_AGENT_HIT_HUB_H_
#define XOLFLEET_SERVICES_AGENT_HIT_HUB_H_

#include <atomic>
#include <cstdint>
#include <deque>
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

// A batch of routed events as the reader publishes it, shared (never copied) by every
// watcher that wants all of it.
using HitChunk = std::vector<RoutedHit>;

class Watcher {
 public:
  // `probe_nums` empty: every probe. `capacity`: events queued at most.
  // `total_queued`/`total_limit`: a budget shared with other watchers (null: none).
  Watcher(absl::flat_hash_set<uint64_t> probe_nums, size_t capacity,
          std::atomic<uint64_t>* total_queued = nullptr, uint64_t total_limit = 0);
  ~Watcher();

  bool Wants(uint64_t probe_num) const {
    return probe_nums_.empty() || probe_nums_.contains(probe_num);
  }
  // Producer side: queues the events this watcher wants, counting the ones that
  // do not fit. A watcher of every probe queues `hits` itself, without a copy.
  void Offer(const std::shared_ptr<const HitChunk>& hits);
  // Consumer side: waits up to `timeout` for events, then moves at most `max`
  // into `out`. Returns false once the watcher is closed and drained.
  bool Take(std::vector<RoutedHit>* out, size_t max, absl::Duration timeout);
  void Close();
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  size_t queued_now() const;

 private:
  const absl::flat_hash_set<uint64_t> probe_nums_;
  const size_t capacity_;
  std::atomic<uint64_t>* const total_queued_;
  const uint64_t total_limit_;
  mutable absl::Mutex mu_;
  // The offered batches, oldest first; events [next, end) of a chunk are not taken
  // yet. Grows and shrinks with use. (A deque of events allocated a block for every
  // two 192-byte events, and freed it again, a million times a second; then each
  // watcher's copy of every batch was most of the reader's time.)
  struct Chunk {
    std::shared_ptr<const HitChunk> hits;
    size_t next = 0;
    size_t end = 0;
  };
  std::deque<Chunk> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_ ABSL_GUARDED_BY(mu_) = 0;  // events in queue_ not taken yet
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> dropped_{0};
};

class HitHub {
 public:
  struct Limits {
    size_t max_watchers = 64;               // concurrent WatchHits streams
    uint64_t max_queued_events = 1u << 20;  // in all watcher queues together
  };
  explicit HitHub(uint32_t max_slots) : HitHub(max_slots, Limits()) {}
  HitHub(uint32_t max_slots, Limits limits);

  // Routes events of `slot` with generation >= `first_generation` to probe
  // `probe_num`. (A probe keeps its slot when it is re-linked with a newer
  // generation.)
  void RouteSlot(uint32_t slot, uint32_t first_generation, uint64_t probe_num);
  void UnrouteSlot(uint32_t slot);

  // RESOURCE_EXHAUSTED (naming the limit) with `max_watchers` watchers already.
  absl::StatusOr<std::shared_ptr<Watcher>> AddWatcher(absl::flat_hash_set<uint64_t> probe_nums,
                                                      size_t capacity);
  void RemoveWatcher(const std::shared_ptr<Watcher>& w);
  size_t watcher_count() const;

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
  uint64_t watcher_dropped_total() const;
  // Events waiting in all watcher queues now.
  uint64_t queued_events() const { return total_queued_.load(std::memory_order_relaxed); }
  const Limits& limits() const { return limits_; }

 private:
  struct Route {
    bool active = false;
    uint32_t first_generation = 0;
    uint64_t probe_num = 0;
  };
  const Limits limits_;
  std::atomic<uint64_t> total_queued_{0};
  mutable absl::Mutex mu_;
  std::vector<Route> routes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  uint64_t removed_watchers_dropped_ ABSL_GUARDED_BY(mu_) = 0;
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

// Polls the probe program's ring buffer on a thread and publishes into a
// HitHub.
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
