// SPDX-License-Identifier: MIT
// Atomic read-modify-write on a map value (RFC 9669 §5.3): add, or, and, xor with and without fetch, exchange
// and compare-exchange, in 32 and 64 bits (-mcpu=v3).
#include "bpf2sys.h"

struct counters {
    uint64_t packets;
    uint64_t flags_seen;
    uint32_t mask;
    uint32_t toggles;
    uint64_t last_length;
    uint64_t owner;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, struct counters);
    __uint(max_entries, 1);
} shared_counters SEC(".maps");

SEC("xdp")
int update_counters(xdp_md_t* ctx)
{
    uint32_t zero = 0;
    struct counters* c = bpf_map_lookup_elem(&shared_counters, &zero);
    if (!c)
        return XDP_PASS;
    uint64_t length = (uint64_t)((uint8_t*)ctx->data_end - (uint8_t*)ctx->data);
    __sync_fetch_and_add(&c->packets, 1);
    uint64_t before = __sync_fetch_and_or(&c->flags_seen, 1ull << (length & 63));
    __sync_fetch_and_and(&c->mask, 0xffff);
    uint32_t toggled = __sync_fetch_and_xor(&c->toggles, 1);
    uint64_t previous = __sync_lock_test_and_set(&c->last_length, length);
    uint64_t owner = __sync_val_compare_and_swap(&c->owner, 0, ctx->ingress_ifindex);
    return (before ^ toggled ^ previous ^ owner) & 1 ? XDP_PASS : XDP_PASS;
}
