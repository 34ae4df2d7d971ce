// simagents: thousands of simulated agents in one process against a real controller
// (bench/fleet/sim_fleet.h). For the scale benchmark (bench/fleet/scale.sh) and the fleet
// tier's scale check.
//
//   simagents --controller=127.0.0.1:7443 --agents=1000 --tls_ca=ca.crt
//     --tls_cert=agent.crt --tls_key=agent.key --stats_file=/tmp/sim.json
//
// One certificate for every agent (--tls_cert/--tls_key: the controller then needs
// --agent_cn_must_match_node=false, the flag for deliberately shared certificates), or
// one per node (--cert_dir=DIR holding NAME.crt and NAME.key, e.g. make-test-ca.sh's).
// Every agent has its own channel (TCP connection, TLS handshake) either way.
//
// --stats_file is rewritten (atomically) every --stats_interval with one JSON object:
// agents, registered, registrations, desired, heartbeats_sent, delta_heartbeats,
// state_change_heartbeats, stream_ends, stream_errors, failed_dials, last_error,
// without_sets, sets {set id: agents holding it}. On SIGINT or SIGTERM every stream is half-closed;
// once the controller has finished all of them the final stats are written (file and stdout) and
// the exit status is 0 (1 if some stream did not end within 30 s).
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/fleet/sim_fleet.h"
#include "services/common/flags.h"
#include "services/common/shutdown_signals.h"
#include "services/common/tls.h"

ABSL_FLAG(std::string, controller, "127.0.0.1:7443", "controller address");
ABSL_FLAG(int, agents, 100, "simulated agents");
ABSL_FLAG(int, first_index, 1, "the first agent is NAME_PREFIX<first_index>");
ABSL_FLAG(std::string, name_prefix, "node-", "node names: prefix + index");
ABSL_FLAG(int, zones, 4, "label zone=z<index % zones> (0: no labels)");
ABSL_FLAG(std::string, tls_ca, "", "CA file");
ABSL_FLAG(std::string, tls_cert, "", "one client certificate for every agent");
ABSL_FLAG(std::string, tls_key, "", "its key");
ABSL_FLAG(std::string, cert_dir, "", "per-agent certificates: DIR/NAME.crt, DIR/NAME.key");
ABSL_FLAG(bool, insecure_plaintext, false, "plaintext (loopback or unix socket only)");
ABSL_FLAG(double, connect_rate, 500, "new streams per second while starting");
ABSL_FLAG(int, max_pending_dials, 0,
          "at most this many streams dialled and not yet acknowledged (0: no limit)");
ABSL_FLAG(absl::Duration, keepalive_time, absl::ZeroDuration(),
          "keepalive ping interval (0: the agent link's, 20 s)");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::ZeroDuration(),
          "time a keepalive ping may take to be answered (0: the agent link's, 10 s)");
ABSL_FLAG(uint64_t, hits_per_heartbeat, 1, "hits added to every probe per heartbeat");
ABSL_FLAG(bool, delta_heartbeats, true, "send delta heartbeats if the controller accepts them");
ABSL_FLAG(std::string, stats_file, "", "JSON stats, rewritten every --stats_interval");
ABSL_FLAG(absl::Duration, stats_interval, absl::Milliseconds(500), "");

namespace {

std::string Json(const xolfleet::sim::SimFleet& f) {
  int without = 0;
  auto counts = f.SetCounts(&without);
  auto s = f.stats();
  std::string sets;
  for (const auto& [id, n] : counts) {
    absl::StrAppend(&sets, sets.empty() ? "" : ", ", "\"", id, "\": ", n);
  }
  std::string err;
  for (char c : s.last_error) {
    if (c == '"' || c == '\\') err += '\\';
    err += (c >= 0x20 ? c : ' ');
  }
  return absl::StrFormat(
      "{\"agents\": %d, \"registered\": %d, \"registrations\": %d, \"desired\": %d, "
      "\"heartbeats_sent\": %d, \"delta_heartbeats\": %d, \"state_change_heartbeats\": %d, "
      "\"stream_ends\": %d, \"stream_errors\": %d, \"failed_dials\": %d, \"without_sets\": %d, "
      "\"last_error\": \"%s\", \"sets\": {%s}}",
      s.agents, s.registered, s.registrations, s.desired, s.heartbeats_sent, s.delta_heartbeats,
      s.state_change_heartbeats, s.stream_ends, s.stream_errors, s.failed_dials, without, err,
      sets);
}

void WriteStats(const std::string& path, const std::string& json) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::trunc);
    o << json << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  xolfleet::BlockShutdownSignals();
  const sigset_t set = xolfleet::ShutdownSignals();
  signal(SIGPIPE, SIG_IGN);
  xolfleet::ParseFlags(argc, argv);

  // Every agent holds a socket: make room for them (and gRPC's own descriptors).
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t want = static_cast<rlim_t>(absl::GetFlag(FLAGS_agents)) + 1024;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = std::min(want, rl.rlim_max);
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
      fprintf(stderr, "simagents: warning: open files limit %llu < %llu (ulimit -n)\n",
              static_cast<unsigned long long>(rl.rlim_cur), static_cast<unsigned long long>(want));
    }
  }

  xolfleet::sim::SimFleet::Options o;
  o.target = absl::GetFlag(FLAGS_controller);
  o.agents = absl::GetFlag(FLAGS_agents);
  o.first_index = absl::GetFlag(FLAGS_first_index);
  o.name_prefix = absl::GetFlag(FLAGS_name_prefix);
  o.connect_rate = absl::GetFlag(FLAGS_connect_rate);
  o.max_pending_dials = absl::GetFlag(FLAGS_max_pending_dials);
  o.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  o.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  o.hits_per_heartbeat = absl::GetFlag(FLAGS_hits_per_heartbeat);
  o.delta_heartbeats = absl::GetFlag(FLAGS_delta_heartbeats);
  if (int zones = absl::GetFlag(FLAGS_zones); zones > 0) {
    o.labels = [zones](int i) {
      return std::map<std::string, std::string>{{"zone", absl::StrCat("z", i % zones)}};
    };
  }
  const std::string dir = absl::GetFlag(FLAGS_cert_dir);
  xolfleet::tls::TlsFiles shared{absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                                 absl::GetFlag(FLAGS_tls_key),
                                 absl::GetFlag(FLAGS_insecure_plaintext)};
  std::shared_ptr<grpc::ChannelCredentials> shared_creds;
  if (dir.empty()) {
    auto c = xolfleet::tls::ChannelCredentials(shared, o.target);
    if (!c.ok()) {
      fprintf(stderr, "simagents: %s\n", std::string(c.status().message()).c_str());
      return 2;
    }
    shared_creds = *c;
  } else {
    // Fail early on a missing file rather than once per agent.
    auto c = xolfleet::tls::ChannelCredentials(
        {shared.ca_cert, absl::StrCat(dir, "/", o.name_prefix, o.first_index, ".crt"),
         absl::StrCat(dir, "/", o.name_prefix, o.first_index, ".key"), false},
        o.target);
    if (!c.ok()) {
      fprintf(stderr, "simagents: %s\n", std::string(c.status().message()).c_str());
      return 2;
    }
  }
  o.credentials = [shared_creds, dir, shared, prefix = o.name_prefix,
                   target = o.target](int i) -> std::shared_ptr<grpc::ChannelCredentials> {
    if (shared_creds) return shared_creds;
    auto c = xolfleet::tls::ChannelCredentials(
        {shared.ca_cert, absl::StrCat(dir, "/", prefix, i, ".crt"),
         absl::StrCat(dir, "/", prefix, i, ".key"), false},
        target);
    if (!c.ok()) {
      fprintf(stderr, "simagents: agent %d: %s\n", i, std::string(c.status().message()).c_str());
      exit(2);
    }
    return *c;
  };

  auto fleet = xolfleet::sim::SimFleet::Start(o);
  if (!fleet.ok()) {
    fprintf(stderr, "simagents: %s\n", std::string(fleet.status().message()).c_str());
    return 2;
  }
  const std::string stats_file = absl::GetFlag(FLAGS_stats_file);
  const absl::Duration every = absl::GetFlag(FLAGS_stats_interval);
  const timespec wait = absl::ToTimespec(every);
  for (;;) {
    WriteStats(stats_file, Json(**fleet));
    int sig = sigtimedwait(&set, nullptr, &wait);
    if (sig == SIGINT || sig == SIGTERM) break;
  }
  bool all_ended = (*fleet)->Stop(absl::Seconds(30));
  std::string final_json = Json(**fleet);
  WriteStats(stats_file, final_json);
  printf("%s\n", final_json.c_str());
  return all_ended ? 0 : 1;
}
