// SPDX-License-Identifier: MIT
// UNSAFE variant of map_types.c: stores the packet address into a map value, leaking a kernel address.
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 1);
} last_packet SEC(".maps");

SEC("xdp")
int pointer_leak_map(xdp_md_t* ctx)
{
    uint32_t key = 0;
    uint64_t* slot = bpf_map_lookup_elem(&last_packet, &key);
    if (!slot)
        return XDP_PASS;
    *slot = (uint64_t)ctx->data; // UNSAFE: pointer_leak
    return XDP_PASS;
}
