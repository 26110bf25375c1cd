//! The C benchmark host of the real eBPF for Windows programs (`flowtrack`, `tailchain`, `bindpolicy`) for the
//! engines that run machine code: `host_maps.h` — the native baseline's maps, helpers and tail-call state — built
//! into this crate by `build.rs` (`host_engines.c`, clang -O2 like the baseline) and reached through FFI.
//!
//! So bpf2sys's code and rbpf's JITs call the very helper code the native clang -O2 baseline calls, and the
//! speed ratio measures the generated code, not a port of the host (the Rust port in [`super::maps`] stays for the
//! reference interpreter, whose memory is not host memory). bpf2sys's code gets the helpers in the
//! `helper_function_t` convention (contract §5.1) and runs its tail calls through `bench_invoke_native`, the
//! native baseline's `bench_invoke` loop (contract §3.4); rbpf gets them in the System V convention and runs the
//! same loop's state from Rust around its VMs.
//!
//! The tail-call state is the native baseline's: process-wide C statics. A [`CMaps`] therefore holds a
//! process-wide lock for its lifetime, so two in one process (tests on parallel threads) run one after the other;
//! a thread must drop one before it creates the next.

use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};

use bpf2sys_runtime_shim::abi::ProgramRuntimeContext;

use super::maps::{UnsupportedMap, MAP_ARRAY, MAP_HASH, MAP_PROG_ARRAY};
use crate::native::EntryFunction;

/// `struct bench_map` (`host_maps.h`): the map's `ebpf_map_definition_in_file_t` record, then the storage the C
/// host allocates on the map's first use.
#[repr(C)]
struct CMap {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    inner_map_idx: u32,
    pinning: u32,
    id: u32,
    inner_id: u32,
    storage: *mut c_void,
}

/// `struct bench_native_program` (`host_engines.c`): a program in the contract's entry shape (§5.1) and its runtime
/// context; what a program-array slot holds for `bench_invoke_native`.
#[repr(C)]
pub struct NativeEntry {
    pub entry: EntryFunction,
    pub runtime_context: *const ProgramRuntimeContext,
}

unsafe extern "C" {
    fn bench_host_map_update(map: *mut CMap, key: *const u8, value: *const u8, flags: u64) -> i64;
    fn bench_host_map_values(map: *mut CMap, len: *mut usize) -> *mut u8;
    fn bench_host_map_count(map: *mut CMap) -> u32;
    fn bench_host_map_free(map: *mut CMap);
    fn bench_host_prog_array_set(map: *mut CMap, index: u32, program: *const c_void);
    fn bench_invoke_native(program: *const NativeEntry, context: *mut c_void) -> u64;
    fn bench_tail_call_reset();
    fn bench_tail_call_take() -> *const c_void;
}

/// The helpers in the `helper_function_t` shape (contract §5.1), which bpf2sys's code calls.
///
/// Declared `safe` so that they fit the safe helper-pointer type the native runner stores, like every helper the
/// harness provides: the map and key pointers must still be a [`CMaps`] map's address and readable key (and
/// value) bytes, which the verifier proved for every call of the benchmark programs. For generated code only: they
/// do not keep xmm6–xmm15 across their C library calls (`host_engines.c` says why that is enough there), which
/// Rust calling them directly would assume.
pub mod win64 {
    use std::ffi::c_void;

    unsafe extern "win64" {
        pub safe fn bench_win64_map_lookup_elem(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64, ctx: *mut c_void) -> u64;
        pub safe fn bench_win64_map_update_elem(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64, ctx: *mut c_void) -> u64;
        pub safe fn bench_win64_map_delete_elem(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64, ctx: *mut c_void) -> u64;
        pub safe fn bench_win64_tail_call(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64, ctx: *mut c_void) -> u64;
    }

    /// The host function for helper `id`.
    pub fn helper(id: u32) -> Option<crate::native::HelperFunction> {
        Some(match id {
            1 => bench_win64_map_lookup_elem,
            2 => bench_win64_map_update_elem,
            3 => bench_win64_map_delete_elem,
            5 => bench_win64_tail_call,
            _ => return None,
        })
    }
}

/// The helpers with r1..r5 in the System V convention, for rbpf (`safe` as in [`win64`], same conditions). They
/// realign the stack, which rbpf's JIT leaves 8 bytes off when it calls a helper.
pub mod sysv {
    unsafe extern "C" {
        pub safe fn bench_sysv_map_lookup_elem(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64) -> u64;
        pub safe fn bench_sysv_map_update_elem(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64) -> u64;
        pub safe fn bench_sysv_map_delete_elem(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64) -> u64;
        pub safe fn bench_sysv_tail_call(r1: u64, r2: u64, r3: u64, r4: u64, r5: u64) -> u64;
    }

    /// (helper id, function) for every helper the benchmark programs call.
    pub const HELPERS: [(u32, extern "C" fn(u64, u64, u64, u64, u64) -> u64); 4] = [
        (1, bench_sysv_map_lookup_elem),
        (2, bench_sysv_map_update_elem),
        (3, bench_sysv_map_delete_elem),
        (5, bench_sysv_tail_call),
    ];
}

/// Serialises the users of the C host's process-wide tail-call state.
static HOST: Mutex<()> = Mutex::new(());

/// The maps of one benchmark module in the C host. A map's address — what `map_data[m].address` holds and what
/// the helpers take — is its `struct bench_map`, which never moves while the `CMaps` lives.
pub struct CMaps {
    maps: Box<[CMap]>,
    _host: MutexGuard<'static, ()>,
}

impl CMaps {
    /// Empty maps of the given (type, key size, value size, max entries).
    pub fn new(defs: impl IntoIterator<Item = (u32, u32, u32, u32)>) -> Result<CMaps, UnsupportedMap> {
        let maps = defs
            .into_iter()
            .map(|(map_type, key_size, value_size, max_entries)| match map_type {
                MAP_HASH | MAP_ARRAY | MAP_PROG_ARRAY => Ok(CMap {
                    map_type,
                    key_size,
                    value_size,
                    max_entries,
                    inner_map_idx: 0,
                    pinning: 0,
                    id: 0,
                    inner_id: 0,
                    storage: std::ptr::null_mut(),
                }),
                other => Err(UnsupportedMap(other)),
            })
            .collect::<Result<Box<[CMap]>, _>>()?;
        // A poisoned lock only means another user panicked; the C state is reset by every invocation.
        let host = HOST.lock().unwrap_or_else(|e| e.into_inner());
        Ok(CMaps { maps, _host: host })
    }

    /// Map `m`'s address.
    pub fn address(&mut self, m: usize) -> u64 {
        &mut self.maps[m] as *mut CMap as u64
    }

    /// `bpf_map_update_elem` from user mode; `key` and `value` must have the map's key and value sizes.
    pub fn update(&mut self, m: usize, key: &[u8], value: &[u8], flags: u64) -> i64 {
        let map = &mut self.maps[m];
        assert!(key.len() >= map.key_size as usize && value.len() >= map.value_size as usize, "short key or value");
        // SAFETY: `map` is a live record of this host; key and value have the sizes the C code reads.
        unsafe { bench_host_map_update(map, key.as_ptr(), value.as_ptr(), flags) }
    }

    /// Fills slot `slot` of program array `m` with `program` (an address or token the engine's tail-call loop
    /// understands: a [`NativeEntry`]'s address for [`invoke_native`], a [`program_token`] for [`tail_call_take`]).
    pub fn set_program(&mut self, m: usize, slot: u32, program: usize) {
        // SAFETY: a live record of this host; the C code stores the value and never dereferences it.
        unsafe { bench_host_prog_array_set(&mut self.maps[m], slot, program as *const c_void) }
    }

    /// The addresses of map `m`'s values (allocated now), for engines that check every access.
    pub fn value_range(&mut self, m: usize) -> std::ops::Range<u64> {
        let mut len = 0usize;
        // SAFETY: a live record of this host.
        let start = unsafe { bench_host_map_values(&mut self.maps[m], &mut len) } as u64;
        start..start + len as u64
    }

    /// Entries of hash map `m` (0 for other maps).
    pub fn hash_len(&mut self, m: usize) -> u32 {
        // SAFETY: a live record of this host.
        unsafe { bench_host_map_count(&mut self.maps[m]) }
    }
}

impl Drop for CMaps {
    fn drop(&mut self) {
        for map in self.maps.iter_mut() {
            // SAFETY: every record's storage was allocated by the C host (or is null) and nothing uses it any more.
            unsafe { bench_host_map_free(map) }
        }
    }
}

/// Runs `first`, then every program it tail-calls (`bench_invoke_native`: the native baseline's loop); r0 of the
/// last. Program arrays must hold [`NativeEntry`] addresses.
///
/// # Safety
/// Every entry's program must have been verified for `context`, and its runtime context must bind the maps of a
/// live [`CMaps`] (whose lock the caller therefore holds) and the [`win64`] helpers.
pub unsafe fn invoke_native(first: &NativeEntry, context: *mut c_void) -> u64 {
    // SAFETY: guaranteed by the caller.
    unsafe { bench_invoke_native(first, context) }
}

/// The token of program `index` in a program array, for an engine that runs the tail-call loop itself.
pub fn program_token(index: usize) -> usize {
    index + 1
}

/// Starts an invocation of the tail-call loop an engine runs itself (the caller holds a [`CMaps`]).
pub fn tail_call_reset() {
    // SAFETY: only writes the C host's tail-call state, which the caller's CMaps lock guards.
    unsafe { bench_tail_call_reset() }
}

/// The program the last one tail-called (by [`program_token`]), if any.
pub fn tail_call_take() -> Option<usize> {
    // SAFETY: as in `tail_call_reset`.
    let token = unsafe { bench_tail_call_take() } as usize;
    token.checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Through the System V entry points: Rust calling a Windows x64 helper directly would expect xmm6-xmm15 kept,
    // which the C library calls inside do not promise (see host_engines.c); the engines test covers `win64`.
    fn lookup(maps: &mut CMaps, m: usize, key: &[u8]) -> u64 {
        sysv::bench_sysv_map_lookup_elem(maps.address(m), key.as_ptr() as u64, 0, 0, 0)
    }

    #[test]
    fn c_hash_map_inserts_finds_updates_and_deletes_like_the_emulated_runtime() {
        let mut maps = CMaps::new([(MAP_HASH, 8, 8, 3)]).unwrap();
        let keys: Vec<[u8; 8]> = (0u64..4).map(|k| (k * 0x0101_0101_0101).to_le_bytes()).collect();
        let value = 7u64.to_le_bytes();
        assert_eq!(lookup(&mut maps, 0, &keys[0]), 0);
        assert_eq!(maps.update(0, &keys[0], &value, 0), 0);
        let a = lookup(&mut maps, 0, &keys[0]);
        assert!(maps.value_range(0).contains(&a));
        // SAFETY: `a` is the address of the entry's 8-byte value.
        assert_eq!(unsafe { *(a as *const u64) }, 7);
        assert_eq!(maps.update(0, &keys[0], &value, 1), -17, "BPF_NOEXIST on an existing key: EEXIST");
        assert_eq!(maps.update(0, &keys[1], &value, 2), -2, "BPF_EXIST on a missing key: ENOENT");
        assert_eq!(maps.update(0, &keys[0], &9u64.to_le_bytes(), 2), 0);
        assert_eq!(lookup(&mut maps, 0, &keys[0]), a, "an update keeps the value's address");
        assert_eq!(maps.update(0, &keys[1], &value, 0), 0);
        let b = lookup(&mut maps, 0, &keys[1]);
        assert_eq!(maps.update(0, &keys[2], &value, 0), 0);
        assert_eq!(maps.update(0, &keys[3], &value, 0), -7, "full: E2BIG");
        assert_eq!(maps.hash_len(0), 3);
        let delete = |maps: &mut CMaps, key: &[u8]| {
            sysv::bench_sysv_map_delete_elem(maps.address(0), key.as_ptr() as u64, 0, 0, 0)
        };
        assert_eq!(delete(&mut maps, &keys[3]), -2i64 as u64);
        assert_eq!(delete(&mut maps, &keys[0]), 0);
        assert_eq!(lookup(&mut maps, 0, &keys[0]), 0);
        assert_eq!(lookup(&mut maps, 0, &keys[1]), b, "deleting one entry moves no other");
        assert_eq!(maps.update(0, &keys[3], &value, 0), 0, "the freed node is reused");
    }

    #[test]
    fn c_array_and_tail_calls_follow_the_emulated_runtime() {
        let mut maps = CMaps::new([(MAP_ARRAY, 4, 8, 4), (MAP_PROG_ARRAY, 4, 4, 4)]).unwrap();
        let base = maps.value_range(0).start;
        assert_eq!(lookup(&mut maps, 0, &3u32.to_le_bytes()), base + 24);
        assert_eq!(lookup(&mut maps, 0, &4u32.to_le_bytes()), 0, "past max_entries");
        assert_eq!(maps.update(0, &4u32.to_le_bytes(), &[0; 8], 0), -7);
        assert_eq!(maps.update(0, &1u32.to_le_bytes(), &[0; 8], 1), -17);
        maps.set_program(1, 2, program_token(7));
        let array = maps.address(1);
        let tail_call = |index: u64| sysv::bench_sysv_tail_call(0, array, index, 0, 0) as i64;
        tail_call_reset();
        assert_eq!(tail_call(1), -22, "an empty slot");
        assert_eq!(tail_call_take(), None);
        for _ in 0..33 {
            assert_eq!(tail_call(2), 0);
            assert_eq!(tail_call_take(), Some(7));
        }
        assert_eq!(tail_call(2), -31, "MAX_TAIL_CALL_CNT reached");
        assert_eq!(tail_call_take(), None);
    }

    #[test]
    fn unknown_map_types_are_refused() {
        assert!(matches!(CMaps::new([(MAP_HASH, 4, 4, 1), (9, 4, 4, 1)]), Err(UnsupportedMap(9))));
    }
}
