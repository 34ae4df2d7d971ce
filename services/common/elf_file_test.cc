#include "services/common/elf_file.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

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
  EXPECT_EQ(sym.status().code(), absl::StatusCode::kFailedPrecondition)
      << sym.status();
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
  EXPECT_THAT(missing.status().message(),
              HasSubstr("binary is stripped (no .symtab); only "));
  EXPECT_THAT(missing.status().message(), HasSubstr(".dynsym symbols"));
}

TEST(ElfFile, OpenErrors) {
  EXPECT_EQ(ElfFile::Open("/nonexistent/xolfleet").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(ElfFile::Open("/nonexistent/xolfleet").status().message(),
              HasSubstr("/nonexistent/xolfleet"));
  EXPECT_EQ(ElfFile::Open("/").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ElfFile::Open("/proc/self/status").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ElfFile, FifoDoesNotHang) {
  const std::string fifo = std::string(getenv("TEST_TMPDIR")) + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ElfFile::Open(fifo).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ElfFile, FromBytesRejectsGarbageAndTruncation) {
  EXPECT_EQ(ElfFile::FromBytes("", "empty").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ElfFile::FromBytes("not an elf at all", "text").status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string full = Slurp(kFixture);
  ASSERT_GT(full.size(), 1000u);
  // Truncations never crash; the ELF header alone is not enough to find
  // symbols.
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

TEST(ElfFile, ReadAtBounds) {
  auto elf = ElfFile::Open(kFixture);
  ASSERT_TRUE(elf.ok());
  EXPECT_EQ((*elf)->ReadAt(~0ull - 3, 8).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*elf)->ReadAt(0, ~0ull).status().code(),
            absl::StatusCode::kOutOfRange);
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
