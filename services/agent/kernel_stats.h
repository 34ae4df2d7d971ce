// The patched kernel's uprobe slot counters and per-probe placements (kernel/ series), read
// from debugfs. On stock kernels the files do not exist and nothing is reported.
//
//   /sys/kernel/debug/uprobes/stats       "name value" per line: hits_emulated,
//                                         hits_boosted, hits_boosted_riprel,
//                                         hits_single_step, slot_reinstalls,
//                                         slot_migrations, signals_deferred,
//                                         signals_translated, fault_rollbacks,
//                                         rep_rollbacks (kernels before it: 0)
//   /sys/kernel/debug/uprobes/placements  "<major>:<minor> <inode> 0x<offset> <PLACEMENT>"
//                                         per registered probe (the device of the
//                                         file's super block); kernels of the series
//                                         before the device was added print
//                                         "<inode> 0x<offset> <PLACEMENT>"
#ifndef XOLFLEET_SERVICES_AGENT_KERNEL_STATS_H_
#define XOLFLEET_SERVICES_AGENT_KERNEL_STATS_H_

#include <cstdint>
#include <optional>
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

// Parses the stats file. Unknown names are ignored (newer kernels may add some); a line that is not
// "name number" is INVALID_ARGUMENT naming the line. Sets available = true.
absl::StatusOr<v1::KernelSlotStats> ParseSlotStats(absl::string_view text);

// A device the placements file did not name (the older inode-only format).
inline constexpr uint64_t kNoDevice = ~uint64_t{0};

struct KernelPlacementKey {
  uint64_t device = kNoDevice;  // makedev(major, minor): compares with stat()'s st_dev
  uint64_t inode = 0;
  uint64_t offset = 0;
  bool operator==(const KernelPlacementKey& o) const {
    return device == o.device && inode == o.inode && offset == o.offset;
  }
  template <typename H>
  friend H AbslHashValue(H h, const KernelPlacementKey& k) {
    return H::combine(std::move(h), k.device, k.inode, k.offset);
  }
};

// The kernel's placements, by device, inode and offset.
class KernelPlacements {
 public:
  void Add(const KernelPlacementKey& key, Placement p);
  // The placement of the probe on `offset` of the file (device, inode): the line naming
  // that device, else the only line for that inode and offset whatever its device (the
  // inode-only format, or a file system whose stat() device is not its super block's,
  // e.g. a btrfs subvolume); nullopt if none, or if several devices list it.
  std::optional<Placement> Find(uint64_t device, uint64_t inode, uint64_t offset) const;
  size_t size() const { return by_key_.size(); }

 private:
  absl::flat_hash_map<KernelPlacementKey, Placement> by_key_;
  // (inode, offset) -> placement if a single line lists it, nullopt if several do
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, std::optional<Placement>> by_inode_;
};

// Parses the placements file, either format (a line at a time); INVALID_ARGUMENT names
// the first bad line. Probes the kernel lists as UNKNOWN (not analysed yet: no process
// mapped the file) are left out.
absl::StatusOr<KernelPlacements> ParsePlacements(absl::string_view text);

// Reads both files. NOT_FOUND when the kernel does not have them (stock kernels).
absl::StatusOr<v1::KernelSlotStats> ReadSlotStats(const std::string& path = kUprobeStatsPath);
absl::StatusOr<KernelPlacements> ReadPlacements(const std::string& path = kUprobePlacementsPath);

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_KERNEL_STATS_H_
