#include "tests/fleet/fake_agent_api.h"

#include <sys/stat.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "services/common/proto_time.h"

namespace xolfleet::testing {
namespace {
constexpr size_t kInactiveRetention = 1000;
}  // namespace

void FakeAgentApi::ExpireLocked() {
  int64_t now = absl::GetCurrentTimeNanos();
  for (auto& [id, p] : probes_) {
    if (p.state() == v1::PROBE_STATE_ATTACHED && p.has_expires_at() &&
        FromTimestamp(p.expires_at()) <= absl::FromUnixNanos(now)) {
      p.set_state(v1::PROBE_STATE_EXPIRED);
    }
  }
}

absl::StatusOr<v1::AttachResponse> FakeAgentApi::Attach(const v1::AttachRequest& req) {
  std::vector<std::string> bad;
  for (int i = 0; i < req.specs_size(); ++i) {
    struct stat st;
    if (stat(req.specs(i).binary_path().c_str(), &st) != 0) {
      bad.push_back(absl::StrCat("spec ", i, ": ", req.specs(i).binary_path(), ": no such file"));
    }
  }
  absl::MutexLock l(&mu_);
  ++attach_calls_;
  if (!bad.empty()) return absl::NotFoundError(absl::StrJoin(bad, "; "));
  v1::AttachResponse resp;
  int64_t now = absl::GetCurrentTimeNanos();
  for (const auto& spec : req.specs()) {
    v1::Probe p;
    p.set_id(absl::StrCat("p", next_++));
    *p.mutable_spec() = spec;
    p.set_state(v1::PROBE_STATE_ATTACHED);
    p.mutable_site()->set_placement(v1::PLACEMENT_EMULATED);
    *p.mutable_attached_at() = ToTimestamp(absl::FromUnixNanos(now));
    if (FromDurationProto(spec.ttl()) > absl::ZeroDuration()) {
      *p.mutable_expires_at() =
          ToTimestamp(absl::FromUnixNanos(now) + FromDurationProto(spec.ttl()));
    }
    probes_[p.id()] = p;
    *resp.add_probes() = p;
  }
  resp.set_link_mode(v1::LINK_MODE_UPROBE_MULTI);  // nothing is linked: any mode
  return resp;
}

absl::StatusOr<v1::DetachResponse> FakeAgentApi::Detach(const v1::DetachRequest& req) {
  absl::MutexLock l(&mu_);
  ExpireLocked();
  for (const auto& id : req.probe_ids()) {
    auto it = probes_.find(id);
    if (it == probes_.end() || it->second.state() != v1::PROBE_STATE_ATTACHED) {
      return absl::NotFoundError(absl::StrCat("no attached probe ", id));
    }
  }
  v1::DetachResponse resp;
  for (auto& [id, p] : probes_) {
    bool pick = req.all() && p.state() == v1::PROBE_STATE_ATTACHED;
    for (const auto& want : req.probe_ids()) pick |= want == id;
    if (pick) {
      p.set_state(v1::PROBE_STATE_DETACHED);
      resp.add_detached_ids(id);
    }
  }
  // Like the real agent, keep a bounded history of inactive probes for List.
  size_t inactive = 0;
  for (const auto& [id, p] : probes_) inactive += p.state() != v1::PROBE_STATE_ATTACHED;
  for (auto it = probes_.begin(); inactive > kInactiveRetention && it != probes_.end();) {
    if (it->second.state() == v1::PROBE_STATE_DETACHED) {
      it = probes_.erase(it);
      --inactive;
    } else {
      ++it;
    }
  }
  return resp;
}

absl::StatusOr<v1::ListResponse> FakeAgentApi::List(const v1::ListRequest& req) {
  absl::MutexLock l(&mu_);
  ExpireLocked();
  v1::ListResponse resp;
  std::set<std::string> want(req.probe_ids().begin(), req.probe_ids().end());
  for (const auto& [id, p] : probes_) {
    if (p.state() != v1::PROBE_STATE_ATTACHED && !req.include_inactive()) continue;
    if (!want.empty() && !want.count(id)) continue;
    *resp.add_probes() = p;
  }
  return resp;
}

absl::StatusOr<v1::ClassifyResponse> FakeAgentApi::Classify(const v1::ClassifyRequest&) {
  return absl::UnimplementedError("fake agent: no classifier");
}

absl::StatusOr<v1::NodeInfo> FakeAgentApi::GetNodeInfo() {
  v1::NodeInfo info;
  info.set_node_name(node_name_);
  info.set_kernel_release("6.18.0-fake");
  info.set_kernel_profile("linux-6.18");
  info.set_agent_version("fake");
  for (const auto& [k, v] : labels_) (*info.mutable_labels())[k] = v;
  absl::MutexLock l(&mu_);
  uint32_t n = 0;
  for (const auto& [id, p] : probes_) n += p.state() == v1::PROBE_STATE_ATTACHED;
  info.set_probes_attached(n);
  return info;
}

void FakeAgentApi::AddHitsToAll(uint64_t n) {
  absl::MutexLock l(&mu_);
  for (auto& [id, p] : probes_) {
    if (p.state() == v1::PROBE_STATE_ATTACHED) p.set_hits(p.hits() + n);
  }
}

void FakeAgentApi::ApplyBudgetToAll(v1::BudgetState state, const std::string& message) {
  absl::MutexLock l(&mu_);
  for (auto& [id, p] : probes_) {
    if (p.state() != v1::PROBE_STATE_ATTACHED) continue;
    p.mutable_cost()->set_budget_state(state);
    p.mutable_cost()->set_budget_message(message);
    if (state == v1::BUDGET_STATE_DETACHED) {
      p.set_state(v1::PROBE_STATE_DETACHED);
      p.set_status_message("over budget: " + message);
    }
  }
}

size_t FakeAgentApi::active() const {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [id, p] : probes_) n += p.state() == v1::PROBE_STATE_ATTACHED;
  return n;
}

uint64_t FakeAgentApi::attach_calls() const {
  absl::MutexLock l(&mu_);
  return attach_calls_;
}

}  // namespace xolfleet::testing
