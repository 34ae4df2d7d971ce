// Minimal timestamped logging to stderr (the Debian Abseil predates absl/log).
#ifndef XOLFLEET_SERVICES_COMMON_LOG_H_
#define XOLFLEET_SERVICES_COMMON_LOG_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace xolfleet {

template <typename... Args>
void Log(const Args&... args) {
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ ", absl::Now(), absl::UTCTimeZone()), args..., "\n");
  fputs(line.c_str(), stderr);
}

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_LOG_H_
