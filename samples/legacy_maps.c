// SPDX-License-Identifier: MIT
// Legacy Windows map records (`ebpf_map_definition_in_file_t`, 32 bytes) in section "maps", as older eBPF for
// Windows samples declare them; works without BTF.
#include "bpf2sys.h"

SEC("maps")
struct bpf_map_def port_counts = {
    .type = BPF_MAP_TYPE_HASH, .key_size = sizeof(uint16_t), .value_size = sizeof(uint64_t), .max_entries = 1024};

SEC("maps")
struct bpf_map_def interface_totals = {
    .type = BPF_MAP_TYPE_PERCPU_ARRAY,
    .key_size = sizeof(uint32_t),
    .value_size = sizeof(uint64_t),
    .max_entries = 32,
    .pinning = LIBBPF_PIN_BY_NAME};

SEC("xdp")
int count_legacy(xdp_md_t* ctx)
{
    uint32_t ifindex = ctx->ingress_ifindex & 31;
    uint64_t* total = bpf_map_lookup_elem(&interface_totals, &ifindex);
    if (total)
        *total += 1;
    uint8_t* data = ctx->data;
    if (data + 38 > (uint8_t*)ctx->data_end)
        return XDP_PASS;
    uint16_t port = (uint16_t)(data[36] << 8 | data[37]);
    uint64_t one = 1;
    uint64_t* count = bpf_map_lookup_elem(&port_counts, &port);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        bpf_map_update_elem(&port_counts, &port, &one, 0);
    return XDP_PASS;
}
