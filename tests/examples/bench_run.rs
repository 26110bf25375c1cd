//! Runs one benchmark program's bpf2sys x64 code N times on its bench input and prints r0 and ns per run in the
//! native C driver's format (`tests/src/bench/native.c`): a fixed-work profiling target for `perf stat` /
//! `perf record` next to the clang baseline (`cargo run -p bpf2sys-tests --example bench_run -- sieve 100000`).
//! The real eBPF for Windows programs (`flowtrack`, `tailchain`, `bindpolicy`) are built and run as the bench
//! runs them ([`runtime_programs::NativeRuntimeBench`]: verified, lowered for runtime 1.4.0, the C host's maps,
//! helpers and tail-call loop).

use std::path::Path;
use std::time::Instant;

use bpf2sys_tests::bench::{engines, input, programs, runtime_programs};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| {
        eprintln!("usage: bench_run <{}> [ITERATIONS]", programs::PROGRAMS.join("|"));
        std::process::exit(2);
    });
    let iterations: u64 = args.next().map(|n| n.parse().expect("ITERATIONS is a number")).unwrap_or(100_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is inside the repository");
    let object = programs::bench_dir(root).join(format!("{name}.o"));
    let mut buffer = input::make_input(&name).expect("a bench program");
    let mut run: Box<dyn FnMut() -> u64> = match runtime_programs::runtime_program(&name) {
        Some(spec) => {
            let mut bench = runtime_programs::NativeRuntimeBench::load(spec, &object, &mut buffer)
                .unwrap_or_else(|e| fail(&e.to_string()));
            // SAFETY: `buffer` lives until the end of `main` and is not moved; the programs were verified.
            Box::new(move || unsafe { bench.run() })
        }
        None => {
            let code = programs::function_bytecode(&object, "entry").unwrap_or_else(|e| fail(&e.to_string()));
            let compiled = engines::lower_bytecode(&name, &code).expect("bench programs lower");
            let native = engines::NativeBench::load(&compiled).expect("bench programs load");
            let ptr = buffer.as_mut_ptr();
            // SAFETY: the benchmark programs only access their own input, stack and the helper's values.
            Box::new(move || unsafe { native.run(ptr) })
        }
    };
    let r0 = run();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            assert_eq!(run(), r0, "r0 changed between runs");
        }
        best = best.min(start.elapsed().as_nanos() as f64);
    }
    println!("bpf2sys {name} result={r0:#018x} ns/run={:.1}", best / iterations as f64);
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(1);
}
