// xolfleet-agent: places uprobes on this node's processes on request over gRPC. main() parses flags
// and wires the objects; see README.md for the flags and the API.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "services/agent/agent_service.h"
#include "services/agent/bpf_probe_program.h"
#include "services/agent/controller_link.h"
#include "services/agent/hit_hub.h"
#include "services/agent/kernel_features.h"
#include "services/agent/local_listener.h"
#include "services/agent/metrics.h"
#include "services/agent/probe_manager.h"
#include "services/agent/request_errors.h"
#include "services/agent/socket_path.h"
#include "services/common/authz.h"
#include "services/common/cert_reloader.h"
#include "services/common/flags.h"
#include "services/common/log.h"
#include "services/common/shutdown_signals.h"
#include "services/common/tls.h"

ABSL_FLAG(std::string, unix_socket, "/run/xolfleet/agent.sock",
          "unix socket path of the gRPC API (callers identified by the kernel); empty: none");
ABSL_FLAG(std::string, unix_socket_mode, "0600",
          "permission mode of the unix socket (0600: root only; 0660 with --unix-socket-group for "
          "a group)");
ABSL_FLAG(std::string, unix_socket_group, "",
          "group (name or gid) owning the unix socket; empty: the agent's");
ABSL_FLAG(std::string, listen, "",
          "TCP address for the gRPC API (host:port), served over mTLS "
          "(--tls-ca/--tls-cert/--tls-key); empty: none");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the TCP API's client certificates");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate of the TCP API");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of the TCP API");
ABSL_FLAG(bool, insecure_plaintext_tcp, false,
          "development only: serve --listen without TLS (refused unless it resolves to loopback "
          "only); callers are then identified as insecure:local");
ABSL_FLAG(std::string, authz_config, "",
          "authorization config (capability identity per line; see README); empty: admin for uid 0 "
          "(and the agent's own uid), nothing for anyone else");
ABSL_FLAG(absl::Duration, config_reload_interval, absl::Seconds(10),
          "how often --authz-config and the --tls-* and --controller-tls-* files are re-read; a "
          "changed version is used once it validates, a broken one is refused and the one in force "
          "stays; 0: read at start only");
ABSL_FLAG(uint32_t, max_connections, 256, "most connections open at once on the unix socket");
ABSL_FLAG(uint32_t, max_connections_per_uid, 16,
          "most unix socket connections open at once per caller uid");
ABSL_FLAG(uint32_t, max_watch_streams_per_identity, 8,
          "most WatchHits streams open at once per caller");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "host:port serving Prometheus /metrics; empty: none");
ABSL_FLAG(std::string, link_mode, "auto",
          "auto (uprobe_multi when the kernel has it, Linux 6.6+), multi, or perf (one perf-event "
          "link per probe)");
ABSL_FLAG(uint32_t, max_probes, 100000, "most probes attached at once");
ABSL_FLAG(uint32_t, max_probes_per_site, 16,
          "most probes on one instruction of one file (each runs on every hit)");
ABSL_FLAG(uint32_t, max_specs_per_request, 20000, "most specs in one Attach request");
ABSL_FLAG(uint32_t, ringbuf_mib, 4,
          "hit-event ring buffer size in MiB (power of two); counts twice in RSS (the kernel maps "
          "the data area twice for wrap-around)");
ABSL_FLAG(uint32_t, watch_queue_events, 65536,
          "events queued per WatchHits stream before that stream drops (and counts) events");
ABSL_FLAG(uint32_t, max_watch_streams, 64,
          "most WatchHits streams open at once; more: RESOURCE_EXHAUSTED");
ABSL_FLAG(uint32_t, max_watch_queued_events, 262144,
          "most hit events waiting in all WatchHits queues together (queues grow with use; over "
          "this, streams drop and count events)");
ABSL_FLAG(uint32_t, metrics_max_probe_series, 1000,
          "most per-probe series in xolfleet_agent_probe_hits_total");
ABSL_FLAG(std::string, node_name, "", "node name reported in NodeInfo (default: hostname)");
ABSL_FLAG(std::string, labels, "", "node labels k=v,k=v reported in NodeInfo");
ABSL_FLAG(std::string, host_root, "/",
          "where probe specs' host paths are resolved (the host's / mounted into the agent's "
          "container: /host); no path leads outside it");
ABSL_FLAG(
    bool, calibrate, true,
    "measure the cost of a probe hit per placement class at start-up (on a helper process the "
    "agent forks; about a second, in the background) and when the kernel profile changes");
ABSL_FLAG(double, node_budget, 0.01,
          "estimated CPU all probes together may cost the node, as a fraction of one CPU (0.01: "
          "1%); 0: none");
ABSL_FLAG(double, probe_budget, 0,
          "estimated CPU one probe may cost, as a fraction of one CPU; 0: none");
ABSL_FLAG(std::string, budget_action, "alert",
          "what to do with a probe over budget over --budget-window: alert (log, metric, state), "
          "throttle (lower its capture rate to --budget-throttle-rate), detach");
ABSL_FLAG(absl::Duration, budget_window, absl::Seconds(10),
          "window over which a probe's cost is measured before a budget acts");
ABSL_FLAG(std::string, kernel_placements_path, "/sys/kernel/debug/uprobes/placements",
          "where the patched kernel reports the placement it chose per probe (tests point this at "
          "a fixture)");
ABSL_FLAG(uint32_t, budget_throttle_rate, 10,
          "--budget-action=throttle: captured events per second left to a throttled probe");
// Controller link (services/agent/controller_link.h): optional; the agent works alone.
ABSL_FLAG(std::string, controller, "",
          "controller address (host:port or unix:PATH) to register with, or several replicas' "
          "addresses separated by commas (the link moves to the next one when a connection fails "
          "or ends); empty: none");
ABSL_FLAG(std::string, controller_tls_ca, "", "PEM CA that signed the controller's cert");
ABSL_FLAG(std::string, controller_tls_cert, "", "PEM client certificate of this agent");
ABSL_FLAG(std::string, controller_tls_key, "", "PEM private key of this agent");
ABSL_FLAG(bool, controller_insecure_plaintext, false,
          "talk to the controller without TLS (loopback or unix socket only)");

namespace xolfleet {
namespace {

// Perf-event links (every kernel before 6.6) hold one descriptor per probe, so the default
// soft limit of 1024 descriptors would cap a node at ~1000 probes. Raise the soft limit to
// the hard one, and say what the cap is.
void RaiseFileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  }
  Log("open files limit ", rl.rlim_cur,
      " (perf-event links take one per probe; raise the hard limit for more)");
}

// Start-up failed after the program, the ring-buffer reader and the metrics
// server exist but before any probe is attached: the kernel reclaims all of it,
// so skip their destructors (the metrics server's takes seconds).
[[noreturn]] void ExitAtStartUp(int rc) {
  fflush(nullptr);
  _exit(rc);
}

// Start-up failures carry their exit status in the code: a flag or a configuration
// file the operator must fix exits 2, anything else 1.
int ExitStatus(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

[[noreturn]] void FailAtStartUp(const absl::Status& s) {
  Log(s.message());
  ExitAtStartUp(ExitStatus(s));
}

// --link-mode against what the kernel offers.
absl::StatusOr<v1::LinkMode> ChooseLinkMode() {
  std::string why;
  const bool multi_ok = KernelSupportsUprobeMulti(&why);
  const std::string mode_flag = absl::GetFlag(FLAGS_link_mode);
  v1::LinkMode mode;
  if (mode_flag == "auto") {
    mode = multi_ok ? v1::LINK_MODE_UPROBE_MULTI : v1::LINK_MODE_PERF_EVENT;
    if (!multi_ok) Log("uprobe_multi links unavailable (", why, "): using perf-event links");
  } else if (mode_flag == "multi") {
    if (!multi_ok) {
      return absl::FailedPreconditionError(
          absl::StrCat("--link-mode=multi but the kernel lacks uprobe_multi links: ", why));
    }
    mode = v1::LINK_MODE_UPROBE_MULTI;
  } else if (mode_flag == "perf") {
    mode = v1::LINK_MODE_PERF_EVENT;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--link-mode must be auto, multi or perf, not '", mode_flag, "'"));
  }
  Log("link mode: ", mode == v1::LINK_MODE_UPROBE_MULTI ? "uprobe_multi" : "perf_event");
  return mode;
}

// The probe manager's options: node identity, placement sources, budgets.
absl::StatusOr<ProbeManager::Options> ManagerOptions() {
  ProbeManager::Options mopts;
  mopts.max_specs_per_request = absl::GetFlag(FLAGS_max_specs_per_request);
  mopts.max_probes_per_site = absl::GetFlag(FLAGS_max_probes_per_site);
  mopts.node_name = absl::GetFlag(FLAGS_node_name);
  mopts.host_root = absl::GetFlag(FLAGS_host_root);
  if (mopts.node_name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    mopts.node_name = host;
  }
  for (absl::string_view kv : absl::StrSplit(absl::GetFlag(FLAGS_labels), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    mopts.labels[p.first] = p.second;
  }
  mopts.calibrate = absl::GetFlag(FLAGS_calibrate);
  mopts.placements_path = absl::GetFlag(FLAGS_kernel_placements_path);
  mopts.budget.node_budget = absl::GetFlag(FLAGS_node_budget);
  mopts.budget.probe_budget = absl::GetFlag(FLAGS_probe_budget);
  mopts.budget.window = absl::GetFlag(FLAGS_budget_window);
  mopts.throttle_events_per_sec = absl::GetFlag(FLAGS_budget_throttle_rate);
  absl::StatusOr<BudgetAction> a = ParseBudgetAction(absl::GetFlag(FLAGS_budget_action));
  if (!a.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--budget-action: ", a.status().message()));
  }
  mopts.budget.action = *a;
  if (mopts.budget.node_budget < 0 || mopts.budget.probe_budget < 0 ||
      mopts.budget.window < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "--node-budget and --probe-budget must be >= 0, --budget-window at least 1s");
  }
  return mopts;
}

// Who may do what (services/common/authz.h), following --authz-config.
absl::StatusOr<FollowedPolicy> AuthzPolicyFromFlags(absl::Duration reload,
                                                    ProcessMetrics* process) {
  FollowedPolicy authz;
  if (absl::GetFlag(FLAGS_authz_config).empty()) {
    absl::StatusOr<Authorizer> a = Authorizer::FromString(
        geteuid() == 0 ? std::string("admin uid:0\n")
                       : absl::StrCat("admin uid:0\nadmin uid:", geteuid(), "\n"));
    if (!a.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("authorization config: ", a.status().message()));
    }
    authz.policy = std::make_unique<AuthzPolicy>(*std::move(a));
    return authz;
  }
  process->WatchConfig("authz");
  absl::StatusOr<FollowedPolicy> f =
      LoadAndFollowPolicy(absl::GetFlag(FLAGS_authz_config), reload, process);
  if (!f.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("authorization config: ", f.status().message()));
  }
  return f;
}

// The TCP API's credentials: mTLS following --tls-* (cert_reloader.h), or plaintext on
// loopback when asked for.
struct TcpApi {
  std::shared_ptr<grpc::ServerCredentials> creds;
  std::unique_ptr<tls::CertificateReloader> certs;
};

absl::StatusOr<TcpApi> TcpApiFromFlags(const std::string& tcp, absl::Duration reload,
                                       ProcessMetrics* process) {
  TcpApi api;
  tls::TlsFiles files{absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                      absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_insecure_plaintext_tcp)};
  if (files.insecure_plaintext) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> c = tls::ServerCredentials(files, tcp);
    if (!c.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--listen=", tcp, ": ", c.status().message()));
    }
    api.creds = *std::move(c);
    Log("WARNING: serving ", tcp,
        " in plaintext (--insecure-plaintext-tcp): every local user is insecure:local; for "
        "development only");
    return api;
  }
  process->WatchConfig("tls");
  absl::StatusOr<std::unique_ptr<tls::CertificateReloader>> r =
      tls::CertificateReloader::Start({files, "tls", reload, process});
  if (!r.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--listen=", tcp, ": ", r.status().message()));
  }
  api.certs = *std::move(r);
  api.creds = api.certs->ServerCredentials();
  return api;
}

// The unix socket, its mode and group, callers identified by the kernel.
absl::StatusOr<std::unique_ptr<LocalListener>> LocalListenerFromFlags(
    const std::string& unix_path) {
  LocalListener::Options lo;
  lo.path = unix_path;
  lo.max_connections = absl::GetFlag(FLAGS_max_connections);
  lo.max_connections_per_uid = absl::GetFlag(FLAGS_max_connections_per_uid);
  absl::StatusOr<mode_t> mode = ParseSocketMode(absl::GetFlag(FLAGS_unix_socket_mode));
  if (!mode.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--unix-socket-mode: ", mode.status().message()));
  }
  lo.mode = *mode;
  if (!absl::GetFlag(FLAGS_unix_socket_group).empty()) {
    absl::StatusOr<gid_t> g = ParseGroup(absl::GetFlag(FLAGS_unix_socket_group));
    if (!g.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--unix-socket-group: ", g.status().message()));
    }
    lo.group = *g;
  }
  // The default directory (/run/xolfleet) may not exist yet.
  if (size_t slash = unix_path.rfind('/'); slash != std::string::npos && slash > 0) {
    mkdir(unix_path.substr(0, slash).c_str(), 0755);
  }
  absl::StatusOr<std::unique_ptr<LocalListener>> l = LocalListener::Create(lo);
  if (!l.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on unix:", unix_path, ": ", l.status().message()));
  }
  return l;
}

// The optional link to the controller, with the certificates it follows.
struct Link {
  // Declared first: outlives the link, whose connections read the files it publishes.
  std::unique_ptr<tls::CertificateReloader> certs;  // follows --controller-tls-*
  std::unique_ptr<ControllerLink> link;
};

absl::StatusOr<Link> StartControllerLink(ProbeManager* manager, absl::Duration reload,
                                         ProcessMetrics* process) {
  Link link;
  ControllerLink::Options lo;
  lo.target = absl::GetFlag(FLAGS_controller);
  lo.tls = {absl::GetFlag(FLAGS_controller_tls_ca), absl::GetFlag(FLAGS_controller_tls_cert),
            absl::GetFlag(FLAGS_controller_tls_key),
            absl::GetFlag(FLAGS_controller_insecure_plaintext)};
  if (!lo.tls.insecure_plaintext) {
    process->WatchConfig("controller_tls");
    absl::StatusOr<std::unique_ptr<tls::CertificateReloader>> r =
        tls::CertificateReloader::Start({lo.tls, "controller_tls", reload, process});
    if (!r.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("controller link: ", r.status().message()));
    }
    link.certs = *std::move(r);
    lo.credentials = link.certs->ChannelCredentials();
  }
  absl::StatusOr<std::unique_ptr<ControllerLink>> l = ControllerLink::Start(lo, manager);
  if (!l.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("controller link: ", l.status().message()));
  }
  link.link = std::move(*l);
  Log("controller link to ", lo.target);
  return link;
}

// What places probes and carries their hits: the BPF program, the hub, the probe manager,
// the ring-buffer reader, and the metrics that observe them. Destroyed in reverse order.
struct Node {
  std::unique_ptr<HitHub> hub;
  std::unique_ptr<ProbeManager> manager;
  std::unique_ptr<RingBufferReader> reader;
  std::unique_ptr<AgentMetrics> metrics;
};

// A failure that is not the operator's flag or file: exits 1 whatever its code.
absl::Status NotUsage(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ? absl::FailedPreconditionError(s.message())
                                                        : s;
}

absl::StatusOr<std::unique_ptr<Node>> StartNode(const KernelInfo& kernel) {
  absl::StatusOr<v1::LinkMode> mode = ChooseLinkMode();
  if (!mode.ok()) return mode.status();
  BpfProbeProgram::Options popts;
  popts.link_mode = *mode;
  popts.max_probes = absl::GetFlag(FLAGS_max_probes);
  popts.ringbuf_bytes = absl::GetFlag(FLAGS_ringbuf_mib) << 20;
  absl::StatusOr<std::unique_ptr<BpfProbeProgram>> program = BpfProbeProgram::Load(popts);
  if (!program.ok()) return NotUsage(program.status());

  auto node = std::make_unique<Node>();
  HitHub::Limits hub_limits;
  hub_limits.max_watchers = absl::GetFlag(FLAGS_max_watch_streams);
  hub_limits.max_queued_events = absl::GetFlag(FLAGS_max_watch_queued_events);
  node->hub = std::make_unique<HitHub>(popts.max_probes, hub_limits);
  absl::StatusOr<ProbeManager::Options> mopts = ManagerOptions();
  if (!mopts.ok()) return mopts.status();
  absl::StatusOr<std::unique_ptr<ProbeManager>> manager =
      ProbeManager::Create(*mopts, std::move(*program), kernel, node->hub.get());
  if (!manager.ok()) return NotUsage(manager.status());
  node->manager = *std::move(manager);
  absl::StatusOr<std::unique_ptr<RingBufferReader>> reader =
      RingBufferReader::Start(node->manager->program_events_fd(), node->hub.get());
  if (!reader.ok()) return NotUsage(reader.status());
  node->reader = *std::move(reader);
  // Calibrate before serving: about a second, after which every answer carries figures
  // (a failure is logged and reported in NodeInfo; the agent serves without figures).
  if (mopts->calibrate) (void)node->manager->Calibrate();
  absl::StatusOr<std::unique_ptr<AgentMetrics>> metrics =
      AgentMetrics::Start(absl::GetFlag(FLAGS_metrics_address), node->manager.get(),
                          node->hub.get(), absl::GetFlag(FLAGS_metrics_max_probe_series));
  if (!metrics.ok()) return NotUsage(metrics.status());
  node->metrics = *std::move(metrics);
  node->manager->set_observer(node->metrics.get());
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    Log("metrics on http://", absl::GetFlag(FLAGS_metrics_address), "/metrics");
  }
  return node;
}

// The gRPC server on the TCP address (if any); the unix socket's listener hands it its connections.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    AgentServiceImpl* service, const std::string& tcp,
    const std::shared_ptr<grpc::ServerCredentials>& tcp_creds) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int tcp_port = 0;
  // No SO_REUSEPORT: a second agent on the same port must fail here, not
  // share the port with the first (clients alternated between them).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (!tcp.empty()) builder.AddListeningPort(tcp, tcp_creds, &tcp_port);
  builder.RegisterService(service);
  builder.experimental().SetInterceptorCreators(RequestErrorInterceptors());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || (!tcp.empty() && tcp_port == 0)) {
    return absl::UnavailableError(
        absl::StrCat("cannot start the gRPC server on ", tcp,
                     ": address in use (another agent on this port?) or not available"));
  }
  return server;
}

int Run() {
  RaiseFileLimit();
  absl::StatusOr<KernelInfo> kernel = DetectKernel();
  if (!kernel.ok()) {
    Log("cannot identify the kernel: ", kernel.status().message());
    return 1;
  }
  Log("kernel ", kernel->release, ": profile ", ProfileName(kernel->profile.profile), " (",
      kernel->profile.why, ")");
  absl::StatusOr<std::unique_ptr<Node>> node = StartNode(*kernel);
  if (!node.ok()) {
    Log(node.status().message());
    return ExitStatus(node.status());
  }
  ProbeManager* manager = (*node)->manager.get();

  // From here on a failure exits at once (FailAtStartUp): the kernel reclaims it all.
  const absl::Duration reload = absl::GetFlag(FLAGS_config_reload_interval);
  ProcessMetrics* process = (*node)->metrics->process();
  absl::StatusOr<FollowedPolicy> authz = AuthzPolicyFromFlags(reload, process);
  if (!authz.ok()) FailAtStartUp(authz.status());
  const std::string tcp = absl::GetFlag(FLAGS_listen);
  const std::string unix_path = absl::GetFlag(FLAGS_unix_socket);
  if (tcp.empty() && unix_path.empty()) {
    FailAtStartUp(
        absl::InvalidArgumentError("nothing to listen on: set --unix-socket and/or --listen"));
  }
  TcpApi tcp_api;
  if (!tcp.empty()) {
    absl::StatusOr<TcpApi> api = TcpApiFromFlags(tcp, reload, process);
    if (!api.ok()) FailAtStartUp(api.status());
    tcp_api = *std::move(api);
  }
  std::unique_ptr<LocalListener> local;
  if (!unix_path.empty()) {
    absl::StatusOr<std::unique_ptr<LocalListener>> l = LocalListenerFromFlags(unix_path);
    if (!l.ok()) FailAtStartUp(l.status());
    local = *std::move(l);
  }
  AgentServiceImpl::Options sopts;
  sopts.watch_queue_events = absl::GetFlag(FLAGS_watch_queue_events);
  sopts.max_watch_streams_per_identity = absl::GetFlag(FLAGS_max_watch_streams_per_identity);
  AgentServiceImpl service(manager, (*node)->hub.get(), sopts, authz->policy.get(), local.get());
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = StartServer(&service, tcp, tcp_api.creds);
  if (!server.ok()) FailAtStartUp(server.status());
  if (local) local->Start(server->get());
  (*server)->GetHealthCheckService()->SetServingStatus(true);

  Link link;
  if (!absl::GetFlag(FLAGS_controller).empty()) {
    absl::StatusOr<Link> l = StartControllerLink(manager, reload, process);
    if (!l.ok()) {
      Log(l.status().message());
      return 2;
    }
    link = *std::move(l);
  }
  Log("serving xolfleet.v1.AgentService on ",
      tcp.empty() ? ""
                  : absl::StrCat(tcp, absl::GetFlag(FLAGS_insecure_plaintext_tcp) ? " (plaintext) "
                                                                                  : " (mTLS) "),
      unix_path.empty() ? ""
                        : absl::StrCat("unix:", unix_path, " (mode ",
                                       absl::GetFlag(FLAGS_unix_socket_mode), ")"));

  // SIGINT/SIGTERM: stop serving, then detach everything (the manager's destructor).
  const int sig = WaitForShutdownSignal();
  Log("signal ", sig, ": shutting down");
  link.link.reset();  // before the manager it reconciles through
  if (local) local->Stop();
  service.Shutdown();
  (*server)->GetHealthCheckService()->SetServingStatus(false);
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->reset();
  (*node)->reader.reset();
  (*node)->manager.reset();
  local.reset();  // removes the socket file only if it is still the one we bound
  Log("stopped: every probe detached");
  // Nothing is left that the kernel would not reclaim; skip the slow teardown of the metrics web
  // server and gRPC's globals (seconds) so restarts are quick.
  fflush(nullptr);
  _exit(0);
}

}  // namespace
}  // namespace xolfleet

int main(int argc, char** argv) {
  // Two malloc arenas, not glibc's default of eight per CPU: every gRPC thread that
  // handles a large request would otherwise keep its own arena, each holding the pages
  // its freed objects fragmented (bench/agent/results.txt: settled RSS with 10,000
  // probes). The agent's hot paths (ring-buffer reader, streams) allocate little.
  mallopt(M_ARENA_MAX, 2);
  absl::SetProgramUsageMessage(
      "xolfleet-agent [--unix-socket=PATH] [--listen=HOST:PORT --tls-ca=F --tls-cert=F "
      "--tls-key=F] [--metrics-address=HOST:PORT]\n"
      "  [--link-mode=auto|multi|perf] [--max-probes=N]\n"
      "Places uprobes on this node's processes on request over gRPC (xolfleet.v1.AgentService).");
  xolfleet::ParseFlags(argc, argv);  // --link-mode or --link_mode
  // Block the stop signals in every thread; main() waits for them with sigwait.
  xolfleet::BlockShutdownSignals();
  setvbuf(stderr, nullptr, _IOLBF, 0);
  return xolfleet::Run();
}
