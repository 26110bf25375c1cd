//! Lowers every program of an object R times, as the bench's lower+codegen stage does (`Session::lower` of the
//! verified programs, or of the unverified ones with facts from their text when the object does not verify), and
//! prints the minimum and median wall time: a profiling target (`perf record -g target/release/examples/lower_object
//! samples/bench/unrolled_xdp.o 500`, or `valgrind --tool=callgrind --toggle-collect='bpf2sys::lower::lower_module*'`
//! for an instruction count that does not depend on the machine's load; build it with `--profile profiling`, the
//! release profile with line tables, for `callgrind_annotate --auto=yes` by source line). Figures for BENCHMARKS.md
//! come from `cargo xtask bench` (`xtask/src/bench/latency.rs`), not from here.
//!
//! `--target arm64` lowers for ARM64; `--dump FILE` writes the lowered programs (`{:#?}`: code bytes, relocations,
//! unwind data) to FILE, to check that a compile-speed change leaves the generated code byte-identical, also for
//! the bench programs that read their buffer through r1 and so never become a driver.
//!
//! `cargo run --release -p bpf2sys --example lower_object -- OBJECT [R=20] [--target x64|arm64] [--dump FILE]`

use std::path::Path;
use std::time::Instant;

use bpf2sys::compiled::Target;
use bpf2sys::driver::{Session, SessionOptions};
use bpf2sys::verifier::Verified;

fn fail(message: String) -> ! {
    eprintln!("lower_object: {message}");
    std::process::exit(1);
}

const USAGE: &str = "usage: lower_object OBJECT [runs ≥ 1] [--target x64|arm64] [--dump FILE]";

struct Args {
    object: String,
    runs: usize,
    target: Target,
    dump: Option<String>,
}

fn parse_args() -> Option<Args> {
    let mut args = Args { object: String::new(), runs: 20, target: Target::X64, dump: None };
    let mut positional = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--target" => {
                args.target = match it.next()?.as_str() {
                    "x64" => Target::X64,
                    "arm64" => Target::Arm64,
                    _ => return None,
                }
            }
            "--dump" => args.dump = Some(it.next()?),
            _ => positional.push(arg),
        }
    }
    match positional.as_slice() {
        [object] => args.object = object.clone(),
        [object, runs] => {
            args.object = object.clone();
            args.runs = runs.parse().ok().filter(|r| *r > 0)?;
        }
        _ => return None,
    }
    Some(args)
}

fn main() {
    let Some(Args { object, runs, target, dump }) = parse_args() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let path = Path::new(&object);
    let bytes = std::fs::read(path).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let session =
        Session::new(SessionOptions { target, ..SessionOptions::default() }).unwrap_or_else(|e| fail(e.to_string()));
    let module = session.load(&bytes, &file).unwrap_or_else(|e| fail(e.to_string()));
    let programs = session.verify(&file, &module).unwrap_or_else(|_| {
        (0..module.programs.len())
            .map(|i| Verified::unchecked_for_testing(&module, i).unwrap_or_else(|r| fail(r.to_string())))
            .collect()
    });
    let slots: usize = module.programs.iter().map(|p| p.instructions.len()).sum();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            session.lower(&file, &programs).unwrap_or_else(|e| fail(e.to_string()));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    if let Some(dump) = dump {
        let lowered = session.lower(&file, &programs).unwrap_or_else(|e| fail(e.to_string()));
        std::fs::write(&dump, format!("{lowered:#?}\n")).unwrap_or_else(|e| fail(format!("{dump}: {e}")));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{file} ({slots} slots), {runs} runs: min {:.3} ms, median {:.3} ms ({:.3} ms per 1k slots)",
        times[0],
        times[runs / 2],
        times[runs / 2] / (slots as f64 / 1000.0)
    );
}
