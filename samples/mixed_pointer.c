// SPDX-License-Identifier: MIT
// Mixed pointer types: the label logged for a packet is the interface's label, kept in a map value, once the
// interface has one, else a default label built on the stack. One pointer holds either, each kind at its own
// offset (the map value's text field, the stack buffer's slot), and both the helper and a load read through it.
#include "bpf2sys.h"

struct interface_label {
    uint64_t packets;
    char text[8];
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, struct interface_label);
    __uint(max_entries, 4);
} interface_labels SEC(".maps");

SEC("xdp")
int log_interface_label(xdp_md_t* ctx)
{
    char fallback[8] = {'i', 'f', '-', '0', 0, 0, 0, 0};
    fallback[3] += ctx->ingress_ifindex & 7;
    uint32_t key = ctx->ingress_ifindex & 3;
    struct interface_label* entry = bpf_map_lookup_elem(&interface_labels, &key);
    if (!entry)
        return XDP_PASS;
    const char* label = entry->text[0] ? entry->text : fallback;
    bpf_trace_printk2(label, sizeof fallback);
    entry->packets += 1;
    char first = label[0];
    // An unnamed interface takes its label from the first bytes of its first packet that carries one.
    char* data = ctx->data;
    if (!entry->text[0] && data + 8 <= (char*)ctx->data_end) {
        __builtin_memcpy(entry->text, data, 7);
        entry->text[7] = 0;
    }
    return first == '!' ? XDP_DROP : XDP_PASS;
}
