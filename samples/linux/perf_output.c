// SPDX-License-Identifier: MIT
// BTF maps as Linux tracing tools declare them: a PERF_EVENT_ARRAY without max_entries (libbpf fills in the
// number of possible CPUs), and a HASH_OF_MAPS with 8-byte keys whose `__array(values, ...)` only declares the
// inner map type, with no initialiser.
#include "linux_bpf.h"

struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, sizeof(__u32));
} events SEC(".maps");

struct pid_counts {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 4);
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
    __type(key, __u64);
    __uint(max_entries, 64);
    __array(values, struct pid_counts);
} counts_by_cgroup SEC(".maps");

struct event {
    __u64 pid_tgid;
    __u64 first_argument;
};

SEC("kprobe/do_sys_openat2")
int trace_open(void* ctx)
{
    struct event e = {.pid_tgid = bpf_get_current_pid_tgid()};
    // pt_regs->si on x86-64: the pointer argument, read as a number and dereferenced through the helper.
    __u64 address = *((const __u64*)ctx + 13);
    bpf_probe_read_kernel(&e.first_argument, sizeof(e.first_argument), (const void*)address);
    __u64 cgroup = e.pid_tgid >> 32;
    void* counts = bpf_map_lookup_elem(&counts_by_cgroup, &cgroup);
    if (counts) {
        __u32 slot = 0;
        __u64* n = bpf_map_lookup_elem(counts, &slot);
        if (n)
            *n += 1;
    }
    char fmt[] = "open by %llu\n";
    bpf_trace_printk(fmt, sizeof(fmt), e.pid_tgid);
    bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
