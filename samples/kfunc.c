// SPDX-License-Identifier: MIT
// A BTF-resolved function (kfunc) of the sample extension: `sample_ebpf_extension_btf_lookup` stores `key` in
// `*value` when `value_size >= 8` and returns `key + value_size`. The driver calls it through the module's
// `btf_resolved_functions` table.
#include "bpf2sys.h"

extern int sample_ebpf_extension_btf_lookup(uint64_t key, void* value, uint32_t value_size)
    __ksym_module(SAMPLE_BTF_FUNCTION_MODULE);

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} lookup_results SEC(".maps");

SEC("sample_ext")
int lookup_through_kfunc(sample_program_context_t* ctx)
{
    uint64_t stored = 0;
    int sum = sample_ebpf_extension_btf_lookup(ctx->uint32_data, &stored, sizeof(stored));
    uint32_t key = 0;
    uint64_t* slot = bpf_map_lookup_elem(&lookup_results, &key);
    if (slot)
        *slot = stored;
    key = 1;
    slot = bpf_map_lookup_elem(&lookup_results, &key);
    if (slot)
        *slot = (uint32_t)sum;
    return sum;
}
