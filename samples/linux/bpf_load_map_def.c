// SPDX-License-Identifier: MIT
// Linux legacy map records: samples/bpf's 28-byte `struct bpf_load_map_def` (libbpf's `bpf_map_def` plus
// inner_map_idx and numa_node) in section "maps", with an ARRAY_OF_MAPS naming its inner template by index.
#include "linux_bpf.h"

struct bpf_load_map_def {
    __u32 type;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    __u32 inner_map_idx;
    __u32 numa_node;
};

SEC("maps")
struct bpf_load_map_def port_hits = {
    .type = BPF_MAP_TYPE_HASH, .key_size = sizeof(__u32), .value_size = sizeof(__u64), .max_entries = 256};

SEC("maps")
struct bpf_load_map_def tables = {
    .type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
    .key_size = sizeof(__u32),
    .value_size = sizeof(__u32),
    .max_entries = 8,
    .inner_map_idx = 0};

SEC("socket1")
int count_by_length(struct __sk_buff* skb)
{
    __u32 length = skb->len;
    __u64* hits = bpf_map_lookup_elem(&port_hits, &length);
    if (hits)
        __sync_fetch_and_add(hits, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
