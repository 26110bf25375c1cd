//! `cargo xtask <task>`: project automation.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod prevail;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run PREVAIL's YAML test suites through the verifier and compare verdicts.
    Prevail {
        /// Directory with the YAML files (default ../shared/corpora/prevail-test-data).
        dir: Option<PathBuf>,
        /// List every disagreement, not only unsound accepts.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Prevail { dir, verbose } => prevail::run(dir, verbose),
    }
}
