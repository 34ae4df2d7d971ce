// x86-64 placement classifier.
//
// What a kernel does with a uprobe on an instruction is decided in
// arch/x86/kernel/uprobes.c, arch_uprobe_analyze_insn():
//
//   1. uprobe_init_insn() decodes the instruction with the kernel's own decoder and refuses it
//      (-ENOEXEC/-ENOTSUPP: REFUSED) when it does not decode, carries a "bad" prefix
//      (is_prefix_bad(): es/cs/ss/ds segment overrides and lock), is a masking-exception
//      instruction (mov to %ss), or its first opcode byte is not in good_insns_64 (for two-byte
//      opcodes good_2byte_insns would be consulted, but see the note at that table).
//   2. branch_setup_xol_ops() takes jmp rel8/rel32, call rel32, jcc rel8/rel32 and `prefix* 90`
//      (nop, pause) and emulates them in the trap handler (EMULATED), except that a branch with a
//      0x66 prefix is refused. Since Linux 6.16 (commit 610f6e14c29d "uprobes/x86: Add support to
//      emulate NOP instructions") any instruction whose bytes equal x86_nops[len] (len <=
//      ASM_NOP_MAX = 8, the P6 nops of arch/x86/include/asm/nops.h) is emulated too; 6.18 further
//      rewrites a probed nop5 into a call to the uprobe trampoline after the first hit (still no
//      single-step, so still EMULATED here).
//   3. push_setup_xol_ops() emulates `push reg` (50-57, or 41 50-57 for r8-r15).
//   4. Everything else is copied to the XOL slot and single-stepped (SINGLE_STEP), rip-relative
//      operands included (riprel_analyze() rewrites them through a scratch register).
//
// The kernel decides on its decoder's view of the instruction: OPCODE1 is the first opcode byte,
// which for VEX/EVEX encoded instructions is the opcode byte inside the VEX map. The classifier
// rebuilds that view from Zydis' decoding (KernelView below), including the two quirks it leads to
// (both confirmed on the 6.18 host by kernel_placement_test):
//   - two-byte opcodes are never checked against good_2byte_insns, because 0x0f itself is set in
//     good_insns_64 and uprobe_init_insn() returns on the first test;
//   - a VEX/EVEX instruction whose opcode byte is 70-7f, 90, e8, e9 or eb is taken by
//     branch_setup_xol_ops() for a jcc/nop/call/jmp and "emulated": the instruction itself never
//     runs. We report EMULATED (that is what the kernel does), say so in the reason and set
//     InsnPlacement::hazard. The same byte picks the post-step fix-ups: a VEX/EVEX opcode byte c2
//     or ea (vcmpps, vpminsw) gets those of ret/far jmp (no IP fix-up), 0f 38 9a (vfmsub132ps)
//     those of lcall; the stock profiles say SINGLE_STEP there.
//
// The xolfleet-6.1 profile (the patched kernel with boosting on) follows docs/placement.md. Its
// patch 1 fixes both quirks (a VEX/EVEX instruction is compared with the legacy opcodes as 0,
// legacy_opcode1()): VEX/EVEX instructions are never emulated there and get ordinary fix-ups.
#include "services/common/x86_classifier.h"

#include <Zydis/Zydis.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace xolfleet {
namespace {

constexpr size_t kMaxInsnLen = 15;

// ---------------------------------------------------------------------------------------------
// Stock kernel tables (arch/x86/kernel/uprobes.c, identical in 6.1 and 6.18).
// ---------------------------------------------------------------------------------------------

// good_insns_64: 1 = uprobe_init_insn() accepts this first opcode byte in a 64-bit task.
//
// Genuinely invalid opcodes in 64-bit mode:
//   06,07 formerly push/pop es; 0e formerly push cs; 16,17 formerly push/pop
//   ss; 1e,1f formerly push/pop ds; 27,2f,37,3f formerly daa/das/aaa/aas; 60,61
//   formerly pusha/popa; 62 formerly bound, now the EVEX prefix (an EVEX
//   instruction is judged by its own opcode byte); 82 redundant encoding of
//   group 1; 9a formerly call seg:ofs; ce formerly into; d4,d5 formerly
//   aam/aad; d6 undocumented salc; ea formerly jmp seg:ofs.
// Opcodes the kernel will probably never support:
//   6c-6f ins/outs, e4-e7 in/out imm, ec-ef in/out dx: SEGV in user space;
//   cc int3 and f1 int1: SIGTRAP in user space; f4 hlt, fa cli, fb sti: SEGV in
//   user space.
// Opcodes that would need work:
//   cd int N (int 0x80): the kernel's handling of user-space single-stepping is
//   fragile; cf iret.
// c4/c5 are VEX prefixes and never reach this table as opcodes.
// clang-format off
constexpr std::array<uint8_t, 256> kGoodInsns64 = {
  /*      0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f        */
  /* 00 */ 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1,
  /* 10 */ 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0,
  /* 20 */ 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0,
  /* 30 */ 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0,
  /* 40 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 50 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 60 */ 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0,
  /* 70 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 80 */ 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 90 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1,
  /* a0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* b0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* c0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0,
  /* d0 */ 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* e0 */ 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0,
  /* f0 */ 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1,
};

// good_2byte_insns: 0f xx opcodes the kernel table marks as unsupported:
//   0f 00 sldt/str/lldt/ltr/verr/verw (system), 0f 01 sgdt/sidt/... (system, and many others
//   with mod=11), 0f 05 syscall, 0f 06 clts, 0f 07 sysret, 0f 08 invd, 0f 09 wbinvd, 0f 0b ud2,
//   0f 30 wrmsr, 0f 34 sysenter, 0f 35 sysexit, 0f 37 getsec, 0f 78/79 vmread/vmwrite,
//   0f ae group 15 (fxsave, ldmxcsr, fences, ...).
// NOTE: uprobe_init_insn() tests good_insns_64[OPCODE1] first, OPCODE1 of a two-byte opcode
// is 0x0f, and good_insns_64[0x0f] is 1, so this table is never consulted for 64-bit tasks
// (nor is the three-byte case, opcode.nbytes == 3). Every decodable 0f xx instruction is
// accepted by the stock kernels; the classifier follows the code, not the intent, and only
// mentions this table in reasons. Verified on the 6.18 host (syscall and lfence single-step).
constexpr std::array<uint8_t, 256> kGood2ByteInsns = {
  /*      0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f        */
  /* 00 */ 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1,
  /* 10 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 20 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 30 */ 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 40 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 50 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 60 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 70 */ 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1,
  /* 80 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* 90 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* a0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1,
  /* b0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* c0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* d0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* e0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  /* f0 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};
// clang-format on

// Why a first opcode byte is refused (the comments above, one line each, for reasons).
const char* RefusedOpcodeWhy(uint8_t op) {
  switch (op) {
    case 0x06:
    case 0x07:
      return "formerly push/pop es, invalid in 64-bit mode";
    case 0x0e:
      return "formerly push cs, invalid in 64-bit mode";
    case 0x16:
    case 0x17:
      return "formerly push/pop ss, invalid in 64-bit mode";
    case 0x1e:
    case 0x1f:
      return "formerly push/pop ds, invalid in 64-bit mode";
    case 0x27:
    case 0x2f:
    case 0x37:
    case 0x3f:
      return "formerly daa/das/aaa/aas, invalid in 64-bit mode";
    case 0x60:
    case 0x61:
      return "formerly pusha/popa, invalid in 64-bit mode";
    case 0x62:
      return "formerly bound (EVEX prefix in 64-bit mode)";
    case 0x6c:
    case 0x6d:
    case 0x6e:
    case 0x6f:
      return "ins/outs: SEGV in user space";
    case 0x82:
      return "redundant encoding of group 1, invalid in 64-bit mode";
    case 0x9a:
      return "formerly call seg:ofs, invalid in 64-bit mode";
    case 0xcc:
      return "int3: SIGTRAP in user space";
    case 0xcd:
      return "int N: single-stepping it is not supported (fragile TF handling)";
    case 0xce:
      return "formerly into, invalid in 64-bit mode";
    case 0xcf:
      return "iret: not supported";
    case 0xd4:
    case 0xd5:
      return "formerly aam/aad, invalid in 64-bit mode";
    case 0xd6:
      return "undocumented salc, invalid in 64-bit mode";
    case 0xe4:
    case 0xe5:
    case 0xe6:
    case 0xe7:
      return "in/out imm: SEGV in user space";
    case 0xea:
      return "formerly jmp seg:ofs, invalid in 64-bit mode";
    case 0xec:
    case 0xed:
    case 0xee:
    case 0xef:
      return "in/out dx: SEGV in user space";
    case 0xf1:
      return "int1: SIGTRAP in user space";
    case 0xf4:
      return "hlt: SEGV in user space";
    case 0xfa:
      return "cli: SEGV in user space";
    case 0xfb:
      return "sti: SEGV in user space";
    default:
      return "not in good_insns_64";
  }
}

// x86_nops[1..8] for CONFIG_64BIT (arch/x86/include/asm/nops.h): the forms that 6.16+ emulates by
// exact byte comparison. Anything else (nopw with cs prefix, 9+ byte nops, `0f 1f` with a non-zero
// displacement, register forms) is not in this list.
const std::array<std::vector<uint8_t>, 9>& X86Nops() {
  static const auto* nops = new std::array<std::vector<uint8_t>, 9>{{
      {},
      {0x90},
      {0x66, 0x90},
      {0x0f, 0x1f, 0x00},
      {0x0f, 0x1f, 0x40, 0x00},
      {0x0f, 0x1f, 0x44, 0x00, 0x00},
      {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},
      {0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00},
      {0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},
  }};
  return *nops;
}

// ---------------------------------------------------------------------------------------------
// xolfleet-6.1 boosting exclusions (docs/placement.md, "Excluded from boosting"). They apply to
// legacy-encoded instructions; VEX/EVEX/XOP-encoded ones (SSE/AVX) are boostable.
// ---------------------------------------------------------------------------------------------
enum class Map : uint8_t { k1, k0F };
struct Exclusion {
  Map map;
  uint8_t lo, hi;    // opcode range, inclusive
  int8_t modrm_reg;  // -1: any; else only this ModRM.reg (group opcodes)
  const char* why;
};
// clang-format off
constexpr Exclusion kBoostExclusions[] = {
  // Control flow or IP-dependent effect: the slot's `jmp back` would be wrong or skipped.
  {Map::k1, 0x70, 0x7f, -1, "jcc rel8: control flow"},
  {Map::k1, 0xe0, 0xe3, -1, "loop/jrcxz: control flow"},
  {Map::k1, 0xe8, 0xe8, -1, "call rel32: control flow"},
  {Map::k1, 0xe9, 0xeb, -1, "jmp: control flow"},
  {Map::k1, 0x9a, 0x9a, -1, "far call: control flow"},
  {Map::k1, 0xc2, 0xc3, -1, "ret: control flow"},
  {Map::k1, 0xca, 0xcb, -1, "far ret: control flow"},
  {Map::k1, 0xcf, 0xcf, -1, "iret: control flow"},
  {Map::k1, 0xff, 0xff, 2, "call indirect: control flow"},
  {Map::k1, 0xff, 0xff, 3, "far call indirect: control flow"},
  {Map::k1, 0xff, 0xff, 4, "jmp indirect: control flow"},
  {Map::k1, 0xff, 0xff, 5, "far jmp indirect: control flow"},
  {Map::k0F, 0x80, 0x8f, -1, "jcc rel32: control flow"},
  {Map::k0F, 0x05, 0x05, -1, "syscall: leaves the return IP (the slot) in %rcx"},
  {Map::k0F, 0x07, 0x07, -1, "sysret: control flow"},
  {Map::k0F, 0x34, 0x35, -1, "sysenter/sysexit: control flow"},
  {Map::k1, 0xc7, 0xc7, 7, "xbegin: the abort target would be relative to the slot"},
  // Traps and faults on purpose.
  {Map::k1, 0xcc, 0xce, -1, "int3/int N/into: traps on purpose"},
  {Map::k1, 0xf1, 0xf1, -1, "int1: traps on purpose"},
  {Map::k0F, 0x0b, 0x0b, -1, "ud2: traps on purpose"},
  {Map::k0F, 0xb9, 0xb9, -1, "ud1: traps on purpose"},
  {Map::k0F, 0xff, 0xff, -1, "ud0: traps on purpose"},
  {Map::k1, 0x62, 0x62, -1, "bound: traps on purpose"},
  {Map::k1, 0xd6, 0xd6, -1, "salc: invalid, traps"},
  // Flags: popf could set TF inside the slot.
  {Map::k1, 0x9d, 0x9d, -1, "popf: could set TF inside the slot"},
  // Privileged, I/O and segment loads.
  {Map::k1, 0xe4, 0xe7, -1, "in/out: privileged I/O"},
  {Map::k1, 0xec, 0xef, -1, "in/out: privileged I/O"},
  {Map::k1, 0x6c, 0x6f, -1, "ins/outs: privileged I/O"},
  {Map::k1, 0xf4, 0xf4, -1, "hlt: privileged"},
  {Map::k1, 0xfa, 0xfb, -1, "cli/sti: privileged"},
  {Map::k1, 0x8e, 0x8e, -1, "mov to segment register: segment load"},
  {Map::k0F, 0x00, 0x01, -1, "system group 6/7: privileged or segment related"},
  {Map::k0F, 0xa1, 0xa1, -1, "pop fs: segment load"},
  {Map::k0F, 0xa9, 0xa9, -1, "pop gs: segment load"},
  // x87 escapes, as kprobes' can_boost().
  {Map::k1, 0xd8, 0xdf, -1, "x87 escape (as can_boost())"},
  {Map::k1, 0x9b, 0x9b, -1, "fwait (as can_boost())"},
};
// clang-format on

// ---------------------------------------------------------------------------------------------
// Decoding and the kernel decoder's view of an instruction.
// ---------------------------------------------------------------------------------------------
const ZydisDecoder& Decoder() {
  static const ZydisDecoder* decoder = [] {
    auto* d = new ZydisDecoder;
    ZydisDecoderInit(d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    return d;
  }();
  return *decoder;
}

const ZydisFormatter& Formatter() {
  static const ZydisFormatter* formatter = [] {
    auto* f = new ZydisFormatter;
    ZydisFormatterInit(f, ZYDIS_FORMATTER_STYLE_INTEL);
    return f;
  }();
  return *formatter;
}

struct Decoded {
  ZydisDecodedInstruction insn;
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
};

bool Decode(absl::Span<const uint8_t> code, Decoded* d) {
  if (code.empty()) return false;
  return ZYAN_SUCCESS(ZydisDecoderDecodeFull(&Decoder(), code.data(),
                                             std::min(code.size(), kMaxInsnLen), &d->insn, d->ops));
}

// Instruction only, no operands: what the function walkers need, and several times faster.
bool DecodeInsnOnly(absl::Span<const uint8_t> code, ZydisDecodedInstruction* in) {
  if (code.empty()) return false;
  ZydisDecoderContext ctx;
  return ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&Decoder(), &ctx, code.data(),
                                                    std::min(code.size(), kMaxInsnLen), in));
}

bool IsLegacyPrefix(uint8_t b) {
  switch (b) {
    case 0x26:
    case 0x2e:
    case 0x36:
    case 0x3e:
    case 0x64:
    case 0x65:
    case 0x66:
    case 0x67:
    case 0xf0:
    case 0xf2:
    case 0xf3:
      return true;
    default:
      return false;
  }
}

struct KernelView {
  uint8_t opc1 = 0;  // OPCODE1(insn)
  uint8_t opc2 = 0;  // OPCODE2(insn), if nbytes >= 2
  int nbytes = 1;    // insn->opcode.nbytes
  bool avx = false;  // VEX/EVEX: opcode byte is the one inside the VEX map
  bool xop = false;
  std::vector<uint8_t> prefixes;  // legacy prefix bytes, in order
  int rex = -1;                   // REX byte, -1 if none
  bool has_modrm = false;
  uint8_t mod = 0, reg = 0, rm = 0;
  int64_t imm = 0;
  bool riprel = false;  // ModRM mod=00 rm=101 (no SIB): rip-relative
  int vvvv = -1;        // VEX/EVEX vvvv, low 3 bits, un-inverted; -1 if none
};

KernelView ViewOf(const Decoded& d, absl::Span<const uint8_t> code) {
  const ZydisDecodedInstruction& in = d.insn;
  KernelView v;
  for (int i = 0; i < in.raw.prefix_count; ++i) {
    const uint8_t b = in.raw.prefixes[i].value;
    if (IsLegacyPrefix(b)) v.prefixes.push_back(b);
  }
  if (in.attributes & ZYDIS_ATTRIB_HAS_REX) {
    v.rex = 0x40 | (in.raw.rex.W << 3) | (in.raw.rex.R << 2) | (in.raw.rex.X << 1) | in.raw.rex.B;
  }
  switch (in.encoding) {
    case ZYDIS_INSTRUCTION_ENCODING_VEX:
    case ZYDIS_INSTRUCTION_ENCODING_EVEX:
    case ZYDIS_INSTRUCTION_ENCODING_MVEX: {
      v.avx = true;
      v.opc1 = in.opcode;
      v.nbytes = 1;
      // vvvv as riprel_analyze() reads it (inverted, low 3 bits): from byte 2 of the prefix. That
      // is where VEX3 (c4) and EVEX (62) keep it; for VEX2 (c5) it is the opcode byte (vvvv is in
      // byte 1), which only moves the choice of scratch register: VEX2 encodes map 0f only, whose
      // vvvv is never a general-purpose register.
      size_t off = 0;  // the VEX/EVEX prefix follows the legacy prefixes (no
                       // REX before it)
      while (off < code.size() && IsLegacyPrefix(code[off])) ++off;
      if (off + 2 < code.size()) v.vvvv = ((~code[off + 2]) >> 3) & 0x7;
      break;
    }
    case ZYDIS_INSTRUCTION_ENCODING_XOP:
      // The kernel decoder has no XOP support: it sees opcode 8f (pop r/m).
      v.xop = true;
      v.opc1 = 0x8f;
      break;
    case ZYDIS_INSTRUCTION_ENCODING_3DNOW:
      v.opc1 = 0x0f;
      v.opc2 = 0x0f;
      v.nbytes = 2;
      break;
    default:
      switch (in.opcode_map) {
        case ZYDIS_OPCODE_MAP_0F:
          v.opc1 = 0x0f, v.opc2 = in.opcode, v.nbytes = 2;
          break;
        case ZYDIS_OPCODE_MAP_0F38:
          v.opc1 = 0x0f, v.opc2 = 0x38, v.nbytes = 3;
          break;
        case ZYDIS_OPCODE_MAP_0F3A:
          v.opc1 = 0x0f, v.opc2 = 0x3a, v.nbytes = 3;
          break;
        default:
          v.opc1 = in.opcode, v.nbytes = 1;
      }
  }
  if (in.attributes & ZYDIS_ATTRIB_HAS_MODRM) {
    v.has_modrm = true;
    v.mod = in.raw.modrm.mod;
    v.reg = in.raw.modrm.reg;
    v.rm = in.raw.modrm.rm;
    v.riprel = v.mod == 0 && v.rm == 5;
  }
  if (in.raw.imm[0].size) v.imm = in.raw.imm[0].value.s;
  return v;
}

bool HasPrefix(const KernelView& v, uint8_t p) {
  return std::find(v.prefixes.begin(), v.prefixes.end(), p) != v.prefixes.end();
}

std::string Hex(uint8_t b) { return absl::StrFormat("%02x", b); }

std::string OpcodeText(const KernelView& v) {
  if (v.avx) return absl::StrCat("VEX/EVEX opcode ", Hex(v.opc1));
  if (v.nbytes == 1) return absl::StrCat("opcode ", Hex(v.opc1));
  if (v.nbytes == 2) return absl::StrCat("opcode 0f ", Hex(v.opc2));
  return absl::StrCat("opcode 0f ", Hex(v.opc2), " xx");
}

bool IsCondJmpOpcode(uint8_t op) { return op >= 0x70 && op <= 0x7f; }

struct Decision {
  Placement placement;
  std::string reason;
  std::string hazard;  // see InsnPlacement::hazard
};

constexpr char kVexSkipped[] =
    "the stock kernel takes this VEX/EVEX instruction's opcode byte for a branch/nop and emulates "
    "that instead: the instruction itself never runs";

// uprobe_init_insn(): a prefix, instruction or opcode the stock kernels refuse.
std::optional<Decision> RefusedByInitInsn(const KernelView& v) {
  // is_prefix_bad().
  for (uint8_t p : v.prefixes) {
    const char* name = nullptr;
    switch (p) {
      case 0x26:
        name = "es";
        break;
      case 0x2e:
        name = "cs";
        break;
      case 0x36:
        name = "ss";
        break;
      case 0x3e:
        name = "ds (also notrack)";
        break;
      case 0xf0:
        name = "lock";
        break;
    }
    if (name) {
      return Decision{Placement::kRefused,
                      absl::StrCat("prefix ", Hex(p), " (", name,
                                   ") is refused by uprobe_init_insn() (is_prefix_bad)")};
    }
  }
  // insn_masking_exception(): mov to %ss (pop %ss is invalid in 64-bit mode).
  if (!v.avx && v.nbytes == 1 && v.opc1 == 0x8e && v.reg == 2) {
    return Decision{Placement::kRefused, "mov to %ss masks exceptions (insn_masking_exception)"};
  }
  // good_insns_64 / good_2byte_insns.
  if (!kGoodInsns64[v.opc1]) {
    bool ok = false;
    if (v.nbytes == 2 && kGood2ByteInsns[v.opc2]) ok = true;  // unreachable for 64-bit tasks
    if (!ok) {
      return Decision{
          Placement::kRefused,
          absl::StrCat(OpcodeText(v), " is not in good_insns_64: ", RefusedOpcodeWhy(v.opc1))};
    }
  }
  return std::nullopt;
}

// 6.16+: exact x86_nops[len] forms are emulated.
std::optional<Decision> EmulatedNop(absl::Span<const uint8_t> bytes, bool linux_6_16) {
  if (linux_6_16 && bytes.size() <= 8 && X86Nops()[bytes.size()].size() == bytes.size() &&
      std::equal(bytes.begin(), bytes.end(), X86Nops()[bytes.size()].begin())) {
    std::string reason = absl::StrCat("x86_nops[", bytes.size(), "]: nop emulated (6.16+)");
    if (bytes.size() == 5) absl::StrAppend(&reason, "; 6.18 then optimizes nop5 into a call");
    return Decision{Placement::kEmulated, reason};
  }
  return std::nullopt;
}

// branch_setup_xol_ops(): jumps, calls, conditional jumps and nops, judged by `opc1`.
std::optional<Decision> EmulatedBranch(const KernelView& v, uint8_t opc1) {
  const char* avx_warning = v.avx ? " -- stock kernel quirk: the VEX/EVEX opcode byte is taken for "
                                    "a branch/nop, so the instruction is skipped, not executed"
                                  : "";
  bool branch = false;
  const char* what = "";
  switch (opc1) {
    case 0xeb:
      branch = true, what = "jmp rel8";
      break;
    case 0xe9:
      branch = true, what = "jmp rel32";
      break;
    case 0x90: {
      std::string reason = "prefix* + 0x90 (nop/pause) emulated as a jump to the next insn";
      if (v.rex >= 0 && (v.rex & 1)) absl::StrAppend(&reason, " (REX.B: really xchg with r8)");
      absl::StrAppend(&reason, avx_warning);
      std::string hazard;
      if (v.avx) {
        hazard = kVexSkipped;
      } else if (v.rex >= 0 && (v.rex & 1)) {
        hazard = "xchg with r8 is emulated as a nop: the exchange never happens";
      }
      return Decision{Placement::kEmulated, reason, hazard};
    }
    case 0xe8:
      branch = true, what = "call rel32";
      break;
    case 0x0f:
      if (v.nbytes == 2 && IsCondJmpOpcode(static_cast<uint8_t>(v.opc2 - 0x10))) {
        branch = true, what = "jcc rel32";
      }
      break;
    default:
      if (IsCondJmpOpcode(opc1)) branch = true, what = "jcc rel8";
  }
  if (!branch) return std::nullopt;
  if (HasPrefix(v, 0x66)) {
    return Decision{Placement::kRefused,
                    absl::StrCat(what, " with a 0x66 prefix is refused by branch_setup_xol_ops()")};
  }
  return Decision{Placement::kEmulated,
                  absl::StrCat(what, " emulated by branch_setup_xol_ops()", avx_warning),
                  v.avx ? kVexSkipped : ""};
}

// push_setup_xol_ops(): push of a register, judged by `opc1`.
std::optional<Decision> EmulatedPush(const KernelView& v, absl::Span<const uint8_t> bytes,
                                     uint8_t opc1) {
  if (opc1 >= 0x50 && opc1 <= 0x57 && bytes.size() <= 2) {
    if (bytes.size() == 1) return Decision{Placement::kEmulated, "push reg emulated"};
    if (v.rex == 0x41 && v.prefixes.empty()) {
      return Decision{Placement::kEmulated, "push r8-r15 (REX 0x41) emulated"};
    }
  }
  return std::nullopt;
}

// default_xol_ops: everything else is single-stepped out of line.
Decision SingleStepped(const KernelView& v) {
  std::string reason = "single-stepped out of line (default_xol_ops)";
  if (v.nbytes >= 2 && v.opc1 == 0x0f && !kGood2ByteInsns[v.opc2] && v.nbytes == 2) {
    absl::StrAppend(&reason, "; 0f ", Hex(v.opc2),
                    " is unmarked in good_2byte_insns but that table is never consulted");
  }
  if (v.riprel) absl::StrAppend(&reason, "; rip-relative operand rewritten via scratch register");
  if (v.xop) absl::StrAppend(&reason, "; XOP: the kernel decoder sees 8f (pop r/m)");
  std::string hazard;
  if (!v.avx && v.nbytes == 1 && v.opc1 == 0x9c) {
    hazard =
        "pushf is single-stepped with the trap flag set, so the pushed flags carry TF; a later "
        "popf turns on single-stepping and the process dies of SIGTRAP (observed on the 6.18 host)";
  }
  if (!v.avx && v.nbytes == 2 && v.opc2 == 0x05) {
    hazard =
        "single-stepping syscall out of line kills the probed process (SIGSEGV after the hit, "
        "observed on the 6.18 host)";
  }
  return {Placement::kSingleStep, reason, hazard};
}

// The stock kernels: uprobe_init_insn(), branch_setup_xol_ops(), push_setup_xol_ops(),
// default_xol_ops, in the kernel's order. `vex_fixed`: the patched kernel, whose patch 1 makes
// branch_setup_xol_ops() see opcode 0 for a VEX/EVEX instruction.
Decision ClassifyStock(const KernelView& v, absl::Span<const uint8_t> bytes, bool linux_6_16,
                       bool vex_fixed = false) {
  if (std::optional<Decision> d = RefusedByInitInsn(v)) return *std::move(d);
  if (std::optional<Decision> d = EmulatedNop(bytes, linux_6_16)) return *std::move(d);
  const uint8_t opc1 = vex_fixed && v.avx ? 0 : v.opc1;
  if (std::optional<Decision> d = EmulatedBranch(v, opc1)) return *std::move(d);
  if (std::optional<Decision> d = EmulatedPush(v, bytes, opc1)) return *std::move(d);
  return SingleStepped(v);
}

const Exclusion* BoostExclusion(const KernelView& v) {
  if (v.avx || v.xop) return nullptr;
  if (v.nbytes > 2) return nullptr;
  const Map map = v.nbytes == 1 ? Map::k1 : Map::k0F;
  const uint8_t op = v.nbytes == 1 ? v.opc1 : v.opc2;
  for (const Exclusion& e : kBoostExclusions) {
    if (e.map != map || op < e.lo || op > e.hi) continue;
    if (e.modrm_reg >= 0 && (!v.has_modrm || v.reg != e.modrm_reg)) continue;
    return &e;
  }
  return nullptr;
}

Decision BoostOrKeep(const KernelView& v) {
  const std::string keep = "single-stepped (not boostable): ";
  // The series' patch 1 gives a VEX/EVEX instruction the fix-ups of an
  // ordinary one (FIX_IP only), whatever its opcode byte: all of them qualify.
  if (HasPrefix(v, 0x67)) return {Placement::kSingleStep, keep + "address-size prefix 0x67"};
  if (HasPrefix(v, 0x2e)) return {Placement::kSingleStep, keep + "cs prefix 0x2e"};
  if (const Exclusion* e = BoostExclusion(v)) return {Placement::kSingleStep, keep + e->why};
  if (v.nbytes == 1 && !v.avx && (HasPrefix(v, 0xf2) || HasPrefix(v, 0xf3)) &&
      ((v.opc1 >= 0xa4 && v.opc1 <= 0xa7) || (v.opc1 >= 0xaa && v.opc1 <= 0xaf))) {
    return {Placement::kBoosted,
            "boosted rep string instruction: one hit per execution, an interrupted rep resumes at "
            "the probe address with its partial count"};
  }
  if (!v.riprel) return {Placement::kBoosted, "boosted: insn; jmp back from the per-CPU slot"};
  // riprel_analyze()'s scratch register: %rsi unless ModRM.reg or VEX.vvvv
  // names 6, then %rdi unless one names 7, else %rbx. The slot program sets it
  // and restores it with movabs immediates: no stack, so %rsp users qualify.
  const bool names_rsi = v.reg == 6 || v.vvvv == 6;
  const bool names_rdi = v.reg == 7 || v.vvvv == 7;
  const char* scratch = "%rbx";
  if (!names_rsi) {
    scratch = "%rsi";
  } else if (!names_rdi) {
    scratch = "%rdi";
  }
  return {Placement::kBoostedRipRel, absl::StrCat("boosted rip-relative via scratch ", scratch)};
}

// Returns and indirect branches the series emulates (docs/placement.md):
// ret, ret imm16, jmp r/m64 (ff /4), call r/m64 (ff /2), legacy encoding,
// without an operand-size (0x66) or address-size (0x67) prefix.
bool SeriesEmulates(const KernelView& v) {
  if (v.avx || v.xop || v.nbytes != 1) return false;
  if (HasPrefix(v, 0x66) || HasPrefix(v, 0x67)) return false;
  if (v.opc1 == 0xc2 || v.opc1 == 0xc3) return true;
  return v.opc1 == 0xff && v.has_modrm && (v.reg == 2 || v.reg == 4);
}

// xolfleet-6.1: the linux-6.1 answer, with SINGLE_STEP sites emulated or
// boosted where the rules allow.
Decision ClassifyXolfleet(const KernelView& v, absl::Span<const uint8_t> bytes) {
  Decision stock = ClassifyStock(v, bytes, /*linux_6_16=*/false, /*vex_fixed=*/true);
  if (stock.placement != Placement::kSingleStep) return stock;
  if (SeriesEmulates(v)) {
    return {Placement::kEmulated, v.opc1 == 0xff
                                      ? "emulated indirect branch: target read (and return address "
                                        "pushed) in the trap handler"
                                      : "emulated return: target popped in the trap handler"};
  }
  Decision boosted = BoostOrKeep(v);
  if (boosted.placement == Placement::kSingleStep) boosted.hazard = stock.hazard;
  return boosted;
}

std::string Disassemble(const Decoded& d) {
  char buf[256];
  if (!ZYAN_SUCCESS(ZydisFormatterFormatInstruction(&Formatter(), &d.insn, d.ops,
                                                    d.insn.operand_count_visible, buf, sizeof(buf),
                                                    ZYDIS_RUNTIME_ADDRESS_NONE, nullptr))) {
    return "";
  }
  return buf;
}

// First byte after legacy prefixes and REX, for reasons on undecodable input.
int FirstOpcodeByte(absl::Span<const uint8_t> code) {
  size_t i = 0;
  while (i < code.size() && i < kMaxInsnLen && IsLegacyPrefix(code[i])) ++i;
  if (i < code.size() && (code[i] & 0xf0) == 0x40) ++i;
  return i < code.size() ? code[i] : -1;
}

}  // namespace

InsnPlacement ClassifyInstruction(absl::Span<const uint8_t> code, KernelProfile profile) {
  InsnPlacement out;
  Decoded d;
  if (!Decode(code, &d)) {
    out.placement = Placement::kRefused;
    const int op = FirstOpcodeByte(code);
    if (code.empty()) {
      out.reason = "no instruction bytes";
    } else if (op >= 0 && !kGoodInsns64[op]) {
      out.reason = absl::StrCat("undecodable: opcode ", Hex(op), " ",
                                RefusedOpcodeWhy(static_cast<uint8_t>(op)));
    } else {
      out.reason = "undecodable as x86-64 (truncated or invalid encoding)";
    }
    out.bytes.assign(code.begin(), code.begin() + std::min(code.size(), kMaxInsnLen));
    return out;
  }
  out.length = d.insn.length;
  out.bytes.assign(code.begin(), code.begin() + d.insn.length);
  out.disassembly = Disassemble(d);
  const absl::Span<const uint8_t> bytes(out.bytes);
  const KernelView v = ViewOf(d, bytes);
  Decision dec;
  switch (profile) {
    case KernelProfile::kLinux61:
      dec = ClassifyStock(v, bytes, /*linux_6_16=*/false);
      break;
    case KernelProfile::kLinux618:
      dec = ClassifyStock(v, bytes, /*linux_6_16=*/true);
      break;
    case KernelProfile::kXolfleet61:
      dec = ClassifyXolfleet(v, bytes);
      break;
    case KernelProfile::kXolfleet61NoBoost:
      dec = ClassifyStock(v, bytes, /*linux_6_16=*/false, /*vex_fixed=*/true);
      break;
  }
  out.placement = dec.placement;
  out.reason = std::move(dec.reason);
  out.hazard = std::move(dec.hazard);
  return out;
}

std::vector<uint32_t> InstructionBoundaries(absl::Span<const uint8_t> function) {
  std::vector<uint32_t> out;
  size_t off = 0;
  ZydisDecodedInstruction in;
  while (off < function.size()) {
    if (!DecodeInsnOnly(function.subspan(off), &in)) break;
    out.push_back(static_cast<uint32_t>(off));
    off += in.length;
  }
  return out;
}

std::vector<uint32_t> BranchTargetsWithin(absl::Span<const uint8_t> function) {
  std::vector<uint32_t> out;
  size_t off = 0;
  ZydisDecodedInstruction in;
  while (off < function.size()) {
    if (!DecodeInsnOnly(function.subspan(off), &in)) break;
    if ((in.attributes & ZYDIS_ATTRIB_IS_RELATIVE) && in.raw.imm[0].is_relative) {
      const int64_t target = static_cast<int64_t>(off) + in.length + in.raw.imm[0].value.s;
      if (target >= 0 && target < static_cast<int64_t>(function.size())) {
        out.push_back(static_cast<uint32_t>(target));
      }
    }
    off += in.length;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace xolfleet
