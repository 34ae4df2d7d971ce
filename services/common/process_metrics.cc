#include "services/common/process_metrics.h"

#include <prometheus/gauge.h>

#include <string>

#include "services/common/build_info.h"

namespace xolfleet {

void RegisterProcessMetrics(prometheus::Registry& registry) {
  prometheus::BuildGauge()
      .Name("xolfleet_build_info")
      .Help("The running release and git commit (value always 1)")
      .Register(registry)
      .Add({{"version", std::string(BuildVersion())}, {"commit", std::string(BuildCommit())}})
      .Set(1);
}

}  // namespace xolfleet
