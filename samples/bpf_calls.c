// SPDX-License-Identifier: MIT
// bpf-to-bpf calls: non-inlined subprograms in .text (static and global, one calling another) shared by two
// programs, so each program gets its own copy of the subprograms it reaches.
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} length_histogram SEC(".maps");

static __noinline uint32_t length_bucket(uint64_t length)
{
    return length > 512 ? 1 : 0;
}

__noinline int record_length(uint64_t length)
{
    uint32_t bucket = length_bucket(length);
    uint64_t* count = bpf_map_lookup_elem(&length_histogram, &bucket);
    if (!count)
        return 0;
    __sync_fetch_and_add(count, 1);
    return 1;
}

static __noinline uint64_t packet_length(xdp_md_t* ctx)
{
    return (uint64_t)((uint8_t*)ctx->data_end - (uint8_t*)ctx->data);
}

SEC("xdp")
int measure(xdp_md_t* ctx)
{
    record_length(packet_length(ctx));
    return XDP_PASS;
}

SEC("xdp/small_only")
int drop_large(xdp_md_t* ctx)
{
    uint64_t length = packet_length(ctx);
    record_length(length);
    return length_bucket(length) ? XDP_DROP : XDP_PASS;
}
