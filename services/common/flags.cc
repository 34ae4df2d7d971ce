#include "services/common/flags.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/parse.h"

namespace xolfleet {

void ParseFlags(int argc, char** argv) {
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
