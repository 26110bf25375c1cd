//! The six ../shared/bench programs return their expected r0 when run as bpf2sys's native x64 code
//! (inputs generated exactly as `make_input()` in bench/host_common.h does).

use std::ffi::c_void;
use std::sync::OnceLock;

use bpf2sys::compiled::Target;
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};
use bpf2sys_tests::native::{module_from_instructions, HelperFunction, HostRuntime, NativeProgram};
use object::{Object, ObjectSection};

const MAP_SLOTS: usize = 512;

/// The bench helper map: 512-slot open addressing with 256 keys `i * 2654435761` → `i * 1000 + 7`.
struct BenchMap {
    keys: [u32; MAP_SLOTS],
    values: [u64; MAP_SLOTS],
    used: [bool; MAP_SLOTS],
}

fn map_hash(mut k: u32) -> u32 {
    k ^= k >> 16;
    k = k.wrapping_mul(0x7feb352d);
    k ^= k >> 15;
    k = k.wrapping_mul(0x846ca68b);
    k ^ (k >> 16)
}

fn bench_map() -> &'static BenchMap {
    static MAP: OnceLock<BenchMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut m = BenchMap { keys: [0; MAP_SLOTS], values: [0; MAP_SLOTS], used: [false; MAP_SLOTS] };
        for i in 0..256u32 {
            let k = i.wrapping_mul(2654435761);
            let mut h = map_hash(k) as usize & (MAP_SLOTS - 1);
            while m.used[h] && m.keys[h] != k {
                h = (h + 1) & (MAP_SLOTS - 1);
            }
            m.used[h] = true;
            m.keys[h] = k;
            m.values[h] = i as u64 * 1000 + 7;
        }
        m
    })
}

/// Helper 1: `u64 *lookup(void *map, const u32 *key)`, a host pointer or 0.
extern "win64" fn bench_lookup(_map: u64, key: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    let m = bench_map();
    // SAFETY: the program passes a pointer to 4 readable bytes on its stack.
    let k = unsafe { (key as *const u32).read_unaligned() };
    let mut h = map_hash(k) as usize & (MAP_SLOTS - 1);
    while m.used[h] {
        if m.keys[h] == k {
            return &m.values[h] as *const u64 as u64;
        }
        h = (h + 1) & (MAP_SLOTS - 1);
    }
    0
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(2685821657736338717) >> 32) as u32
    }
}

/// `make_input(prog)` from bench/host_common.h: `u32 len, u32 pad, data[len]`.
fn make_input(prog: &str) -> Vec<u8> {
    let mut rng = Rng(0x243f6a8885a308d3);
    let mut d = vec![0u8; 70000];
    let mut len = 0usize;
    match prog {
        "csum" | "unrolled" | "sieve" => {
            len = if prog == "sieve" { 480 } else { 1500 };
            for b in &mut d[..len] {
                *b = rng.next() as u8;
            }
        }
        "branchy" => {
            let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789    \t\n;;,.(){}\x80\xc3";
            len = 4096;
            for b in &mut d[..len] {
                *b = alphabet[rng.next() as usize % alphabet.len()];
            }
        }
        "maplookup" => {
            len = 4096;
            for i in 0..1024 {
                let k = if rng.next() & 1 != 0 { (rng.next() % 256).wrapping_mul(2654435761) } else { rng.next() };
                d[4 * i..4 * i + 4].copy_from_slice(&k.to_le_bytes());
            }
        }
        "parse" => {
            while len < 60000 {
                let kind = rng.next() % 8;
                let mut plen = 64 + rng.next() % 65;
                let p = len + 2;
                for i in 0..plen as usize {
                    d[p + i] = rng.next() as u8;
                }
                let mut o = p + 12;
                if kind == 1 || kind == 5 {
                    d[o] = 0x81;
                    d[o + 1] = 0;
                    o += 4;
                }
                if kind <= 3 || kind == 5 {
                    d[o] = 0x08;
                    d[o + 1] = 0;
                    d[o + 2] = 0x45 + u8::from(kind == 3);
                    d[o + 2 + 9] = if kind & 1 != 0 { 6 } else { 17 };
                } else if kind <= 6 {
                    d[o] = 0x86;
                    d[o + 1] = 0xdd;
                    d[o + 2 + 6] = if kind == 4 { 6 } else { 17 };
                }
                if kind == 7 {
                    plen = 10 + rng.next() % 20;
                }
                d[len] = (plen >> 8) as u8;
                d[len + 1] = plen as u8;
                len += 2 + plen as usize;
            }
        }
        other => panic!("unknown bench program {other}"),
    }
    let mut buf = (len as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&d[..len]);
    buf
}

fn run_bench(prog: &str) -> u64 {
    let path = format!("{}/../samples/bench/{prog}.o", env!("CARGO_MANIFEST_DIR"));
    let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file = object::File::parse(&*elf).unwrap();
    let text = file.section_by_name(".text").expect(".text").data().unwrap().to_vec();
    let instructions = bpf2sys::isa::decode(&text).unwrap();
    let module = module_from_instructions(prog, instructions);
    let compiled = lower::lower_program(&module, 0, &LowerOptions::new(Target::X64)).unwrap();
    let helper = |id: u32| (id == 1).then_some(bench_lookup as HelperFunction);
    let runtime = HostRuntime::new(&compiled.helper_ids, &helper, &[], MapDataLayout::default(), Vec::new());
    let program = NativeProgram::load(&compiled, runtime).unwrap();
    let mut input = make_input(prog);
    // SAFETY: the bench programs read only inside the buffer, clamping to its header length.
    let first = unsafe { program.run(input.as_mut_ptr() as *mut c_void) };
    let second = unsafe { program.run(input.as_mut_ptr() as *mut c_void) };
    assert_eq!(first, second, "{prog}: repeated runs disagree");
    // Every bench program also compiles for ARM64.
    lower::lower_program(&module, 0, &LowerOptions::new(Target::Arm64)).unwrap();
    first
}

#[test]
fn csum_returns_expected_r0() {
    assert_eq!(run_bench("csum"), 0x70a5b4d7dc7e12cb);
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
