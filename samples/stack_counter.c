// SPDX-License-Identifier: MIT
// Loop counters in memory: the counter is a volatile local, so clang keeps it in a stack slot and reloads it
// for the exit test and for the increment. A second loop tests `!=` on a 32-bit copy of its counter.
#include "bpf2sys.h"

#define MAX_BYTES 16

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 1);
} byte_sums SEC(".maps");

SEC("xdp")
int sum_with_stack_counter(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    if (data + MAX_BYTES > data_end)
        return XDP_PASS;
    uint64_t sum = 0;
    for (volatile uint32_t i = 0; i < MAX_BYTES; i++)
        sum += data[i & (MAX_BYTES - 1)];
    uint32_t key = 0;
    uint64_t* total = bpf_map_lookup_elem(&byte_sums, &key);
    if (total)
        *total += sum;
    return sum > 255 ? XDP_DROP : XDP_PASS;
}
