#include "services/controller/hit_hub.h"

#include <algorithm>

namespace xolfleet::controller {

void HitWatcher::Notice(const std::string& text) {
  if (updates_->closed()) return;
  {
    absl::MutexLock l(&mu_);
    if (notices_.size() >= HitHub::kMaxNotices) notices_.pop_front();
    notices_.push_back(text);
  }
  updates_->Wake();  // a Take waiting for updates returns with the notice
}

bool HitWatcher::Take(v1::FleetHitBatch* out, size_t max, absl::Duration timeout) {
  out->Clear();
  bool have_notices;
  {
    absl::MutexLock l(&mu_);
    have_notices = !notices_.empty();
  }
  taken_.clear();
  // A notice queued after this check wakes the Take below.
  const bool open = updates_->Take(&taken_, max, have_notices ? absl::ZeroDuration() : timeout);
  {
    absl::MutexLock l(&mu_);
    for (auto& text : notices_) out->add_notices(std::move(text));
    notices_.clear();
  }
  for (auto& u : taken_) *out->add_updates() = std::move(u);
  out->set_dropped_total(updates_->dropped());
  return open || out->notices_size() > 0;
}

std::shared_ptr<HitWatcher> HitHub::AddWatcher(std::set<std::string> sets,
                                               std::set<std::string> nodes, size_t capacity) {
  HitFanOut::Filter wants;  // empty: every update
  if (!sets.empty() || !nodes.empty()) {
    wants = [sets = std::move(sets), nodes = std::move(nodes)](const v1::FleetHitUpdate& u) {
      return (sets.empty() || sets.count(u.set_id())) &&
             (nodes.empty() || nodes.count(u.node_name()));
    };
  }
  // No watcher limit here: the service limits streams per identity and in all.
  auto w = std::make_shared<HitWatcher>(fan_out_.AddWatcher(std::move(wants), capacity).value());
  absl::MutexLock l(&mu_);
  watchers_.push_back(w);
  return w;
}

void HitHub::RemoveWatcher(const std::shared_ptr<HitWatcher>& w) {
  fan_out_.RemoveWatcher(w->updates_);
  absl::MutexLock l(&mu_);
  watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), w), watchers_.end());
}

void HitHub::Publish(const std::vector<v1::FleetHitUpdate>& updates) {
  if (updates.empty()) return;
  const uint64_t drops = fan_out_.Publish(HitFanOut::Chunk(updates));
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

size_t HitHub::watchers() const { return fan_out_.watchers(); }

}  // namespace xolfleet::controller
