// SPDX-License-Identifier: MIT
// sockops: track established and deleted TCP flows by flow id.
#include "bpf2sys.h"

struct flow_record {
    uint32_t remote_ip4;
    uint32_t remote_port;
    uint64_t established_ns;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, struct flow_record);
    __uint(max_entries, 8192);
} active_flows SEC(".maps");

SEC("sockops")
int track_flows(bpf_sock_ops_t* ctx)
{
    uint64_t flow_id = bpf_sock_ops_get_flow_id(ctx);
    switch (ctx->op) {
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
        struct flow_record r = {
            .remote_ip4 = ctx->remote_ip4, .remote_port = ctx->remote_port, .established_ns = bpf_ktime_get_ns()};
        bpf_map_update_elem(&active_flows, &flow_id, &r, 0);
        break;
    }
    case BPF_SOCK_OPS_CONNECTION_DELETED_CB:
        bpf_map_delete_elem(&active_flows, &flow_id);
        break;
    default:
        break;
    }
    return 0;
}
