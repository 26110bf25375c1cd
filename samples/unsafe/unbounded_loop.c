// SPDX-License-Identifier: MIT
// UNSAFE variant of bounded_loop.c: a loop whose trip count depends on packet data with no bound (Collatz).
#include "bpf2sys.h"

SEC("xdp")
int unbounded_loop(xdp_md_t* ctx)
{
    uint64_t x = ctx->ingress_ifindex;
    uint32_t steps = 0;
    while (x > 1) {
        // clang rotates the loop: its head (where the termination proof fails) is the body's first statement.
        x = (x & 1) ? 3 * x + 1 : x >> 1; // UNSAFE: termination
        steps++;
    }
    return steps & 1 ? XDP_DROP : XDP_PASS;
}
