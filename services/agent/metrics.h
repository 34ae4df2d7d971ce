// The agent's Prometheus metrics (/metrics through prometheus-cpp's pull Exposer).
//
//   xolfleet_agent_probes{placement,state}               gauge
//   xolfleet_agent_probe_hits_total{probe_id}            counter (attached probes)
//   xolfleet_agent_hits_total                            counter (all probes since start)
//   xolfleet_agent_events_emitted_total                  counter
//   xolfleet_agent_ringbuf_dropped_events_total          counter (ring buffer full)
//   xolfleet_agent_events_rate_limited_total             counter
//   xolfleet_agent_watch_dropped_events_total            counter (slow WatchHits clients)
//   xolfleet_agent_attach_duration_seconds               histogram (per Attach request)
//   xolfleet_agent_detach_duration_seconds               histogram (per Detach / expiry)
//   xolfleet_agent_attach_requests_total{result}         counter (ok|error)
//   xolfleet_agent_placement_mismatches                  gauge (patched kernel)
//   xolfleet_agent_probe_placements{predicted,kernel}    gauge (kernel: the patched
//                                                        kernel's word, or UNREPORTED)
//   xolfleet_agent_kernel_profile_info{profile,patched,boosts}  gauge (1)
//   xolfleet_agent_calibration_seconds_per_hit{placement,capture}  gauge
//   xolfleet_agent_probe_cpu_seconds_per_second{probe_id}  gauge (estimated)
//   xolfleet_agent_cpu_seconds_per_second                gauge (all probes, estimated)
//   xolfleet_agent_node_budget_cpu                       gauge (--node-budget)
//   xolfleet_agent_budget_actions_total{action,scope}    counter
//   xolfleet_agent_probes_by_budget_state{state}         gauge
//   xolfleet_kernel_uprobe_hits_total{placement}         counter (patched kernel)
//   xolfleet_kernel_slot_reinstalls_total, _slot_migrations_total,
//   _signals_deferred_total, _signals_translated_total,
//   _fault_rollbacks_total                               counters (patched kernel)
//   xolfleet_build_info, xolfleet_config_*               services/common/process_metrics.h
//
// Labels are bounded: placement, state and action are enums, probe_id is bounded by
// --max-probes (and only the first --metrics-max-probe-series probes get a series).
#ifndef XOLFLEET_SERVICES_AGENT_METRICS_H_
#define XOLFLEET_SERVICES_AGENT_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/agent/hit_hub.h"
#include "services/agent/probe_manager.h"
#include "services/common/process_metrics.h"

namespace xolfleet {

class AgentMetrics final : public ProbeManagerObserver {
 public:
  // Serves /metrics on `address` ("host:port").
  static absl::StatusOr<std::unique_ptr<AgentMetrics>> Start(const std::string& address,
                                                             const ProbeManager* manager,
                                                             const HitHub* hub,
                                                             size_t max_probe_series);
  ~AgentMetrics() override;

  void OnAttach(absl::Duration latency, size_t probes, bool ok) override;
  void OnDetach(absl::Duration latency, size_t probes) override;

  // Build info and configuration reloads (services/common/process_metrics.h).
  ProcessMetrics* process() { return process_.get(); }

  // The text a scrape returns (tests).
  std::string Render() const;

 private:
  AgentMetrics() = default;
  class Collector;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<ProcessMetrics> process_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Histogram* attach_seconds_ = nullptr;
  prometheus::Histogram* detach_seconds_ = nullptr;
  prometheus::Counter* attach_ok_ = nullptr;
  prometheus::Counter* attach_error_ = nullptr;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_METRICS_H_
