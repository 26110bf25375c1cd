// SPDX-License-Identifier: MIT
// Correlated branches: the loop reads data[i] for i < n where n = data_end - data, so every read is inside the
// packet through the relation between i and n checked on the loop's branch, not through a data_end comparison.
// The sum of the first 64 bytes is added to byte_totals[0], the packet count to byte_totals[1]; sums over
// 1000 are dropped.
#include "bpf2sys.h"

#define MAX_SUMMED 64

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} byte_totals SEC(".maps");

SEC("xdp")
int sum_packet_bytes(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint32_t n = (uint8_t*)ctx->data_end - data;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < MAX_SUMMED; i++) {
        if (i >= n)
            break;
        sum += data[i];
    }
    uint32_t key = 0;
    uint64_t* total = bpf_map_lookup_elem(&byte_totals, &key);
    if (total)
        *total += sum;
    key = 1;
    uint64_t* count = bpf_map_lookup_elem(&byte_totals, &key);
    if (count)
        *count += 1;
    return sum > 1000 ? XDP_DROP : XDP_PASS;
}
