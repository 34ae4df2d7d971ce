#include "services/common/proto_time.h"

#include "gtest/gtest.h"

namespace xolfleet {
namespace {

TEST(ProtoTime, TimestampRoundTripsToTheNanosecond) {
  for (absl::Time t :
       {absl::UnixEpoch(), absl::FromUnixNanos(1764780000123456789), absl::FromUnixNanos(-1)}) {
    google::protobuf::Timestamp ts = ToTimestamp(t);
    EXPECT_GE(ts.nanos(), 0);
    EXPECT_LT(ts.nanos(), 1000000000);
    EXPECT_EQ(FromTimestamp(ts), t);
  }
  EXPECT_EQ(ToTimestamp(absl::InfinitePast()).seconds(), -62135596800);
  EXPECT_EQ(ToTimestamp(absl::InfiniteFuture()).seconds(), 253402300799);
  google::protobuf::Timestamp before = ToTimestamp(absl::FromUnixNanos(-1));
  EXPECT_EQ(before.seconds(), -1);
  EXPECT_EQ(before.nanos(), 999999999);
}

TEST(ProtoTime, DurationRoundTripsWithOneSign) {
  for (absl::Duration d : {absl::ZeroDuration(), absl::Milliseconds(250), absl::Seconds(90),
                           -absl::Milliseconds(1500)}) {
    google::protobuf::Duration p = ToDurationProto(d);
    EXPECT_FALSE(p.seconds() > 0 && p.nanos() < 0);
    EXPECT_FALSE(p.seconds() < 0 && p.nanos() > 0);
    EXPECT_EQ(FromDurationProto(p), d);
  }
  EXPECT_EQ(ToDurationProto(-absl::Milliseconds(1500)).seconds(), -1);
  EXPECT_EQ(ToDurationProto(-absl::Milliseconds(1500)).nanos(), -500000000);
}

TEST(ProtoTime, CheckDurationRefusesNegativeMalformedAndOverLimit) {
  EXPECT_TRUE(CheckDuration(ToDurationProto(absl::Seconds(10)), "ttl", absl::Seconds(10)).ok());
  EXPECT_TRUE(CheckDuration(google::protobuf::Duration(), "ttl", absl::Seconds(10)).ok());
  absl::Status st = CheckDuration(ToDurationProto(absl::Seconds(11)), "ttl", absl::Seconds(10));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "ttl 11s exceeds the limit 10s");
  st = CheckDuration(ToDurationProto(-absl::Seconds(1)), "ttl", absl::Seconds(10));
  EXPECT_EQ(st.message(), "ttl is negative (-1s)");
  google::protobuf::Duration bad;
  bad.set_seconds(1);
  bad.set_nanos(-1);
  EXPECT_EQ(CheckDuration(bad, "ttl", absl::Seconds(10)).code(),
            absl::StatusCode::kInvalidArgument);
  bad.set_seconds(0);
  bad.set_nanos(1000000000);
  EXPECT_EQ(CheckDuration(bad, "ttl", absl::Seconds(10)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xolfleet
