#include "services/common/x86_classifier.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xolfleet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<uint8_t> Hex(absl::string_view text) {
  std::vector<uint8_t> out;
  for (absl::string_view tok : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    int v = 0;
    EXPECT_TRUE(absl::SimpleHexAtoi(tok, &v)) << tok;
    out.push_back(static_cast<uint8_t>(v));
  }
  return out;
}

struct Row {
  int line;
  std::vector<uint8_t> bytes;
  std::string text;
  std::string description;
  Placement expected[4];  // the placement columns, in the file's order
};

std::vector<Row> LoadCorpus() {
  std::ifstream in("tests/corpus/placement_corpus.tsv");
  EXPECT_TRUE(in.good()) << "cannot open tests/corpus/placement_corpus.tsv";
  std::vector<Row> rows;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    EXPECT_EQ(f.size(), 6u) << "line " << n << ": " << line;
    if (f.size() != 6) continue;
    Row r;
    r.line = n;
    r.text = f[0];
    r.bytes = Hex(f[0]);
    r.description = f[1];
    for (int i = 0; i < 4; ++i) {
      absl::StatusOr<Placement> p = ParsePlacement(f[2 + i]);
      EXPECT_TRUE(p.ok()) << "line " << n << ": " << p.status();
      r.expected[i] = p.value_or(Placement::kRefused);
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

TEST(PlacementCorpus, EveryRowUnderEveryProfile) {
  const std::vector<Row> rows = LoadCorpus();
  ASSERT_GE(rows.size(), 90u);
  const KernelProfile profiles[] = {KernelProfile::kLinux61, KernelProfile::kLinux618,
                                    KernelProfile::kXolfleet61, KernelProfile::kXolfleet61NoBoost};
  for (const Row& r : rows) {
    for (int i = 0; i < 4; ++i) {
      InsnPlacement p = ClassifyInstruction(r.bytes, profiles[i]);
      EXPECT_EQ(PlacementName(p.placement), PlacementName(r.expected[i]))
          << "line " << r.line << " [" << r.text << "] " << r.description << " under "
          << ProfileName(profiles[i]) << ": " << p.disassembly << " -- " << p.reason;
      EXPECT_FALSE(p.reason.empty());
      if (p.length != 0) {
        // Every decodable corpus row is exactly one instruction.
        EXPECT_EQ(p.length, r.bytes.size()) << "line " << r.line << " " << p.disassembly;
      }
    }
  }
}

TEST(Classifier, ReadsOnlyTheFirstInstruction) {
  const std::vector<uint8_t> code = {0x55, 0x48, 0x89, 0xe5, 0xc3};
  InsnPlacement p = ClassifyInstruction(code, KernelProfile::kLinux61);
  EXPECT_EQ(p.placement, Placement::kEmulated);
  EXPECT_EQ(p.length, 1);
  EXPECT_THAT(p.bytes, ElementsAre(0x55));
  EXPECT_EQ(p.disassembly, "push rbp");
}

TEST(Classifier, EmptyAndTruncatedInputAreRefused) {
  for (KernelProfile prof : AllProfiles()) {
    EXPECT_EQ(ClassifyInstruction({}, prof).placement, Placement::kRefused);
    const std::vector<uint8_t> truncated = {0x48, 0x8b, 0x05, 0x10};
    InsnPlacement p = ClassifyInstruction(truncated, prof);
    EXPECT_EQ(p.placement, Placement::kRefused);
    EXPECT_THAT(p.reason, HasSubstr("undecodable"));
    EXPECT_EQ(p.length, 0);
  }
}

TEST(Classifier, AllShortJccAreEmulatedAndRefusedWith66) {
  for (int op = 0x70; op <= 0x7f; ++op) {
    const std::vector<uint8_t> jcc = {static_cast<uint8_t>(op), 0x10};
    const std::vector<uint8_t> jcc66 = {0x66, static_cast<uint8_t>(op), 0x10};
    const std::vector<uint8_t> near = {0x0f, static_cast<uint8_t>(op + 0x10), 0, 1, 0, 0};
    for (KernelProfile prof : AllProfiles()) {
      EXPECT_EQ(ClassifyInstruction(jcc, prof).placement, Placement::kEmulated) << op;
      EXPECT_EQ(ClassifyInstruction(near, prof).placement, Placement::kEmulated) << op;
      EXPECT_EQ(ClassifyInstruction(jcc66, prof).placement, Placement::kRefused) << op;
    }
  }
}

TEST(Classifier, PushRegisterForms) {
  for (int op = 0x50; op <= 0x57; ++op) {
    const std::vector<uint8_t> push = {static_cast<uint8_t>(op)};
    const std::vector<uint8_t> push_r = {0x41, static_cast<uint8_t>(op)};
    const std::vector<uint8_t> push_w = {0x49, static_cast<uint8_t>(op)};  // REX.WB
    for (KernelProfile prof : AllProfiles()) {
      EXPECT_EQ(ClassifyInstruction(push, prof).placement, Placement::kEmulated);
      EXPECT_EQ(ClassifyInstruction(push_r, prof).placement, Placement::kEmulated);
    }
    EXPECT_EQ(ClassifyInstruction(push_w, KernelProfile::kLinux61).placement,
              Placement::kSingleStep);
    EXPECT_EQ(ClassifyInstruction(push_w, KernelProfile::kXolfleet61).placement,
              Placement::kBoosted);
  }
}

TEST(Classifier, BadPrefixesRefuseAnything) {
  const std::vector<uint8_t> base = {0x48, 0x01, 0xd8};  // add rax,rbx
  for (uint8_t prefix : {0x26, 0x2e, 0x36, 0x3e, 0xf0}) {
    std::vector<uint8_t> code = {prefix};
    code.insert(code.end(), base.begin(), base.end());
    for (KernelProfile prof : AllProfiles()) {
      InsnPlacement p = ClassifyInstruction(code, prof);
      if (prefix == 0xf0) {
        // lock add with a register destination is undecodable (#UD): refused either way.
        EXPECT_EQ(p.placement, Placement::kRefused);
        continue;
      }
      EXPECT_EQ(p.placement, Placement::kRefused) << int(prefix) << " " << p.reason;
      EXPECT_THAT(p.reason, HasSubstr("prefix"));
    }
  }
  // fs/gs are fine.
  for (uint8_t prefix : {0x64, 0x65}) {
    const std::vector<uint8_t> code = {prefix, 0x48, 0x8b, 0x00};
    EXPECT_EQ(ClassifyInstruction(code, KernelProfile::kLinux61).placement, Placement::kSingleStep);
  }
}

TEST(Classifier, NopEmulationIsExactBytesOn618Only) {
  // Every x86_nops form is emulated on 6.18; flipping any byte of the longer ones is not.
  const std::vector<std::vector<uint8_t>> nops = {{0x0f, 0x1f, 0x00},
                                                  {0x0f, 0x1f, 0x40, 0x00},
                                                  {0x0f, 0x1f, 0x44, 0x00, 0x00},
                                                  {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},
                                                  {0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00},
                                                  {0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00}};
  for (const auto& nop : nops) {
    EXPECT_EQ(ClassifyInstruction(nop, KernelProfile::kLinux618).placement, Placement::kEmulated);
    EXPECT_EQ(ClassifyInstruction(nop, KernelProfile::kLinux61).placement, Placement::kSingleStep);
    std::vector<uint8_t> other = nop;
    other.back() = 0x01;  // non-zero displacement / different ModRM
    InsnPlacement p = ClassifyInstruction(other, KernelProfile::kLinux618);
    if (p.length == other.size()) EXPECT_EQ(p.placement, Placement::kSingleStep);
  }
}

TEST(Classifier, RefusedOneByteOpcodesAreRefusedEverywhere) {
  // Opcodes good_insns_64 excludes that still decode in 64-bit mode.
  for (uint8_t op : {0x6c, 0x6d, 0x6e, 0x6f, 0xcc, 0xcf, 0xe4, 0xe5, 0xe6, 0xe7, 0xec, 0xed, 0xee,
                     0xef, 0xf1, 0xf4, 0xfa, 0xfb}) {
    const std::vector<uint8_t> code = {op, 0x00, 0x00};
    for (KernelProfile prof : AllProfiles()) {
      InsnPlacement p = ClassifyInstruction(code, prof);
      EXPECT_EQ(p.placement, Placement::kRefused) << std::hex << int(op) << " " << p.reason;
      EXPECT_THAT(p.reason, HasSubstr("good_insns_64"));
    }
  }
}

TEST(Classifier, XolfleetNeverBoostsWhatStockEmulatesOrRefuses) {
  // Exhaustive over one- and two-byte opcodes followed by a fixed tail.
  for (int a = 0; a < 256; ++a) {
    for (int b : {-1, 0x00, 0x05, 0x1f, 0x80, 0xae, 0xc0, 0xe8}) {
      std::vector<uint8_t> code;
      if (b >= 0) code = {0x0f, static_cast<uint8_t>(b)};  // two-byte opcode 0f b ...
      code.push_back(static_cast<uint8_t>(a));
      code.insert(code.end(), {0x05, 0x10, 0, 0, 0, 1, 2, 3, 4});
      InsnPlacement stock = ClassifyInstruction(code, KernelProfile::kLinux61);
      InsnPlacement x = ClassifyInstruction(code, KernelProfile::kXolfleet61);
      EXPECT_EQ(stock.length, x.length);
      if (stock.placement != Placement::kSingleStep) {
        EXPECT_EQ(stock.placement, x.placement) << stock.disassembly;
      }
    }
  }
}

TEST(Classifier, HazardsWhenTheKernelAcceptsButChangesTheProgram) {
  const std::vector<uint8_t> syscall = {0x0f, 0x05};
  const std::vector<uint8_t> vpcmpeqb = {0xc5, 0xf9, 0x74, 0xc0};
  const std::vector<uint8_t> xchg_r8 = {0x41, 0x90};
  const std::vector<uint8_t> nop = {0x90};
  const std::vector<uint8_t> pause = {0xf3, 0x90};
  for (KernelProfile prof : AllProfiles()) {
    EXPECT_THAT(ClassifyInstruction(syscall, prof).hazard, HasSubstr("SIGSEGV"));
    if (prof == KernelProfile::kXolfleet61 || prof == KernelProfile::kXolfleet61NoBoost) {
      EXPECT_THAT(ClassifyInstruction(vpcmpeqb, prof).hazard, IsEmpty());  // patch 1: runs
    } else {
      EXPECT_THAT(ClassifyInstruction(vpcmpeqb, prof).hazard, HasSubstr("never runs"));
    }
    EXPECT_THAT(ClassifyInstruction(xchg_r8, prof).hazard, HasSubstr("r8"));
    EXPECT_THAT(ClassifyInstruction(nop, prof).hazard, IsEmpty());
    EXPECT_THAT(ClassifyInstruction(pause, prof).hazard, IsEmpty());
    const std::vector<uint8_t> pushf = {0x9c};
    if (prof == KernelProfile::kXolfleet61) {
      EXPECT_THAT(ClassifyInstruction(pushf, prof).hazard,
                  IsEmpty());  // boosted, no TF
    } else {
      EXPECT_THAT(ClassifyInstruction(pushf, prof).hazard, HasSubstr("SIGTRAP"));
    }
  }
}

// Stock kernels take a VEX/EVEX opcode byte for a legacy opcode: branches are "emulated" (the
// instruction never runs), and c2/0f38 9d get ret's/popf's fix-ups. The patched kernel's patch 1
// compares VEX/EVEX instructions with the legacy opcodes as 0: ordinary instructions, boosted.
TEST(Classifier, VexOpcodeBytesAreNotLegacyOpcodesOnThePatchedKernel) {
  const std::vector<std::vector<uint8_t>> skipped = {
      {0xc5, 0xf9, 0xe8, 0xc1},              // vpsubsb: e8 = call rel32
      {0xc5, 0xf9, 0x74, 0xc1},              // vpcmpeqb: 74 = je
      {0xc5, 0xfd, 0x7f, 0x07},              // vmovdqa store: 7f = jg
      {0xc5, 0xf8, 0x77},                    // vzeroupper: 77 = ja
      {0xc5, 0xf8, 0x90, 0xca},              // kmovw: 90 = nop
      {0x62, 0xf1, 0x7d, 0x08, 0x74, 0xc1},  // vpcmpeqb (EVEX)
  };
  for (const auto& code : skipped) {
    for (KernelProfile prof : {KernelProfile::kLinux61, KernelProfile::kLinux618}) {
      InsnPlacement p = ClassifyInstruction(code, prof);
      EXPECT_EQ(p.placement, Placement::kEmulated) << p.disassembly;
      EXPECT_THAT(p.hazard, HasSubstr("never runs")) << p.disassembly;
    }
    InsnPlacement x = ClassifyInstruction(code, KernelProfile::kXolfleet61);
    EXPECT_EQ(x.placement, Placement::kBoosted) << x.disassembly << ": " << x.reason;
    EXPECT_THAT(x.hazard, IsEmpty()) << x.disassembly;
    // Boosting off: the same kernel single-steps it, and it runs.
    InsnPlacement off = ClassifyInstruction(code, KernelProfile::kXolfleet61NoBoost);
    EXPECT_EQ(off.placement, Placement::kSingleStep) << off.disassembly << ": " << off.reason;
    EXPECT_THAT(off.hazard, IsEmpty()) << off.disassembly;
  }
  const std::vector<std::vector<uint8_t>> fixups = {
      {0xc5, 0xf8, 0xc2, 0xc1, 0x00},  // vcmpps: c2 = ret imm16
      {0xc4, 0xe2, 0x79, 0x9d, 0xc1},  // vfnmadd132ss: 0f38 9d, 9d = popf
  };
  for (const auto& code : fixups) {
    EXPECT_EQ(ClassifyInstruction(code, KernelProfile::kLinux61).placement, Placement::kSingleStep);
    InsnPlacement x = ClassifyInstruction(code, KernelProfile::kXolfleet61);
    EXPECT_EQ(x.placement, Placement::kBoosted) << x.disassembly << ": " << x.reason;
  }
}

TEST(Classifier, RipRelScratchRegister) {
  // mov rax,[rip+0x10]: %rsi is free.
  const std::vector<uint8_t> mov_rax = {0x48, 0x8b, 0x05, 0x10, 0, 0, 0};
  // mov rsi,[rip+0x10]: ModRM.reg names %rsi, so %rdi.
  const std::vector<uint8_t> mov_rsi = {0x48, 0x8b, 0x35, 0x10, 0, 0, 0};
  // vaddps xmm0,xmm6,[rip+0x10] (3-byte VEX): VEX.vvvv names register 6, so %rdi.
  const std::vector<uint8_t> vaddps = {0xc4, 0xe1, 0x48, 0x58, 0x05, 0x10, 0, 0, 0};
  // The same with a 2-byte VEX: riprel_analyze() reads vvvv from byte 2, here the
  // opcode byte 58 (vvvv "4"), so %rsi.
  const std::vector<uint8_t> vaddps2 = {0xc5, 0xc8, 0x58, 0x05, 0x10, 0, 0, 0};
  // vaddps xmm6,xmm7,[rip+0x10] (3-byte VEX) names both 6 (ModRM.reg) and 7
  // (VEX.vvvv): riprel_analyze() takes %rbx, restored like the others.
  const std::vector<uint8_t> both = {0xc4, 0xe1, 0x40, 0x58, 0x35, 0x10, 0, 0, 0};
  // The slot program writes no stack: %rsp as a destination, a source or an
  // implicit operand does not keep a rip-relative instruction single-stepped.
  const std::vector<std::vector<uint8_t>> rsp_users = {
      {0x48, 0x8b, 0x25, 0x10, 0, 0, 0},                    // mov rsp,[rip+0x10]
      {0xf2, 0x48, 0x0f, 0x2c, 0x25, 0x10, 0, 0, 0},        // cvttsd2si rsp,[rip+0x10]
      {0xc4, 0xe1, 0xfb, 0x2c, 0x25, 0x10, 0, 0, 0},        // vcvttsd2si rsp (VEX)
      {0x62, 0xf1, 0xff, 0x08, 0x2c, 0x25, 0x10, 0, 0, 0},  // vcvttsd2si rsp (EVEX)
      {0x66, 0x48, 0x0f, 0x38, 0xf6, 0x25, 0x10, 0, 0, 0},  // adcx rsp,[rip+0x10]
      {0x48, 0x0f, 0x38, 0xf9, 0x25, 0x10, 0, 0, 0},        // movdiri [rip+0x10],rsp
      {0x66, 0x0f, 0x38, 0xf8, 0x25, 0x10, 0, 0, 0},        // movdir64b rsp,[rip+0x10]
      {0xff, 0x35, 0x10, 0, 0, 0},                          // push [rip+0x10]
      {0x8f, 0x05, 0x10, 0, 0, 0},                          // pop [rip+0x10]
  };
  const KernelProfile x = KernelProfile::kXolfleet61;
  EXPECT_THAT(ClassifyInstruction(mov_rax, x).reason, HasSubstr("%rsi"));
  EXPECT_THAT(ClassifyInstruction(mov_rsi, x).reason, HasSubstr("%rdi"));
  InsnPlacement v = ClassifyInstruction(vaddps, x);
  EXPECT_EQ(v.placement, Placement::kBoostedRipRel) << v.disassembly;
  EXPECT_THAT(v.reason, HasSubstr("%rdi")) << v.disassembly;
  InsnPlacement v2 = ClassifyInstruction(vaddps2, x);
  EXPECT_EQ(v2.placement, Placement::kBoostedRipRel) << v2.disassembly;
  EXPECT_THAT(v2.reason, HasSubstr("%rsi")) << v2.disassembly;
  InsnPlacement b = ClassifyInstruction(both, x);
  EXPECT_EQ(b.placement, Placement::kBoostedRipRel) << b.disassembly << " " << b.reason;
  EXPECT_THAT(b.reason, HasSubstr("%rbx")) << b.disassembly;
  for (const std::vector<uint8_t>& insn : rsp_users) {
    InsnPlacement p = ClassifyInstruction(insn, x);
    EXPECT_EQ(p.placement, Placement::kBoostedRipRel) << p.disassembly << " " << p.reason;
    EXPECT_EQ(ClassifyInstruction(insn, KernelProfile::kLinux61).placement, Placement::kSingleStep)
        << p.disassembly;
  }
}

TEST(Boundaries, LinearDecodeFromStart) {
  // endbr64; push rbp; mov rbp,rsp; je +2; nop; nop; pop rbp; ret
  const std::vector<uint8_t> fn = {0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89,
                                   0xe5, 0x74, 0x02, 0x90, 0x90, 0x5d, 0xc3};
  EXPECT_THAT(InstructionBoundaries(fn), ElementsAre(0, 4, 5, 8, 10, 11, 12, 13));
  EXPECT_THAT(BranchTargetsWithin(fn), ElementsAre(12));
}

TEST(Boundaries, StopsAtFirstUndecodableByte) {
  const std::vector<uint8_t> fn = {0x55, 0x06, 0x90};
  EXPECT_THAT(InstructionBoundaries(fn), ElementsAre(0));
  EXPECT_THAT(InstructionBoundaries({}), IsEmpty());
}

TEST(Boundaries, BranchTargetsOnlyInside) {
  // jmp -2 (to itself, offset 0); call +0x100 (outside); jne rel32 back to 0; loop to the end of
  // the function (offset 15 == size: outside); jmp +1 (to 18, inside).
  const std::vector<uint8_t> fn = {0xeb, 0xfe, 0xe8, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x85, 0xf3,
                                   0xff, 0xff, 0xff, 0xe2, 0x00, 0xeb, 0x01, 0x90, 0xc3};
  EXPECT_THAT(BranchTargetsWithin(fn), ElementsAre(0, 15, 18));
}

TEST(Profiles, NamesRoundTrip) {
  for (KernelProfile p : AllProfiles()) {
    absl::StatusOr<KernelProfile> back = ParseProfile(ProfileName(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, p);
  }
  EXPECT_FALSE(ParseProfile("linux-5.4").ok());
  for (Placement p : {Placement::kEmulated, Placement::kBoosted, Placement::kBoostedRipRel,
                      Placement::kSingleStep, Placement::kRefused}) {
    absl::StatusOr<Placement> back = ParsePlacement(PlacementName(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, p);
  }
  EXPECT_FALSE(ParsePlacement("FAST").ok());
}

}  // namespace
}  // namespace xolfleet
