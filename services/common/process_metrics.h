// Series every xolfleet server (agent, controller) exports besides its own:
//
//   xolfleet_build_info{version,commit}   gauge, always 1 (build_info.h): which release and
//                                         commit each process runs, for version-skew alerts
#ifndef XOLFLEET_SERVICES_COMMON_PROCESS_METRICS_H_
#define XOLFLEET_SERVICES_COMMON_PROCESS_METRICS_H_

#include <prometheus/registry.h>

namespace xolfleet {

// Registers the series above in `registry`.
void RegisterProcessMetrics(prometheus::Registry& registry);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_PROCESS_METRICS_H_
