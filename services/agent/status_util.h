// absl::Status inside, grpc::Status at the edge.
#ifndef XOLFLEET_SERVICES_AGENT_STATUS_UTIL_H_
#define XOLFLEET_SERVICES_AGENT_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace xolfleet {

// Same code (absl and gRPC share the numbering), same message. An unknown code
// becomes UNKNOWN rather than an out-of-range grpc::StatusCode.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_STATUS_UTIL_H_
