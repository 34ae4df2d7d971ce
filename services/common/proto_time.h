// google.protobuf.Timestamp and Duration to and from absl::Time and absl::Duration.
//
// The API carries every wall-clock time as a Timestamp and every span as a Duration
// (docs/api.md). An unset Timestamp is "never" (no expiry, not seen yet): callers test
// has_...() first; FromTimestamp of an unset one is the Unix epoch. ToTimestamp clamps to the
// range a Timestamp may hold (years 1 to 9999): protobuf's JSON printer refuses others.
#ifndef XOLFLEET_SERVICES_COMMON_PROTO_TIME_H_
#define XOLFLEET_SERVICES_COMMON_PROTO_TIME_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace xolfleet {

google::protobuf::Timestamp ToTimestamp(absl::Time t);
absl::Time FromTimestamp(const google::protobuf::Timestamp& t);

google::protobuf::Duration ToDurationProto(absl::Duration d);
absl::Duration FromDurationProto(const google::protobuf::Duration& d);

// INVALID_ARGUMENT naming `field` unless `d` is a well-formed Duration (nanos in range and of
// the seconds' sign) between 0 and `max`.
absl::Status CheckDuration(const google::protobuf::Duration& d, absl::string_view field,
                           absl::Duration max);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_PROTO_TIME_H_
