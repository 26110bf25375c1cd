//! `bpf2sys build <obj>... [-o <file.sys>] [-j N] [--target x64|arm64] [--runtime-version X.Y.Z]
//! [--max-instructions N] [--type TYPE] [signing options]`
//!
//! Verifies every program, compiles it, links it with the runtime shim, signs the image when a key is given
//! (the key options of `sign`, or `--test-sign` for the certificate `cargo xtask build-driver` uses), lints it
//! (driver-image-and-signing.md §5.2) and writes the driver atomically. Without a key the driver is written
//! unsigned and stderr says so: Windows loads only signed kernel drivers. Programs the front end refuses (a call
//! to an undefined symbol) are left out with a warning naming the symbol; the others are built.
//!
//! Several objects are built in parallel on every core (`-j` to limit), each to `<object>.sys`; messages are
//! printed per object in the order the objects were given, and every driver is byte-identical to the one a
//! build of that object alone writes ([`bpf2sys::batch`]).
//!
//! Exit status: 0 written, 1 a program failed verification or the image failed the lint (diagnostics printed,
//! nothing written), 2 unusable input or another error; for several objects, the highest of theirs.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bpf2sys::driver::{default_runtime_version, BuiltDriver, DriverError, Session, SessionOptions};
use bpf2sys::verifier::{diagnostic, VerifierOptions};
use bpf2sys_runtime_shim::RuntimeVersion;

use super::common::{file_name, one_line, InputLimit, OutputReplace, TargetArg};
use super::keys::{LoadedSigner, SigningArgs};
use super::sign::{external_signing_steps, signed_image_problems};

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// eBPF ELF objects built by `clang -target bpf`; several are built in parallel.
    #[arg(required = true, value_name = "OBJECT")]
    pub objects: Vec<PathBuf>,
    /// Output driver path, for one object (default: the object's path with the extension `.sys`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Objects built at once (default: every core this process may use).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
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
    if let [object] = args.objects.as_slice() {
        if let Some(digest_path) = &args.digest_out {
            return write_digest_to_sign(args, object, digest_path);
        }
    } else {
        let n = args.objects.len();
        if args.output.is_some() {
            bail!("-o/--output names one driver; with {n} objects each driver is written to <object>.sys");
        }
        if args.digest_out.is_some() || args.signing.signature_in.is_some() {
            bail!("external signing (--digest-out, --signature-in) signs one image: give one object, not {n}");
        }
    }
    let signer = args.signing.load()?;
    let threads = args.jobs.unwrap_or_else(bpf2sys::batch::default_threads);
    let outcomes = bpf2sys::batch::map_in_order(&args.objects, threads, |object| {
        let mut log = Log::default();
        let status = match build_one(args, object, signer.as_ref(), &mut log) {
            Ok(status) => status,
            Err(e) => {
                log.err(format!("error: {}", one_line(&e)));
                2
            }
        };
        (log, status)
    });
    let mut worst = 0;
    for (log, status) in outcomes {
        log.print();
        worst = worst.max(status);
    }
    Ok(ExitCode::from(worst))
}

/// What one object's build prints, kept until the batch is done so objects' messages do not interleave.
#[derive(Default)]
struct Log {
    lines: Vec<(bool, String)>,
}

impl Log {
    fn out(&mut self, line: String) {
        self.lines.push((false, line));
    }
    fn err(&mut self, line: String) {
        self.lines.push((true, line));
    }
    fn print(self) {
        for (to_stderr, line) in self.lines {
            if to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    }
}

fn session_for(args: &BuildArgs, object_path: &Path, object: &[u8]) -> Result<Session> {
    Ok(Session::new(SessionOptions {
        target: args.target.target(),
        runtime_version: args
            .runtime_version
            .unwrap_or_else(|| default_runtime_version(object, &file_name(object_path))),
        verifier: VerifierOptions { max_instructions: args.max_instructions, ..VerifierOptions::default() },
        program_type: args.program_type.clone(),
    })?)
}

/// Step one of external signing: the digest the remote key signs for the driver this build makes.
fn write_digest_to_sign(args: &BuildArgs, object_path: &Path, digest_path: &Path) -> Result<ExitCode> {
    let mut log = Log::default();
    let Some((_, image)) = build_image(args, object_path, &mut log)? else {
        log.print();
        return Ok(ExitCode::from(1));
    };
    log.print();
    let digest = bpf2sys_signing::digest_to_sign(&image, &args.signing.sign_options(false))
        .with_context(|| format!("{}: cannot compute the digest to sign", object_path.display()))?;
    args.replace_output.write(digest_path, &digest, &[object_path])?;
    println!("{}", external_signing_steps(object_path, digest_path));
    Ok(ExitCode::SUCCESS)
}

/// Verifies, compiles and links one object: its session and unsigned image, or `None` when a program is
/// rejected (diagnostics in `log`).
fn build_image(args: &BuildArgs, object_path: &Path, log: &mut Log) -> Result<Option<(Session, Vec<u8>)>> {
    let object = args.input.read(object_path)?;
    let session = session_for(args, object_path, &object)?;
    let in_object = |e: anyhow::Error| e.context(object_path.display().to_string());
    match session.build_report(&object, &file_name(object_path)) {
        Ok(BuiltDriver { image, left_out, core_relocations }) => {
            for c in &core_relocations {
                log.err(format!("warning: {}: {}", object_path.display(), c.warning()));
            }
            for r in &left_out {
                log.err(format!(
                    "warning: {}: program `{}` (section `{}`) left out of the driver: {}",
                    object_path.display(),
                    r.name,
                    r.section_name,
                    r.reason
                ));
            }
            Ok(Some((session, image)))
        }
        Err(DriverError::Unverified { rejections, .. }) => {
            for rejection in &rejections {
                log.err(diagnostic::render(rejection, false));
            }
            log.err(format!(
                "error: {}: {} program(s) failed verification; no driver was written",
                object_path.display(),
                rejections.len()
            ));
            Ok(None)
        }
        // Every program was refused at load time (e.g. it calls an undefined symbol): a rejected program, as in
        // `verify`, not unusable input.
        Err(DriverError::NoBuildablePrograms { refused, .. }) => {
            for r in &refused {
                log.err(format!(
                    "error: {}: program `{}` (section `{}`) cannot be built: {}",
                    object_path.display(),
                    r.name,
                    r.section_name,
                    r.reason
                ));
            }
            log.err(format!("error: {}: no program can be built; no driver was written", object_path.display()));
            Ok(None)
        }
        // The driver's errors name the file by its base name; the CLI names it as the user gave it.
        Err(DriverError::Elf { source, .. }) => Err(in_object(source.into())),
        Err(DriverError::Lower { source, .. }) => Err(in_object(source.into())),
        Err(DriverError::Link { source, .. }) => Err(in_object(source.into())),
        Err(DriverError::UnknownProgramType { program, section, platform, .. }) => bail!(
            "{}: program `{program}` is in section `{section}`, which names no program type of the {platform} platform",
            object_path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Builds, signs, lints and writes one object's driver; the exit status of that object.
fn build_one(args: &BuildArgs, object_path: &Path, signer: Option<&LoadedSigner>, log: &mut Log) -> Result<u8> {
    let Some((session, image)) = build_image(args, object_path, log)? else {
        return Ok(1);
    };
    let in_object = |e: anyhow::Error| e.context(object_path.display().to_string());
    let sign_options = args.signing.sign_options(false);
    let (image, label) = match signer {
        Some(loaded) => {
            let signed =
                session.sign(&file_name(object_path), &image, &loaded.signer, &sign_options).map_err(|e| match e {
                    DriverError::Sign { source, .. } => in_object(source.into()),
                    other => other.into(),
                })?;
            if let Some(problems) = signed_image_problems(&signed) {
                log.err(format!(
                    "error: {}: the signed image does not verify, nothing was written: {problems}",
                    object_path.display()
                ));
                return Ok(1);
            }
            (signed, loaded.label.as_str())
        }
        None => (image, "unsigned"),
    };
    let output = args.output.clone().unwrap_or_else(|| object_path.with_extension("sys"));
    // The same lint `bpf2sys check` and `cargo xtask build-driver` apply: an image failing it is not written.
    let report = session.lint(&image).with_context(|| object_path.display().to_string())?;
    if !report.passed() {
        log.err(report.to_string());
        log.err(format!(
            "error: {}: the driver fails the lint; {} was not written",
            object_path.display(),
            output.display()
        ));
        return Ok(1);
    }
    args.replace_output.write(&output, &image, &[object_path])?;
    log.out(format!(
        "{}: wrote {} ({} bytes, {}, {})",
        object_path.display(),
        output.display(),
        image.len(),
        args.target.name(),
        label
    ));
    if signer.is_none() {
        log.err(format!(
            "note: {} is unsigned; Windows loads only signed kernel drivers (sign with --key/--cert, --pfx, \
             --pkcs11-module or --test-sign, or later with `bpf2sys sign`)",
            output.display()
        ));
    }
    Ok(0)
}
