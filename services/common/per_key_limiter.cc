#include "services/common/per_key_limiter.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace xolfleet {

PerKeyLimiter::Lease& PerKeyLimiter::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    limiter_ = std::exchange(other.limiter_, nullptr);
    key_ = std::move(other.key_);
  }
  return *this;
}

void PerKeyLimiter::Lease::Release() {
  if (limiter_ == nullptr) return;
  std::exchange(limiter_, nullptr)->Give(key_);
}

PerKeyLimiter::PerKeyLimiter(Options options) : options_(std::move(options)) {}

absl::StatusOr<PerKeyLimiter::Lease> PerKeyLimiter::Acquire(absl::string_view key) {
  const size_t per_key = std::max<size_t>(options_.per_key, 1);
  absl::MutexLock l(&mu_);
  auto it = held_.find(key);
  const size_t mine = it == held_.end() ? 0 : it->second;
  if (mine >= per_key) {
    return absl::ResourceExhaustedError(absl::StrCat(
        key, " already has ", mine, " ", options_.what, " open, the most one ", options_.holder,
        " may have (", options_.per_key_flag, "=", per_key, "): ", options_.advice));
  }
  if (options_.total > 0 && total_ >= options_.total) {
    return absl::ResourceExhaustedError(absl::StrCat(
        total_, " ", options_.what, " open in all, the most ", options_.server, " serves (",
        options_.total_flag, "=", options_.total, "): ", options_.advice));
  }
  if (it == held_.end()) it = held_.emplace(std::string(key), 0).first;
  ++it->second;
  ++total_;
  return Lease(this, it->first);
}

void PerKeyLimiter::Give(const std::string& key) {
  absl::MutexLock l(&mu_);
  auto it = held_.find(key);
  if (it == held_.end()) return;
  if (--it->second == 0) held_.erase(it);
  --total_;
}

size_t PerKeyLimiter::count(absl::string_view key) const {
  absl::MutexLock l(&mu_);
  auto it = held_.find(key);
  return it == held_.end() ? 0 : it->second;
}

size_t PerKeyLimiter::total() const {
  absl::MutexLock l(&mu_);
  return total_;
}

size_t PerKeyLimiter::keys() const {
  absl::MutexLock l(&mu_);
  return held_.size();
}

}  // namespace xolfleet
