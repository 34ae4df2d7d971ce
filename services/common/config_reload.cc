#include "services/common/config_reload.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/log.h"

namespace xolfleet {

absl::StatusOr<std::string> ReadConfigFile(const std::string& path, bool allow_empty) {
  std::ifstream in(path);
  if (!in) return absl::FailedPreconditionError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty() && !allow_empty)
    return absl::FailedPreconditionError(absl::StrCat(path, " is empty"));
  return ss.str();
}

ConfigPoller::ConfigPoller(Options options, std::vector<std::string> initial, Loader load)
    : options_(std::move(options)), load_(std::move(load)), last_seen_(std::move(initial)) {
  if (options_.interval > absl::ZeroDuration()) thread_ = std::thread([this] { Run(); });
}

ConfigPoller::~ConfigPoller() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ConfigPoller::Run() {
  absl::MutexLock l(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.interval)) {
    mu_.Unlock();
    (void)PollNow();
    mu_.Lock();
  }
}

absl::Status ConfigPoller::PollNow() {
  absl::MutexLock l(&poll_mu_);
  std::vector<std::string> contents;
  for (const std::string& path : options_.paths) {
    absl::StatusOr<std::string> c = ReadConfigFile(path);
    if (!c.ok()) {
      // Missing or empty: in the middle of an update, or removed. Say so once per streak;
      // what is in force stays.
      if (!read_failed_) {
        Log(options_.name, ": ", c.status().message(), "; keeping the configuration in force");
        if (options_.observer != nullptr) {
          options_.observer->OnConfigReload(options_.name, false);
          options_.observer->OnConfigInForce(options_.name, false);
        }
      }
      read_failed_ = true;
      return c.status();
    }
    contents.push_back(*std::move(c));
  }
  const bool recovered = read_failed_;
  read_failed_ = false;
  if (contents == last_seen_) {
    // Readable again, and what was read last: in force if that was.
    if (recovered && options_.observer != nullptr) {
      options_.observer->OnConfigInForce(options_.name, last_seen_applied_);
    }
    return absl::OkStatus();
  }
  // A refused version is remembered too, so it is logged and counted once, and loaded
  // again only when the files change again.
  last_seen_ = contents;
  absl::Status st = load_(contents);
  last_seen_applied_ = st.ok();
  if (st.ok()) {
    Log(options_.name, ": reloaded ", absl::StrJoin(options_.paths, ", "));
  } else {
    Log(options_.name, ": refused the new contents of ", absl::StrJoin(options_.paths, ", "),
        ", keeping the configuration in force: ", st.message());
  }
  if (options_.observer != nullptr) {
    options_.observer->OnConfigReload(options_.name, st.ok());
    options_.observer->OnConfigInForce(options_.name, st.ok());
  }
  return st;
}

}  // namespace xolfleet
