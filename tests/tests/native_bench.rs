//! The six ../shared/bench programs and this repository's `pktwalk` return their expected r0 when run as bpf2sys's native x64 code
//! (inputs generated exactly as `make_input()` in bench/host_common.h does).

use std::ffi::c_void;

use bpf2sys::compiled::Target;
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};
use bpf2sys_tests::bench::input;
use bpf2sys_tests::native::{module_from_instructions, HelperFunction, HostRuntime, NativeProgram};
use object::{Object, ObjectSection};

/// Helper 1: `u64 *lookup(void *map, const u32 *key)`, a host pointer or 0 (bench/host_common.h's
/// `bench_lookup`, ported once in `bpf2sys_tests::bench::input`).
extern "win64" fn bench_lookup(_map: u64, key: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    // SAFETY: the program passes a pointer to 4 readable bytes on its stack.
    unsafe { input::lookup_helper(key) }
}

fn run_bench(prog: &str) -> u64 {
    let path = format!("{}/../samples/bench/{prog}.o", env!("CARGO_MANIFEST_DIR"));
    let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file = object::File::parse(&*elf).unwrap();
    let text = file.section_by_name(".text").expect(".text").data().unwrap().to_vec();
    let instructions = bpf2sys::isa::decode(&text).unwrap();
    let module = module_from_instructions(prog, instructions);
    let compiled = lower::lower_unverified_for_testing(&module, 0, &LowerOptions::new(Target::X64)).unwrap();
    let helper = |id: u32| (id == 1).then_some(bench_lookup as HelperFunction);
    let runtime = HostRuntime::new(&compiled.helper_ids, &helper, &[], MapDataLayout::default(), Vec::new());
    let program = NativeProgram::load(&compiled, runtime).unwrap();
    let mut input = input::make_input(prog).expect("a bench program");
    // SAFETY: the bench programs read only inside the buffer, clamping to its header length.
    let first = unsafe { program.run(input.as_mut_ptr() as *mut c_void) };
    let second = unsafe { program.run(input.as_mut_ptr() as *mut c_void) };
    assert_eq!(first, second, "{prog}: repeated runs disagree");
    // Every bench program also compiles for ARM64.
    lower::lower_unverified_for_testing(&module, 0, &LowerOptions::new(Target::Arm64)).unwrap();
    first
}

#[test]
fn csum_returns_expected_r0() {
    assert_eq!(run_bench("csum"), 0x70a5b4d7dc7e12cb);
}

#[test]
fn pktwalk_returns_expected_r0() {
    assert_eq!(run_bench("pktwalk"), 0x22698cde1ca38764);
}

#[test]
fn parse_returns_expected_r0() {
    assert_eq!(run_bench("parse"), 0xb55d3c52c38d681e);
}

#[test]
fn branchy_returns_expected_r0() {
    assert_eq!(run_bench("branchy"), 0x59177e42a84149af);
}

#[test]
fn maplookup_returns_expected_r0() {
    assert_eq!(run_bench("maplookup"), 0x00000000c8c009ab);
}

#[test]
fn sieve_returns_expected_r0() {
    assert_eq!(run_bench("sieve"), 0x0000005c0026c8a8);
}

#[test]
fn unrolled_returns_expected_r0() {
    assert_eq!(run_bench("unrolled"), 0x44130e0a5a4acc5d);
}
