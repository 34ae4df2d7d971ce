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
FN(call32)     SITE(call32)     .byte 0xe8; .long 1; ret; ret; END(call32)
FN(je8)        xor %eax, %eax; SITE(je8) .byte 0x74, 0x02; ud2; ret; END(je8)
FN(jne32)      xor %eax, %eax; SITE(jne32) .byte 0x0f, 0x85; .long 2; nop; nop; ret; END(jne32)
FN(ret)        SITE(ret)        ret; END(ret)
FN(call_rax)   lea 1f(%rip), %rax; SITE(call_rax) call *%rax; ret; 1: ret; END(call_rax)

FN(mov_rbp_rsp) push %rbp; SITE(mov_rbp_rsp) mov %rsp, %rbp; pop %rbp; ret; END(mov_rbp_rsp)
FN(lea_rsp)    SITE(lea_rsp)    lea 8(%rsp), %rax; ret; END(lea_rsp)
FN(add)        SITE(add)        add %rbx, %rax; ret; END(add)
FN(test)       SITE(test)       test %rax, %rax; ret; END(test)
FN(cmp)        SITE(cmp)        cmp %rbx, %rax; ret; END(cmp)
FN(load_rip)   SITE(load_rip)   mov xkpt_data(%rip), %rax; ret; END(load_rip)
FN(store_rip)  SITE(store_rip)  mov %rax, xkpt_data(%rip); ret; END(store_rip)
FN(lea_rip)    SITE(lea_rip)    lea xkpt_data(%rip), %rax; ret; END(lea_rip)
FN(lock_add)   SITE(lock_add)   lock addq $1, xkpt_data(%rip); ret; END(lock_add)

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

  .section .note.GNU-stack, "", @progbits
