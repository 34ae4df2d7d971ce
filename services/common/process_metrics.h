// Series every xolfleet server (agent, controller) exports besides its own:
//
//   xolfleet_build_info{version,commit}         gauge, always 1 (build_info.h): which release
//                                               and commit each process runs (version skew)
//   xolfleet_config_reloads_total{config,result}  counter: changed configuration files read,
//                                               result "applied" or "refused" (the previous
//                                               configuration stayed in force)
//   xolfleet_config_in_force{config}            gauge: 1 while the files on disk are the
//                                               configuration in force, 0 while the last
//                                               change was refused
//
// config: "tls" (the server's certificates), "controller_tls" (the agent's client
// certificates for the controller), "authz" (the authorization policy).
#ifndef XOLFLEET_SERVICES_COMMON_PROCESS_METRICS_H_
#define XOLFLEET_SERVICES_COMMON_PROCESS_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "absl/strings/string_view.h"
#include "services/common/config_reload.h"

namespace xolfleet {

class ProcessMetrics final : public ReloadObserver {
 public:
  // Registers the series above in `registry`, which must outlive this.
  explicit ProcessMetrics(prometheus::Registry& registry);

  // Series for `config` before its first change, so a refusal is an increase from 0.
  void WatchConfig(absl::string_view config);
  void OnConfigReload(absl::string_view config, bool applied) override;
  void OnConfigInForce(absl::string_view config, bool in_force) override;

 private:
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Family<prometheus::Gauge>& in_force_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_PROCESS_METRICS_H_
