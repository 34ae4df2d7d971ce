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

std::optional<HeapStats> GetHeapStats() {
  auto get = [](const char* property) -> std::optional<size_t> {
    size_t v = 0;
    if (MallocExtension_GetNumericProperty(property, &v) == 0) return std::nullopt;
    return v;
  };
  std::optional<size_t> in_use = get("generic.current_allocated_bytes");
  std::optional<size_t> page_heap_free = get("tcmalloc.pageheap_free_bytes");
  std::optional<size_t> unmapped = get("tcmalloc.pageheap_unmapped_bytes");
  if (!in_use || !page_heap_free || !unmapped) return std::nullopt;
  HeapStats h;
  h.in_use = *in_use;
  h.free = *page_heap_free;
  for (const char* cache :
       {"tcmalloc.central_cache_free_bytes", "tcmalloc.transfer_cache_free_bytes",
        "tcmalloc.thread_cache_free_bytes"}) {
    h.free += get(cache).value_or(0);
  }
  h.released = *unmapped;
  return h;
}

}  // namespace xolfleet::controller
