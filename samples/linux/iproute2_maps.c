// SPDX-License-Identifier: MIT
// iproute2's 36-byte `struct bpf_elf_map` (include/bpf_elf.h) in section "maps", as tc classifiers built for
// `tc filter ... bpf obj` declare maps: id, pinning (PIN_GLOBAL_NS) and an inner map named by id. iproute2 puts a
// map with an id into slot `inner_idx` of every map-in-map whose `inner_id` is that id (-1 opts out).
#include "linux_bpf.h"

struct bpf_elf_map {
    __u32 type;
    __u32 size_key;
    __u32 size_value;
    __u32 max_elem;
    __u32 flags;
    __u32 id;
    __u32 pinning;
    __u32 inner_id;
    __u32 inner_idx;
};

#define PIN_GLOBAL_NS 2

SEC("maps")
struct bpf_elf_map class_of_mark = {
    .type = BPF_MAP_TYPE_HASH, .size_key = sizeof(__u32), .size_value = sizeof(__u32), .max_elem = 128,
    .id = 7, .pinning = PIN_GLOBAL_NS, .inner_idx = 3};

SEC("maps")
struct bpf_elf_map classes_by_device = {
    .type = BPF_MAP_TYPE_HASH_OF_MAPS, .size_key = sizeof(__u32), .size_value = sizeof(__u32), .max_elem = 16,
    .inner_id = 7};

SEC("maps")
struct bpf_elf_map template_only = {
    .type = BPF_MAP_TYPE_ARRAY, .size_key = sizeof(__u32), .size_value = sizeof(__u64), .max_elem = 4, .id = 9,
    .inner_idx = -1};

SEC("maps")
struct bpf_elf_map arrays_by_queue = {
    .type = BPF_MAP_TYPE_ARRAY_OF_MAPS, .size_key = sizeof(__u32), .size_value = sizeof(__u32), .max_elem = 8,
    .inner_id = 9};

SEC("classifier")
int classify(struct __sk_buff* skb)
{
    __u32 mark = skb->mark;
    __u32* class = bpf_map_lookup_elem(&class_of_mark, &mark);
    return class ? *class : -1;
}

char LICENSE[] SEC("license") = "GPL";
