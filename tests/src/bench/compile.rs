//! Compile latency per pipeline stage (parse, verify, lower+codegen, link, sign) and end to end, per the method
//! in ../shared/docs/benchmarks.md "Compile speed": the median of ≥ 11 runs in one process plus the cold first run,
//! in µs, and µs per 1,000 eBPF instruction slots. Peak memory is the process's peak RSS, so the caller runs one
//! program per process.
//!
//! A stage that is not part of this build is reported as [`StageOutcome::NotAvailable`], never estimated.

use std::path::Path;
use std::time::Instant;

use bpf2sys::compiled::Target;
use bpf2sys::lower::{self, LowerOptions};
use bpf2sys::program::Module;

use super::programs;

/// The stages in pipeline order; "end to end" is `.o` bytes to a signed `.sys` image.
pub const STAGES: [&str; 6] = ["parse", "verify", "lower+codegen", "link", "sign", "end to end"];

/// How one stage went.
#[derive(Clone, Debug, PartialEq)]
pub enum StageOutcome {
    /// µs: the first (cold) run and the median of all runs.
    Timed { cold_us: f64, median_us: f64 },
    /// The stage rejected the program or failed.
    Failed(String),
    /// The stage is not in this build.
    NotAvailable(String),
}

/// Compile latency of one program.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileLatency {
    /// eBPF instruction slots of the program.
    pub slots: usize,
    /// One outcome per entry of [`STAGES`].
    pub stages: Vec<StageOutcome>,
}

/// Runs `f` `runs` times; the first and the median time in µs, or the first error.
pub fn time_runs<T, E: std::fmt::Display>(runs: usize, mut f: impl FnMut() -> Result<T, E>) -> StageOutcome {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let result = f();
        let elapsed = start.elapsed().as_secs_f64() * 1e6;
        match result {
            // Drop the output outside the timed region.
            Ok(out) => drop(out),
            Err(e) => return StageOutcome::Failed(e.to_string()),
        }
        times.push(elapsed);
    }
    let cold_us = times[0];
    times.sort_by(f64::total_cmp);
    StageOutcome::Timed { cold_us, median_us: times[times.len() / 2] }
}

/// Why no stage could run at all.
#[derive(Debug, thiserror::Error)]
pub enum CompileBenchError {
    #[error(transparent)]
    Program(#[from] programs::ProgramError),
    #[error("decoding {symbol}: {source}")]
    Decode { symbol: String, source: bpf2sys::isa::DecodeError },
}

/// Measures every stage for function `symbol` of the object at `object_path`, `runs` times each.
pub fn measure(object_path: &Path, symbol: &str, runs: usize) -> Result<CompileLatency, CompileBenchError> {
    let not_available = |branch: &str| StageOutcome::NotAvailable(format!("not merged yet (branch `{branch}`)"));

    // The front end (`elf::load`) is not in this build: the lowering input is built from the symbol's bytes, outside
    // the timed region, as the backend tests do.
    let bytecode = programs::function_bytecode(object_path, symbol)?;
    let instructions = bpf2sys::isa::decode(&bytecode)
        .map_err(|source| CompileBenchError::Decode { symbol: symbol.to_string(), source })?;
    let slots = instructions.len();
    let module: Module = crate::native::module_from_instructions(symbol, instructions);
    let parse = not_available("frontend");
    let verify = not_available("verifier");

    let isa_options = LowerOptions::new(Target::X64);
    let lower_stage = time_runs(runs, || lower::lower_program(&module, 0, &isa_options));

    let link = not_available("driver");
    let sign = not_available("signing");
    let end_to_end = StageOutcome::NotAvailable("needs every stage".into());
    Ok(CompileLatency { slots, stages: vec![parse, verify, lower_stage, link, sign, end_to_end] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_runs_reports_the_median_and_the_first_error() {
        match time_runs(5, || Ok::<_, String>(())) {
            StageOutcome::Timed { cold_us, median_us } => assert!(cold_us >= 0.0 && median_us >= 0.0),
            other => panic!("{other:?}"),
        }
        let mut n = 0;
        let failed = time_runs(5, || {
            n += 1;
            if n == 3 {
                Err("third run failed")
            } else {
                Ok(())
            }
        });
        assert_eq!(failed, StageOutcome::Failed("third run failed".into()));
    }

    #[test]
    fn lowering_of_a_benchmark_program_is_timed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let latency = measure(&programs::bench_dir(root).join("csum.o"), "entry", 2).unwrap();
        assert_eq!(latency.slots, 45);
        assert!(matches!(latency.stages[2], StageOutcome::Timed { .. }), "{:?}", latency.stages[2]);
    }
}
