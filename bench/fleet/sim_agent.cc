// A simulated node for the fleet benchmark: the real controller link (gRPC, mTLS, registration,
// heartbeats, reconciliation) over the in-memory FakeAgentApi instead of BPF. What it measures is
// the controller and the protocol, not uprobe attach cost (the agent's own benchmark covers that).
#include <signal.h>

#include <cstdio>
#include <map>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "services/agent/controller_link.h"
#include "services/common/flags.h"
#include "services/common/shutdown_signals.h"
#include "tests/fleet/fake_agent_api.h"

ABSL_FLAG(std::string, controller, "127.0.0.1:7443", "controller address");
ABSL_FLAG(std::string, node_name, "sim-1", "node name");
ABSL_FLAG(std::string, labels, "", "k=v,k=v");
ABSL_FLAG(std::string, tls_ca, "", "CA");
ABSL_FLAG(std::string, tls_cert, "", "cert");
ABSL_FLAG(std::string, tls_key, "", "key");

int main(int argc, char** argv) {
  xolfleet::ParseFlags(argc, argv);
  xolfleet::BlockShutdownSignals();
  std::map<std::string, std::string> labels;
  for (absl::string_view kv : absl::StrSplit(absl::GetFlag(FLAGS_labels), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    labels[p.first] = p.second;
  }
  xolfleet::testing::FakeAgentApi api(absl::GetFlag(FLAGS_node_name), labels);
  xolfleet::ControllerLink::Options o;
  o.target = absl::GetFlag(FLAGS_controller);
  o.tls = {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
           false};
  auto link = xolfleet::ControllerLink::Start(o, &api);
  if (!link.ok()) {
    fprintf(stderr, "sim_agent: %s\n", std::string(link.status().message()).c_str());
    return 1;
  }
  xolfleet::WaitForShutdownSignal();
  return 0;
}
