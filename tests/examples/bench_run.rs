//! Runs one benchmark program's bpf2sys x64 code N times on its bench input and prints r0 and ns per run in the
//! native C driver's format (`tests/src/bench/native.c`): a fixed-work profiling target for `perf stat` /
//! `perf record` next to the clang baseline (`cargo run -p bpf2sys-tests --example bench_run -- sieve 100000`).

use std::path::Path;
use std::time::Instant;

use bpf2sys_tests::bench::{engines, input, programs};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| {
        eprintln!("usage: bench_run <{}> [ITERATIONS]", programs::PROGRAMS.join("|"));
        std::process::exit(2);
    });
    let iterations: u64 = args.next().map(|n| n.parse().expect("ITERATIONS is a number")).unwrap_or(100_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is inside the repository");
    let object = programs::bench_dir(root).join(format!("{name}.o"));
    let code = programs::function_bytecode(&object, "entry").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let compiled = engines::lower_bytecode(&name, &code).expect("bench programs lower");
    let native = engines::NativeBench::load(&compiled).expect("bench programs load");
    let mut buffer = input::make_input(&name).expect("a bench program");
    let ptr = buffer.as_mut_ptr();
    // SAFETY: the benchmark programs only access their own input, stack and the helper's values.
    let r0 = unsafe { native.run(ptr) };
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            // SAFETY: as above.
            assert_eq!(unsafe { native.run(ptr) }, r0, "r0 changed between runs");
        }
        best = best.min(start.elapsed().as_nanos() as f64);
    }
    println!("bpf2sys {name} result={r0:#018x} ns/run={:.1}", best / iterations as f64);
}
