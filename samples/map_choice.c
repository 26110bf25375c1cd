// SPDX-License-Identifier: MIT
// Branch-selected maps: the program picks one of two counter maps by the ingress interface and looks the key
// up in whichever it picked. Both maps have 4-byte keys and 8-byte values, so the lookup is safe for each.
#include "bpf2sys.h"

struct counters {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 4);
};

struct counters even_ifindex SEC(".maps");
struct counters odd_ifindex SEC(".maps");

SEC("xdp")
int count_per_interface_parity(xdp_md_t* ctx)
{
    void* counters = (ctx->ingress_ifindex & 1) ? (void*)&odd_ifindex : (void*)&even_ifindex;
    uint32_t key = ctx->ingress_ifindex >> 1 & 3;
    uint64_t* count = bpf_map_lookup_elem(counters, &key);
    if (!count)
        return XDP_PASS;
    *count += 1;
    return *count > 2 ? XDP_DROP : XDP_PASS;
}
