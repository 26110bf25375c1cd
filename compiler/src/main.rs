//! The `bpf2sys` command line. Each subcommand's code lives in `cli/<name>.rs`; errors are reported here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli {
    pub mod build;
    pub mod check;
    pub mod compile;
    pub mod inspect;
    pub mod verify;
}

#[derive(Parser)]
#[command(name = "bpf2sys", version, about = "Compile eBPF ELF objects into verified, signed Windows drivers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what an eBPF object contains: programs, types, maps, relocations, helpers, disassembly with source.
    Inspect(cli::inspect::Args),
    /// Verify the programs of an eBPF object (exit 0 verified, 1 rejected, 2 unusable input).
    Verify(cli::verify::VerifyArgs),
    /// Verify, compile and link an eBPF object into a Windows driver (.sys).
    Build(cli::build::BuildArgs),
    /// Verify and compile programs without linking: a COFF object, Cranelift IR or machine instructions.
    Compile(cli::compile::CompileArgs),
    /// Lint a driver image against the HVCI and PE rules (exit 0 clean, 1 a rule fails, 2 unreadable).
    Check(cli::check::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Verify(args) => Ok(cli::verify::run(&args)),
        Command::Build(args) => cli::build::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Compile(args) => cli::compile::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 2: the input was rejected (same code clap uses for bad arguments).
            ExitCode::from(2)
        }
    }
}
