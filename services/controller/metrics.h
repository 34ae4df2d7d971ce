// The controller's Prometheus metrics. Counters and histograms live in a registry and
// are updated on the hot path through cached children; gauges that describe the current
// fleet (agents by state, probes per node) are built at scrape time from the controller's
// state by a collector, so a node or probe that goes away leaves no stale series.
#ifndef XOLFLEET_SERVICES_CONTROLLER_METRICS_H_
#define XOLFLEET_SERVICES_CONTROLLER_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "services/common/process_metrics.h"
#include "xolfleet/v1/common.pb.h"

namespace xolfleet::controller {

// A gauge sample for the scrape-time collector.
struct GaugeSample {
  std::map<std::string, std::string> labels;
  double value = 0;
};
struct GaugeFamily {
  std::string name, help;
  std::vector<GaugeSample> samples;
};

class FleetMetrics {
 public:
  FleetMetrics();

  std::shared_ptr<prometheus::Registry> registry() { return registry_; }
  // Build info and configuration reloads (services/common/process_metrics.h).
  ProcessMetrics* process() { return process_.get(); }
  // A collectable that calls `fn` at every scrape.
  static std::shared_ptr<prometheus::Collectable> MakeCollector(
      std::function<std::vector<GaugeFamily>()> fn);

  void AddHits(const std::string& node, const std::string& placement, uint64_t n);
  // Adds what a node's patched-kernel counters moved by since its previous heartbeat.
  void AddKernelCounters(const std::string& node, const v1::KernelSlotStats& delta);
  void RolloutFinished(const std::string& outcome);
  void Request(const std::string& method, const std::string& code, double seconds);
  void Denied(const std::string& method, const std::string& capability);
  void HitUpdatesDropped(uint64_t n);
  // Replicas: from another replica receiving a heartbeat with new hits to their counting here.
  void RemoteHitsDelay(double seconds);
  void AgentConnected();
  void Heartbeat();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ProcessMetrics> process_;
  prometheus::Family<prometheus::Counter>& fleet_hits_;
  prometheus::Family<prometheus::Counter>& node_hits_;
  prometheus::Family<prometheus::Counter>& slot_migrations_;
  prometheus::Family<prometheus::Counter>& slot_reinstalls_;
  prometheus::Family<prometheus::Counter>& kernel_hits_;
  prometheus::Family<prometheus::Counter>& rollouts_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& denials_;
  prometheus::Histogram& remote_delay_;
  prometheus::Counter& dropped_;
  prometheus::Counter& connections_;
  prometheus::Counter& heartbeats_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, prometheus::Histogram*> latency_children_ ABSL_GUARDED_BY(mu_);
};

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_METRICS_H_
