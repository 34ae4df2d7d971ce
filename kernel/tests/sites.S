/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Probe-site corpus for the in-guest tests: one site per instruction class.
 * Every probed instruction has a global label s_<name>; the expected
 * placement of each (docs/placement.md) is in sites.h.  Functions follow the
 * SysV ABI and are called from xoltest.c.
 */
#define FN(name) .globl name; .type name, @function; name:
#define SITE(name) .globl name; name:

	.data
	.balign 16
	.globl g_vec, g_ro, g_sum, g_tmp, g_spsave
g_vec:	.long 1, 2, 3, 4
g_ro:	.quad 0x1234
g_sum:	.quad 0
g_tmp:	.quad 0
g_spsave: .quad 0
g_spld:	.quad 0
g_spdbl: .quad 0
	.globl g_jtarget, g_ctarget, g_jtab
g_jtarget: .quad t_jr
g_ctarget: .quad t_callee
g_jtab:	.quad t_j0, t_j1

	.text
/* ---- BOOSTED --------------------------------------------------------- */
FN(f_endbr)				/* x + 1 */
SITE(s_endbr)	endbr64
	lea 1(%rdi), %rax
	ret
FN(f_mov)				/* x + 3 */
SITE(s_mov)	mov %rdi, %rax
	add $3, %rax
	ret
FN(f_load)				/* *p */
SITE(s_load)	mov (%rdi), %rax
	ret
FN(f_store)				/* *p = v */
SITE(s_store)	mov %rsi, (%rdi)
	ret
FN(f_alu)				/* x * y */
	mov %rdi, %rax
SITE(s_alu)	imul %rsi, %rax
	ret
FN(f_cmp)				/* x < y (flags cross the jump back) */
	xor %eax, %eax
SITE(s_cmp)	cmp %rsi, %rdi
	setl %al
	ret
FN(f_test)				/* (x & 4) != 0 */
	xor %eax, %eax
SITE(s_test)	test $4, %dil
	setnz %al
	ret
FN(f_lea)				/* x + 2y + 8 */
SITE(s_lea)	lea 8(%rdi,%rsi,2), %rax
	ret
FN(f_sse)				/* p[0..3] += q[0..3] (int32) */
SITE(s_sse_load) movdqu (%rdi), %xmm0
	movdqu (%rsi), %xmm1
SITE(s_sse_add)	paddd %xmm1, %xmm0
	movdqu %xmm0, (%rdi)
	ret
FN(f_pushm)				/* *p, through push r/m */
SITE(s_pushm)	push (%rdi)
	pop %rax
	ret
FN(f_popm)				/* *p = 0x5a via pop r/m, returns it */
	push $0x5a
SITE(s_popm)	pop (%rdi)
	mov (%rdi), %rax
	ret
FN(f_div)				/* x / y, unsigned; y = 0 raises #DE */
	mov %rdi, %rax
	xor %edx, %edx
SITE(s_div)	div %rsi
	ret
FN(f_fault)				/* *p: p = 0x10 raises #PF */
SITE(s_fault)	mov (%rdi), %rax
	ret

/* ---- BOOSTED_RIPREL ---------------------------------------------------- */
FN(f_rload)				/* g_ro */
SITE(s_rload)	mov g_ro(%rip), %rax
	ret
FN(f_rstore)				/* g_tmp = x; returns g_tmp */
SITE(s_rstore)	mov %rdi, g_tmp(%rip)
	mov g_tmp(%rip), %rax
	ret
FN(f_rrmw)				/* g_sum += x */
SITE(s_rrmw)	add %rdi, g_sum(%rip)
	ret
FN(f_rlea)				/* &g_ro */
SITE(s_rlea)	lea g_ro(%rip), %rax
	ret
FN(f_rsse)				/* p[0..3] = g_vec + p (int32) */
	movdqu (%rdi), %xmm0
SITE(s_rsse)	paddd g_vec(%rip), %xmm0
	movdqu %xmm0, (%rdi)
	ret
FN(f_rcmp)				/* g_ro > x */
	xor %eax, %eax
SITE(s_rcmp)	cmp %rdi, g_ro(%rip)
	setg %al
	ret
FN(f_rrsi)				/* g_ro + x, %rsi named: scratch is %rdi */
	mov %rdi, %rax
SITE(s_rrsi)	mov g_ro(%rip), %rsi
	add %rsi, %rax
	ret
/* %rsp as an operand: the slot program writes no stack, so these are boosted */
FN(f_rpush)				/* g_ro, push rip-relative */
SITE(s_rpush)	push g_ro(%rip)
	pop %rax
	ret
FN(f_rsp)				/* stores %rsp rip-relative, returns 7 */
SITE(s_rsp)	mov %rsp, g_spsave(%rip)
	mov $7, %eax
	ret
FN(f_rspld)				/* x + 4, %rsp reloaded from g_spld */
	mov %rsp, g_spld(%rip)
SITE(s_rspld)	mov g_spld(%rip), %rsp
	lea 4(%rdi), %rax
	ret
FN(f_cvtrsp)				/* x + 5, %rsp converted back from g_spdbl */
	cvtsi2sdq %rsp, %xmm0
	movsd %xmm0, g_spdbl(%rip)
SITE(s_cvtrsp)	cvttsd2si g_spdbl(%rip), %rsp
	lea 5(%rdi), %rax
	ret
/* long call_on_stack(long (*fn)(long), long arg, void *top): fn(arg), %rsp = top */
FN(call_on_stack)
	push %rbp
	mov %rsp, %rbp
	mov %rdi, %rax
	mov %rsi, %rdi
	mov %rdx, %rsp
	call *%rax
	mov %rbp, %rsp
	pop %rbp
	ret

/* ---- SINGLE_STEP -------------------------------------------------------- */
FN(f_popf)				/* x */
	pushf
SITE(s_popf)	popf
	mov %rdi, %rax
	ret
FN(f_rep)				/* memcpy(d, s, n) */
	mov %rdx, %rcx
SITE(s_rep)	rep movsb
	ret
FN(f_x87)				/* x, after an x87 instruction */
SITE(s_x87)	fld1
	fstp %st(0)
	mov %rdi, %rax
	ret

/* ---- EMULATED ----------------------------------------------------------- */
FN(f_nop)				/* x + 2 */
SITE(s_nop)	nop
	lea 2(%rdi), %rax
	ret
FN(f_pushbp)				/* x */
SITE(s_pushbp)	push %rbp
	mov %rdi, %rax
	pop %rbp
	ret
FN(f_jmp)				/* x */
SITE(s_jmp)	jmp 1f
	ud2
1:	mov %rdi, %rax
	ret
FN(f_jcc)				/* x ? x + 1 : 0 */
	mov %rdi, %rax
	test %rdi, %rdi
SITE(s_jcc)	jz 1f
	add $1, %rax
1:	ret
FN(f_call)				/* x + 3 */
	sub $8, %rsp
SITE(s_call)	call f_mov
	add $8, %rsp
	ret

/* ---- EMULATED by the series: returns and indirect branches -------------- */
/*
 * Each result depends on the path taken, on the flags across the branch and
 * on what the branch left on the stack (return address pushed, bytes popped),
 * so a wrong target, push or %rsp shows in the result.  t_callee returns
 * x + 21 and, in %rdx, the return address it was called with.
 */
FN(t_callee)
	lea 21(%rdi), %rax
	mov (%rsp), %rdx
	ret
FN(f_ret)				/* 2(x + 5) + (x < 100) */
	call 2f
	setc %dl
	movzbl %dl, %edx
	lea (%rdx,%rax,2), %rax
	ret
2:	lea 5(%rdi), %rax
	cmp $100, %rdi
SITE(s_ret)	ret
FN(f_retimm)				/* x + 16, + imbalance of %rsp * 1000 */
	mov %rsp, %r8
	push $9
	push $7
	call 2f
	sub %rsp, %r8
	imul $1000, %r8, %r8
	add %r8, %rax
	ret
2:	mov 8(%rsp), %rax
	add 16(%rsp), %rax
	add %rdi, %rax
SITE(s_retimm)	ret $16
FN(f_repret)				/* x ^ 0x55 */
	call 2f
	ret
2:	mov %rdi, %rax
	xor $0x55, %rax
SITE(s_repret)	repz ret
FN(f_jmpreg)				/* 2x + (x < y) */
	lea 1f(%rip), %rax
	cmp %rsi, %rdi
SITE(s_jmpreg)	jmp *%rax
	ud2
1:	setl %al
	movzbl %al, %eax
	lea (%rax,%rdi,2), %rax
	ret
FN(f_jmpmem)				/* jmp *(p): x + 11 at t_jm */
SITE(s_jmpmem)	jmp *(%rsi)
	ud2
FN(t_jm)
	lea 11(%rdi), %rax
	ret
FN(f_jmprip)				/* x + 13 */
SITE(s_jmprip)	jmp *g_jtarget(%rip)
	ud2
FN(t_jr)
	lea 13(%rdi), %rax
	ret
FN(f_jmpsib)				/* jump table: i ? x + 19 : x + 17 */
	lea g_jtab(%rip), %rdx
	and $1, %rsi
SITE(s_jmpsib)	jmp *(%rdx,%rsi,8)
	ud2
FN(t_j0)
	lea 17(%rdi), %rax
	ret
FN(t_j1)
	lea 19(%rdi), %rax
	ret
FN(f_callreg)				/* 2(x + 21) + (x < y); +1000 if bad ret addr */
	lea t_callee(%rip), %rax
	cmp %rsi, %rdi
SITE(s_callreg)	call *%rax
1:	setl %cl
	movzbl %cl, %ecx
	lea (%rcx,%rax,2), %rax
	lea 1b(%rip), %rcx
	cmp %rcx, %rdx
	je 2f
	add $1000, %rax
2:	ret
FN(f_callr11)				/* x + 21; +1000 if bad ret addr */
	lea t_callee(%rip), %r11
SITE(s_callr11)	call *%r11
1:	lea 1b(%rip), %rcx
	cmp %rcx, %rdx
	je 2f
	add $1000, %rax
2:	ret
FN(f_callmem)				/* call *(p): x + 21; +1000 if bad ret addr */
SITE(s_callmem)	call *(%rsi)
1:	lea 1b(%rip), %rcx
	cmp %rcx, %rdx
	je 2f
	add $1000, %rax
2:	ret
FN(f_callrip)				/* x + 21; +1000 if bad ret addr */
SITE(s_callrip)	call *g_ctarget(%rip)
1:	lea 1b(%rip), %rcx
	cmp %rcx, %rdx
	je 2f
	add $1000, %rax
2:	ret
FN(f_callsp)				/* call *(%rsp): old %rsp addresses the target */
	lea t_callee(%rip), %rax
	push %rax
SITE(s_callsp)	call *(%rsp)
1:	pop %rcx
	lea 1b(%rip), %rcx
	cmp %rcx, %rdx
	je 2f
	add $1000, %rax
2:	ret
FN(f_callfs)				/* call *%fs:(off): through a TLS pointer */
SITE(s_callfs)	call *%fs:(%rsi)
1:	lea 1b(%rip), %rcx
	cmp %rcx, %rdx
	je 2f
	add $1000, %rax
2:	ret
/* Fault cases: the same signal as unprobed (xoltest.c compares) */
FN(f_jmpbad)				/* jmp *target */
SITE(s_jmpbad)	jmp *%rsi
FN(f_callbad)				/* call *target */
SITE(s_callbad)	call *%rsi
	ret
FN(f_retbad)				/* ret with %rsp = sp */
	mov %rdi, %rsp
SITE(s_retbad)	ret
FN(f_callbadsp)				/* call t_callee with %rsp = sp */
	mov %rdi, %rsp
SITE(s_callbadsp) call *%rsi
	ud2

/* ---- BOOSTED rep string instructions ------------------------------------ */
FN(f_repstos)				/* memset(d, c, n) */
	mov %rsi, %rax
	mov %rdx, %rcx
SITE(s_repstosx) rep stosb
	ret
FN(f_repcmps)				/* n - remaining count of repe cmpsb(a, b, n) */
	mov %rdx, %rcx
	cmp %rcx, %rcx			/* ZF set: an empty rep leaves the count */
SITE(s_repcmps)	repe cmpsb
	sub %rcx, %rdx
	mov %rdx, %rax
	ret

/* ---- VEX: stock 6.1 took their opcode bytes for legacy ones (patch 1) -- */
FN(f_vpsubsb)				/* bytes of x - bytes of y, saturated */
	vmovq %rdi, %xmm0
	vmovq %rsi, %xmm1
SITE(s_vpsubsb)	vpsubsb %xmm1, %xmm0, %xmm0	/* c5 f9 e8: 6.1 "call" */
	vmovq %xmm0, %rax
	ret
FN(f_vpcmpeqb)				/* 0xff for each byte of x equal to y's */
	vmovq %rdi, %xmm0
	vmovq %rsi, %xmm1
SITE(s_vpcmpeqb) vpcmpeqb %xmm1, %xmm0, %xmm0	/* c5 f9 74: 6.1 "je" */
	vmovq %xmm0, %rax
	ret
FN(f_vmovdqa)				/* 32 bytes from q to p, 32-byte aligned */
	vmovdqa (%rsi), %ymm0
SITE(s_vmovdqa)	vmovdqa %ymm0, (%rdi)		/* c5 fd 7f: 6.1 "jg" */
	vzeroupper
	ret
FN(f_vzeroupper)			/* x + upper half of ymm0 after vzeroupper */
	vmovq %rdi, %xmm0
	vinsertf128 $1, %xmm0, %ymm0, %ymm0
SITE(s_vzeroupper) vzeroupper			/* c5 f8 77: 6.1 "ja" */
	vextractf128 $1, %ymm0, %xmm1
	vmovq %xmm1, %rax
	add %rdi, %rax
	ret
FN(f_vcmpps)				/* lanes of x == y's (float): mask */
	vmovq %rdi, %xmm0
	vmovq %rsi, %xmm1
SITE(s_vcmpps)	vcmpps $0, %xmm1, %xmm0, %xmm0	/* c5 f8 c2: 6.1 "ret" fix-ups */
	vmovq %xmm0, %rax
	ret

/* ---- never executed: placement only ------------------------------------- */
FN(f_placement_only)
SITE(s_vex)	vpaddd %xmm1, %xmm2, %xmm3
SITE(s_vexrip)	vaddps g_vec(%rip), %xmm0, %xmm0
SITE(s_addr32)	addr32 mov (%edi), %eax
SITE(s_loop)	loop s_loop
SITE(s_int3)	int3
SITE(s_ud2)	ud2
SITE(s_cli)	cli
SITE(s_fwait)	fwait
SITE(s_repstos)	rep stosb
SITE(s_stos)	stosb
SITE(s_ripr_bx)	{vex3} vpaddd g_vec(%rip), %xmm6, %xmm7
SITE(s_vex6)	vaddps g_vec(%rip), %xmm1, %xmm6
SITE(s_andrip)	andq $0xf, g_tmp(%rip)
SITE(s_r12rip)	mov %r12, g_tmp(%rip)
SITE(s_lock)	lock addl $1, (%rdi)
SITE(s_xmm4)	movdqu g_vec(%rip), %xmm4
SITE(s_movsx)	movslq g_ro(%rip), %rdx
SITE(s_popmrip)	popq g_tmp(%rip)
	ret
	.section .note.GNU-stack, "", @progbits
