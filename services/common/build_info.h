// What was built: the release in the repository's VERSION file and the git commit it was
// built from (scripts/workspace_status.sh), stamped at build time by the genrule
// :build_info_stamp. Every binary prints them for --version (ParseFlags, xolctl) and the
// servers export them as xolfleet_build_info{version,commit} (process_metrics.h).
#ifndef XOLFLEET_SERVICES_COMMON_BUILD_INFO_H_
#define XOLFLEET_SERVICES_COMMON_BUILD_INFO_H_

#include <string>

#include "absl/strings/string_view.h"

namespace xolfleet {

// "0.5.0".
absl::string_view BuildVersion();
// A short git commit ("b237fdab2e56", "-dirty" if the tree had local changes), or
// "unknown" when built outside a git checkout.
absl::string_view BuildCommit();
// "PROGRAM 0.5.0 (commit b237fdab2e56)"; without the commit part when it is unknown.
std::string VersionLine(absl::string_view program);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_BUILD_INFO_H_
