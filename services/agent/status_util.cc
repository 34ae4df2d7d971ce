#include "services/agent/status_util.h"

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"

namespace xolfleet {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  int code = static_cast<int>(status.code());
  if (code < grpc::StatusCode::CANCELLED ||
      code > grpc::StatusCode::UNAUTHENTICATED) {
    code = grpc::StatusCode::UNKNOWN;
  }
  return grpc::Status(static_cast<grpc::StatusCode>(code),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  int code = static_cast<int>(status.error_code());
  if (code < 1 || code > 16)
    code = static_cast<int>(absl::StatusCode::kUnknown);
  return absl::Status(static_cast<absl::StatusCode>(code),
                      status.error_message());
}

absl::Status ErrnoToStatus(int err, const std::string& msg) {
  switch (err) {
    case ENOENT:
    case ESRCH:
      return absl::NotFoundError(msg);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(
          absl::StrCat(msg, " (the agent needs root)"));
    case ENOMEM:
    case E2BIG:
    case EMFILE:
      return absl::ResourceExhaustedError(msg);
    case EINVAL:
    case ENOTSUP:
    case EILSEQ:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace xolfleet
