/*
 * Probe sites for kernel_placement_test: one small function per instruction class. Each
 * xkpt_site_<name> label marks the instruction the test puts a uprobe on; xkpt_fn_<name> is
 * what the workload calls. Every function is safe to run with or without the probe, and
 * whatever the kernel does with the site (emulate, single-step, skip).
 */
#define FN(name)                  \
  .globl xkpt_fn_##name;          \
  .type xkpt_fn_##name, @function; \
  .p2align 4;                     \
  xkpt_fn_##name:
#define SITE(name) .globl xkpt_site_##name; xkpt_site_##name:
#define END(name) .size xkpt_fn_##name, . - xkpt_fn_##name

  .data
  .p2align 3
  .globl xkpt_data
xkpt_data:
  .quad 0
  .globl xkpt_data2
xkpt_data2:
  .quad 0

  .text
FN(nop)        SITE(nop)        nop; ret; END(nop)
FN(nop2)       SITE(nop2)       .byte 0x66, 0x90; ret; END(nop2)
FN(pause)      SITE(pause)      .byte 0xf3, 0x90; ret; END(pause)
FN(xchg_r8)    SITE(xchg_r8)    .byte 0x41, 0x90; ret; END(xchg_r8)
FN(nop3)       SITE(nop3)       .byte 0x0f, 0x1f, 0x00; ret; END(nop3)
FN(nop4)       SITE(nop4)       .byte 0x0f, 0x1f, 0x40, 0x00; ret; END(nop4)
FN(nop5)       SITE(nop5)       .byte 0x0f, 0x1f, 0x44, 0x00, 0x00; ret; END(nop5)
FN(nop6)       SITE(nop6)       .byte 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00; ret; END(nop6)
FN(nop7)       SITE(nop7)       .byte 0x0f, 0x1f, 0x80, 0, 0, 0, 0; ret; END(nop7)
FN(nop8)       SITE(nop8)       .byte 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0; ret; END(nop8)
FN(nopw9)      SITE(nopw9)      .byte 0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0; ret; END(nopw9)
FN(nopl_disp)  SITE(nopl_disp)  .byte 0x0f, 0x1f, 0x40, 0x08; ret; END(nopl_disp)
FN(cs_nopw)    SITE(cs_nopw)    .byte 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0; ret; END(cs_nopw)

FN(push_rbp)   SITE(push_rbp)   push %rbp; pop %rbp; ret; END(push_rbp)
FN(push_r12)   SITE(push_r12)   push %r12; pop %r12; ret; END(push_r12)
FN(push_imm)   SITE(push_imm)   .byte 0x6a, 0x01; add $8, %rsp; ret; END(push_imm)
FN(pop_rbp)    push %rbp; SITE(pop_rbp) pop %rbp; ret; END(pop_rbp)

/* Branches: a wrong emulation lands on ud2/int3. */
FN(jmp8)       SITE(jmp8)       .byte 0xeb, 0x05; ud2; ud2; int3; ret; END(jmp8)
/* call +0x100 and jne +0x100, as in the corpus: the target is a ret 0x100 bytes on. */
FN(call32)     SITE(call32)     .byte 0xe8, 0x00, 0x01, 0x00, 0x00; ret; .fill 0xff, 1, 0xcc; ret
               END(call32)
FN(je8)        xor %eax, %eax; SITE(je8) .byte 0x74, 0x05; ud2; ud2; int3; ret; END(je8)
FN(jne32)      xor %eax, %eax; SITE(jne32) .byte 0x0f, 0x85, 0x00, 0x01, 0x00, 0x00; ret
               .fill 0xff, 1, 0xcc; ret; END(jne32)
FN(ret)        SITE(ret)        ret; END(ret)
FN(call_rax)   lea 1f(%rip), %rax; SITE(call_rax) call *%rax; ret; 1: ret; END(call_rax)

FN(mov_rbp_rsp) push %rbp; SITE(mov_rbp_rsp) mov %rsp, %rbp; pop %rbp; ret; END(mov_rbp_rsp)
FN(lea_rsp)    SITE(lea_rsp)    lea 8(%rsp), %rax; ret; END(lea_rsp)
FN(add)        SITE(add)        add %rbx, %rax; ret; END(add)
FN(test)       SITE(test)       test %rax, %rax; ret; END(test)
FN(cmp)        SITE(cmp)        cmp %rbx, %rax; ret; END(cmp)
/* rip+0x10 as in the corpus: reads (or computes) an address in the int3 padding. */
FN(load_rip)   SITE(load_rip)   .byte 0x48, 0x8b, 0x05, 0x10, 0, 0, 0; ret; .fill 0x20, 1, 0xcc
               END(load_rip)
FN(store_rip)  SITE(store_rip)  mov %rax, xkpt_data(%rip); ret; END(store_rip)
FN(lea_rip)    SITE(lea_rip)    .byte 0x48, 0x8d, 0x05, 0x10, 0, 0, 0; ret; END(lea_rip)
/* Refused, so it never runs under the probe; without one it would write to .text, so the
   test never calls it unprobed either (RunInChild only runs accepted probes). */
FN(lock_add)   SITE(lock_add)   .byte 0xf0, 0x48, 0x83, 0x05, 0x10, 0, 0, 0, 0x01; ret
               .fill 0x20, 1, 0xcc; END(lock_add)

FN(syscall)    mov $39, %eax; SITE(syscall) syscall; ret; END(syscall)
FN(lfence)     SITE(lfence)     lfence; ret; END(lfence)
FN(endbr64)    SITE(endbr64)    endbr64; ret; END(endbr64)

FN(pxor)       SITE(pxor)       pxor %xmm0, %xmm0; ret; END(pxor)
FN(vaddps)     SITE(vaddps)     vaddps %xmm2, %xmm1, %xmm0; ret; END(vaddps)
FN(vpxor)      SITE(vpxor)      vpxor %xmm0, %xmm0, %xmm0; ret; END(vpxor)
FN(vzeroupper) SITE(vzeroupper) vzeroupper; ret; END(vzeroupper)
/* Returns in %eax the low dword of %xmm0 after vpcmpeqb: -1 when it ran, 0 when skipped. */
FN(vpcmpeqb)   vpxor %xmm0, %xmm0, %xmm0; SITE(vpcmpeqb) vpcmpeqb %xmm0, %xmm0, %xmm0
               vmovd %xmm0, %eax; ret; END(vpcmpeqb)

/* More classes, each matching a corpus row byte for byte. */
FN(nop_rexw)   SITE(nop_rexw)   .byte 0x48, 0x90; ret; END(nop_rexw)
FN(nop_reg)    SITE(nop_reg)    .byte 0x0f, 0x1f, 0xc0; ret; END(nop_reg)
FN(push_rexw)  SITE(push_rexw)  .byte 0x48, 0x55; pop %rbp; ret; END(push_rexw)
FN(push16)     SITE(push16)     .byte 0x66, 0x55; .byte 0x66, 0x5d; ret; END(push16)
FN(push_rsp8)  SITE(push_rsp8)  .byte 0xff, 0x74, 0x24, 0x08; add $8, %rsp; ret; END(push_rsp8)
FN(push_rip)   SITE(push_rip)   pushq xkpt_data(%rip); add $8, %rsp; ret; END(push_rip)
FN(pushf)      SITE(pushf)      pushf; add $8, %rsp; ret; END(pushf)
/* pushf single-stepped stores TF=1 in the pushed flags; this popf then traps (hazard). */
FN(pushf_popf) SITE(pushf_popf) pushf; popf; ret; END(pushf_popf)
FN(leave)      push %rbp; mov %rsp, %rbp; SITE(leave) leave; ret; END(leave)
FN(enter)      SITE(enter)      .byte 0xc8, 0x10, 0x00, 0x00; leave; ret; END(enter)
/* jcc not taken (ZF=0) so a wrongly executed 66/2e-prefixed jcc cannot go astray. */
FN(je66)       mov $1, %eax; test %eax, %eax; SITE(je66) .byte 0x66, 0x74, 0x05; nop; ret; END(je66)
FN(je_cs)      mov $1, %eax; test %eax, %eax; SITE(je_cs) .byte 0x2e, 0x74, 0x05; nop; ret; END(je_cs)
FN(bnd_jmp)    SITE(bnd_jmp)    .byte 0xf2, 0xe9; .long 2; ud2; ret; END(bnd_jmp)
FN(jrcxz)      SITE(jrcxz)      .byte 0xe3, 0x00; ret; END(jrcxz)
FN(rep_ret)    SITE(rep_ret)    .byte 0xf3, 0xc3; END(rep_ret)
FN(mov_fs)     SITE(mov_fs)     .byte 0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0; ret; END(mov_fs)
FN(movsd_rip)  SITE(movsd_rip)  movsd xkpt_data(%rip), %xmm0; ret; END(movsd_rip)
FN(lock_cmpxchg) lea xkpt_data(%rip), %rdi; SITE(lock_cmpxchg) lock cmpxchg %rcx, (%rdi); ret
               END(lock_cmpxchg)
FN(cpuid)      push %rbx; xor %eax, %eax; SITE(cpuid) cpuid; pop %rbx; ret; END(cpuid)
FN(rdtsc)      SITE(rdtsc)      rdtsc; ret; END(rdtsc)
FN(fxch)       SITE(fxch)       fxch %st(1); ret; END(fxch)
FN(fwait)      SITE(fwait)      fwait; ret; END(fwait)
FN(rep_stosq)  xor %ecx, %ecx; lea xkpt_data(%rip), %rdi; SITE(rep_stosq) rep stosq; ret
               END(rep_stosq)
FN(movsq)      lea xkpt_data(%rip), %rsi; lea xkpt_data2(%rip), %rdi; SITE(movsq) movsq; ret
               END(movsq)
FN(vmovdqa)    SITE(vmovdqa)    .byte 0xc5, 0xfd, 0x6f, 0xc1; vzeroupper; ret; END(vmovdqa)
FN(evex_vaddps) SITE(evex_vaddps) .byte 0x62, 0xf1, 0x7c, 0x48, 0x58, 0xc1; vzeroupper; ret
               END(evex_vaddps)

  .section .note.GNU-stack, "", @progbits
