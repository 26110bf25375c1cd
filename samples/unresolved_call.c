// SPDX-License-Identifier: MIT
// One program calls a function no object defines (as when clang leaves a `memset` call behind, or an extern
// is never linked in): only that program is refused, naming the symbol; the other program still builds.
#include "bpf2sys.h"

extern uint64_t checksum_from_elsewhere(const void* data, uint32_t size);

SEC("xdp/checked")
int pass_checked(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    if (data + 8 > (uint8_t*)ctx->data_end)
        return XDP_DROP;
    return checksum_from_elsewhere(data, 8) ? XDP_PASS : XDP_DROP;
}

SEC("xdp/plain")
int pass_plain(xdp_md_t* ctx)
{
    return (uint8_t*)ctx->data + 14 <= (uint8_t*)ctx->data_end ? XDP_PASS : XDP_DROP;
}
