// absl::Status inside, grpc::Status at the edge.
#ifndef XOLFLEET_SERVICES_AGENT_STATUS_UTIL_H_
#define XOLFLEET_SERVICES_AGENT_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace xolfleet {

// Same code (absl and gRPC share the numbering), same message. An unknown code
// becomes UNKNOWN rather than an out-of-range grpc::StatusCode.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// A failed system call or libbpf call (positive errno) as the code a caller can
// act on: NOT_FOUND (no such file/process), PERMISSION_DENIED (with a root
// hint), RESOURCE_EXHAUSTED, FAILED_PRECONDITION (the kernel rejects the
// request), INTERNAL otherwise. `msg` already names the operation and
// strerror().
absl::Status ErrnoToStatus(int err, const std::string& msg);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_STATUS_UTIL_H_
