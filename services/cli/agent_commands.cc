// xolctl's node commands: attach, detach, list, classify, watch, info.
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/agent/probe_convert.h"
#include "services/cli/cli.h"
#include "services/common/enum_names.h"
#include "services/common/page_token.h"
#include "services/common/placement.h"
#include "services/common/probe_spec.h"
#include "services/common/proto_time.h"

namespace xolfleet::cli {
namespace {

std::string SiteName(const v1::SitePlacement& p) {
  if (p.symbol().empty()) return absl::StrCat("0x", absl::Hex(p.file_offset()));
  return p.symbol_offset() ? absl::StrCat(p.symbol(), "+0x", absl::Hex(p.symbol_offset()))
                           : p.symbol();
}

std::string PlacementStr(v1::Placement p) {
  return p == v1::PLACEMENT_UNSPECIFIED ? "-" : ShortName(p);
}

std::string Hex(uint64_t v) { return absl::StrCat("0x", absl::Hex(v)); }

// "uprobe_multi" / "perf_event": the kernel's names for the link kinds.
std::string LinkModeName(v1::LinkMode m) { return absl::AsciiStrToLower(ShortName(m)); }

// A cost in CPU seconds per second as a share of one CPU ("0.42%"), "-" when unknown.
std::string CpuShare(const v1::ProbeCost& c) {
  if (!c.calibrated()) return "-";
  return CpuPercent(c.cpu_seconds_per_sec());
}

std::string Micros(double ns) { return absl::StrFormat("%.2f us", ns / 1000); }

// Batches at least this large are attached through AttachWithProgress, with progress on
// stderr; smaller ones are one Attach call.
constexpr int kProgressFromSpecs = 100;

const char* PhaseName(v1::AttachPhase p) {
  switch (p) {
    case v1::ATTACH_PHASE_RESOLVING:
      return "resolving";
    case v1::ATTACH_PHASE_LINKING:
      return "linking";
    default:
      return "done";
  }
}

// Attach through the progress stream, printing "attach: resolving 400/2000" lines on
// stderr (stdout and --json output stay what Attach gives). An agent without the method
// (UNIMPLEMENTED) gets a plain Attach.
grpc::Status AttachShowingProgress(Context& c, const v1::AttachRequest& req,
                                   v1::AttachResponse* resp) {
  std::unique_ptr<grpc::ClientContext> rpc = c.Rpc();
  std::unique_ptr<grpc::ClientReader<v1::AttachProgress>> reader =
      c.Agent().AttachWithProgress(rpc.get(), req);
  v1::AttachProgress p;
  bool got_result = false;
  while (reader->Read(&p)) {
    if (p.has_result()) {
      *resp = std::move(*p.mutable_result());
      got_result = true;
    } else {
      c.err() << "attach: " << PhaseName(p.phase()) << " " << p.done() << "/" << p.total()
              << std::endl;
    }
  }
  grpc::Status st = reader->Finish();
  if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return c.Agent().Attach(c.Rpc().get(), req, resp);
  }
  if (st.ok() && !got_result) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "the progress stream ended without a result");
  }
  return st;
}

int RunAttach(Context& c) {
  const Args& a = c.args();
  if (a.positional().empty()) return c.Usage("attach: give at least one site BINARY:SYMBOL");
  v1::AttachRequest req;
  for (const std::string& s : a.positional()) {
    absl::StatusOr<v1::ProbeSpec> spec = ParseSite(s);
    if (!spec.ok()) return c.Usage(std::string(spec.status().message()));
    int64_t n = 0;
    if (auto v = a.Get("pid")) {
      if (!absl::SimpleAtoi(*v, &n)) return c.Usage("--pid takes a number");
      spec->set_pid(static_cast<int32_t>(n));
    }
    if (auto v = a.Get("container")) spec->set_container_id(*v);
    if (auto v = a.Get("rate-limit")) {
      if (!absl::SimpleAtoi(*v, &n) || n < 0) return c.Usage("--rate-limit takes events/s");
      spec->set_rate_limit_per_sec(static_cast<uint32_t>(n));
    }
    if (auto v = a.Get("ttl")) {
      if (!absl::SimpleAtoi(*v, &n) || n < 0) return c.Usage("--ttl takes seconds");
      *spec->mutable_ttl() = ToDurationProto(absl::Seconds(n));
    }
    if (auto v = a.Get("build-id")) spec->set_build_id(*v);
    spec->set_allow_relocate(a.Has("allow-relocate"));
    spec->set_confirm_raw_offset(a.Has("confirm-raw-offset"));
    for (const std::string& list : a.GetAll("capture")) {
      for (absl::string_view r : absl::StrSplit(list, ',', absl::SkipEmpty())) {
        absl::StatusOr<v1::Register> reg = ParseRegister(r);
        if (!reg.ok()) return c.Usage(std::string(reg.status().message()));
        spec->add_capture(*reg);
      }
    }
    for (const std::string& list : a.GetAll("label")) {
      if (absl::Status st = ParseLabels(list, spec->mutable_labels()); !st.ok()) {
        return c.Usage(std::string(st.message()));
      }
    }
    *req.add_specs() = *spec;
  }
  req.set_dry_run(a.Has("dry-run"));
  if (auto v = a.Get("calls-per-sec")) {
    double r = 0;
    if (!absl::SimpleAtod(*v, &r) || r < 0) return c.Usage("--calls-per-sec takes calls/s");
    req.set_expected_calls_per_sec(r);
  }
  if (auto v = a.Get("sample")) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(*v, &n) || n < 1 || n > 10) {
      return c.Usage("--sample takes 1-10 seconds");
    }
    *req.mutable_sample_duration() = ToDurationProto(absl::Seconds(n));
  }
  if (!req.dry_run() && (req.expected_calls_per_sec() > 0 || req.has_sample_duration())) {
    return c.Usage("--calls-per-sec and --sample predict a cost: use them with --dry-run");
  }
  v1::AttachResponse resp;
  grpc::Status st = !req.dry_run() && req.specs_size() >= kProgressFromSpecs
                        ? AttachShowingProgress(c, req, &resp)
                        : c.Agent().Attach(c.Rpc().get(), req, &resp);
  if (!st.ok()) return c.Fail("attach", st);
  if (c.json()) {
    c.PrintJson(resp);
    return 0;
  }
  if (resp.dry_run()) {
    Table t({"BINARY", "SITE", "PLACEMENT", "INSTRUCTION", "PER_HIT", "CALLS/S", "CPU"});
    for (const v1::Probe& p : resp.probes()) {
      t.Add({p.spec().binary_path(), SiteName(p.site()), PlacementStr(p.site().placement()),
             p.site().disassembly(),
             p.cost().calibrated() ? Micros(p.cost().ns_per_hit()) : "uncalibrated",
             absl::StrFormat("%.0f", p.cost().hits_per_sec()), CpuShare(p.cost())});
    }
    t.Print(c.out());
    c.out() << "dry run: nothing attached; predicted "
            << absl::StrFormat("%.3g%%", resp.predicted_cpu_seconds_per_sec() * 100)
            << " of one CPU"
            << (req.has_sample_duration()
                    ? absl::StrCat(" (call rates sampled over ",
                                   absl::FormatDuration(FromDurationProto(req.sample_duration())),
                                   ")")
                    : std::string(req.expected_calls_per_sec() > 0
                                      ? " at the given call rate"
                                      : " (no call rate: give --calls-per-sec or --sample)"))
            << "\n";
    return 0;
  }
  Table t({"ID", "BINARY", "SITE", "FILE_OFFSET", "PLACEMENT", "INSTRUCTION", "NOTE"});
  for (const v1::Probe& p : resp.probes()) {
    t.Add({p.id(), p.spec().binary_path(), SiteName(p.site()), Hex(p.site().file_offset()),
           PlacementStr(p.site().placement()), p.site().disassembly(),
           p.site().relocated() ? p.site().relocation_note() : ""});
  }
  t.Print(c.out());
  c.out() << resp.probes_size() << " probes attached (" << LinkModeName(resp.link_mode()) << ")\n";
  return 0;
}

int RunDetach(Context& c) {
  v1::DetachRequest req;
  req.set_all(c.args().Has("all"));
  for (const std::string& id : c.args().positional()) req.add_probe_ids(id);
  if (!req.all() && req.probe_ids_size() == 0) return c.Usage("detach: give probe ids or --all");
  v1::DetachResponse resp;
  grpc::Status st = c.Agent().Detach(c.Rpc().get(), req, &resp);
  if (!st.ok()) return c.Fail("detach", st);
  if (c.json()) {
    c.PrintJson(resp);
    return 0;
  }
  c.out() << "detached " << resp.detached_ids_size() << " probes";
  if (resp.detached_ids_size() > 0 && resp.detached_ids_size() <= 20) {
    c.out() << ": " << absl::StrJoin(resp.detached_ids(), " ");
  }
  c.out() << "\n";
  return 0;
}

int RunList(Context& c) {
  v1::ListRequest req;
  req.set_include_inactive(c.args().Has("all"));
  for (const std::string& id : c.args().positional()) req.add_probe_ids(id);
  v1::ListResponse resp;
  // Every page (the agent returns at most 5000 probes a call), shown as one list.
  grpc::Status st = ForEachPage<v1::ListResponse>(
      req,
      [&c](const v1::ListRequest& r, v1::ListResponse* page) {
        return c.Agent().List(c.Rpc().get(), r, page);
      },
      [&resp](v1::ListResponse& page) {
        for (v1::Probe& p : *page.mutable_probes()) *resp.add_probes() = std::move(p);
      });
  if (!st.ok()) return c.Fail("list", st);
  if (c.json()) {
    c.PrintJson(resp);
    return 0;
  }
  Table t({"ID", "STATE", "BINARY", "SITE", "PLACEMENT", "KERNEL", "HITS", "EVENTS", "DROPPED",
           "LIMITED", "PID", "TTL", "HITS/S", "CPU", "BUDGET", "LABELS"});
  const absl::Time now = absl::Now();
  for (const v1::Probe& p : resp.probes()) {
    std::string ttl = "-";
    if (p.has_expires_at() && p.state() == v1::PROBE_STATE_ATTACHED) {
      ttl = absl::StrCat(
          std::max<int64_t>(0, absl::ToInt64Seconds(FromTimestamp(p.expires_at()) - now)), "s");
    }
    std::vector<std::string> labels;
    for (const auto& [k, v] : p.spec().labels()) labels.push_back(absl::StrCat(k, "=", v));
    std::sort(labels.begin(), labels.end());
    t.Add({p.id(), ShortName(p.state()), p.spec().binary_path(), SiteName(p.site()),
           PlacementStr(p.site().placement()),
           PlacementStr(p.kernel_placement()) + (p.placement_mismatch() ? "!" : ""),
           absl::StrCat(p.hits()), absl::StrCat(p.events_emitted()),
           absl::StrCat(p.events_dropped()), absl::StrCat(p.rate_limited()),
           p.spec().pid() ? absl::StrCat(p.spec().pid()) : "any", ttl,
           absl::StrFormat("%.0f", p.cost().hits_per_sec()), CpuShare(p.cost()),
           BudgetStateName(p.cost().budget_state()), absl::StrJoin(labels, ",")});
  }
  t.Print(c.out());
  for (const v1::Probe& p : resp.probes()) {
    if (!p.cost().budget_message().empty()) {
      c.out() << p.id() << ": " << p.cost().budget_message() << "\n";
    }
  }
  return 0;
}

int RunClassify(Context& c) {
  const Args& a = c.args();
  v1::ClassifyRequest req;
  req.set_profile(a.GetOr("profile", ""));
  if (auto all = a.Get("all-functions")) req.set_all_functions_of(*all);
  for (const std::string& s : a.positional()) {
    absl::StatusOr<v1::ProbeSpec> spec = ParseSite(s);
    if (!spec.ok()) return c.Usage(std::string(spec.status().message()));
    spec->set_allow_relocate(a.Has("allow-relocate"));
    spec->set_confirm_raw_offset(a.Has("confirm-raw-offset"));
    *req.add_sites() = *spec;
  }
  if (req.sites_size() == 0 && req.all_functions_of().empty()) {
    return c.Usage("classify: give sites BINARY:SYMBOL[+OFF] or --all-functions BINARY");
  }
  v1::ClassifyResponse resp;
  if (a.Has("local")) {
    KernelProfile profile = KernelProfile::kLinux61;
    if (!req.profile().empty()) {
      absl::StatusOr<KernelProfile> p = ParseProfile(req.profile());
      if (!p.ok()) return c.Usage(std::string(p.status().message()));
      profile = *p;
    } else {
      c.err() << "xolctl: --local without --profile: using linux-6.1\n";
    }
    absl::StatusOr<v1::ClassifyResponse> r = ClassifySites(
        req, profile, [](const v1::ProbeSpec& s) { return OpenFile::Open(s.binary_path()); });
    if (!r.ok()) return c.Fail("classify", r.status());
    resp = std::move(*r);
  } else {
    grpc::Status st = c.Agent().Classify(c.Rpc().get(), req, &resp);
    if (!st.ok()) return c.Fail("classify", st);
  }
  if (c.json()) {
    c.PrintJson(resp);
    return 0;
  }
  Table t({"FUNCTION", "FILE_OFFSET", "BYTES", "INSTRUCTION", "PLACEMENT", "PER_HIT", "REASON"});
  for (const v1::SitePlacement& p : resp.sites()) {
    std::string bytes;
    for (unsigned char b : p.insn_bytes()) absl::StrAppend(&bytes, absl::Hex(b, absl::kZeroPad2));
    std::string reason = p.reason();
    if (p.relocated()) absl::StrAppend(&reason, " [moved: ", p.relocation_note(), "]");
    t.Add({SiteName(p), Hex(p.file_offset()), bytes, p.disassembly(), PlacementStr(p.placement()),
           p.expected_ns_per_hit() > 0 ? Micros(p.expected_ns_per_hit()) : "-", reason});
  }
  t.Print(c.out());
  c.out() << "\nprofile " << resp.profile() << ", " << resp.sites_size() << " sites\n";
  Table totals({"PLACEMENT", "SITES", "SHARE"});
  for (v1::Placement p :
       {v1::PLACEMENT_EMULATED, v1::PLACEMENT_BOOSTED, v1::PLACEMENT_BOOSTED_RIPREL,
        v1::PLACEMENT_SINGLE_STEP, v1::PLACEMENT_REFUSED}) {
    auto it = resp.totals().find(v1::Placement_Name(p));
    uint64_t n = it == resp.totals().end() ? 0 : it->second;
    totals.Add({ShortName(p), absl::StrCat(n),
                resp.sites_size() ? absl::StrFormat("%.1f%%", 100.0 * n / resp.sites_size())
                                  : std::string("-")});
  }
  totals.Print(c.out());
  return 0;
}

const char* kRegNames[] = {"",   "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",   "r8",
                           "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags"};

int RunWatch(Context& c) {
  const Args& a = c.args();
  v1::WatchHitsRequest req;
  for (const std::string& id : a.positional()) req.add_probe_ids(id);
  int64_t max_events = 0;
  double duration = 0;
  if (auto v = a.Get("count")) (void)absl::SimpleAtoi(*v, &max_events);
  if (auto v = a.Get("duration")) (void)absl::SimpleAtod(*v, &duration);
  if (auto v = a.Get("max-batch")) {
    uint32_t b = 0;
    if (absl::SimpleAtoi(*v, &b)) req.set_max_batch(b);
  }
  bool quiet = a.Has("quiet");
  grpc::ClientContext ctx;
  if (duration > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(duration * 1000)));
  }
  std::unique_ptr<grpc::ClientReader<v1::HitBatch>> reader = c.Agent().WatchHits(&ctx, req);
  v1::HitBatch batch;
  uint64_t received = 0, dropped = 0;
  const absl::Time start = absl::Now();
  while (reader->Read(&batch)) {
    received += batch.events_size();
    dropped = batch.dropped_total();
    if (c.json()) {
      c.PrintJson(batch);
    } else {
      // Budget actions are printed even with --quiet: they change what is being watched.
      for (const v1::BudgetEvent& b : batch.budget_events()) {
        c.out() << "budget: " << b.probe_id() << " " << BudgetStateName(b.state()) << ": "
                << b.message() << "\n";
      }
    }
    if (!c.json() && !quiet) {
      for (const v1::HitEvent& e : batch.events()) {
        std::string regs;
        for (const v1::RegisterValue& r : e.regs()) {
          absl::StrAppend(&regs, " ", kRegNames[r.reg() < 19 ? r.reg() : 0], "=0x",
                          absl::Hex(r.value()));
        }
        c.out() << e.probe_id() << " pid=" << e.pid() << " tid=" << e.tid() << " cpu=" << e.cpu()
                << " t=" << e.ktime_ns() << regs << "\n";
      }
    }
    if (max_events > 0 && received >= static_cast<uint64_t>(max_events)) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status st = reader->Finish();
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  c.err() << "received " << received << " events, dropped " << dropped << " (agent-side), in "
          << absl::StrFormat("%.2f", secs) << " s\n";
  if (!st.ok() && st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
      st.error_code() != grpc::StatusCode::CANCELLED) {
    return c.Fail("watch", st);
  }
  return 0;
}

int RunInfo(Context& c) {
  v1::NodeInfo info;
  v1::GetNodeInfoRequest req;
  req.set_recalibrate(c.args().Has("recalibrate"));
  grpc::Status st = c.Agent().GetNodeInfo(c.Rpc().get(), req, &info);
  if (!st.ok()) return c.Fail("info", st);
  if (c.json()) {
    c.PrintJson(info);
    return 0;
  }
  Table t({"FIELD", "VALUE"});
  t.Add({"node", info.node_name()});
  t.Add({"kernel", info.kernel_release()});
  t.Add({"profile", absl::StrCat(info.kernel_profile(), " (", info.profile_reason(), ")")});
  t.Add({"boosting", info.kernel_boosts() ? "on" : "off"});
  t.Add({"link mode", LinkModeName(info.link_mode())});
  t.Add({"features", absl::StrJoin(info.features(), ",")});
  t.Add({"probes attached", absl::StrCat(info.probes_attached())});
  t.Add({"placement mismatches", absl::StrCat(info.placement_mismatches())});
  t.Add({"agent version", info.agent_version()});
  std::vector<std::string> labels;
  for (const auto& [k, v] : info.labels()) labels.push_back(absl::StrCat(k, "=", v));
  std::sort(labels.begin(), labels.end());
  t.Add({"labels", absl::StrJoin(labels, ",")});
  const v1::KernelSlotStats& s = info.slot_stats();
  if (s.available()) {
    t.Add({"hits emulated", absl::StrCat(s.hits_emulated())});
    t.Add({"hits boosted", absl::StrCat(s.hits_boosted())});
    t.Add({"hits boosted riprel", absl::StrCat(s.hits_boosted_riprel())});
    t.Add({"hits single-step", absl::StrCat(s.hits_single_step())});
    t.Add({"slot reinstalls", absl::StrCat(s.slot_reinstalls())});
    t.Add({"slot migrations", absl::StrCat(s.slot_migrations())});
    t.Add({"signals deferred", absl::StrCat(s.signals_deferred())});
    t.Add({"signals translated", absl::StrCat(s.signals_translated())});
    t.Add({"fault rollbacks", absl::StrCat(s.fault_rollbacks())});
    t.Add({"rep rollbacks", absl::StrCat(s.rep_rollbacks())});
  } else {
    t.Add({"slot stats", "unavailable (stock kernel)"});
  }
  const v1::NodeCost& nc = info.cost();
  t.Add({"probe cost",
         absl::StrFormat(
             "%.3g%% of one CPU (budget %.3g%%, per probe %s, action %s, window %s, %d actions "
             "taken)",
             nc.cpu_seconds_per_sec() * 100, nc.node_budget() * 100,
             nc.probe_budget() > 0 ? absl::StrFormat("%.3g%%", nc.probe_budget() * 100) : "none",
             nc.budget_action(), absl::FormatDuration(FromDurationProto(nc.budget_window())),
             nc.budget_actions())});
  t.Print(c.out());
  const v1::Calibration& cal = info.calibration();
  c.out() << "\ncalibration: " << cal.status();
  if (!cal.profile().empty()) {
    c.out() << " (profile " << cal.profile() << ", measured in "
            << absl::StrFormat("%.2f", absl::ToDoubleSeconds(FromDurationProto(cal.duration())))
            << " s)";
  }
  c.out() << "\n";
  if (cal.figures_size() > 0) {
    Table ct({"PLACEMENT", "PROGRAM", "PER_HIT", "SITE", "CALLS"});
    for (const v1::CalibrationFigure& f : cal.figures()) {
      ct.Add({ShortName(f.placement()), f.capture() ? "capture all" : "count",
              Micros(f.ns_per_hit()), f.site(), absl::StrCat(f.calls())});
    }
    ct.Print(c.out());
    c.out() << "a captured event: " << Micros(cal.capture_ns_per_event()) << "\n";
  }
  return 0;
}

}  // namespace

XOLCTL_COMMAND(
    "attach", "attach probes (one all-or-nothing batch)",
    "attach BINARY:SYMBOL[+OFF]|BINARY:0xFILEOFF... [--pid=N | --container=ID (BINARY is a path in "
    "that process's or container's filesystem)] [--capture=rdi,rsi] [--rate-limit=EVENTS_PER_S] "
    "[--ttl=SECONDS] [--build-id=HEX] [--label=k=v,...] [--allow-relocate] [--confirm-raw-offset "
    "(a file offset outside every function, in an executable section)] [--dry-run "
    "[--calls-per-sec=R | --sample=SECONDS]] (predicted cost, nothing attached)",
    {"pid", "container", "capture", "rate-limit", "ttl", "build-id", "label", "calls-per-sec",
     "sample"},
    {"allow-relocate", "confirm-raw-offset", "dry-run"}, RunAttach);
XOLCTL_COMMAND("detach", "detach probes by id", "detach ID... | detach --all", {}, {"all"},
               RunDetach);
XOLCTL_COMMAND("list", "list probes with hit counts",
               "list [ID...] [--all (include detached/expired)]", {}, {"all"}, RunList);
XOLCTL_COMMAND("classify", "predict placements (dry run; --local needs no agent)",
               "classify BINARY:SYMBOL[+OFF]... | --all-functions BINARY "
               "[--profile=linux-6.1|linux-6.18|xolfleet-6.1|xolfleet-6.1-noboost] [--local] "
               "[--allow-relocate] [--confirm-raw-offset]",
               {"all-functions", "profile"}, {"local", "allow-relocate", "confirm-raw-offset"},
               RunClassify);
XOLCTL_COMMAND("watch", "stream hit events",
               "watch [ID...] [--count=N] [--duration=SECONDS] [--max-batch=N] [--quiet]",
               {"count", "duration", "max-batch"}, {"quiet"}, RunWatch);
XOLCTL_COMMAND("info", "the agent's node, kernel profile, features and calibration",
               "info [--recalibrate (measure the cost of a hit again)]", {}, {"recalibrate"},
               RunInfo);

}  // namespace xolfleet::cli
