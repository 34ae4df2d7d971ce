#include "services/common/flags.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "services/common/build_info.h"

namespace xolfleet {

namespace {
// The name a user typed: "xolfleet-agent" also for the program the private-library
// launcher runs (".../xolfleet-agent_dynamic").
std::string ProgramName(const char* argv0) {
  absl::string_view name = argv0 == nullptr ? "xolfleet" : argv0;
  if (size_t slash = name.rfind('/'); slash != absl::string_view::npos) {
    name.remove_prefix(slash + 1);
  }
  absl::ConsumeSuffix(&name, "_dynamic");
  return std::string(name);
}
}  // namespace

void ParseFlags(int argc, char** argv) {
  absl::FlagsUsageConfig config;
  std::string program = ProgramName(argc > 0 ? argv[0] : nullptr);
  config.version_string = [program] { return VersionLine(program) + "\n"; };
  absl::SetFlagsUsageConfig(config);
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> fixed;
  bool after_double_dash = false;
  for (std::string& a : args) {
    if (a == "--") after_double_dash = true;
    if (!after_double_dash && a.size() > 2 && a[0] == '-' && a[1] == '-') {
      size_t end = std::min(a.find('='), a.size());
      std::replace(a.begin() + 2, a.begin() + end, '-', '_');
    }
    fixed.push_back(a.data());
  }
  absl::ParseCommandLine(static_cast<int>(fixed.size()), fixed.data());
}

}  // namespace xolfleet
