//! The `bpf2sys` command line. Each subcommand's code lives in `cli/<name>.rs`; errors are reported here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli {
    pub mod build;
    pub mod check;
    pub mod common;
    pub mod compile;
    pub mod inspect;
    pub mod inspect_sys;
    pub use bpf2sys::cli::keys;
    pub mod run;
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    pub mod run_exec;
    pub mod sign;
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
    /// Show what an eBPF object contains (programs, types, maps, relocations, helpers, disassembly with source),
    /// or what a driver image contains (metadata, PE facts, signature).
    Inspect(cli::inspect::Args),
    /// Verify the programs of an eBPF object (exit 0 verified, 1 rejected, 2 unusable input).
    Verify(cli::verify::VerifyArgs),
    /// Verify, compile and link an eBPF object into a Windows driver (.sys).
    Build(Box<cli::build::BuildArgs>),
    /// Verify and compile programs without linking: a COFF object, Cranelift IR or machine instructions.
    Compile(cli::compile::CompileArgs),
    /// Lint a driver image against the HVCI and PE rules (exit 0 clean, 1 a rule fails, 2 unreadable).
    Check(cli::check::CheckArgs),
    /// Authenticode-sign a driver image (PEM, PFX, PKCS#11 key, or a two-step external signature).
    Sign(Box<cli::sign::SignArgs>),
    /// Verify a driver's embedded signature: digests, signature, chain, page hashes, timestamp, checksum
    /// (exit 0 valid, 1 invalid, 2 unreadable).
    VerifySignature(cli::sign::VerifySignatureArgs),
    /// Run one program of an x64 driver in the emulated eBPF for Windows runtime on packets or a context (exit 0
    /// clean run, 1 the program faulted, 2 unusable input).
    Run(Box<cli::run::RunArgs>),
    /// Test certificates for test-signing drivers.
    #[command(subcommand)]
    Cert(cli::sign::CertCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Verify(args) => cli::verify::run(&args),
        Command::Build(args) => cli::build::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Compile(args) => cli::compile::run(&args),
        Command::Sign(args) => cli::sign::sign(&args),
        Command::VerifySignature(args) => cli::sign::verify_signature(&args),
        Command::Cert(command) => cli::sign::cert(&command),
        Command::Run(args) => cli::run::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, printed once: error types that embed their source's text are not repeated.
            eprintln!("error: {}", cli::common::one_line(&e));
            // 2: the input is unusable (same code clap uses for bad arguments); 1 is for a rejected program or
            // image, which the subcommands report themselves.
            ExitCode::from(2)
        }
    }
}
