// One flag spelling for every xolfleet binary: Abseil flag names use underscores, and
// `--link-mode` is accepted as well as `--link_mode` (the agent, the controller and the
// simulator agree; xolctl's own options use dashes).
#ifndef XOLFLEET_SERVICES_COMMON_FLAGS_H_
#define XOLFLEET_SERVICES_COMMON_FLAGS_H_

namespace xolfleet {

// absl::ParseCommandLine after turning dashes in `--flag-name` (before any '=') into underscores;
// values are untouched. `--version` prints "PROGRAM 0.5.0 (commit C)" (build_info.h) and exits 0.
void ParseFlags(int argc, char** argv);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_FLAGS_H_
