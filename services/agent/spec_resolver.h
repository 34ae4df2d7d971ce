// Phase 1 of an Attach: every spec of a request validated and resolved to a classified
// site, with no lock held and nothing touching the kernel. A missing binary or symbol, a
// build-id mismatch, an offset inside an instruction, a REFUSED instruction, an unsafe
// one (hazard), a spec repeated in the request, or a pid that does not exist fails the
// request, with one message naming every failed spec.
#ifndef XOLFLEET_SERVICES_AGENT_SPEC_RESOLVER_H_
#define XOLFLEET_SERVICES_AGENT_SPEC_RESOLVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/agent/binary_locator.h"
#include "services/common/open_file.h"
#include "services/common/placement.h"
#include "services/common/site_resolver.h"
#include "xolfleet/v1/agent.pb.h"

namespace xolfleet {

// One resolved spec.
struct ResolvedSpec {
  ResolvedSite site;
  // The file opened, read and checked for this spec; the kernel attaches through it
  // (/proc/self/fd/N). Specs of a request naming one file share one descriptor.
  std::shared_ptr<const OpenFile> file;
  // The process (pid or container) it was opened through; it must still run when the
  // probes are attached (null: a host path).
  std::shared_ptr<const HeldProcess> process;
};

// Called every few specs resolved (about 20 times per request, at most once per 64 specs,
// and once at the end).
using ResolveProgressFn = std::function<void(uint32_t done, uint32_t total)>;

// Resolves every spec of `req` under `profile`, or fails naming every failed spec (the
// code of the first failure; "nothing attached: N of M specs failed: spec[i] ...: why").
absl::StatusOr<std::vector<ResolvedSpec>> ResolveSpecs(const BinaryLocator& locator,
                                                       KernelProfile profile,
                                                       const v1::AttachRequest& req,
                                                       const ResolveProgressFn& progress = nullptr);

// "spec[3] /usr/bin/x:main+0x4 pid 12", for messages.
std::string DescribeSpec(size_t i, const v1::ProbeSpec& spec);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_SPEC_RESOLVER_H_
