#include "services/controller/etcd_store.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/common/grpc_status.h"

namespace xolfleet::controller {
namespace {

using google::protobuf::internal::WireFormatLite;

bool Retryable(grpc::StatusCode c) {
  // Unreachable, no leader ("etcdserver: no leader"), or a request the member could not
  // get through raft in time (cut off from the majority): another member may serve it.
  return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// Every record under `prefix`, decoded; one that does not decode is an error that names it.
template <typename T>
absl::StatusOr<std::vector<T>> LoadRecords(EtcdClient& client, const std::string& prefix,
                                           bool (*decode)(const std::string&, T*),
                                           absl::string_view what) {
  auto kvs = client.GetPrefix(prefix);
  if (!kvs.ok()) return kvs.status();
  std::vector<T> out;
  for (const auto& [key, value] : *kvs) {
    T record;
    if (!decode(value, &record)) {
      return absl::DataLossError(absl::StrCat("etcd: unreadable ", what, " record ", key));
    }
    out.push_back(std::move(record));
  }
  return out;
}

}  // namespace

std::string EncodeRecord(std::initializer_list<RecordField> fields) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream sos(&out);
    google::protobuf::io::CodedOutputStream cos(&sos);
    for (const RecordField& f : fields) {
      if (f.bytes) {
        WireFormatLite::WriteBytes(f.number, *f.bytes, &cos);
      } else {
        WireFormatLite::WriteUInt64(f.number, f.varint, &cos);
      }
    }
  }
  return out;
}

bool DecodeRecord(const std::string& b, const std::function<void(int, std::string)>& on_bytes,
                  const std::function<void(int, uint64_t)>& on_varint) {
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(b.data()),
                                            static_cast<int>(b.size()));
  while (uint32_t tag = in.ReadTag()) {
    const int number = WireFormatLite::GetTagFieldNumber(tag);
    switch (WireFormatLite::GetTagWireType(tag)) {
      case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
        std::string v;
        if (!WireFormatLite::ReadBytes(&in, &v)) return false;
        on_bytes(number, std::move(v));
        break;
      }
      case WireFormatLite::WIRETYPE_VARINT: {
        uint64_t v;
        if (!in.ReadVarint64(&v)) return false;
        on_varint(number, v);
        break;
      }
      default:
        return false;
    }
  }
  return in.ConsumedEntireMessage();
}

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::Status EtcdClient::ParseUrl(const std::string& url, Options* opts, std::string* prefix) {
  constexpr absl::string_view kScheme = "etcd://";
  if (!absl::StartsWith(url, kScheme)) {
    return absl::InvalidArgumentError(
        absl::StrCat("store URL '", url, "' is not etcd://host:port[,host:port...][/prefix]"));
  }
  absl::string_view rest = absl::string_view(url).substr(kScheme.size());
  std::string pfx = "/xolfleet/";
  if (size_t slash = rest.find('/'); slash != absl::string_view::npos) {
    pfx = std::string(rest.substr(slash));
    if (pfx.back() != '/') pfx += '/';
    rest = rest.substr(0, slash);
  }
  opts->endpoints.clear();
  for (absl::string_view ep : absl::StrSplit(rest, ',', absl::SkipEmpty())) {
    size_t colon = ep.rfind(':');
    if (colon == absl::string_view::npos || colon == 0 || colon + 1 == ep.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("etcd endpoint '", ep, "' in '", url, "' is not host:port"));
    }
    opts->endpoints.emplace_back(ep);
  }
  if (opts->endpoints.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("store URL '", url, "' names no endpoint"));
  }
  *prefix = pfx;
  return absl::OkStatus();
}

absl::Status EtcdClient::Credentials(const tls::TlsFiles& files, Options* opts) {
  const int given = !files.ca_cert.empty() + !files.cert.empty() + !files.key.empty();
  if (given == 0) {
    // Security by default: what goes to etcd (every probe set, every agent) and the
    // leader's fencing travel unauthenticated and in clear only on this machine.
    for (const std::string& ep : opts->endpoints) {
      if (!tls::IsLocalAddress(ep)) {
        return absl::InvalidArgumentError(
            absl::StrCat("refusing plaintext to etcd member ", ep,
                         ": plaintext only to loopback addresses; give --etcd_tls_ca, "
                         "--etcd_tls_cert and --etcd_tls_key for client TLS"));
      }
    }
    opts->credentials = grpc::InsecureChannelCredentials();
    opts->tls = false;
    return absl::OkStatus();
  }
  if (given != 3) {
    return absl::InvalidArgumentError(
        "etcd client TLS needs all of --etcd_tls_ca, --etcd_tls_cert and --etcd_tls_key");
  }
  if (opts->credentials) {  // they follow the files
    opts->tls = true;
    return absl::OkStatus();
  }
  tls::TlsFiles f = files;
  f.insecure_plaintext = false;
  auto creds = tls::ChannelCredentials(f, "");
  if (!creds.ok()) {
    return absl::Status(creds.status().code(),
                        absl::StrCat("etcd client TLS: ", creds.status().message()));
  }
  opts->credentials = *std::move(creds);
  opts->tls = true;
  return absl::OkStatus();
}

EtcdClient::EtcdClient(Options opts) : opts_(std::move(opts)) {
  for (const std::string& ep : opts_.endpoints) {
    grpc::ChannelArguments args;
    // Reconnect quickly after a member restarts (the default backoff grows to 2 min).
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    auto ch = grpc::CreateCustomChannel(
        ep, opts_.credentials ? opts_.credentials : grpc::InsecureChannelCredentials(), args);
    stubs_.push_back({etcdserverpb::KV::NewStub(ch), etcdserverpb::Lease::NewStub(ch)});
  }
}

absl::Status EtcdClient::Run(const char* what, const Call& call) {
  size_t start;
  {
    absl::MutexLock l(&mu_);
    start = current_;
  }
  std::vector<std::string> errors;
  for (size_t i = 0; i < stubs_.size(); ++i) {
    const size_t idx = (start + i) % stubs_.size();
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + opts_.call_timeout));
    ctx.AddMetadata("hasleader", "true");  // a member without a leader refuses at once
    grpc::Status st = call(stubs_[idx], &ctx);
    if (st.ok()) {
      absl::MutexLock l(&mu_);
      current_ = idx;
      return absl::OkStatus();
    }
    if (!Retryable(st.error_code())) {
      return absl::Status(
          static_cast<absl::StatusCode>(st.error_code()),
          absl::StrCat("etcd ", what, " at ", opts_.endpoints[idx], ": ", st.error_message()));
    }
    errors.push_back(absl::StrCat(opts_.endpoints[idx], ": ", st.error_message()));
  }
  return absl::UnavailableError(absl::StrCat(
      "desired-state store unavailable: no etcd member can serve ", what,
      " (a majority of the cluster is down or unreachable; writes are refused until it is back) [",
      absl::StrJoin(errors, "; "), "]"));
}

absl::Status EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  etcdserverpb::PutRequest req;
  req.set_key(key);
  req.set_value(value);
  req.set_lease(lease);
  return Run("put", [&](Stubs& s, grpc::ClientContext* ctx) {
    etcdserverpb::PutResponse resp;
    return s.kv->Put(ctx, req, &resp);
  });
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> EtcdClient::GetPrefix(
    const std::string& prefix) {
  etcdserverpb::RangeRequest req;
  req.set_key(prefix);
  req.set_range_end(PrefixEnd(prefix));
  req.set_sort_order(etcdserverpb::RangeRequest::ASCEND);
  req.set_sort_target(etcdserverpb::RangeRequest::KEY);
  etcdserverpb::RangeResponse resp;
  absl::Status st = Run("range", [&](Stubs& s, grpc::ClientContext* ctx) {
    resp.Clear();
    return s.kv->Range(ctx, req, &resp);
  });
  if (!st.ok()) return st;
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(resp.kvs_size());
  for (const auto& kv : resp.kvs()) out.emplace_back(kv.key(), kv.value());
  return out;
}

absl::StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& req) {
  etcdserverpb::TxnResponse resp;
  absl::Status st = Run("transaction", [&](Stubs& s, grpc::ClientContext* ctx) {
    resp.Clear();
    return s.kv->Txn(ctx, req, &resp);
  });
  if (!st.ok()) return st;
  return resp;
}

std::string EtcdStore::EncodeSet(const StoredSet& s) {
  const std::string req = s.request.SerializeAsString(), ro = s.rollout.SerializeAsString();
  return EncodeRecord({{1, &req, 0}, {2, &ro, 0}, {3, &s.created_by, 0}});
}

bool EtcdStore::DecodeSet(const std::string& b, StoredSet* s) {
  bool ok = true;
  bool ret = DecodeRecord(
      b,
      [&](int n, std::string v) {
        if (n == 1) ok &= s->request.ParseFromString(v);
        if (n == 2) ok &= s->rollout.ParseFromString(v);
        if (n == 3) s->created_by = std::move(v);
      },
      [](int, uint64_t) {});
  return ret && ok;
}

std::string EtcdStore::EncodeAgent(const StoredAgent& a) {
  const std::string reg = a.registration.SerializeAsString();
  return EncodeRecord({{1, &reg, 0},
                       {2, nullptr, static_cast<uint64_t>(a.last_seen_unix_ns)},
                       {3, &a.identity, 0}});
}

bool EtcdStore::DecodeAgent(const std::string& b, StoredAgent* a) {
  bool ok = true;
  bool ret = DecodeRecord(
      b,
      [&](int n, std::string v) {
        if (n == 1) ok &= a->registration.ParseFromString(v);
        if (n == 3) a->identity = std::move(v);
      },
      [&](int n, uint64_t v) {
        if (n == 2) a->last_seen_unix_ns = static_cast<int64_t>(v);
      });
  return ret && ok;
}

absl::StatusOr<std::unique_ptr<EtcdStore>> EtcdStore::Open(
    const std::string& url, const tls::TlsFiles& files,
    std::shared_ptr<grpc::ChannelCredentials> tls_credentials) {
  EtcdClient::Options opts;
  std::string prefix;
  if (absl::Status st = EtcdClient::ParseUrl(url, &opts, &prefix); !st.ok()) return st;
  opts.credentials = std::move(tls_credentials);
  if (absl::Status st = EtcdClient::Credentials(files, &opts); !st.ok()) return st;
  auto store = std::make_unique<EtcdStore>(std::make_shared<EtcdClient>(std::move(opts)), prefix);
  if (auto r = store->client_->GetPrefix(prefix + "sets/"); !r.ok()) {
    // A member that serves TLS closes a plaintext connection: the client sees only an
    // unreachable member, so say what this controller tried.
    const bool plaintext = !store->client_->options().tls;
    return absl::Status(
        r.status().code(),
        absl::StrCat(url, ": ", r.status().message(),
                     plaintext && absl::IsUnavailable(r.status())
                         ? "; this controller speaks plaintext to etcd (no --etcd_tls_ca, "
                           "--etcd_tls_cert, --etcd_tls_key): if the members serve TLS, give them"
                         : ""));
  }
  return store;
}

std::string EtcdStore::Describe() const {
  return absl::StrCat("etcd://", absl::StrJoin(client_->options().endpoints, ","), prefix_,
                      client_->options().tls ? " (client TLS)" : " (plaintext, loopback)");
}

absl::Status EtcdStore::PutSet(const StoredSet& set) {
  return client_->Put(prefix_ + "sets/" + set.rollout.set_id(), EncodeSet(set));
}

absl::Status EtcdStore::DeleteSets(const std::vector<std::string>& set_ids) {
  etcdserverpb::TxnRequest txn;
  for (const std::string& id : set_ids) {
    const std::string key = prefix_ + "sets/" + id;
    auto* c = txn.add_compare();
    c->set_key(key);
    c->set_target(etcdserverpb::Compare::VERSION);
    c->set_result(etcdserverpb::Compare::GREATER);
    c->set_version(0);
    txn.add_success()->mutable_request_delete_range()->set_key(key);
  }
  absl::StatusOr<etcdserverpb::TxnResponse> r = client_->Txn(txn);
  if (!r.ok()) return r.status();
  if (r->succeeded()) return absl::OkStatus();
  // Name the missing ones (a read after the failed transaction; informational only).
  std::vector<std::string> missing;
  if (auto sets = LoadSets(); sets.ok()) {
    for (const std::string& id : set_ids) {
      bool found = false;
      for (const StoredSet& s : *sets) found |= s.rollout.set_id() == id;
      if (!found) missing.push_back(id);
    }
  }
  return absl::NotFoundError(absl::StrCat(
      "no probe set ", missing.empty() ? "among those named" : absl::StrJoin(missing, ", "),
      "; nothing deleted"));
}

absl::StatusOr<std::vector<StoredSet>> EtcdStore::LoadSets() {
  return LoadRecords<StoredSet>(*client_, prefix_ + "sets/", &EtcdStore::DecodeSet, "probe set");
}

absl::Status EtcdStore::PutAgent(const StoredAgent& agent) {
  return client_->Put(prefix_ + "agents/" + agent.registration.node_name(), EncodeAgent(agent));
}

absl::Status EtcdStore::DeleteAgent(const std::string& node_name) {
  etcdserverpb::TxnRequest txn;
  const std::string key = prefix_ + "agents/" + node_name;
  auto* c = txn.add_compare();
  c->set_key(key);
  c->set_target(etcdserverpb::Compare::VERSION);
  c->set_result(etcdserverpb::Compare::GREATER);
  c->set_version(0);
  txn.add_success()->mutable_request_delete_range()->set_key(key);
  absl::StatusOr<etcdserverpb::TxnResponse> r = client_->Txn(txn);
  if (!r.ok()) return r.status();
  if (!r->succeeded()) return absl::NotFoundError(absl::StrCat("no agent named ", node_name));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StoredAgent>> EtcdStore::LoadAgents() {
  return LoadRecords<StoredAgent>(*client_, prefix_ + "agents/", &EtcdStore::DecodeAgent, "agent");
}

}  // namespace xolfleet::controller
