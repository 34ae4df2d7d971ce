#include "services/controller/hit_hub.h"

#include <algorithm>

namespace xolfleet::controller {

bool HitWatcher::Wants(const v1::FleetHitUpdate& u) const {
  return (sets_.empty() || sets_.count(u.set_id())) &&
         (nodes_.empty() || nodes_.count(u.node_name()));
}

bool HitWatcher::Offer(const v1::FleetHitUpdate& u) {
  absl::MutexLock l(&mu_);
  if (closed_) return true;
  if (queue_.size() >= capacity_) {
    ++dropped_;
    return false;
  }
  queue_.push_back(u);
  return true;
}

void HitWatcher::Notice(const std::string& text) {
  absl::MutexLock l(&mu_);
  if (closed_) return;
  if (notices_.size() >= HitHub::kMaxNotices) notices_.pop_front();
  notices_.push_back(text);
}

bool HitWatcher::Next(size_t max, absl::Duration timeout, v1::FleetHitBatch* out) {
  out->Clear();
  absl::MutexLock l(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || !notices_.empty() || closed_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  for (auto& text : notices_) out->add_notices(std::move(text));
  notices_.clear();
  size_t n = std::min(max, queue_.size());
  for (size_t i = 0; i < n; ++i) {
    *out->add_updates() = std::move(queue_.front());
    queue_.pop_front();
  }
  out->set_dropped_total(dropped_);
  return !(closed_ && queue_.empty() && n == 0 && out->notices_size() == 0);
}

void HitWatcher::Close() {
  absl::MutexLock l(&mu_);
  closed_ = true;
}

std::shared_ptr<HitWatcher> HitHub::Subscribe(std::set<std::string> sets,
                                              std::set<std::string> nodes, size_t capacity) {
  auto w = std::make_shared<HitWatcher>(std::move(sets), std::move(nodes),
                                        std::max<size_t>(capacity, 1));
  absl::MutexLock l(&mu_);
  watchers_.push_back(w);
  return w;
}

void HitHub::Unsubscribe(const std::shared_ptr<HitWatcher>& w) {
  w->Close();
  absl::MutexLock l(&mu_);
  watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), w), watchers_.end());
}

void HitHub::Publish(const std::vector<v1::FleetHitUpdate>& updates) {
  if (updates.empty()) return;
  std::vector<std::shared_ptr<HitWatcher>> ws;
  {
    absl::MutexLock l(&mu_);
    ws = watchers_;
  }
  uint64_t drops = 0;
  for (const auto& w : ws) {
    for (const auto& u : updates) {
      if (w->Wants(u) && !w->Offer(u)) ++drops;
    }
  }
  if (drops && on_drop_) on_drop_(drops);
}

void HitHub::Notice(const std::string& text) {
  std::vector<std::shared_ptr<HitWatcher>> ws;
  {
    absl::MutexLock l(&mu_);
    ws = watchers_;
  }
  for (const auto& w : ws) w->Notice(text);
}

size_t HitHub::watchers() const {
  absl::MutexLock l(&mu_);
  return watchers_.size();
}

}  // namespace xolfleet::controller
