// SPDX-License-Identifier: MIT
// UNSAFE variant of correlated_bounds.c: the loop stops only past i == n, so its last read is data[n], one
// byte past data_end.
#include "bpf2sys.h"

#define MAX_SUMMED 64

SEC("xdp")
int sum_packet_bytes(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint32_t n = (uint8_t*)ctx->data_end - data;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < MAX_SUMMED; i++) {
        if (i > n)
            break;
        sum += data[i]; // UNSAFE: out_of_bounds
    }
    return sum > 1000 ? XDP_DROP : XDP_PASS;
}
