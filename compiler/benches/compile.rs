//! Compile speed of the backend: lowering (eBPF → Cranelift IR) plus code generation (IR → x64 machine code and
//! unwind data), per program, on every sample object and the bench programs (`samples/bench/*.o`, including the
//! 2,314-instruction `unrolled` stressor).
//!
//! Run: `cargo bench -p bpf2sys --bench compile`. Criterion's throughput line is in instructions per second;
//! µs per 1,000 instructions = 1e9 / (instructions per second). A summary with both figures is printed at the
//! end of the run from a separate timing pass (median of 21 runs, same work as the benchmark).

use std::path::{Path, PathBuf};
use std::time::Instant;

use bpf2sys::compiled::Target;
use bpf2sys::isa::Instruction;
use bpf2sys::lower::{self, functions_from_calls, LowerOptions};
use bpf2sys::program::{Module, Program};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind};

/// Every eBPF program of an object: each executable section's code split at its function symbols. Programs that
/// use maps or global data need the front end's relocation passes and are left to the end-to-end benchmark.
fn programs_of(path: &Path) -> Vec<(String, Vec<Instruction>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = object::File::parse(&*bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text && s.size() > 0) {
        if section.relocations().next().is_some() {
            continue;
        }
        let data = section.data().unwrap();
        let mut symbols: Vec<_> = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()) && s.kind() == object::SymbolKind::Text)
            .collect();
        symbols.sort_by_key(|s| s.address());
        for sym in symbols.iter().filter(|s| s.is_global()) {
            let start = sym.address() as usize;
            let end = if sym.size() > 0 { start + sym.size() as usize } else { data.len() };
            if let Ok(instructions) = bpf2sys::isa::decode(&data[start..end]) {
                let stem = path.file_stem().unwrap().to_string_lossy();
                out.push((format!("{stem}/{}", sym.name().unwrap_or("?")), instructions));
            }
        }
    }
    out
}

fn module(name: &str, instructions: Vec<Instruction>) -> Module {
    Module {
        name: name.into(),
        programs: vec![Program {
            name: "prog".into(),
            section_name: "xdp".into(),
            functions: functions_from_calls(&instructions),
            instructions,
            line_info: vec![],
        }],
        ..Module::default()
    }
}

fn sample_objects() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let mut paths = Vec::new();
    for dir in [root.clone(), root.join("bench")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            paths.extend(
                entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "o")),
            );
        }
    }
    paths.sort();
    paths
}

fn bench_compile(c: &mut Criterion) {
    let isa = lower::build_isa(Target::X64).expect("x64 ISA");
    let options = LowerOptions::new(Target::X64);
    let mut group = c.benchmark_group("lower+codegen x64");
    let mut summary = Vec::new();
    for path in sample_objects() {
        for (name, instructions) in programs_of(&path) {
            let count = instructions.len();
            let m = module(&name, instructions);
            // Fail loudly rather than benchmark an error path.
            lower::lower_program_with(&*isa, &m, 0, &options, false).unwrap_or_else(|e| panic!("{name}: {e}"));
            group.throughput(Throughput::Elements(count as u64));
            group.bench_with_input(BenchmarkId::from_parameter(&name), &m, |b, m| {
                b.iter(|| lower::lower_program_with(&*isa, m, 0, &options, false).unwrap())
            });
            let mut times: Vec<f64> = (0..21)
                .map(|_| {
                    let t = Instant::now();
                    lower::lower_program_with(&*isa, &m, 0, &options, false).unwrap();
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            times.sort_by(f64::total_cmp);
            summary.push((name, count, times[10]));
        }
    }
    group.finish();
    println!("\n{:<28} {:>8} {:>14} {:>18}", "program", "slots", "µs/program", "µs/1000 slots");
    for (name, count, us) in summary {
        println!("{name:<28} {count:>8} {us:>14.1} {:>18.1}", us * 1000.0 / count as f64);
    }
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
