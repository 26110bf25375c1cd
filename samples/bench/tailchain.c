/* 9. Tail-call chain (XDP): three programs that each parse one layer of a packet and pass their state on through an
 * array map, as programs split by layer or by feature do: `chain_l2` (Ethernet and up to two VLAN tags) tail-calls
 * `chain_l3` (IPv4 with options, or IPv6) which tail-calls `chain_l4` (TCP or UDP ports and flags), which returns
 * a hash of the packet's key. One packet per run: the cost is mostly the chain itself (two tail calls, each ending
 * one program and starting the next in the runtime, contract §3.4) and its map lookups. */
#include "bench_maps.h"

struct chain_state {
    u64 hash;
    u32 l3_offset, l4_offset;
    u16 ethertype;
    u8 l4_protocol, pad;
    u32 pad2;
};
BENCH_MAP(chain_programs, BPF_MAP_TYPE_PROG_ARRAY, u32, u32, 4);
BENCH_MAP(chain_scratch, BPF_MAP_TYPE_ARRAY, u32, struct chain_state, 1);

#define STAGE_L3 1
#define STAGE_L4 2

static inline struct chain_state *scratch(void)
{
    u32 zero = 0;
    return bpf_map_lookup_elem(&chain_scratch, &zero);
}

SEC("xdp/l2") u64 chain_l2(struct xdp_md *ctx)
{
    const u8 *data = (const u8 *)(unsigned long)ctx->data;
    const u8 *end = (const u8 *)(unsigned long)ctx->data_end;
    struct chain_state *s = scratch();
    if (!s || data + 14 > end) return XDP_PASS;
    u16 proto = be16(data + 12);
    u32 offset = 14;
    if ((proto == 0x88a8 || proto == 0x8100) && data + 18 <= end) {
        proto = be16(data + 16);
        offset = 18;
        if (proto == 0x8100 && data + 22 <= end) {
            proto = be16(data + 20);
            offset = 22;
        }
    }
    s->hash = ((u64)be32(data) << 16 | be16(data + 4)) * 0x9e3779b97f4a7c15ULL ^ proto;
    s->ethertype = proto;
    s->l3_offset = offset;
    bpf_tail_call(ctx, &chain_programs, STAGE_L3);
    return XDP_PASS;
}

SEC("xdp/l3") u64 chain_l3(struct xdp_md *ctx)
{
    const u8 *data = (const u8 *)(unsigned long)ctx->data;
    const u8 *end = (const u8 *)(unsigned long)ctx->data_end;
    struct chain_state *s = scratch();
    if (!s) return XDP_PASS;
    u32 offset = s->l3_offset;
    if (offset > 22) return XDP_DROP;
    const u8 *ip = data + offset;
    u64 h = s->hash;
    if (s->ethertype == 0x0800) {
        if (ip + 20 > end) return XDP_DROP;
        u32 ihl = ip[0] & 0xf;
        if (ihl < 5) return XDP_DROP;
        h = (h ^ be32(ip + 12)) * 0x100000001b3ULL;
        h = (h ^ be32(ip + 16)) * 0x100000001b3ULL;
        s->l4_protocol = ip[9];
        s->l4_offset = offset + ihl * 4;
    } else if (s->ethertype == 0x86dd) {
        if (ip + 40 > end) return XDP_DROP;
        for (int i = 8; i < 40; i += 4) h = (h ^ be32(ip + i)) * 0x100000001b3ULL;
        s->l4_protocol = ip[6];
        s->l4_offset = offset + 40;
    } else {
        return XDP_PASS;
    }
    s->hash = h;
    bpf_tail_call(ctx, &chain_programs, STAGE_L4);
    return XDP_PASS;
}

SEC("xdp/l4") u64 chain_l4(struct xdp_md *ctx)
{
    const u8 *data = (const u8 *)(unsigned long)ctx->data;
    const u8 *end = (const u8 *)(unsigned long)ctx->data_end;
    struct chain_state *s = scratch();
    if (!s) return XDP_PASS;
    u32 offset = s->l4_offset;
    if (offset > 82) return XDP_DROP;
    const u8 *l4 = data + offset;
    u64 h = s->hash * 31 + s->l4_protocol;
    if (s->l4_protocol == 6) {
        if (l4 + 20 > end) return XDP_DROP;
        h = (h ^ be32(l4)) * 0x100000001b3ULL ^ l4[13];
    } else if (s->l4_protocol == 17) {
        if (l4 + 8 > end) return XDP_DROP;
        h = (h ^ be32(l4)) * 0x100000001b3ULL ^ be16(l4 + 4);
    }
    return h | 0x100;
}

#ifndef __bpf__
/* The benchmark ABI (`common.h`): the buffer's data is one packet. User mode fills the program array before the
 * first run (here on the first call). */
u64 entry(struct buf *b)
{
    if (!chain_programs.storage) {
        bench_prog_array_set(&chain_programs, STAGE_L3, (u64(*)(void *))chain_l3);
        bench_prog_array_set(&chain_programs, STAGE_L4, (u64(*)(void *))chain_l4);
    }
    struct xdp_md ctx = {(u64)b->data, (u64)(b->data + b->len), 0, 0};
    return bench_invoke((u64(*)(void *))chain_l2, &ctx);
}
#endif
