// absl::Status inside, grpc::Status at the edge: the one mapping between them (the agent,
// the controller and the controller link use it).
#ifndef XOLFLEET_SERVICES_COMMON_GRPC_STATUS_H_
#define XOLFLEET_SERVICES_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace xolfleet {

// Same code (absl and gRPC share the numbering), same message. A code out of range becomes
// UNKNOWN rather than an out-of-range enum value.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_GRPC_STATUS_H_
