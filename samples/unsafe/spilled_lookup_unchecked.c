// SPDX-License-Identifier: MIT
// UNSAFE variant of spilled_lookup.c: the spilled lookup result is used on the path where it is null.
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 64);
} port_hits SEC(".maps");

SEC("xdp")
int count_by_first_byte(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    if (data + 1 > data_end)
        return XDP_PASS;
    uint32_t key = data[0];
    uint64_t* volatile hits = bpf_map_lookup_elem(&port_hits, &key);
    if (!hits) {
        *hits = 1; // UNSAFE: null_dereference
        return XDP_PASS;
    }
    *hits += 1;
    return *hits > 2 ? XDP_DROP : XDP_PASS;
}
