#include "services/agent/hit_hub.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "services/common/log.h"

namespace xolfleet {

Watcher::Watcher(absl::flat_hash_set<uint64_t> probe_nums, size_t capacity,
                 std::atomic<uint64_t>* total_queued, uint64_t total_limit)
    : probe_nums_(std::move(probe_nums)),
      capacity_(std::max<size_t>(capacity, 1)),
      total_queued_(total_queued),
      total_limit_(total_limit) {}

Watcher::~Watcher() {
  absl::MutexLock l(&mu_);
  if (total_queued_ != nullptr) total_queued_->fetch_sub(queued_);
}

size_t Watcher::queued_now() const {
  absl::MutexLock l(&mu_);
  return queued_;
}

void Watcher::Offer(const std::shared_ptr<const HitChunk>& hits) {
  std::shared_ptr<const HitChunk> mine = hits;
  if (!probe_nums_.empty()) {
    // The events this watcher wants, copied before the lock is taken.
    auto wanted = std::make_shared<HitChunk>();
    for (const RoutedHit& h : *hits) {
      if (Wants(h.probe_num)) wanted->push_back(h);
    }
    mine = std::move(wanted);
  }
  const size_t n = mine->size();
  if (n == 0) return;
  uint64_t lost = 0;
  {
    absl::MutexLock l(&mu_);
    if (closed_) return;
    // What fits in this queue, then in the budget shared with the other watchers,
    // reserved with one atomic add for the whole batch (one per event cost more than
    // the copy at a million events a second).
    size_t fit = std::min(n, capacity_ - std::min(capacity_, queued_));
    if (total_queued_ != nullptr && fit > 0) {
      const uint64_t before = total_queued_->fetch_add(fit);
      const uint64_t room = before >= total_limit_ ? 0 : total_limit_ - before;
      if (room < fit) {
        total_queued_->fetch_sub(fit - room);
        fit = room;
      }
    }
    lost = n - fit;
    if (fit > 0) {
      queued_ += fit;
      queue_.push_back(Chunk{std::move(mine), 0, fit});
    }
  }
  if (lost) dropped_.fetch_add(lost, std::memory_order_relaxed);
}

bool Watcher::Take(std::vector<RoutedHit>* out, size_t max, absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queued_ > 0 || closed_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  size_t n = 0;
  while (n < max && !queue_.empty()) {
    Chunk& c = queue_.front();
    const size_t k = std::min(max - n, c.end - c.next);
    out->insert(out->end(), c.hits->begin() + c.next, c.hits->begin() + c.next + k);
    c.next += k;
    n += k;
    if (c.next == c.end) queue_.pop_front();
  }
  queued_ -= n;
  if (n > 0 && total_queued_ != nullptr) total_queued_->fetch_sub(n);
  if (queue_.empty()) queue_.shrink_to_fit();
  return !(closed_ && queue_.empty() && n == 0);
}

void Watcher::Close() {
  absl::MutexLock l(&mu_);
  closed_ = true;
}

HitHub::HitHub(uint32_t max_slots, Limits limits) : limits_(limits) {
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
  auto w = std::make_shared<Watcher>(std::move(probe_nums), capacity, &total_queued_,
                                     limits_.max_queued_events);
  absl::MutexLock l(&mu_);
  if (watchers_.size() >= limits_.max_watchers) {
    return absl::ResourceExhaustedError(
        absl::StrCat(watchers_.size(),
                     " WatchHits streams are open, the agent's limit "
                     "(--max-watch-streams=",
                     limits_.max_watchers, "): close one or watch several probes in one stream"));
  }
  watchers_.push_back(w);
  return w;
}

void HitHub::RemoveWatcher(const std::shared_ptr<Watcher>& w) {
  w->Close();
  absl::MutexLock l(&mu_);
  auto it = std::find(watchers_.begin(), watchers_.end(), w);
  if (it != watchers_.end()) {
    removed_watchers_dropped_ += w->dropped();
    watchers_.erase(it);
  }
}

size_t HitHub::watcher_count() const {
  absl::MutexLock l(&mu_);
  return watchers_.size();
}

uint64_t HitHub::watcher_dropped_total() const {
  absl::MutexLock l(&mu_);
  uint64_t t = removed_watchers_dropped_;
  for (const auto& w : watchers_) t += w->dropped();
  return t;
}

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
  h.resize(kept);
  published_.fetch_add(published, std::memory_order_relaxed);
  if (published > kept) unrouted_.fetch_add(published - kept, std::memory_order_relaxed);
  std::shared_ptr<const HitChunk> shared = std::move(*hits);
  *hits = NewChunk();
  if (kept == 0) return;
  for (const auto& w : watchers_) w->Offer(shared);
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
