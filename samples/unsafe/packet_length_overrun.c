// SPDX-License-Identifier: MIT
// UNSAFE variant of packet_length.c: passes one byte more than the packet holds to the helper.
#include "bpf2sys.h"

#define MAX_LOGGED 32

SEC("xdp")
int log_packet_prefix(xdp_md_t* ctx)
{
    char* data = ctx->data;
    char* data_end = ctx->data_end;
    uint64_t len = data_end - data;
    if (len > MAX_LOGGED)
        len = MAX_LOGGED;
    if (len == 0)
        return XDP_DROP;
    bpf_trace_printk2(data, len + 1); // UNSAFE: out_of_bounds
    return XDP_PASS;
}
