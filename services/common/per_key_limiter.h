// How many of one resource (WatchHits streams, fleet hit watchers, unix-socket
// connections) each key holds at once: a caller identity ("uid:1000", "CN=viewer") or a uid.
// Every key gets the same share, and, when a total is set, all keys together are bounded
// too, so one caller at its limit cannot starve the others: they are still served until
// the total is reached. Used by the agent (WatchHits per identity, its unix socket per uid)
// and the controller (WatchFleetHits per identity).
//
// Acquire hands out a lease that gives the place back when it is destroyed (the end of a
// stream, a connection closed). Over a limit it is RESOURCE_EXHAUSTED naming the key, the
// count, the limit's flag and what to do:
//   uid:1000 already has 8 WatchHits streams open, the most one caller may have
//   (--max-watch-streams-per-identity=8): close one of them, or ask the operator to raise
//   the flag
// Thread-safe.
#ifndef XOLFLEET_SERVICES_COMMON_PER_KEY_LIMITER_H_
#define XOLFLEET_SERVICES_COMMON_PER_KEY_LIMITER_H_

#include <cstddef>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace xolfleet {

class PerKeyLimiter {
 public:
  struct Options {
    size_t per_key = 8;  // at least 1
    size_t total = 0;    // over all keys together; 0: none
    // For messages: "<key> already has N <what> open, the most one <holder> may have
    // (<per_key_flag>=N): <advice>"; over the total: "N <what> open in all, the most
    // <server> serves (<total_flag>=N): <advice>".
    std::string what = "streams";
    std::string holder = "caller";
    std::string server = "this server";
    std::string per_key_flag;
    std::string total_flag;
    std::string advice = "close one of them, or ask the operator to raise the limit";
  };

  // A place held for one key; destroying it (or Release) gives the place back.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { Release(); }

    void Release();
    bool held() const { return limiter_ != nullptr; }
    const std::string& key() const { return key_; }

   private:
    friend class PerKeyLimiter;
    Lease(PerKeyLimiter* limiter, std::string key) : limiter_(limiter), key_(std::move(key)) {}
    PerKeyLimiter* limiter_ = nullptr;
    std::string key_;
  };

  explicit PerKeyLimiter(Options options);
  // Leases must not outlive the limiter.
  ~PerKeyLimiter() = default;
  PerKeyLimiter(const PerKeyLimiter&) = delete;
  PerKeyLimiter& operator=(const PerKeyLimiter&) = delete;

  // A place for `key`, or RESOURCE_EXHAUSTED (above) when the key holds per_key places
  // or all keys together hold total; nothing is taken then.
  absl::StatusOr<Lease> Acquire(absl::string_view key) ABSL_LOCKS_EXCLUDED(mu_);

  size_t count(absl::string_view key) const ABSL_LOCKS_EXCLUDED(mu_);
  size_t total() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t keys() const ABSL_LOCKS_EXCLUDED(mu_);  // keys holding at least one place
  const Options& options() const { return options_; }

 private:
  void Give(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, size_t> held_ ABSL_GUARDED_BY(mu_);
  size_t total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_PER_KEY_LIMITER_H_
