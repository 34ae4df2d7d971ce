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

// Bytes the application holds in tcmalloc ("generic.current_allocated_bytes"); nullopt if
// tcmalloc does not answer.
std::optional<size_t> AllocatedBytes();

}  // namespace xolfleet::controller

#endif  // XOLFLEET_SERVICES_CONTROLLER_ALLOCATOR_H_
