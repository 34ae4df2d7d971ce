#include "services/common/grpc_status.h"

#include <optional>
#include <string>

#include "absl/strings/cord.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace xolfleet {
namespace {

bool ParseBadRequest(const absl::Status& status, google::rpc::BadRequest* out) {
  auto payload = status.GetPayload(kBadRequestTypeUrl);
  return payload.has_value() && out->ParseFromString(std::string(*payload));
}

std::vector<FieldViolation> Violations(const google::rpc::BadRequest& br) {
  std::vector<FieldViolation> out;
  for (const auto& v : br.field_violations()) out.push_back({v.field(), v.description()});
  return out;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  int code = static_cast<int>(status.code());
  if (code < grpc::StatusCode::CANCELLED || code > grpc::StatusCode::UNAUTHENTICATED) {
    code = grpc::StatusCode::UNKNOWN;
  }
  auto payload = status.GetPayload(kBadRequestTypeUrl);
  if (!payload.has_value()) {
    return grpc::Status(static_cast<grpc::StatusCode>(code), std::string(status.message()));
  }
  google::rpc::Status details;
  details.set_code(code);
  details.set_message(std::string(status.message()));
  google::protobuf::Any* any = details.add_details();
  any->set_type_url(std::string(kBadRequestTypeUrl));
  any->set_value(std::string(*payload));
  return grpc::Status(static_cast<grpc::StatusCode>(code), std::string(status.message()),
                      details.SerializeAsString());
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  int code = static_cast<int>(status.error_code());
  if (code < 1 || code > 16) code = static_cast<int>(absl::StatusCode::kUnknown);
  absl::Status out(static_cast<absl::StatusCode>(code), status.error_message());
  google::rpc::Status details;
  if (!status.error_details().empty() && details.ParseFromString(status.error_details())) {
    for (const google::protobuf::Any& any : details.details()) {
      if (any.type_url() == kBadRequestTypeUrl)
        out.SetPayload(kBadRequestTypeUrl, absl::Cord(any.value()));
    }
  }
  return out;
}

absl::Status AddFieldViolation(absl::Status status, absl::string_view field,
                               absl::string_view description) {
  if (status.ok()) return status;
  google::rpc::BadRequest br;
  ParseBadRequest(status, &br);
  if (static_cast<size_t>(br.field_violations_size()) >= kMaxFieldViolations) return status;
  google::rpc::BadRequest::FieldViolation* v = br.add_field_violations();
  v->set_field(std::string(field));
  v->set_description(std::string(description.substr(0, kMaxViolationDescription)));
  status.SetPayload(kBadRequestTypeUrl, absl::Cord(br.SerializeAsString()));
  return status;
}

std::vector<FieldViolation> FieldViolations(const absl::Status& status) {
  google::rpc::BadRequest br;
  if (!ParseBadRequest(status, &br)) return {};
  return Violations(br);
}

std::vector<FieldViolation> FieldViolations(const grpc::Status& status) {
  return FieldViolations(FromGrpcStatus(status));
}

}  // namespace xolfleet
