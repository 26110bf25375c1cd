// SPDX-License-Identifier: MIT
// UNSAFE variant of stack_extent.c: the 8-byte path claims 16 bytes, so the helper may read 8 bytes of the
// buffer that path never wrote.
#include "bpf2sys.h"

SEC("xdp")
int log_packet_header(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    char line[16];
    uint64_t n;
    if (data + 16 > data_end)
        return XDP_PASS;
    if (data[0] & 1) {
        __builtin_memcpy(line, data, 8);
        n = 16;
    } else {
        __builtin_memcpy(line, data, 16);
        n = 16;
    }
    bpf_trace_printk2(line, n); // UNSAFE: uninitialized
    return XDP_PASS;
}
