#include "services/agent/metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <exception>

#include "absl/strings/str_cat.h"
#include "services/agent/kernel_stats.h"
#include "services/common/enum_names.h"

namespace xolfleet {

namespace pm = prometheus;

// Everything read from the kernel or the probe table at scrape time.
class AgentMetrics::Collector final : public pm::Collectable {
 public:
  Collector(const ProbeManager* m, const HitHub* hub, size_t max_series)
      : manager_(m), hub_(hub), max_series_(max_series) {}

  std::vector<pm::MetricFamily> Collect() const override {
    std::vector<pm::MetricFamily> out;
    auto family = [](const char* name, const char* help, pm::MetricType type) {
      pm::MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = type;
      return f;
    };
    auto counter = [](double v, std::vector<pm::ClientMetric::Label> labels = {}) {
      pm::ClientMetric m;
      m.label = std::move(labels);
      m.counter.value = v;
      return m;
    };
    auto gauge = [](double v, std::vector<pm::ClientMetric::Label> labels = {}) {
      pm::ClientMetric m;
      m.label = std::move(labels);
      m.gauge.value = v;
      return m;
    };

    pm::MetricFamily probes = family("xolfleet_agent_probes",
                                     "Probes by predicted placement and state (attached, and "
                                     "detached/expired ones still listed).",
                                     pm::MetricType::Gauge);
    for (const auto& [key, n] : manager_->ProbeCountsByPlacementAndState()) {
      probes.metric.push_back(gauge(n, {{"placement", key.first}, {"state", key.second}}));
    }
    out.push_back(std::move(probes));

    pm::MetricFamily hits =
        family("xolfleet_agent_probe_hits_total", "Hits counted in the kernel per attached probe.",
               pm::MetricType::Counter);
    std::vector<ProbeCounterSnapshot> snap = manager_->SnapshotCounters();
    for (size_t i = 0; i < snap.size() && i < max_series_; ++i) {
      hits.metric.push_back(counter(snap[i].hits, {{"probe_id", snap[i].id}}));
    }
    out.push_back(std::move(hits));

    xol_probe_counters t = manager_->Totals();
    auto total = [&](const char* name, const char* help, double v) {
      pm::MetricFamily f = family(name, help, pm::MetricType::Counter);
      f.metric.push_back(counter(v));
      out.push_back(std::move(f));
    };
    total("xolfleet_agent_hits_total", "Hits of every probe since the agent started.", t.hits);
    total("xolfleet_agent_events_emitted_total", "Hit events written to the ring buffer.",
          t.emitted);
    total("xolfleet_agent_ringbuf_dropped_events_total",
          "Hit events lost because the BPF ring buffer was full.", t.dropped);
    total("xolfleet_agent_events_rate_limited_total",
          "Hit events suppressed by per-probe rate limits (hits still counted).", t.rate_limited);
    total("xolfleet_agent_watch_dropped_events_total",
          "Hit events dropped for WatchHits clients that did not keep up.",
          hub_->watcher_dropped_total());

    pm::MetricFamily mism = family(
        "xolfleet_agent_placement_mismatches",
        "Attached probes whose kernel-reported placement differs from the classifier's prediction.",
        pm::MetricType::Gauge);
    mism.metric.push_back(gauge(manager_->placement_mismatches()));
    out.push_back(std::move(mism));

    pm::MetricFamily pk = family("xolfleet_agent_probe_placements",
                                 "Attached probes by the classifier's placement and the kernel's "
                                 "(UNREPORTED: the kernel does not report placements).",
                                 pm::MetricType::Gauge);
    for (const auto& [key, n] : manager_->ProbeCountsByPredictedAndKernelPlacement()) {
      pk.metric.push_back(gauge(n, {{"predicted", key.first}, {"kernel", key.second}}));
    }
    out.push_back(std::move(pk));

    const KernelProfileChoice prof = manager_->Profile();
    pm::MetricFamily pi = family("xolfleet_agent_kernel_profile_info",
                                 "The placement profile of the running kernel (value 1); follows "
                                 "kernel.uprobes_boost on the patched kernel.",
                                 pm::MetricType::Gauge);
    pi.metric.push_back(gauge(1, {{"profile", std::string(ProfileName(prof.profile))},
                                  {"patched", prof.patched ? "true" : "false"},
                                  {"boosts", prof.boosts ? "true" : "false"}}));
    out.push_back(std::move(pi));

    // Cost: calibration figures, estimated overhead per probe and per node, budgets.
    const v1::Calibration cal = manager_->calibration();
    pm::MetricFamily cf = family("xolfleet_agent_calibration_seconds_per_hit",
                                 "Measured cost of one probe hit on this node by placement "
                                 "(capture: the probe captured every register).",
                                 pm::MetricType::Gauge);
    for (const v1::CalibrationFigure& f : cal.figures()) {
      cf.metric.push_back(gauge(
          f.ns_per_hit() * 1e-9,
          {{"placement", ShortName(f.placement())}, {"capture", f.capture() ? "true" : "false"}}));
    }
    out.push_back(std::move(cf));
    pm::MetricFamily pc = family("xolfleet_agent_probe_cpu_seconds_per_second",
                                 "Estimated CPU time per second the probed processes spend on this "
                                 "probe's hits (calibrated cost x hit rate).",
                                 pm::MetricType::Gauge);
    for (size_t i = 0; i < snap.size() && i < max_series_; ++i) {
      pc.metric.push_back(gauge(snap[i].cpu_seconds_per_sec, {{"probe_id", snap[i].id}}));
    }
    out.push_back(std::move(pc));
    const v1::NodeCost nc = manager_->node_cost();
    auto single_gauge = [&](const char* name, const char* help, double v) {
      pm::MetricFamily f = family(name, help, pm::MetricType::Gauge);
      f.metric.push_back(gauge(v));
      out.push_back(std::move(f));
    };
    single_gauge("xolfleet_agent_cpu_seconds_per_second",
                 "Estimated CPU time per second spent on all probes of this node.",
                 nc.cpu_seconds_per_sec());
    single_gauge("xolfleet_agent_node_budget_cpu",
                 "The node's probe budget (--node-budget), fraction of one CPU.", nc.node_budget());
    pm::MetricFamily ba =
        family("xolfleet_agent_budget_actions_total",
               "Budget actions taken, by action and by which budget (probe or node) was exceeded.",
               pm::MetricType::Counter);
    for (const auto& [key, n] : manager_->BudgetActions()) {
      ba.metric.push_back(counter(n, {{"action", key.first}, {"scope", key.second}}));
    }
    out.push_back(std::move(ba));
    pm::MetricFamily bs = family("xolfleet_agent_probes_by_budget_state",
                                 "Attached probes by budget state.", pm::MetricType::Gauge);
    for (const auto& [state, n] : manager_->ProbeCountsByBudgetState()) {
      bs.metric.push_back(gauge(n, {{"state", state}}));
    }
    out.push_back(std::move(bs));

    absl::StatusOr<v1::KernelSlotStats> ks = ReadSlotStats();
    if (ks.ok()) {
      pm::MetricFamily kh =
          family("xolfleet_kernel_uprobe_hits_total",
                 "Uprobe hits by how the patched kernel executed them.", pm::MetricType::Counter);
      kh.metric.push_back(counter(ks->hits_emulated(), {{"placement", "EMULATED"}}));
      kh.metric.push_back(counter(ks->hits_boosted(), {{"placement", "BOOSTED"}}));
      kh.metric.push_back(counter(ks->hits_boosted_riprel(), {{"placement", "BOOSTED_RIPREL"}}));
      kh.metric.push_back(counter(ks->hits_single_step(), {{"placement", "SINGLE_STEP"}}));
      out.push_back(std::move(kh));
      total("xolfleet_kernel_slot_reinstalls_total", "XOL slot reinstalls (patched kernel).",
            ks->slot_reinstalls());
      total("xolfleet_kernel_slot_migrations_total",
            "XOL slot migrations across CPUs (patched kernel).", ks->slot_migrations());
      total("xolfleet_kernel_signals_deferred_total",
            "Signals deferred while in a slot (patched kernel).", ks->signals_deferred());
      total("xolfleet_kernel_signals_translated_total",
            "Signals that found a boosted slot past its displaced instruction: translated forward "
            "to the next instruction (patched kernel).",
            ks->signals_translated());
      total("xolfleet_kernel_fault_rollbacks_total",
            "Faults in a boosted slot (and fatal signals) rolled back to the probed address "
            "(patched kernel).",
            ks->fault_rollbacks());
      total("xolfleet_kernel_rep_rollbacks_total",
            "Boosted rep string instructions caught mid-way by a signal or fault, taken back to "
            "the probed address with the partial count (patched kernel).",
            ks->rep_rollbacks());
    }
    return out;
  }

 private:
  const ProbeManager* manager_;
  const HitHub* hub_;
  size_t max_series_;
};

absl::StatusOr<std::unique_ptr<AgentMetrics>> AgentMetrics::Start(const std::string& address,
                                                                  const ProbeManager* manager,
                                                                  const HitHub* hub,
                                                                  size_t max_probe_series) {
  std::unique_ptr<AgentMetrics> m(new AgentMetrics());
  m->registry_ = std::make_shared<pm::Registry>();
  m->process_ = std::make_unique<ProcessMetrics>(*m->registry_);
  // Seconds: uprobe_multi batches take milliseconds; perf-event detaches take ~80 ms each.
  const pm::Histogram::BucketBoundaries buckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  m->attach_seconds_ = &pm::BuildHistogram()
                            .Name("xolfleet_agent_attach_duration_seconds")
                            .Help("Time to validate and attach one Attach request.")
                            .Register(*m->registry_)
                            .Add({}, buckets);
  m->detach_seconds_ = &pm::BuildHistogram()
                            .Name("xolfleet_agent_detach_duration_seconds")
                            .Help("Time to detach one Detach request or one TTL expiry batch.")
                            .Register(*m->registry_)
                            .Add({}, buckets);
  auto& req = pm::BuildCounter()
                  .Name("xolfleet_agent_attach_requests_total")
                  .Help("Attach requests by result.")
                  .Register(*m->registry_);
  m->attach_ok_ = &req.Add({{"result", "ok"}});
  m->attach_error_ = &req.Add({{"result", "error"}});
  m->collector_ = std::make_shared<Collector>(manager, hub, max_probe_series);
  if (!address.empty()) {
    try {
      m->exposer_ = std::make_unique<pm::Exposer>(address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve /metrics on ", address, ": ", e.what()));
    }
    m->exposer_->RegisterCollectable(m->registry_);
    m->exposer_->RegisterCollectable(m->collector_);
  }
  return m;
}

AgentMetrics::~AgentMetrics() = default;

void AgentMetrics::OnAttach(absl::Duration latency, size_t, bool ok) {
  attach_seconds_->Observe(absl::ToDoubleSeconds(latency));
  (ok ? attach_ok_ : attach_error_)->Increment();
}

void AgentMetrics::OnDetach(absl::Duration latency, size_t) {
  detach_seconds_->Observe(absl::ToDoubleSeconds(latency));
}

std::string AgentMetrics::Render() const {
  std::vector<pm::MetricFamily> all = registry_->Collect();
  for (auto& f : collector_->Collect()) all.push_back(std::move(f));
  return pm::TextSerializer().Serialize(all);
}

}  // namespace xolfleet
