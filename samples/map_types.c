// SPDX-License-Identifier: MIT
// One XDP program touching each plain map type: array, hash, per-CPU array, per-CPU hash, LRU hash.
#include "bpf2sys.h"

struct flow_key {
    uint32_t source;
    uint32_t destination;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 16);
} packet_counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 1024);
} interface_policy SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 1);
} cpu_bytes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 64);
} cpu_interface_bytes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, struct flow_key);
    __type(value, uint64_t);
    __uint(max_entries, 4096);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} recent_flows SEC(".maps");

SEC("xdp")
int count_by_map_type(xdp_md_t* ctx)
{
    uint32_t zero = 0;
    uint32_t ifindex = ctx->ingress_ifindex;
    uint64_t length = (uint64_t)((uint8_t*)ctx->data_end - (uint8_t*)ctx->data);

    uint64_t* count = bpf_map_lookup_elem(&packet_counts, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);

    uint64_t* bytes = bpf_map_lookup_elem(&cpu_bytes, &zero);
    if (bytes)
        *bytes += length;

    uint64_t* per_interface = bpf_map_lookup_elem(&cpu_interface_bytes, &ifindex);
    if (per_interface) {
        *per_interface += length;
    } else {
        bpf_map_update_elem(&cpu_interface_bytes, &ifindex, &length, 0);
    }

    struct flow_key flow = {.source = ifindex, .destination = 0};
    uint64_t now = bpf_ktime_get_ns();
    bpf_map_update_elem(&recent_flows, &flow, &now, 0);

    uint32_t* verdict = bpf_map_lookup_elem(&interface_policy, &ifindex);
    if (verdict && *verdict == XDP_DROP) {
        bpf_map_delete_elem(&recent_flows, &flow);
        return XDP_DROP;
    }
    return XDP_PASS;
}
