// xolfleet-controller: parses flags and wires the store, the fleet core, the gRPC
// services and /metrics. See README.md for the flags and the protocol.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "prometheus/exposer.h"
#include "services/common/authz.h"
#include "services/common/cert_reloader.h"
#include "services/common/flags.h"
#include "services/common/log.h"
#include "services/common/shutdown_signals.h"
#include "services/common/tls.h"
#include "services/common/tls_idle_buffers.h"
#include "services/controller/etcd_replica.h"
#include "services/controller/etcd_store.h"
#include "services/controller/fleet.h"
#include "services/controller/metrics.h"
#include "services/controller/service.h"
#include "services/controller/store.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7443", "gRPC address for agents and clients (mTLS)");
ABSL_FLAG(std::string, plaintext_listen, "",
          "optional extra plaintext address (loopback or unix: only), e.g. "
          "unix:/run/xolfleet/controller.sock; callers get identity insecure:local");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9465", "HTTP address for /metrics");
ABSL_FLAG(std::string, state_db, "/var/lib/xolfleet/controller.db", "SQLite desired state");
ABSL_FLAG(std::string, store, "",
          "where desired state lives: empty for SQLite at --state_db (one controller), or "
          "etcd://host:port[,host:port...][/prefix] (shared by controller replicas)");
ABSL_FLAG(std::string, etcd_tls_ca, "",
          "PEM CA certificate that signed the etcd members' certificates (with "
          "--etcd_tls_cert/--etcd_tls_key: client TLS to etcd; without them plaintext, allowed "
          "only to etcd members on loopback addresses)");
ABSL_FLAG(std::string, etcd_tls_cert, "",
          "PEM client certificate presented to etcd (its --client-cert-auth)");
ABSL_FLAG(std::string, etcd_tls_key, "", "PEM private key of --etcd_tls_cert");
ABSL_FLAG(std::string, replica_name, "",
          "this replica's name when replicas share an etcd store (default: host name and pid); "
          "must be unique among running replicas");
ABSL_FLAG(absl::Duration, leader_lease, absl::Seconds(5),
          "TTL of each replica's etcd lease: a killed leader is replaced after at most this");
ABSL_FLAG(
    bool, init, false,
    "create a new empty state database if --state_db does not exist (without it a missing database "
    "is an error: a mistyped path would otherwise make every node detach its fleet probes)");
ABSL_FLAG(std::string, backup, "",
          "write a consistent copy of --state_db to this path and exit (safe while a controller "
          "runs on it)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificate that signed agents' and clients' certs");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate");
ABSL_FLAG(std::string, tls_key, "", "PEM server private key");
ABSL_FLAG(bool, insecure_plaintext, false,
          "serve --listen without TLS (only allowed on loopback or a unix socket)");
ABSL_FLAG(std::string, authz_config, "", "authorization config (capability identity lines)");
ABSL_FLAG(absl::Duration, config_reload_interval, absl::Seconds(10),
          "how often --authz_config, the --tls_* and --etcd_tls_* files are re-read; a changed "
          "version is used once it validates, a broken one is refused and the one in force stays; "
          "0: read at start only");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1), "agent heartbeat interval");
ABSL_FLAG(absl::Duration, heartbeat_timeout, absl::Seconds(10),
          "an agent silent this long is marked down (its probes UNKNOWN)");
ABSL_FLAG(absl::Duration, canary_timeout, absl::Seconds(60),
          "default canary stage timeout (rolled back when exceeded)");
ABSL_FLAG(bool, agent_cn_must_match_node, true,
          "require an agent certificate's CN to equal the node name it registers (default; =false "
          "lets any agent certificate register any node name)");
ABSL_FLAG(uint32_t, max_watchers, 64, "most WatchFleetHits streams open at once");
ABSL_FLAG(uint32_t, max_watchers_per_identity, 8,
          "most WatchFleetHits streams open at once per client identity");
ABSL_FLAG(int, max_message_bytes, 32 << 20, "largest gRPC message accepted");

namespace xolfleet::controller {
namespace {

int Fail(const absl::Status& s) {
  Log("xolfleet-controller: ", s.message());
  return 1;
}

int Run() {
  if (!absl::GetFlag(FLAGS_backup).empty()) {
    if (!absl::GetFlag(FLAGS_store).empty()) {
      return Fail(absl::InvalidArgumentError(
          "--backup copies the SQLite --state_db; for etcd use `etcdctl snapshot save`"));
    }
    auto store = Store::Open(absl::GetFlag(FLAGS_state_db), Store::OpenMode::kMustExist);
    if (!store.ok()) return Fail(store.status());
    if (absl::Status st = (*store)->Backup(absl::GetFlag(FLAGS_backup)); !st.ok()) return Fail(st);
    Log("xolfleet-controller: ", absl::GetFlag(FLAGS_state_db), " backed up to ",
        absl::GetFlag(FLAGS_backup));
    return 0;
  }
  if (absl::GetFlag(FLAGS_authz_config).empty()) {
    return Fail(absl::InvalidArgumentError("--authz_config is required"));
  }
  auto metrics = std::make_shared<FleetMetrics>();
  const absl::Duration reload = absl::GetFlag(FLAGS_config_reload_interval);
  metrics->process()->WatchConfig("authz");
  absl::StatusOr<FollowedPolicy> authz =
      LoadAndFollowPolicy(absl::GetFlag(FLAGS_authz_config), reload, metrics->process());
  if (!authz.ok()) return Fail(authz.status());
  tls::TlsFiles files{absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                      absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_insecure_plaintext)};
  // mTLS credentials follow their files (services/common/cert_reloader.h).
  std::unique_ptr<tls::CertificateReloader> certs;
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (files.insecure_plaintext) {
    auto c = tls::ServerCredentials(files, absl::GetFlag(FLAGS_listen));
    if (!c.ok()) return Fail(c.status());
    creds = *std::move(c);
  } else {
    metrics->process()->WatchConfig("tls");
    auto r = tls::CertificateReloader::Start({files, "tls", reload, metrics->process()});
    if (!r.ok()) return Fail(r.status());
    certs = *std::move(r);
    creds = certs->ServerCredentials();
  }
  std::shared_ptr<grpc::ServerCredentials> plain_creds;
  if (!absl::GetFlag(FLAGS_plaintext_listen).empty()) {
    tls::TlsFiles plain;
    plain.insecure_plaintext = true;
    auto c = tls::ServerCredentials(plain, absl::GetFlag(FLAGS_plaintext_listen));
    if (!c.ok()) return Fail(c.status());
    plain_creds = *c;
  }

  if (absl::GetFlag(FLAGS_store).empty() &&
      !(absl::GetFlag(FLAGS_etcd_tls_ca).empty() && absl::GetFlag(FLAGS_etcd_tls_cert).empty() &&
        absl::GetFlag(FLAGS_etcd_tls_key).empty())) {
    return Fail(absl::InvalidArgumentError("--etcd_tls_* need --store=etcd://..."));
  }
  // Outlives the store and the coordinator (their channels use its credentials).
  std::unique_ptr<tls::CertificateReloader> etcd_certs;
  absl::StatusOr<std::unique_ptr<Store>> store;
  std::shared_ptr<Coordinator> coordinator;
  if (const std::string url = absl::GetFlag(FLAGS_store); !url.empty()) {
    const tls::TlsFiles etcd_files{absl::GetFlag(FLAGS_etcd_tls_ca),
                                   absl::GetFlag(FLAGS_etcd_tls_cert),
                                   absl::GetFlag(FLAGS_etcd_tls_key), false};
    std::shared_ptr<grpc::ChannelCredentials> etcd_creds;
    if (!etcd_files.ca_cert.empty() && !etcd_files.cert.empty() && !etcd_files.key.empty()) {
      // Client TLS to etcd follows its files like the server's (a rotated certificate or
      // CA bundle is used for new connections). etcd's --trusted-ca-file is its own, so
      // the client certificate need not chain to --etcd_tls_ca.
      metrics->process()->WatchConfig("etcd_tls");
      auto r = tls::CertificateReloader::Start(
          {etcd_files, "etcd_tls", reload, metrics->process(), /*cert_must_chain_to_ca=*/false});
      if (!r.ok()) {
        return Fail(absl::Status(r.status().code(),
                                 absl::StrCat("etcd client TLS: ", r.status().message())));
      }
      etcd_certs = *std::move(r);
      etcd_creds = etcd_certs->ChannelCredentials();
    }
    auto etcd = EtcdStore::Open(url, etcd_files, etcd_creds);
    if (!etcd.ok()) return Fail(etcd.status());
    EtcdCoordinator::Options co;
    co.replica = absl::GetFlag(FLAGS_replica_name);
    if (co.replica.empty()) {
      char host[256] = {};
      gethostname(host, sizeof(host) - 1);
      co.replica = absl::StrCat(host, "-", getpid());
    }
    co.lease_ttl = absl::GetFlag(FLAGS_leader_lease);
    if (co.lease_ttl < absl::Seconds(3)) {
      return Fail(
          absl::InvalidArgumentError("--leader_lease must be at least 3s (etcd's minimum)"));
    }
    coordinator = EtcdCoordinator::Start((*etcd)->client(), (*etcd)->prefix(), co);
    Log("xolfleet-controller: replica ", co.replica, " (lease ", absl::FormatDuration(co.lease_ttl),
        ")");
    store = std::unique_ptr<Store>(std::move(*etcd));
  } else {
    store = Store::Open(absl::GetFlag(FLAGS_state_db), absl::GetFlag(FLAGS_init)
                                                           ? Store::OpenMode::kCreateIfMissing
                                                           : Store::OpenMode::kMustExist);
  }
  if (!store.ok()) return Fail(store.status());
  Log("xolfleet-controller: desired state in ", (*store)->Describe());
  FleetController::Options opts;
  opts.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  opts.heartbeat_timeout = absl::GetFlag(FLAGS_heartbeat_timeout);
  opts.default_canary_timeout = absl::GetFlag(FLAGS_canary_timeout);
  opts.coordinator = coordinator;
  auto fleet = FleetController::Create(opts, std::move(*store), metrics);
  if (!fleet.ok()) return Fail(fleet.status());
  (*fleet)->Start();

  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(absl::GetFlag(FLAGS_metrics_listen));
  } catch (const std::exception& e) {
    return Fail(absl::UnavailableError(absl::StrCat(
        "cannot serve /metrics on ", absl::GetFlag(FLAGS_metrics_listen), ": ", e.what())));
  }
  exposer->RegisterCollectable(metrics->registry());
  FleetController* core = fleet->get();
  auto collector = FleetMetrics::MakeCollector([core] { return core->CollectGauges(); });
  exposer->RegisterCollectable(collector);

  ServiceOptions sopts;
  sopts.agent_cn_must_match_node = absl::GetFlag(FLAGS_agent_cn_must_match_node);
  sopts.max_watchers = absl::GetFlag(FLAGS_max_watchers);
  sopts.max_watchers_per_identity = absl::GetFlag(FLAGS_max_watchers_per_identity);
  AgentLinkService link(core, authz->policy.get(), metrics, sopts);
  FleetServiceImpl api(core, authz->policy.get(), metrics, sopts);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), creds, &port);
  if (plain_creds) builder.AddListeningPort(absl::GetFlag(FLAGS_plaintext_listen), plain_creds);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  // Agents keep their stream open; keepalive pings let both sides notice a dead peer.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Memory per connection (thousands of agents, each a TLS connection holding one stream;
  // bench/fleet/scale.sh): OpenSSL frees a connection's record buffers between records
  // (services/common/tls_idle_buffers.h), TLS frames of 4 KiB instead of 16 KiB (gRPC's frame
  // protector keeps a buffer of that size per connection), reads of 4-16 KiB, and no BDP probing
  // (its pings and window growth are for bulk transfers; heartbeats and desired states
  // are small). At most 100 concurrent streams per connection (an agent uses one).
  builder.AddChannelArgument(GRPC_ARG_TSI_MAX_FRAME_SIZE, 4096);
  builder.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 4096);
  builder.AddChannelArgument(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 16384);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 100);
  builder.RegisterService(&link);
  builder.RegisterService(&api);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return Fail(
        absl::UnavailableError(absl::StrCat("cannot listen on ", absl::GetFlag(FLAGS_listen))));
  }
  if (absl::Status idle = tls::CheckIdleBuffersReleased(); !idle.ok()) {
    Log("xolfleet-controller: warning: TLS connections keep their idle buffers (about 34 KiB "
        "each): ",
        idle.message());
  }
  Log("xolfleet-controller: serving on ", absl::GetFlag(FLAGS_listen), " (",
      files.insecure_plaintext ? "PLAINTEXT" : "mTLS", "), metrics on ",
      absl::GetFlag(FLAGS_metrics_listen), ", state ", absl::GetFlag(FLAGS_state_db));

  const int sig = WaitForShutdownSignal();
  Log("xolfleet-controller: signal ", sig, ", shutting down");
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace
}  // namespace xolfleet::controller

int main(int argc, char** argv) {
  // Lock-order checking (absl's deadlock detection, on in this build of absl) costs every
  // lock of every heartbeat a graph lookup; the tests keep it, the server does not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Block the shutdown signals before any thread starts, so sigwait gets them.
  xolfleet::BlockShutdownSignals();
  signal(SIGPIPE, SIG_IGN);
  absl::SetProgramUsageMessage("xolfleet controller: drives a fleet of xolfleet agents");
  xolfleet::ParseFlags(argc, argv);  // --state-db or --state_db
  return xolfleet::controller::Run();
}
