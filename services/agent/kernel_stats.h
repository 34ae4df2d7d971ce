// The patched kernel's uprobe slot counters and per-probe placements (kernel/ series), read
// from debugfs. On stock kernels the files do not exist and nothing is reported.
//
//   /sys/kernel/debug/uprobes/stats       "name value" per line: hits_emulated,
//                                         hits_boosted, hits_boosted_riprel,
//                                         hits_single_step, slot_reinstalls,
//                                         slot_migrations, signals_deferred,
//                                         signals_translated, fault_rollbacks,
//                                         rep_rollbacks (kernels before it: 0)
//   /sys/kernel/debug/uprobes/placements  "<inode> 0x<offset> <PLACEMENT>" per
//                                         registered probe
#ifndef XOLFLEET_SERVICES_AGENT_KERNEL_STATS_H_
#define XOLFLEET_SERVICES_AGENT_KERNEL_STATS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/placement.h"
#include "xolfleet/v1/common.pb.h"

namespace xolfleet {

inline constexpr char kUprobeStatsPath[] = "/sys/kernel/debug/uprobes/stats";
inline constexpr char kUprobePlacementsPath[] = "/sys/kernel/debug/uprobes/placements";

// Parses the stats file. Unknown names are ignored (newer kernels may add
// some); a line that is not "name number" is INVALID_ARGUMENT naming the line.
// Sets available = true.
absl::StatusOr<v1::KernelSlotStats> ParseSlotStats(absl::string_view text);

struct KernelPlacementKey {
  uint64_t inode = 0;
  uint64_t offset = 0;
  bool operator==(const KernelPlacementKey& o) const {
    return inode == o.inode && offset == o.offset;
  }
  template <typename H>
  friend H AbslHashValue(H h, const KernelPlacementKey& k) {
    return H::combine(std::move(h), k.inode, k.offset);
  }
};

using KernelPlacements = absl::flat_hash_map<KernelPlacementKey, Placement>;

// Parses the placements file; INVALID_ARGUMENT names the first bad line. Probes the
// kernel lists as UNKNOWN (not analysed yet: no process mapped the file) are left out.
absl::StatusOr<KernelPlacements> ParsePlacements(absl::string_view text);

// Reads both files. NOT_FOUND when the kernel does not have them (stock
// kernels).
absl::StatusOr<v1::KernelSlotStats> ReadSlotStats(const std::string& path = kUprobeStatsPath);
absl::StatusOr<KernelPlacements> ReadPlacements(const std::string& path = kUprobePlacementsPath);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_KERNEL_STATS_H_
