// SPDX-License-Identifier: MIT
// UNSAFE variant of droppacket.c: checks that the Ethernet header fits, then reads a byte past it.
#include "bpf2sys.h"

SEC("xdp")
int oob_packet_read(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    if (data + 14 > data_end)
        return XDP_PASS;
    uint8_t protocol = data[23]; // UNSAFE: out_of_bounds
    return protocol == 17 ? XDP_DROP : XDP_PASS;
}
