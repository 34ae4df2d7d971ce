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

void Watcher::Offer(absl::Span<const RoutedHit> hits) {
  // The events this watcher wants, copied before the lock is taken.
  std::vector<RoutedHit> wanted;
  if (probe_nums_.empty()) {
    wanted.assign(hits.begin(), hits.end());
  } else {
    for (const RoutedHit& h : hits) {
      if (Wants(h.probe_num)) wanted.push_back(h);
    }
  }
  if (wanted.empty()) return;
  uint64_t lost = 0;
  {
    absl::MutexLock l(&mu_);
    if (closed_) return;
    // What fits in this queue, then in the budget shared with the other watchers,
    // reserved with one atomic add for the whole batch (one per event cost more than
    // the copy at a million events a second).
    size_t fit = std::min(wanted.size(), capacity_ - std::min(capacity_, queued_));
    if (total_queued_ != nullptr && fit > 0) {
      const uint64_t before = total_queued_->fetch_add(fit);
      const uint64_t room = before >= total_limit_ ? 0 : total_limit_ - before;
      if (room < fit) {
        total_queued_->fetch_sub(fit - room);
        fit = room;
      }
    }
    lost = wanted.size() - fit;
    if (fit > 0) {
      if (fit < wanted.size()) {
        wanted.resize(fit);
        wanted.shrink_to_fit();  // a queue holds only what it counts
      }
      queued_ += fit;
      queue_.push_back(Chunk{std::move(wanted), 0});
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
    const size_t k = std::min(max - n, c.hits.size() - c.next);
    out->insert(out->end(), c.hits.begin() + c.next, c.hits.begin() + c.next + k);
    c.next += k;
    n += k;
    if (c.next == c.hits.size()) queue_.pop_front();
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

void HitHub::Publish(absl::Span<const xol_hit_event> events) {
  absl::MutexLock pl(&publish_mu_);
  std::vector<RoutedHit>& routed = publish_scratch_;  // reused: up to 768 KiB a call
  routed.clear();
  uint64_t unrouted = 0;
  absl::ReaderMutexLock l(&mu_);
  for (const xol_hit_event& e : events) {
    uint32_t slot = static_cast<uint32_t>(e.cookie);
    uint32_t gen = static_cast<uint32_t>(e.cookie >> 32);
    if (slot >= routes_.size() || !routes_[slot].active || gen < routes_[slot].first_generation) {
      ++unrouted;
      continue;
    }
    routed.push_back(RoutedHit{routes_[slot].probe_num, e});
  }
  published_.fetch_add(events.size(), std::memory_order_relaxed);
  if (unrouted) unrouted_.fetch_add(unrouted, std::memory_order_relaxed);
  for (const auto& w : watchers_) w->Offer(routed);
}

absl::StatusOr<std::unique_ptr<RingBufferReader>> RingBufferReader::Start(int ringbuf_fd,
                                                                          HitHub* hub) {
  std::unique_ptr<RingBufferReader> r(new RingBufferReader(hub));
  r->rb_ = ring_buffer__new(ringbuf_fd, &RingBufferReader::OnEvent, r.get(), nullptr);
  if (r->rb_ == nullptr) {
    return absl::InternalError(
        absl::StrCat("opening the hit-event ring buffer: ", strerror(errno)));
  }
  r->pending_.reserve(4096);
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
  xol_hit_event& e = self->pending_.emplace_back();
  memcpy(&e, data, size);
  // Publish in chunks so watchers see events while a long burst is consumed.
  if (self->pending_.size() >= 4096) {
    self->hub_->Publish(self->pending_);
    self->pending_.clear();
  }
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
    if (!pending_.empty()) {
      hub_->Publish(pending_);
      pending_.clear();
    }
  }
}

}  // namespace xolfleet
