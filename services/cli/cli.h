// xolctl's building blocks: argument parsing, the command registry, the agent connection and output
// helpers. Commands live in their own files and register themselves:
//
//   XOLCTL_COMMAND(attach, "attach probes to an agent", "attach SPEC... [--pid=N] ...",
//                  {"pid", "capture"}, {"allow-relocate"}, RunAttach);
//
// agent_commands.cc has the node commands; fleet commands (controller) go in fleet_commands.cc
// the same way and are added to the xolctl binary's srcs.
#ifndef XOLFLEET_SERVICES_CLI_CLI_H_
#define XOLFLEET_SERVICES_CLI_CLI_H_

#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "services/common/grpc_status.h"
#include "services/common/tls.h"
#include "xolfleet/v1/agent.grpc.pb.h"

namespace xolfleet::cli {

// Parsed command line: `--name=value`, `--name value` (for options that take a value),
// `--flag` (booleans), and positional arguments. Options may repeat.
class Args {
 public:
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv,
                                    const std::set<std::string>& value_options,
                                    const std::set<std::string>& bool_options);
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& def) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::multimap<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// What every command gets: its arguments, output streams and, on demand, agent stubs.
class Context {
 public:
  Context(Args args, std::ostream& out, std::ostream& err)
      : args_(std::move(args)), out_(out), err_(err) {}
  const Args& args() const { return args_; }
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }
  bool json() const { return args_.Has("json"); }
  // --agent ADDRESS: unix:PATH (default unix:/run/xolfleet/agent.sock, or $XOLFLEET_AGENT)
  // or host:port (mTLS with --tls-ca/--tls-cert/--tls-key; --insecure-plaintext only to a
  // loopback address).
  std::string agent_address() const;
  // TLS files and the plaintext opt-in from the options (or $XOLFLEET_TLS_CA, _CERT, _KEY).
  tls::TlsFiles Tls() const;
  // Channel credentials for the agent: the unix socket needs none (the agent asks the
  // kernel who is calling); TCP needs mTLS. Main() checks them before a command runs.
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> AgentCredentials() const;
  v1::AgentService::Stub& Agent();
  // A context with the --timeout deadline.
  std::unique_ptr<grpc::ClientContext> Rpc() const;
  // Prints "xolctl: <what>: <code>: <message>", then "  <field>: <description>" for each
  // field the server named (google.rpc.BadRequest), and returns the exit status for it.
  int Fail(const std::string& what, const grpc::Status& status);
  int Fail(const std::string& what, const absl::Status& status);
  int Usage(const std::string& message);
  void PrintViolations(const std::vector<FieldViolation>& violations);
  void PrintJson(const google::protobuf::Message& m);

 private:
  Args args_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<v1::AgentService::Stub> agent_;
};

struct Command {
  std::string name;
  std::string summary;
  std::string usage;
  std::set<std::string> value_options;
  std::set<std::string> bool_options;
  std::function<int(Context&)> run;
};

class Registry {
 public:
  static Registry& Get();
  bool Add(Command c);
  const Command* Find(const std::string& name) const;
  std::vector<const Command*> All() const;

 private:
  std::map<std::string, Command> commands_;
};

// Options every command accepts. agent, timeout, tls-ca, tls-cert, tls-key
const std::set<std::string>& GlobalValueOptions();
// json, help, insecure-plaintext
const std::set<std::string>& GlobalBoolOptions();

// Runs xolctl with argv[1..] (tests call this directly).
int Main(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err);

// CPU seconds per second as a share of one CPU ("0.42%").
std::string CpuPercent(double cpu_seconds_per_sec);
// A probe's budget state for tables: "ok", ALERTED, THROTTLED or DETACHED.
std::string BudgetStateName(v1::BudgetState s);

// Aligned text table.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out) const;
  size_t size() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

#define XOLCTL_CONCAT_(a, b) a##b
#define XOLCTL_CONCAT(a, b) XOLCTL_CONCAT_(a, b)
// Registers a command at static initialisation.
#define XOLCTL_COMMAND(...)                                       \
  static const bool XOLCTL_CONCAT(xolctl_registered_, __LINE__) = \
      ::xolfleet::cli::Registry::Get().Add(::xolfleet::cli::Command{__VA_ARGS__})

}  // namespace xolfleet::cli

#endif  // XOLFLEET_SERVICES_CLI_CLI_H_
