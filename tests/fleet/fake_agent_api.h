// An in-memory AgentApi for tests and the fleet benchmark: no BPF. Attach is all or
// nothing like the real agent's; a spec whose binary_path does not exist on this
// machine fails with NOT_FOUND (so "probe a missing binary" fails as it would for real).
// TTLs expire by the wall clock; hits are whatever a test adds.
#ifndef XOLFLEET_TESTS_FLEET_FAKE_AGENT_API_H_
#define XOLFLEET_TESTS_FLEET_FAKE_AGENT_API_H_

#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "services/agent/agent_api.h"

namespace xolfleet::testing {

class FakeAgentApi : public AgentApi {
 public:
  explicit FakeAgentApi(std::string node_name, std::map<std::string, std::string> labels = {})
      : node_name_(std::move(node_name)), labels_(std::move(labels)) {}

  absl::StatusOr<v1::AttachResponse> Attach(const v1::AttachRequest& req) override;
  absl::StatusOr<v1::DetachResponse> Detach(const v1::DetachRequest& req) override;
  absl::StatusOr<v1::ListResponse> List(const v1::ListRequest& req) override;
  absl::StatusOr<v1::ClassifyResponse> Classify(const v1::ClassifyRequest& req) override;
  absl::StatusOr<v1::NodeInfo> GetNodeInfo() override;

  // Adds hits to every attached probe.
  void AddHitsToAll(uint64_t n);
  // What the agent's budgets do: every attached probe gets `state` and `message`
  // (BUDGET_DETACHED also detaches it, final record kept for List(include_inactive)).
  void ApplyBudgetToAll(v1::BudgetState state, const std::string& message);
  size_t active() const;
  uint64_t attach_calls() const;

 private:
  void ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string node_name_;
  const std::map<std::string, std::string> labels_;
  mutable absl::Mutex mu_;
  std::map<std::string, v1::Probe> probes_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t attach_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace xolfleet::testing

#endif  // XOLFLEET_TESTS_FLEET_FAKE_AGENT_API_H_
