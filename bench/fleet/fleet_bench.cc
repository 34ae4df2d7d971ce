// Fleet benchmark driver (bench/fleet/run.sh starts the controller and the agents).
//   fleet_bench --mode=wait_agents --agents=N      until N agents are UP; prints seconds
//   fleet_bench --mode=attach --rounds=R           R fleet attaches to all agents, each
//                                                  waited for (rollout COMPLETE); prints
//                                                  p50/p99/max latency
//   fleet_bench --mode=converge --agents=N         until N agents are UP and every one has
//                                                  all its desired sets attached; prints s
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "services/common/flags.h"
#include "services/common/page_token.h"
#include "services/common/tls.h"
#include "xolfleet/v1/controller.grpc.pb.h"

ABSL_FLAG(std::string, controller, "127.0.0.1:7443", "controller address");
ABSL_FLAG(std::string, tls_ca, "", "CA");
ABSL_FLAG(std::string, tls_cert, "", "client cert (attach-counts or admin)");
ABSL_FLAG(std::string, tls_key, "", "client key");
ABSL_FLAG(std::string, mode, "attach", "wait_agents, attach or converge");
ABSL_FLAG(int, agents, 100, "agents expected");
ABSL_FLAG(int, rounds, 50, "attach rounds");
ABSL_FLAG(double, canary, 0, "canary fraction for attach rounds");
ABSL_FLAG(std::string, binary, "/bin/sh", "binary path the probes name");
ABSL_FLAG(double, timeout, 60, "seconds");
ABSL_FLAG(double, attach_deadline, 30, "seconds one timed attach may take");
ABSL_FLAG(absl::Duration, settle_poll, absl::Milliseconds(10),
          "how often to list agents while a detach settles (a list of thousands of agents is "
          "itself work for the controller)");
ABSL_FLAG(
    bool, detach_after, true,
    "detach each set after its (timed) attach, so every round starts from the same fleet state");

using namespace xolfleet;

// Every agent, following ListAgents' pages (at most 5000 a page). `wait_for_ready`, `timeout`:
// of each call.
static grpc::Status ListAllAgents(v1::FleetService::Stub& stub, bool wait_for_ready,
                                  absl::Duration timeout, v1::ListAgentsResponse* all) {
  all->Clear();
  v1::ListAgentsRequest req;
  req.set_page_size(5000);
  return ForEachPage<v1::ListAgentsResponse>(
      req,
      [&](const v1::ListAgentsRequest& r, v1::ListAgentsResponse* page) {
        grpc::ClientContext ctx;
        if (timeout != absl::InfiniteDuration())
          ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
        ctx.set_wait_for_ready(wait_for_ready);
        return stub.ListAgents(&ctx, r, page);
      },
      [all](v1::ListAgentsResponse& page) {
        for (v1::AgentInfo& a : *page.mutable_agents()) *all->add_agents() = std::move(a);
      });
}

int main(int argc, char** argv) {
  xolfleet::ParseFlags(argc, argv);
  tls::TlsFiles f{absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                  absl::GetFlag(FLAGS_tls_key), false};
  auto creds = tls::ChannelCredentials(f, absl::GetFlag(FLAGS_controller));
  if (!creds.ok()) {
    fprintf(stderr, "%s\n", std::string(creds.status().message()).c_str());
    return 1;
  }
  // Reconnect quickly: in converge mode the controller is still starting when we begin,
  // and gRPC's default reconnect backoff (1 s, growing) would be measured instead of it.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  auto stub = v1::FleetService::NewStub(
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_controller), *creds, args));
  absl::Time start = absl::Now();
  absl::Time end = start + absl::Seconds(absl::GetFlag(FLAGS_timeout));
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int want = absl::GetFlag(FLAGS_agents);

  if (mode == "wait_agents" || mode == "converge") {
    int up = 0, converged = 0;
    absl::Time next_report = start + absl::Seconds(1);
    while (absl::Now() < end) {
      v1::ListAgentsResponse resp;
      if (ListAllAgents(*stub, true, absl::Seconds(2), &resp).ok()) {
        up = converged = 0;
        for (const auto& a : resp.agents()) {
          if (a.health() != v1::AGENT_HEALTH_UP) continue;
          ++up;
          if (a.sets_converged() == a.sets_desired()) ++converged;
        }
        if (absl::Now() >= next_report) {
          fprintf(stderr, "  t=%.1fs up=%d converged=%d\n",
                  absl::ToDoubleSeconds(absl::Now() - start), up, converged);
          next_report += absl::Seconds(1);
        }
        if (up >= want && (mode == "wait_agents" || converged >= want)) {
          printf("%.3f\n", absl::ToDoubleSeconds(absl::Now() - start));
          return 0;
        }
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    fprintf(stderr, "timeout: %d up, %d converged of %d\n", up, converged, want);
    return 1;
  }

  std::vector<double> ms;
  for (int i = 0; i < absl::GetFlag(FLAGS_rounds); ++i) {
    v1::FleetAttachRequest req;
    req.mutable_selector()->set_all(true);
    auto* s = req.add_specs();
    s->set_binary_path(absl::GetFlag(FLAGS_binary));
    s->set_symbol(absl::StrCat("bench_", i));
    req.mutable_policy()->set_canary_fraction(absl::GetFlag(FLAGS_canary));
    req.set_wait(true);
    grpc::ClientContext ctx;
    // A connection that fails (a TLS handshake lost to a loaded controller) is retried
    // within the deadline rather than failing the round.
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(
                         static_cast<int64_t>(absl::GetFlag(FLAGS_attach_deadline) * 1000)));
    v1::FleetAttachResponse resp;
    absl::Time t0 = absl::Now();
    grpc::Status st = stub->AttachFleet(&ctx, req, &resp);
    double dt = absl::ToDoubleMilliseconds(absl::Now() - t0);
    if (!st.ok() || resp.rollout().state() != v1::ROLLOUT_STATE_COMPLETE ||
        static_cast<int>(resp.rollout().nodes_attached()) != want) {
      fprintf(stderr, "round %d: %s %s attached=%u\n", i, st.error_message().c_str(),
              v1::RolloutState_Name(resp.rollout().state()).c_str(),
              resp.rollout().nodes_attached());
      return 1;
    }
    ms.push_back(dt);
    if (absl::GetFlag(FLAGS_detach_after)) {
      grpc::ClientContext dctx;
      dctx.set_wait_for_ready(true);
      v1::FleetDetachRequest d;
      d.add_set_ids(resp.rollout().set_id());
      v1::FleetDetachResponse dresp;
      if (auto s = stub->DetachFleet(&dctx, d, &dresp); !s.ok()) {
        fprintf(stderr, "detach: %s\n", s.error_message().c_str());
        return 1;
      }
      // Untimed: let every agent apply the detach, so the next timed attach does not
      // compete with it.
      absl::Time settle_end = absl::Now() + absl::Seconds(10);
      for (bool settled = false; !settled && absl::Now() < settle_end;) {
        v1::ListAgentsResponse agents;
        if (!ListAllAgents(*stub, false, absl::InfiniteDuration(), &agents).ok()) break;
        settled = true;
        for (const auto& a : agents.agents()) {
          settled &= a.health() != v1::AGENT_HEALTH_UP || a.probes_attached() == a.sets_desired();
        }
        if (!settled) absl::SleepFor(absl::GetFlag(FLAGS_settle_poll));
      }
    }
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(p * ms.size()))];
  };
  printf("rounds=%zu p50_ms=%.1f p99_ms=%.1f max_ms=%.1f min_ms=%.1f\n", ms.size(), pct(0.5),
         pct(0.99), ms.back(), ms.front());
  return 0;
}
