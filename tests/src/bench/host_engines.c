/* The benchmark host of the real eBPF for Windows programs (flowtrack, tailchain, bindpolicy) for the engines that
 * run machine code: bpf2sys's x64 code and rbpf's JITs. `build.rs` compiles it into the tests crate with clang -O2,
 * the native baseline's compiler and level, so an engine's helper calls run the native baseline's helpers:
 * `host_maps.h`, included here unchanged. Only the calling convention differs: bpf2sys's code calls helpers as
 * `helper_function_t` (contract §5.1, Windows x64), so `host_maps.h` is compiled here with
 * `BENCH_HELPER_ABI = ms_abi` and its helpers are the very functions `runtime_context->helper_data[i].address`
 * points to — no wrapper, no change of convention on the way, as in the native baseline's calls.
 *
 * Two harness pieces make that exact:
 *   - the C library calls inside the helpers (`memcmp`, `memcpy` of a map's key or value size, `calloc` on a map's
 *     first use) go through `bench_ms_*` (assembly below), which move the arguments to the System V registers and
 *     keep rsi/rdi, the two registers the Windows convention preserves that the C library may change. They do not
 *     keep xmm6–xmm15 (also preserved on Windows): saving ten vector registers per call would cost more than the
 *     helper, and nothing the bench runs holds a value in them across a call — the generated eBPF code computes in
 *     general-purpose registers only, and so do the helpers and `bench_invoke_native`;
 *   - `bench_invoke_native` is `bench_invoke`'s tail-call loop (contract §3.4) for programs that take the runtime
 *     context as their second argument (contract §5.1), as bpf2sys's do.
 * rbpf's JITs call helpers in the System V convention with the stack 8 bytes off the 16-byte alignment the ABI
 * requires; `bench_sysv_*` adapt the arguments and realign the stack (one `and`), which only rbpf's cells pay. The
 * helper names are prefixed (`bench_c_`) so that nothing else in the process can interpose on them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WIN64 __attribute__((ms_abi))

WIN64 int bench_ms_memcmp(const void *a, const void *b, size_t n);
WIN64 void *bench_ms_memcpy(void *dst, const void *src, size_t n);
WIN64 void *bench_ms_calloc(size_t count, size_t size);

#define BENCH_HELPER_ABI WIN64
#define memcmp bench_ms_memcmp
/* A copy of a constant size stays inline, as in the native build. */
#define memcpy(dst, src, n) (__builtin_constant_p(n) ? __builtin_memcpy(dst, src, n) : bench_ms_memcpy(dst, src, n))
#define calloc bench_ms_calloc
#define bpf_map_lookup_elem bench_c_map_lookup_elem
#define bpf_map_update_elem bench_c_map_update_elem
#define bpf_map_delete_elem bench_c_map_delete_elem
#define bpf_tail_call bench_c_tail_call
#define bench_lookup bench_c_lookup
#include "host_common.h"
#include "host_maps.h"
#undef memcmp
#undef memcpy
#undef calloc

/* Windows x64 → System V for one C library function: arguments 1–3 from rcx, rdx, r8 to rdi, rsi, rdx; rsi and rdi
 * kept; the stack 16-byte aligned at the call. */
#define MS_TO_SYSV(name, target)                                                                                   \
    __asm__(".text\n.p2align 4\n.globl " #name "\n.hidden " #name "\n.type " #name ",@function\n" #name ":\n"      \
            "push %rdi\npush %rsi\nsub $8, %rsp\nmov %rcx, %rdi\nmov %rdx, %rsi\nmov %r8, %rdx\n"                   \
            "call " #target "@PLT\nadd $8, %rsp\npop %rsi\npop %rdi\nret\n.size " #name ", .-" #name "\n")
MS_TO_SYSV(bench_ms_memcmp, memcmp);
MS_TO_SYSV(bench_ms_memcpy, memcpy);
MS_TO_SYSV(bench_ms_calloc, calloc);

/* ---- helper_function_t (contract §5.1): r1..r5, then the program's context ---- */
/* The helpers themselves under the names the harness binds: a helper with fewer parameters ignores the rest of the
 * six arguments, as the runtime's own helpers do (in the Windows x64 convention the caller owns the argument area,
 * so a callee may take fewer arguments than it is passed). */
typedef WIN64 uint64_t bench_helper_function(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5, void *ctx);
bench_helper_function bench_win64_map_lookup_elem __attribute__((alias("bench_c_map_lookup_elem")));
bench_helper_function bench_win64_map_update_elem __attribute__((alias("bench_c_map_update_elem")));
bench_helper_function bench_win64_map_delete_elem __attribute__((alias("bench_c_map_delete_elem")));
bench_helper_function bench_win64_tail_call __attribute__((alias("bench_c_tail_call")));

/* ---- rbpf's JITs: r1..r5, System V, stack possibly misaligned by 8 ---- */
#define SYSV __attribute__((force_align_arg_pointer))
SYSV uint64_t bench_sysv_map_lookup_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5)
{
    (void)r3, (void)r4, (void)r5;
    return (uint64_t)(uintptr_t)bpf_map_lookup_elem((void *)(uintptr_t)r1, (const void *)(uintptr_t)r2);
}
SYSV uint64_t bench_sysv_map_update_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5)
{
    (void)r5;
    return (uint64_t)bpf_map_update_elem((void *)(uintptr_t)r1, (const void *)(uintptr_t)r2,
                                         (const void *)(uintptr_t)r3, r4);
}
SYSV uint64_t bench_sysv_map_delete_elem(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5)
{
    (void)r3, (void)r4, (void)r5;
    return (uint64_t)bpf_map_delete_elem((void *)(uintptr_t)r1, (const void *)(uintptr_t)r2);
}
SYSV uint64_t bench_sysv_tail_call(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5)
{
    (void)r4, (void)r5;
    return (uint64_t)bpf_tail_call((void *)(uintptr_t)r1, (void *)(uintptr_t)r2, (uint32_t)r3);
}

/* ---- the host side: what user mode does before attaching, and what the harness needs to know ---- */
long bench_host_map_update(struct bench_map *m, const void *key, const void *value, uint64_t flags)
{
    return bpf_map_update_elem(m, key, value, flags);
}

/* The value storage of an array or hash map, allocated now (for engines that check every access). */
void *bench_host_map_values(struct bench_map *m, size_t *len)
{
    void *s = bench_storage(m);
    *len = m->type == 1 || m->type == 2 ? (size_t)m->max_entries * m->value_size : 0;
    return m->type == 1 ? ((struct bench_hash *)s)->values : m->type == 2 ? s : NULL;
}

/* Entries of a hash map (0 for other maps). */
uint32_t bench_host_map_count(struct bench_map *m)
{
    return m->type == 1 ? ((struct bench_hash *)bench_storage(m))->count : 0;
}

void bench_host_map_free(struct bench_map *m)
{
    if (m->storage && m->type == 1) {
        struct bench_hash *h = m->storage;
        free(h->buckets), free(h->next), free(h->keys), free(h->values);
    }
    free(m->storage);
    m->storage = NULL;
}

/* Fills slot `index` of a program array with `program`: a `bench_native_program` for `bench_invoke_native`, or a
 * token an engine's own loop understands (`bench_tail_call_take` hands it back). */
void bench_host_prog_array_set(struct bench_map *m, uint32_t index, const void *program)
{
    bench_prog_array_set(m, index, (bench_program)(uintptr_t)program);
}

/* ---- tail calls (contract §3.4) ---- */
/* A program in the contract's entry shape (§5.1): `entry(context, runtime_context)`, Windows x64. */
struct bench_native_program {
    WIN64 uint64_t (*entry)(void *ctx, const void *runtime_context);
    const void *runtime_context;
};

/* `bench_invoke` for such programs: runs `program`, then every program it tail-called; r0 of the last. */
uint64_t bench_invoke_native(const struct bench_native_program *program, void *ctx)
{
    bench_tail_calls = 0;
    for (;;) {
        bench_next_program = NULL;
        uint64_t r = program->entry(ctx, program->runtime_context);
        if (!bench_next_program) return r;
        program = (const struct bench_native_program *)(uintptr_t)bench_next_program;
    }
}

/* The same loop's state for an engine that runs the loop itself (rbpf's VMs are not functions): reset before the
 * first program, then after each program take the next one's token (NULL: the invocation is over). */
void bench_tail_call_reset(void)
{
    bench_tail_calls = 0;
    bench_next_program = NULL;
}
const void *bench_tail_call_take(void)
{
    const void *next = (const void *)(uintptr_t)bench_next_program;
    bench_next_program = NULL;
    return next;
}
