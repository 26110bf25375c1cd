//! `bpf2sys build <obj> [-o <file.sys>] [--target x64|arm64] [--runtime-version X.Y.Z] [--max-instructions N]
//! [--type TYPE] [signing options]`
//!
//! Verifies every program, compiles it, links it with the runtime shim, signs the image when a key is given
//! (the key options of `sign`, or `--test-sign` for the certificate `cargo xtask build-driver` uses), lints it
//! (driver-image-and-signing.md §5.2) and writes the driver atomically. Without a key the driver is written
//! unsigned and stderr says so: Windows loads only signed kernel drivers. Programs the front end refuses (a call
//! to an undefined symbol) are left out with a warning naming the symbol; the others are built.
//!
//! Exit status: 0 written, 1 a program failed verification or the image failed the lint (diagnostics printed,
//! nothing written), 2 unusable input or another error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bpf2sys::driver::{default_runtime_version, BuiltDriver, DriverError, Session, SessionOptions};
use bpf2sys::verifier::{diagnostic, VerifierOptions};
use bpf2sys_runtime_shim::RuntimeVersion;

use super::common::{file_name, InputLimit, OutputReplace, TargetArg};
use super::keys::SigningArgs;
use super::sign::{external_signing_steps, signed_image_verifies};

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// eBPF ELF object built by `clang -target bpf`.
    pub object: PathBuf,
    /// Output driver path (default: the object's path with the extension `.sys`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Target architecture.
    #[arg(long, value_enum, default_value_t = TargetArg::X64)]
    pub target: TargetArg,
    /// eBPF for Windows runtime version the module reports (contract §2.4). Default: 1.3.0, which loads on every
    /// runtime release, or 1.5.0 when a program calls a BTF-resolved function (kfunc), which needs it; 1.4.0 or
    /// later selects the 40-byte map_data stride and needs runtime ≥ v1.4.
    #[arg(long, value_parser = RuntimeVersion::parse)]
    pub runtime_version: Option<RuntimeVersion>,
    /// Program type for every program (e.g. `sample`), for objects whose section names select none.
    #[arg(long = "type")]
    pub program_type: Option<String>,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Step 1 of external signing: write the SHA-256 digest of the driver this build makes, for the remote key
    /// to sign, to FILE and stop (step 2: the same build with --cert and --signature-in).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["signature_in", "timestamp_url", "test_sign", "key", "pfx", "pkcs11_module"])]
    pub digest_out: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputLimit,
    #[command(flatten)]
    pub replace_output: OutputReplace,
    /// Budget for the proven number of instructions executed per invocation (nested loop bounds multiply); a
    /// program that may exceed it is rejected.
    #[arg(long, value_name = "N", default_value_t = bpf2sys::verifier::DEFAULT_MAX_INSTRUCTIONS)]
    pub max_instructions: u64,
}

pub fn run(args: &BuildArgs) -> Result<ExitCode> {
    let object = args.input.read(&args.object)?;
    let session = Session::new(SessionOptions {
        target: args.target.target(),
        runtime_version: args
            .runtime_version
            .unwrap_or_else(|| default_runtime_version(&object, &file_name(&args.object))),
        verifier: VerifierOptions { max_instructions: args.max_instructions, ..VerifierOptions::default() },
        program_type: args.program_type.clone(),
    })?;
    let in_object = |e: anyhow::Error| e.context(args.object.display().to_string());
    let image = match session.build_report(&object, &file_name(&args.object)) {
        Ok(BuiltDriver { image, left_out }) => {
            for r in &left_out {
                eprintln!(
                    "warning: {}: program `{}` (section `{}`) left out of the driver: {}",
                    args.object.display(),
                    r.name,
                    r.section_name,
                    r.reason
                );
            }
            image
        }
        Err(DriverError::Unverified { rejections, .. }) => {
            for rejection in &rejections {
                eprintln!("{}", diagnostic::render(rejection, false));
            }
            eprintln!(
                "error: {}: {} program(s) failed verification; no driver was written",
                args.object.display(),
                rejections.len()
            );
            return Ok(ExitCode::from(1));
        }
        // Every program was refused at load time (e.g. it calls an undefined symbol): a rejected program, as in
        // `verify`, not unusable input.
        Err(DriverError::NoBuildablePrograms { refused, .. }) => {
            for r in &refused {
                eprintln!(
                    "error: {}: program `{}` (section `{}`) cannot be built: {}",
                    args.object.display(),
                    r.name,
                    r.section_name,
                    r.reason
                );
            }
            eprintln!("error: {}: no program can be built; no driver was written", args.object.display());
            return Ok(ExitCode::from(1));
        }
        // The driver's errors name the file by its base name; the CLI names it as the user gave it.
        Err(DriverError::Elf { source, .. }) => return Err(in_object(source.into())),
        Err(DriverError::Lower { source, .. }) => return Err(in_object(source.into())),
        Err(DriverError::Link { source, .. }) => return Err(in_object(source.into())),
        Err(DriverError::UnknownProgramType { program, section, platform, .. }) => bail!(
            "{}: program `{program}` is in section `{section}`, which names no program type of the {platform} platform",
            args.object.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let sign_options = args.signing.sign_options(false);
    if let Some(digest_path) = &args.digest_out {
        let digest = bpf2sys_signing::digest_to_sign(&image, &sign_options)
            .with_context(|| format!("{}: cannot compute the digest to sign", args.object.display()))?;
        args.replace_output.write(digest_path, &digest, &[&args.object])?;
        println!("{}", external_signing_steps(&args.object, digest_path));
        return Ok(ExitCode::SUCCESS);
    }
    let signer = args.signing.load()?;
    let (image, label) = match &signer {
        Some(loaded) => {
            let signed =
                session.sign(&file_name(&args.object), &image, &loaded.signer, &sign_options).map_err(|e| match e {
                    DriverError::Sign { source, .. } => in_object(source.into()),
                    other => other.into(),
                })?;
            if !signed_image_verifies(&args.object, &signed) {
                return Ok(ExitCode::from(1));
            }
            (signed, loaded.label.as_str())
        }
        None => (image, "unsigned"),
    };
    let output = args.output.clone().unwrap_or_else(|| args.object.with_extension("sys"));
    // The same lint `bpf2sys check` and `cargo xtask build-driver` apply: an image failing it is not written.
    let report = session.lint(&image).with_context(|| args.object.display().to_string())?;
    if !report.passed() {
        eprintln!("{report}");
        eprintln!("error: {}: the driver fails the lint; {} was not written", args.object.display(), output.display());
        return Ok(ExitCode::from(1));
    }
    args.replace_output.write(&output, &image, &[&args.object])?;
    println!(
        "{}: wrote {} ({} bytes, {}, {})",
        args.object.display(),
        output.display(),
        image.len(),
        args.target.name(),
        label
    );
    if signer.is_none() {
        eprintln!(
            "note: {} is unsigned; Windows loads only signed kernel drivers (sign with --key/--cert, --pfx, \
             --pkcs11-module or --test-sign, or later with `bpf2sys sign`)",
            output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
