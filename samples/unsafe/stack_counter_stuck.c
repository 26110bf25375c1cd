// SPDX-License-Identifier: MIT
// UNSAFE variant of stack_counter.c: the loop increments a copy of the counter, so the counter never moves.
#include "bpf2sys.h"

#define MAX_BYTES 16

SEC("xdp")
int sum_with_stack_counter(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    if (data + MAX_BYTES > data_end)
        return XDP_PASS;
    uint64_t sum = 0;
    volatile uint32_t step = 0;
    // clang rotates the loop: its head (where the termination proof fails) is the body's first statement.
    for (volatile uint32_t i = 0; i < MAX_BYTES; step = i + 1)
        sum += data[i & (MAX_BYTES - 1)]; // UNSAFE: termination
    return sum > 255 ? XDP_DROP : XDP_PASS;
}
