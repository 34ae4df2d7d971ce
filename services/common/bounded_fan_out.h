// BoundedFanOut<T>: one producer side, many watchers, never blocking on a slow watcher.
//
// The agent's WatchHits (hit events from the ring buffer) and the controller's
// WatchFleetHits (hit count updates from heartbeats) both hand items to watchers that read
// at their own pace. The rules they share live here:
//
// - Publish offers a chunk of items to every watcher and never waits for one. A watcher
//   that wants every item queues the chunk itself (shared, immutable, never copied); a
//   watcher with a filter queues a copy of the items it wants.
// - Every watcher's queue is bounded (its capacity), all queues together optionally by a
//   budget shared by the watchers, and the number of watchers optionally by a limit
//   (AddWatcher answers RESOURCE_EXHAUSTED naming it).
// - An item that does not fit is dropped and counted on its watcher (`dropped()`), and in
//   the fan-out's total (`dropped_total()`, watchers past and present): never silently.
//   Publish returns how many it dropped, for a metric.
// - A queue grows with the items actually waiting (nothing allocated up front) and gives
//   its memory back when drained.
// - Take waits up to a timeout for items, moves at most `max` out; Close ends the watcher:
//   Take still drains what is queued, then returns false. A closed watcher queues nothing
//   more (its reader is gone; there is no one to count for). Wake makes a waiting Take
//   return at once (its owner has something else to deliver, e.g. a notice).
//
// Thread-safety: every method may be called from any thread; several producers may publish
// at once (each watcher keeps the order in which chunks reached it).
#ifndef XOLFLEET_SERVICES_COMMON_BOUNDED_FAN_OUT_H_
#define XOLFLEET_SERVICES_COMMON_BOUNDED_FAN_OUT_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace xolfleet {

template <typename T>
class BoundedFanOut {
 public:
  using Chunk = std::vector<T>;
  // Which items a watcher wants; an empty function: every item.
  using Filter = std::function<bool(const T&)>;

  struct Limits {
    static constexpr size_t kNoWatcherLimit = SIZE_MAX;
    static constexpr uint64_t kNoBudget = UINT64_MAX;
    size_t max_watchers = kNoWatcherLimit;
    // Items in all queues together (counted only under a budget).
    uint64_t max_queued = kNoBudget;
    // The RESOURCE_EXHAUSTED message when max_watchers is reached, given the number of watchers: it
    // should name the limit (a flag) and say what the caller can do. Empty: a generic one.
    std::function<std::string(size_t watchers)> limit_message;
  };

  class Watcher {
   public:
    // `capacity`: items queued at most (at least 1). `budget`: the count shared with other
    // watchers and its limit (null: none).
    Watcher(Filter filter, size_t capacity, std::atomic<uint64_t>* budget = nullptr,
            uint64_t budget_limit = 0)
        : filter_(std::move(filter)),
          capacity_(std::max<size_t>(capacity, 1)),
          budget_(budget),
          budget_limit_(budget_limit) {}
    ~Watcher() {
      absl::MutexLock l(&mu_);
      if (budget_ != nullptr) budget_->fetch_sub(queued_);
    }
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;

    bool Wants(const T& item) const { return !filter_ || filter_(item); }

    // Producer side: queues the items of `chunk` this watcher wants, counts the ones that do
    // not fit. Returns the number dropped.
    uint64_t Offer(const std::shared_ptr<const Chunk>& chunk) {
      std::shared_ptr<const Chunk> mine = chunk;
      if (filter_) {
        // The wanted items, copied before the lock is taken.
        auto wanted = std::make_shared<Chunk>();
        for (const T& item : *chunk) {
          if (filter_(item)) wanted->push_back(item);
        }
        mine = std::move(wanted);
      }
      const size_t n = mine->size();
      if (n == 0) return 0;
      uint64_t lost = 0;
      {
        absl::MutexLock l(&mu_);
        if (closed_) return 0;
        // What fits in this queue, then in the shared budget, reserved with one atomic add
        // for the whole chunk (one per item cost more than a copy at a million a second).
        size_t fit = std::min(n, capacity_ - std::min(capacity_, queued_));
        if (budget_ != nullptr && fit > 0) {
          const uint64_t before = budget_->fetch_add(fit);
          const uint64_t room = before >= budget_limit_ ? 0 : budget_limit_ - before;
          if (room < fit) {
            budget_->fetch_sub(fit - room);
            fit = room;
          }
        }
        lost = n - fit;
        if (fit > 0) {
          queued_ += fit;
          queue_.push_back(Queued{std::move(mine), 0, fit});
        }
      }
      if (lost) dropped_.fetch_add(lost, std::memory_order_relaxed);
      return lost;
    }

    // Consumer side: waits up to `timeout` for items (or Close, or Wake), then appends at most
    // `max` to `out`, oldest first. Returns false once the watcher is closed and drained.
    bool Take(std::vector<T>* out, size_t max, absl::Duration timeout) {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return queued_ > 0 || closed_ || woken_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
      woken_ = false;
      size_t n = 0;
      while (n < max && !queue_.empty()) {
        Queued& q = queue_.front();
        const size_t k = std::min(max - n, q.end - q.next);
        out->insert(out->end(), q.items->begin() + q.next, q.items->begin() + q.next + k);
        q.next += k;
        n += k;
        if (q.next == q.end) queue_.pop_front();
      }
      queued_ -= n;
      if (n > 0 && budget_ != nullptr) budget_->fetch_sub(n);
      if (queue_.empty()) queue_.shrink_to_fit();
      return !(closed_ && queue_.empty() && n == 0);
    }

    // A Take waiting now (or the next one) returns without waiting for items.
    void Wake() {
      absl::MutexLock l(&mu_);
      woken_ = true;
    }
    void Close() {
      absl::MutexLock l(&mu_);
      closed_ = true;
    }
    bool closed() const {
      absl::MutexLock l(&mu_);
      return closed_;
    }
    // Items this watcher lost because its queue or the budget was full.
    uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
    // Items queued now, not taken yet.
    size_t queued_now() const {
      absl::MutexLock l(&mu_);
      return queued_;
    }

   private:
    const Filter filter_;
    const size_t capacity_;
    std::atomic<uint64_t>* const budget_;
    const uint64_t budget_limit_;
    mutable absl::Mutex mu_;
    // The offered chunks, oldest first; items [next, end) of one are not taken yet. (A deque of
    // items allocated a block for every two 192-byte hit events, and freed it again, a million
    // times a second; a copy of every chunk per watcher was most of the agent's reader time.)
    struct Queued {
      std::shared_ptr<const Chunk> items;
      size_t next = 0;
      size_t end = 0;
    };
    std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
    size_t queued_ ABSL_GUARDED_BY(mu_) = 0;  // items in queue_ not taken yet
    bool closed_ ABSL_GUARDED_BY(mu_) = false;
    bool woken_ ABSL_GUARDED_BY(mu_) = false;
    std::atomic<uint64_t> dropped_{0};
  };

  BoundedFanOut() : BoundedFanOut(Limits()) {}
  explicit BoundedFanOut(Limits limits) : limits_(std::move(limits)) {}
  BoundedFanOut(const BoundedFanOut&) = delete;
  BoundedFanOut& operator=(const BoundedFanOut&) = delete;

  // RESOURCE_EXHAUSTED (naming the limit) with `max_watchers` watchers already.
  absl::StatusOr<std::shared_ptr<Watcher>> AddWatcher(Filter filter, size_t capacity) {
    auto w = std::make_shared<Watcher>(std::move(filter), capacity,
                                       limits_.max_queued != Limits::kNoBudget ? &queued_ : nullptr,
                                       limits_.max_queued);
    absl::MutexLock l(&mu_);
    if (watchers_.size() >= limits_.max_watchers) {
      return absl::ResourceExhaustedError(
          limits_.limit_message ? limits_.limit_message(watchers_.size())
                                : absl::StrCat(watchers_.size(), " watchers, the limit (",
                                               limits_.max_watchers, "): remove one first"));
    }
    watchers_.push_back(w);
    return w;
  }

  // Closes `w` (its Take drains what it holds, then returns false) and forgets it; its drop
  // count stays in dropped_total().
  void RemoveWatcher(const std::shared_ptr<Watcher>& w) {
    w->Close();
    absl::MutexLock l(&mu_);
    auto it = std::find(watchers_.begin(), watchers_.end(), w);
    if (it != watchers_.end()) {
      removed_dropped_ += w->dropped();
      watchers_.erase(it);
    }
  }

  // Offers `chunk` to every watcher. Returns the items dropped (summed over watchers).
  uint64_t Publish(const std::shared_ptr<const Chunk>& chunk) {
    if (chunk == nullptr || chunk->empty()) return 0;
    uint64_t lost = 0;
    absl::ReaderMutexLock l(&mu_);
    for (const auto& w : watchers_) lost += w->Offer(chunk);
    return lost;
  }
  uint64_t Publish(Chunk items) {
    return Publish(std::shared_ptr<const Chunk>(std::make_shared<Chunk>(std::move(items))));
  }

  // Calls `f(Watcher&)` for every watcher (notices, wake-ups).
  template <typename F>
  void ForEachWatcher(F f) {
    absl::ReaderMutexLock l(&mu_);
    for (const auto& w : watchers_) f(*w);
  }

  size_t watchers() const {
    absl::ReaderMutexLock l(&mu_);
    return watchers_.size();
  }
  // Sum of dropped() over every watcher, past and present.
  uint64_t dropped_total() const {
    absl::ReaderMutexLock l(&mu_);
    uint64_t t = removed_dropped_;
    for (const auto& w : watchers_) t += w->dropped();
    return t;
  }
  // Items waiting in all queues now (counted only under a budget).
  uint64_t queued_total() const { return queued_.load(std::memory_order_relaxed); }
  const Limits& limits() const { return limits_; }

 private:
  const Limits limits_;
  std::atomic<uint64_t> queued_{0};
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  uint64_t removed_dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_BOUNDED_FAN_OUT_H_
