#include "services/common/proto_time.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace xolfleet {

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  // Timestamp covers years 1 to 9999; absl::InfinitePast() and the like are clamped to it.
  t = std::clamp(t, absl::FromUnixSeconds(-62135596800),
                 absl::FromUnixSeconds(253402300799) + absl::Nanoseconds(999999999));
  // Seconds toward negative infinity and nanos in [0, 1e9), as Timestamp wants them.
  const int64_t s = absl::ToUnixSeconds(t);
  google::protobuf::Timestamp ts;
  ts.set_seconds(s);
  ts.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(s))));
  return ts;
}

absl::Time FromTimestamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

google::protobuf::Duration ToDurationProto(absl::Duration d) {
  // Seconds and nanos both truncated toward zero: they share the sign, as Duration wants.
  absl::Duration rem;
  const int64_t s = absl::IDivDuration(d, absl::Seconds(1), &rem);
  google::protobuf::Duration out;
  out.set_seconds(s);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(rem)));
  return out;
}

absl::Duration FromDurationProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::Status CheckDuration(const google::protobuf::Duration& d, absl::string_view field,
                           absl::Duration max) {
  if (d.nanos() <= -1000000000 || d.nanos() >= 1000000000 || (d.seconds() > 0 && d.nanos() < 0) ||
      (d.seconds() < 0 && d.nanos() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": malformed Duration (seconds ",
                                                   d.seconds(), ", nanos ", d.nanos(), ")"));
  }
  const absl::Duration v = FromDurationProto(d);
  if (v < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is negative (", absl::FormatDuration(v), ")"));
  }
  if (v > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " ", absl::FormatDuration(v), " exceeds the limit ", absl::FormatDuration(max)));
  }
  return absl::OkStatus();
}

}  // namespace xolfleet
