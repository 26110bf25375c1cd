//! `cargo xtask <task>`: project automation (see DEVELOPERS.md). Each task's code lives in its own module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod build_driver;
mod conformance;
mod mutate;
mod prevail;
mod run_fixtures;
mod samples;
mod size_limits;
mod verifier_fuzz;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "bpf2sys project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Verify, compile and link eBPF objects into drivers (default: every sample into target/drivers/).
    BuildDriver(Box<build_driver::Args>),
    /// Run bpf_conformance `.data` tests on an engine and print `N passed, M failed, K skipped`.
    Conformance(conformance::Args),
    /// Benchmarks: generated code against native C and other eBPF engines, compile latency (BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Mutate every committed object and sample driver and run the CLI on each mutant in capped child
    /// processes; fails on a panic, signal, timeout or verify/build disagreement.
    Mutate(mutate::Args),
    /// Run every sample driver's programs on the committed fixtures (samples/fixtures) with `bpf2sys run` and
    /// check the verdicts and map contents.
    RunFixtures(run_fixtures::Args),
    /// Rebuild samples/*.o from samples/*.c with clang (-O2 -g -target bpf -mcpu=v3).
    Samples(samples::Args),
    /// Check the size rules: no non-test source file over 800 lines, no function over 120 lines (compiler,
    /// runtime shim and signing sources).
    SizeLimits(size_limits::Args),
    /// Long-run verifier soundness fuzzing (random programs, accepted ones run in the interpreter).
    VerifierFuzz(verifier_fuzz::Args),
    /// Run PREVAIL's YAML test suites through the verifier and compare verdicts.
    Prevail {
        /// Directory with the YAML files (default ../shared/corpora/prevail-test-data).
        dir: Option<PathBuf>,
        /// List every disagreement, not only unsound accepts.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::BuildDriver(args) => build_driver::run(*args),
        Task::Conformance(args) => conformance::run(args),
        Task::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
        Task::Mutate(args) => mutate::run(args),
        Task::RunFixtures(args) => run_fixtures::run(args),
        Task::Samples(args) => samples::run(args).map(|()| ExitCode::SUCCESS),
        Task::SizeLimits(args) => size_limits::run(args),
        Task::VerifierFuzz(args) => verifier_fuzz::run(args),
        Task::Prevail { dir, verbose } => prevail::run(dir, verbose).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
