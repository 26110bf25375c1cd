/* 7. Packet walker: Ethernet with up to two VLAN tags (802.1ad outer, 802.1Q inner), IPv4 with options and
 * fragments, IPv6 with an extension-header chain (hop-by-hop, destination options, routing, fragment), TCP with
 * its option list (MSS, window scale, timestamps), UDP; every header bounds-checked against the packet's end.
 * The buffer holds back-to-back packets: u16 plen (big-endian); bytes[plen]. Returns a hash of per-packet keys. */
#include "common.h"
static inline u16 be16(const u8 *p) { return (u16)((p[0] << 8) | p[1]); }
static inline u32 be32(const u8 *p) { return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | p[3]; }

static inline u64 tcp_options(const u8 *o, const u8 *oe)
{
    u64 opts = 0;
    for (int i = 0; i < 10; i++) {
        if (o >= oe) break;
        u8 kind = o[0];
        if (kind == 0) break;
        if (kind == 1) { o++; continue; }
        if (o + 2 > oe) break;
        u8 olen = o[1];
        if (olen < 2 || o + olen > oe) break;
        if (kind == 2 && olen == 4) opts += be16(o + 2);
        else if (kind == 3 && olen == 3) opts += (u64)o[2] << 16;
        else if (kind == 8 && olen == 10) opts ^= be32(o + 2);
        else opts += kind;
        o += olen;
    }
    return opts;
}

static inline u64 walk(const u8 *p, const u8 *end)
{
    if (p + 14 > end) return 1;
    const u8 *q = p + 14;
    u16 proto = be16(p + 12);
    for (int t = 0; t < 2; t++) {
        if (proto != 0x8100 && proto != 0x88a8) break;
        if (q + 4 > end) return 2;
        proto = be16(q + 2);
        q += 4;
    }
    u64 key; u8 l4; const u8 *l4p;
    if (proto == 0x0800) {
        if (q + 20 > end) return 3;
        u32 ihl = q[0] & 0xf;
        if (ihl < 5 || q + ihl * 4 > end) return 4;
        if (be16(q + 6) & 0x1fff) return 0x400 | q[9]; /* a non-first fragment has no L4 header */
        l4 = q[9];
        key = (u64)be32(q + 12) * 0x9e3779b1ULL ^ be32(q + 16);
        l4p = q + ihl * 4;
    } else if (proto == 0x86dd) {
        if (q + 40 > end) return 5;
        l4 = q[6];
        key = (u64)(be32(q + 8) ^ be32(q + 20)) * 0x9e3779b1ULL ^ be32(q + 24) ^ be32(q + 36);
        l4p = q + 40;
        for (int e = 0; e < 4; e++) {
            if (l4 != 0 && l4 != 43 && l4 != 44 && l4 != 60) break;
            if (l4p + 8 > end) return 6;
            u8 next = l4p[0];
            if (l4 == 44 && (be16(l4p + 2) & 0xfff8)) return 0x800 | next;
            u32 hlen = l4 == 44 ? 8 : ((u32)l4p[1] + 1) * 8;
            key = key * 31 + l4;
            l4 = next;
            l4p += hlen;
        }
    } else {
        return 7;
    }
    if (l4 == 6) {
        if (l4p + 20 > end) return 8;
        u32 doff = l4p[12] >> 4;
        if (doff < 5 || l4p + doff * 4 > end) return 9;
        u64 opts = tcp_options(l4p + 20, l4p + doff * 4);
        return (key * 31 + be16(l4p) * 7 + be16(l4p + 2) + (l4p[13] & 0x3f) + (opts << 9)) | 0x100;
    }
    if (l4 == 17) {
        if (l4p + 8 > end) return 10;
        u16 ulen = be16(l4p + 4);
        return (key * 17 + be16(l4p) * 3 + be16(l4p + 2) + (ulen > end - l4p)) | 0x200;
    }
    return 11 + l4;
}

SEC(".text") u64 entry(struct buf *b)
{
    const u8 *p = b->data;
    const u8 *end = b->data + (b->len > 65536 ? 65536 : b->len);
    u64 acc = 0;
    for (int i = 0; i < 1024; i++) {
        if (p + 2 > end) break;
        u16 plen = be16(p);
        p += 2;
        const u8 *pe = p + plen;
        if (pe > end) break;
        acc = acc * 0x9e3779b97f4a7c15ULL + walk(p, pe);
        p = pe;
    }
    return acc;
}
