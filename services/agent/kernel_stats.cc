#include "services/agent/kernel_stats.h"

#include <errno.h>
#include <string.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace xolfleet {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, " does not exist (stock kernel)"));
    }
    return absl::UnavailableError(absl::StrCat("cannot read ", path, ": ", strerror(err)));
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<absl::string_view> Fields(absl::string_view line) {
  return absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
}

}  // namespace

absl::StatusOr<v1::KernelSlotStats> ParseSlotStats(absl::string_view text) {
  v1::KernelSlotStats s;
  s.set_available(true);
  const absl::flat_hash_map<absl::string_view, void (v1::KernelSlotStats::*)(uint64_t)> setters = {
      {"hits_emulated", &v1::KernelSlotStats::set_hits_emulated},
      {"hits_boosted", &v1::KernelSlotStats::set_hits_boosted},
      {"hits_boosted_riprel", &v1::KernelSlotStats::set_hits_boosted_riprel},
      {"hits_single_step", &v1::KernelSlotStats::set_hits_single_step},
      {"slot_reinstalls", &v1::KernelSlotStats::set_slot_reinstalls},
      {"slot_migrations", &v1::KernelSlotStats::set_slot_migrations},
      {"signals_deferred", &v1::KernelSlotStats::set_signals_deferred},
      {"signals_translated", &v1::KernelSlotStats::set_signals_translated},
      {"fault_rollbacks", &v1::KernelSlotStats::set_fault_rollbacks},
      {"rep_rollbacks", &v1::KernelSlotStats::set_rep_rollbacks},
  };
  int lineno = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++lineno;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f = Fields(line);
    uint64_t value = 0;
    if (f.size() != 2 || !absl::SimpleAtoi(f[1], &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("uprobes stats line ", lineno, " is not 'name value': '", line, "'"));
    }
    auto it = setters.find(f[0]);
    if (it != setters.end()) (s.*(it->second))(value);
  }
  return s;
}

void KernelPlacements::Add(const KernelPlacementKey& key, Placement p) {
  by_key_[key] = p;
  auto [it, inserted] = by_inode_.try_emplace({key.inode, key.offset}, p);
  if (!inserted) it->second = std::nullopt;  // listed for two devices: ambiguous
}

std::optional<Placement> KernelPlacements::Find(uint64_t device, uint64_t inode,
                                                uint64_t offset) const {
  auto exact = by_key_.find(KernelPlacementKey{device, inode, offset});
  if (exact != by_key_.end()) return exact->second;
  auto any = by_inode_.find({inode, offset});
  if (any != by_inode_.end()) return any->second;
  return std::nullopt;
}

absl::StatusOr<KernelPlacements> ParsePlacements(absl::string_view text) {
  KernelPlacements out;
  int lineno = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++lineno;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f = Fields(line);
    KernelPlacementKey key;
    bool ok = f.size() == 4 || f.size() == 3;
    if (ok && f.size() == 4) {
      // "<major>:<minor> <inode> 0x<offset> <PLACEMENT>"
      std::vector<absl::string_view> mm = absl::StrSplit(f[0], ':');
      uint32_t major = 0, minor = 0;
      ok = mm.size() == 2 && absl::SimpleAtoi(mm[0], &major) && absl::SimpleAtoi(mm[1], &minor);
      key.device = makedev(major, minor);
      f.erase(f.begin());
    }
    ok = ok && absl::SimpleAtoi(f[0], &key.inode) && absl::ConsumePrefix(&f[1], "0x") &&
         absl::SimpleHexAtoi(f[1], &key.offset);
    // UNKNOWN: registered, but no process has mapped the file since, so the kernel has not
    // analysed the instruction yet. Not a placement: leave the probe out.
    if (ok && f[2] == "UNKNOWN") continue;
    absl::StatusOr<Placement> p =
        ok ? ParsePlacement(f[2]) : absl::InvalidArgumentError("bad line");
    if (!p.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("uprobes placements line ", lineno,
                       " is not '<major>:<minor> <inode> 0x<offset> <PLACEMENT>' (or, from older "
                       "kernels, '<inode> 0x<offset> <PLACEMENT>'): '",
                       line, "'"));
    }
    out.Add(key, *p);
  }
  return out;
}

absl::StatusOr<v1::KernelSlotStats> ReadSlotStats(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseSlotStats(*text);
}

absl::StatusOr<KernelPlacements> ReadPlacements(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParsePlacements(*text);
}

}  // namespace xolfleet
