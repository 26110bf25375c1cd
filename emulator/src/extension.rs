//! Host implementations of what the extensions provide besides EbpfCore's general helpers: the program-type
//! specific helpers (ids from 65536, contract §7.4), the global helpers an extension overrides for its program
//! type (the sample extension's `bpf_get_current_pid_tgid` and `bpf_redirect_map`, object-and-platform-coverage
//! §1) and the BTF-resolved functions (coverage §2). Called as the general helpers are: Windows x64 ABI, the
//! program context as the sixth argument.

use crate::helpers::{bytes, bytes_mut, get_current_pid_tgid, map, state, Helper, INVALID};
use crate::maps::MAP_SAMPLE_HASH;

/// The generic failure the sample extension's and the network helpers return.
const FAILED: u64 = -1i64 as u64;

/// `sample_program_context_t.helper_data_1` / `helper_data_2` (contract §7.2).
const SAMPLE_HELPER_DATA_1: usize = 24;
const SAMPLE_HELPER_DATA_2: usize = 28;

/// What the sample extension's `bpf_get_current_pid_tgid` override returns (`SAMPLE_PID_TGID_VALUE`).
const SAMPLE_PID_TGID: u64 = 9999;

/// The host function an extension provides for helper `id` as programs of `program_type` see it: its own
/// helpers and its overrides of global ones. `None` leaves the id to EbpfCore's general helpers.
pub(crate) fn extension_helper(program_type: &str, id: u32) -> Option<Helper> {
    let f: Helper = match (program_type, id) {
        // The test XDP program type registers the same helper table as XDP (contract §7.4).
        ("xdp" | "xdp_test", 65536) => xdp_adjust_head,
        ("sock_addr", 65536) => get_current_pid_tgid,
        ("sock_addr", 65537) => sock_addr_set_redirect_context,
        ("sock_addr", 65538) => sock_addr_get_network_context,
        ("sockops", 65536) => sock_ops_get_flow_id,
        ("sample", 19) => sample_get_pid_tgid,
        ("sample", 35) => sample_redirect_map,
        ("sample", 65536) => sample_helper_function1,
        ("sample", 65537) => sample_find,
        ("sample", 65538) => sample_replace,
        ("sample", 65539) => sample_helper_implicit_1,
        ("sample", 65540) => sample_helper_implicit_2,
        ("sample", 65541) => sample_map_lookup_element,
        ("sample", 65542) => sample_map_get_value,
        _ => return None,
    };
    Some(f)
}

/// `bpf_xdp_adjust_head(ctx, delta)`: moves the packet start by `delta` within the buffer the packet arrived in
/// (no headroom is added: moving before the original start fails, as it does when a NIC has none).
unsafe extern "win64" fn xdp_adjust_head(ctx: u64, delta: u64, _: u64, _: u64, _: u64, context: *mut u8) -> u64 {
    let s = state(context);
    let [_, d, e, meta] = s.context_descriptor;
    if d < 0 || e < 0 {
        return INVALID;
    }
    let c = ctx as *mut u8;
    let data = (c.add(d as usize) as *const u64).read_unaligned();
    let end = (c.add(e as usize) as *const u64).read_unaligned();
    let moved = data.wrapping_add(delta as i32 as i64 as u64);
    if moved < s.packet_start || moved > end {
        return INVALID;
    }
    (c.add(d as usize) as *mut u64).write_unaligned(moved);
    if meta >= 0 {
        (c.add(meta as usize) as *mut u64).write_unaligned(moved);
    }
    0
}

/// `bpf_sock_addr_set_redirect_context(ctx, data, size)`: the redirect context is recorded in the trace.
unsafe extern "win64" fn sock_addr_set_redirect_context(
    _: u64,
    data: u64,
    size: u64,
    _: u64,
    _: u64,
    context: *mut u8,
) -> u64 {
    let hex: String = bytes(data, size as u32).iter().map(|b| format!("{b:02x}")).collect();
    state(context).trace.push(format!("redirect context {hex}"));
    0
}

/// Size of `bpf_sock_addr_network_context_t` version 1 (`ebpf_nethooks.h`): version u32 @0, interface_type
/// u32 @4, tunnel_type u32 @8, next_hop_interface_luid u64 @16, sub_interface_index u32 @24, padded to 32.
const NETWORK_CONTEXT_V1_SIZE: u64 = 32;

/// `bpf_sock_addr_get_network_context(ctx, out, size)`: fills a version-1 network context. The emulated
/// connection has no route, so every field holds its "not available" value (all ones of its width, as the
/// hook reports at layers without route information); a buffer smaller than version 1 fails with -1.
unsafe extern "win64" fn sock_addr_get_network_context(_: u64, out: u64, size: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    if size < NETWORK_CONTEXT_V1_SIZE {
        return FAILED;
    }
    let out = bytes_mut(out, NETWORK_CONTEXT_V1_SIZE as u32);
    out.fill(0);
    out[0..4].copy_from_slice(&1u32.to_le_bytes());
    out[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    out[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    out[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    out[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    0
}

/// `bpf_sock_ops_get_flow_id`: a flow id derived from the connection's addresses and ports
/// (`bpf_sock_ops_t`: local_ip4 @8, local_port @24, remote_ip4 @28, remote_port @44).
unsafe extern "win64" fn sock_ops_get_flow_id(ctx: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let c = ctx as *const u8;
    let field = |o: usize| (c.add(o) as *const u32).read_unaligned() as u64;
    (field(8) ^ field(28)) << 32 | (field(24) << 16 ^ field(44))
}

/// The sample extension's override of `bpf_get_current_pid_tgid` (coverage §1).
unsafe extern "win64" fn sample_get_pid_tgid(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    SAMPLE_PID_TGID
}

/// The sample extension's override of `bpf_redirect_map(map, key, flags)`: returns 1 whatever the map, key and
/// flags (coverage §1); it redirects nothing.
unsafe extern "win64" fn sample_redirect_map(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    1
}

/// `sample_ebpf_extension_helper_function1(ctx)`: returns 0.
unsafe extern "win64" fn sample_helper_function1(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    0
}

/// The bytes of `p[..size]` up to the first NUL (a C string bounded by the size the verifier checked).
unsafe fn c_string<'a>(p: u64, size: u64) -> &'a [u8] {
    let b = bytes(p, size as u32);
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// `sample_ebpf_extension_find(buffer, size, find, arg_size)`: the offset of the first occurrence of the
/// string `find` in the string `buffer` (`strstr`), 0 for an empty `find`. The extension reads both as C
/// strings; the emulator stops at the sizes the verifier checked too. When there is no occurrence the extension
/// returns `NULL - buffer`, an address-dependent value; the emulator returns -1 instead.
unsafe extern "win64" fn sample_find(buffer: u64, size: u64, find: u64, arg_size: u64, _: u64, _: *mut u8) -> u64 {
    let (haystack, needle) = (c_string(buffer, size), c_string(find, arg_size));
    if needle.is_empty() {
        return 0;
    }
    haystack.windows(needle.len()).position(|w| w == needle).map_or(FAILED, |at| at as u64)
}

/// `sample_ebpf_extension_replace(buffer, size, position, replace, arg_size)`: copies the string `replace`
/// into `buffer` from `position` on, stopping at its NUL or before the buffer's last byte; a position outside
/// `0..size` fails with -1. Returns 0.
unsafe extern "win64" fn sample_replace(
    buffer: u64,
    size: u64,
    position: u64,
    replace: u64,
    arg_size: u64,
    _: *mut u8,
) -> u64 {
    let position = position as i64;
    if position < 0 || position as u64 >= size {
        return FAILED;
    }
    let source = c_string(replace, arg_size);
    let buffer = bytes_mut(buffer, size as u32);
    let room = buffer.len() - 1 - position as usize;
    let n = source.len().min(room);
    buffer[position as usize..position as usize + n].copy_from_slice(&source[..n]);
    0
}

/// `sample_ebpf_extension_helper_implicit_1()`: the context's `helper_data_1` (the context comes implicitly).
unsafe extern "win64" fn sample_helper_implicit_1(_: u64, _: u64, _: u64, _: u64, _: u64, ctx: *mut u8) -> u64 {
    u64::from((ctx.add(SAMPLE_HELPER_DATA_1) as *const u32).read_unaligned())
}

/// `sample_ebpf_extension_helper_implicit_2(u32 arg)`: the context's `helper_data_2` plus `arg`.
unsafe extern "win64" fn sample_helper_implicit_2(arg: u64, _: u64, _: u64, _: u64, _: u64, ctx: *mut u8) -> u64 {
    u64::from((ctx.add(SAMPLE_HELPER_DATA_2) as *const u32).read_unaligned()) + u64::from(arg as u32)
}

/// `sample_ext_helper_map_lookup_element(map, key)`: always NULL (coverage §1).
unsafe extern "win64" fn sample_map_lookup_element(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    0
}

/// `sample_ext_helper_map_get_value(map, key, value, size)`: copies the u32 the custom map holds under `key`
/// into `value` and returns 0; -1 when the map is not the sample extension's custom map, the key is absent or
/// `value` has no room for the u32 (coverage §1).
unsafe extern "win64" fn sample_map_get_value(m: u64, key: u64, value: u64, size: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    if m.definition.map_type != MAP_SAMPLE_HASH || size < 4 {
        return FAILED;
    }
    match m.get(bytes(key, m.definition.key_size)) {
        Some(object) => {
            bytes_mut(value, 4).copy_from_slice(&object[..4]);
            0
        }
        None => FAILED,
    }
}

/// `sample_ebpf_extension_btf_lookup(u64 key, void *value, u32 value_size)` (coverage §2): stores `key` in
/// `*value` when `value_size >= 8` and returns `key + value_size`.
pub(crate) unsafe extern "win64" fn sample_btf_lookup(
    key: u64,
    value: u64,
    value_size: u64,
    _: u64,
    _: u64,
    _: *mut u8,
) -> u64 {
    let size = value_size as u32;
    if size >= 8 {
        (value as *mut u64).write_unaligned(key);
    }
    key.wrapping_add(u64::from(size))
}

#[cfg(test)]
mod tests {
    //! Each extension helper of the Windows platform table, called as a program calls it.
    use crate::helpers::tests::{call, new_map, p, pm, with_context};
    use crate::helpers::{host_helper, INVALID, NOT_SUPPORTED};
    use crate::maps::{MAP_HASH, MAP_SAMPLE_HASH};

    use super::*;

    /// Every program-type-specific helper id of the Windows platform table (`compiler/src/platform/windows.rs`).
    const TABLE: &[(&str, &[u32])] = &[
        ("xdp", &[65536]),
        ("xdp_test", &[65536]),
        ("sock_addr", &[65536, 65537, 65538]),
        ("sockops", &[65536]),
        ("sample", &[65536, 65537, 65538, 65539, 65540, 65541, 65542]),
    ];

    #[test]
    fn every_program_type_specific_helper_of_the_windows_table_is_implemented() {
        for (program_type, ids) in TABLE {
            for id in *ids {
                assert!(host_helper(program_type, *id).is_some(), "{program_type} {id}");
            }
        }
        assert!(host_helper("bind", 65536).is_none() && host_helper("xdp", 65537).is_none());
    }

    #[test]
    fn xdp_adjust_head_moves_the_packet_start_within_the_buffer() {
        let packet = [0u8; 20];
        for program_type in ["xdp", "xdp_test"] {
            with_context(32, [32, 0, 8, 16], |ctx, state| {
                let start = packet.as_ptr() as u64;
                unsafe {
                    (ctx as *mut u64).write(start);
                    (ctx.add(8) as *mut u64).write(start + 20);
                }
                state.packet_start = start;
                assert_eq!(call(65536, program_type, [ctx as u64, 14, 0, 0, 0], ctx), 0);
                assert_eq!(unsafe { (ctx as *const u64).read() }, start + 14);
                assert_eq!(call(65536, program_type, [ctx as u64, (-14i64) as u64, 0, 0, 0], ctx), 0);
                let before = (-1i64) as u64;
                assert_eq!(call(65536, program_type, [ctx as u64, before, 0, 0, 0], ctx), INVALID, "no headroom");
                assert_eq!(call(65536, program_type, [ctx as u64, 21, 0, 0, 0], ctx), INVALID, "past the end");
            });
        }
    }

    #[test]
    fn sock_addr_network_context_is_version_1_with_every_field_unavailable() {
        with_context(64, [64, -1, -1, -1], |ctx, _| {
            let mut out = [0xaau8; 32];
            assert_eq!(call(65538, "sock_addr", [ctx as u64, pm(&mut out), 32, 0, 0], ctx), 0);
            assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), 1, "version");
            assert_eq!(&out[4..12], &[0xff; 8], "interface and tunnel type unavailable");
            assert_eq!(&out[12..16], &[0; 4], "padding");
            assert_eq!(&out[16..28], &[0xff; 12], "next hop and sub-interface unavailable");
            let mut small = [0u8; 16];
            assert_eq!(call(65538, "sock_addr", [ctx as u64, pm(&mut small), 16, 0, 0], ctx), FAILED);
            assert_eq!(small, [0; 16], "a short buffer is left alone");
            let mut recorded = [0u8; 4];
            recorded.copy_from_slice(b"ctx1");
            assert_eq!(call(65537, "sock_addr", [ctx as u64, p(&recorded), 4, 0, 0], ctx), 0);
        });
    }

    #[test]
    fn sample_extension_overrides_pid_tgid_and_redirect_map() {
        with_context(32, [32, 0, 8, -1], |ctx, _| {
            let m = new_map(MAP_HASH, 4, 4, 1);
            assert_eq!(call(19, "sample", [0; 5], ctx), 9999);
            assert_eq!(call(19, "xdp", [0; 5], ctx), call(19, "bind", [0; 5], ctx), "EbpfCore's own elsewhere");
            assert_ne!(call(19, "xdp", [0; 5], ctx), 9999);
            assert_eq!(call(35, "sample", [p(&m), 7, 0, 0, 0], ctx), 1);
            assert_eq!(call(35, "sample", [p(&m), 0, 2, 0, 0], ctx), 1, "whatever the key and flags");
        });
    }

    #[test]
    fn sample_helpers_read_the_context_and_search_and_patch_strings() {
        with_context(32, [32, 0, 8, -1], |ctx, _| {
            unsafe {
                (ctx.add(24) as *mut u32).write(40);
                (ctx.add(28) as *mut u32).write(100);
            }
            assert_eq!(call(65536, "sample", [ctx as u64, 0, 0, 0, 0], ctx), 0);
            assert_eq!(call(65539, "sample", [0; 5], ctx), 40, "helper_data_1");
            assert_eq!(call(65540, "sample", [5, 0, 0, 0, 0], ctx), 105, "helper_data_2 + arg");
            assert_eq!(call(65540, "sample", [(1u64 << 32) | 5, 0, 0, 0, 0], ctx), 105, "arg is a u32");
            let text = *b"hello world\0";
            assert_eq!(call(65537, "sample", [p(&text), 12, p(b"world\0"), 6, 0], ctx), 6);
            assert_eq!(call(65537, "sample", [p(&text), 12, p(b"hello\0"), 6, 0], ctx), 0);
            assert_eq!(call(65537, "sample", [p(&text), 12, p(b"xyz\0"), 4, 0], ctx), FAILED);
            assert_eq!(call(65537, "sample", [p(&text), 5, p(b"world\0"), 6, 0], ctx), FAILED, "bounded by size");
            let mut buffer = *b"abcdefgh";
            assert_eq!(call(65538, "sample", [pm(&mut buffer), 8, 2, p(b"XY\0"), 3], ctx), 0);
            assert_eq!(&buffer, b"abXYefgh");
            assert_eq!(call(65538, "sample", [pm(&mut buffer), 8, 5, p(b"12345\0"), 6], ctx), 0);
            assert_eq!(&buffer, b"abXYe12h", "the last byte is never written");
            assert_eq!(call(65538, "sample", [pm(&mut buffer), 8, 8, p(b"Z\0"), 2], ctx), FAILED);
            assert_eq!(call(65538, "sample", [pm(&mut buffer), 8, (-1i64) as u64, p(b"Z\0"), 2], ctx), FAILED);
            assert_eq!(&buffer, b"abXYe12h");
        });
    }

    #[test]
    fn sample_custom_map_serves_objects_to_its_helpers_but_not_to_lookup_and_update() {
        with_context(32, [32, 0, 8, -1], |ctx, _| {
            let objects = new_map(MAP_SAMPLE_HASH, 4, 4, 4);
            objects.update(&1u32.to_le_bytes(), &77u32.to_le_bytes(), 0);
            let mut out = 0u32;
            assert_eq!(call(65542, "sample", [p(&objects), p(&1u32), pm(&mut out), 4, 0], ctx), 0);
            assert_eq!(out, 77);
            assert_eq!(call(65542, "sample", [p(&objects), p(&2u32), pm(&mut out), 4, 0], ctx), FAILED, "absent");
            let plain = new_map(MAP_HASH, 4, 4, 4);
            plain.update(&1u32.to_le_bytes(), &5u32.to_le_bytes(), 0);
            assert_eq!(call(65542, "sample", [p(&plain), p(&1u32), pm(&mut out), 4, 0], ctx), FAILED, "not custom");
            assert_eq!(call(65541, "sample", [p(&objects), p(&1u32), 0, 0, 0], ctx), 0, "always NULL");
            assert_eq!(call(1, "sample", [p(&objects), p(&1u32), 0, 0, 0], ctx), 0, "lookup refused: NULL");
            assert_eq!(call(2, "sample", [p(&objects), p(&1u32), p(&9u32), 0, 0], ctx), NOT_SUPPORTED);
            assert_eq!(call(4, "sample", [p(&objects), p(&1u32), 0, 0, 0], ctx), 0, "lookup-and-delete refused");
            assert_eq!(objects.get(&1u32.to_le_bytes()), Some(77u32.to_le_bytes().to_vec()));
            assert_eq!(call(3, "sample", [p(&objects), p(&1u32), 0, 0, 0], ctx), 0, "delete is served");
            assert!(objects.is_empty());
        });
    }
}
