//! The eBPF for Windows platform (native-module-contract.md §7): program types with their GUIDs, section
//! prefixes and contexts, and the general helpers of EbpfCore with their prototypes.

use super::table::{field, map_type, prefix, proto};
use super::{
    AttachType, ContextDescriptor, ContextField, Guid, HelperArg as A, HelperPrototype, HelperReturn as R,
    KfuncPrototype, MapHelperRule, MapTypeInfo, ObjectConventions, Platform, ProgramType, ZeroMaxEntries as Z,
};

/// The "eBPF native module" NPI id (contract §1.3); EbpfCore registers its provider under the same id.
pub const NATIVE_MODULE_NPI_ID: Guid = Guid::from_fields(0xc847aac8, 0xa6f2, 0x4b53, 0xaea3, 0xf4a94b9a80cb);
/// EbpfCore's provider module id (contract §1.3).
pub const EBPF_CORE_PROVIDER_MODULE_ID: Guid = Guid::from_fields(0x5e24d2f5, 0xf799, 0x42c3, 0xa945, 0x87feefd930a7);

/// Helper id of `bpf_tail_call`; generated code returns 0 right after a successful call (contract §5.2).
pub const HELPER_TAIL_CALL: u32 = 5;
/// Helper id of `bpf_map_lookup_elem`.
pub const HELPER_MAP_LOOKUP_ELEM: u32 = 1;
/// First program-type-specific helper id (`EBPF_MAX_GENERAL_HELPER_FUNCTION + 1`, contract §7.4).
pub const FIRST_PROGRAM_TYPE_HELPER_ID: u32 = 65536;
/// Tail-call chain limit (`MAX_TAIL_CALL_CNT`, contract §7.3).
pub const MAX_TAIL_CALL_COUNT: u32 = 33;

/// EbpfCore's general helpers (contract §7.4).
pub static GLOBAL_HELPERS: &[HelperPrototype] = &[
    proto(1, "bpf_map_lookup_elem", R::PtrToMapValueOrNull, &[A::PtrToMap, A::PtrToMapKey]),
    proto(2, "bpf_map_update_elem", R::Integer, &[A::PtrToMap, A::PtrToMapKey, A::PtrToMapValue, A::Anything]),
    proto(3, "bpf_map_delete_elem", R::Integer, &[A::PtrToMap, A::PtrToMapKey]),
    proto(4, "bpf_map_lookup_and_delete_elem", R::PtrToMapValueOrNull, &[A::PtrToMap, A::PtrToMapKey]),
    proto(5, "bpf_tail_call", R::IntegerOrNoReturnIfSucceed, &[A::PtrToCtx, A::PtrToMapOfPrograms, A::Anything]),
    proto(6, "bpf_get_prandom_u32", R::Integer, &[]),
    proto(7, "bpf_ktime_get_boot_ns", R::Integer, &[]),
    proto(8, "bpf_get_smp_processor_id", R::Integer, &[]),
    proto(9, "bpf_ktime_get_ns", R::Integer, &[]),
    proto(
        10,
        "bpf_csum_diff",
        R::Integer,
        &[A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::PtrToReadableMemOrNull, A::ConstSizeOrZero, A::Anything],
    ),
    proto(11, "bpf_ringbuf_output", R::Integer, &[A::PtrToMap, A::PtrToReadableMem, A::ConstSize, A::Anything]),
    proto(12, "bpf_trace_printk2", R::Integer, &[A::PtrToReadableMem, A::ConstSize]),
    proto(13, "bpf_trace_printk3", R::Integer, &[A::PtrToReadableMem, A::ConstSize, A::Anything]),
    proto(14, "bpf_trace_printk4", R::Integer, &[A::PtrToReadableMem, A::ConstSize, A::Anything, A::Anything]),
    proto(
        15,
        "bpf_trace_printk5",
        R::Integer,
        &[A::PtrToReadableMem, A::ConstSize, A::Anything, A::Anything, A::Anything],
    ),
    proto(16, "bpf_map_push_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue, A::Anything]),
    proto(17, "bpf_map_pop_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue]),
    proto(18, "bpf_map_peek_elem", R::Integer, &[A::PtrToMap, A::PtrToMapValue]),
    proto(19, "bpf_get_current_pid_tgid", R::Integer, &[]),
    proto(20, "bpf_get_current_logon_id", R::Integer, &[A::PtrToCtx]),
    proto(21, "bpf_is_current_admin", R::Integer, &[A::PtrToCtx]),
    proto(
        22,
        "bpf_memcpy",
        R::Integer,
        &[A::PtrToWritableMem, A::ConstSizeOrZero, A::PtrToReadableMem, A::ConstSizeOrZero],
    ),
    proto(
        23,
        "bpf_memcmp",
        R::Integer,
        &[A::PtrToReadableMem, A::ConstSizeOrZero, A::PtrToReadableMem, A::ConstSizeOrZero],
    ),
    proto(24, "bpf_memset", R::Integer, &[A::PtrToWritableMem, A::ConstSizeOrZero, A::Anything]),
    proto(
        25,
        "bpf_memmove",
        R::Integer,
        &[A::PtrToWritableMem, A::ConstSizeOrZero, A::PtrToReadableMem, A::ConstSizeOrZero],
    ),
    proto(26, "bpf_get_socket_cookie", R::Integer, &[A::PtrToCtx]),
    proto(
        27,
        "bpf_strncpy_s",
        R::Integer,
        &[A::PtrToWritableMem, A::ConstSizeOrZero, A::PtrToReadableMem, A::ConstSizeOrZero],
    ),
    proto(
        28,
        "bpf_strncat_s",
        R::Integer,
        &[A::PtrToWritableMem, A::ConstSizeOrZero, A::PtrToReadableMem, A::ConstSizeOrZero],
    ),
    proto(29, "bpf_strnlen_s", R::Integer, &[A::PtrToReadableMem, A::ConstSizeOrZero]),
    proto(30, "bpf_ktime_get_boot_ms", R::Integer, &[]),
    proto(31, "bpf_ktime_get_ms", R::Integer, &[]),
    proto(
        32,
        "bpf_perf_event_output",
        R::Integer,
        &[A::PtrToCtx, A::PtrToMap, A::Anything, A::PtrToReadableMem, A::ConstSize],
    ),
    proto(33, "bpf_get_current_process_start_key", R::Integer, &[]),
    proto(34, "bpf_get_current_thread_create_time", R::Integer, &[]),
    proto(35, "bpf_redirect_map", R::Integer, &[A::PtrToMap, A::Anything, A::Anything]),
];

const fn attach(name: &'static str, guid: Guid, bpf_attach_type: u32) -> AttachType {
    AttachType { name, guid, bpf_attach_type }
}

pub const ATTACH_XDP: AttachType =
    attach("xdp", Guid::from_fields(0x85e0d8ef, 0x579e, 0x4931, 0xb072, 0x8ee226bb2e9d), 1);
pub const ATTACH_BIND: AttachType =
    attach("bind", Guid::from_fields(0xb9707e04, 0x8127, 0x4c72, 0x833e, 0x05b1fb439496), 2);
pub const ATTACH_CGROUP_INET4_CONNECT: AttachType =
    attach("cgroup_inet4_connect", Guid::from_fields(0xa82e37b1, 0xaee7, 0x11ec, 0x9a30, 0x18602489beee), 3);
pub const ATTACH_CGROUP_INET6_CONNECT: AttachType =
    attach("cgroup_inet6_connect", Guid::from_fields(0xa82e37b2, 0xaee7, 0x11ec, 0x9a30, 0x18602489beee), 4);
pub const ATTACH_CGROUP_INET4_RECV_ACCEPT: AttachType =
    attach("cgroup_inet4_recv_accept", Guid::from_fields(0xa82e37b3, 0xaee7, 0x11ec, 0x9a30, 0x18602489beee), 5);
pub const ATTACH_CGROUP_INET6_RECV_ACCEPT: AttachType =
    attach("cgroup_inet6_recv_accept", Guid::from_fields(0xa82e37b4, 0xaee7, 0x11ec, 0x9a30, 0x18602489beee), 6);
pub const ATTACH_CGROUP_SOCK_OPS: AttachType =
    attach("cgroup_sock_ops", Guid::from_fields(0x837d02cd, 0x3251, 0x4632, 0x8d94, 0x60d3b45769f2), 7);
pub const ATTACH_SAMPLE: AttachType =
    attach("sample", Guid::from_fields(0xf788ef4b, 0x207d, 0x4dc3, 0x85cf, 0x0f2ea107213c), 8);
pub const ATTACH_CGROUP_INET4_CONNECT_AUTHORIZATION: AttachType = attach(
    "cgroup_inet4_connect_authorization",
    Guid::from_fields(0x6076c13a, 0xf04f, 0x4ff8, 0x8380, 0x908553f22276),
    12,
);
pub const ATTACH_CGROUP_INET6_CONNECT_AUTHORIZATION: AttachType = attach(
    "cgroup_inet6_connect_authorization",
    Guid::from_fields(0x54b0b6ed, 0x432a, 0x4674, 0x8b27, 0x8d9f5b40c675),
    13,
);
pub const ATTACH_CGROUP_INET4_BIND: AttachType =
    attach("cgroup_inet4_bind", Guid::from_fields(0x0d7ce21a, 0x7773, 0x405c, 0x93b6, 0xd5bfb92e74bc), 14);
pub const ATTACH_CGROUP_INET6_BIND: AttachType =
    attach("cgroup_inet6_bind", Guid::from_fields(0x81de64c0, 0x2973, 0x468d, 0x8382, 0x6769f033d759), 15);
pub const ATTACH_CGROUP_INET4_LISTEN: AttachType =
    attach("cgroup_inet4_listen", Guid::from_fields(0xe1b0cb3d, 0xd70c, 0x4ee2, 0xb23a, 0x0742bedb06d6), 16);
pub const ATTACH_CGROUP_INET6_LISTEN: AttachType =
    attach("cgroup_inet6_listen", Guid::from_fields(0x4e72f92e, 0x5ed0, 0x4fe5, 0xb851, 0xb124fe14074d), 17);
pub const ATTACH_XDP_TEST: AttachType =
    attach("xdp_test", Guid::from_fields(0x0dccc15d, 0xa5f9, 0x4dc1, 0xac79, 0xfa25eef215c3), 0);

/// `xdp_md_t` (contract §7.2).
static XDP_FIELDS: &[ContextField] = &[
    field("data", 0, 8, false),
    field("data_end", 8, 8, false),
    field("data_meta", 16, 8, false),
    field("ingress_ifindex", 24, 4, false),
];

/// `bind_md_t` (contract §7.2).
static BIND_FIELDS: &[ContextField] = &[
    field("app_id_start", 0, 8, false),
    field("app_id_end", 8, 8, false),
    field("process_id", 16, 8, false),
    field("socket_address", 24, 16, false),
    field("socket_address_length", 40, 1, false),
    field("operation", 44, 4, false),
    field("protocol", 48, 1, false),
];

/// `bpf_sock_addr_t` (contract §7.2). The user address and port may be rewritten (connect redirection).
static SOCK_ADDR_FIELDS: &[ContextField] = &[
    field("family", 0, 4, false),
    field("msg_src_ip", 4, 16, false),
    field("msg_src_port", 20, 2, false),
    field("user_ip", 24, 16, true),
    field("user_port", 40, 2, true),
    field("protocol", 44, 4, false),
    field("compartment_id", 48, 4, false),
    field("interface_luid", 56, 8, false),
];

/// `bpf_sock_ops_t` (contract §7.2).
static SOCK_OPS_FIELDS: &[ContextField] = &[
    field("op", 0, 4, false),
    field("family", 4, 4, false),
    field("local_ip", 8, 16, false),
    field("local_port", 24, 4, false),
    field("remote_ip", 28, 16, false),
    field("remote_port", 44, 4, false),
    field("protocol", 48, 1, false),
    field("compartment_id", 52, 4, false),
    field("interface_luid", 56, 8, false),
];

/// `sample_program_context_t` (contract §7.2).
static SAMPLE_FIELDS: &[ContextField] = &[
    field("data_start", 0, 8, false),
    field("data_end", 8, 8, false),
    field("uint32_data", 16, 4, true),
    field("uint16_data", 20, 2, true),
    field("helper_data_1", 24, 4, true),
    field("helper_data_2", 28, 4, true),
];

static XDP_HELPERS: &[HelperPrototype] = &[HelperPrototype {
    reallocate_packet: true,
    ..proto(65536, "bpf_xdp_adjust_head", R::Integer, &[A::PtrToCtx, A::Anything])
}];

static SOCK_ADDR_HELPERS: &[HelperPrototype] = &[
    proto(65536, "bpf_sock_addr_get_current_pid_tgid", R::Integer, &[A::PtrToCtx]),
    proto(65537, "bpf_sock_addr_set_redirect_context", R::Integer, &[A::PtrToCtx, A::PtrToReadableMem, A::ConstSize]),
    proto(65538, "bpf_sock_addr_get_network_context", R::Integer, &[A::PtrToCtx, A::PtrToWritableMem, A::ConstSize]),
];

static SOCK_OPS_HELPERS: &[HelperPrototype] = &[proto(65536, "bpf_sock_ops_get_flow_id", R::Integer, &[A::PtrToCtx])];

/// The sample extension's helpers (`undocked/tests/sample/ext/inc/sample_ext_program_info.h`, coverage §1).
/// Helpers 65539–65542 take the program context implicitly (the native code passes it as the 6th argument to
/// every helper anyway); 65540's C side takes a u32 that its prototype does not declare, so r1 is unchecked.
static SAMPLE_HELPERS: &[HelperPrototype] = &[
    proto(65536, "sample_ebpf_extension_helper_function1", R::Integer, &[A::PtrToCtx]),
    proto(
        65537,
        "sample_ebpf_extension_find",
        R::Integer,
        &[A::PtrToReadableMem, A::ConstSize, A::PtrToReadableMem, A::ConstSize],
    ),
    proto(
        65538,
        "sample_ebpf_extension_replace",
        R::Integer,
        &[A::PtrToReadableMem, A::ConstSize, A::Anything, A::PtrToReadableMem, A::ConstSize],
    ),
    proto(65539, "sample_ebpf_extension_helper_implicit_1", R::Integer, &[]),
    proto(65540, "sample_ebpf_extension_helper_implicit_2", R::Integer, &[]),
    proto(65541, "sample_ext_helper_map_lookup_element", R::PtrToMapValueOrNull, &[A::PtrToMap, A::PtrToMapKey]),
    proto(
        65542,
        "sample_ext_helper_map_get_value",
        R::Integer,
        &[A::PtrToMap, A::PtrToMapKey, A::PtrToWritableMem, A::ConstSize],
    ),
];

/// The sample extension's BTF-function provider module id (coverage §1).
pub const SAMPLE_BTF_FUNCTION_MODULE: Guid = Guid::from_fields(0x8f6c1f83, 0xce4c, 0x4b58, 0x8b91, 0x654a29e23b7c);

/// kfuncs of the providers the platform knows (coverage §2): `sample_ebpf_extension_btf_lookup(u64 key,
/// void *value, u32 value_size)` stores `key` in `*value` when `value_size >= 8` and returns `key + value_size`.
pub static KFUNCS: &[KfuncPrototype] = &[KfuncPrototype {
    module: SAMPLE_BTF_FUNCTION_MODULE,
    proto: proto(0, "sample_ebpf_extension_btf_lookup", R::Integer, &[A::Anything, A::PtrToWritableMem, A::ConstSize]),
}];

/// `ebpf_map_type_t` (contract §7.3). The kernel refuses `max_entries` 0 for every built-in type (coverage §1);
/// UNSPEC (0) has no create function. 15 is the sample extension's hash map, 16 XDP for Windows' XSKMAP; both
/// need their extension's map provider at load time.
pub static MAP_TYPES: &[MapTypeInfo] = &[
    map_type(1, "hash", Z::Refused),
    map_type(2, "array", Z::Refused),
    map_type(3, "prog_array", Z::Refused),
    map_type(4, "percpu_hash", Z::Refused),
    map_type(5, "percpu_array", Z::Refused),
    map_type(6, "hash_of_maps", Z::Refused),
    map_type(7, "array_of_maps", Z::Refused),
    map_type(8, "lru_hash", Z::Refused),
    map_type(9, "lpm_trie", Z::Refused),
    map_type(10, "queue", Z::Refused),
    map_type(11, "lru_percpu_hash", Z::Refused),
    map_type(12, "stack", Z::Refused),
    map_type(13, "ringbuf", Z::Refused),
    map_type(14, "perf_event_array", Z::Refused),
    MapTypeInfo { extension: true, ..map_type(15, "sample_hash_map", Z::Refused) },
    MapTypeInfo { extension: true, ..map_type(16, "xskmap", Z::Refused) },
];

/// The names of the values a program of each type returns, as the hook interprets them (`xdp_action_t`,
/// `bind_action_t`, the sock_addr verdicts of eBPF for Windows' `ebpf_nethooks.h`): `(program type, r0, name)`.
pub static VERDICTS: &[(&str, u32, &str)] = &[
    ("xdp", 1, "XDP_PASS"),
    ("xdp", 2, "XDP_DROP"),
    ("xdp", 3, "XDP_TX"),
    ("bind", 0, "BIND_PERMIT"),
    ("bind", 1, "BIND_DENY"),
    ("bind", 2, "BIND_REDIRECT"),
    ("sock_addr", 0, "BPF_SOCK_ADDR_VERDICT_REJECT"),
    ("sock_addr", 1, "BPF_SOCK_ADDR_VERDICT_PROCEED"),
];

/// The name of verdict `r0` for programs of type `program_type`, if the hook names it.
pub fn verdict_name(program_type: &str, r0: u32) -> Option<&'static str> {
    VERDICTS.iter().find(|(t, v, _)| *t == program_type && *v == r0).map(|(_, _, name)| *name)
}

pub static PROGRAM_TYPES: &[ProgramType] = &[
    ProgramType {
        name: "xdp",
        guid: Guid::from_fields(0xf1832a85, 0x85d5, 0x45b0, 0x98a0, 0x7069d63013b0),
        bpf_prog_type: 1,
        is_privileged: false,
        context: ContextDescriptor { size: 32, data: 0, end: 8, meta: 16 },
        context_fields: XDP_FIELDS,
        section_prefixes: &[prefix("xdp", ATTACH_XDP)],
        specific_helpers: XDP_HELPERS,
    },
    ProgramType {
        name: "bind",
        guid: Guid::from_fields(0x608c517c, 0x6c52, 0x4a26, 0xb677, 0xbb1c34425adf),
        bpf_prog_type: 2,
        is_privileged: false,
        context: ContextDescriptor { size: 56, data: 0, end: 8, meta: -1 },
        context_fields: BIND_FIELDS,
        section_prefixes: &[prefix("bind", ATTACH_BIND)],
        specific_helpers: &[],
    },
    ProgramType {
        name: "sock_addr",
        guid: Guid::from_fields(0x92ec8e39, 0xaeec, 0x11ec, 0x9a30, 0x18602489beee),
        bpf_prog_type: 3,
        is_privileged: false,
        context: ContextDescriptor { size: 64, data: -1, end: -1, meta: -1 },
        context_fields: SOCK_ADDR_FIELDS,
        section_prefixes: &[
            prefix("cgroup/connect4", ATTACH_CGROUP_INET4_CONNECT),
            prefix("cgroup/connect6", ATTACH_CGROUP_INET6_CONNECT),
            prefix("cgroup/recv_accept4", ATTACH_CGROUP_INET4_RECV_ACCEPT),
            prefix("cgroup/recv_accept6", ATTACH_CGROUP_INET6_RECV_ACCEPT),
            prefix("cgroup/connect_authorization4", ATTACH_CGROUP_INET4_CONNECT_AUTHORIZATION),
            prefix("cgroup/connect_authorization6", ATTACH_CGROUP_INET6_CONNECT_AUTHORIZATION),
            prefix("cgroup/bind4", ATTACH_CGROUP_INET4_BIND),
            prefix("cgroup/bind6", ATTACH_CGROUP_INET6_BIND),
            prefix("cgroup/listen4", ATTACH_CGROUP_INET4_LISTEN),
            prefix("cgroup/listen6", ATTACH_CGROUP_INET6_LISTEN),
        ],
        specific_helpers: SOCK_ADDR_HELPERS,
    },
    ProgramType {
        name: "sockops",
        guid: Guid::from_fields(0x43fb224d, 0x68f8, 0x46d6, 0xaa3f, 0xc856518cbb32),
        bpf_prog_type: 4,
        is_privileged: false,
        context: ContextDescriptor { size: 64, data: -1, end: -1, meta: -1 },
        context_fields: SOCK_OPS_FIELDS,
        section_prefixes: &[prefix("sockops", ATTACH_CGROUP_SOCK_OPS)],
        specific_helpers: SOCK_OPS_HELPERS,
    },
    ProgramType {
        name: "sample",
        guid: Guid::from_fields(0xf788ef4a, 0x207d, 0x4dc3, 0x85cf, 0x0f2ea107213c),
        bpf_prog_type: 999,
        is_privileged: false,
        context: ContextDescriptor { size: 32, data: 0, end: 8, meta: -1 },
        context_fields: SAMPLE_FIELDS,
        section_prefixes: &[prefix("sample_ext", ATTACH_SAMPLE)],
        specific_helpers: SAMPLE_HELPERS,
    },
    ProgramType {
        name: "xdp_test",
        guid: Guid::from_fields(0xce8ccef8, 0x4241, 0x4975, 0x984d, 0xbb3921dfa73c),
        bpf_prog_type: 998,
        is_privileged: false,
        context: ContextDescriptor { size: 32, data: 0, end: 8, meta: 16 },
        context_fields: XDP_FIELDS,
        section_prefixes: &[prefix("xdp_test", ATTACH_XDP_TEST)],
        specific_helpers: XDP_HELPERS,
    },
];

/// The eBPF for Windows platform.
pub static WINDOWS: Platform = Platform {
    name: "windows",
    program_types: PROGRAM_TYPES,
    global_helpers: GLOBAL_HELPERS,
    map_helper_rules: MAP_HELPER_RULES,
    map_types: MAP_TYPES,
    kfuncs: KFUNCS,
    // Contract §7.2 gives xdp_md_t's data_meta only as a u64 field, not what EbpfCore stores in it: not trusted.
    data_meta_is_metadata: false,
    // No Windows helper returns a socket pointer (contract §7.4).
    sock_common_fields: &[],
    conventions: ObjectConventions::Windows,
};

/// Element access on maps that hold no addressable values fails in EbpfCore (program arrays hold programs,
/// ring buffers and perf event arrays hold no elements), and the output/queue helpers need their map type.
static MAP_HELPER_RULES: &[MapHelperRule] = {
    use crate::program::MapType as M;
    const NO_VALUES: &[M] = &[M::PROG_ARRAY, M::RINGBUF, M::PERF_EVENT_ARRAY];
    const QUEUES: &[M] = &[M::QUEUE, M::STACK];
    &[
        MapHelperRule { helper: 1, allowed: false, map_types: NO_VALUES },
        MapHelperRule { helper: 2, allowed: false, map_types: NO_VALUES },
        MapHelperRule { helper: 3, allowed: false, map_types: NO_VALUES },
        MapHelperRule { helper: 4, allowed: false, map_types: NO_VALUES },
        MapHelperRule { helper: 11, allowed: true, map_types: &[M::RINGBUF] },
        MapHelperRule { helper: 16, allowed: true, map_types: QUEUES },
        MapHelperRule { helper: 17, allowed: true, map_types: QUEUES },
        MapHelperRule { helper: 18, allowed: true, map_types: QUEUES },
        MapHelperRule { helper: 32, allowed: true, map_types: &[M::PERF_EVENT_ARRAY] },
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_and_bytes_match_the_contract() {
        assert_eq!(NATIVE_MODULE_NPI_ID.to_string(), "c847aac8-a6f2-4b53-aea3-f4a94b9a80cb");
        assert_eq!(
            NATIVE_MODULE_NPI_ID.to_bytes(),
            [0xc8, 0xaa, 0x47, 0xc8, 0xf2, 0xa6, 0x53, 0x4b, 0xae, 0xa3, 0xf4, 0xa9, 0x4b, 0x9a, 0x80, 0xcb]
        );
        assert_eq!(Guid::from_bytes(&NATIVE_MODULE_NPI_ID.to_bytes()), NATIVE_MODULE_NPI_ID);
    }

    #[test]
    fn section_names_select_program_and_attach_types() {
        let (pt, at) = WINDOWS.program_type_for_section("xdp").unwrap();
        assert_eq!((pt.name, at.name), ("xdp", "xdp"));
        let (pt, at) = WINDOWS.program_type_for_section("xdp_test/drop").unwrap();
        assert_eq!((pt.name, at.name), ("xdp_test", "xdp_test"));
        let (pt, at) = WINDOWS.program_type_for_section("cgroup/connect4").unwrap();
        assert_eq!((pt.name, at.bpf_attach_type), ("sock_addr", 3));
        let (pt, _) = WINDOWS.program_type_for_section("bind").unwrap();
        assert_eq!(pt.context.size, 56);
        assert!(WINDOWS.program_type_for_section("kprobe/foo").is_none());
    }

    #[test]
    fn helper_ids_are_unique_and_specific_helpers_override() {
        let mut ids: Vec<u32> = GLOBAL_HELPERS.iter().map(|h| h.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), GLOBAL_HELPERS.len());
        assert_eq!(ids, (1..=35).collect::<Vec<_>>());
        let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
        assert!(WINDOWS.helper(xdp, 65536).unwrap().reallocate_packet);
        assert_eq!(WINDOWS.helper(xdp, 1).unwrap().name, "bpf_map_lookup_elem");
        assert!(WINDOWS.helper(xdp, 65537).is_none());
        let sample = WINDOWS.program_type_by_name("sample").unwrap();
        let ids: Vec<u32> = (65536..=65542).filter(|&id| WINDOWS.helper(sample, id).is_some()).collect();
        assert_eq!(ids, (65536..=65542).collect::<Vec<_>>());
        assert_eq!(WINDOWS.helper(sample, 65541).unwrap().ret, R::PtrToMapValueOrNull);
    }

    #[test]
    fn map_types_and_kfuncs_are_listed() {
        assert_eq!(WINDOWS.map_type_name(15), "sample_hash_map");
        assert!(WINDOWS.map_type(0).is_none() && WINDOWS.map_type(17).is_none() && WINDOWS.map_type(100).is_none());
        let k = WINDOWS.kfunc(SAMPLE_BTF_FUNCTION_MODULE, "sample_ebpf_extension_btf_lookup").unwrap();
        assert_eq!(k.proto.arity(), 3);
        assert!(WINDOWS.kfunc(Guid::NULL, "sample_ebpf_extension_btf_lookup").is_none());
        assert_eq!(
            Guid::parse("8F6C1F83-ce4c-4b58-8b91-654a29e23b7c"),
            Some(SAMPLE_BTF_FUNCTION_MODULE),
            "GUID text parses case-insensitively"
        );
        assert_eq!(Guid::parse("8f6c1f83-ce4c-4b58-8b91-654a29e23b7"), None);
    }
}
