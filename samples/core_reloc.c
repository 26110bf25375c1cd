// SPDX-License-Identifier: MIT
// CO-RE relocations: the program reads its context through a struct marked `preserve_access_index`, as libbpf
// programs built against vmlinux.h read kernel structures, so clang records a `bpf_core_relo` in .BTF.ext for each
// field access (and one for the field-existence check). A Linux loader would rewrite those offsets for the running
// kernel's BTF; Windows has none, so bpf2sys keeps the offsets as compiled and warns that it applied nothing.
#include "bpf2sys.h"

struct xdp_view {
    void* data;
    void* data_end;
    uint64_t data_meta;
    uint32_t ingress_ifindex;
} __attribute__((preserve_access_index));

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 1);
} bytes_seen SEC(".maps");

SEC("xdp")
int count_bytes_core(xdp_md_t* ctx)
{
    struct xdp_view* view = (struct xdp_view*)ctx;
    char* data = view->data;
    char* data_end = view->data_end;
    uint32_t key = 0;
    uint64_t* total = bpf_map_lookup_elem(&bytes_seen, &key);
    if (!total)
        return XDP_PASS;
    // BPF_FIELD_EXISTS (2): 1 when compiled, and against the object's own BTF.
    if (__builtin_preserve_field_info(view->ingress_ifindex, 2))
        *total += data_end - data;
    return XDP_PASS;
}
