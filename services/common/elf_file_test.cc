#include "services/common/elf_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/common/open_file.h"

namespace xolfleet {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kFixture[] = "services/common/elf_fixture";
constexpr char kStripped[] = "services/common/elf_fixture_stripped";

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ElfFile, OpensFixtureAndResolvesSymbols) {
  auto elf = ElfFile::Open(kFixture);
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_FALSE((*elf)->stripped());
  EXPECT_EQ((*elf)->build_id().size(), 40u) << (*elf)->build_id();  // sha1
  auto sym = (*elf)->FindSymbol("fx_endbr_push");
  ASSERT_TRUE(sym.ok()) << sym.status();
  EXPECT_TRUE(sym->is_function);
  EXPECT_FALSE(sym->from_dynsym);
  EXPECT_EQ(sym->size, 10u);  // endbr64 4, push 1, mov 3, pop 1, ret 1
  ASSERT_NE(sym->file_offset, 0u);
  auto bytes = (*elf)->ReadAt(sym->file_offset, 4);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, (std::vector<uint8_t>{0xf3, 0x0f, 0x1e, 0xfa}));
  // vaddr <-> file offset round trip.
  auto off = (*elf)->VaddrToFileOffset(sym->vaddr);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, sym->file_offset);
  auto va = (*elf)->FileOffsetToVaddr(sym->file_offset);
  ASSERT_TRUE(va.ok());
  EXPECT_EQ(*va, sym->vaddr);
  // Inside the function.
  auto in = (*elf)->FunctionAtFileOffset(sym->file_offset + 5);
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->name, "fx_endbr_push");
  EXPECT_FALSE((*elf)->FunctionAtFileOffset(0).has_value());
  // Data symbols resolve but are not functions.
  auto data = (*elf)->FindSymbol("fx_data");
  ASSERT_TRUE(data.ok());
  EXPECT_FALSE(data->is_function);
}

TEST(ElfFile, FunctionsAreDeduplicatedAndSorted) {
  auto elf = ElfFile::Open(kFixture);
  ASSERT_TRUE(elf.ok());
  std::vector<ElfSymbol> fns = (*elf)->Functions();
  std::vector<std::string> names;
  for (size_t i = 0; i < fns.size(); ++i) {
    names.push_back(fns[i].name);
    if (i) EXPECT_LT(fns[i - 1].vaddr, fns[i].vaddr);
    EXPECT_GT(fns[i].size, 0u);
  }
  EXPECT_THAT(names, Contains("fx_plain"));
  EXPECT_THAT(names, Not(Contains("fx_alias_long_name")));
  EXPECT_THAT(names, Contains("main"));
}

TEST(ElfFile, MissingSymbolSuggestsCloseNames) {
  auto elf = ElfFile::Open(kFixture);
  ASSERT_TRUE(elf.ok());
  auto sym = (*elf)->FindSymbol("fx_endbr_psh");
  ASSERT_EQ(sym.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(sym.status().message(), HasSubstr("did you mean fx_endbr_push"));
  EXPECT_THAT(sym.status().message(), HasSubstr(kFixture));
  EXPECT_THAT(sym.status().message(), Not(HasSubstr("stripped")));
}

TEST(ElfFile, ImportedSymbolIsFailedPrecondition) {
  auto elf = ElfFile::Open(kFixture);
  ASSERT_TRUE(elf.ok());
  auto sym = (*elf)->FindSymbol("puts");
  EXPECT_EQ(sym.status().code(), absl::StatusCode::kFailedPrecondition) << sym.status();
  EXPECT_THAT(sym.status().message(), HasSubstr("undefined"));
}

TEST(ElfFile, StrippedBinaryUsesDynsymAndSaysSo) {
  auto elf = ElfFile::Open(kStripped);
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_TRUE((*elf)->stripped());
  auto sym = (*elf)->FindSymbol("fx_endbr_push");
  ASSERT_TRUE(sym.ok()) << sym.status();
  EXPECT_TRUE(sym->from_dynsym);
  auto missing = (*elf)->FindSymbol("static_helper");
  ASSERT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("binary is stripped (no .symtab); only "));
  EXPECT_THAT(missing.status().message(), HasSubstr(".dynsym symbols"));
}

TEST(ElfFile, OpenErrors) {
  EXPECT_EQ(ElfFile::Open("/nonexistent/xolfleet").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ElfFile::Open("/nonexistent/xolfleet").status().message(),
              HasSubstr("/nonexistent/xolfleet"));
  EXPECT_EQ(ElfFile::Open("/").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ElfFile::Open("/proc/self/status").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ElfFile, FifoDoesNotHang) {
  const std::string fifo = std::string(getenv("TEST_TMPDIR")) + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ElfFile::Open(fifo).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ElfFile, FromBytesRejectsGarbageAndTruncation) {
  EXPECT_EQ(ElfFile::FromBytes("", "empty").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ElfFile::FromBytes("not an elf at all", "text").status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string full = Slurp(kFixture);
  ASSERT_GT(full.size(), 1000u);
  // Truncations never crash; the ELF header alone is not enough to find symbols.
  for (size_t n : {4ul, 16ul, 63ul, 64ul, 200ul, full.size() / 2}) {
    auto elf = ElfFile::FromBytes(full.substr(0, n), "truncated");
    if (elf.ok()) {
      (void)(*elf)->Functions();
      (void)(*elf)->FindSymbol("fx_endbr_push");
    }
  }
  auto whole = ElfFile::FromBytes(full, "fixture-in-memory");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ((*whole)->path(), "fixture-in-memory");
  EXPECT_TRUE((*whole)->FindSymbol("fx_plain").ok());
}

TEST(ElfFile, KnowsWhichBytesAreCode) {
  auto elf = ElfFile::Open(kFixture);
  ASSERT_TRUE(elf.ok());
  ASSERT_TRUE((*elf)->has_sections());
  auto fn = (*elf)->FindSymbol("fx_plain");
  auto ro = (*elf)->FindSymbol("fx_rodata");
  auto data = (*elf)->FindSymbol("fx_data");
  ASSERT_TRUE(fn.ok() && ro.ok() && data.ok());
  EXPECT_TRUE((*elf)->InExecutableSegment(fn->file_offset));
  EXPECT_FALSE((*elf)->InExecutableSegment(data->file_offset));
  // (This fixture is linked without -z separate-code: its ELF header and .rodata share
  // the executable segment, which is why sections are checked as well.)
  EXPECT_FALSE((*elf)->SectionAtFileOffset(0).has_value());
  auto text = (*elf)->SectionAtFileOffset(fn->file_offset);
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(text->name, ".text");
  EXPECT_TRUE(text->executable);
  auto rodata = (*elf)->SectionAtFileOffset(ro->file_offset);
  ASSERT_TRUE(rodata.has_value());
  EXPECT_EQ(rodata->name, ".rodata");
  EXPECT_FALSE(rodata->executable);
}

// The bytes are read with pread() on a descriptor kept open: the file seen is the one
// opened, whatever its path names afterwards.
TEST(ElfFile, ReadsTheOpenedFileNotThePath) {
  const std::string dir = getenv("TEST_TMPDIR");
  const std::string path = dir + "/copy";
  {
    std::ofstream out(path, std::ios::binary);
    out << Slurp(kFixture);
  }
  auto file = OpenFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  {
    std::ofstream out(dir + "/other", std::ios::binary);
    out << "not an ELF file";
  }
  ASSERT_EQ(rename((dir + "/other").c_str(), path.c_str()), 0);
  auto elf = ElfFile::FromOpenFile(*file);
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_TRUE((*elf)->FindSymbol("fx_plain").ok());
  EXPECT_EQ((*elf)->file()->fd(), (*file)->fd());
  EXPECT_EQ((*file)->proc_path(), absl::StrCat("/proc/self/fd/", (*file)->fd()));
  // The path now names the other file.
  EXPECT_EQ(ElfFile::Open(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OpenFile, TruncatedAfterOpenFailsCleanly) {
  const std::string path = std::string(getenv("TEST_TMPDIR")) + "/shrinks";
  {
    std::ofstream out(path, std::ios::binary);
    out << Slurp(kFixture);
  }
  auto file = OpenFile::Open(path);
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->ReadAll().ok());
  ASSERT_EQ(truncate(path.c_str(), 100), 0);
  // The shorter file reads as a whole; what it lacks is an error with a reason.
  auto elf = ElfFile::FromOpenFile(*file);
  absl::Status st = elf.ok() ? (*elf)->FindSymbol("fx_plain").status() : elf.status();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(st.message().empty());
}

TEST(OpenFile, PathValidation) {
  EXPECT_TRUE(ValidateBinaryPath("/usr/bin/true").ok());
  EXPECT_EQ(ValidateBinaryPath(std::string("/usr/bin/true\0/x", 16)).code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status nul = ValidateBinaryPath(std::string("/usr/bin/true\0x", 15));
  EXPECT_EQ(nul.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(nul.message(), HasSubstr("NUL"));
  absl::Status utf8 = ValidateBinaryPath("/tmp/\xff\xfe");
  EXPECT_EQ(utf8.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(utf8.message(), HasSubstr("UTF-8"));
  EXPECT_TRUE(ValidateBinaryPath("/tmp/caf\xc3\xa9").ok());
  EXPECT_EQ(ValidateBinaryPath("relative").code(), absl::StatusCode::kInvalidArgument);
  absl::Status longp = ValidateBinaryPath("/" + std::string(1 << 20, 'a'));
  EXPECT_EQ(longp.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(longp.message().size(), 300u);
}

TEST(ElfFile, ReadAtBounds) {
  auto elf = ElfFile::Open(kFixture);
  ASSERT_TRUE(elf.ok());
  EXPECT_EQ((*elf)->ReadAt(~0ull - 3, 8).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*elf)->ReadAt(0, ~0ull).status().code(), absl::StatusCode::kOutOfRange);
  auto hdr = (*elf)->ReadAt(0, 4);
  ASSERT_TRUE(hdr.ok());
  EXPECT_EQ((*hdr)[1], 'E');
}

TEST(ElfFile, SystemLibc) {
  auto elf = ElfFile::Open("/lib/x86_64-linux-gnu/libc.so.6");
  ASSERT_TRUE(elf.ok()) << elf.status();
  EXPECT_FALSE((*elf)->build_id().empty());
  auto malloc_sym = (*elf)->FindSymbol("malloc");
  ASSERT_TRUE(malloc_sym.ok()) << malloc_sym.status();
  EXPECT_TRUE(malloc_sym->is_function);
  EXPECT_GT((*elf)->Functions().size(), 1000u);
  // Versioned names resolve to the default version (memcpy@@GLIBC_2.14), not
  // the hidden compatibility one (memcpy@GLIBC_2.2.5).
  auto memcpy_sym = (*elf)->FindSymbol("memcpy");
  ASSERT_TRUE(memcpy_sym.ok()) << memcpy_sym.status();
  EXPECT_TRUE(memcpy_sym->is_function);
  auto typo = (*elf)->FindSymbol("mallocc");
  EXPECT_THAT(typo.status().message(), HasSubstr("malloc"));
}

}  // namespace
}  // namespace xolfleet
