//! `bpf2sys check <file.sys>`: the static lint of driver-image-and-signing.md §5.2 (H1–H7, P1–P11, and the
//! signature rules S1–S7 of the signing crate), one line per rule. Exit status: 0 every rule passes, 1 some rule fails, 2 the file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bpf2sys::link::lint::{lint_image_with, ExtraRule};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Driver image to check.
    pub image: PathBuf,
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
    let extra: Vec<ExtraRule> = bpf2sys_signing::lint::SIGNATURE_RULES
        .iter()
        .map(|(id, title, check)| ExtraRule { id, title, check })
        .collect();
    let report = lint_image_with(&bytes, &extra);
    println!("{}:\n{report}", args.image.display());
    if !bpf2sys_signing::lint::is_signed(&bytes) {
        println!("note: the image is unsigned (S1–S6 not applicable); Windows loads only signed kernel drivers");
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
