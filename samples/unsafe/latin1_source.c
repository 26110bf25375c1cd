// SPDX-License-Identifier: MIT
// UNSAFE variant of droppacket.c saved as Latin-1 (not UTF-8): the rejected line starts with a comment holding
// two accented bytes, so the source line BTF carries is not valid UTF-8 and the byte column of the statement
// lies past them. The diagnostic must render it (issue 17 #1: it used to panic in annotate-snippets).
#include "bpf2sys.h"

SEC("xdp")
int latin1_source(xdp_md_t* ctx)
{
    uint8_t* data = ctx->data;
    uint8_t* data_end = ctx->data_end;
    if (data + 14 > data_end)
        return XDP_PASS;
    /* déjà vu */ uint8_t protocol = data[23]; // UNSAFE: out_of_bounds
    return protocol == 17 ? XDP_DROP : XDP_PASS;
}
