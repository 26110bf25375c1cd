//! Compile latency per pipeline stage (parse, verify, lower+codegen, link, sign) and end to end, per the method
//! in ../shared/docs/benchmarks.md "Compile speed": the median of ≥ 11 runs in one process plus the cold first run,
//! in µs, and µs per 1,000 eBPF instruction slots. Peak memory is the process's peak RSS, so the caller runs one
//! program per process.
//!
//! Every stage is the product's own entry point: [`elf::load`], [`verify_program`] per program, [`lower`] per
//! program, [`link_driver`], [`sign_pe`] with the cached test certificate (SHA-256, no timestamp, no page hashes),
//! and end to end [`build_driver`] + [`sign_pe`]. A stage that rejects the program is reported as
//! [`StageOutcome::Failed`] with the reason, never as a time.

use std::path::Path;
use std::time::Instant;

use bpf2sys::compiled::{CompiledProgram, Target};
use bpf2sys::elf;
use bpf2sys::link::pipeline::{build_driver, BuildOptions};
use bpf2sys::link::{link_driver, LinkOptions};
use bpf2sys::lower::{self, LowerOptions};
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::program::Module;
use bpf2sys::verifier::{verify_program, VerifierOptions};
use bpf2sys_signing::{sign_pe, SignOptions};
use sha2::{Digest, Sha256};

/// The stages in pipeline order; "end to end" is `.o` bytes in memory to signed `.sys` bytes in memory
/// ([`build_driver`] then [`sign_pe`]).
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
    #[error("cannot read {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Elf { path: std::path::PathBuf, source: bpf2sys::elf::ElfError },
    #[error("the test signing certificate: {0}")]
    Signer(#[from] bpf2sys_signing::SigningError),
}

/// Verifies every program of `module` as its section's program type (what [`build_driver`] does first).
fn verify_all(module: &Module) -> Result<(), String> {
    for (i, p) in module.programs.iter().enumerate() {
        let (program_type, _) = WINDOWS
            .program_type_for_section(&p.section_name)
            .ok_or_else(|| format!("program `{}`: section `{}` names no program type", p.name, p.section_name))?;
        verify_program(module, i, &WINDOWS, program_type, &VerifierOptions::default())
            .map_err(|r| format!("program `{}` rejected at slot {}: {}", r.program, r.pc, r.message))?;
    }
    Ok(())
}

/// Lowers every program of `module` for x64 with the layout [`build_driver`] uses by default.
fn lower_all(module: &Module) -> Result<Vec<CompiledProgram>, lower::LowerError> {
    let options = LowerOptions { target: Target::X64, map_data: lower_layout(BuildOptions::default().runtime_version) };
    let isa = lower::build_isa(Target::X64)?;
    (0..module.programs.len())
        .map(|i| lower::lower_program_with(&*isa, module, i, &options, false).map(|l| l.program))
        .collect()
}

fn lower_layout(version: bpf2sys_runtime_shim::RuntimeVersion) -> lower::MapDataLayout {
    if version.has_array_data() {
        lower::MapDataLayout::V1_4
    } else {
        lower::MapDataLayout::V1_3
    }
}

/// Measures every stage for the object at `object_path` (all its programs), `runs` times each. `key_dir` holds the
/// cached test signing certificate (created on first use, outside the timed region).
pub fn measure(object_path: &Path, key_dir: &Path, runs: usize) -> Result<CompileLatency, CompileBenchError> {
    let bytes = std::fs::read(object_path)
        .map_err(|source| CompileBenchError::Io { path: object_path.to_path_buf(), source })?;
    let file_name = object_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let signer = bpf2sys_signing::test_cert::load_or_create(key_dir)?.signer;
    let sign_options = SignOptions::default();

    let parse = time_runs(runs, || elf::load(&bytes, &file_name));
    let module = elf::load(&bytes, &file_name)
        .map_err(|source| CompileBenchError::Elf { path: object_path.to_path_buf(), source })?;
    let slots = module.programs.iter().map(|p| p.instructions.len()).sum();

    let verify = time_runs(runs, || verify_all(&module));
    // Lowering needs no verdict, so it is timed even for programs no program type accepts (the six benchmark
    // programs read their buffer through r1); linking and signing need a verified module.
    let lower_stage = time_runs(runs, || lower_all(&module));
    let verified = matches!(verify, StageOutcome::Timed { .. });
    let (link, sign, end_to_end) = match (verified, lower_all(&module)) {
        (true, Ok(programs)) => {
            let link_options = LinkOptions {
                target: Target::X64,
                runtime_version: BuildOptions::default().runtime_version,
                elf_hash: Some(Sha256::digest(&bytes).into()),
            };
            let link = time_runs(runs, || link_driver(&module, &programs, &link_options));
            let sign = match link_driver(&module, &programs, &link_options) {
                Ok(image) => time_runs(runs, || sign_pe(&image, &signer, &sign_options)),
                Err(e) => StageOutcome::Failed(format!("link: {e}")),
            };
            let end_to_end = time_runs(runs, || {
                let image = build_driver(&bytes, &file_name, &BuildOptions::default()).map_err(|e| e.to_string())?;
                sign_pe(&image, &signer, &sign_options).map_err(|e| e.to_string())
            });
            (link, sign, end_to_end)
        }
        (true, Err(e)) => {
            let failed = StageOutcome::Failed(format!("lowering failed: {e}"));
            (failed.clone(), failed.clone(), failed)
        }
        (false, _) => {
            let failed = StageOutcome::Failed("needs a verified module".into());
            (failed.clone(), failed.clone(), failed)
        }
    };
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
    fn every_stage_of_a_verifiable_program_is_timed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let latency = measure(&root.join("samples/bench/unrolled_xdp.o"), keys.path(), 1).unwrap();
        assert_eq!(latency.slots, 2316);
        for (stage, outcome) in STAGES.iter().zip(&latency.stages) {
            assert!(matches!(outcome, StageOutcome::Timed { .. }), "{stage}: {outcome:?}");
        }
    }

    #[test]
    fn a_program_without_a_program_type_is_lowered_but_not_linked() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let latency = measure(&root.join("samples/bench/csum.o"), keys.path(), 1).unwrap();
        assert_eq!(latency.slots, 45);
        assert!(matches!(latency.stages[0], StageOutcome::Timed { .. }));
        assert!(matches!(&latency.stages[1], StageOutcome::Failed(e) if e.contains("names no program type")));
        assert!(matches!(latency.stages[2], StageOutcome::Timed { .. }));
        assert!(matches!(latency.stages[3], StageOutcome::Failed(_)));
    }
}
