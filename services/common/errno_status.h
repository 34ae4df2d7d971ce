// A failed system call or libbpf call (positive errno) as an absl::Status a caller can act
// on. No gRPC here: the raw bpf() wrappers use it.
#ifndef XOLFLEET_SERVICES_COMMON_ERRNO_STATUS_H_
#define XOLFLEET_SERVICES_COMMON_ERRNO_STATUS_H_

#include <string>

#include "absl/status/status.h"

namespace xolfleet {

// NOT_FOUND (no such file/process), PERMISSION_DENIED (with a root hint),
// RESOURCE_EXHAUSTED, FAILED_PRECONDITION (the kernel rejects the request), INTERNAL
// otherwise. `msg` already names the operation and strerror().
absl::Status ErrnoToStatus(int err, const std::string& msg);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_ERRNO_STATUS_H_
