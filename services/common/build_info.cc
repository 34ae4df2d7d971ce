#include "services/common/build_info.h"

#include "absl/strings/str_cat.h"

// Defined in the generated build_info_stamp.cc (BUILD.bazel, :build_info_stamp).
extern "C" const char kXolfleetBuildVersion[];
extern "C" const char kXolfleetBuildCommit[];

namespace xolfleet {

absl::string_view BuildVersion() { return kXolfleetBuildVersion; }

absl::string_view BuildCommit() {
  absl::string_view c = kXolfleetBuildCommit;
  return c.empty() ? "unknown" : c;
}

std::string VersionLine(absl::string_view program) {
  if (BuildCommit() == "unknown") return absl::StrCat(program, " ", BuildVersion());
  return absl::StrCat(program, " ", BuildVersion(), " (commit ", BuildCommit(), ")");
}

}  // namespace xolfleet
