// Desired state in etcd (v3 API over gRPC), shared by several controller replicas
// (--store=etcd://host:port[,host:port...][/prefix]).
//
// Layout under the prefix (default "/xolfleet/"):
//   sets/<set id>      one probe set: request, rollout, creator (protobuf wire format)
//   agents/<node>      one agent: registration, last seen, identity
// A delete of several sets is one etcd transaction guarded by "every key exists", so it
// is all-or-nothing exactly as in SQLite.
//
// Endpoints. The client talks to one member at a time and moves to the next when a call
// finds it unreachable or without a leader. Every call carries etcd's "hasleader"
// metadata, so a member cut off from the majority answers at once instead of queueing
// the request; reads are linearizable (they need a majority too). When no member can
// serve, calls fail UNAVAILABLE with a message saying the store has no quorum: the
// controller refuses writes with that error and keeps answering reads from memory.
//
// Transport: client TLS (the member's certificate verified against a CA, a client
// certificate presented, as etcd's --client-cert-auth requires) when given a CA,
// certificate and key (the controller's --etcd_tls_ca/--etcd_tls_cert/--etcd_tls_key);
// without them plaintext, and then only to members on loopback addresses.
#ifndef XOLFLEET_SERVICES_CONTROLLER_ETCD_STORE_H_
#define XOLFLEET_SERVICES_CONTROLLER_ETCD_STORE_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/security/credentials.h"
#include "services/common/tls.h"
#include "services/controller/store.h"

namespace xolfleet::controller {

// One etcd cluster: its endpoints, with failover between them. Thread-safe.
class EtcdClient {
 public:
  struct Options {
    std::vector<std::string> endpoints;  // host:port
    absl::Duration call_timeout = absl::Seconds(3);
    // Null: plaintext (Credentials() allows that only to loopback members).
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    bool tls = false;  // credentials are TLS (for Describe)
  };
  // The credentials for `endpoints`: TLS from `files` (CA, certificate and key, all three)
  // or, with none of them, plaintext if every endpoint is a loopback address;
  // INVALID_ARGUMENT otherwise. Sets opts->credentials and opts->tls. With all three
  // files, credentials already in opts->credentials are kept (credentials that follow
  // the files: services/common/cert_reloader.h); without, the files are read once.
  static absl::Status Credentials(const tls::TlsFiles& files, Options* opts);
  // Parses "etcd://h1:p1,h2:p2[/prefix]" into endpoints and a key prefix ("/xolfleet/"
  // unless given; always ends with '/').
  static absl::Status ParseUrl(const std::string& url, Options* opts, std::string* prefix);

  explicit EtcdClient(Options opts);
  const Options& options() const { return opts_; }

  // One unary call on the current member, moving on to the others when it cannot serve.
  // `call` gets fresh stubs and a context with a deadline and the "hasleader" metadata.
  struct Stubs {
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  };
  using Call = std::function<grpc::Status(Stubs&, grpc::ClientContext*)>;
  absl::Status Run(const char* what, const Call& call);

  absl::Status Put(const std::string& key, const std::string& value, int64_t lease = 0);
  // Every key with `prefix`, ordered by key.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> GetPrefix(
      const std::string& prefix);
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& req);

 private:
  const Options opts_;
  std::vector<Stubs> stubs_;
  absl::Mutex mu_;
  size_t current_ ABSL_GUARDED_BY(mu_) = 0;
};

class EtcdStore final : public Store {
 public:
  // Connects (lazily: the first call dials) to the cluster at `url` (see ParseUrl), over
  // TLS with `files` (EtcdClient::Credentials), and checks it answers a read.
  // `tls_credentials`, if given with `files`, are used instead of reading the files once:
  // the controller passes a CertificateReloader's, so that a rotated client certificate
  // or CA bundle is used for new connections to etcd without a restart.
  static absl::StatusOr<std::unique_ptr<EtcdStore>> Open(
      const std::string& url, const tls::TlsFiles& files = {},
      std::shared_ptr<grpc::ChannelCredentials> tls_credentials = nullptr);
  EtcdStore(std::shared_ptr<EtcdClient> client, std::string prefix)
      : client_(std::move(client)), prefix_(std::move(prefix)) {}

  absl::Status PutSet(const StoredSet& set) override;
  absl::Status DeleteSets(const std::vector<std::string>& set_ids) override;
  absl::StatusOr<std::vector<StoredSet>> LoadSets() override;
  absl::Status PutAgent(const StoredAgent& agent) override;
  absl::Status DeleteAgent(const std::string& node_name) override;
  absl::StatusOr<std::vector<StoredAgent>> LoadAgents() override;
  std::string Describe() const override;

  const std::shared_ptr<EtcdClient>& client() const { return client_; }
  const std::string& prefix() const { return prefix_; }

  // Record encodings (also used by replication: the same records, read back).
  static std::string EncodeSet(const StoredSet& s);
  static bool DecodeSet(const std::string& b, StoredSet* s);
  static std::string EncodeAgent(const StoredAgent& a);
  static bool DecodeAgent(const std::string& b, StoredAgent* a);

 private:
  std::shared_ptr<EtcdClient> client_;
  const std::string prefix_;
};

// A record stored in etcd: numbered fields in protobuf wire format, each bytes or a
// varint (no .proto of its own: it wraps the API's messages).
struct RecordField {
  int number;
  const std::string* bytes;  // null: a varint
  uint64_t varint;
};
std::string EncodeRecord(std::initializer_list<RecordField> fields);
// Calls on_bytes / on_varint per field; false if malformed.
bool DecodeRecord(const std::string& b, const std::function<void(int, std::string)>& on_bytes,
                  const std::function<void(int, uint64_t)>& on_varint);

// The first key after every key starting with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(const std::string& prefix);

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_ETCD_STORE_H_
