// Configuration that changes under a running server: certificates (cert_reloader.h) and
// authorization policies (authz.h, AuthzPolicy). A ConfigPoller re-reads a set of files
// every interval; when their contents differ from the last read it hands them to a loader,
// which validates them and either puts them in force or refuses them. A refused version
// leaves the previous one in force: a half-written or broken file never replaces a working
// configuration. Each outcome is logged once per distinct content and reported to a
// ReloadObserver (metrics: process_metrics.h).
//
// Polling rather than inotify: Kubernetes updates mounted Secrets and ConfigMaps by
// swapping a symlinked directory, which inotify on the file paths does not see, and a
// poll of a few small files every few seconds costs nothing.
#ifndef XOLFLEET_SERVICES_COMMON_CONFIG_RELOAD_H_
#define XOLFLEET_SERVICES_COMMON_CONFIG_RELOAD_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace xolfleet {

class ReloadObserver {
 public:
  virtual ~ReloadObserver() = default;
  // `config` ("tls", "controller_tls", "authz") was read with new contents and put in
  // force (`applied`) or refused (the previous version stays in force); an unreadable or
  // empty file counts as refused.
  virtual void OnConfigReload(absl::string_view config, bool applied) = 0;
  // Whether the files on disk are now the version in force: false after a refusal, true
  // again once they are applied or back to the version in force.
  virtual void OnConfigInForce(absl::string_view config, bool in_force) {}
};

class ConfigPoller final {
 public:
  // Gets the files' contents, in the order of Options::paths; OK when it put them in force.
  using Loader = std::function<absl::Status(const std::vector<std::string>& contents)>;

  struct Options {
    std::string name;                // "tls", "authz", ...: logs and metrics
    std::vector<std::string> paths;  // files read together
    absl::Duration interval = absl::Seconds(10);
    ReloadObserver* observer = nullptr;  // may be null
  };

  // `initial` are the contents in force now (what the caller loaded at start-up); the
  // poller calls `load` only for contents that differ from them. Polls every interval on
  // its own thread until destroyed; an interval of zero starts no thread (PollNow only).
  ConfigPoller(Options options, std::vector<std::string> initial, Loader load);
  ~ConfigPoller();
  ConfigPoller(const ConfigPoller&) = delete;
  ConfigPoller& operator=(const ConfigPoller&) = delete;

  // One poll now: reads the files and loads them if they changed. OK if nothing changed or
  // the new contents were applied; the loader's or the read's error otherwise.
  absl::Status PollNow();

 private:
  void Run();

  const Options options_;
  const Loader load_;
  absl::Mutex poll_mu_;  // one poll at a time
  std::vector<std::string> last_seen_ ABSL_GUARDED_BY(poll_mu_);
  bool read_failed_ ABSL_GUARDED_BY(poll_mu_) = false;
  bool last_seen_applied_ ABSL_GUARDED_BY(poll_mu_) = true;  // last_seen_ is in force
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// The whole file, or FAILED_PRECONDITION naming the path (unreadable, or empty unless
// allowed: a reload refuses an empty file, which is what a truncating writer leaves behind).
absl::StatusOr<std::string> ReadConfigFile(const std::string& path, bool allow_empty = false);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_CONFIG_RELOAD_H_
