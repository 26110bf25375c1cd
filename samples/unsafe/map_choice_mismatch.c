// SPDX-License-Identifier: MIT
// UNSAFE variant of map_choice.c: one candidate map has 4-byte values, but the program writes 8 bytes.
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 4);
} even_ifindex SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 4);
} odd_ifindex SEC(".maps");

SEC("xdp")
int count_per_interface_parity(xdp_md_t* ctx)
{
    void* counters = (ctx->ingress_ifindex & 1) ? (void*)&odd_ifindex : (void*)&even_ifindex;
    uint32_t key = ctx->ingress_ifindex >> 1 & 3;
    uint64_t* count = bpf_map_lookup_elem(counters, &key);
    if (!count)
        return XDP_PASS;
    *count += 1; // UNSAFE: out_of_bounds
    return *count > 2 ? XDP_DROP : XDP_PASS;
}
