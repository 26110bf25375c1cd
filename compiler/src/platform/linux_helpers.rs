//! Linux helper prototypes (`enum bpf_func_id` numbering; C signatures from the "BPF helper function
//! descriptions" in `include/uapi/linux/bpf.h`, argument kinds from the kernel's `bpf_func_proto`s, coverage §7),
//! grouped by the program types that may call them.
//!
//! Only helpers whose arguments and result this verifier can model are listed: helpers that take kernel object
//! pointers other than the references below (BTF ids, dynptrs, timers, spin locks), return other kernel objects,
//! take callbacks or constant strings are left out, so a program calling them is refused as calling an unknown
//! helper rather than checked against a weaker prototype. Modelled results and references (docs/verifier.md §2,
//! "Helpers" and "References"): the socket lookups return a read-only socket-or-null and `bpf_ringbuf_reserve` a
//! record-or-null of the requested size, each a reference (`Reference::Acquires`) the program must give back
//! with `bpf_sk_release` or `bpf_ringbuf_submit`/`discard` (`Reference::Releases`) before it ends.

use super::table::proto;
use super::{HelperArg as A, HelperPrototype, HelperReturn as R, Reference};

const fn moves_packet(h: HelperPrototype) -> HelperPrototype {
    HelperPrototype { reallocate_packet: true, ..h }
}

/// Linux `is_acquire_function`: a non-null result is a reference the program must release.
const fn acquires(h: HelperPrototype) -> HelperPrototype {
    HelperPrototype { reference: Reference::Acquires, ..h }
}

/// Linux `OBJ_RELEASE` on the first argument: the call ends the reference that argument holds.
const fn releases(h: HelperPrototype) -> HelperPrototype {
    HelperPrototype { reference: Reference::Releases, ..h }
}

/// `bpf_probe_read*`-style: (dst, size, unsafe_ptr).
const fn probe_read(id: u32, name: &'static str) -> HelperPrototype {
    proto(id, name, R::Integer, &[A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything])
}

/// `struct bpf_sock *bpf_sk_lookup_tcp(void *ctx, struct bpf_sock_tuple *tuple, u32 tuple_size, u64 netns,
/// u64 flags)` and its siblings: (ctx, tuple, tuple size, netns, flags) → a referenced socket or null.
const fn socket_lookup(id: u32, name: &'static str, ret: R) -> HelperPrototype {
    acquires(proto(id, name, ret, &[A::PtrToCtx, A::PtrToReadableMem, A::ConstSize, A::Anything, A::Anything]))
}

/// The socket lookups and their release: tc, XDP, cgroup skb and cgroup sock_addr programs in Linux
/// (`tc_cls_act_func_proto`, `xdp_func_proto`, `cg_skb_func_proto`, `sock_addr_func_proto`); not socket filters.
pub const SOCKET_LOOKUP_HELPERS: &[HelperPrototype] = &[
    socket_lookup(84, "bpf_sk_lookup_tcp", R::PtrToSocketOrNull),
    socket_lookup(85, "bpf_sk_lookup_udp", R::PtrToSocketOrNull),
    releases(proto(86, "bpf_sk_release", R::Integer, &[A::PtrToBtfIdSockCommon])),
    socket_lookup(99, "bpf_skc_lookup_tcp", R::PtrToSockCommonOrNull),
];

/// Helpers of every program type (the kernel's `bpf_base_func_proto` and the common tracing/cgroup ones).
pub static GLOBAL_HELPERS: &[HelperPrototype] = &[
    proto(1, "bpf_map_lookup_elem", R::PtrToMapValueOrNull, &[A::PtrToMap, A::PtrToMapKey]),
    proto(2, "bpf_map_update_elem", R::Integer, &[A::PtrToMap, A::PtrToMapKey, A::PtrToMapValue, A::Anything]),
    proto(3, "bpf_map_delete_elem", R::Integer, &[A::PtrToMap, A::PtrToMapKey]),
    proto(5, "bpf_ktime_get_ns", R::Integer, &[]),
    // `long bpf_trace_printk(const char *fmt, u32 fmt_size, ...)`: up to three more arguments, all optional.
    proto(6, "bpf_trace_printk", R::Integer, &[A::PtrToReadableMem, A::ConstSize]),
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
    proto(42, "bpf_get_numa_node_id", R::Integer, &[]),
    proto(80, "bpf_get_current_cgroup_id", R::Integer, &[]),
    proto(87, "bpf_map_push_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue, A::Anything]),
    proto(88, "bpf_map_pop_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue]),
    proto(89, "bpf_map_peek_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue]),
    proto(118, "bpf_jiffies64", R::Integer, &[]),
    proto(125, "bpf_ktime_get_boot_ns", R::Integer, &[]),
    proto(130, "bpf_ringbuf_output", R::Integer, &[A::PtrToMap, A::PtrToReadableMem, A::ConstSizeOrZero, A::Anything]),
    acquires(proto(
        131,
        "bpf_ringbuf_reserve",
        R::PtrToAllocMemOrNull,
        &[A::PtrToMap, A::ConstAllocSizeOrZero, A::Anything],
    )),
    // `void bpf_ringbuf_submit(void *data, u64 flags)`, `void bpf_ringbuf_discard(void *data, u64 flags)`.
    releases(proto(132, "bpf_ringbuf_submit", R::Integer, &[A::PtrToAllocMem, A::Anything])),
    releases(proto(133, "bpf_ringbuf_discard", R::Integer, &[A::PtrToAllocMem, A::Anything])),
    proto(134, "bpf_ringbuf_query", R::Integer, &[A::PtrToMap, A::Anything]),
    proto(160, "bpf_ktime_get_coarse_ns", R::Integer, &[]),
    proto(195, "bpf_map_lookup_percpu_elem", R::PtrToMapValueOrNull, &[A::PtrToMap, A::PtrToMapKey, A::Anything]),
    proto(208, "bpf_ktime_get_tai_ns", R::Integer, &[]),
];

/// Helpers of programs that see an `__sk_buff` (socket filter, tc, cgroup skb).
pub const SKB_HELPERS: &[HelperPrototype] = &[
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
    // Linux `bpf_helper_changes_pkt_data` lists it: un-cloning the skb (`__bpf_try_make_writable`) may move the data.
    moves_packet(proto(13, "bpf_clone_redirect", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything])),
    proto(17, "bpf_get_cgroup_classid", R::Integer, &[A::PtrToCtx]),
    moves_packet(proto(18, "bpf_skb_vlan_push", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything])),
    moves_packet(proto(19, "bpf_skb_vlan_pop", R::Integer, &[A::PtrToCtx])),
    proto(20, "bpf_skb_get_tunnel_key", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(21, "bpf_skb_set_tunnel_key", R::Integer, &[A::PtrToCtx, A::PtrToReadableMem, A::ConstSize, A::Anything]),
    proto(23, "bpf_redirect", R::Integer, &[A::Anything, A::Anything]),
    proto(24, "bpf_get_route_realm", R::Integer, &[A::PtrToCtx]),
    proto(26, "bpf_skb_load_bytes", R::Integer, &[A::PtrToCtx, A::Anything, A::PtrToWritableMem, A::ConstSize]),
    proto(
        28,
        "bpf_csum_diff",
        R::Integer,
        &[A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::Anything],
    ),
    proto(29, "bpf_skb_get_tunnel_opt", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSize]),
    proto(30, "bpf_skb_set_tunnel_opt", R::Integer, &[A::PtrToCtx, A::PtrToReadableMem, A::ConstSize]),
    moves_packet(proto(31, "bpf_skb_change_proto", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything])),
    proto(32, "bpf_skb_change_type", R::Integer, &[A::PtrToCtx, A::Anything]),
    proto(33, "bpf_skb_under_cgroup", R::Integer, &[A::PtrToCtx, A::PtrToMap, A::Anything]),
    proto(34, "bpf_get_hash_recalc", R::Integer, &[A::PtrToCtx]),
    moves_packet(proto(38, "bpf_skb_change_tail", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything])),
    moves_packet(proto(39, "bpf_skb_pull_data", R::Integer, &[A::PtrToCtx, A::Anything])),
    proto(40, "bpf_csum_update", R::Integer, &[A::PtrToCtx, A::Anything]),
    proto(41, "bpf_set_hash_invalid", R::Integer, &[A::PtrToCtx]),
    moves_packet(proto(43, "bpf_skb_change_head", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything])),
    proto(46, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    proto(47, "bpf_get_socket_uid", R::Integer, &[A::PtrToCtx]),
    proto(48, "bpf_set_hash", R::Integer, &[A::PtrToCtx, A::Anything]),
    moves_packet(proto(50, "bpf_skb_adjust_room", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything, A::Anything])),
    proto(
        68,
        "bpf_skb_load_bytes_relative",
        R::Integer,
        &[A::PtrToCtx, A::Anything, A::PtrToWritableMem, A::ConstSize, A::Anything],
    ),
    proto(69, "bpf_fib_lookup", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(79, "bpf_skb_cgroup_id", R::Integer, &[A::PtrToCtx]),
    proto(83, "bpf_skb_ancestor_cgroup_id", R::Integer, &[A::PtrToCtx, A::Anything]),
    proto(97, "bpf_skb_ecn_set_ce", R::Integer, &[A::PtrToCtx]),
    proto(122, "bpf_get_netns_cookie", R::Integer, &[A::PtrToCtxOrNull]),
    proto(135, "bpf_csum_level", R::Integer, &[A::PtrToCtx, A::Anything]),
    proto(151, "bpf_skb_cgroup_classid", R::Integer, &[A::PtrToCtx]),
    proto(
        152,
        "bpf_redirect_neigh",
        R::Integer,
        &[A::Anything, A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::Anything],
    ),
    proto(155, "bpf_redirect_peer", R::Integer, &[A::Anything, A::Anything]),
    proto(192, "bpf_skb_set_tstamp", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything]),
];

pub const XDP_HELPERS: &[HelperPrototype] = &[
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
    proto(69, "bpf_fib_lookup", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(188, "bpf_xdp_get_buff_len", R::Integer, &[A::PtrToCtx]),
    proto(189, "bpf_xdp_load_bytes", R::Integer, &[A::PtrToCtx, A::Anything, A::PtrToWritableMem, A::ConstSize]),
    proto(190, "bpf_xdp_store_bytes", R::Integer, &[A::PtrToCtx, A::Anything, A::PtrToReadableMem, A::ConstSize]),
];

/// Helpers of kprobe, tracepoint, raw tracepoint and perf_event programs (`bpf_tracing_func_proto`).
pub const TRACING_HELPERS: &[HelperPrototype] = &[
    probe_read(4, "bpf_probe_read"),
    proto(22, "bpf_perf_event_read", R::Integer, &[A::PtrToMap, A::Anything]),
    proto(27, "bpf_get_stackid", R::Integer, &[A::PtrToCtx, A::PtrToMap, A::Anything]),
    proto(35, "bpf_get_current_task", R::Integer, &[]),
    proto(36, "bpf_probe_write_user", R::Integer, &[A::Anything, A::PtrToReadableMem, A::ConstSize]),
    proto(37, "bpf_current_task_under_cgroup", R::Integer, &[A::PtrToMap, A::Anything]),
    proto(45, "bpf_probe_read_str", R::Integer, &[A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(55, "bpf_perf_event_read_value", R::Integer, &[A::PtrToMap, A::Anything, A::PtrToWritableMem, A::ConstSize]),
    proto(67, "bpf_get_stack", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything]),
    proto(109, "bpf_send_signal", R::Integer, &[A::Anything]),
    probe_read(112, "bpf_probe_read_user"),
    probe_read(113, "bpf_probe_read_kernel"),
    proto(114, "bpf_probe_read_user_str", R::Integer, &[A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(115, "bpf_probe_read_kernel_str", R::Integer, &[A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(117, "bpf_send_signal_thread", R::Integer, &[A::Anything]),
    proto(
        120,
        "bpf_get_ns_current_pid_tgid",
        R::Integer,
        &[A::Anything, A::Anything, A::PtrToWritableMem, A::ConstSize],
    ),
    proto(173, "bpf_get_func_ip", R::Integer, &[A::PtrToCtx]),
    proto(174, "bpf_get_attach_cookie", R::Integer, &[A::PtrToCtx]),
    proto(176, "bpf_get_branch_snapshot", R::Integer, &[A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything]),
    proto(
        177,
        "bpf_trace_vprintk",
        R::Integer,
        &[A::PtrToReadableMem, A::ConstSize, A::PtrToReadableMemOrNull, A::ConstSizeOrZero],
    ),
];

/// kprobe programs may also override the probed function's return value.
pub const KPROBE_HELPERS: &[HelperPrototype] =
    &[proto(58, "bpf_override_return", R::Integer, &[A::PtrToCtx, A::Anything])];

/// perf_event programs read their own counters and branch records.
pub const PERF_EVENT_HELPERS: &[HelperPrototype] = &[
    proto(56, "bpf_perf_prog_read_value", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSize]),
    proto(
        119,
        "bpf_read_branch_records",
        R::Integer,
        &[A::PtrToCtx, A::PtrToWritableMemOrNull, A::ConstSizeOrZero, A::Anything],
    ),
];

pub const SOCK_ADDR_HELPERS: &[HelperPrototype] = &[
    proto(46, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    proto(64, "bpf_bind", R::Integer, &[A::PtrToCtx, A::PtrToReadableMem, A::ConstSize]),
    proto(122, "bpf_get_netns_cookie", R::Integer, &[A::PtrToCtxOrNull]),
];

pub static CGROUP_SOCK_HELPERS: &[HelperPrototype] = &[
    proto(46, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    proto(122, "bpf_get_netns_cookie", R::Integer, &[A::PtrToCtxOrNull]),
];

pub static SOCK_OPS_HELPERS: &[HelperPrototype] = &[
    proto(46, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    proto(
        49,
        "bpf_setsockopt",
        R::Integer,
        &[A::PtrToCtx, A::Anything, A::Anything, A::PtrToReadableMem, A::ConstSize],
    ),
    proto(53, "bpf_sock_map_update", R::Integer, &[A::PtrToCtx, A::PtrToMap, A::PtrToMapKey, A::Anything]),
    proto(
        57,
        "bpf_getsockopt",
        R::Integer,
        &[A::PtrToCtx, A::Anything, A::Anything, A::PtrToWritableMem, A::ConstSize],
    ),
    proto(59, "bpf_sock_ops_cb_flags_set", R::Integer, &[A::PtrToCtx, A::Anything]),
    proto(70, "bpf_sock_hash_update", R::Integer, &[A::PtrToCtx, A::PtrToMap, A::PtrToMapKey, A::Anything]),
    proto(142, "bpf_load_hdr_opt", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSize, A::Anything]),
    proto(143, "bpf_store_hdr_opt", R::Integer, &[A::PtrToCtx, A::PtrToReadableMem, A::ConstSize, A::Anything]),
    proto(144, "bpf_reserve_hdr_opt", R::Integer, &[A::PtrToCtx, A::Anything, A::Anything]),
];
