// SPDX-License-Identifier: MIT
//
// bpf2sys.h — a self-contained header for eBPF programs that run on eBPF for Windows.
//
// Facts come from ../shared/docs/native-module-contract.md: program and attach types and their ELF section
// names (§7.1), context structures (§7.2), map types and pinning (§7.3), helper ids and prototypes (§7.4).
// Build with: clang -O2 -g -target bpf -mcpu=v3 -I samples/include -c prog.c -o prog.o
#ifndef BPF2SYS_H
#define BPF2SYS_H

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef unsigned long size_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void*)0)

// ---------------------------------------------------------------------------------------------------------------
// Sections and BTF map definitions (libbpf conventions, understood by bpf2sys and bpf2c).

#define SEC(name) __attribute__((section(name), used))
#define __noinline __attribute__((noinline))
#define __always_inline inline __attribute__((always_inline))

// `__uint(name, 4)` encodes the constant 4 as the element count of an array type: `int (*name)[4]`.
#define __uint(name, val) int(*name)[val]
// `__type(key, T)` records T's BTF type (and so its size) through a pointer member.
#define __type(name, val) typeof(val)* name
// `__array(values, struct inner)` declares a map-in-map or program-array initialiser.
#define __array(name, val) typeof(val)* name[]

// Map types (`ebpf_map_type_t`, contract §7.3).
#define BPF_MAP_TYPE_UNSPEC 0
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PROG_ARRAY 3
#define BPF_MAP_TYPE_PERCPU_HASH 4
#define BPF_MAP_TYPE_PERCPU_ARRAY 5
#define BPF_MAP_TYPE_HASH_OF_MAPS 6
#define BPF_MAP_TYPE_ARRAY_OF_MAPS 7
#define BPF_MAP_TYPE_LRU_HASH 8
#define BPF_MAP_TYPE_LPM_TRIE 9
#define BPF_MAP_TYPE_QUEUE 10
#define BPF_MAP_TYPE_LRU_PERCPU_HASH 11
#define BPF_MAP_TYPE_STACK 12
#define BPF_MAP_TYPE_RINGBUF 13
#define BPF_MAP_TYPE_PERF_EVENT_ARRAY 14

// Pinning (`ebpf_pin_type_t`).
#define LIBBPF_PIN_NONE 0
#define LIBBPF_PIN_BY_NAME 1

// The legacy Windows map record (`ebpf_map_definition_in_file_t`, contract §2.2): 32 bytes in section "maps".
struct bpf_map_def {
    uint32_t type;
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t inner_map_idx;
    uint32_t pinning;
    uint32_t id;
    uint32_t inner_id;
};

// ---------------------------------------------------------------------------------------------------------------
// Program contexts (contract §7.2).

// XDP: section "xdp". Return values: XDP_PASS / XDP_DROP / XDP_TX.
typedef struct xdp_md {
    void* data;               // @0
    void* data_end;           // @8
    uint64_t data_meta;       // @16
    uint32_t ingress_ifindex; // @24
} xdp_md_t;

typedef enum xdp_action {
    XDP_PASS = 1,
    XDP_DROP = 2,
    XDP_TX = 3,
} xdp_action_t;

// Bind: section "bind".
typedef enum bind_operation {
    BIND_OPERATION_BIND,
    BIND_OPERATION_POST_BIND,
    BIND_OPERATION_UNBIND,
} bind_operation_t;

typedef enum bind_action {
    BIND_PERMIT,
    BIND_DENY,
    BIND_REDIRECT,
} bind_action_t;

typedef struct bind_md {
    uint8_t* app_id_start;          // @0
    uint8_t* app_id_end;            // @8
    uint64_t process_id;            // @16
    uint8_t socket_address[16];     // @24
    uint8_t socket_address_length;  // @40
    bind_operation_t operation;     // @44
    uint8_t protocol;               // @48
} bind_md_t;

// Socket address: sections "cgroup/connect4", "cgroup/connect6", "cgroup/recv_accept4", ...
typedef struct bpf_sock_addr {
    uint32_t family; // @0
    union {
        uint32_t msg_src_ip4;
        uint32_t msg_src_ip6[4];
    }; // @4
    uint16_t msg_src_port; // @20
    union {
        uint32_t user_ip4;
        uint32_t user_ip6[4];
    }; // @24
    uint16_t user_port;       // @40
    uint32_t protocol;        // @44
    uint32_t compartment_id;  // @48
    uint64_t interface_luid;  // @56
} bpf_sock_addr_t;

#define BPF_SOCK_ADDR_VERDICT_REJECT 0
#define BPF_SOCK_ADDR_VERDICT_PROCEED 1

// Socket operations: section "sockops".
typedef enum {
    BPF_SOCK_OPS_TCP_CONNECT_CB,
    BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
    BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    BPF_SOCK_OPS_CONNECTION_DELETED_CB,
} bpf_sock_op_type_t;

typedef struct bpf_sock_ops {
    bpf_sock_op_type_t op; // @0
    uint32_t family;       // @4
    union {
        uint32_t local_ip4;
        uint32_t local_ip6[4];
    }; // @8
    uint32_t local_port; // @24
    union {
        uint32_t remote_ip4;
        uint32_t remote_ip6[4];
    }; // @28
    uint32_t remote_port;    // @44
    uint8_t protocol;        // @48
    uint32_t compartment_id; // @52
    uint64_t interface_luid; // @56
} bpf_sock_ops_t;

// Sample extension (`undocked/tests/sample/ext`): section "sample_ext", program type "sample".
typedef struct sample_program_context {
    uint8_t* data_start;    // @0
    uint8_t* data_end;      // @8
    uint32_t uint32_data;   // @16
    uint16_t uint16_data;   // @20
    uint32_t helper_data_1; // @24
    uint32_t helper_data_2; // @28
} sample_program_context_t;

#define BPF_MAP_TYPE_SAMPLE_HASH_MAP 15

#define AF_INET 2
#define AF_INET6 23
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

// ---------------------------------------------------------------------------------------------------------------
// Helpers (contract §7.4). A helper is a call to a constant address equal to its id: `call <id>`.

#define BPF2SYS_HELPER(ret, name, id, ...) static ret(*name)(__VA_ARGS__) = (void*)id

BPF2SYS_HELPER(void*, bpf_map_lookup_elem, 1, void* map, const void* key);
BPF2SYS_HELPER(int64_t, bpf_map_update_elem, 2, void* map, const void* key, const void* value, uint64_t flags);
BPF2SYS_HELPER(int64_t, bpf_map_delete_elem, 3, void* map, const void* key);
BPF2SYS_HELPER(void*, bpf_map_lookup_and_delete_elem, 4, void* map, const void* key);
BPF2SYS_HELPER(int64_t, bpf_tail_call, 5, const void* ctx, const void* prog_array_map, uint32_t index);
BPF2SYS_HELPER(uint32_t, bpf_get_prandom_u32, 6, void);
BPF2SYS_HELPER(uint64_t, bpf_ktime_get_boot_ns, 7, void);
BPF2SYS_HELPER(uint32_t, bpf_get_smp_processor_id, 8, void);
BPF2SYS_HELPER(uint64_t, bpf_ktime_get_ns, 9, void);
BPF2SYS_HELPER(int64_t, bpf_csum_diff, 10, void* from, int from_size, void* to, int to_size, int seed);
BPF2SYS_HELPER(int64_t, bpf_ringbuf_output, 11, void* ring_buffer, void* data, uint64_t size, uint64_t flags);
BPF2SYS_HELPER(long, bpf_trace_printk2, 12, const char* fmt, uint64_t fmt_size);
BPF2SYS_HELPER(long, bpf_trace_printk3, 13, const char* fmt, uint64_t fmt_size, uint64_t arg3);
BPF2SYS_HELPER(long, bpf_trace_printk4, 14, const char* fmt, uint64_t fmt_size, uint64_t arg3, uint64_t arg4);
BPF2SYS_HELPER(long, bpf_trace_printk5, 15, const char* fmt, uint64_t fmt_size, uint64_t arg3, uint64_t arg4,
               uint64_t arg5);
BPF2SYS_HELPER(int64_t, bpf_map_push_elem, 16, void* map, const void* value, uint64_t flags);
BPF2SYS_HELPER(int64_t, bpf_map_pop_elem, 17, void* map, void* value);
BPF2SYS_HELPER(int64_t, bpf_map_peek_elem, 18, void* map, void* value);
BPF2SYS_HELPER(uint64_t, bpf_get_current_pid_tgid, 19, void);
BPF2SYS_HELPER(uint64_t, bpf_get_current_logon_id, 20, const void* ctx);
BPF2SYS_HELPER(int32_t, bpf_is_current_admin, 21, const void* ctx);
BPF2SYS_HELPER(int64_t, bpf_memcpy, 22, void* destination, uint32_t destination_size, const void* source,
               uint32_t source_size);
BPF2SYS_HELPER(int, bpf_memcmp, 23, const void* buffer1, uint32_t buffer1_size, const void* buffer2,
               uint32_t buffer2_size);
BPF2SYS_HELPER(int64_t, bpf_memset, 24, void* buffer, uint32_t size, int value);
BPF2SYS_HELPER(int64_t, bpf_memmove, 25, void* destination, uint32_t destination_size, const void* source,
               uint32_t source_size);
BPF2SYS_HELPER(uint64_t, bpf_get_socket_cookie, 26, void* ctx);
BPF2SYS_HELPER(int64_t, bpf_strncpy_s, 27, char* dest, size_t dest_size, const char* src, size_t count);
BPF2SYS_HELPER(int64_t, bpf_strncat_s, 28, char* dest, size_t dest_size, const char* src, size_t count);
BPF2SYS_HELPER(int64_t, bpf_strnlen_s, 29, const char* str, size_t str_size);
BPF2SYS_HELPER(uint64_t, bpf_ktime_get_boot_ms, 30, void);
BPF2SYS_HELPER(uint64_t, bpf_ktime_get_ms, 31, void);
BPF2SYS_HELPER(int64_t, bpf_perf_event_output, 32, void* ctx, void* perf_event_array, uint64_t flags, void* data,
               uint64_t size);
BPF2SYS_HELPER(uint64_t, bpf_get_current_process_start_key, 33, void);
BPF2SYS_HELPER(uint64_t, bpf_get_current_thread_create_time, 34, void);
BPF2SYS_HELPER(int64_t, bpf_redirect_map, 35, void* map, uint32_t key, uint64_t flags);

// Program-type-specific helpers (ids from 65536, contract §7.4).
BPF2SYS_HELPER(int, bpf_xdp_adjust_head, 65536, xdp_md_t* ctx, int delta);
BPF2SYS_HELPER(uint64_t, bpf_sock_addr_get_current_pid_tgid, 65536, bpf_sock_addr_t* ctx);
BPF2SYS_HELPER(int, bpf_sock_addr_set_redirect_context, 65537, bpf_sock_addr_t* ctx, void* data, uint32_t data_size);
BPF2SYS_HELPER(int, bpf_sock_addr_get_network_context, 65538, bpf_sock_addr_t* ctx, void* data, uint32_t data_size);
BPF2SYS_HELPER(uint64_t, bpf_sock_ops_get_flow_id, 65536, bpf_sock_ops_t* ctx);
BPF2SYS_HELPER(int64_t, sample_ebpf_extension_helper_function1, 65536, sample_program_context_t* ctx);
BPF2SYS_HELPER(int64_t, sample_ebpf_extension_find, 65537, const void* buffer, uint32_t size, const void* find,
               uint32_t arg_size);

// ---------------------------------------------------------------------------------------------------------------
// BTF-resolved functions (kfuncs): an extern function in section ".ksyms" tagged with its provider module's id
// (eBPF for Windows `sample_ext_helpers.h`); the runtime binds it through the provider's NMR registration.
#define __ksym_module(guid) __attribute__((section(".ksyms"), btf_decl_tag("module_id:" guid)))
#define SAMPLE_BTF_FUNCTION_MODULE "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}"

// ---------------------------------------------------------------------------------------------------------------
// Byte order (the BPF target is little-endian).
#define bpf_ntohs(x) __builtin_bswap16(x)
#define bpf_htons(x) __builtin_bswap16(x)
#define bpf_ntohl(x) __builtin_bswap32(x)
#define bpf_htonl(x) __builtin_bswap32(x)

#endif // BPF2SYS_H
