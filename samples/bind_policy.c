// SPDX-License-Identifier: MIT
// Bind hook: deny binds by processes listed in a hash map and count bind operations per process.
#include "bpf2sys.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, uint32_t);
    __uint(max_entries, 1024);
} denied_processes SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint64_t);
    __type(value, uint64_t);
    __uint(max_entries, 1024);
} bind_counts SEC(".maps");

SEC("bind")
bind_action_t authorize_bind(bind_md_t* ctx)
{
    uint64_t pid = ctx->process_id;
    if (ctx->operation != BIND_OPERATION_BIND)
        return BIND_PERMIT;
    uint64_t* count = bpf_map_lookup_elem(&bind_counts, &pid);
    if (count) {
        __sync_fetch_and_add(count, 1);
    } else {
        uint64_t one = 1;
        bpf_map_update_elem(&bind_counts, &pid, &one, 0);
    }
    uint32_t* denied = bpf_map_lookup_elem(&denied_processes, &pid);
    if (denied && *denied)
        return BIND_DENY;
    return BIND_PERMIT;
}
