#include "services/common/grpc_status.h"

#include <grpcpp/support/error_details.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"

namespace xolfleet {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

MATCHER_P2(Violation, field, description, "") {
  return arg.field == field && arg.description == description;
}

TEST(GrpcStatusTest, PlainStatusHasNoDetails) {
  grpc::Status g = ToGrpcStatus(absl::NotFoundError("no such symbol"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "no such symbol");
  EXPECT_THAT(g.error_details(), IsEmpty());
  EXPECT_THAT(FieldViolations(g), IsEmpty());
}

// What a client (any language) decodes: a google.rpc.Status with the same code and
// message and one BadRequest detail listing the violations in order.
TEST(GrpcStatusTest, ViolationsBecomeBadRequestDetails) {
  absl::Status st = absl::InvalidArgumentError("nothing attached: 2 of 3 specs failed");
  st = AddFieldViolation(st, "specs[1].symbol", "no symbol nope");
  st = AddFieldViolation(st, "specs[2]", "pid 7 is not running");
  grpc::Status g = ToGrpcStatus(st);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.error_message(), "nothing attached: 2 of 3 specs failed");

  google::rpc::Status details;
  ASSERT_TRUE(grpc::ExtractErrorDetails(g, &details).ok());
  EXPECT_EQ(details.code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(details.message(), g.error_message());
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::BadRequest br;
  ASSERT_TRUE(details.details(0).UnpackTo(&br));
  ASSERT_EQ(br.field_violations_size(), 2);
  EXPECT_EQ(br.field_violations(0).field(), "specs[1].symbol");
  EXPECT_EQ(br.field_violations(0).description(), "no symbol nope");
  EXPECT_EQ(br.field_violations(1).field(), "specs[2]");

  EXPECT_THAT(FieldViolations(g), ElementsAre(Violation("specs[1].symbol", "no symbol nope"),
                                              Violation("specs[2]", "pid 7 is not running")));
}

TEST(GrpcStatusTest, RoundTripKeepsCodeMessageAndViolations) {
  absl::Status st = AddFieldViolation(absl::NotFoundError("gone"), "specs[0].pid", "exited");
  absl::Status back = FromGrpcStatus(ToGrpcStatus(st));
  EXPECT_EQ(back.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(back.message(), "gone");
  EXPECT_THAT(FieldViolations(back), ElementsAre(Violation("specs[0].pid", "exited")));
}

TEST(GrpcStatusTest, OkStatusTakesNoViolation) {
  EXPECT_TRUE(AddFieldViolation(absl::OkStatus(), "specs[0]", "x").ok());
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(GrpcStatusTest, ViolationsAreCapped) {
  absl::Status st = absl::InvalidArgumentError("many");
  for (size_t i = 0; i < kMaxFieldViolations + 5; ++i) {
    st = AddFieldViolation(st, absl::StrCat("specs[", i, "]"), std::string(2000, 'x'));
  }
  std::vector<FieldViolation> v = FieldViolations(ToGrpcStatus(st));
  ASSERT_EQ(v.size(), kMaxFieldViolations);
  EXPECT_EQ(v.back().field, absl::StrCat("specs[", kMaxFieldViolations - 1, "]"));
  EXPECT_EQ(v.back().description.size(), kMaxViolationDescription);
}

TEST(GrpcStatusTest, MalformedDetailsAreIgnored) {
  grpc::Status g(grpc::StatusCode::INVALID_ARGUMENT, "bad", "\xff\xff not a proto");
  absl::Status back = FromGrpcStatus(g);
  EXPECT_EQ(back.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(FieldViolations(back), IsEmpty());
}

}  // namespace
}  // namespace xolfleet
