// SPDX-License-Identifier: MIT
// UNSAFE variant of atomics.c: passes a key that was never written to a map lookup (uninitialised stack).
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, uint64_t);
    __uint(max_entries, 16);
} counters SEC(".maps");

SEC("xdp")
int uninit_stack_read(xdp_md_t* ctx)
{
    uint64_t key;
    if (ctx->ingress_ifindex == 7)
        key = 7;
    uint64_t* value = bpf_map_lookup_elem(&counters, &key); // UNSAFE: uninitialized
    if (value)
        *value += 1;
    return XDP_PASS;
}
