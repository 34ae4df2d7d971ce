#include "services/cli/cli.h"

#include <algorithm>
#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "services/common/build_info.h"
#include "services/common/grpc_status.h"

namespace xolfleet::cli {

absl::StatusOr<Args> Args::Parse(const std::vector<std::string>& argv,
                                 const std::set<std::string>& value_options,
                                 const std::set<std::string>& bool_options) {
  Args a;
  bool only_positional = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& s = argv[i];
    if (only_positional || !absl::StartsWith(s, "--") || s.size() == 2) {
      if (s == "--" && !only_positional) {
        only_positional = true;
        continue;
      }
      a.positional_.push_back(s);
      continue;
    }
    std::string body = s.substr(2);
    std::string name = body, value;
    bool has_value = false;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    std::replace(name.begin(), name.end(), '_', '-');
    if (bool_options.count(name)) {
      if (has_value && value != "true" && value != "1") {
        if (value == "false" || value == "0") continue;
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      a.values_.emplace(name, "true");
    } else if (value_options.count(name)) {
      if (!has_value) {
        if (i + 1 >= argv.size()) {
          return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        }
        value = argv[++i];
      }
      a.values_.emplace(name, value);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    }
  }
  return a;
}

std::optional<std::string> Args::Get(const std::string& name) const {
  auto range = values_.equal_range(name);
  if (range.first == range.second) return std::nullopt;
  return std::prev(range.second)->second;  // last one wins
}

std::string Args::GetOr(const std::string& name, const std::string& def) const {
  std::optional<std::string> v = Get(name);
  return v ? *v : def;
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  std::vector<std::string> out;
  auto range = values_.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
  return out;
}

std::string Context::agent_address() const {
  if (std::optional<std::string> a = args_.Get("agent")) return *a;
  if (const char* env = getenv("XOLFLEET_AGENT"); env != nullptr && *env) return env;
  return "unix:/run/xolfleet/agent.sock";
}

namespace {
std::string Env(const char* name) {
  const char* v = getenv(name);
  return v != nullptr ? v : "";
}
}  // namespace

tls::TlsFiles Context::Tls() const {
  tls::TlsFiles f;
  f.ca_cert = args_.GetOr("tls-ca", Env("XOLFLEET_TLS_CA"));
  f.cert = args_.GetOr("tls-cert", Env("XOLFLEET_TLS_CERT"));
  f.key = args_.GetOr("tls-key", Env("XOLFLEET_TLS_KEY"));
  f.insecure_plaintext = args_.Has("insecure-plaintext");
  return f;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Context::AgentCredentials() const {
  const std::string address = agent_address();
  if (absl::StartsWith(address, "unix:")) return grpc::InsecureChannelCredentials();
  return tls::ChannelCredentials(Tls(), address);
}

v1::AgentService::Stub& Context::Agent() {
  if (!agent_) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = AgentCredentials();
    grpc::ChannelArguments ch_args;
    ch_args.SetMaxReceiveMessageSize(256 << 20);
    ch_args.SetMaxSendMessageSize(256 << 20);
    // Main() refused the command if the credentials were not OK.
    agent_ = v1::AgentService::NewStub(grpc::CreateCustomChannel(
        agent_address(), creds.ok() ? *creds : grpc::InsecureChannelCredentials(), ch_args));
  }
  return *agent_;
}

std::unique_ptr<grpc::ClientContext> Context::Rpc() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  double secs = 30;
  if (std::optional<std::string> t = args_.Get("timeout")) (void)absl::SimpleAtod(*t, &secs);
  if (secs > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(secs * 1000)));
  }
  return ctx;
}

namespace {
// gRPC and Abseil share status code numbering.
std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}
}  // namespace

int Context::Fail(const std::string& what, const grpc::Status& status) {
  err_ << "xolctl: " << what << ": " << CodeName(status.error_code()) << ": "
       << status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    err_ << " (is an agent listening on " << agent_address() << "? see --agent)";
  }
  err_ << "\n";
  PrintViolations(FieldViolations(status));
  return 1;
}

// One line per field the server named (google.rpc.BadRequest details), under the error.
void Context::PrintViolations(const std::vector<FieldViolation>& violations) {
  for (const FieldViolation& v : violations)
    err_ << "  " << v.field << ": " << v.description << "\n";
}

int Context::Fail(const std::string& what, const absl::Status& status) {
  err_ << "xolctl: " << what << ": " << CodeName(static_cast<int>(status.code())) << ": "
       << status.message() << "\n";
  PrintViolations(FieldViolations(status));
  return 1;
}

int Context::Usage(const std::string& message) {
  err_ << "xolctl: " << message << "\n";
  return 2;
}

void Context::PrintJson(const google::protobuf::Message& m) {
  std::string s;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &s, o);
  out_ << s;
  if (s.empty() || s.back() != '\n') out_ << "\n";
}

std::string CpuPercent(double cpu_seconds_per_sec) {
  return absl::StrFormat("%.3g%%", cpu_seconds_per_sec * 100);
}

std::string BudgetStateName(v1::BudgetState s) {
  switch (s) {
    case v1::BUDGET_STATE_ALERTED:
      return "ALERTED";
    case v1::BUDGET_STATE_THROTTLED:
      return "THROTTLED";
    case v1::BUDGET_STATE_DETACHED:
      return "DETACHED";
    default:
      return "ok";
  }
}

Registry& Registry::Get() {
  static Registry* r = new Registry();
  return *r;
}

bool Registry::Add(Command c) {
  std::string name = c.name;
  return commands_.emplace(name, std::move(c)).second;
}

const Command* Registry::Find(const std::string& name) const {
  auto it = commands_.find(name);
  return it == commands_.end() ? nullptr : &it->second;
}

std::vector<const Command*> Registry::All() const {
  std::vector<const Command*> out;
  for (const auto& [n, c] : commands_) out.push_back(&c);
  return out;
}

const std::set<std::string>& GlobalValueOptions() {
  static const std::set<std::string> s = {"agent", "timeout", "tls-ca", "tls-cert", "tls-key"};
  return s;
}

const std::set<std::string>& GlobalBoolOptions() {
  static const std::set<std::string> s = {"json", "help", "insecure-plaintext"};
  return s;
}

namespace {

void PrintHelp(std::ostream& out) {
  out << "usage: xolctl --version | [--agent=ADDRESS] [--tls-ca=F --tls-cert=F --tls-key=F | "
         "--insecure-plaintext] [--json] [--timeout=SECONDS] COMMAND [ARGS]\n"
         "  ADDRESS: unix:PATH (default unix:/run/xolfleet/agent.sock, or $XOLFLEET_AGENT), or\n"
         "  host:port over mTLS (plaintext only to loopback, with --insecure-plaintext)\n\n"
         "commands:\n";
  Table t({"COMMAND", "WHAT"});
  for (const Command* c : Registry::Get().All()) t.Add({c->name, c->summary});
  t.Print(out);
  out << "\n`xolctl COMMAND --help` shows a command's options.\n";
}

}  // namespace

int Main(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err) {
  // The command is the first argument that is not a global option (or its value).
  const Command* cmd = nullptr;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& s = argv[i];
    if (s == "--version") {
      out << VersionLine("xolctl") << "\n";
      return 0;
    }
    if (absl::StartsWith(s, "--")) {
      std::string name = s.substr(2);
      if (name.find('=') == std::string::npos && GlobalValueOptions().count(name)) ++i;
      continue;
    }
    cmd = Registry::Get().Find(s);
    if (cmd == nullptr) {
      err << "xolctl: unknown command '" << s << "'\n";
      PrintHelp(err);
      return 2;
    }
    std::vector<std::string> rest(argv.begin(), argv.begin() + i);
    rest.insert(rest.end(), argv.begin() + i + 1, argv.end());
    std::set<std::string> vals = GlobalValueOptions(), bools = GlobalBoolOptions();
    vals.insert(cmd->value_options.begin(), cmd->value_options.end());
    bools.insert(cmd->bool_options.begin(), cmd->bool_options.end());
    absl::StatusOr<Args> args = Args::Parse(rest, vals, bools);
    if (!args.ok()) {
      err << "xolctl " << cmd->name << ": " << args.status().message() << "\nusage: xolctl "
          << cmd->usage << "\n";
      return 2;
    }
    if (args->Has("help")) {
      out << "usage: xolctl " << cmd->usage << "\n";
      return 0;
    }
    Context ctx(std::move(*args), out, err);
    if (cmd->name != "fleet") {
      if (auto creds = ctx.AgentCredentials(); !creds.ok()) {
        err << "xolctl: --agent=" << ctx.agent_address() << ": " << creds.status().message()
            << "\n";
        return 2;
      }
    }
    return cmd->run(ctx);
  }
  PrintHelp(argv.empty() ? err : out);
  return argv.empty() ? 2 : 0;
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> w(header_.size(), 0);
  auto widen = [&w](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  };
  widen(header_);
  for (const auto& r : rows_) widen(r);
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < w.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : "";
      if (i + 1 < w.size()) cell.resize(w[i], ' ');
      absl::StrAppend(&s, cell, i + 1 < w.size() ? "  " : "");
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out << s << "\n";
  };
  line(header_);
  for (const auto& r : rows_) line(r);
}

}  // namespace xolfleet::cli
