//! Host implementations of the general helpers (contract §7.4), called by program code with the Windows x64
//! ABI `uint64_t (*)(r1, r2, r3, r4, r5, void* context)`. The context's 64-byte header (slot 0) leads to the
//! [`ExecutionState`](crate::ExecutionState), as in `ebpf_program_invoke`.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::platform::{Guid, SAMPLE_BTF_FUNCTION_MODULE};
use crate::runtime::MAX_TAIL_CALL_CNT;
use crate::{extension, EmulatedMap, ExecutionState};

pub(crate) type Helper = unsafe extern "win64" fn(u64, u64, u64, u64, u64, *mut u8) -> u64;

/// `EBPF_NO_MORE_TAIL_CALLS`-style failure and generic failure codes (negative, as the helpers return).
const TAIL_CALL_LIMIT: u64 = -31i64 as u64;
pub(crate) const INVALID: u64 = -22i64 as u64;

pub(crate) unsafe fn state<'a>(context: *mut u8) -> &'a mut ExecutionState {
    &mut *(*(context.sub(64) as *const *mut ExecutionState))
}

pub(crate) unsafe fn map<'a>(address: u64) -> &'a EmulatedMap {
    &*(address as *const EmulatedMap)
}

pub(crate) unsafe fn bytes<'a>(p: u64, n: u32) -> &'a [u8] {
    if n == 0 {
        return &[];
    }
    std::slice::from_raw_parts(p as *const u8, n as usize)
}

/// `EBPF_OPERATION_NOT_SUPPORTED` as a helper's negative result (the code is EbpfCore's; programs test `< 0`).
pub(crate) const NOT_SUPPORTED: u64 = -95i64 as u64;

unsafe extern "win64" fn map_lookup_elem(m: u64, key: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    if m.refuses_program_find_and_update() {
        return 0;
    }
    m.lookup(bytes(key, m.definition.key_size)) as u64
}

unsafe extern "win64" fn map_update_elem(m: u64, key: u64, value: u64, flags: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    if m.refuses_program_find_and_update() {
        return NOT_SUPPORTED;
    }
    m.update(bytes(key, m.definition.key_size), bytes(value, m.definition.value_size), flags) as u64
}

unsafe extern "win64" fn map_delete_elem(m: u64, key: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    m.delete(bytes(key, m.definition.key_size)) as u64
}

/// Records the next program; the runtime runs it after the current one returns (contract §3.4).
unsafe extern "win64" fn tail_call(_ctx: u64, prog_array: u64, index: u64, _: u64, _: u64, context: *mut u8) -> u64 {
    let s = state(context);
    if s.tail_calls >= MAX_TAIL_CALL_CNT {
        return TAIL_CALL_LIMIT;
    }
    match map(prog_array).program(index as u32) {
        Some(p) => {
            s.next_program = Some(p);
            s.tail_calls += 1;
            0
        }
        None => INVALID,
    }
}

thread_local! {
    static PRANDOM: Cell<u64> = const { Cell::new(0x2545_f491_4f6c_dd1d) };
}

unsafe extern "win64" fn get_prandom_u32(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    PRANDOM.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x as u32 as u64
    })
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

unsafe extern "win64" fn ktime_get_ns(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    now_ns()
}

unsafe extern "win64" fn ktime_get_ms(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    now_ns() / 1_000_000
}

unsafe extern "win64" fn get_smp_processor_id(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    0
}

pub(crate) unsafe extern "win64" fn get_current_pid_tgid(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let pid = std::process::id() as u64;
    (pid << 32) | pid
}

/// `bpf_trace_printk2..5`: records the format string (and arguments) in the execution trace.
unsafe extern "win64" fn trace_printk(fmt: u64, size: u64, a: u64, b: u64, c: u64, context: *mut u8) -> u64 {
    let text = bytes(fmt, size as u32);
    let text = String::from_utf8_lossy(text.split(|&x| x == 0).next().unwrap_or(&[])).into_owned();
    state(context).trace.push(format!("{text} [{a:#x} {b:#x} {c:#x}]"));
    text.len() as u64
}

/// Writes `value` into `n` bytes at `p`.
pub(crate) unsafe fn bytes_mut<'a>(p: u64, n: u32) -> &'a mut [u8] {
    if n == 0 {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(p as *mut u8, n as usize)
}

/// `bpf_map_lookup_and_delete_elem`: the value, removed from the map; the pointer stays valid until the program
/// returns (the runtime keeps the deleted entry until the invocation ends).
unsafe extern "win64" fn map_lookup_and_delete_elem(m: u64, key: u64, _: u64, _: u64, _: u64, context: *mut u8) -> u64 {
    let m = map(m);
    if m.refuses_program_find_and_update() {
        return 0;
    }
    let key = if m.definition.key_size == 0 { &[][..] } else { bytes(key, m.definition.key_size) };
    match m.take(key) {
        Some(value) => {
            let mut storage = vec![0u64; value.len().div_ceil(8).max(1)].into_boxed_slice();
            bytes_mut(storage.as_mut_ptr() as u64, value.len() as u32).copy_from_slice(&value);
            let address = storage.as_ptr() as u64;
            state(context).retained.push(storage);
            address
        }
        None => 0,
    }
}

/// `bpf_csum_diff(from, from_size, to, to_size, seed)`: the one's-complement sum of `to` minus `from` added to
/// `seed`, folded to 32 bits (RFC 1624 incremental update); sizes must be multiples of 4.
unsafe extern "win64" fn csum_diff(from: u64, from_size: u64, to: u64, to_size: u64, seed: u64, _: *mut u8) -> u64 {
    if !from_size.is_multiple_of(4)
        || !to_size.is_multiple_of(4)
        || (from == 0 && from_size != 0)
        || (to == 0 && to_size != 0)
    {
        return INVALID;
    }
    let words = |p: u64, n: u64| -> Vec<u32> {
        if n == 0 {
            return Vec::new();
        }
        bytes(p, n as u32).chunks(4).map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes"))).collect()
    };
    let mut sum = seed & 0xffff_ffff;
    for w in words(from, from_size) {
        sum += u64::from(!w);
    }
    for w in words(to, to_size) {
        sum += u64::from(w);
    }
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum
}

/// `bpf_ringbuf_output(map, data, size, flags)`: appends a record (the flags only choose when consumers wake).
unsafe extern "win64" fn ringbuf_output(m: u64, data: u64, size: u64, _flags: u64, _: u64, _: *mut u8) -> u64 {
    map(m).output(bytes(data, size as u32)) as u64
}

unsafe extern "win64" fn map_push_elem(m: u64, value: u64, flags: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    m.push(bytes(value, m.definition.value_size), flags) as u64
}

unsafe fn copy_out(m: &EmulatedMap, value: u64, v: Option<Vec<u8>>) -> u64 {
    match v {
        Some(v) => {
            bytes_mut(value, m.definition.value_size).copy_from_slice(&v[..m.definition.value_size as usize]);
            0
        }
        None => super::maps::ENOENT as u64,
    }
}

unsafe extern "win64" fn map_pop_elem(m: u64, value: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    copy_out(m, value, m.pop())
}

unsafe extern "win64" fn map_peek_elem(m: u64, value: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    copy_out(m, value, m.peek())
}

/// The logon session of the emulated caller: SYSTEM's (`SYSTEM_LUID`, 0x3e7).
unsafe extern "win64" fn get_current_logon_id(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    0x3e7
}

/// The emulated caller runs as an administrator.
unsafe extern "win64" fn is_current_admin(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    1
}

/// `bpf_memcpy_s` / `bpf_memmove_s(dst, dst_size, src, src_size)`: `memcpy_s` semantics (a source larger than
/// the destination fails with the destination zeroed).
unsafe extern "win64" fn memmove_s(dst: u64, dst_size: u64, src: u64, src_size: u64, _: u64, _: *mut u8) -> u64 {
    if src_size > dst_size {
        std::ptr::write_bytes(dst as *mut u8, 0, dst_size as usize);
        return INVALID;
    }
    std::ptr::copy(src as *const u8, dst as *mut u8, src_size as usize);
    0
}

/// `bpf_memcmp_s(p1, size1, p2, size2)`: compares the common prefix, then the sizes.
unsafe extern "win64" fn memcmp_s(p1: u64, s1: u64, p2: u64, s2: u64, _: u64, _: *mut u8) -> u64 {
    let (a, b) = (bytes(p1, s1 as u32), bytes(p2, s2 as u32));
    match a.cmp(b) {
        std::cmp::Ordering::Less => -1i64 as u64,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }
}

unsafe extern "win64" fn memset(dst: u64, size: u64, value: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    std::ptr::write_bytes(dst as *mut u8, value as u8, size as usize);
    0
}

/// The socket cookie of the emulated connection: one socket per invocation, cookie 1.
unsafe extern "win64" fn get_socket_cookie(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    1
}

fn strnlen(s: &[u8]) -> usize {
    s.iter().position(|&c| c == 0).unwrap_or(s.len())
}

/// `bpf_strncpy_s(dst, dst_size, src, count)`: `strncpy_s` semantics; the copy must leave room for the NUL.
unsafe extern "win64" fn strncpy_s(dst: u64, dst_size: u64, src: u64, count: u64, _: u64, _: *mut u8) -> u64 {
    let dst = bytes_mut(dst, dst_size as u32);
    let src = bytes(src, count as u32);
    let n = strnlen(src);
    if dst.is_empty() {
        return INVALID;
    }
    if n >= dst.len() {
        dst[0] = 0;
        return INVALID;
    }
    dst[..n].copy_from_slice(&src[..n]);
    dst[n] = 0;
    0
}

/// `bpf_strncat_s(dst, dst_size, src, count)`: `strncat_s` semantics.
unsafe extern "win64" fn strncat_s(dst: u64, dst_size: u64, src: u64, count: u64, _: u64, _: *mut u8) -> u64 {
    let dst = bytes_mut(dst, dst_size as u32);
    let src = bytes(src, count as u32);
    let start = strnlen(dst);
    let n = strnlen(src);
    if start == dst.len() || start + n >= dst.len() {
        if let Some(first) = dst.first_mut() {
            *first = 0;
        }
        return INVALID;
    }
    dst[start..start + n].copy_from_slice(&src[..n]);
    dst[start + n] = 0;
    0
}

unsafe extern "win64" fn strnlen_s(s: u64, size: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    if s == 0 {
        return 0;
    }
    strnlen(bytes(s, size as u32)) as u64
}

/// `bpf_perf_event_output(ctx, map, flags, data, size)`: a record on the current (only) CPU; the upper 32 bits
/// of `flags` (`BPF_F_CTXLEN_MASK`) append that many bytes of the packet.
unsafe extern "win64" fn perf_event_output(
    ctx: u64,
    m: u64,
    flags: u64,
    data: u64,
    size: u64,
    context: *mut u8,
) -> u64 {
    let cpu = flags & 0xffff_ffff;
    if cpu != 0xffff_ffff && cpu != 0 {
        return INVALID;
    }
    let mut record = bytes(data, size as u32).to_vec();
    let ctx_len = (flags >> 32) & 0xf_ffff;
    if ctx_len > 0 {
        let [_, d, e, _] = state(context).context_descriptor;
        if d < 0 || e < 0 {
            return INVALID;
        }
        let c = ctx as *const u8;
        let start = (c.add(d as usize) as *const u64).read_unaligned();
        let end = (c.add(e as usize) as *const u64).read_unaligned();
        if end.saturating_sub(start) < ctx_len {
            return INVALID;
        }
        record.extend_from_slice(bytes(start, ctx_len as u32));
    }
    map(m).output(&record) as u64
}

/// A stable process start key and thread creation time for the emulated caller.
unsafe extern "win64" fn get_current_process_start_key(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    std::process::id() as u64
}

unsafe extern "win64" fn get_current_thread_create_time(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    THREAD_CREATED.with(|t| *t)
}

thread_local! {
    static THREAD_CREATED: u64 = now_ns() / 100;
}

/// The host function a BTF-function provider module exports under `name`, if the emulator implements it.
pub fn host_kfunc(module: Guid, name: &str) -> Option<usize> {
    let f: Helper = match name {
        "sample_ebpf_extension_btf_lookup" if module == SAMPLE_BTF_FUNCTION_MODULE => extension::sample_btf_lookup,
        _ => return None,
    };
    Some(f as usize)
}

/// The host function for helper `id` as program type `program_type` sees it, if the emulator implements it.
/// An extension's helpers (ids from 65536, contract §7.4) and its overrides of global helpers come first
/// ([`extension::extension_helper`]); the rest are EbpfCore's general helpers.
pub fn host_helper(program_type: &str, id: u32) -> Option<usize> {
    if let Some(f) = extension::extension_helper(program_type, id) {
        return Some(f as usize);
    }
    let f: Helper = match (program_type, id) {
        (_, id) if id >= 65536 => return None,
        (_, id) => match id {
            1 => map_lookup_elem,
            2 => map_update_elem,
            3 => map_delete_elem,
            4 => map_lookup_and_delete_elem,
            5 => tail_call,
            6 => get_prandom_u32,
            7 | 9 => ktime_get_ns,
            8 => get_smp_processor_id,
            10 => csum_diff,
            11 => ringbuf_output,
            12..=15 => trace_printk,
            16 => map_push_elem,
            17 => map_pop_elem,
            18 => map_peek_elem,
            19 => get_current_pid_tgid,
            20 => get_current_logon_id,
            21 => is_current_admin,
            22 | 25 => memmove_s,
            23 => memcmp_s,
            24 => memset,
            26 => get_socket_cookie,
            27 => strncpy_s,
            28 => strncat_s,
            29 => strnlen_s,
            30 | 31 => ktime_get_ms,
            32 => perf_event_output,
            33 => get_current_process_start_key,
            34 => get_current_thread_create_time,
            // 35 (`bpf_redirect_map`) has a prototype in EbpfCore's table but no implementation there: only an
            // extension that overrides it for its program type provides one (see [`why_unimplemented`]).
            _ => return None,
        },
    };
    Some(f as usize)
}

/// Why the emulated runtime cannot bind helper `id` for `program_type` (the load then fails, as it does in
/// EbpfCore when no provider supplies an address for a helper the program calls).
pub fn why_unimplemented(program_type: &str, id: u32) -> String {
    match id {
        35 => format!(
            "bpf_redirect_map (35) has no implementation in EbpfCore; only an extension that overrides it for its \
             program type provides one (the sample extension, object-and-platform-coverage §1), and none does for \
             `{program_type}`"
        ),
        _ => format!("the emulator does not implement helper {id} for `{program_type}`"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Each helper of the Windows platform table the emulator implements, called as a program calls it: with
    //! the context (whose 64-byte header leads to the execution state) as the sixth argument.
    use super::*;
    use crate::maps::{
        MapDefinition, ENOENT, ENOSPC, MAP_HASH, MAP_PERF_EVENT_ARRAY, MAP_QUEUE, MAP_RINGBUF, MAP_STACK,
    };

    /// Runs `f` with a context of `size` bytes behind a header that points at a fresh execution state.
    pub(crate) fn with_context<R>(
        size: usize,
        descriptor: [i32; 4],
        f: impl FnOnce(*mut u8, &mut ExecutionState) -> R,
    ) -> R {
        let mut state = ExecutionState {
            module: std::ptr::null(),
            next_program: None,
            tail_calls: 0,
            trace: Vec::new(),
            retained: Vec::new(),
            context_descriptor: descriptor,
            packet_start: 0,
        };
        let mut buffer = vec![0u64; 8 + size.div_ceil(8)];
        buffer[0] = &mut state as *mut ExecutionState as u64;
        let ctx = unsafe { (buffer.as_mut_ptr() as *mut u8).add(64) };
        let state_ref = unsafe { &mut *(buffer[0] as *mut ExecutionState) };
        f(ctx, state_ref)
    }

    pub(crate) fn call(id: u32, program_type: &str, a: [u64; 5], ctx: *mut u8) -> u64 {
        let f = host_helper(program_type, id).unwrap_or_else(|| panic!("helper {id} is implemented"));
        unsafe { std::mem::transmute::<usize, Helper>(f)(a[0], a[1], a[2], a[3], a[4], ctx) }
    }

    pub(crate) fn new_map(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> EmulatedMap {
        EmulatedMap::new("m", MapDefinition { map_type, key_size, value_size, max_entries })
    }

    pub(crate) fn p<T: ?Sized>(x: &T) -> u64 {
        x as *const T as *const u8 as u64
    }

    /// A pointer the helper writes through.
    pub(crate) fn pm<T>(x: &mut T) -> u64 {
        x as *mut T as u64
    }

    #[test]
    fn every_general_helper_ebpf_core_implements_is_implemented() {
        for id in 1..=34 {
            assert!(host_helper("xdp", id).is_some(), "helper {id}");
        }
        assert!(host_helper("xdp", 35).is_none(), "EbpfCore has no bpf_redirect_map; only the sample extension does");
        assert!(why_unimplemented("xdp", 35).contains("no implementation in EbpfCore"));
        assert!(host_helper("sample", 35).is_some());
    }

    #[test]
    fn lookup_and_delete_returns_the_value_and_removes_it_and_pops_queues() {
        with_context(8, [-1; 4], |ctx, state| {
            let m = new_map(MAP_HASH, 4, 8, 4);
            m.update(&1u32.to_le_bytes(), &7u64.to_le_bytes(), 0);
            let v = call(4, "xdp", [p(&m), p(&1u32), 0, 0, 0], ctx);
            assert_eq!(unsafe { *(v as *const u64) }, 7);
            assert!(m.is_empty() && state.retained.len() == 1);
            assert_eq!(call(4, "xdp", [p(&m), p(&1u32), 0, 0, 0], ctx), 0);
            let q = new_map(MAP_QUEUE, 0, 4, 2);
            q.push(&5u32.to_le_bytes(), 0);
            let v = call(4, "xdp", [p(&q), 0, 0, 0, 0], ctx);
            assert_eq!(unsafe { *(v as *const u32) }, 5);
        });
    }

    #[test]
    fn queues_are_fifo_stacks_are_lifo_and_full_ones_refuse_unless_bpf_exist() {
        with_context(8, [-1; 4], |ctx, _| {
            for (t, first_out) in [(MAP_QUEUE, 1u32), (MAP_STACK, 2u32)] {
                let m = new_map(t, 0, 4, 2);
                assert_eq!(call(16, "xdp", [p(&m), p(&1u32), 0, 0, 0], ctx), 0);
                assert_eq!(call(16, "xdp", [p(&m), p(&2u32), 0, 0, 0], ctx), 0);
                assert_eq!(call(16, "xdp", [p(&m), p(&3u32), 0, 0, 0], ctx) as i64, crate::maps::E2BIG);
                let mut out = 0u32;
                assert_eq!(call(18, "xdp", [p(&m), pm(&mut out), 0, 0, 0], ctx), 0);
                assert_eq!(out, first_out, "peek");
                assert_eq!(call(17, "xdp", [p(&m), pm(&mut out), 0, 0, 0], ctx), 0);
                assert_eq!(out, first_out, "pop");
                assert_eq!(m.len(), 1);
                out = 0;
                call(17, "xdp", [p(&m), pm(&mut out), 0, 0, 0], ctx);
                assert_eq!(call(17, "xdp", [p(&m), pm(&mut out), 0, 0, 0], ctx) as i64, ENOENT);
            }
            let q = new_map(MAP_QUEUE, 0, 4, 1);
            q.push(&1u32.to_le_bytes(), 0);
            assert_eq!(call(16, "xdp", [p(&q), p(&9u32), 2, 0, 0], ctx), 0, "BPF_EXIST drops the oldest");
            assert_eq!(q.peek(), Some(9u32.to_le_bytes().to_vec()));
        });
    }

    #[test]
    fn ring_buffers_and_perf_event_arrays_collect_records_until_full() {
        let packet = [0xaau8, 0xbb, 0xcc];
        with_context(32, [32, 0, 8, 16], |ctx, _| {
            let start = packet.as_ptr() as u64;
            unsafe {
                (ctx as *mut u64).write(start);
                (ctx.add(8) as *mut u64).write(start + 3);
            }
            let rb = new_map(MAP_RINGBUF, 0, 0, 32);
            let data = [1u8, 2, 3, 4];
            assert_eq!(call(11, "xdp", [p(&rb), data.as_ptr() as u64, 4, 0, 0], ctx), 0);
            assert_eq!(call(11, "xdp", [p(&rb), data.as_ptr() as u64, 4, 0, 0], ctx), 0);
            assert_eq!(call(11, "xdp", [p(&rb), data.as_ptr() as u64, 4, 0, 0], ctx) as i64, ENOSPC);
            assert_eq!(rb.records(), vec![data.to_vec(), data.to_vec()]);
            let perf = new_map(MAP_PERF_EVENT_ARRAY, 0, 0, 64);
            let current_cpu_with_2_packet_bytes = (2u64 << 32) | 0xffff_ffff;
            let r =
                call(32, "xdp", [ctx as u64, p(&perf), current_cpu_with_2_packet_bytes, data.as_ptr() as u64, 4], ctx);
            assert_eq!(r, 0);
            assert_eq!(perf.records(), vec![vec![1, 2, 3, 4, 0xaa, 0xbb]]);
            assert_eq!(call(32, "xdp", [ctx as u64, p(&perf), 3, data.as_ptr() as u64, 4], ctx), INVALID, "CPU 3");
        });
    }

    #[test]
    fn csum_diff_is_the_ones_complement_difference() {
        with_context(8, [-1; 4], |ctx, _| {
            let from = [0x1234_5678u32];
            let to = [0x1234_5679u32];
            let d = call(10, "xdp", [p(&from), 4, p(&to), 4, 0], ctx);
            // !from + to = 0xedcba987 + 0x12345679 = 0xffffffff + 1 → folded to 1.
            assert_eq!(d, 1);
            assert_eq!(call(10, "xdp", [0, 0, p(&to), 4, 7], ctx), 7 + 0x1234_5679);
            assert_eq!(call(10, "xdp", [p(&from), 3, p(&to), 4, 0], ctx), INVALID);
        });
    }

    #[test]
    fn memory_and_string_helpers_follow_the_secure_crt_semantics() {
        with_context(8, [-1; 4], |ctx, _| {
            let mut dst = [9u8; 8];
            let src = *b"abcdef\0\0";
            assert_eq!(call(22, "xdp", [pm(&mut dst), 8, p(&src), 4, 0], ctx), 0);
            assert_eq!(&dst[..5], b"abcd\x09");
            assert_eq!(call(22, "xdp", [pm(&mut dst), 2, p(&src), 4, 0], ctx), INVALID);
            assert_eq!(&dst[..3], &[0, 0, b'c'], "a failed copy zeroes the destination");
            assert_eq!(call(24, "xdp", [pm(&mut dst), 8, 0x41, 0, 0], ctx), 0);
            assert_eq!(dst, [0x41; 8]);
            assert_eq!(call(23, "xdp", [p(b"abc"), 3, p(b"abd"), 3, 0], ctx) as i64, -1);
            assert_eq!(call(23, "xdp", [p(b"abc"), 3, p(b"abc"), 3, 0], ctx), 0);
            assert_eq!(call(29, "xdp", [p(&src), 8, 0, 0, 0], ctx), 6);
            let mut s = [0u8; 8];
            assert_eq!(call(27, "xdp", [pm(&mut s), 8, p(b"hey\0"), 4, 0], ctx), 0);
            assert_eq!(call(28, "xdp", [pm(&mut s), 8, p(b"you\0"), 4, 0], ctx), 0);
            assert_eq!(&s[..7], b"heyyou\0");
            assert_eq!(call(28, "xdp", [pm(&mut s), 8, p(b"xy\0"), 3, 0], ctx), INVALID, "no room for the NUL");
            assert_eq!(call(27, "xdp", [pm(&mut s), 3, p(b"abc\0"), 4, 0], ctx), INVALID);
        });
    }

    #[test]
    fn environment_helpers_report_the_emulated_caller() {
        with_context(8, [-1; 4], |ctx, _| {
            assert_eq!(call(20, "bind", [ctx as u64, 0, 0, 0, 0], ctx), 0x3e7);
            assert_eq!(call(21, "bind", [ctx as u64, 0, 0, 0, 0], ctx), 1);
            assert_eq!(call(26, "sock_addr", [ctx as u64, 0, 0, 0, 0], ctx), 1);
            assert_eq!(call(33, "xdp", [0; 5], ctx), std::process::id() as u64);
            assert_eq!(call(34, "xdp", [0; 5], ctx), call(34, "xdp", [0; 5], ctx));
        });
    }
}
