// libFuzzer target: the ELF reader over arbitrary bytes, then everything that walks what it
// found (symbols, function bodies, classification of every function entry).
#include <cstddef>
#include <cstdint>
#include <string>

#include "services/common/elf_file.h"
#include "services/common/site_resolver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto elf = xolfleet::ElfFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size),
                                          "fuzz-input");
  if (!elf.ok()) return 0;
  const xolfleet::ElfFile& f = **elf;
  (void)f.build_id();
  (void)f.FindSymbol("main");
  (void)f.FindSymbol("mian");  // the did-you-mean path
  const std::vector<xolfleet::ElfSymbol> fns = f.Functions();
  for (size_t i = 0; i < fns.size() && i < 64; ++i) {
    auto s = f.FindSymbol(fns[i].name);
    if (!s.ok()) __builtin_trap();  // every listed function must be found by name
    (void)f.FunctionAtFileOffset(fns[i].file_offset);
    (void)f.ReadAt(fns[i].file_offset, fns[i].size);
    xolfleet::SiteRequest req;
    req.binary_path = "fuzz-input";
    req.symbol = fns[i].name;
    req.allow_relocate = true;
    (void)xolfleet::ResolveSite(f, req, xolfleet::KernelProfile::kLinux618);
  }
  (void)xolfleet::ClassifyAllFunctionEntries(f, xolfleet::KernelProfile::kXolfleet61);
  return 0;
}
