// SPDX-License-Identifier: MIT
// Minimal Linux-convention definitions for the objects in samples/linux (enum bpf_map_type numbering, libbpf's
// map macros, helper ids of enum bpf_func_id from include/uapi/linux/bpf.h). Verified with
// `bpf2sys verify --platform linux`; drivers are built only for eBPF for Windows.
#ifndef LINUX_BPF_H
#define LINUX_BPF_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val)* name
#define __array(name, val) typeof(val)* name[]

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERF_EVENT_ARRAY 4
#define BPF_MAP_TYPE_ARRAY_OF_MAPS 12
#define BPF_MAP_TYPE_HASH_OF_MAPS 13
#define BPF_F_CURRENT_CPU 0xffffffffULL

static void* (*bpf_map_lookup_elem)(void* map, const void* key) = (void*)1;
static long (*bpf_trace_printk)(const char* fmt, __u32 fmt_size, ...) = (void*)6;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void*)14;
static long (*bpf_perf_event_output)(void* ctx, void* map, __u64 flags, void* data, __u64 size) = (void*)25;
static long (*bpf_probe_read_kernel)(void* dst, __u32 size, const void* unsafe_ptr) = (void*)113;

struct __sk_buff {
    __u32 len;
    __u32 pkt_type;
    __u32 mark;
    __u32 queue_mapping;
    __u32 protocol;
    __u32 vlan_present;
    __u32 vlan_tci;
    __u32 vlan_proto;
    __u32 priority;
    __u32 ingress_ifindex;
    __u32 ifindex;
    __u32 tc_index;
    __u32 cb[5];
    __u32 hash;
    __u32 tc_classid;
    __u32 data;
    __u32 data_end;
};

#endif
