/* `unrolled` as a verifiable XDP program: the same fully unrolled FNV-1a hash over the first 768 bytes, read from
 * the packet after one bounds check. The six benchmark programs read their input through r1 as a raw buffer, which
 * no Windows program type allows; this variant is the one that goes through the whole pipeline (parse, verify,
 * lower, link, sign) for the end-to-end compile-latency figure. */
#include "common.h"

/* eBPF for Windows `xdp_md_t` (native-module-contract.md §7.2): data, data_end, data_meta, ingress_ifindex. */
struct xdp_md {
    u64 data;
    u64 data_end;
    u64 data_meta;
    u32 ingress_ifindex;
};

SEC("xdp") u64 unrolled_xdp(struct xdp_md *ctx)
{
    const u8 *data = (const u8 *)(unsigned long)ctx->data;
    const u8 *end = (const u8 *)(unsigned long)ctx->data_end;
    if (data + 768 > end) return 0;
    u64 h = 0xcbf29ce484222325ULL;
#pragma clang loop unroll(full)
    for (u32 i = 0; i < 768; i++)
        h = (h ^ data[i]) * 0x100000001b3ULL;
    return h;
}
