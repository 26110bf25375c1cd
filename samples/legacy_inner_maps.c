// SPDX-License-Identifier: MIT
// Legacy Windows map records spread over two sections, as older eBPF for Windows samples write map-in-maps:
// the outer array-of-maps in "maps/outer" names its inner template by `inner_map_idx` = 1, an index across
// the whole module's maps (the inner map is the module's second map), not within its own section.
#include "bpf2sys.h"

SEC("maps/outer")
struct bpf_map_def port_tables = {
    .type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
    .key_size = sizeof(uint32_t),
    .value_size = sizeof(uint32_t),
    .max_entries = 4,
    .inner_map_idx = 1};

SEC("maps/inner")
struct bpf_map_def port_template = {
    .type = BPF_MAP_TYPE_HASH, .key_size = sizeof(uint16_t), .value_size = sizeof(uint32_t), .max_entries = 64};

SEC("maps/inner")
struct bpf_map_def misses = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = sizeof(uint32_t), .value_size = sizeof(uint64_t), .max_entries = 1};

// Looks the destination port up in the table of the packet's interface; counts misses.
SEC("xdp")
int filter_by_port_table(xdp_md_t* ctx)
{
    uint32_t table = ctx->ingress_ifindex & 3;
    void* ports = bpf_map_lookup_elem(&port_tables, &table);
    uint32_t zero = 0;
    if (!ports) {
        uint64_t* count = bpf_map_lookup_elem(&misses, &zero);
        if (count)
            *count += 1;
        return XDP_PASS;
    }
    uint8_t* data = ctx->data;
    if (data + 38 > (uint8_t*)ctx->data_end)
        return XDP_PASS;
    uint16_t port = (uint16_t)(data[36] << 8 | data[37]);
    uint32_t* verdict = bpf_map_lookup_elem(ports, &port);
    return verdict ? *verdict : XDP_PASS;
}
