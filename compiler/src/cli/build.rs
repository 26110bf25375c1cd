//! `bpf2sys build <obj> -o <file.sys> [--target x64|arm64] [--runtime-version X.Y.Z]`
//!
//! Verifies every program, compiles it, links it with the runtime shim and writes the driver atomically.
//! Exit status: 0 written, 1 a program failed verification (diagnostics printed, nothing written),
//! 2 unusable input or another error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bpf2sys::compiled::Target;
use bpf2sys::driver::{DriverError, Session, SessionOptions};
use bpf2sys::link::write_atomically;
use bpf2sys_runtime_shim::RuntimeVersion;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// eBPF ELF object built by `clang -target bpf`.
    pub object: PathBuf,
    /// Output driver path.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Target architecture.
    #[arg(long, default_value = "x64", value_parser = ["x64", "arm64"])]
    pub target: String,
    /// eBPF for Windows runtime version the module reports (contract §2.4). The default 1.3.0 loads on every
    /// runtime release; 1.4.0 or later selects the 40-byte map_data stride and needs runtime ≥ v1.4.
    #[arg(long, default_value = "1.3.0", value_parser = RuntimeVersion::parse)]
    pub runtime_version: RuntimeVersion,
}

pub fn run(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let object = std::fs::read(&args.object).with_context(|| format!("cannot read {}", args.object.display()))?;
    let file_name = args.object.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let session = Session::new(SessionOptions {
        target: if args.target == "arm64" { Target::Arm64 } else { Target::X64 },
        runtime_version: args.runtime_version,
        ..SessionOptions::default()
    })?;
    match session.build(&object, &file_name) {
        Ok(image) => {
            write_atomically(&args.output, &image)
                .with_context(|| format!("cannot write {}", args.output.display()))?;
            println!(
                "{}: wrote {} ({} bytes, {})",
                args.object.display(),
                args.output.display(),
                image.len(),
                args.target
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ DriverError::Unverified { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
