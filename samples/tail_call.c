// SPDX-License-Identifier: MIT
// Tail calls through a program array initialised in the object (`values`): a dispatcher chains to a
// per-protocol stage by index.
#include "bpf2sys.h"

int stage_ipv4(xdp_md_t* ctx);
int stage_ipv6(xdp_md_t* ctx);

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __type(key, uint32_t);
    __uint(max_entries, 8);
    __array(values, int(xdp_md_t*));
} stages SEC(".maps") = {
    .values = {[0] = &stage_ipv4, [2] = &stage_ipv6},
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 8);
} stage_hits SEC(".maps");

static __always_inline void count_stage(uint32_t stage)
{
    uint64_t* hits = bpf_map_lookup_elem(&stage_hits, &stage);
    if (hits)
        __sync_fetch_and_add(hits, 1);
}

SEC("xdp/dispatch")
int dispatch(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    if (data + 14 > (uint8_t*)ctx->data_end)
        return XDP_PASS;
    uint16_t ethertype = (uint16_t)(data[12] << 8 | data[13]);
    uint32_t index = ethertype == 0x86dd ? 2 : 0;
    bpf_tail_call(ctx, &stages, index);
    // Reached only when the slot is empty or the chain limit (MAX_TAIL_CALL_CNT) is hit.
    return XDP_PASS;
}

SEC("xdp/ipv4")
int stage_ipv4(xdp_md_t* ctx)
{
    count_stage(0);
    return XDP_PASS;
}

SEC("xdp/ipv6")
int stage_ipv6(xdp_md_t* ctx)
{
    count_stage(2);
    return XDP_PASS;
}
