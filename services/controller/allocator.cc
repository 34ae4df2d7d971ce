#include "services/controller/allocator.h"

#include <dlfcn.h>
#include <gperftools/malloc_extension_c.h>
#include <gperftools/tcmalloc.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace xolfleet::controller {

absl::StatusOr<std::string> CheckAllocator() {
  int major = 0;
  int minor = 0;
  tc_version(&major, &minor, nullptr);  // also keeps the library linked (--as-needed)
  void* malloc_fn = dlsym(RTLD_DEFAULT, "malloc");
  void* tc_malloc_fn = dlsym(RTLD_DEFAULT, "tc_malloc");
  if (malloc_fn == nullptr || malloc_fn != tc_malloc_fn) {
    Dl_info info{};
    std::string from = "nothing";
    if (malloc_fn != nullptr) {
      from = dladdr(malloc_fn, &info) != 0 && info.dli_fname != nullptr ? info.dli_fname : "?";
    }
    return absl::FailedPreconditionError(
        absl::StrCat("malloc resolves to ", from, ", not tcmalloc (an LD_PRELOAD first?)"));
  }
  return absl::StrCat("tcmalloc ", major, ".", minor);
}

std::optional<size_t> AllocatedBytes() {
  size_t v = 0;
  if (MallocExtension_GetNumericProperty("generic.current_allocated_bytes", &v) == 0) {
    return std::nullopt;
  }
  return v;
}

}  // namespace xolfleet::controller
