// SPDX-License-Identifier: MIT
// A bounded loop over packet bytes: a checksum of at most 64 bytes, each access bounds-checked.
#include "bpf2sys.h"

#define MAX_BYTES 64

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 256);
} checksum_counts SEC(".maps");

SEC("xdp")
int sum_prefix(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    uint32_t sum = 0;
    for (uint32_t i = 0; i < MAX_BYTES; i++) {
        if (data + i + 1 > data_end)
            break;
        sum += data[i];
    }
    uint32_t key = sum & 0xff;
    uint64_t one = 1;
    uint64_t* count = bpf_map_lookup_elem(&checksum_counts, &key);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        bpf_map_update_elem(&checksum_counts, &key, &one, 0);
    return XDP_PASS;
}
