//! Compile latency per pipeline stage (parse, verify, lower+codegen, link, sign) and end to end, per the method
//! in ../shared/docs/benchmarks.md "Compile speed": the median of ≥ 11 runs in one process plus the cold first run,
//! in µs, and µs per 1,000 eBPF instruction slots. Peak memory is the process's peak RSS, so the caller runs one
//! program per process.
//!
//! Every stage is the product's own entry point, a stage of one [`Session`]: `load`, `verify` (every program),
//! `lower`, `link`, `sign` with the bench's RSA-2048 test certificate (SHA-256, no timestamp, no page hashes), and end to end
//! `build` + `sign`. A stage that rejects the program is reported as [`StageOutcome::Failed`] with the reason,
//! never as a time. The benchmark programs read their buffer through r1, which no program type allows, so their
//! lowering is timed on unverified code ([`Verified::unchecked_for_testing`]); they are never linked.

use std::path::Path;
use std::time::Instant;

use bpf2sys::compiled::CompiledProgram;
use bpf2sys::driver::{DriverError, Session, SessionOptions};
use bpf2sys::lower;
use bpf2sys::program::Module;
use bpf2sys::verifier::Verified;
use bpf2sys_signing::SignOptions;

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
    Load { path: std::path::PathBuf, source: Box<DriverError> },
    #[error(transparent)]
    Session(#[from] DriverError),
    #[error("the test signing certificate: {0}")]
    Signer(#[from] bpf2sys_signing::SigningError),
}

/// The programs of `module` as lowering takes them: verified when the module verifies, otherwise (benchmark
/// programs without a program type) with facts derived from their text.
fn programs_to_lower<'m>(session: &Session, file: &str, module: &'m Module) -> Result<Vec<Verified<'m>>, String> {
    if let Ok(verified) = session.verify(file, module) {
        return Ok(verified);
    }
    (0..module.programs.len())
        .map(|i| Verified::unchecked_for_testing(module, i).map_err(|r| r.to_string()))
        .collect::<Result<Vec<_>, _>>()
}

/// Lowers every program (the lower+codegen stage; verification is not part of it).
fn lower_all(session: &Session, programs: &[Verified]) -> Result<Vec<CompiledProgram>, String> {
    lower::lower_module(session.isa(), programs, &session.lower_options(), false)
        .map(|l| l.into_iter().map(|l| l.program).collect())
        .map_err(|e| e.to_string())
}

/// RSA modulus size of the bench's signing key: the size issue 16's signing goal is stated for, and the smallest
/// Windows kernel signing accepts.
pub const BENCH_RSA_BITS: usize = 2048;

/// The bench's test signer: an RSA-2048 key and self-signed code-signing certificate in `key_dir`, made on first
/// use (the product's default test certificate is RSA-3072).
pub fn bench_signer(key_dir: &Path) -> Result<bpf2sys_signing::Signer, bpf2sys_signing::SigningError> {
    use bpf2sys_signing::test_cert;
    let key = key_dir.join(format!("bench-rsa{BENCH_RSA_BITS}.key.pem"));
    let cert = key_dir.join(format!("bench-rsa{BENCH_RSA_BITS}.cert.pem"));
    if !(key.is_file() && cert.is_file()) {
        std::fs::create_dir_all(key_dir)
            .map_err(|source| bpf2sys_signing::SigningError::Io { path: key_dir.to_path_buf(), source })?;
        let params = test_cert::TestCertificateParams { rsa_bits: BENCH_RSA_BITS, ..Default::default() };
        test_cert::write_generated(&test_cert::generate(&params)?, &key, &cert)?;
    }
    bpf2sys_signing::Signer::from_pem_files(&key, &cert, None)
}

/// What every compile measurement starts from: the object's bytes and file name, the bench's signer and a
/// default [`Session`].
struct BenchBuild {
    bytes: Vec<u8>,
    file_name: String,
    signer: bpf2sys_signing::Signer,
    session: Session,
}

impl BenchBuild {
    fn open(object_path: &Path, key_dir: &Path) -> Result<BenchBuild, CompileBenchError> {
        let bytes = std::fs::read(object_path)
            .map_err(|source| CompileBenchError::Io { path: object_path.to_path_buf(), source })?;
        let file_name = object_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let signer = bench_signer(key_dir)?;
        let session = Session::new(SessionOptions::default())?;
        Ok(BenchBuild { bytes, file_name, signer, session })
    }
}

/// Measures every stage for the object at `object_path` (all its programs), `runs` times each. `key_dir` holds the
/// bench's RSA-2048 test signing certificate ([`bench_signer`], created on first use, outside the timed region).
pub fn measure(object_path: &Path, key_dir: &Path, runs: usize) -> Result<CompileLatency, CompileBenchError> {
    let BenchBuild { bytes, file_name, signer, session } = BenchBuild::open(object_path, key_dir)?;
    let sign_options = SignOptions::default();

    let parse = time_runs(runs, || session.load(&bytes, &file_name));
    let module = session
        .load(&bytes, &file_name)
        .map_err(|source| CompileBenchError::Load { path: object_path.to_path_buf(), source: Box::new(source) })?;
    let slots = module.programs.iter().map(|p| p.instructions.len()).sum();

    let verify = time_runs(runs, || session.verify(&file_name, &module).map_err(|e| one_line(&e)));
    // Lowering needs no verdict, so it is timed even for programs no program type accepts (the six benchmark
    // programs read their buffer through r1); linking and signing need a verified module.
    let to_lower = programs_to_lower(&session, &file_name, &module);
    let lower_stage = match &to_lower {
        Ok(programs) => time_runs(runs, || lower_all(&session, programs)),
        Err(e) => StageOutcome::Failed(e.clone()),
    };
    let verified = matches!(verify, StageOutcome::Timed { .. });
    let lowered = to_lower.and_then(|programs| lower_all(&session, &programs));
    let (link, sign, end_to_end) = match (verified, lowered) {
        (true, Ok(programs)) => {
            let link = time_runs(runs, || session.link(&file_name, &module, &programs, Some(&bytes)));
            let sign = match session.link(&file_name, &module, &programs, Some(&bytes)) {
                Ok(image) => time_runs(runs, || session.sign(&file_name, &image, &signer, &sign_options)),
                Err(e) => StageOutcome::Failed(format!("link: {e}")),
            };
            let end_to_end = time_runs(runs, || {
                let image = session.build(&bytes, &file_name)?;
                session.sign(&file_name, &image, &signer, &sign_options)
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

/// Builds and signs the object at `object_path` once, as `bpf2sys build --sign` does (one [`Session`], `build`
/// then `sign`, nothing kept for timing), returning the signed image's length: the workload of the "peak RSS
/// building a program" figure, which the caller reads from a process that does only this.
pub fn build_and_sign_once(object_path: &Path, key_dir: &Path) -> Result<usize, CompileBenchError> {
    let BenchBuild { bytes, file_name, signer, session } = BenchBuild::open(object_path, key_dir)?;
    let image = session.build(&bytes, &file_name)?;
    Ok(session.sign(&file_name, &image, &signer, &SignOptions::default())?.len())
}

/// The first line of a driver error (a verification failure goes on with the rendered diagnostics).
fn one_line(e: &DriverError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
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
    fn the_build_only_workload_signs_a_driver_and_refuses_an_unverifiable_object() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let signed = build_and_sign_once(&root.join("samples/bench/unrolled_xdp.o"), keys.path()).unwrap();
        assert!(signed > 4096, "{signed} bytes");
        let refused = build_and_sign_once(&root.join("samples/bench/csum.o"), keys.path()).unwrap_err();
        assert!(refused.to_string().contains("names no program type"), "{refused}");
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
