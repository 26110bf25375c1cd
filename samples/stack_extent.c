// SPDX-License-Identifier: MIT
// Path joins that keep correlations: one path copies 8 packet bytes into a stack buffer and sets n = 8, the
// other copies 16 and sets n = 16; after the join the helper logs n bytes of the buffer. Each path alone is
// safe, so the join must be: the size stays tied to the extent each path initialised. logged[0] counts the
// characters printed.
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} logged SEC(".maps");

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
        n = 8;
    } else {
        __builtin_memcpy(line, data, 16);
        n = 16;
    }
    long printed = bpf_trace_printk2(line, n);
    uint32_t key = 0;
    uint64_t* total = bpf_map_lookup_elem(&logged, &key);
    if (total)
        *total += printed;
    return XDP_PASS;
}
