//! Verification-time benchmark (`cargo bench -p bpf2sys --bench verify`): every sample program, the bench
//! programs of ../shared/bench/progs (compiled with clang when it is installed), and synthetic programs of
//! 1k, 10k and 100k instructions, to show that verification time grows near-linearly with program size.

use std::hint::black_box;
use std::path::Path;

use bpf2sys::isa::{AluOp, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::platform::{ContextDescriptor, ContextField, Guid, ProgramType};
use bpf2sys::program::{Function, Module, Program};
use bpf2sys::verifier::{verify_program, VerifierOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

fn load(path: &Path) -> Option<Module> {
    let bytes = std::fs::read(path).ok()?;
    bpf2sys::elf::load(&bytes, &path.file_name()?.to_string_lossy()).ok()
}

fn samples(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify/samples");
    let mut paths: Vec<_> = std::fs::read_dir(repo().join("samples"))
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    paths.sort();
    let options = VerifierOptions::default();
    for path in paths {
        let Some(module) = load(&path) else { continue };
        for (i, p) in module.programs.iter().enumerate() {
            let Some((pt, _)) = WINDOWS.program_type_for_section(&p.section_name) else { continue };
            group.bench_function(BenchmarkId::from_parameter(&p.name), |b| {
                b.iter(|| verify_program(black_box(&module), i, &WINDOWS, pt, &options).expect("verifies"))
            });
        }
    }
    group.finish();
}

/// The bench programs receive `struct buf { u32 len; u32 pad; u8 data[]; }` (bench/progs/common.h); the
/// harness passes at most 64 KiB of data, modelled as a read-only context of that size.
static BUF_FIELDS: &[ContextField] = &[
    ContextField { name: "len", offset: 0, size: 4, writable: false },
    ContextField { name: "pad", offset: 4, size: 4, writable: false },
    ContextField { name: "data", offset: 8, size: 65536, writable: false },
];
static BUF_TYPE: ProgramType = ProgramType {
    name: "bench_buf",
    guid: Guid::NULL,
    bpf_prog_type: 0,
    is_privileged: false,
    context: ContextDescriptor { size: 8 + 65536, data: -1, end: -1, meta: -1 },
    context_fields: BUF_FIELDS,
    section_prefixes: &[],
    specific_helpers: &[],
};

fn bench_programs(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify/bench_programs");
    let dir = repo().join("../shared/bench/progs");
    let out = std::env::temp_dir().join("bpf2sys-verify-bench");
    let _ = std::fs::create_dir_all(&out);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut sources: Vec<_> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "c")).collect();
    sources.sort();
    let options = VerifierOptions::default();
    for src in sources {
        let obj = out.join(src.file_stem().expect("stem")).with_extension("o");
        let built = std::process::Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .is_ok_and(|s| s.success());
        let Some(module) = built.then(|| load(&obj)).flatten() else { continue };
        let name = src.file_stem().expect("stem").to_string_lossy().into_owned();
        // Programs the verifier rejects (e.g. maplookup passes a number as its map) are benchmarked as well:
        // the time to a verdict is what is measured.
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| verify_program(black_box(&module), 0, &WINDOWS, &BUF_TYPE, &options).is_ok())
        });
    }
    group.finish();
}

/// A synthetic XDP program of about `n` instructions: repeated blocks of a bounds check, packet loads, ALU work,
/// forward branches and a small counted loop.
pub fn synthetic(n: usize) -> Vec<I> {
    let alu = |op, dst, src| I::Alu { width: Width::W64, op, dst, src };
    let mut p = vec![
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R2, src: Reg::R1, offset: 0 },
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R3, src: Reg::R1, offset: 8 },
        alu(AluOp::Mov, Reg::R0, Operand::Imm(0)),
        alu(AluOp::Mov, Reg::R4, Operand::Reg(Reg::R2)),
        alu(AluOp::Add, Reg::R4, Operand::Imm(64)),
    ];
    // `if r4 > r3 goto exit` is patched at the end.
    let check = p.len();
    p.push(I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R4, src: Operand::Reg(Reg::R3), offset: 0 });
    let mut k = 0i32;
    while p.len() + 16 < n {
        let off = (k % 60) as i16;
        p.extend([
            I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R5, src: Reg::R2, offset: off },
            alu(AluOp::Add, Reg::R0, Operand::Reg(Reg::R5)),
            alu(AluOp::Xor, Reg::R0, Operand::Imm(k)),
            I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R5, src: Operand::Imm(100), offset: 2 },
            alu(AluOp::Add, Reg::R0, Operand::Imm(1)),
            alu(AluOp::And, Reg::R0, Operand::Imm(0xffff)),
            I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8 - 8 * (k % 8) as i16, src: Operand::Reg(Reg::R0) },
        ]);
        if k % 8 == 7 {
            // r7 = 0; loop: r0 += r7; r7 += 1; if r7 < 4 goto loop
            p.extend([
                alu(AluOp::Mov, Reg::R7, Operand::Imm(0)),
                alu(AluOp::Add, Reg::R0, Operand::Reg(Reg::R7)),
                alu(AluOp::Add, Reg::R7, Operand::Imm(1)),
                I::JumpIf { width: Width::W64, cond: JumpCond::Lt, dst: Reg::R7, src: Operand::Imm(4), offset: -3 },
            ]);
        }
        k += 1;
    }
    let exit = p.len();
    p.extend([alu(AluOp::And, Reg::R0, Operand::Imm(3)), I::Exit]);
    p[check] = I::JumpIf {
        width: Width::W64,
        cond: JumpCond::Gt,
        dst: Reg::R4,
        src: Operand::Reg(Reg::R3),
        offset: (exit - check - 1) as i16,
    };
    // Long programs exceed the 16-bit jump range; hop through intermediate jumps instead.
    if exit - check - 1 > i16::MAX as usize {
        p[check] =
            I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R4, src: Operand::Reg(Reg::R3), offset: 0 };
        p.insert(check + 1, I::Jump { offset: 1, long: false });
        let exit = p.len() - 2;
        p.insert(check + 2, I::Jump { offset: (exit - check - 3) as i32, long: true });
        p[check] =
            I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R4, src: Operand::Reg(Reg::R3), offset: 1 };
        p[check + 1] = I::Jump { offset: 1, long: false };
    }
    p
}

fn synthetic_programs(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify/synthetic");
    group.sample_size(10);
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    let options = VerifierOptions::default();
    for n in [1_000usize, 10_000, 100_000] {
        let insns = synthetic(n);
        let len = insns.len();
        let module = Module {
            name: "synthetic".into(),
            programs: vec![Program {
                name: format!("synthetic_{n}"),
                section_name: "xdp".into(),
                instructions: insns,
                functions: vec![Function { name: "synthetic".into(), start: 0, end: len }],
                line_info: vec![],
            }],
            ..Module::default()
        };
        verify_program(&module, 0, &WINDOWS, xdp, &options).expect("synthetic program verifies");
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| verify_program(black_box(&module), 0, &WINDOWS, xdp, &options).expect("verifies"))
        });
    }
    group.finish();
}

criterion_group!(benches, samples, bench_programs, synthetic_programs);
criterion_main!(benches);
