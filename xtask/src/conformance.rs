//! `cargo xtask conformance [--engine interp|native|native-arm64] [DIR ...]`: runs every `.data` file in the folders
//! (default: ../shared/corpora/bpf_conformance/tests), prints one line per failure and per skip, then
//! `N passed, M failed, K skipped`. Exits non-zero if any test failed.
//!
//! `--generated N` instead checks N random well-defined programs (bpf2sys_tests::generate) on the engine
//! against the reference interpreter, and prints the smallest program whose result differs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bpf2sys_tests::conformance::{corpus_dir, run_dirs, Engine, InterpreterEngine, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Which engine executes the programs.
    #[arg(long, value_enum, default_value_t = EngineKind::Interp)]
    engine: EngineKind,
    /// Folders of `.data` files, or single files (default: the bpf_conformance suite's tests/).
    dirs: Vec<PathBuf>,
    /// Instead of folders: check this many generated programs against the interpreter (differential testing).
    #[arg(long, value_name = "N", conflicts_with = "dirs")]
    generated: Option<u32>,
    /// Size of generated programs, in abstract operations.
    #[arg(long, value_name = "OPS", default_value_t = 40, requires = "generated")]
    max_ops: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineKind {
    /// The reference interpreter (compiler/src/interp).
    Interp,
    /// Native x64 code from the compiler, run in-process.
    Native,
    /// Native ARM64 code from the compiler, run in an AArch64 emulator (bpf2sys_tests::arm64).
    NativeArm64,
}

fn engine(kind: EngineKind) -> anyhow::Result<Box<dyn Engine>> {
    match kind {
        EngineKind::Interp => Ok(Box::new(InterpreterEngine)),
        EngineKind::Native => Ok(Box::new(bpf2sys_tests::native::NativeEngine)),
        EngineKind::NativeArm64 => Ok(Box::new(bpf2sys_tests::arm64::Arm64Engine)),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(cases) = args.generated {
        return run_generated(args.engine, cases, args.max_ops);
    }
    let mut engine = engine(args.engine)?;
    let dirs = if args.dirs.is_empty() { vec![corpus_dir().join("tests")] } else { args.dirs };
    let summary = run_dirs(engine.as_mut(), &dirs).context("reading the test folders")?;
    for (path, outcome) in &summary.results {
        match outcome {
            Outcome::Pass => {}
            Outcome::Fail(why) => println!("FAIL {}: {why}", path.display()),
            Outcome::Skip(why) => println!("SKIP {}: {why}", path.display()),
        }
    }
    println!("{summary}");
    Ok(if summary.failed() > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run_generated(kind: EngineKind, cases: u32, max_ops: usize) -> anyhow::Result<ExitCode> {
    if matches!(kind, EngineKind::Interp) {
        anyhow::bail!(
            "generated programs are checked against the interpreter: choose another engine (--engine native)"
        );
    }
    let mut engine = engine(kind)?;
    match bpf2sys_tests::generate::check_against_interpreter(engine.as_mut(), cases, max_ops) {
        Ok(n) => {
            println!("{n} generated programs: {} agrees with the interpreter", engine.name());
            Ok(ExitCode::SUCCESS)
        }
        Err(difference) => {
            println!("DIFFERENCE (smallest program found):\n{difference}");
            Ok(ExitCode::FAILURE)
        }
    }
}
