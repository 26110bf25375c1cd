//! `bpf2sys compile <obj> --emit obj|clif|asm [-o FILE] [--program NAME] [--target x64|arm64]
//! [--runtime-version X.Y.Z]`
//!
//! Verifies the selected programs and compiles them without linking a driver:
//! - `obj`: a COFF object (cranelift-object, plus `.pdata`/`.xdata`) exporting each program as
//!   `uint64_t <program>(void* context, const program_runtime_context_t* runtime_context)` (contract §5.1), for
//!   users who link programs into their own driver. Written atomically to `-o` (default `<object stem>.obj`).
//! - `clif`: the Cranelift IR of every function, for debugging the lowering.
//! - `asm`: the machine instructions of every function as Cranelift prints them after register allocation.
//!
//! `clif` and `asm` go to `-o` or standard output. Exit status: 0 written, 1 a program failed verification
//! (diagnostics printed, nothing written), 2 unusable input or another error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bpf2sys::driver::{DriverError, Session, SessionOptions};
use bpf2sys::lower;
use bpf2sys::verifier::diagnostic;
use bpf2sys_runtime_shim::RuntimeVersion;

use super::common::{file_name, InputLimit, OutputReplace, TargetArg};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// A COFF object with the programs' machine code and unwind data.
    Obj,
    /// Cranelift IR.
    Clif,
    /// Machine instructions.
    Asm,
}

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// eBPF ELF object built by `clang -target bpf`.
    pub object: PathBuf,
    /// What to produce.
    #[arg(long, value_enum)]
    pub emit: Emit,
    /// Output file (`obj` default: `<object stem>.obj`; `clif`/`asm` default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Compile only this program (default: every program of the object).
    #[arg(long)]
    pub program: Option<String>,
    /// Target architecture.
    #[arg(long, value_enum, default_value_t = TargetArg::X64)]
    pub target: TargetArg,
    /// eBPF for Windows runtime version the code is compiled for: 1.4.0 or later indexes `map_data` with the
    /// 40-byte stride, older versions with 32 bytes (contract §2.2).
    #[arg(long, default_value = "1.3.0", value_parser = RuntimeVersion::parse)]
    pub runtime_version: RuntimeVersion,
    #[command(flatten)]
    pub input: InputLimit,
    #[command(flatten)]
    pub replace_output: OutputReplace,
}

pub fn run(args: &CompileArgs) -> Result<ExitCode> {
    let bytes = args.input.read(&args.object)?;
    let session = Session::new(SessionOptions {
        target: args.target.target(),
        runtime_version: args.runtime_version,
        ..SessionOptions::default()
    })?;
    let in_object = || args.object.display().to_string();
    let module = match session.load(&bytes, &file_name(&args.object)) {
        Ok(module) => module,
        Err(DriverError::Elf { source, .. }) => return Err(anyhow::Error::new(source).context(in_object())),
        Err(e) => return Err(e.into()),
    };
    let selected: Vec<usize> = match &args.program {
        Some(name) => match module.programs.iter().position(|p| &p.name == name) {
            Some(i) => vec![i],
            None => bail!(
                "{}: no program named `{name}` (programs: {})",
                args.object.display(),
                module.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        },
        None => (0..module.programs.len()).collect(),
    };
    if selected.is_empty() {
        bail!("{}: the object contains no programs", args.object.display());
    }

    // The verifier is the only safety gate (the generated code has no checks): nothing unverified is compiled.
    let verified = match session.verify_selected(&args.object.display().to_string(), &module, &selected) {
        Ok(verified) => verified,
        Err(DriverError::Unverified { rejections, .. }) => {
            for r in &rejections {
                eprintln!("{}", diagnostic::render(r, false));
            }
            eprintln!("error: {}: verification failed; nothing was written", args.object.display());
            return Ok(ExitCode::from(1));
        }
        // Named by the path given to verify_selected.
        Err(e) => return Err(e.into()),
    };

    let keep_text = args.emit != Emit::Obj;
    let mut lowered = Vec::with_capacity(selected.len());
    for &i in &selected {
        lowered.push(
            lower::lower_program(session.isa(), &verified, i, &session.lower_options(), keep_text)
                .with_context(in_object)?,
        );
    }

    let output = match args.emit {
        Emit::Obj => {
            let programs: Vec<_> = lowered.into_iter().map(|l| l.program).collect();
            lower::object::write_coff_object(session.shared_isa(), &module.name, &programs).with_context(in_object)?
        }
        Emit::Clif => lowered.iter().flat_map(|l| l.clif.iter()).cloned().collect::<Vec<_>>().join("\n").into_bytes(),
        Emit::Asm => {
            lowered.iter().flat_map(|l| l.disassembly.iter()).cloned().collect::<Vec<_>>().join("\n").into_bytes()
        }
    };
    let path = match (&args.output, args.emit) {
        (Some(p), _) => Some(p.clone()),
        (None, Emit::Obj) => Some(args.object.with_extension("obj")),
        (None, _) => None,
    };
    match path {
        Some(path) => {
            args.replace_output.write(&path, &output, &[&args.object])?;
            eprintln!("{}: wrote {} ({} bytes)", args.object.display(), path.display(), output.len());
        }
        None => std::io::stdout().write_all(&output).context("cannot write to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}
