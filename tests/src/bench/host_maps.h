/* Host maps, helpers and the tail-call runtime for the native baseline of the benchmark programs that are real eBPF
 * for Windows programs (samples/bench/bench_maps.h). Same semantics as the emulated runtime, same structures as
 * the bench engines' Rust port (maps.rs next to this file): a hash map is a chained hash table over a preallocated
 * node pool (node n owns value slot n - 1, which never moves while its entry lives), an array map a bounds-checked
 * array, and a tail call records the next program, which bench_invoke runs after the current one returns
 * (contract §3.4). Storage is allocated on a map's first use. */
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The calling convention of the helpers and of everything they call: the platform's, unless the includer says
 * otherwise. `host_engines.c` compiles this file again with `__attribute__((ms_abi))` for the engines that run
 * Windows x64 code (bpf2sys's), so that their helper calls run these very instructions with no change of
 * convention on the way, as the native baseline's calls do. */
#ifndef BENCH_HELPER_ABI
#define BENCH_HELPER_ABI
#endif

struct bench_map {
    uint32_t type, key_size, value_size, max_entries, inner_map_idx, pinning, id, inner_id;
    void *storage;
};
struct bench_hash {
    uint32_t mask, free_head, count;
    uint32_t *buckets, *next;
    uint8_t *keys, *values;
};

BENCH_HELPER_ABI static uint32_t key_hash(const uint8_t *k, uint32_t n)
{
    uint32_t h = 0x811c9dc5u, i = 0;
    for (; i + 4 <= n; i += 4) { uint32_t w; memcpy(&w, k + i, 4); h = map_hash(h ^ w); }
    for (; i < n; i++) h = (h ^ k[i]) * 0x01000193u;
    return h;
}

BENCH_HELPER_ABI static void *bench_storage(struct bench_map *m)
{
    if (m->storage) return m->storage;
    if (m->type == 1) {
        uint32_t nb = 1;
        while (nb < 2 * m->max_entries) nb <<= 1;
        struct bench_hash *h = calloc(1, sizeof *h);
        h->mask = nb - 1;
        h->buckets = calloc(nb, 4);
        h->next = calloc(m->max_entries + 1, 4);
        for (uint32_t n = 1; n < m->max_entries; n++) h->next[n] = n + 1;
        h->free_head = m->max_entries > 0;
        h->keys = calloc(m->max_entries, m->key_size);
        h->values = calloc(m->max_entries, m->value_size);
        m->storage = h;
    } else if (m->type == 2) {
        m->storage = calloc(m->max_entries, m->value_size);
    } else {
        m->storage = calloc(m->max_entries, sizeof(void *));
    }
    return m->storage;
}

/* The node holding `key` (0: none), its predecessor and its bucket. */
BENCH_HELPER_ABI static uint32_t hash_find(struct bench_map *m, struct bench_hash *h, const uint8_t *key, uint32_t *prev, uint32_t *bucket)
{
    *bucket = key_hash(key, m->key_size) & h->mask;
    uint32_t p = 0, n = h->buckets[*bucket];
    while (n && memcmp(h->keys + (size_t)(n - 1) * m->key_size, key, m->key_size) != 0) { p = n; n = h->next[n]; }
    *prev = p;
    return n;
}

BENCH_HELPER_ABI void *bpf_map_lookup_elem(void *map, const void *key)
{
    struct bench_map *m = map;
    void *s = bench_storage(m);
    if (m->type == 1) {
        struct bench_hash *h = s;
        uint32_t prev, bucket, n = hash_find(m, h, key, &prev, &bucket);
        return n ? h->values + (size_t)(n - 1) * m->value_size : NULL;
    }
    if (m->type == 2) {
        uint32_t k; memcpy(&k, key, 4);
        return k < m->max_entries ? (uint8_t *)s + (size_t)k * m->value_size : NULL;
    }
    return NULL;
}

BENCH_HELPER_ABI long bpf_map_update_elem(void *map, const void *key, const void *value, uint64_t flags)
{
    struct bench_map *m = map;
    void *s = bench_storage(m);
    uint8_t *slot;
    if (m->type == 1) {
        struct bench_hash *h = s;
        uint32_t prev, bucket, n = hash_find(m, h, key, &prev, &bucket);
        if (n) {
            if (flags == 1) return -17; /* BPF_NOEXIST: EEXIST */
        } else {
            if (flags == 2) return -2; /* BPF_EXIST: ENOENT */
            if (h->count >= m->max_entries) return -7; /* E2BIG */
            n = h->free_head;
            h->free_head = h->next[n];
            memcpy(h->keys + (size_t)(n - 1) * m->key_size, key, m->key_size);
            h->next[n] = h->buckets[bucket];
            h->buckets[bucket] = n;
            h->count++;
        }
        slot = h->values + (size_t)(n - 1) * m->value_size;
    } else if (m->type == 2) {
        uint32_t k; memcpy(&k, key, 4);
        if (k >= m->max_entries) return -7;
        if (flags == 1) return -17;
        slot = (uint8_t *)s + (size_t)k * m->value_size;
    } else {
        return -22;
    }
    memcpy(slot, value, m->value_size);
    return 0;
}

BENCH_HELPER_ABI long bpf_map_delete_elem(void *map, const void *key)
{
    struct bench_map *m = map;
    void *s = bench_storage(m);
    if (m->type != 1) return -22;
    struct bench_hash *h = s;
    uint32_t prev, bucket, n = hash_find(m, h, key, &prev, &bucket);
    if (!n) return -2;
    if (prev) h->next[prev] = h->next[n]; else h->buckets[bucket] = h->next[n];
    h->next[n] = h->free_head;
    h->free_head = n;
    h->count--;
    return 0;
}

typedef uint64_t (*bench_program)(void *ctx);
static bench_program bench_next_program;
static uint32_t bench_tail_calls;

BENCH_HELPER_ABI long bpf_tail_call(void *ctx, void *prog_array, uint32_t index)
{
    (void)ctx;
    struct bench_map *m = prog_array;
    bench_program *slots = bench_storage(m);
    if (bench_tail_calls >= 33) return -31; /* MAX_TAIL_CALL_CNT */
    if (index >= m->max_entries || !slots[index]) return -22;
    bench_next_program = slots[index];
    bench_tail_calls++;
    return 0;
}

void bench_prog_array_set(struct bench_map *m, uint32_t index, bench_program program)
{
    bench_program *slots = bench_storage(m);
    if (index < m->max_entries) slots[index] = program;
}

uint64_t bench_invoke(bench_program program, void *ctx)
{
    bench_tail_calls = 0;
    for (;;) {
        bench_next_program = NULL;
        uint64_t r = program(ctx);
        if (!bench_next_program) return r;
        program = bench_next_program;
    }
}
