#include "services/common/process_metrics.h"

#include <string>

#include "services/common/build_info.h"

namespace xolfleet {

ProcessMetrics::ProcessMetrics(prometheus::Registry& registry)
    : reloads_(prometheus::BuildCounter()
                   .Name("xolfleet_config_reloads_total")
                   .Help("Changed configuration files read, by config and result (applied, or "
                         "refused: the previous configuration stayed in force)")
                   .Register(registry)),
      in_force_(prometheus::BuildGauge()
                    .Name("xolfleet_config_in_force")
                    .Help("1 while a config's files on disk are the ones in force, 0 while their "
                          "last change was refused")
                    .Register(registry)) {
  prometheus::BuildGauge()
      .Name("xolfleet_build_info")
      .Help("The running release and git commit (value always 1)")
      .Register(registry)
      .Add({{"version", std::string(BuildVersion())}, {"commit", std::string(BuildCommit())}})
      .Set(1);
}

void ProcessMetrics::WatchConfig(absl::string_view config) {
  const std::string c(config);
  reloads_.Add({{"config", c}, {"result", "applied"}});
  reloads_.Add({{"config", c}, {"result", "refused"}});
  in_force_.Add({{"config", c}}).Set(1);
}

void ProcessMetrics::OnConfigReload(absl::string_view config, bool applied) {
  const std::string c(config);
  reloads_.Add({{"config", c}, {"result", applied ? "applied" : "refused"}}).Increment();
}

void ProcessMetrics::OnConfigInForce(absl::string_view config, bool in_force) {
  in_force_.Add({{"config", std::string(config)}}).Set(in_force ? 1 : 0);
}

}  // namespace xolfleet
