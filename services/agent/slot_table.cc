#include "services/agent/slot_table.h"

namespace xolfleet {

SlotTable::SlotTable(uint32_t capacity) : generation_(capacity, 0), in_use_(capacity, false) {
  free_.reserve(capacity);
  for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
}

std::optional<SlotTable::Grant> SlotTable::Take() {
  if (free_.empty()) return std::nullopt;
  Grant g;
  g.slot = free_.back();
  free_.pop_back();
  in_use_[g.slot] = true;
  g.generation = ++generation_[g.slot];
  return g;
}

std::vector<SlotTable::Grant> SlotTable::Take(size_t n) {
  std::vector<Grant> out;
  if (n > free_.size()) return out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*Take());
  return out;
}

bool SlotTable::Free(uint32_t slot) {
  if (!in_use(slot)) return false;
  in_use_[slot] = false;
  free_.push_back(slot);
  return true;
}

}  // namespace xolfleet
