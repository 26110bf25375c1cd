// SPDX-License-Identifier: MIT
// Map-in-map: an array of maps whose inner template is a declared map (and initialised to it), and a hash of
// maps whose inner template is declared inline (an anonymous map).
#include "bpf2sys.h"

struct port_set {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint16_t);
    __type(value, uint8_t);
    __uint(max_entries, 128);
} default_ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __type(key, uint32_t);
    __uint(max_entries, 4);
    __array(values, struct port_set);
} ports_by_interface SEC(".maps") = {
    .values = {[0] = &default_ports},
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
    __type(key, uint32_t);
    __uint(max_entries, 16);
    __array(values, struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __type(key, uint32_t);
        __type(value, uint64_t);
        __uint(max_entries, 8);
    });
} counters_by_tenant SEC(".maps");

SEC("xdp")
int lookup_nested(xdp_md_t* ctx)
{
    uint32_t ifindex = ctx->ingress_ifindex;
    uint16_t port = 53;
    void* ports = bpf_map_lookup_elem(&ports_by_interface, &ifindex);
    if (ports) {
        uint8_t* hit = bpf_map_lookup_elem(ports, &port);
        if (hit && *hit)
            return XDP_DROP;
    }
    void* counters = bpf_map_lookup_elem(&counters_by_tenant, &ifindex);
    if (counters) {
        uint32_t slot = 0;
        uint64_t* count = bpf_map_lookup_elem(counters, &slot);
        if (count)
            __sync_fetch_and_add(count, 1);
    }
    return XDP_PASS;
}
