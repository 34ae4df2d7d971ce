// The probe slots of the program (0 .. capacity - 1: the key of a probe's config and
// counters) and the generation each slot's cookie must carry (probe_program.h). A slot
// taken gets the next generation, so hits of a link left from the slot's previous owner
// are never counted for the new one; a re-link moves a slot to the next generation
// without freeing it. Slots freed are taken again first (a fresh table hands out 0, 1, 2
// ...). Not thread-safe: the probe manager holds its lock.
#ifndef XOLFLEET_SERVICES_AGENT_SLOT_TABLE_H_
#define XOLFLEET_SERVICES_AGENT_SLOT_TABLE_H_

#include <cstdint>
#include <optional>
#include <vector>

namespace xolfleet {

class SlotTable {
 public:
  struct Grant {
    uint32_t slot = 0;
    uint32_t generation = 0;
  };

  explicit SlotTable(uint32_t capacity);

  uint32_t capacity() const { return static_cast<uint32_t>(generation_.size()); }
  size_t free_count() const { return free_.size(); }
  size_t used_count() const { return capacity() - free_.size(); }
  bool in_use(uint32_t slot) const { return slot < capacity() && in_use_[slot]; }

  // A free slot with its new generation; nullopt when none is free.
  std::optional<Grant> Take();
  // `n` slots, or none at all when fewer are free.
  std::vector<Grant> Take(size_t n);
  // Returns a slot taken before; false (and nothing changes) for a slot not in use.
  bool Free(uint32_t slot);

  uint32_t generation(uint32_t slot) const { return generation_[slot]; }
  // The generation a re-link will use, and the switch to it.
  uint32_t next_generation(uint32_t slot) const { return generation_[slot] + 1; }
  uint32_t AdvanceGeneration(uint32_t slot) { return ++generation_[slot]; }

 private:
  std::vector<uint32_t> free_;  // taken from the back
  std::vector<uint32_t> generation_;
  std::vector<bool> in_use_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_AGENT_SLOT_TABLE_H_
