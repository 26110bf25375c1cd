/* 10. Bind policy (program type bind, section "bind"): decides whether a process may bind a socket, from the
 * context's fields (operation, protocol, address family, port, address, process id) and two array maps that user
 * mode fills: a rule per port and a rule per process class. One bind per run, as the runtime calls it; the verdict
 * (BIND_PERMIT / BIND_DENY) is in the low byte of r0 and the rules that decided in the bits above, so the bench's
 * r0 check sees which path ran. */
#include "bench_maps.h"

struct port_rule {
    u32 protocols; /* bit p: protocol p may bind (p < 32) */
    u32 flags;     /* PORT_LOOPBACK_ONLY, PORT_PRIVILEGED */
};
struct process_rule {
    u64 allowed_ports_low; /* bit i: ports 1024 + 64 * i .. may be bound */
    u32 max_binds, pad;
};
#define PORT_LOOPBACK_ONLY 1
#define PORT_PRIVILEGED 2
#define PORT_RULES 1024
#define PROCESS_CLASSES 64
BENCH_MAP(port_rules, BPF_MAP_TYPE_ARRAY, u32, struct port_rule, PORT_RULES);
BENCH_MAP(process_rules, BPF_MAP_TYPE_ARRAY, u32, struct process_rule, PROCESS_CLASSES);
BENCH_MAP(bind_counts, BPF_MAP_TYPE_ARRAY, u32, u64, 2);

static inline u64 verdict(u32 action, u64 why)
{
    u32 key = action;
    u64 *count = bpf_map_lookup_elem(&bind_counts, &key);
    if (count) *count += 1;
    return why << 8 | action;
}

SEC("bind") u64 bindpolicy(struct bind_md *ctx)
{
    if (ctx->operation != 0) return verdict(BIND_PERMIT, 1); /* post-bind and unbind are not policed */
    u8 protocol = ctx->protocol;
    u16 family = (u16)(ctx->socket_address[0] | ctx->socket_address[1] << 8);
    u16 port = be16(ctx->socket_address + 2);
    if (family != 2 && family != 23) return verdict(BIND_DENY, 2);
    u32 port_key = port % PORT_RULES;
    struct port_rule *pr = bpf_map_lookup_elem(&port_rules, &port_key);
    if (!pr) return verdict(BIND_DENY, 3);
    if (protocol >= 32 || !(pr->protocols >> protocol & 1)) return verdict(BIND_DENY, 4);
    if (pr->flags & PORT_LOOPBACK_ONLY) {
        int loopback = family == 2 ? ctx->socket_address[4] == 127 : ctx->socket_address[15] == 1;
        if (!loopback) return verdict(BIND_DENY, 5);
    }
    u32 class_key = (u32)(ctx->process_id % PROCESS_CLASSES);
    struct process_rule *cr = bpf_map_lookup_elem(&process_rules, &class_key);
    if (!cr) return verdict(BIND_DENY, 6);
    if ((pr->flags & PORT_PRIVILEGED) && port < 1024 && cr->max_binds == 0) return verdict(BIND_DENY, 7);
    u32 band = port < 1024 ? 0 : ((u32)port - 1024) / 1024 % 64;
    if (port >= 1024 && !(cr->allowed_ports_low >> band & 1)) return verdict(BIND_DENY, 8 + band);
    return verdict(BIND_PERMIT, (u64)port << 8 | class_key);
}

#ifndef __bpf__
/* The benchmark ABI (`common.h`): the buffer's data is the bind context (64 bytes), then the port rules and the
 * process rules, which user mode writes into the maps before the first run (here on the first call). */
u64 entry(struct buf *b)
{
    if (!port_rules.storage) {
        const u8 *rules = b->data + 64;
        for (u32 i = 0; i < PORT_RULES; i++) bpf_map_update_elem(&port_rules, &i, rules + 8 * i, BPF_ANY);
        rules += 8 * PORT_RULES;
        for (u32 i = 0; i < PROCESS_CLASSES; i++) bpf_map_update_elem(&process_rules, &i, rules + 16 * i, BPF_ANY);
    }
    return bindpolicy((struct bind_md *)b->data);
}
#endif
