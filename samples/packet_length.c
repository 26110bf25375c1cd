// SPDX-License-Identifier: MIT
// Lengths from pointer differences: the bytes between data and data_end, capped at 32, are passed to a helper
// as a size. The length is bounded only by its relation to the packet (len = data_end - data), and the cap
// joins a path where the relation holds with one where the packet is known to be longer than the cap.
#include "bpf2sys.h"

#define MAX_LOGGED 32

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} logged_bytes SEC(".maps");

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
    // The helper reads `len` bytes of the packet and logs them up to the first NUL.
    long printed = bpf_trace_printk2(data, len);
    uint32_t key = 0;
    uint64_t* total = bpf_map_lookup_elem(&logged_bytes, &key);
    if (total)
        *total += printed;
    key = 1;
    uint64_t* lengths = bpf_map_lookup_elem(&logged_bytes, &key);
    if (lengths)
        *lengths += len;
    return XDP_PASS;
}
