// SPDX-License-Identifier: MIT
// Null checks on spilled copies: the map-lookup result lives in a volatile local, so clang stores it to the
// stack and reloads it for the null check and again for every use. The check on one reload must refine the
// stack slot, so the later reloads are known to be non-null.
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
        uint64_t one = 1;
        bpf_map_update_elem(&port_hits, &key, &one, 0);
        return XDP_PASS;
    }
    *hits += 1;
    return *hits > 2 ? XDP_DROP : XDP_PASS;
}
