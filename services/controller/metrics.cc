#include "services/controller/metrics.h"

#include <utility>

namespace xolfleet::controller {
namespace {

class FnCollector : public prometheus::Collectable {
 public:
  explicit FnCollector(std::function<std::vector<GaugeFamily>()> fn) : fn_(std::move(fn)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    for (auto& g : fn_()) {
      prometheus::MetricFamily f;
      f.name = g.name;
      f.help = g.help;
      f.type = prometheus::MetricType::Gauge;
      for (auto& s : g.samples) {
        prometheus::ClientMetric m;
        for (auto& [k, v] : s.labels) m.label.push_back({k, v});
        m.gauge.value = s.value;
        f.metric.push_back(std::move(m));
      }
      out.push_back(std::move(f));
    }
    return out;
  }

 private:
  std::function<std::vector<GaugeFamily>()> fn_;
};

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

}  // namespace

FleetMetrics::FleetMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      fleet_hits_(prometheus::BuildCounter()
                      .Name("xolfleet_controller_fleet_hits_total")
                      .Help("Probe hits across the fleet, by placement (from agent reports)")
                      .Register(*registry_)),
      node_hits_(prometheus::BuildCounter()
                     .Name("xolfleet_controller_node_hits_total")
                     .Help("Fleet probe hits per node and placement (from agent reports)")
                     .Register(*registry_)),
      slot_migrations_(prometheus::BuildCounter()
                           .Name("xolfleet_controller_node_slot_migrations_total")
                           .Help("XOL slot migrations reported by each node's kernel")
                           .Register(*registry_)),
      slot_reinstalls_(prometheus::BuildCounter()
                           .Name("xolfleet_controller_node_slot_reinstalls_total")
                           .Help("XOL slot reinstalls reported by each node's kernel")
                           .Register(*registry_)),
      kernel_hits_(prometheus::BuildCounter()
                       .Name("xolfleet_controller_node_kernel_uprobe_hits_total")
                       .Help("Uprobe hits (every probe on the node, fleet or local) by how the "
                             "node's patched kernel executed them")
                       .Register(*registry_)),
      rollouts_(prometheus::BuildCounter()
                    .Name("xolfleet_controller_rollouts_total")
                    .Help("Rollouts that ended, by outcome")
                    .Register(*registry_)),
      latency_(prometheus::BuildHistogram()
                   .Name("xolfleet_controller_request_duration_seconds")
                   .Help("Fleet API request latency, by method")
                   .Register(*registry_)),
      requests_(prometheus::BuildCounter()
                    .Name("xolfleet_controller_requests_total")
                    .Help("Fleet API requests, by method and gRPC status code")
                    .Register(*registry_)),
      denials_(prometheus::BuildCounter()
                   .Name("xolfleet_controller_authz_denials_total")
                   .Help("Requests denied for a missing capability")
                   .Register(*registry_)),
      remote_delay_(
          prometheus::BuildHistogram()
              .Name("xolfleet_controller_remote_hits_delay_seconds")
              .Help("Replicas: from another replica receiving a heartbeat with new hits to this "
                    "replica counting them (its status flush and this replica's sync)")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2,
                                                               5, 10})),
      dropped_(prometheus::BuildCounter()
                   .Name("xolfleet_controller_hit_updates_dropped_total")
                   .Help("Hit updates dropped because a watcher's queue was full")
                   .Register(*registry_)
                   .Add({})),
      connections_(prometheus::BuildCounter()
                       .Name("xolfleet_controller_agent_connections_total")
                       .Help("Agent link streams accepted (registrations)")
                       .Register(*registry_)
                       .Add({})),
      heartbeats_(prometheus::BuildCounter()
                      .Name("xolfleet_controller_heartbeats_total")
                      .Help("Agent heartbeats received")
                      .Register(*registry_)
                      .Add({})) {
  for (const char* o : {"complete", "degraded", "rolled_back"}) rollouts_.Add({{"outcome", o}});
  process_ = std::make_unique<ProcessMetrics>(*registry_);
}

std::shared_ptr<prometheus::Collectable> FleetMetrics::MakeCollector(
    std::function<std::vector<GaugeFamily>()> fn) {
  return std::make_shared<FnCollector>(std::move(fn));
}

void FleetMetrics::AddHits(const std::string& node, const std::string& placement, uint64_t n) {
  fleet_hits_.Add({{"placement", placement}}).Increment(static_cast<double>(n));
  node_hits_.Add({{"node", node}, {"placement", placement}}).Increment(static_cast<double>(n));
}

void FleetMetrics::AddKernelCounters(const std::string& node, const v1::KernelSlotStats& d) {
  slot_migrations_.Add({{"node", node}}).Increment(static_cast<double>(d.slot_migrations()));
  slot_reinstalls_.Add({{"node", node}}).Increment(static_cast<double>(d.slot_reinstalls()));
  const std::pair<const char*, uint64_t> hits[] = {{"EMULATED", d.hits_emulated()},
                                                   {"BOOSTED", d.hits_boosted()},
                                                   {"BOOSTED_RIPREL", d.hits_boosted_riprel()},
                                                   {"SINGLE_STEP", d.hits_single_step()}};
  for (const auto& [placement, n] : hits) {
    kernel_hits_.Add({{"node", node}, {"placement", placement}}).Increment(static_cast<double>(n));
  }
}

void FleetMetrics::RolloutFinished(const std::string& outcome) {
  rollouts_.Add({{"outcome", outcome}}).Increment();
}

void FleetMetrics::Request(const std::string& method, const std::string& code, double seconds) {
  prometheus::Histogram* h;
  {
    absl::MutexLock l(&mu_);
    auto& slot = latency_children_[method];
    if (!slot) slot = &latency_.Add({{"method", method}}, LatencyBuckets());
    h = slot;
  }
  h->Observe(seconds);
  requests_.Add({{"method", method}, {"code", code}}).Increment();
}

void FleetMetrics::Denied(const std::string& method, const std::string& capability) {
  denials_.Add({{"method", method}, {"capability", capability}}).Increment();
}

void FleetMetrics::RemoteHitsDelay(double seconds) { remote_delay_.Observe(seconds); }

void FleetMetrics::HitUpdatesDropped(uint64_t n) { dropped_.Increment(static_cast<double>(n)); }
void FleetMetrics::AgentConnected() { connections_.Increment(); }
void FleetMetrics::Heartbeat() { heartbeats_.Increment(); }

}  // namespace xolfleet::controller
