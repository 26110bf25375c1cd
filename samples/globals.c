// SPDX-License-Identifier: MIT
// Global variables in all three sections: .data (initialised, writable), .rodata (constant configuration),
// .bss (zero-initialised counters). Each section becomes a one-entry array map.
#include "bpf2sys.h"

volatile uint32_t drop_threshold = 1500;               // .data
const volatile uint16_t blocked_ports[4] = {23, 135, 445, 3389}; // .rodata
uint64_t packets_seen;                                  // .bss
uint64_t packets_dropped;                               // .bss

SEC("xdp")
int threshold_filter(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    __sync_fetch_and_add(&packets_seen, 1);
    if (data + 38 > data_end)
        return XDP_PASS;
    uint16_t port = (uint16_t)(data[36] << 8 | data[37]);
    for (int i = 0; i < 4; i++) {
        if (blocked_ports[i] == port) {
            __sync_fetch_and_add(&packets_dropped, 1);
            return XDP_DROP;
        }
    }
    if ((uint32_t)(data_end - data) > drop_threshold) {
        __sync_fetch_and_add(&packets_dropped, 1);
        return XDP_DROP;
    }
    return XDP_PASS;
}
