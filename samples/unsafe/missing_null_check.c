// SPDX-License-Identifier: MIT
// UNSAFE variant of legacy_maps.c: uses a map lookup result without checking it for null.
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 16);
} packet_counts SEC(".maps");

SEC("xdp")
int missing_null_check(xdp_md_t* ctx)
{
    uint32_t key = ctx->ingress_ifindex;
    uint64_t* count = bpf_map_lookup_elem(&packet_counts, &key);
    *count += 1; // UNSAFE: null_dereference
    return XDP_PASS;
}
