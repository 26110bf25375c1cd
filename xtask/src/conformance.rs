//! `cargo xtask conformance [--engine interp|native|native-arm64] [DIR ...]`: runs every `.data` file in the folders
//! (default: ../shared/corpora/bpf_conformance/tests), prints one line per failure and per skip, then
//! `N passed, M failed, K skipped`. Exits non-zero if any test failed.
//!
//! The native engines run each file in a child process (this program with `--in-process` and the one file), so a
//! program that crashes or hangs the generated code fails alone, with the reason, instead of ending the run.
//!
//! `--generated N` instead checks N random well-defined programs (bpf2sys_tests::generate) on the engine
//! against the reference interpreter, and prints the smallest program whose result differs.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use bpf2sys_tests::conformance::{
    corpus_dir, run_dirs, run_each, run_file_in_child, Engine, InterpreterEngine, Outcome,
};

/// How long one file may run in its child process.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Run every file in this process, without a child process per file (the default for the interpreter).
    #[arg(long)]
    in_process: bool,
    /// Load every `mov`/`mov32`/`lddw` immediate from memory instead, so no test folds to a constant
    /// (bpf2sys_tests::opaque).
    #[arg(long, conflicts_with = "generated")]
    opaque_constants: bool,
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

fn engine(kind: EngineKind, opaque_constants: bool) -> anyhow::Result<Box<dyn Engine>> {
    use bpf2sys_tests::opaque::OpaqueConstants;
    Ok(match (kind, opaque_constants) {
        (EngineKind::Interp, false) => Box::new(InterpreterEngine),
        (EngineKind::Interp, true) => Box::new(OpaqueConstants::new(InterpreterEngine)),
        (EngineKind::Native, false) => Box::new(bpf2sys_tests::native::NativeEngine),
        (EngineKind::Native, true) => Box::new(OpaqueConstants::new(bpf2sys_tests::native::NativeEngine)),
        (EngineKind::NativeArm64, false) => Box::new(bpf2sys_tests::arm64::Arm64Engine),
        (EngineKind::NativeArm64, true) => Box::new(OpaqueConstants::new(bpf2sys_tests::arm64::Arm64Engine)),
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(cases) = args.generated {
        return run_generated(args.engine, cases, args.max_ops);
    }
    let dirs = if args.dirs.is_empty() { vec![corpus_dir().join("tests")] } else { args.dirs };
    let summary = if args.in_process || matches!(args.engine, EngineKind::Interp) {
        run_dirs(engine(args.engine, args.opaque_constants)?.as_mut(), &dirs)
    } else {
        let exe = std::env::current_exe().context("finding this program to run files in child processes")?;
        let engine_name = clap::ValueEnum::to_possible_value(&args.engine).expect("every engine has a name");
        run_each(&dirs, |path| {
            let mut command = Command::new(&exe);
            command.args(["conformance", "--in-process", "--engine", engine_name.get_name()]);
            if args.opaque_constants {
                command.arg("--opaque-constants");
            }
            run_file_in_child(&mut command, path, CHILD_TIMEOUT)
        })
    }
    .context("reading the test folders")?;
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
    let mut engine = engine(kind, false)?;
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
