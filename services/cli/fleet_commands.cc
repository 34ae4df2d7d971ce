// `xolctl fleet ...`: the controller's fleet API (services/controller), same look as the
// node commands: readable tables, --json for scripts.
//
//   xolctl fleet agents   [--labels k=v,...]
//   xolctl fleet attach   (--all | --nodes a,b | --labels k=v,...) [--canary=F]
//                         [--canary-timeout=S] [--ttl=S] [--capture=rdi,rsi] [--pid=N]
//                         [--rate-limit=N] [--build-id=HEX] [--allow-relocate] [--no-wait]
//                         [--confirm-raw-offset] [--canary-soak=S]
//                         [--dry-run [--calls-per-sec=R]]   predicted cost per node and profile
//                         SPEC...        SPEC: PATH:SYMBOL[+OFFSET], PATH:0xFILE_OFFSET or
//                         PATH@FILE_OFFSET
//   xolctl fleet detach   SET_ID...
//   xolctl fleet list     [--node=N]... [--set=ID]...
//   xolctl fleet rollout  SET_ID
//   xolctl fleet watch    [--node=N]... [--set=ID]... [--count=N]
//   xolctl fleet forget   NODE
//
// Connection: --controller=HOST:PORT (or $XOLFLEET_CONTROLLER; default 127.0.0.1:7443)
// over mTLS with --tls-ca/--tls-cert/--tls-key (or $XOLFLEET_TLS_CA, _CERT, _KEY);
// --insecure-plaintext only to a loopback address or unix socket.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/cli/cli.h"
#include "services/common/enum_names.h"
#include "services/common/page_token.h"
#include "services/common/probe_spec.h"
#include "services/common/proto_time.h"
#include "services/common/tls.h"
#include "xolfleet/v1/controller.grpc.pb.h"

namespace xolfleet::cli {
namespace {

std::string Env(const char* name, const std::string& def = "") {
  const char* v = getenv(name);
  return v && *v ? v : def;
}

std::string ControllerAddress(const Context& ctx) {
  return ctx.args().GetOr("controller", Env("XOLFLEET_CONTROLLER", "127.0.0.1:7443"));
}

absl::StatusOr<std::unique_ptr<v1::FleetService::Stub>> Fleet(const Context& ctx) {
  tls::TlsFiles f = ctx.Tls();
  std::string addr = ControllerAddress(ctx);
  auto creds = tls::ChannelCredentials(f, addr);
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments a;
  a.SetMaxReceiveMessageSize(256 << 20);
  return v1::FleetService::NewStub(grpc::CreateCustomChannel(addr, *creds, a));
}

int FailRpc(Context& ctx, const std::string& what, const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    ctx.err() << "xolctl: " << what << ": UNAVAILABLE: " << s.error_message()
              << " (is the controller at " << ControllerAddress(ctx)
              << " up, and do --tls-ca/--tls-cert/--tls-key match its CA? see --controller)\n";
    return 1;
  }
  return ctx.Fail(what, s);
}

std::string Ago(const v1::AgentInfo& a) {
  if (!a.has_last_seen()) return "never";
  absl::Duration d = absl::Now() - FromTimestamp(a.last_seen());
  if (d < absl::Seconds(1)) return "now";
  return absl::StrCat(absl::ToInt64Seconds(d), "s ago");
}

std::string StateName(v1::RolloutState s) { return ShortName(s); }

std::string Placement(v1::Placement p) {
  return p == v1::PLACEMENT_UNSPECIFIED ? "-" : ShortName(p);
}

absl::Status ParseSelector(const Args& args, v1::NodeSelector* sel) {
  int kinds = args.Has("all") + args.Has("nodes") + args.Has("labels");
  if (kinds != 1) {
    return absl::InvalidArgumentError(
        "pick the nodes with exactly one of --all, --nodes, --labels");
  }
  if (args.Has("all")) sel->set_all(true);
  for (const auto& n : args.GetAll("nodes")) {
    for (absl::string_view x : absl::StrSplit(n, ',', absl::SkipEmpty())) {
      sel->add_node_names(std::string(x));
    }
  }
  for (const auto& l : args.GetAll("labels")) {
    if (auto s = ParseLabels(l, sel->mutable_match_labels()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void PrintRollouts(Context& ctx, const std::vector<v1::Rollout>& rs) {
  Table t({"SET", "STATE", "ATTACHED", "FAILED", "PENDING", "CANARY", "EXPIRES", "MESSAGE"});
  for (const auto& r : rs) {
    std::string exp = "-";
    if (r.has_expires_at()) {
      absl::Duration left = FromTimestamp(r.expires_at()) - absl::Now();
      exp = left > absl::ZeroDuration() ? absl::StrCat("in ", absl::ToInt64Seconds(left), "s")
                                        : "expired";
    }
    t.Add({r.set_id(), StateName(r.state()), absl::StrCat(r.nodes_attached()),
           absl::StrCat(r.nodes_failed()), absl::StrCat(r.nodes_pending()),
           r.canary_nodes().empty() ? "-" : absl::StrJoin(r.canary_nodes(), ","), exp,
           r.message()});
  }
  t.Print(ctx.out());
}

int Agents(Context& ctx) {
  auto stub = Fleet(ctx);
  if (!stub.ok()) return ctx.Fail("fleet agents", stub.status());
  v1::ListAgentsRequest req;
  if (ctx.args().Has("labels")) {
    if (auto s =
            ParseLabels(*ctx.args().Get("labels"), req.mutable_selector()->mutable_match_labels());
        !s.ok()) {
      return ctx.Usage(std::string(s.message()));
    }
  }
  v1::ListAgentsResponse resp;
  // Every page (at most 5000 agents a call), shown as one list.
  grpc::Status st = ForEachPage<v1::ListAgentsResponse>(
      req,
      [&](const v1::ListAgentsRequest& r, v1::ListAgentsResponse* page) {
        return (*stub)->ListAgents(ctx.Rpc().get(), r, page);
      },
      [&resp](v1::ListAgentsResponse& page) {
        for (v1::AgentInfo& a : *page.mutable_agents()) *resp.add_agents() = std::move(a);
      });
  if (!st.ok()) return FailRpc(ctx, "fleet agents", st);
  if (ctx.json()) {
    ctx.PrintJson(resp);
    return 0;
  }
  Table t({"NODE", "HEALTH", "PROFILE", "KERNEL", "PROBES", "SETS", "MIGRATIONS", "MISMATCHES",
           "CPU", "BUDGET", "BREACHES", "LAST-SEEN", "LABELS", "IDENTITY"});
  for (const auto& a : resp.agents()) {
    std::vector<std::string> labels;
    for (const auto& [k, v] : a.registration().labels()) labels.push_back(absl::StrCat(k, "=", v));
    std::sort(labels.begin(), labels.end());
    t.Add({a.registration().node_name(), a.health() == v1::AGENT_HEALTH_UP ? "UP" : "DOWN",
           a.registration().kernel_profile(), a.registration().kernel_release(),
           absl::StrCat(a.probes_attached()),
           absl::StrCat(a.sets_converged(), "/", a.sets_desired()),
           a.slot_stats().available() ? absl::StrCat(a.slot_stats().slot_migrations()) : "-",
           absl::StrCat(a.placement_mismatches()), CpuPercent(a.cost().cpu_seconds_per_sec()),
           a.cost().node_budget() > 0 ? CpuPercent(a.cost().node_budget()) : "-",
           absl::StrCat(a.budget_breaches()), Ago(a),
           labels.empty() ? "-" : absl::StrJoin(labels, ","), a.identity()});
  }
  t.Print(ctx.out());
  return 0;
}

int Attach(Context& ctx) {
  const Args& args = ctx.args();
  const auto& pos = args.positional();
  if (pos.size() < 2) return ctx.Usage("fleet attach needs at least one SPEC");
  v1::FleetAttachRequest req;
  if (auto s = ParseSelector(args, req.mutable_selector()); !s.ok()) {
    return ctx.Usage(std::string(s.message()));
  }
  double canary = 0;
  if (args.Has("canary") && !absl::SimpleAtod(*args.Get("canary"), &canary)) {
    return ctx.Usage("--canary takes a fraction, e.g. 0.1");
  }
  req.mutable_policy()->set_canary_fraction(canary);
  uint32_t u = 0;
  if (args.Has("canary-timeout")) {
    if (!absl::SimpleAtoi(*args.Get("canary-timeout"), &u))
      return ctx.Usage("bad --canary-timeout");
    *req.mutable_policy()->mutable_canary_timeout() = ToDurationProto(absl::Seconds(u));
  }
  if (args.Has("canary-soak")) {
    if (!absl::SimpleAtoi(*args.Get("canary-soak"), &u)) return ctx.Usage("bad --canary-soak");
    *req.mutable_policy()->mutable_canary_soak() = ToDurationProto(absl::Seconds(u));
  }
  req.set_dry_run(args.Has("dry-run"));
  if (args.Has("calls-per-sec")) {
    double r = 0;
    if (!absl::SimpleAtod(*args.Get("calls-per-sec"), &r) || r < 0) {
      return ctx.Usage("--calls-per-sec takes calls/s");
    }
    req.set_expected_calls_per_sec(r);
  }
  uint32_t ttl = 0, rate = 0;
  int32_t pid = 0;
  if (args.Has("ttl") && !absl::SimpleAtoi(*args.Get("ttl"), &ttl)) return ctx.Usage("bad --ttl");
  if (args.Has("rate-limit") && !absl::SimpleAtoi(*args.Get("rate-limit"), &rate)) {
    return ctx.Usage("bad --rate-limit");
  }
  if (args.Has("pid") && !absl::SimpleAtoi(*args.Get("pid"), &pid)) return ctx.Usage("bad --pid");
  std::vector<v1::Register> capture;
  for (const auto& c : args.GetAll("capture")) {
    for (absl::string_view r : absl::StrSplit(c, ',', absl::SkipEmpty())) {
      auto reg = ParseRegister(r);
      if (!reg.ok()) return ctx.Usage(std::string(reg.status().message()));
      capture.push_back(*reg);
    }
  }
  for (size_t i = 1; i < pos.size(); ++i) {
    auto spec = ParseSite(pos[i]);
    if (!spec.ok()) return ctx.Usage(std::string(spec.status().message()));
    if (ttl) *spec->mutable_ttl() = ToDurationProto(absl::Seconds(ttl));
    spec->set_rate_limit_per_sec(rate);
    spec->set_pid(pid);
    spec->set_build_id(args.GetOr("build-id", ""));
    spec->set_allow_relocate(args.Has("allow-relocate"));
    spec->set_confirm_raw_offset(args.Has("confirm-raw-offset"));
    for (auto r : capture) spec->add_capture(r);
    *req.add_specs() = *spec;
  }
  auto stub = Fleet(ctx);
  if (!stub.ok()) return ctx.Fail("fleet attach", stub.status());
  v1::FleetAttachResponse resp;
  auto rpc = ctx.Rpc();
  if (auto s = (*stub)->AttachFleet(rpc.get(), req, &resp); !s.ok()) {
    return FailRpc(ctx, "fleet attach", s);
  }
  if (req.dry_run()) {
    if (ctx.json()) {
      ctx.PrintJson(resp);
      return 0;
    }
    Table t(
        {"NODE", "HEALTH", "PROFILE", "SITES", "PER_HIT", "PREDICTED", "NOW", "BUDGET", "VERDICT"});
    for (const auto& n : resp.predictions()) {
      std::vector<std::string> sites;
      std::vector<std::string> per_hit;
      for (const auto& s : n.sites()) {
        sites.push_back(ShortName(s.placement()));
        per_hit.push_back(s.expected_ns_per_hit() > 0
                              ? absl::StrFormat("%.2fus", s.expected_ns_per_hit() / 1000)
                              : "-");
      }
      t.Add({n.node_name(), n.up() ? "UP" : "DOWN", n.kernel_profile(), absl::StrJoin(sites, ","),
             absl::StrJoin(per_hit, ","),
             n.calibrated() ? CpuPercent(n.predicted_cpu_seconds_per_sec()) : "uncalibrated",
             CpuPercent(n.current_cpu_seconds_per_sec()),
             n.node_budget() > 0 ? CpuPercent(n.node_budget()) : "-",
             n.over_budget() ? "OVER BUDGET" : "ok"});
    }
    t.Print(ctx.out());
    ctx.out() << "\n";
    Table p({"PROFILE", "NODES", "PLACEMENTS", "MEAN_PER_HIT", "PREDICTED_PER_NODE"});
    for (const auto& pp : resp.profiles()) {
      std::vector<std::string> pl;
      for (const auto& [k, v] : pp.placements()) {
        v1::Placement placement = v1::PLACEMENT_UNSPECIFIED;
        std::string name = v1::Placement_Parse(k, &placement) ? ShortName(placement) : k;
        if (v > 0) pl.push_back(absl::StrCat(name, "=", v));
      }
      std::sort(pl.begin(), pl.end());
      p.Add({pp.kernel_profile(), absl::StrCat(pp.nodes()), absl::StrJoin(pl, ","),
             absl::StrFormat("%.2fus", pp.mean_ns_per_hit() / 1000),
             CpuPercent(pp.predicted_cpu_seconds_per_sec())});
    }
    p.Print(ctx.out());
    ctx.out() << "dry run: nothing attached"
              << (req.expected_calls_per_sec() > 0
                      ? absl::StrCat(" (", req.expected_calls_per_sec(), " calls/s per site)")
                      : std::string(" (no --calls-per-sec: cost per hit only)"))
              << "\n";
    return 0;
  }
  v1::Rollout r = resp.rollout();
  if (!args.Has("no-wait")) {
    // Progress: one line per change on stderr, until the rollout ends or --timeout passes;
    // with --json too (stdout stays the one JSON rollout), like the agent's attach progress,
    // so a script sees the stages a rollout went through (tests/fleet: the canary stage).
    double secs = 60;
    if (args.Has("timeout")) (void)absl::SimpleAtod(*args.Get("timeout"), &secs);
    absl::Time end = absl::Now() + absl::Seconds(secs);
    std::string last;
    for (;;) {
      std::string line = absl::StrCat("rollout ", r.set_id(), ": ", StateName(r.state()),
                                      "  attached ", r.nodes_attached(), "  failed ",
                                      r.nodes_failed(), "  pending ", r.nodes_pending());
      if (line != last) ctx.err() << line << "\n";
      last = line;
      if (r.state() != v1::ROLLOUT_STATE_CANARY && r.state() != v1::ROLLOUT_STATE_ROLLING) break;
      if (absl::Now() > end) {
        ctx.err() << "xolctl: fleet attach: still " << StateName(r.state()) << " after " << secs
                  << "s (the rollout goes on; see xolctl fleet rollout " << r.set_id() << ")\n";
        break;
      }
      absl::SleepFor(absl::Milliseconds(100));
      v1::GetRolloutRequest g;
      g.set_set_id(r.set_id());
      auto rpc2 = ctx.Rpc();
      if (auto s = (*stub)->GetRollout(rpc2.get(), g, &r); !s.ok()) {
        return FailRpc(ctx, "fleet rollout", s);
      }
    }
  }
  if (ctx.json()) {
    ctx.PrintJson(r);
  } else {
    PrintRollouts(ctx, {r});
  }
  if (args.Has("no-wait")) return 0;
  return r.state() == v1::ROLLOUT_STATE_COMPLETE ? 0 : 1;
}

int Detach(Context& ctx) {
  const auto& pos = ctx.args().positional();
  if (pos.size() < 2) return ctx.Usage("fleet detach needs at least one SET_ID");
  v1::FleetDetachRequest req;
  for (size_t i = 1; i < pos.size(); ++i) req.add_set_ids(pos[i]);
  auto stub = Fleet(ctx);
  if (!stub.ok()) return ctx.Fail("fleet detach", stub.status());
  v1::FleetDetachResponse resp;
  auto rpc = ctx.Rpc();
  if (auto s = (*stub)->DetachFleet(rpc.get(), req, &resp); !s.ok()) {
    return FailRpc(ctx, "fleet detach", s);
  }
  if (ctx.json()) {
    ctx.PrintJson(resp);
  } else {
    for (const auto& id : resp.detached_set_ids()) ctx.out() << "detached " << id << "\n";
  }
  return 0;
}

int List(Context& ctx) {
  v1::ListFleetProbesRequest req;
  for (const auto& n : ctx.args().GetAll("node")) req.add_node_names(n);
  for (const auto& s : ctx.args().GetAll("set")) req.add_set_ids(s);
  auto stub = Fleet(ctx);
  if (!stub.ok()) return ctx.Fail("fleet list", stub.status());
  v1::ListFleetProbesResponse resp;
  // Every page (at most 5000 probes a call; the rollouts come with the first), shown as one.
  grpc::Status st = ForEachPage<v1::ListFleetProbesResponse>(
      req,
      [&](const v1::ListFleetProbesRequest& r, v1::ListFleetProbesResponse* page) {
        return (*stub)->ListFleetProbes(ctx.Rpc().get(), r, page);
      },
      [&resp](v1::ListFleetProbesResponse& page) {
        for (v1::FleetProbeStatus& p : *page.mutable_probes()) *resp.add_probes() = std::move(p);
        for (v1::Rollout& r : *page.mutable_rollouts()) *resp.add_rollouts() = std::move(r);
      });
  if (!st.ok()) return FailRpc(ctx, "fleet list", st);
  if (ctx.json()) {
    ctx.PrintJson(resp);
    return 0;
  }
  // PREDICTED is the node's classifier under its kernel profile, KERNEL what the node's kernel
  // reports it did ("-": a stock kernel, which does not report); "!" marks a disagreement.
  Table t({"NODE", "PROFILE", "PROBE", "SITE", "DESIRED", "ACTUAL", "PREDICTED", "KERNEL", "HITS",
           "COPIES", "CPU", "BUDGET", "MESSAGE"});
  for (const auto& p : resp.probes()) {
    std::string kernel = Placement(p.kernel_placement());
    if (p.kernel_placement() != v1::PLACEMENT_UNSPECIFIED &&
        p.predicted_placement() != v1::PLACEMENT_UNSPECIFIED &&
        p.kernel_placement() != p.predicted_placement()) {
      kernel += "!";
    }
    t.Add({p.node_name(), p.kernel_profile().empty() ? "-" : p.kernel_profile(), p.fleet_probe_id(),
           FormatSite(p.spec()), p.desired() ? "yes" : "no", ShortName(p.actual()),
           Placement(p.predicted_placement() != v1::PLACEMENT_UNSPECIFIED ? p.predicted_placement()
                                                                          : p.placement()),
           kernel, absl::StrCat(p.hits()), absl::StrCat(p.local_copies()),
           p.cost().calibrated() ? CpuPercent(p.cost().cpu_seconds_per_sec()) : "-",
           BudgetStateName(p.cost().budget_state()), p.status_message()});
  }
  t.Print(ctx.out());
  ctx.out() << "\n";
  PrintRollouts(ctx, {resp.rollouts().begin(), resp.rollouts().end()});
  return 0;
}

int Rollout(Context& ctx) {
  const auto& pos = ctx.args().positional();
  if (pos.size() != 2) return ctx.Usage("fleet rollout needs one SET_ID");
  v1::GetRolloutRequest req;
  req.set_set_id(pos[1]);
  auto stub = Fleet(ctx);
  if (!stub.ok()) return ctx.Fail("fleet rollout", stub.status());
  v1::Rollout r;
  auto rpc = ctx.Rpc();
  if (auto s = (*stub)->GetRollout(rpc.get(), req, &r); !s.ok()) {
    return FailRpc(ctx, "fleet rollout", s);
  }
  if (ctx.json()) {
    ctx.PrintJson(r);
  } else {
    PrintRollouts(ctx, {r});
  }
  return 0;
}

int Watch(Context& ctx) {
  v1::WatchFleetHitsRequest req;
  for (const auto& n : ctx.args().GetAll("node")) req.add_node_names(n);
  for (const auto& s : ctx.args().GetAll("set")) req.add_set_ids(s);
  uint64_t count = 0;
  if (ctx.args().Has("count") && !absl::SimpleAtoi(*ctx.args().Get("count"), &count)) {
    return ctx.Usage("bad --count");
  }
  auto stub = Fleet(ctx);
  if (!stub.ok()) return ctx.Fail("fleet watch", stub.status());
  grpc::ClientContext rpc;  // no deadline: a stream
  auto reader = (*stub)->WatchFleetHits(&rpc, req);
  v1::FleetHitBatch batch;
  uint64_t seen = 0;
  if (!ctx.json()) ctx.out() << "NODE  PROBE  PLACEMENT  +HITS  TOTAL\n";
  while (reader->Read(&batch)) {
    if (ctx.json()) {
      ctx.PrintJson(batch);
    } else {
      for (const auto& u : batch.updates()) {
        ctx.out() << u.node_name() << "  " << u.fleet_probe_id() << "  " << Placement(u.placement())
                  << "  +" << u.hits_delta() << "  " << u.hits_total() << "\n";
      }
      if (batch.dropped_total()) ctx.out() << "(dropped so far: " << batch.dropped_total() << ")\n";
      for (const auto& n : batch.notices()) ctx.out() << "(" << n << ")\n";
    }
    ctx.out().flush();
    seen += batch.updates_size();
    if (count && seen >= count) {
      rpc.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
    return FailRpc(ctx, "fleet watch", s);
  }
  return 0;
}

int Forget(Context& ctx) {
  const auto& pos = ctx.args().positional();
  if (pos.size() != 2) return ctx.Usage("fleet forget needs one NODE");
  v1::ForgetAgentRequest req;
  req.set_node_name(pos[1]);
  auto stub = Fleet(ctx);
  if (!stub.ok()) return ctx.Fail("fleet forget", stub.status());
  v1::ForgetAgentResponse resp;
  auto rpc = ctx.Rpc();
  if (auto s = (*stub)->ForgetAgent(rpc.get(), req, &resp); !s.ok()) {
    return FailRpc(ctx, "fleet forget", s);
  }
  ctx.out() << "forgot " << pos[1] << "\n";
  return 0;
}

int RunFleet(Context& ctx) {
  const auto& pos = ctx.args().positional();
  static const std::map<std::string, int (*)(Context&)> subs = {
      {"agents", Agents},   {"attach", Attach}, {"detach", Detach}, {"list", List},
      {"rollout", Rollout}, {"watch", Watch},   {"forget", Forget}};
  if (pos.empty() || !subs.count(pos[0])) {
    return ctx.Usage(
        "fleet needs a subcommand: agents, attach, detach, list, rollout, watch, forget (xolctl "
        "fleet --help)");
  }
  return subs.at(pos[0])(ctx);
}

}  // namespace

XOLCTL_COMMAND(
    "fleet",
    "drive the fleet through the controller (agents, attach, detach, list, rollout, watch, forget)",
    "fleet SUBCOMMAND [--controller=HOST:PORT] [--tls-ca=F --tls-cert=F --tls-key=F | "
    "--insecure-plaintext]\n"
    "  agents   [--labels=k=v,...]\n"
    "  attach   (--all | --nodes=a,b | --labels=k=v,...) [--canary=FRACTION] [--canary-timeout=S] "
    "[--ttl=S]\n"
    "           [--capture=rdi,rsi] [--pid=N] [--rate-limit=N] [--build-id=HEX] [--allow-relocate] "
    "[--no-wait] SPEC...\n"
    "           [--canary-soak=S] [--dry-run [--calls-per-sec=R]]\n"
    "           [--confirm-raw-offset (PATH@FILE_OFFSET outside every function)]\n"
    "           SPEC: PATH:SYMBOL[+OFFSET], PATH:0xFILE_OFFSET or PATH@FILE_OFFSET\n"
    "  detach   SET_ID...\n"
    "  list     [--node=N]... [--set=SET_ID]...\n"
    "  rollout  SET_ID\n"
    "  watch    [--node=N]... [--set=SET_ID]... [--count=N]\n"
    "  forget   NODE",
    {"controller", "tls-ca", "tls-cert", "tls-key", "nodes", "labels", "canary", "canary-timeout",
     "ttl", "capture", "pid", "rate-limit", "build-id", "node", "set", "count", "canary-soak",
     "calls-per-sec"},
    {"all", "insecure-plaintext", "no-wait", "allow-relocate", "confirm-raw-offset", "dry-run"},
    RunFleet);

}  // namespace xolfleet::cli
