/* tools/cuda_emu/ctxsw.S -- emu_ctx_switch(save, to): saves the callee-saved
 * registers of the running fiber on its stack, stores its stack pointer in
 * *save, switches to the stack `to` and resumes the fiber saved there
 * (x86-64 System V). */
    .text
    .globl emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .section .note.GNU-stack,"",@progbits
