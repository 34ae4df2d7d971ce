#include "services/agent/hit_hub.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "services/common/log.h"

namespace xolfleet {

namespace {

BoundedFanOut<RoutedHit>::Limits FanOutLimits(const HitHub::Limits& limits) {
  BoundedFanOut<RoutedHit>::Limits l;
  l.max_watchers = limits.max_watchers;
  l.max_queued = limits.max_queued_events;
  l.limit_message = [max = limits.max_watchers](size_t open) {
    return absl::StrCat(open,
                        " WatchHits streams are open, the agent's limit (--max-watch-streams=", max,
                        "): close one or watch several probes in one stream");
  };
  return l;
}

}  // namespace

HitHub::HitHub(uint32_t max_slots, Limits limits)
    : limits_(limits), fan_out_(FanOutLimits(limits)) {
  absl::MutexLock l(&mu_);
  routes_.resize(max_slots);
}

void HitHub::RouteSlot(uint32_t slot, uint32_t first_generation, uint64_t probe_num) {
  absl::MutexLock l(&mu_);
  if (slot >= routes_.size()) return;
  routes_[slot] = Route{true, first_generation, probe_num};
}

void HitHub::UnrouteSlot(uint32_t slot) {
  absl::MutexLock l(&mu_);
  if (slot < routes_.size()) routes_[slot].active = false;
}

absl::StatusOr<std::shared_ptr<Watcher>> HitHub::AddWatcher(
    absl::flat_hash_set<uint64_t> probe_nums, size_t capacity) {
  BoundedFanOut<RoutedHit>::Filter wants;  // empty: every probe, chunks shared uncopied
  if (!probe_nums.empty()) {
    wants = [nums = std::move(probe_nums)](const RoutedHit& h) {
      return nums.contains(h.probe_num);
    };
  }
  return fan_out_.AddWatcher(std::move(wants), capacity);
}

void HitHub::RemoveWatcher(const std::shared_ptr<Watcher>& w) { fan_out_.RemoveWatcher(w); }

size_t HitHub::watchers() const { return fan_out_.watchers(); }

namespace {
// Chunks kept for reuse: 8 x 1024 events of 200 bytes, 1.6 MB at most.
constexpr size_t kPooledChunks = 8;
}  // namespace

std::shared_ptr<HitChunk> HitHub::NewChunk() {
  std::unique_ptr<HitChunk> c;
  {
    absl::MutexLock l(&pool_->mu);
    if (!pool_->free.empty()) {
      c = std::move(pool_->free.back());
      pool_->free.pop_back();
    }
  }
  if (c == nullptr) {
    c = std::make_unique<HitChunk>();
    c->reserve(RingBufferReader::kPublishEvery);
  }
  // Back to the pool when the last holder lets go (a few are kept: the reader fills one
  // while the watchers' queues hold the others).
  return std::shared_ptr<HitChunk>(c.release(), [pool = pool_](HitChunk* p) {
    std::unique_ptr<HitChunk> owned(p);
    if (owned->capacity() > 4 * RingBufferReader::kPublishEvery) return;
    owned->clear();
    absl::MutexLock l(&pool->mu);
    if (pool->free.size() < kPooledChunks) pool->free.push_back(std::move(owned));
  });
}

void HitHub::Publish(absl::Span<const xol_hit_event> events) {
  std::shared_ptr<HitChunk> hits = NewChunk();
  hits->reserve(events.size());
  for (const xol_hit_event& e : events) hits->push_back(RoutedHit{0, e});
  Publish(&hits);
}

void HitHub::Publish(std::shared_ptr<HitChunk>* hits) {
  HitChunk& h = **hits;
  const size_t published = h.size();
  size_t kept = 0;
  {
    absl::ReaderMutexLock l(&mu_);
    for (size_t i = 0; i < published; ++i) {
      const uint64_t cookie = h[i].event.cookie;
      const uint32_t slot = static_cast<uint32_t>(cookie);
      const uint32_t gen = static_cast<uint32_t>(cookie >> 32);
      if (slot >= routes_.size() || !routes_[slot].active || gen < routes_[slot].first_generation) {
        continue;
      }
      if (kept != i) h[kept] = h[i];
      h[kept++].probe_num = routes_[slot].probe_num;
    }
  }
  h.resize(kept);
  published_.fetch_add(published, std::memory_order_relaxed);
  if (published > kept) unrouted_.fetch_add(published - kept, std::memory_order_relaxed);
  std::shared_ptr<const HitChunk> shared = std::move(*hits);
  *hits = NewChunk();
  if (kept == 0) return;
  fan_out_.Publish(shared);
}

absl::StatusOr<std::unique_ptr<RingBufferReader>> RingBufferReader::Start(int ringbuf_fd,
                                                                          HitHub* hub) {
  std::unique_ptr<RingBufferReader> r(new RingBufferReader(hub));
  r->rb_ = ring_buffer__new(ringbuf_fd, &RingBufferReader::OnEvent, r.get(), nullptr);
  if (r->rb_ == nullptr) {
    return absl::InternalError(
        absl::StrCat("opening the hit-event ring buffer: ", strerror(errno)));
  }
  r->pending_ = hub->NewChunk();
  r->thread_ = std::thread([p = r.get()] { p->Run(); });
  return r;
}

RingBufferReader::~RingBufferReader() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (rb_ != nullptr) ring_buffer__free(rb_);
}

int RingBufferReader::OnEvent(void* ctx, void* data, size_t size) {
  auto* self = static_cast<RingBufferReader*>(ctx);
  // XOL_EVENT_BYTES(slots): the header and the register slots its probe captures.
  if (size < XOL_EVENT_BYTES(0) || size > sizeof(xol_hit_event)) return 0;
  RoutedHit& h = self->pending_->emplace_back();
  memcpy(&h.event, data, size);
  if (self->pending_->size() >= kPublishEvery) self->hub_->Publish(&self->pending_);
  return 0;
}

void RingBufferReader::Run() {
  while (!stop_.load()) {
    // The program wakes this reader only when the buffer fills up (xol_wakeup_bytes), so
    // poll returns empty-handed after 10 ms and consume() drains what came meanwhile.
    int n = ring_buffer__poll(rb_, 10 /* ms */);
    if (n >= 0 || n == -EINTR) n = ring_buffer__consume(rb_);
    if (n < 0 && n != -EINTR) {
      Log("ring buffer poll failed: ", strerror(-n));
      break;
    }
    if (!pending_->empty()) hub_->Publish(&pending_);
  }
}

}  // namespace xolfleet
