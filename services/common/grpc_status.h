// absl::Status inside, grpc::Status at the edge: the one mapping between them (the agent,
// the controller and the controller link use it).
//
// A request that fails because of some of its fields (Attach with a bad spec) says which:
// inner code adds field violations to its absl::Status as a payload (a serialized
// google.rpc.BadRequest under its type URL), and ToGrpcStatus turns the payload into the
// gRPC error details (a google.rpc.Status in the grpc-status-details-bin trailer). Code and
// message are unchanged by either.
#ifndef XOLFLEET_SERVICES_COMMON_GRPC_STATUS_H_
#define XOLFLEET_SERVICES_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace xolfleet {

// Same code (absl and gRPC share the numbering), same message. A code out of range becomes
// UNKNOWN rather than an out-of-range enum value. A field-violation payload becomes the
// error details; FromGrpcStatus restores it.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The type URL of the payload (that of google.rpc.BadRequest in an Any).
inline constexpr absl::string_view kBadRequestTypeUrl = "type.googleapis.com/google.rpc.BadRequest";

// At most this many violations are kept (the details travel in a trailer, whose size
// gRPC limits); a description is cut to kMaxViolationDescription bytes.
inline constexpr size_t kMaxFieldViolations = 64;
inline constexpr size_t kMaxViolationDescription = 512;

struct FieldViolation {
  std::string field;  // e.g. "specs[3].symbol"
  std::string description;
};

// Adds one violation to `status` (not OK) and returns it.
absl::Status AddFieldViolation(absl::Status status, absl::string_view field,
                               absl::string_view description);

// The violations `status` carries, in order; none if it carries no (or a malformed) payload.
std::vector<FieldViolation> FieldViolations(const absl::Status& status);

// The violations in a grpc::Status's error details (what a client sees).
std::vector<FieldViolation> FieldViolations(const grpc::Status& status);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_GRPC_STATUS_H_
