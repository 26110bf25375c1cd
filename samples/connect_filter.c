// SPDX-License-Identifier: MIT
// cgroup/connect4 and cgroup/connect6: reject connections to blocked destination ports and log the
// connecting process's id.
#include "bpf2sys.h"

struct destination {
    uint32_t address;
    uint16_t port;
    uint16_t protocol;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint16_t);
    __type(value, uint32_t);
    __uint(max_entries, 64);
} blocked_ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, struct destination);
    __type(value, uint64_t);
    __uint(max_entries, 512);
} last_connector SEC(".maps");

static __always_inline int port_blocked(bpf_sock_addr_t* ctx)
{
    uint16_t port = bpf_ntohs(ctx->user_port);
    uint32_t* blocked = bpf_map_lookup_elem(&blocked_ports, &port);
    return blocked && *blocked;
}

SEC("cgroup/connect4")
int filter_connect4(bpf_sock_addr_t* ctx)
{
    struct destination d = {.address = ctx->user_ip4, .port = ctx->user_port, .protocol = (uint16_t)ctx->protocol};
    uint64_t pid_tgid = bpf_sock_addr_get_current_pid_tgid(ctx);
    bpf_map_update_elem(&last_connector, &d, &pid_tgid, 0);
    return port_blocked(ctx) ? BPF_SOCK_ADDR_VERDICT_REJECT : BPF_SOCK_ADDR_VERDICT_PROCEED;
}

SEC("cgroup/connect6")
int filter_connect6(bpf_sock_addr_t* ctx)
{
    return port_blocked(ctx) ? BPF_SOCK_ADDR_VERDICT_REJECT : BPF_SOCK_ADDR_VERDICT_PROCEED;
}
