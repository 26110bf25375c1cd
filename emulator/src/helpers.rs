//! Host implementations of the general helpers (contract §7.4), called by program code with the Windows x64
//! ABI `uint64_t (*)(r1, r2, r3, r4, r5, void* context)`. The context's 64-byte header (slot 0) leads to the
//! [`ExecutionState`](crate::ExecutionState), as in `ebpf_program_invoke`.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::platform::{Guid, SAMPLE_BTF_FUNCTION_MODULE};
use crate::runtime::MAX_TAIL_CALL_CNT;
use crate::{EmulatedMap, ExecutionState};

type Helper = unsafe extern "win64" fn(u64, u64, u64, u64, u64, *mut u8) -> u64;

/// `EBPF_NO_MORE_TAIL_CALLS`-style failure and generic failure codes (negative, as the helpers return).
const TAIL_CALL_LIMIT: u64 = -31i64 as u64;
const INVALID: u64 = -22i64 as u64;

unsafe fn state<'a>(context: *mut u8) -> &'a mut ExecutionState {
    &mut *(*(context.sub(64) as *const *mut ExecutionState))
}

unsafe fn map<'a>(address: u64) -> &'a EmulatedMap {
    &*(address as *const EmulatedMap)
}

unsafe fn bytes<'a>(p: u64, n: u32) -> &'a [u8] {
    std::slice::from_raw_parts(p as *const u8, n as usize)
}

unsafe extern "win64" fn map_lookup_elem(m: u64, key: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
    m.lookup(bytes(key, m.definition.key_size)) as u64
}

unsafe extern "win64" fn map_update_elem(m: u64, key: u64, value: u64, flags: u64, _: u64, _: *mut u8) -> u64 {
    let m = map(m);
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

unsafe extern "win64" fn get_current_pid_tgid(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
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

/// `bpf_sock_ops_get_flow_id`: a flow id derived from the connection's addresses and ports
/// (`bpf_sock_ops_t`: local_ip4 @8, local_port @24, remote_ip4 @28, remote_port @44).
unsafe extern "win64" fn sock_ops_get_flow_id(ctx: u64, _: u64, _: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let c = ctx as *const u8;
    let field = |o: usize| (c.add(o) as *const u32).read_unaligned() as u64;
    (field(8) ^ field(28)) << 32 | (field(24) << 16 ^ field(44))
}

/// `sample_ebpf_extension_btf_lookup(u64 key, void *value, u32 value_size)` (coverage §2): stores `key` in
/// `*value` when `value_size >= 8` and returns `key + value_size`.
unsafe extern "win64" fn sample_btf_lookup(key: u64, value: u64, value_size: u64, _: u64, _: u64, _: *mut u8) -> u64 {
    let size = value_size as u32;
    if size >= 8 {
        (value as *mut u64).write_unaligned(key);
    }
    key.wrapping_add(u64::from(size))
}

/// The host function a BTF-function provider module exports under `name`, if the emulator implements it.
pub fn host_kfunc(module: Guid, name: &str) -> Option<usize> {
    let f: Helper = match name {
        "sample_ebpf_extension_btf_lookup" if module == SAMPLE_BTF_FUNCTION_MODULE => sample_btf_lookup,
        _ => return None,
    };
    Some(f as usize)
}

/// The host function for helper `id` as program type `program_type` sees it, if the emulator implements it.
/// Ids from 65536 on are program-type specific (contract §7.4).
pub fn host_helper(program_type: &str, id: u32) -> Option<usize> {
    let f: Helper = match (program_type, id) {
        ("sock_addr", 65536) => get_current_pid_tgid,
        ("sockops", 65536) => sock_ops_get_flow_id,
        (_, id) if id >= 65536 => return None,
        (_, id) => match id {
            1 => map_lookup_elem,
            2 => map_update_elem,
            3 => map_delete_elem,
            5 => tail_call,
            6 => get_prandom_u32,
            7 | 9 => ktime_get_ns,
            8 => get_smp_processor_id,
            12..=15 => trace_printk,
            19 => get_current_pid_tgid,
            30 | 31 => ktime_get_ms,
            _ => return None,
        },
    };
    Some(f as usize)
}
