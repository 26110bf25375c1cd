//! The Linux platform: the common program types (socket filter, XDP, tc/sched_cls, kprobe, tracepoint,
//! cgroup skb, cgroup sock_addr, sock_ops), their context layouts (`include/uapi/linux/bpf.h`) and the helpers
//! they commonly call, with Linux helper ids (`enum bpf_func_id`). Used to verify programs written for Linux
//! (`bpf2sys verify --platform linux`); drivers are only built for the Windows platform.
//!
//! Linux exposes `data`, `data_end` and `data_meta` of `__sk_buff` and `xdp_md` as 4-byte fields that the
//! kernel rewrites into pointer loads; the field sizes below say so, and the verifier reads them from here.

use super::table::{field, prefix, proto};
use super::{
    AttachType, ContextDescriptor, ContextField, Guid, HelperArg as A, HelperPrototype, HelperReturn as R, Platform,
    ProgramType, SectionPrefix,
};

const fn moves_packet(h: HelperPrototype) -> HelperPrototype {
    HelperPrototype { reallocate_packet: true, ..h }
}

/// Helpers every program type may call.
pub static GLOBAL_HELPERS: &[HelperPrototype] = &[
    proto(1, "bpf_map_lookup_elem", R::PtrToMapValueOrNull, &[A::PtrToMap, A::PtrToMapKey]),
    proto(2, "bpf_map_update_elem", R::Integer, &[A::PtrToMap, A::PtrToMapKey, A::PtrToMapValue, A::Anything]),
    proto(3, "bpf_map_delete_elem", R::Integer, &[A::PtrToMap, A::PtrToMapKey]),
    proto(5, "bpf_ktime_get_ns", R::Integer, &[]),
    proto(
        6,
        "bpf_trace_printk",
        R::Integer,
        &[A::PtrToReadableMem, A::ConstSize, A::Anything, A::Anything, A::Anything],
    ),
    proto(7, "bpf_get_prandom_u32", R::Integer, &[]),
    proto(8, "bpf_get_smp_processor_id", R::Integer, &[]),
    proto(12, "bpf_tail_call", R::IntegerOrNoReturnIfSucceed, &[A::PtrToCtx, A::PtrToMapOfPrograms, A::Anything]),
    proto(14, "bpf_get_current_pid_tgid", R::Integer, &[]),
    proto(15, "bpf_get_current_uid_gid", R::Integer, &[]),
    proto(16, "bpf_get_current_comm", R::Integer, &[A::PtrToWritableMem, A::ConstSize]),
    proto(
        25,
        "bpf_perf_event_output",
        R::Integer,
        &[A::PtrToCtx, A::PtrToMap, A::Anything, A::PtrToReadableMem, A::ConstSizeOrZero],
    ),
    proto(80, "bpf_get_current_cgroup_id", R::Integer, &[]),
    proto(87, "bpf_map_push_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue, A::Anything]),
    proto(88, "bpf_map_pop_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue]),
    proto(89, "bpf_map_peek_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue]),
    proto(125, "bpf_ktime_get_boot_ns", R::Integer, &[]),
    proto(130, "bpf_ringbuf_output", R::Integer, &[A::PtrToMap, A::PtrToReadableMem, A::ConstSizeOrZero, A::Anything]),
];

/// Helpers of programs that see an `__sk_buff` (socket filter, tc, cgroup skb).
static SKB_HELPERS: &[HelperPrototype] = &[
    moves_packet(proto(
        9,
        "bpf_skb_store_bytes",
        R::Integer,
        &[A::PtrToCtx, A::Anything, A::PtrToReadableMem, A::ConstSize, A::Anything],
    )),
    moves_packet(proto(
        10,
        "bpf_l3_csum_replace",
        R::Integer,
        &[A::PtrToCtx, A::Anything, A::Anything, A::Anything, A::Anything],
    )),
    moves_packet(proto(
        11,
        "bpf_l4_csum_replace",
        R::Integer,
        &[A::PtrToCtx, A::Anything, A::Anything, A::Anything, A::Anything],
    )),
    proto(13, "bpf_clone_redirect", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything]),
    proto(23, "bpf_redirect", R::Integer, &[A::Anything, A::Anything]),
    proto(26, "bpf_skb_load_bytes", R::Integer, &[A::PtrToCtx, A::Anything, A::PtrToWritableMem, A::ConstSize]),
    proto(
        28,
        "bpf_csum_diff",
        R::Integer,
        &[A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::Anything],
    ),
    proto(34, "bpf_get_hash_recalc", R::Integer, &[A::PtrToCtx]),
    moves_packet(proto(39, "bpf_skb_pull_data", R::Integer, &[A::PtrToCtx, A::Anything])),
    proto(46, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    moves_packet(proto(50, "bpf_skb_adjust_room", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything, A::Anything])),
];

static XDP_HELPERS: &[HelperPrototype] = &[
    proto(23, "bpf_redirect", R::Integer, &[A::Anything, A::Anything]),
    proto(
        28,
        "bpf_csum_diff",
        R::Integer,
        &[A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::Anything],
    ),
    moves_packet(proto(44, "bpf_xdp_adjust_head", R::Integer, &[A::PtrToCtx, A::Anything])),
    proto(51, "bpf_redirect_map", R::Integer, &[A::PtrToMap, A::Anything, A::Anything]),
    moves_packet(proto(54, "bpf_xdp_adjust_meta", R::Integer, &[A::PtrToCtx, A::Anything])),
    moves_packet(proto(65, "bpf_xdp_adjust_tail", R::Integer, &[A::PtrToCtx, A::Anything])),
];

static TRACING_HELPERS: &[HelperPrototype] = &[
    proto(4, "bpf_probe_read", R::Integer, &[A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything]),
    proto(35, "bpf_get_current_task", R::Integer, &[]),
    proto(45, "bpf_probe_read_str", R::Integer, &[A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(67, "bpf_get_stack", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything]),
    proto(112, "bpf_probe_read_user", R::Integer, &[A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything]),
    proto(113, "bpf_probe_read_kernel", R::Integer, &[A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything]),
    proto(114, "bpf_probe_read_user_str", R::Integer, &[A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(115, "bpf_probe_read_kernel_str", R::Integer, &[A::PtrToWritableMem, A::ConstSize, A::Anything]),
];

static SOCK_ADDR_HELPERS: &[HelperPrototype] = &[
    proto(46, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    proto(64, "bpf_bind", R::Integer, &[A::PtrToCtx, A::PtrToReadableMem, A::ConstSize]),
];

static SOCK_OPS_HELPERS: &[HelperPrototype] = &[
    proto(46, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    proto(59, "bpf_sock_ops_cb_flags_set", R::Integer, &[A::PtrToCtx, A::Anything]),
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

/// A tracepoint record's common header; fields past it depend on the tracepoint and are not modelled.
static TRACEPOINT_FIELDS: &[ContextField] = &[field("common", 0, 8, false)];

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
        ],
        TRACING_HELPERS,
    ),
    program_type(
        "sched_cls",
        3,
        SKB_CONTEXT,
        SKB_FIELDS,
        &[prefix("tc", attach("tc", 0)), prefix("classifier", attach("tc", 0))],
        SKB_HELPERS,
    ),
    program_type(
        "tracepoint",
        5,
        ContextDescriptor { size: 8, data: -1, end: -1, meta: -1 },
        TRACEPOINT_FIELDS,
        &[prefix("tracepoint/", attach("tracepoint", 0)), prefix("tp/", attach("tracepoint", 0))],
        TRACING_HELPERS,
    ),
    program_type(
        "xdp",
        6,
        ContextDescriptor { size: 24, data: 0, end: 4, meta: 8 },
        XDP_FIELDS,
        &[prefix("xdp", attach("xdp", 37))],
        XDP_HELPERS,
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
        SKB_HELPERS,
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
        SOCK_ADDR_HELPERS,
    ),
];

/// The Linux platform.
/// Linux numbers map types differently from the module's (Windows) numbering, so no map/helper rules apply.
pub static LINUX: Platform =
    Platform { name: "linux", program_types: PROGRAM_TYPES, global_helpers: GLOBAL_HELPERS, map_helper_rules: &[] };

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
    }

    #[test]
    fn linux_helpers_are_per_program_type() {
        let xdp = LINUX.program_type_by_name("xdp").unwrap();
        let kprobe = LINUX.program_type_by_name("kprobe").unwrap();
        assert!(LINUX.helper(xdp, 44).unwrap().reallocate_packet);
        assert!(LINUX.helper(kprobe, 44).is_none());
        assert_eq!(LINUX.helper(kprobe, 1).unwrap().name, "bpf_map_lookup_elem");
        assert_eq!(LINUX.helper(xdp, 12).unwrap().name, "bpf_tail_call");
        for pt in PROGRAM_TYPES {
            for f in pt.context_fields {
                assert!(f.offset + f.size <= pt.context.size as u32, "{} field {} outside context", pt.name, f.name);
            }
        }
    }
}
