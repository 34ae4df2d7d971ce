// Conversions between the classifier's types (services/common) and the API's,
// and the Classify dry run shared by the agent and `xolctl classify --local`.
#ifndef XOLFLEET_SERVICES_AGENT_PROBE_CONVERT_H_
#define XOLFLEET_SERVICES_AGENT_PROBE_CONVERT_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "services/common/open_file.h"
#include "services/common/placement.h"
#include "services/common/site_resolver.h"
#include "xolfleet/v1/agent.pb.h"
#include "xolfleet/v1/common.pb.h"

namespace xolfleet {

v1::Placement ToProtoPlacement(Placement p);
// The site a spec names (binary, symbol/offset, build-id guard, relocation, raw offset).
SiteRequest ToSiteRequest(const v1::ProbeSpec& spec);
v1::SitePlacement ToSitePlacement(const ResolvedSite& site);

// Classify without attaching: every site of `req.sites` (errors name the spec) or every function
// entry of `req.all_functions_of`, with totals per placement. `req.profile` is ignored: the caller
// parses it into `profile`. `open` opens a spec's binary (the agent: BinaryLocator, so a classified
// file is one the agent would probe; xolctl --local: OpenFile::Open of the path).
using BinaryOpener =
    std::function<absl::StatusOr<std::shared_ptr<const OpenFile>>(const v1::ProbeSpec& spec)>;
absl::StatusOr<v1::ClassifyResponse> ClassifySites(const v1::ClassifyRequest& req,
                                                   KernelProfile profile, const BinaryOpener& open);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_PROBE_CONVERT_H_
