/* 8. Connection tracker (XDP): for every TCP/IPv4 packet of the buffer, look its 5-tuple up in a hash map; a SYN
 * of an unknown flow inserts it, a packet of a known flow updates its counters in place, a FIN or RST reports the
 * flow's totals and deletes it. Every flow of the input ends with a FIN, so the map is empty again after each run
 * and every run does the same work. The packet area (xdp_md data..data_end) holds back-to-back packets:
 * u16 plen (big-endian); bytes[plen]. Returns a hash of what each packet did. */
#include "bench_maps.h"

struct flow_key {
    u32 saddr, daddr;
    u16 sport, dport;
    u32 proto;
};
struct flow_stats {
    u64 packets, bytes;
};
BENCH_MAP(flows, BPF_MAP_TYPE_HASH, struct flow_key, struct flow_stats, 256);

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

/* One frame (Ethernet, IPv4, TCP) of `plen` bytes at `f`; `end` is the end of the packet area. */
static inline u64 track(const u8 *f, const u8 *end, u32 plen)
{
    if (plen < 54 || f + 54 > end) return 1;
    if (be16(f + 12) != 0x0800 || f[14] != 0x45 || f[23] != 6) return 2;
    const u8 *tcp = f + 34;
    struct flow_key key = {be32(f + 26), be32(f + 30), be16(tcp), be16(tcp + 2), 6};
    u8 flags = tcp[13];
    struct flow_stats *s = bpf_map_lookup_elem(&flows, &key);
    if (!s) {
        if (!(flags & TCP_SYN)) return 3; /* not a connection we saw open */
        struct flow_stats first = {1, plen};
        return bpf_map_update_elem(&flows, &key, &first, BPF_NOEXIST) == 0 ? 4 : 5;
    }
    s->packets += 1;
    s->bytes += plen;
    if (flags & (TCP_FIN | TCP_RST)) {
        u64 report = (s->packets << 32) ^ s->bytes;
        bpf_map_delete_elem(&flows, &key);
        return report;
    }
    return 6;
}

SEC("xdp") u64 flowtrack(struct xdp_md *ctx)
{
    const u8 *data = (const u8 *)(unsigned long)ctx->data;
    const u8 *end = (const u8 *)(unsigned long)ctx->data_end;
    u64 acc = 0;
    u64 off = 0;
    for (u64 i = 0; i < 1024; i++) {
        if (off > 0xffff) break; /* packet areas are shorter than 64 KiB */
        const u8 *p = data + off;
        if (p + 2 > end) break;
        u32 plen = be16(p);
        if (p + 2 + plen > end) break;
        acc = acc * 0x9e3779b97f4a7c15ULL + track(p + 2, end, plen);
        off += 2 + plen;
    }
    return acc;
}

#ifndef __bpf__
/* The benchmark ABI (`common.h`): the buffer's data is the packet area. */
u64 entry(struct buf *b)
{
    struct xdp_md ctx = {(u64)b->data, (u64)(b->data + b->len), 0, 0};
    return flowtrack(&ctx);
}
#endif
