//! `bpf2sys check <file.sys>`: the static lint of driver-image-and-signing.md §5.2 (H1–H7, P1–P11, and the
//! signature rules S1–S7 of the signing crate), one line per rule. Exit status: 0 every rule passes, 1 some rule
//! fails, 2 the file cannot be read or is not a PE32+ image at all.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use bpf2sys::link::lint::lint_driver;

use super::common::InputLimit;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Driver image to check.
    pub image: PathBuf,
    #[command(flatten)]
    pub input: InputLimit,
}

pub fn run(args: &CheckArgs) -> Result<ExitCode> {
    let bytes = args.input.read(&args.image)?;
    let report = match lint_driver(&bytes) {
        Ok(report) => report,
        Err(e) => anyhow::bail!("{}: {e}", args.image.display()),
    };
    println!("{}:\n{report}", args.image.display());
    if !bpf2sys_signing::lint::is_signed(&bytes) {
        println!("note: the image is unsigned (S1–S6 not applicable); Windows loads only signed kernel drivers");
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
