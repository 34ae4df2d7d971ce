// ELF reading with libelf over a private copy of the file. The copy is read with
// pread() on a descriptor the caller may keep (OpenFile): mapping the file would
// save memory, but a page of a mapping whose file was truncated meanwhile faults
// with SIGBUS, and the agent reads files that unprivileged users can truncate.
#include "services/common/elf_file.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace xolfleet {
namespace {

struct Segment {
  uint64_t vaddr, offset, filesz;
  bool exec;
};

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

void InitLibelf() {
  static std::once_flag once;
  std::call_once(once, [] { elf_version(EV_CURRENT); });
}

}  // namespace

struct ElfFile::Impl {
  std::string path;
  std::shared_ptr<const OpenFile> file;  // null for FromBytes
  std::string owned;                     // the bytes
  const uint8_t* data = nullptr;
  size_t size = 0;

  std::string build_id;
  bool has_symtab = false;
  size_t dynsym_count = 0;
  std::vector<Segment> loads;
  bool has_sections = false;
  std::vector<ElfSection> sections;                 // allocated, with file bytes
  std::vector<ElfSymbol> symbols;                   // defined, .symtab first
  std::unordered_map<std::string, size_t> by_name;  // first definition wins
  std::unordered_set<std::string> undefined;        // imported names
  std::vector<ElfSymbol> functions;                 // sorted by vaddr, deduplicated
  std::vector<size_t> by_offset;                    // indices into functions, by file offset

  absl::StatusOr<uint64_t> VaddrToOff(uint64_t vaddr) const {
    for (const Segment& s : loads) {
      if (vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz) return s.offset + (vaddr - s.vaddr);
    }
    return absl::NotFoundError(absl::StrFormat(
        "%s: virtual address 0x%x is not in the file part of any PT_LOAD segment", path, vaddr));
  }

  absl::Status Index();

 private:
  // One symbol table section and its header.
  struct Table {
    Elf_Scn* scn;
    GElf_Shdr sh;
  };
  // The tables and version data found by ReadSections(), read by ReadSymbols().
  struct SymbolTables {
    std::vector<Table> symtabs, dynsyms;
    // .gnu.version: per .dynsym entry; bit 15 marks a hidden (non-default)
    // version such as memcpy@GLIBC_2.2.5 next to the default memcpy@@GLIBC_2.14.
    // New links bind to the default, so that is the one a name resolves to.
    Elf_Data* versym = nullptr;
  };

  absl::Status CheckHeader(Elf* elf) const;
  void ReadSegments(Elf* elf);
  SymbolTables ReadSections(Elf* elf);
  void ReadBuildId(Elf_Data* note);
  void ReadSymbols(Elf* elf, const SymbolTables& tables);
  void IndexFunctions();
};

absl::Status ElfFile::Impl::Index() {
  InitLibelf();
  if (size < EI_NIDENT || memcmp(data, ELFMAG, SELFMAG) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an ELF file"));
  }
  Elf* elf = elf_memory(reinterpret_cast<char*>(const_cast<uint8_t*>(data)), size);
  if (!elf) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": libelf cannot read it: ", elf_errmsg(-1)));
  }
  struct Closer {
    Elf* e;
    ~Closer() { elf_end(e); }
  } closer{elf};

  if (absl::Status s = CheckHeader(elf); !s.ok()) return s;
  ReadSegments(elf);
  const SymbolTables tables = ReadSections(elf);
  ReadSymbols(elf, tables);
  IndexFunctions();
  return absl::OkStatus();
}

absl::Status ElfFile::Impl::CheckHeader(Elf* elf) const {
  GElf_Ehdr ehdr;
  if (elf_kind(elf) != ELF_K_ELF || !gelf_getehdr(elf, &ehdr)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid ELF file (truncated?)"));
  }
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64 || ehdr.e_machine != EM_X86_64) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an x86-64 ELF file (class ",
                                                   ehdr.e_ident[EI_CLASS], ", machine ",
                                                   ehdr.e_machine, ")"));
  }
  return absl::OkStatus();
}

void ElfFile::Impl::ReadSegments(Elf* elf) {
  size_t phnum = 0;
  if (elf_getphdrnum(elf, &phnum) != 0) return;
  for (size_t i = 0; i < phnum; ++i) {
    GElf_Phdr ph;
    if (!gelf_getphdr(elf, static_cast<int>(i), &ph)) continue;
    if (ph.p_type == PT_LOAD && ph.p_offset <= size) {
      loads.push_back({ph.p_vaddr, ph.p_offset, std::min<uint64_t>(ph.p_filesz, size - ph.p_offset),
                       (ph.p_flags & PF_X) != 0});
    }
  }
}

// Allocated sections with file bytes, the build id note, and where the symbol tables are.
ElfFile::Impl::SymbolTables ElfFile::Impl::ReadSections(Elf* elf) {
  SymbolTables t;
  size_t shstrndx = 0;
  elf_getshdrstrndx(elf, &shstrndx);
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(elf, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    has_sections = true;
    if ((sh.sh_flags & SHF_ALLOC) && sh.sh_type != SHT_NOBITS && sh.sh_offset < size) {
      const char* sname = elf_strptr(elf, shstrndx, sh.sh_name);
      sections.push_back({sname ? sname : "", sh.sh_offset,
                          std::min<uint64_t>(sh.sh_size, size - sh.sh_offset),
                          (sh.sh_flags & SHF_EXECINSTR) != 0});
    }
    if (sh.sh_type == SHT_SYMTAB) t.symtabs.push_back({scn, sh});
    if (sh.sh_type == SHT_DYNSYM) t.dynsyms.push_back({scn, sh});
    if (sh.sh_type == SHT_GNU_versym && !t.versym) t.versym = elf_getdata(scn, nullptr);
    if (sh.sh_type == SHT_NOTE && build_id.empty()) ReadBuildId(elf_getdata(scn, nullptr));
  }
  has_symtab = !t.symtabs.empty();
  return t;
}

void ElfFile::Impl::ReadBuildId(Elf_Data* d) {
  if (!d || !d->d_buf) return;
  size_t off = 0, name_off = 0, desc_off = 0;
  GElf_Nhdr nh;
  while (off < d->d_size && (off = gelf_getnote(d, off, &nh, &name_off, &desc_off)) > 0) {
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && name_off + 4 <= d->d_size &&
        memcmp(static_cast<char*>(d->d_buf) + name_off, "GNU", 4) == 0 &&
        desc_off + nh.n_descsz <= d->d_size) {
      const auto* p = static_cast<const uint8_t*>(d->d_buf) + desc_off;
      for (size_t i = 0; i < nh.n_descsz; ++i) absl::StrAppendFormat(&build_id, "%02x", p[i]);
      return;
    }
  }
}

// Defined symbols, .symtab first so its names win over .dynsym's, and the names the file imports.
void ElfFile::Impl::ReadSymbols(Elf* elf, const SymbolTables& t) {
  std::vector<bool> hidden;  // parallel to `symbols`
  auto read_table = [&](const Table& table, bool dyn) {
    const GElf_Shdr& sh = table.sh;
    Elf_Data* d = elf_getdata(table.scn, nullptr);
    if (!d || !d->d_buf || sh.sh_entsize == 0) return;
    const size_t n = d->d_size / sh.sh_entsize;
    if (dyn) dynsym_count += n > 0 ? n - 1 : 0;
    for (size_t i = 1; i < n; ++i) {
      GElf_Sym sym;
      if (!gelf_getsym(d, static_cast<int>(i), &sym)) break;
      const char* name = elf_strptr(elf, sh.sh_link, sym.st_name);
      if (!name || !*name) continue;
      if (sym.st_shndx == SHN_UNDEF) {
        undefined.insert(name);
        continue;
      }
      const int type = GELF_ST_TYPE(sym.st_info);
      if (type == STT_SECTION || type == STT_FILE) continue;
      ElfSymbol es;
      es.name = name;
      es.vaddr = sym.st_value;
      es.size = sym.st_size;
      es.is_function = type == STT_FUNC || type == STT_GNU_IFUNC;
      es.from_dynsym = dyn;
      if (auto off = VaddrToOff(sym.st_value); off.ok()) es.file_offset = *off;
      bool is_hidden = false;
      if (dyn && t.dynsyms.size() == 1 && t.versym && t.versym->d_buf &&
          (i + 1) * sizeof(uint16_t) <= t.versym->d_size) {
        is_hidden = static_cast<const uint16_t*>(t.versym->d_buf)[i] & 0x8000;
      }
      auto [it, inserted] = by_name.emplace(es.name, symbols.size());
      if (inserted) {
        symbols.push_back(std::move(es));
        hidden.push_back(is_hidden);
      } else if (hidden[it->second] && !is_hidden) {
        symbols[it->second] = std::move(es);  // the default version wins
        hidden[it->second] = false;
      }
    }
  };
  for (const Table& table : t.symtabs) read_table(table, false);
  for (const Table& table : t.dynsyms) read_table(table, true);
  for (const ElfSymbol& s : symbols) undefined.erase(s.name);
}

// Functions: one per address, preferring a .symtab name, then the shortest
// name (aliases such as __libc_malloc/malloc), sorted by address.
void ElfFile::Impl::IndexFunctions() {
  std::unordered_map<uint64_t, size_t> at;
  for (const ElfSymbol& s : symbols) {
    if (!s.is_function || s.size == 0 || s.file_offset == 0) continue;
    auto [it, inserted] = at.emplace(s.vaddr, functions.size());
    if (inserted) {
      functions.push_back(s);
    } else {
      ElfSymbol& cur = functions[it->second];
      if (cur.from_dynsym == s.from_dynsym && s.name.size() < cur.name.size()) cur = s;
    }
  }
  std::sort(functions.begin(), functions.end(),
            [](const ElfSymbol& a, const ElfSymbol& b) { return a.vaddr < b.vaddr; });
  by_offset.resize(functions.size());
  for (size_t i = 0; i < functions.size(); ++i) by_offset[i] = i;
  std::sort(by_offset.begin(), by_offset.end(), [this](size_t a, size_t b) {
    return functions[a].file_offset < functions[b].file_offset;
  });
}

ElfFile::ElfFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ElfFile::~ElfFile() = default;

absl::StatusOr<std::unique_ptr<ElfFile>> ElfFile::Open(const std::string& path) {
  absl::StatusOr<std::shared_ptr<const OpenFile>> file = OpenFile::Open(path);
  if (!file.ok()) return file.status();
  return FromOpenFile(std::move(*file));
}

absl::StatusOr<std::unique_ptr<ElfFile>> ElfFile::FromOpenFile(
    std::shared_ptr<const OpenFile> file) {
  if (file == nullptr) return absl::InvalidArgumentError("ElfFile: no file");
  absl::StatusOr<std::string> bytes = file->ReadAll();
  if (!bytes.ok()) return bytes.status();
  if (bytes->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Truncated(file->path(), 512), ": empty file, not an ELF file"));
  }
  auto impl = std::make_unique<Impl>();
  impl->path = file->path();
  impl->file = std::move(file);
  impl->owned = std::move(*bytes);
  impl->data = reinterpret_cast<const uint8_t*>(impl->owned.data());
  impl->size = impl->owned.size();
  if (absl::Status s = impl->Index(); !s.ok()) return s;
  return std::unique_ptr<ElfFile>(new ElfFile(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<ElfFile>> ElfFile::FromBytes(std::string bytes, std::string name) {
  auto impl = std::make_unique<Impl>();
  impl->path = std::move(name);
  impl->owned = std::move(bytes);
  impl->data = reinterpret_cast<const uint8_t*>(impl->owned.data());
  impl->size = impl->owned.size();
  if (absl::Status s = impl->Index(); !s.ok()) return s;
  return std::unique_ptr<ElfFile>(new ElfFile(std::move(impl)));
}

const std::string& ElfFile::path() const { return impl_->path; }
const std::shared_ptr<const OpenFile>& ElfFile::file() const { return impl_->file; }
const std::string& ElfFile::build_id() const { return impl_->build_id; }
bool ElfFile::stripped() const { return !impl_->has_symtab; }

absl::StatusOr<ElfSymbol> ElfFile::FindSymbol(absl::string_view name) const {
  if (auto it = impl_->by_name.find(std::string(name)); it != impl_->by_name.end()) {
    return impl_->symbols[it->second];
  }
  if (impl_->undefined.count(std::string(name))) {
    return absl::FailedPreconditionError(
        absl::StrCat("symbol '", Truncated(name), "' is undefined in ", impl_->path,
                     " (imported from a shared library); probe it in the library that defines it"));
  }
  std::string msg = absl::StrCat("symbol '", Truncated(name), "' not found in ", impl_->path);
  if (!impl_->has_symtab) {
    absl::StrAppend(&msg, "; binary is stripped (no .symtab); only ", impl_->dynsym_count,
                    " .dynsym symbols");
  }
  // Suggestions: names containing the query, then the closest by edit distance (not for absurdly
  // long queries: the distance costs their length times each symbol's).
  if (name.size() > 512) return absl::NotFoundError(msg);
  std::vector<std::pair<size_t, const std::string*>> scored;
  const size_t limit = std::max<size_t>(2, name.size() / 3);
  for (const ElfSymbol& s : impl_->symbols) {
    if (!s.is_function) continue;
    if (s.name.size() > name.size() + limit * 4) {
      if (s.name.find(std::string(name)) != std::string::npos) scored.push_back({limit, &s.name});
      continue;
    }
    size_t d = s.name.find(std::string(name)) != std::string::npos
                   ? std::min<size_t>(limit, s.name.size() - name.size())
                   : EditDistance(name, s.name);
    if (d <= limit) scored.push_back({d, &s.name});
  }
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : *a.second < *b.second;
  });
  if (!scored.empty()) {
    std::vector<std::string> names;
    for (size_t i = 0; i < scored.size() && names.size() < 3; ++i) {
      if (std::find(names.begin(), names.end(), *scored[i].second) == names.end()) {
        names.push_back(*scored[i].second);
      }
    }
    absl::StrAppend(&msg, "; did you mean ", absl::StrJoin(names, ", "), "?");
  }
  return absl::NotFoundError(msg);
}

std::optional<ElfSymbol> ElfFile::FunctionAtFileOffset(uint64_t off) const {
  // The innermost (highest-starting) function containing `off`. Functions rarely nest or overlap,
  // so looking back a few entries from the last start <= off is enough.
  const std::vector<ElfSymbol>& fns = impl_->functions;
  const std::vector<size_t>& idx = impl_->by_offset;
  auto it = std::upper_bound(idx.begin(), idx.end(), off,
                             [&fns](uint64_t o, size_t i) { return o < fns[i].file_offset; });
  for (int back = 0; it != idx.begin() && back < 16; ++back) {
    --it;
    const ElfSymbol& f = fns[*it];
    if (off - f.file_offset < f.size) return f;
  }
  return std::nullopt;
}

std::vector<ElfSymbol> ElfFile::Functions() const { return impl_->functions; }

absl::StatusOr<std::vector<uint8_t>> ElfFile::ReadAt(uint64_t off, uint64_t len) const {
  if (off > impl_->size || len > impl_->size - off) {
    return absl::OutOfRangeError(
        absl::StrFormat("%s: cannot read %d bytes at file offset 0x%x (file is %d bytes)",
                        impl_->path, len, off, impl_->size));
  }
  return std::vector<uint8_t>(impl_->data + off, impl_->data + off + len);
}

absl::StatusOr<uint64_t> ElfFile::VaddrToFileOffset(uint64_t vaddr) const {
  return impl_->VaddrToOff(vaddr);
}

absl::StatusOr<uint64_t> ElfFile::FileOffsetToVaddr(uint64_t off) const {
  for (const Segment& s : impl_->loads) {
    if (off >= s.offset && off - s.offset < s.filesz) return s.vaddr + (off - s.offset);
  }
  return absl::NotFoundError(
      absl::StrFormat("%s: file offset 0x%x is not inside any PT_LOAD segment", impl_->path, off));
}

bool ElfFile::InExecutableSegment(uint64_t off) const {
  for (const Segment& s : impl_->loads) {
    if (s.exec && off >= s.offset && off - s.offset < s.filesz) return true;
  }
  return false;
}

bool ElfFile::has_sections() const { return impl_->has_sections; }

std::optional<ElfSection> ElfFile::SectionAtFileOffset(uint64_t off) const {
  for (const ElfSection& s : impl_->sections) {
    if (off >= s.file_offset && off - s.file_offset < s.size) return s;
  }
  return std::nullopt;
}

}  // namespace xolfleet
