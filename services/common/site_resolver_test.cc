#include "services/common/site_resolver.h"

#include <iostream>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xolfleet {
namespace {

using ::testing::HasSubstr;

constexpr char kFixture[] = "services/common/elf_fixture";

class SiteResolverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto elf = ElfFile::Open(kFixture);
    ASSERT_TRUE(elf.ok()) << elf.status();
    elf_ = std::move(*elf);
  }
  SiteRequest Req(const std::string& symbol, uint64_t offset = 0, bool relocate = false) {
    SiteRequest r;
    r.binary_path = kFixture;
    r.symbol = symbol;
    r.offset = offset;
    r.allow_relocate = relocate;
    return r;
  }
  std::unique_ptr<ElfFile> elf_;
};

TEST_F(SiteResolverTest, ResolvesSymbolEntry) {
  auto site = ResolveSite(*elf_, Req("fx_endbr_push"), KernelProfile::kLinux618);
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_EQ(site->symbol, "fx_endbr_push");
  EXPECT_EQ(site->symbol_offset, 0u);
  EXPECT_EQ(site->insn.disassembly, "endbr64");
  EXPECT_EQ(site->insn.placement, Placement::kSingleStep);
  EXPECT_FALSE(site->relocated);
  EXPECT_TRUE(site->relocation_note.empty());
  EXPECT_NE(site->vaddr, 0u);
}

TEST_F(SiteResolverTest, MidInstructionOffsetIsRefusedWithNearestBoundaries) {
  auto site = ResolveSite(*elf_, Req("fx_endbr_push", 2), KernelProfile::kLinux618);
  ASSERT_EQ(site.status().code(), absl::StatusCode::kInvalidArgument) << site.status();
  EXPECT_THAT(site.status().message(), HasSubstr("not an instruction boundary"));
  EXPECT_THAT(site.status().message(), HasSubstr("+0x0 and +0x4"));
  EXPECT_THAT(site.status().message(), HasSubstr("endbr64"));
  EXPECT_THAT(site.status().message(), HasSubstr(kFixture));
  // A boundary is fine.
  auto ok = ResolveSite(*elf_, Req("fx_endbr_push", 4), KernelProfile::kLinux618);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->insn.disassembly, "push rbp");
  EXPECT_EQ(ok->insn.placement, Placement::kEmulated);
}

TEST_F(SiteResolverTest, OffsetPastSymbolOrFile) {
  auto past = ResolveSite(*elf_, Req("fx_plain", 100), KernelProfile::kLinux61);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(past.status().message(), HasSubstr("past the end of fx_plain"));
  auto file = ResolveSite(*elf_, Req("", 1ull << 40), KernelProfile::kLinux61);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SiteResolverTest, UndecodableMiddleCannotBeProven) {
  // push rbp (0), 06 (1, undecodable), pop rbp (2): +2 is after the undecodable byte.
  auto site = ResolveSite(*elf_, Req("fx_bad_middle", 2), KernelProfile::kLinux61);
  EXPECT_EQ(site.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(site.status().message(), HasSubstr("undecodable"));
}

TEST_F(SiteResolverTest, FileOffsetFindsContainingFunction) {
  auto sym = elf_->FindSymbol("fx_endbr_push");
  ASSERT_TRUE(sym.ok());
  SiteRequest r = Req("", sym->file_offset + 4);
  auto site = ResolveSite(*elf_, r, KernelProfile::kLinux61);
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_EQ(site->symbol, "fx_endbr_push");
  EXPECT_EQ(site->symbol_offset, 4u);
  r.offset = sym->file_offset + 1;
  EXPECT_EQ(ResolveSite(*elf_, r, KernelProfile::kLinux61).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Issue 9: a probe writes int3 into the page, so on data it corrupts the program.
TEST_F(SiteResolverTest, OnlyCodeCanBeASite) {
  auto rodata = elf_->FindSymbol("fx_rodata");
  ASSERT_TRUE(rodata.ok()) << rodata.status();
  auto raw = elf_->FindSymbol("fx_raw_code");
  ASSERT_TRUE(raw.ok()) << raw.status();
  for (bool confirmed : {false, true}) {
    SCOPED_TRACE(confirmed ? "confirmed" : "not confirmed");
    for (uint64_t off : {uint64_t{0}, uint64_t{0x10}, rodata->file_offset}) {
      SiteRequest r = Req("", off);
      r.confirm_raw_offset = confirmed;
      auto site = ResolveSite(*elf_, r, KernelProfile::kLinux618);
      EXPECT_EQ(site.status().code(), absl::StatusCode::kInvalidArgument)
          << "offset " << off << ": " << site.status();
      EXPECT_THAT(site.status().message(), HasSubstr("not code"));
    }
    // A data symbol named as the site is not a function.
    EXPECT_EQ(ResolveSite(*elf_, Req("fx_rodata"), KernelProfile::kLinux618).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  // Code outside every function: only as a confirmed raw offset.
  SiteRequest r = Req("", raw->file_offset);
  auto unconfirmed = ResolveSite(*elf_, r, KernelProfile::kLinux618);
  EXPECT_EQ(unconfirmed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unconfirmed.status().message(), HasSubstr("confirm"));
  r.confirm_raw_offset = true;
  auto confirmed = ResolveSite(*elf_, r, KernelProfile::kLinux618);
  ASSERT_TRUE(confirmed.ok()) << confirmed.status();
  EXPECT_EQ(confirmed->insn.disassembly, "push rbp");
  EXPECT_TRUE(confirmed->symbol.empty());
  // Offsets inside functions need no confirmation (FileOffsetFindsContainingFunction).
  EXPECT_TRUE(CheckSiteIsCode(*elf_, elf_->FindSymbol("fx_plain")->file_offset, true, false).ok());
}

TEST_F(SiteResolverTest, BuildIdGuard) {
  SiteRequest r = Req("fx_plain");
  r.build_id = elf_->build_id();
  EXPECT_TRUE(ResolveSite(*elf_, r, KernelProfile::kLinux61).ok());
  r.build_id = "deadbeef";
  auto bad = ResolveSite(*elf_, r, KernelProfile::kLinux61);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad.status().message(), HasSubstr("deadbeef"));
  EXPECT_THAT(bad.status().message(), HasSubstr(elf_->build_id()));
}

TEST_F(SiteResolverTest, MissingFileAndSymbol) {
  EXPECT_EQ(ElfFile::Open("/nonexistent/bin").status().code(), absl::StatusCode::kNotFound);
  auto missing = ResolveSite(*elf_, Req("fx_nope"), KernelProfile::kLinux61);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto data = ResolveSite(*elf_, Req("fx_data"), KernelProfile::kLinux61);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SiteResolverTest, RelocatesPastEndbr64WhenCheaper) {
  auto site = ResolveSite(*elf_, Req("fx_endbr_push", 0, true), KernelProfile::kLinux618);
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_TRUE(site->relocated) << site->relocation_note;
  EXPECT_EQ(site->symbol_offset, 4u);
  EXPECT_EQ(site->file_offset, site->requested_file_offset + 4);
  EXPECT_EQ(site->insn.placement, Placement::kEmulated);
  EXPECT_THAT(site->relocation_note, HasSubstr("endbr64"));
  EXPECT_THAT(site->relocation_note, HasSubstr("moved"));
}

TEST_F(SiteResolverTest, RelocatesPastEndbr64AndNop) {
  auto site = ResolveSite(*elf_, Req("fx_endbr_nop_push", 0, true), KernelProfile::kLinux61);
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_TRUE(site->relocated) << site->relocation_note;
  EXPECT_EQ(site->symbol_offset, 8u);
  EXPECT_EQ(site->insn.disassembly, "push rbp");
}

TEST_F(SiteResolverTest, DoesNotRelocateOntoABranchTarget) {
  auto site = ResolveSite(*elf_, Req("fx_endbr_loop", 0, true), KernelProfile::kLinux618);
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_FALSE(site->relocated);
  EXPECT_EQ(site->symbol_offset, 0u);
  EXPECT_THAT(site->relocation_note, HasSubstr("branch"));
}

TEST_F(SiteResolverTest, DoesNotRelocateOntoAHazard) {
  auto site = ResolveSite(*elf_, Req("fx_endbr_vex", 0, true), KernelProfile::kLinux618);
  ASSERT_TRUE(site.ok()) << site.status();
  EXPECT_FALSE(site->relocated);
  EXPECT_THAT(site->relocation_note, HasSubstr("hazard"));
}

TEST_F(SiteResolverTest, DoesNotRelocateWhenNotCheaperOrNothingToSkip) {
  auto mov = ResolveSite(*elf_, Req("fx_endbr_mov", 0, true), KernelProfile::kLinux618);
  ASSERT_TRUE(mov.ok());
  EXPECT_FALSE(mov->relocated);
  EXPECT_THAT(mov->relocation_note, HasSubstr("not cheaper"));
  auto plain = ResolveSite(*elf_, Req("fx_plain", 0, true), KernelProfile::kLinux618);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->relocated);
  EXPECT_THAT(plain->relocation_note, HasSubstr("not endbr64"));
  auto inner = ResolveSite(*elf_, Req("fx_endbr_push", 4, true), KernelProfile::kLinux618);
  ASSERT_TRUE(inner.ok());
  EXPECT_FALSE(inner->relocated);
  EXPECT_THAT(inner->relocation_note, HasSubstr("function-entry"));
}

TEST_F(SiteResolverTest, ClassifyAllFunctionEntries) {
  std::vector<ResolvedSite> sites = ClassifyAllFunctionEntries(*elf_, KernelProfile::kLinux618);
  ASSERT_GE(sites.size(), 6u);
  bool saw = false;
  for (const ResolvedSite& s : sites) {
    EXPECT_FALSE(s.insn.reason.empty()) << s.symbol;
    if (s.symbol == "fx_plain") {
      saw = true;
      EXPECT_EQ(s.insn.placement, Placement::kEmulated);
    }
  }
  EXPECT_TRUE(saw);
}

TEST(SiteResolverLibc, AllFunctionEntriesClassify) {
  auto elf = ElfFile::Open("/lib/x86_64-linux-gnu/libc.so.6");
  ASSERT_TRUE(elf.ok()) << elf.status();
  for (KernelProfile p : AllProfiles()) {
    std::map<Placement, int> counts;
    for (const ResolvedSite& s : ClassifyAllFunctionEntries(**elf, p)) {
      ++counts[s.insn.placement];
    }
    int total = 0;
    std::cout << ProfileName(p) << ":";
    for (auto [pl, n] : counts) {
      std::cout << " " << PlacementName(pl) << "=" << n;
      total += n;
    }
    std::cout << "\n";
    EXPECT_GT(total, 1000);
  }
}

}  // namespace
}  // namespace xolfleet
