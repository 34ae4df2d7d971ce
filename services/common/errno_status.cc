#include "services/common/errno_status.h"

#include <cerrno>
#include <string>

#include "absl/strings/str_cat.h"

namespace xolfleet {

absl::Status ErrnoToStatus(int err, const std::string& msg) {
  switch (err) {
    case ENOENT:
    case ESRCH:
      return absl::NotFoundError(msg);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(absl::StrCat(msg, " (the agent needs root)"));
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
