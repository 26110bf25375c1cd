// SPDX-License-Identifier: MIT
// Global data in named sections, as libbpf-era programs declare it: `.rodata.config` (a read-only tunable),
// `.data.custom` and `.bss.counters` (section attributes), and `.rodata.str1.1` (string literals clang
// merges). Each becomes its own one-entry array map (libbpf's naming: the section name itself).
#include "bpf2sys.h"

const volatile uint32_t min_length SEC(".rodata.config") = 40;
uint64_t packets_seen SEC(".data.custom") = 1000;
uint64_t short_packets SEC(".bss.counters");

SEC("xdp")
int count_short_packets(xdp_md_t* ctx)
{
    uint64_t length = (uint8_t*)ctx->data_end - (uint8_t*)ctx->data;
    packets_seen += 1;
    if (length >= min_length)
        return XDP_PASS;
    short_packets += 1;
    bpf_trace_printk3("short packet: %u bytes", sizeof("short packet: %u bytes"), length);
    return XDP_DROP;
}
