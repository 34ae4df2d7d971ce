#include "services/controller/etcd_replica.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/common/log.h"

namespace xolfleet::controller {

std::unique_ptr<EtcdCoordinator> EtcdCoordinator::Start(std::shared_ptr<EtcdClient> client,
                                                        std::string prefix, Options opts,
                                                        LeaderChange on_change) {
  std::unique_ptr<EtcdCoordinator> c(new EtcdCoordinator(std::move(client), std::move(prefix),
                                                         std::move(opts), std::move(on_change)));
  c->thread_ = std::thread([p = c.get()] { p->Run(); });
  return c;
}

EtcdCoordinator::~EtcdCoordinator() {
  int64_t lease;
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
    lease = lease_;
  }
  if (thread_.joinable()) thread_.join();
  if (lease != 0) {
    // Hand over at once (the leader key and our agents' statuses go with the lease).
    etcdserverpb::LeaseRevokeRequest req;
    req.set_id(lease);
    client_
        ->Run("lease revoke",
              [&](EtcdClient::Stubs& s, grpc::ClientContext* ctx) {
                etcdserverpb::LeaseRevokeResponse resp;
                return s.lease->LeaseRevoke(ctx, req, &resp);
              })
        .IgnoreError();
  }
}

bool EtcdCoordinator::LeaseValidLocked() const {
  const absl::Duration margin = std::min(absl::Seconds(1), opts_.lease_ttl / 5);
  return lease_ != 0 && absl::Now() < lease_valid_until_ - margin;
}

bool EtcdCoordinator::IsLeader() {
  absl::MutexLock l(&mu_);
  if (leader_ && !LeaseValidLocked()) SetLeader(false);
  return leader_;
}

void EtcdCoordinator::SetLeader(bool leader) {
  if (leader == leader_) return;
  leader_ = leader;
  Log("controller: replica ", opts_.replica,
      leader ? " is the leader: it drives rollouts and TTL expiry"
             : " is no longer the leader: it stops driving rollouts");
  if (on_change_) on_change_(leader);
}

void EtcdCoordinator::Run() {
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), opts_.period)) return;
    }
    KeepLease();
    Advertise();
    Campaign();
    Flush();
  }
}

void EtcdCoordinator::KeepLease() {
  int64_t lease;
  {
    absl::MutexLock l(&mu_);
    if (lease_ != 0 && !LeaseValidLocked()) {
      Log("controller: replica ", opts_.replica, ": lease ", lease_,
          " not renewed in time; taking a new one");
      lease_ = 0;
      SetLeader(false);
    }
    if (lease_ != 0 && absl::Now() - last_keepalive_ < opts_.lease_ttl / 3) return;
    lease = lease_;
  }
  const absl::Time sent = absl::Now();
  if (lease == 0) {
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(absl::ToInt64Seconds(opts_.lease_ttl));
    etcdserverpb::LeaseGrantResponse resp;
    absl::Status st =
        client_->Run("lease grant", [&](EtcdClient::Stubs& s, grpc::ClientContext* ctx) {
          resp.Clear();
          return s.lease->LeaseGrant(ctx, req, &resp);
        });
    if (!st.ok() || resp.id() == 0) return;
    absl::MutexLock l(&mu_);
    lease_ = resp.id();
    last_keepalive_ = sent;
    lease_valid_until_ = sent + absl::Seconds(resp.ttl());
    return;
  }
  etcdserverpb::LeaseKeepAliveResponse resp;
  absl::Status st =
      client_->Run("lease keep-alive", [&](EtcdClient::Stubs& s, grpc::ClientContext* ctx) {
        auto stream = s.lease->LeaseKeepAlive(ctx);
        etcdserverpb::LeaseKeepAliveRequest req;
        req.set_id(lease);
        if (!stream->Write(req) || !stream->Read(&resp)) {
          stream->WritesDone();
          grpc::Status f = stream->Finish();
          return f.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream ended")
                        : f;
        }
        stream->WritesDone();
        return stream->Finish();  // etcd ends the stream when we end ours
      });
  if (!st.ok()) return;  // retried next period; the lease stays valid until it runs out
  absl::MutexLock l(&mu_);
  if (lease_ != lease) return;
  if (resp.ttl() <= 0) {
    Log("controller: replica ", opts_.replica, ": lease ", lease, " expired in etcd");
    lease_ = 0;
    SetLeader(false);
    return;
  }
  last_keepalive_ = sent;
  lease_valid_until_ = sent + absl::Seconds(resp.ttl());
}

void EtcdCoordinator::Advertise() {
  int64_t lease;
  {
    absl::MutexLock l(&mu_);
    if (!LeaseValidLocked() || advertised_lease_ == lease_) return;
    lease = lease_;
  }
  if (!client_->Put(prefix_ + "replicas/" + opts_.replica, opts_.replica, lease).ok()) return;
  absl::MutexLock l(&mu_);
  advertised_lease_ = lease;
}

void EtcdCoordinator::Campaign() {
  int64_t lease;
  {
    absl::MutexLock l(&mu_);
    if (!LeaseValidLocked()) {
      SetLeader(false);
      return;
    }
    lease = lease_;
  }
  const std::string key = prefix_ + "leader";
  etcdserverpb::TxnRequest txn;
  auto* c = txn.add_compare();
  c->set_key(key);
  c->set_target(etcdserverpb::Compare::CREATE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_create_revision(0);
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(opts_.replica);
  put->set_lease(lease);
  txn.add_failure()->mutable_request_range()->set_key(key);
  absl::StatusOr<etcdserverpb::TxnResponse> r = client_->Txn(txn);
  if (!r.ok()) return;  // IsLeader() turns false by itself if this lasts
  bool mine = r->succeeded();
  if (!mine && r->responses_size() > 0 && r->responses(0).response_range().kvs_size() > 0) {
    const auto& kv = r->responses(0).response_range().kvs(0);
    mine = kv.value() == opts_.replica && kv.lease() == lease;
  }
  absl::MutexLock l(&mu_);
  SetLeader(mine && lease_ == lease && LeaseValidLocked());
}

void EtcdCoordinator::Flush() {
  std::map<std::string, std::optional<std::string>> batch;
  int64_t lease;
  {
    absl::MutexLock l(&mu_);
    if (!LeaseValidLocked() || pending_.empty()) return;
    batch.swap(pending_);
    lease = lease_;
  }
  // Writes go in transactions of up to 100 puts (one raft round, one fsync, each: a
  // heartbeat per agent per second would otherwise be that many sequential commits).
  std::vector<std::string> failed;
  etcdserverpb::TxnRequest puts;
  std::vector<std::string> in_txn;
  auto send_puts = [&] {
    if (puts.success_size() == 0) return;
    if (!client_->Txn(puts).ok()) failed.insert(failed.end(), in_txn.begin(), in_txn.end());
    puts.Clear();
    in_txn.clear();
  };
  for (auto& [node, value] : batch) {
    const std::string key = prefix_ + "status/" + node;
    if (value) {
      auto* put = puts.add_success()->mutable_request_put();
      put->set_key(key);
      put->set_value(*value);
      put->set_lease(lease);
      in_txn.push_back(node);
      if (puts.success_size() >= 100) send_puts();
      continue;
    }
    // Withdraw only our own record: the agent may already be on another replica.
    etcdserverpb::TxnRequest txn;
    auto* c = txn.add_compare();
    c->set_key(key);
    c->set_target(etcdserverpb::Compare::LEASE);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_lease(lease);
    txn.add_success()->mutable_request_delete_range()->set_key(key);
    if (!client_->Txn(txn).ok()) failed.push_back(node);
  }
  send_puts();
  if (failed.empty()) return;
  absl::MutexLock l(&mu_);
  for (const std::string& node : failed) {
    pending_.try_emplace(node, std::move(batch[node]));  // unless a newer one is queued
  }
}

absl::Status EtcdCoordinator::PutSetAsLeader(const StoredSet& set) {
  int64_t lease;
  {
    absl::MutexLock l(&mu_);
    if (leader_ && !LeaseValidLocked()) SetLeader(false);
    if (!leader_) {
      return absl::FailedPreconditionError(
          absl::StrCat("replica ", opts_.replica, " is not the leader"));
    }
    lease = lease_;
  }
  const std::string leader_key = prefix_ + "leader";
  const std::string key = prefix_ + "sets/" + set.rollout.set_id();
  etcdserverpb::TxnRequest txn;
  auto* c = txn.add_compare();
  c->set_key(leader_key);
  c->set_target(etcdserverpb::Compare::VALUE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_value(opts_.replica);
  c = txn.add_compare();
  c->set_key(leader_key);
  c->set_target(etcdserverpb::Compare::LEASE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_lease(lease);
  c = txn.add_compare();
  c->set_key(key);
  c->set_target(etcdserverpb::Compare::VERSION);
  c->set_result(etcdserverpb::Compare::GREATER);
  c->set_version(0);
  auto* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(EtcdStore::EncodeSet(set));
  absl::StatusOr<etcdserverpb::TxnResponse> r = client_->Txn(txn);
  if (!r.ok()) return r.status();
  if (!r->succeeded()) {
    return absl::FailedPreconditionError(
        absl::StrCat("replica ", opts_.replica, " lost the leadership, or set ",
                     set.rollout.set_id(), " was detached; rollout state not written"));
  }
  return absl::OkStatus();
}

std::string EtcdCoordinator::EncodeStatus(const AgentStatusRecord& r) {
  const std::string reg = r.registration.SerializeAsString();
  const std::string hb = r.heartbeat.SerializeAsString();
  return EncodeRecord({{1, &r.replica, 0},
                       {2, &r.peer, 0},
                       {3, &r.identity, 0},
                       {4, &reg, 0},
                       {5, &hb, 0},
                       {6, nullptr, static_cast<uint64_t>(r.last_seen_unix_ns)},
                       {7, nullptr, r.have_heartbeat ? 1u : 0u}});
}

bool EtcdCoordinator::DecodeStatus(const std::string& b, AgentStatusRecord* r) {
  bool ok = true;
  bool ret = DecodeRecord(
      b,
      [&](int n, std::string v) {
        if (n == 1) r->replica = std::move(v);
        if (n == 2) r->peer = std::move(v);
        if (n == 3) r->identity = std::move(v);
        if (n == 4) ok &= r->registration.ParseFromString(v);
        if (n == 5) ok &= r->heartbeat.ParseFromString(v);
      },
      [&](int n, uint64_t v) {
        if (n == 6) r->last_seen_unix_ns = static_cast<int64_t>(v);
        if (n == 7) r->have_heartbeat = v != 0;
      });
  return ret && ok;
}

void EtcdCoordinator::PublishStatus(const AgentStatusRecord& record) {
  std::string v = EncodeStatus(record);
  absl::MutexLock l(&mu_);
  pending_[record.registration.node_name()] = std::move(v);
}

void EtcdCoordinator::RetractStatus(const std::string& node) {
  absl::MutexLock l(&mu_);
  pending_[node] = std::nullopt;
}

absl::StatusOr<std::vector<std::string>> EtcdCoordinator::LoadReplicas() {
  auto kvs = client_->GetPrefix(prefix_ + "replicas/");
  if (!kvs.ok()) return kvs.status();
  std::vector<std::string> out;
  for (const auto& [key, value] : *kvs) out.push_back(value);
  return out;
}

absl::StatusOr<std::vector<AgentStatusRecord>> EtcdCoordinator::LoadStatuses() {
  auto kvs = client_->GetPrefix(prefix_ + "status/");
  if (!kvs.ok()) return kvs.status();
  std::vector<AgentStatusRecord> out;
  for (const auto& [key, value] : *kvs) {
    AgentStatusRecord r;
    if (!DecodeStatus(value, &r)) {
      Log("controller: unreadable agent status record ", key, "; ignored");
      continue;
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace xolfleet::controller
