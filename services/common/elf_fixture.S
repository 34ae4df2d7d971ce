/*
 * Test binary for elf_file_test and site_resolver_test: functions with known first
 * instructions and branch shapes. Linked with --export-dynamic so that a stripped copy
 * still has them in .dynsym.
 */
#define FN(name) .globl name; .type name, @function; .p2align 4; name:
#define END(name) .size name, . - name

  .text
/* endbr64; push rbp: relocatable under linux-6.18 (single-step -> emulated). */
FN(fx_endbr_push)   endbr64; push %rbp; mov %rsp, %rbp; pop %rbp; ret; END(fx_endbr_push)
/* Same entry, but a loop jumps back to the push: moving the probe would add hits. */
FN(fx_endbr_loop)   endbr64; 1: push %rbp; pop %rbp; dec %edi; jnz 1b; ret; END(fx_endbr_loop)
/* No endbr64: nothing to skip. */
FN(fx_plain)        push %rbp; pop %rbp; ret; END(fx_plain)
/* endbr64 then a single-stepped mov: not cheaper under linux-6.18. */
FN(fx_endbr_mov)    endbr64; mov %rdi, %rax; ret; END(fx_endbr_mov)
/* endbr64; nop4; push: skips both. */
FN(fx_endbr_nop_push) endbr64; .byte 0x0f, 0x1f, 0x40, 0x00; push %rbp; pop %rbp; ret
                    END(fx_endbr_nop_push)
/* endbr64 then vpcmpeqb: "emulated" by stock kernels (VEX opcode 74 taken for je), i.e.
   skipped: cheaper, but a hazard, so the probe must not move there. */
FN(fx_endbr_vex)    endbr64; vpcmpeqb %xmm0, %xmm0, %xmm0; ret; END(fx_endbr_vex)
/* A function with an undecodable byte in the middle. */
FN(fx_bad_middle)   push %rbp; .byte 0x06; pop %rbp; ret; END(fx_bad_middle)
/* Alias at the same address (functions are deduplicated by address). */
  .globl fx_alias_long_name; .type fx_alias_long_name, @function
  .set fx_alias_long_name, fx_plain; .size fx_alias_long_name, 3

/* Code outside every function symbol (a bare label: no type, no size): probed only as a
   confirmed raw offset. */
  .p2align 4
  .globl fx_raw_code
fx_raw_code: push %rbp; pop %rbp; ret

/* Read-only data: never probeable (a breakpoint here would corrupt the string). */
  .section .rodata
  .globl fx_rodata; .type fx_rodata, @object
fx_rodata: .asciz "(GNU coreutils)"; .size fx_rodata, . - fx_rodata

  .data
  .globl fx_data; .type fx_data, @object
fx_data: .quad 1; .size fx_data, 8

  .section .note.GNU-stack, "", @progbits
