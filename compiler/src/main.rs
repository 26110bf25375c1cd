//! The `bpf2sys` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli {
    pub mod verify;
}

#[derive(Parser)]
#[command(name = "bpf2sys", version, about = "Compiles eBPF ELF objects into verified, signed Windows kernel drivers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify the programs of an eBPF object (exit 0 verified, 1 rejected, 2 unusable input).
    Verify(cli::verify::VerifyArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Verify(args) => cli::verify::run(&args),
    }
}
