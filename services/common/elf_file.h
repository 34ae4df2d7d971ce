// ELF reading for probe placement: symbols (.symtab and .dynsym) to file offsets,
// build-id, the bytes of a function, and which bytes are code (executable segments and
// sections). Uses libelf on a private copy of the file read with pread() (open_file.h):
// never on a mapping, whose pages could fault with SIGBUS if the file were truncated.
#ifndef XOLFLEET_SERVICES_COMMON_ELF_FILE_H_
#define XOLFLEET_SERVICES_COMMON_ELF_FILE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/common/open_file.h"

namespace xolfleet {

struct ElfSymbol {
  std::string name;
  uint64_t vaddr = 0;        // st_value
  uint64_t size = 0;         // st_size
  uint64_t file_offset = 0;  // of the first byte, via the containing PT_LOAD segment
  bool is_function = false;  // STT_FUNC or STT_GNU_IFUNC
  bool from_dynsym = false;
};

// An allocated section with bytes in the file (not SHT_NOBITS).
struct ElfSection {
  std::string name;
  uint64_t file_offset = 0;
  uint64_t size = 0;
  bool executable = false;  // SHF_EXECINSTR
};

class ElfFile {
 public:
  // Opens and indexes `path`. Errors: NOT_FOUND (no such file), PERMISSION_DENIED,
  // INVALID_ARGUMENT (not an ELF, not x86-64, truncated), ABORTED (the file changed size
  // while it was read), RESOURCE_EXHAUSTED (larger than kMaxReadAllBytes).
  static absl::StatusOr<std::unique_ptr<ElfFile>> Open(const std::string& path);
  // Reads and indexes the file held by `file`; `file()` keeps it.
  static absl::StatusOr<std::unique_ptr<ElfFile>> FromOpenFile(
      std::shared_ptr<const OpenFile> file);
  // Same, from bytes in memory (tests, fuzzing). `name` is used in messages.
  static absl::StatusOr<std::unique_ptr<ElfFile>> FromBytes(std::string bytes, std::string name);
  ~ElfFile();

  const std::string& path() const;
  // The descriptor the bytes were read from (null for FromBytes).
  const std::shared_ptr<const OpenFile>& file() const;
  // Lower-case hex of the NT_GNU_BUILD_ID note, empty if none.
  const std::string& build_id() const;
  // True if the file has no .symtab (only .dynsym, if any).
  bool stripped() const;

  // Looks a symbol up in .symtab then .dynsym. NOT_FOUND with a message that says whether the file
  // is stripped and suggests close names; FAILED_PRECONDITION for an undefined (imported) symbol.
  absl::StatusOr<ElfSymbol> FindSymbol(absl::string_view name) const;
  // The defined function containing file offset `off`, if any.
  std::optional<ElfSymbol> FunctionAtFileOffset(uint64_t off) const;
  // Every defined function symbol with non-zero size, deduplicated by address, sorted.
  std::vector<ElfSymbol> Functions() const;

  // `len` bytes at file offset `off` (OUT_OF_RANGE past the end of the file).
  absl::StatusOr<std::vector<uint8_t>> ReadAt(uint64_t off, uint64_t len) const;
  // File offset of virtual address `vaddr` (via PT_LOAD segments), or NOT_FOUND.
  absl::StatusOr<uint64_t> VaddrToFileOffset(uint64_t vaddr) const;
  absl::StatusOr<uint64_t> FileOffsetToVaddr(uint64_t off) const;

  // True if `off` is in the file part of a PT_LOAD segment with PF_X.
  bool InExecutableSegment(uint64_t off) const;
  // True if the file has section headers (a fully stripped file may have none).
  bool has_sections() const;
  // The allocated section whose bytes contain file offset `off`, if any.
  std::optional<ElfSection> SectionAtFileOffset(uint64_t off) const;

 private:
  struct Impl;
  explicit ElfFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace xolfleet

#endif  // XOLFLEET_SERVICES_COMMON_ELF_FILE_H_
