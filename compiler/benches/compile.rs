//! Compile speed of the backend: lowering (eBPF → Cranelift IR) plus code generation (IR → x64 machine code and
//! unwind data), per program, on every program of every sample object (`samples/*.o`, loaded by the front end
//! outside the timed region) and the bench programs (`samples/bench/*.o`, including the 2,314-instruction
//! `unrolled` stressor).
//!
//! Run: `cargo bench -p bpf2sys --bench compile`. Criterion's throughput line is in instructions per second;
//! µs per 1,000 instructions = 1e9 / (instructions per second). A summary with both figures is printed at the
//! end of the run from a separate timing pass (median of 21 runs, same work as the benchmark).

use std::path::{Path, PathBuf};
use std::time::Instant;

use bpf2sys::compiled::Target;
use bpf2sys::driver::{Session, SessionOptions};
use bpf2sys::lower::{self, LowerOptions};
use bpf2sys::program::Module;
use bpf2sys::verifier::Verified;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The object's module, through the front end (maps, globals and subprogram calls resolved).
fn module_of(path: &Path) -> Module {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.file_name().unwrap().to_string_lossy();
    bpf2sys::elf::load(&bytes, &name).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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
        let m = module_of(&path);
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        // Samples are lowered as verified; the bench programs read their buffer through r1, which no program type
        // allows, so they are lowered with facts derived from their text.
        let verified = Session::new(SessionOptions::default()).unwrap().verify(&file, &m).unwrap_or_else(|_| {
            (0..m.programs.len()).map(|i| Verified::unchecked_for_testing(&m, i).unwrap()).collect()
        });
        for (index, program) in m.programs.iter().enumerate() {
            let name = format!("{}/{}", path.file_stem().unwrap().to_string_lossy(), program.name);
            let count = program.instructions.len();
            // Fail loudly rather than benchmark an error path.
            lower::lower_program(&*isa, &verified, index, &options, false).unwrap_or_else(|e| panic!("{name}: {e}"));
            group.throughput(Throughput::Elements(count as u64));
            group.bench_with_input(BenchmarkId::from_parameter(&name), &verified, |b, verified| {
                b.iter(|| lower::lower_program(&*isa, verified, index, &options, false).unwrap())
            });
            let mut times: Vec<f64> = (0..21)
                .map(|_| {
                    let t = Instant::now();
                    lower::lower_program(&*isa, &verified, index, &options, false).unwrap();
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            times.sort_by(f64::total_cmp);
            summary.push((name, count, times[10]));
        }
    }
    group.finish();
    println!("\n{:<36} {:>8} {:>14} {:>18}", "program", "slots", "µs/program", "µs/1000 slots");
    for (name, count, us) in summary {
        println!("{name:<36} {count:>8} {us:>14.1} {:>18.1}", us * 1000.0 / count as f64);
    }
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
