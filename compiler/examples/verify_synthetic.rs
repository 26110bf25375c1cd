//! Verifies the `verify` bench's synthetic XDP program of N instructions R times and prints the minimum and median
//! wall time: a profiling target (`perf record target/release/examples/verify_synthetic 100000 50`, or under
//! `valgrind --tool=callgrind` for an instruction count that does not depend on the machine's load). Figures for
//! BENCHMARKS.md come from the criterion bench (`cargo bench -p bpf2sys --bench verify -- synthetic`), not from here.
//!
//! `cargo run --release -p bpf2sys --example verify_synthetic -- [N=100000] [R=20]`

use std::time::Instant;

use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::verifier::{verify_program, VerifierOptions};

#[path = "../benches/common/synthetic.rs"]
mod synthetic;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let (n, runs) = match (args.next().unwrap_or(Ok(100_000)), args.next().unwrap_or(Ok(20))) {
        (Ok(n), Ok(r)) if r > 0 => (n, r),
        _ => {
            eprintln!("usage: verify_synthetic [instructions] [runs ≥ 1]");
            std::process::exit(2);
        }
    };
    let module = synthetic::module(n);
    let xdp = WINDOWS.program_type_by_name("xdp").expect("the Windows platform has xdp");
    let options = VerifierOptions::default();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            if let Err(e) = verify_program(&module, 0, &WINDOWS, xdp, &options) {
                eprintln!("the synthetic program is rejected: {e}");
                std::process::exit(1);
            }
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "synthetic {n} ({} instructions), {runs} runs: min {:.2} ms, median {:.2} ms",
        module.programs[0].instructions.len(),
        times[0],
        times[runs / 2]
    );
}
