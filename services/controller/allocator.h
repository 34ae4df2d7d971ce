// The controller's memory allocator: gperftools' tcmalloc (Debian's libtcmalloc-minimal4),
// linked into the executable, so every allocation of the process (the controller's own,
// gRPC's, OpenSSL's) goes through it.
//
// Why: at thousands of agents the controller's memory is per-connection buffers of gRPC and
// OpenSSL (bench/fleet/results.txt). tcmalloc keeps allocations of one size class together
// and hands out pages the process has not touched yet, where glibc's malloc reuses the
// touched pages that TLS handshakes and large pushes freed: 99.6 instead of 111-114 KiB of
// RSS per agent at 1,000 agents, the same allocations (services/controller/README.md).
#ifndef XOLFLEET_SERVICES_CONTROLLER_ALLOCATOR_H_
#define XOLFLEET_SERVICES_CONTROLLER_ALLOCATOR_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace xolfleet::controller {

// "tcmalloc X.Y" when malloc, as the process resolves it, is tcmalloc's; else why not (e.g.
// an LD_PRELOAD of another allocator comes first).
absl::StatusOr<std::string> CheckAllocator();

// tcmalloc's accounting of the process's heap (exported on /metrics as
// xolfleet_controller_heap_bytes); nullopt if tcmalloc does not answer.
struct HeapStats {
  size_t in_use = 0;    // held by the program (generic.current_allocated_bytes)
  size_t free = 0;      // free in tcmalloc's page heap and caches: resident, reusable
  size_t released = 0;  // free and given back to the OS (tcmalloc.pageheap_unmapped_bytes)
};
std::optional<HeapStats> GetHeapStats();

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_ALLOCATOR_H_
