/* Maps, helpers and program contexts for the benchmark programs that are real eBPF for Windows programs (issue 16:
 * flowtrack, tailchain, bindpolicy). Built twice from the same source, like every benchmark program:
 *   - for eBPF (`__bpf__`): legacy map records in section "maps" (`ebpf_map_definition_in_file_t`, contract §2.2;
 *     the bench objects carry no BTF) and the general helpers by id (contract §7.4);
 *   - for the host (the native clang/gcc -O2 baseline): the same records plus a pointer to host storage, and the
 *     helpers as opaque calls into `tests/src/bench/host_maps.h`, which implements them as the emulated runtime
 *     does (a hash map is a real chained hash table, an array a bounds-checked array, a tail call records the next
 *     program and the caller runs it after the current one returns, contract §3.4). */
#ifndef BENCH_MAPS_H
#define BENCH_MAPS_H
#include "common.h"

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PROG_ARRAY 3
#define BPF_ANY 0
#define BPF_NOEXIST 1

/* eBPF for Windows `xdp_md_t` and `bind_md_t` (contract §7.2). */
struct xdp_md {
    u64 data;
    u64 data_end;
    u64 data_meta;
    u32 ingress_ifindex;
};
struct bind_md {
    u64 app_id_start;
    u64 app_id_end;
    u64 process_id;
    u8 socket_address[16];
    u8 socket_address_length;
    u32 operation;
    u8 protocol;
};
#define XDP_PASS 1
#define XDP_DROP 2
#define BIND_PERMIT 0
#define BIND_DENY 1

/* `ebpf_map_definition_in_file_t`. */
struct bench_map_def {
    u32 type, key_size, value_size, max_entries, inner_map_idx, pinning, id, inner_id;
};

#ifdef __bpf__
#define BENCH_MAP(name, map_type, key_type, value_type, entries)                                                    \
    SEC("maps") struct bench_map_def name = {                                                                        \
        .type = map_type, .key_size = sizeof(key_type), .value_size = sizeof(value_type), .max_entries = entries}
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_tail_call)(void *ctx, void *prog_array, u32 index) = (void *)5;
#else
/* The record, then the host storage `host_maps.h` allocates on first use. */
struct bench_map {
    struct bench_map_def def;
    void *storage;
};
#define BENCH_MAP(name, map_type, key_type, value_type, entries)                                                    \
    struct bench_map name = {                                                                                        \
        {.type = map_type, .key_size = sizeof(key_type), .value_size = sizeof(value_type), .max_entries = entries}, \
        0}
void *bpf_map_lookup_elem(void *map, const void *key);
long bpf_map_update_elem(void *map, const void *key, const void *value, u64 flags);
long bpf_map_delete_elem(void *map, const void *key);
long bpf_tail_call(void *ctx, void *prog_array, u32 index);
/* Fills slot `index` of a program array with program `program` (what user mode does before attaching). */
void bench_prog_array_set(struct bench_map *map, u32 index, u64 (*program)(void *ctx));
/* Runs `program` on `ctx`, then every program it tail-called (contract §3.4: at most 33 tail calls). */
u64 bench_invoke(u64 (*program)(void *ctx), void *ctx);
#endif

static inline u16 be16(const u8 *p) { return (u16)((p[0] << 8) | p[1]); }
static inline u32 be32(const u8 *p) { return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | p[3]; }
#endif
