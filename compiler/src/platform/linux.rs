//! The Linux platform: the common program types (socket filter, XDP, tc/sched_cls, kprobe, tracepoint,
//! cgroup skb, cgroup sock_addr, sock_ops), their context layouts (`include/uapi/linux/bpf.h`) and the helpers
//! they commonly call, with Linux helper ids (`enum bpf_func_id`). Used to verify programs written for Linux
//! (`bpf2sys verify --platform linux`); drivers are only built for the Windows platform.
//!
//! Linux exposes `data`, `data_end` and `data_meta` of `__sk_buff` and `xdp_md` as 4-byte fields that the
//! kernel rewrites into pointer loads; the field sizes below say so, and the verifier reads them from here.

pub use super::linux_helpers::GLOBAL_HELPERS;
use super::linux_helpers::{
    CGROUP_SOCK_HELPERS, KPROBE_HELPERS, PERF_EVENT_HELPERS, SKB_HELPERS, SOCKET_LOOKUP_HELPERS, SOCK_ADDR_HELPERS,
    SOCK_OPS_HELPERS, TRACING_HELPERS, XDP_HELPERS,
};
use super::table::{field, map_type, object_field, prefix};
use super::{
    AttachType, ContextDescriptor, ContextField, Guid, HelperPrototype, MapTypeInfo, ObjectConventions, ObjectField,
    Platform, ProgramType, SectionPrefix, ZeroMaxEntries as Z,
};

/// `enum bpf_map_type` (coverage §6). `max_entries` 0: libbpf fills in PERF_EVENT_ARRAY (possible CPUs) and
/// STRUCT_OPS (1); the kernel requires 0 for the cgroup and local-storage maps (coverage §4.4).
pub static MAP_TYPES: &[MapTypeInfo] = &[
    map_type(1, "hash", Z::Refused),
    map_type(2, "array", Z::Refused),
    map_type(3, "prog_array", Z::Refused),
    map_type(4, "perf_event_array", Z::FilledIn),
    map_type(5, "percpu_hash", Z::Refused),
    map_type(6, "percpu_array", Z::Refused),
    map_type(7, "stack_trace", Z::Refused),
    map_type(8, "cgroup_array", Z::Refused),
    map_type(9, "lru_hash", Z::Refused),
    map_type(10, "lru_percpu_hash", Z::Refused),
    map_type(11, "lpm_trie", Z::Refused),
    map_type(12, "array_of_maps", Z::Refused),
    map_type(13, "hash_of_maps", Z::Refused),
    map_type(14, "devmap", Z::Refused),
    map_type(15, "sockmap", Z::Refused),
    map_type(16, "cpumap", Z::Refused),
    map_type(17, "xskmap", Z::Refused),
    map_type(18, "sockhash", Z::Refused),
    map_type(19, "cgroup_storage", Z::Required),
    map_type(20, "reuseport_sockarray", Z::Refused),
    map_type(21, "percpu_cgroup_storage", Z::Required),
    map_type(22, "queue", Z::Refused),
    map_type(23, "stack", Z::Refused),
    map_type(24, "sk_storage", Z::Required),
    map_type(25, "devmap_hash", Z::Refused),
    map_type(26, "struct_ops", Z::FilledIn),
    map_type(27, "ringbuf", Z::Refused),
    map_type(28, "inode_storage", Z::Required),
    map_type(29, "task_storage", Z::Required),
    map_type(30, "bloom_filter", Z::Refused),
    map_type(31, "user_ringbuf", Z::Refused),
    map_type(32, "cgrp_storage", Z::Required),
    map_type(33, "arena", Z::Refused),
];

/// `struct __sk_buff`. Writable fields are those tc programs may write (`tc_cls_act_is_valid_access`).
static SKB_FIELDS: &[ContextField] = &[
    field("len", 0, 4, false),
    field("pkt_type", 4, 4, false),
    field("mark", 8, 4, true),
    field("queue_mapping", 12, 4, true),
    field("protocol", 16, 4, false),
    field("vlan_present", 20, 4, false),
    field("vlan_tci", 24, 4, false),
    field("vlan_proto", 28, 4, false),
    field("priority", 32, 4, true),
    field("ingress_ifindex", 36, 4, false),
    field("ifindex", 40, 4, false),
    field("tc_index", 44, 4, true),
    field("cb", 48, 20, true),
    field("hash", 68, 4, false),
    field("tc_classid", 72, 4, true),
    field("data", 76, 4, false),
    field("data_end", 80, 4, false),
    field("napi_id", 84, 4, false),
    field("family", 88, 4, false),
    field("remote_ip4", 92, 4, false),
    field("local_ip4", 96, 4, false),
    field("remote_ip6", 100, 16, false),
    field("local_ip6", 116, 16, false),
    field("remote_port", 132, 4, false),
    field("local_port", 136, 4, false),
    field("data_meta", 140, 4, false),
    field("tstamp", 152, 8, true),
    field("wire_len", 160, 4, false),
    field("gso_segs", 164, 4, false),
    field("gso_size", 176, 4, false),
];

/// `struct xdp_md`.
static XDP_FIELDS: &[ContextField] = &[
    field("data", 0, 4, false),
    field("data_end", 4, 4, false),
    field("data_meta", 8, 4, false),
    field("ingress_ifindex", 12, 4, false),
    field("rx_queue_index", 16, 4, false),
    field("egress_ifindex", 20, 4, false),
];

/// `struct bpf_sock_addr`.
static SOCK_ADDR_FIELDS: &[ContextField] = &[
    field("user_family", 0, 4, false),
    field("user_ip4", 4, 4, true),
    field("user_ip6", 8, 16, true),
    field("user_port", 24, 4, true),
    field("family", 28, 4, false),
    field("type", 32, 4, false),
    field("protocol", 36, 4, false),
    field("msg_src_ip4", 40, 4, true),
    field("msg_src_ip6", 44, 16, true),
];

/// `struct bpf_sock_ops` (the `reply` union member is writable).
static SOCK_OPS_FIELDS: &[ContextField] = &[
    field("op", 0, 4, false),
    field("args", 4, 16, true),
    field("family", 20, 4, false),
    field("remote_ip4", 24, 4, false),
    field("local_ip4", 28, 4, false),
    field("remote_ip6", 32, 16, false),
    field("local_ip6", 48, 16, false),
    field("remote_port", 64, 4, false),
    field("local_port", 68, 4, false),
    field("is_fullsock", 72, 4, false),
    field("snd_cwnd", 76, 4, false),
    field("srtt_us", 80, 4, false),
    field("bpf_sock_ops_cb_flags", 84, 4, false),
    field("state", 88, 4, false),
    field("skb_data", 192, 8, false),
    field("skb_data_end", 200, 8, false),
    field("skb_len", 208, 4, false),
    field("skb_tcp_flags", 212, 4, false),
];

/// `struct pt_regs` on x86-64: 21 read-only 8-byte registers.
static PT_REGS_FIELDS: &[ContextField] = &[field("regs", 0, 168, false)];

/// A tracepoint record: the common header, then the tracepoint's own fields. The kernel bounds reads by
/// `PERF_MAX_TRACE_SIZE` (2048, `tp_prog_is_valid_access`), as PREVAIL does.
static TRACEPOINT_FIELDS: &[ContextField] = &[field("common", 0, 8, false), field("fields", 8, 2040, false)];

/// `struct bpf_raw_tracepoint_args`: up to `MAX_BPF_FUNC_ARGS` (12) u64 arguments (`raw_tp_prog_is_valid_access`).
static RAW_TRACEPOINT_FIELDS: &[ContextField] = &[field("args", 0, 96, false)];

/// `struct bpf_perf_event_data` on x86-64: pt_regs, then sample_period and addr.
static PERF_EVENT_FIELDS: &[ContextField] =
    &[field("regs", 0, 168, false), field("sample_period", 168, 8, false), field("addr", 176, 8, false)];

/// `struct bpf_sock` as cgroup/sock programs see it (the first 80 bytes; `bound_dev_if`, `mark` and
/// `priority` are writable at socket creation).
static CGROUP_SOCK_FIELDS: &[ContextField] = &[
    field("bound_dev_if", 0, 4, true),
    field("family", 4, 4, false),
    field("type", 8, 4, false),
    field("protocol", 12, 4, false),
    field("mark", 16, 4, true),
    field("priority", 20, 4, true),
    field("src_ip4", 24, 4, false),
    field("src_ip6", 28, 16, false),
    field("src_port", 44, 4, false),
    field("dst_port", 48, 4, false),
    field("dst_ip4", 52, 4, false),
    field("dst_ip6", 56, 16, false),
    field("state", 72, 4, false),
    field("rx_queue_mapping", 76, 4, false),
];

/// Tracing helpers plus the type's own (helpers are looked up by id, first match wins).
static KPROBE_ALL_HELPERS: &[HelperPrototype] =
    &concat_helpers::<{ KPROBE_HELPERS.len() + TRACING_HELPERS.len() }>(KPROBE_HELPERS, TRACING_HELPERS);
static PERF_EVENT_ALL_HELPERS: &[HelperPrototype] =
    &concat_helpers::<{ PERF_EVENT_HELPERS.len() + TRACING_HELPERS.len() }>(PERF_EVENT_HELPERS, TRACING_HELPERS);

/// The program types that may look sockets up (`linux_helpers::SOCKET_LOOKUP_HELPERS`).
static SKB_LOOKUP_HELPERS: &[HelperPrototype] =
    &concat_helpers::<{ SKB_HELPERS.len() + SOCKET_LOOKUP_HELPERS.len() }>(SKB_HELPERS, SOCKET_LOOKUP_HELPERS);
static XDP_LOOKUP_HELPERS: &[HelperPrototype] =
    &concat_helpers::<{ XDP_HELPERS.len() + SOCKET_LOOKUP_HELPERS.len() }>(XDP_HELPERS, SOCKET_LOOKUP_HELPERS);
static SOCK_ADDR_LOOKUP_HELPERS: &[HelperPrototype] = &concat_helpers::<
    { SOCK_ADDR_HELPERS.len() + SOCKET_LOOKUP_HELPERS.len() },
>(SOCK_ADDR_HELPERS, SOCKET_LOOKUP_HELPERS);

const fn concat_helpers<const N: usize>(a: &[HelperPrototype], b: &[HelperPrototype]) -> [HelperPrototype; N] {
    let mut out = [a[0]; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}

const fn attach(name: &'static str, bpf_attach_type: u32) -> AttachType {
    AttachType { name, guid: Guid::NULL, bpf_attach_type }
}

const fn program_type(
    name: &'static str,
    bpf_prog_type: u32,
    context: ContextDescriptor,
    context_fields: &'static [ContextField],
    section_prefixes: &'static [SectionPrefix],
    specific_helpers: &'static [HelperPrototype],
) -> ProgramType {
    ProgramType {
        name,
        guid: Guid::NULL,
        bpf_prog_type,
        is_privileged: false,
        context,
        context_fields,
        section_prefixes,
        specific_helpers,
    }
}

const SKB_CONTEXT: ContextDescriptor = ContextDescriptor { size: 192, data: 76, end: 80, meta: 140 };

pub static PROGRAM_TYPES: &[ProgramType] = &[
    program_type("socket_filter", 1, SKB_CONTEXT, SKB_FIELDS, &[prefix("socket", attach("socket", 0))], SKB_HELPERS),
    program_type(
        "kprobe",
        2,
        ContextDescriptor { size: 168, data: -1, end: -1, meta: -1 },
        PT_REGS_FIELDS,
        &[
            prefix("kprobe/", attach("kprobe", 0)),
            prefix("kretprobe/", attach("kretprobe", 0)),
            prefix("uprobe/", attach("uprobe", 0)),
            prefix("uretprobe/", attach("uretprobe", 0)),
        ],
        KPROBE_ALL_HELPERS,
    ),
    program_type(
        "sched_cls",
        3,
        SKB_CONTEXT,
        SKB_FIELDS,
        &[prefix("tc", attach("tc", 0)), prefix("classifier", attach("tc", 0))],
        SKB_LOOKUP_HELPERS,
    ),
    program_type(
        "tracepoint",
        5,
        ContextDescriptor { size: 2048, data: -1, end: -1, meta: -1 },
        TRACEPOINT_FIELDS,
        &[prefix("tracepoint/", attach("tracepoint", 0)), prefix("tp/", attach("tracepoint", 0))],
        TRACING_HELPERS,
    ),
    program_type(
        "perf_event",
        7,
        ContextDescriptor { size: 184, data: -1, end: -1, meta: -1 },
        PERF_EVENT_FIELDS,
        &[prefix("perf_event", attach("perf_event", 0))],
        PERF_EVENT_ALL_HELPERS,
    ),
    program_type(
        "cgroup_sock",
        9,
        ContextDescriptor { size: 80, data: -1, end: -1, meta: -1 },
        CGROUP_SOCK_FIELDS,
        &[
            prefix("cgroup/sock_create", attach("cgroup_inet_sock_create", 2)),
            prefix("cgroup/sock_release", attach("cgroup_inet_sock_release", 34)),
            prefix("cgroup/post_bind4", attach("cgroup_inet4_post_bind", 12)),
            prefix("cgroup/post_bind6", attach("cgroup_inet6_post_bind", 13)),
            prefix("cgroup/sock", attach("cgroup_inet_sock_create", 2)),
        ],
        CGROUP_SOCK_HELPERS,
    ),
    program_type(
        "raw_tracepoint",
        17,
        ContextDescriptor { size: 96, data: -1, end: -1, meta: -1 },
        RAW_TRACEPOINT_FIELDS,
        &[prefix("raw_tracepoint/", attach("raw_tracepoint", 0)), prefix("raw_tp/", attach("raw_tracepoint", 0))],
        TRACING_HELPERS,
    ),
    program_type(
        "xdp",
        6,
        ContextDescriptor { size: 24, data: 0, end: 4, meta: 8 },
        XDP_FIELDS,
        &[prefix("xdp", attach("xdp", 37))],
        XDP_LOOKUP_HELPERS,
    ),
    program_type(
        "cgroup_skb",
        8,
        SKB_CONTEXT,
        SKB_FIELDS,
        &[
            prefix("cgroup_skb/ingress", attach("cgroup_inet_ingress", 0)),
            prefix("cgroup_skb/egress", attach("cgroup_inet_egress", 1)),
        ],
        SKB_LOOKUP_HELPERS,
    ),
    program_type(
        "sock_ops",
        13,
        ContextDescriptor { size: 224, data: 192, end: 200, meta: -1 },
        SOCK_OPS_FIELDS,
        &[prefix("sockops", attach("cgroup_sock_ops", 3))],
        SOCK_OPS_HELPERS,
    ),
    program_type(
        "cgroup_sock_addr",
        18,
        ContextDescriptor { size: 72, data: -1, end: -1, meta: -1 },
        SOCK_ADDR_FIELDS,
        &[
            prefix("cgroup/bind4", attach("cgroup_inet4_bind", 8)),
            prefix("cgroup/bind6", attach("cgroup_inet6_bind", 9)),
            prefix("cgroup/connect4", attach("cgroup_inet4_connect", 10)),
            prefix("cgroup/connect6", attach("cgroup_inet6_connect", 11)),
            prefix("cgroup/sendmsg4", attach("cgroup_udp4_sendmsg", 14)),
            prefix("cgroup/sendmsg6", attach("cgroup_udp6_sendmsg", 15)),
        ],
        SOCK_ADDR_LOOKUP_HELPERS,
    ),
];

/// `struct bpf_sock` as a `PTR_TO_SOCK_COMMON` (`bpf_skc_lookup_tcp`) exposes it: `bpf_sock_is_valid_access`
/// without `type`, `protocol`, `mark` and `priority` (`bpf_sock_common_is_valid_access`), read-only. Narrow
/// loads stay inside one 4-byte word; `bound_dev_if` is read whole; `dst_port` is a 2-byte field that may also
/// be read as the 4-byte word it starts (whose other half is padding, never readable alone).
static SOCK_COMMON_FIELDS: &[ObjectField] = &[
    object_field("bound_dev_if", 0, 4, false),
    object_field("family", 4, 4, true),
    object_field("src_ip4", 24, 4, true),
    object_field("src_ip6[0]", 28, 4, true),
    object_field("src_ip6[1]", 32, 4, true),
    object_field("src_ip6[2]", 36, 4, true),
    object_field("src_ip6[3]", 40, 4, true),
    object_field("src_port", 44, 4, true),
    object_field("dst_port", 48, 2, true),
    object_field("dst_port (as u32)", 48, 4, false),
    object_field("dst_ip4", 52, 4, true),
    object_field("dst_ip6[0]", 56, 4, true),
    object_field("dst_ip6[1]", 60, 4, true),
    object_field("dst_ip6[2]", 64, 4, true),
    object_field("dst_ip6[3]", 68, 4, true),
    object_field("state", 72, 4, true),
    object_field("rx_queue_mapping", 76, 4, true),
];

/// The Linux platform.
pub static LINUX: Platform = Platform {
    name: "linux",
    program_types: PROGRAM_TYPES,
    global_helpers: GLOBAL_HELPERS,
    map_helper_rules: &[],
    map_types: MAP_TYPES,
    kfuncs: &[],
    data_meta_is_metadata: true,
    sock_common_fields: SOCK_COMMON_FIELDS,
    conventions: ObjectConventions::Linux,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_sections_select_program_types() {
        assert_eq!(LINUX.program_type_for_section("xdp").unwrap().0.name, "xdp");
        assert_eq!(LINUX.program_type_for_section("kprobe/sys_open").unwrap().0.name, "kprobe");
        assert_eq!(LINUX.program_type_for_section("tc").unwrap().0.name, "sched_cls");
        assert_eq!(LINUX.program_type_for_section("cgroup/connect4").unwrap().0.name, "cgroup_sock_addr");
        assert_eq!(LINUX.program_type_for_section("socket").unwrap().0.bpf_prog_type, 1);
        assert_eq!(LINUX.program_type_for_section("raw_tp/sched_switch").unwrap().0.name, "raw_tracepoint");
        assert_eq!(LINUX.program_type_for_section("perf_event").unwrap().0.context.size, 184);
        assert_eq!(LINUX.program_type_for_section("cgroup/sock_create").unwrap().0.name, "cgroup_sock");
        assert_eq!(LINUX.map_type_name(27), "ringbuf");
        assert_eq!(LINUX.map_type(4).unwrap().zero_max_entries, Z::FilledIn);
    }

    #[test]
    fn linux_helpers_are_per_program_type() {
        let xdp = LINUX.program_type_by_name("xdp").unwrap();
        let kprobe = LINUX.program_type_by_name("kprobe").unwrap();
        assert!(LINUX.helper(xdp, 44).unwrap().reallocate_packet);
        assert!(LINUX.helper(kprobe, 44).is_none());
        assert_eq!(LINUX.helper(kprobe, 1).unwrap().name, "bpf_map_lookup_elem");
        assert_eq!(LINUX.helper(xdp, 12).unwrap().name, "bpf_tail_call");
        // trace_printk: format and its size; the variadic rest is optional.
        assert_eq!(LINUX.helper(kprobe, 6).unwrap().arity(), 2);
        assert_eq!(LINUX.helper(kprobe, 58).unwrap().name, "bpf_override_return");
        let tp = LINUX.program_type_by_name("tracepoint").unwrap();
        assert!(LINUX.helper(tp, 58).is_none() && LINUX.helper(tp, 113).is_some());
        // Ring-buffer records everywhere; socket lookups and their release where Linux offers them.
        assert_eq!(LINUX.helper(tp, 132).unwrap().reference, super::super::Reference::Releases);
        let socket_filter = LINUX.program_type_by_name("socket_filter").unwrap();
        assert!(LINUX.helper(socket_filter, 84).is_none() && LINUX.helper(socket_filter, 86).is_none());
        for name in ["xdp", "sched_cls", "cgroup_skb", "cgroup_sock_addr"] {
            let pt = LINUX.program_type_by_name(name).unwrap();
            assert_eq!(LINUX.helper(pt, 85).unwrap().reference, super::super::Reference::Acquires, "{name}");
            assert_eq!(LINUX.helper(pt, 86).unwrap().name, "bpf_sk_release", "{name}");
        }
        let mut ids: Vec<u32> = GLOBAL_HELPERS.iter().map(|h| h.id).collect();
        for pt in PROGRAM_TYPES {
            ids.extend(pt.specific_helpers.iter().map(|h| h.id));
        }
        ids.sort_unstable();
        ids.dedup();
        assert!(ids.len() >= 100, "{} distinct Linux helpers", ids.len());
        for pt in PROGRAM_TYPES {
            for f in pt.context_fields {
                assert!(f.offset + f.size <= pt.context.size as u32, "{} field {} outside context", pt.name, f.name);
            }
        }
    }
}
