//! `cargo xtask build-driver [OBJ ...] [--out DIR] [-j N] [--target x64|arm64] [--runtime-version X.Y.Z] [--unsigned]`
//!
//! Builds drivers the way CI does: for each object (default: every `samples/*.o`), verify → compile → link
//! → sign, then lint the result (driver-image-and-signing.md §5.2, H/P rules and S1–S7). Outputs go to `--out`
//! (default `target/drivers/`), written atomically. Fails if any object fails to build or any image fails a rule.
//! The objects are built in parallel on every core (`-j` to limit, [`bpf2sys::batch`]); messages come out in
//! the objects' order and the drivers are byte-identical to one-at-a-time builds.
//!
//! Signing takes every option `bpf2sys sign` and `build` take (`--key/--cert`, `--pfx`, `--pkcs11-*`,
//! `--signature-in`, `--timestamp-url`, `--page-hashes`, ...), parsed by the same code (`bpf2sys::cli::keys`).
//! Without a key the drivers are **test-signed** with a certificate created once and cached in
//! `target/test-signing/` (Windows needs `bcdedit /set testsigning on` and the certificate trusted; the steps are
//! printed when it is created), exactly as `bpf2sys build --test-sign` run from the repository root does.
//! `--unsigned` leaves them unsigned.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bpf2sys::cli::keys::{LoadedSigner, SigningArgs};
use bpf2sys::compiled::Target;
use bpf2sys::driver::{default_runtime_version, Session, SessionOptions};
use bpf2sys_files::write_atomically;
use bpf2sys_runtime_shim::RuntimeVersion;
use bpf2sys_signing::SignOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// eBPF objects to build (default: every samples/*.o).
    pub objects: Vec<PathBuf>,
    /// Output directory (default: target/drivers).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Target architecture.
    #[arg(long, default_value = "x64", value_parser = ["x64", "arm64"])]
    pub target: String,
    /// Runtime version the modules report (contract §2.4; default: the most portable, 1.3.0, or 1.5.0 for an
    /// object whose programs call BTF-resolved functions).
    #[arg(long, value_parser = RuntimeVersion::parse)]
    pub runtime_version: Option<RuntimeVersion>,
    /// Leave the drivers unsigned (Windows will not load them; with HVCI even test mode needs a signature).
    #[arg(long, conflicts_with_all = ["key", "pfx", "pkcs11_module", "signature_in", "test_sign"])]
    pub unsigned: bool,
    /// The key and signature options of `bpf2sys sign` and `build`, parsed by the same code; without a key the
    /// drivers are test-signed.
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Objects built at once (default: every core this process may use).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
}

/// The signer for the outputs (None with `--unsigned`) and the options `bpf2sys build` would sign with. Without a
/// key this is `--test-sign`, with the test certificate directory taken relative to the repository root so the
/// drivers match `bpf2sys build --test-sign` run from there.
fn signing(args: &Args, root: &Path) -> Result<(Option<LoadedSigner>, SignOptions)> {
    let mut signing = args.signing.clone();
    if args.unsigned {
        return Ok((None, signing.sign_options(false)));
    }
    if signing.signature_in.is_none() && signing.key.key_source()?.is_none() {
        signing.test_sign = true;
        signing.test_cert_dir = root.join(&signing.test_cert_dir);
        println!(
            "TEST-SIGNING with the certificate in {} (not for production; give --key/--cert, --pfx or \
             --pkcs11-module to sign for release, --unsigned to skip)",
            signing.test_cert_dir.strip_prefix(root).unwrap_or(&signing.test_cert_dir).display()
        );
    }
    let loaded = signing.load()?.expect("a key, an external signature or the test certificate was selected");
    Ok((Some(loaded), signing.sign_options(false)))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the repository").to_path_buf()
}

pub fn run(args: Args) -> Result<ExitCode> {
    let root = repo_root();
    let objects = if args.objects.is_empty() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("samples"))
            .context("cannot list samples/")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "o"))
            .collect();
        v.sort();
        v
    } else {
        args.objects.clone()
    };
    if objects.is_empty() {
        bail!("no objects to build");
    }
    let out = args.out.clone().unwrap_or_else(|| root.join("target").join("drivers"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let session = Session::new(SessionOptions {
        target: if args.target == "arm64" { Target::Arm64 } else { Target::X64 },
        runtime_version: args.runtime_version.unwrap_or(RuntimeVersion::PORTABLE),
        ..SessionOptions::default()
    })?;
    let (signing, sign_options) = signing(&args, &root)?;
    let threads = args.jobs.unwrap_or_else(bpf2sys::batch::default_threads);
    let outcomes = bpf2sys::batch::map_in_order(&objects, threads, |object| {
        build_one(object, &args, &root, &out, &session, signing.as_ref(), &sign_options)
    });
    let mut failures = 0;
    for outcome in outcomes {
        match outcome {
            Ok(line) => println!("{line}"),
            Err(message) => {
                eprintln!("{message}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        eprintln!("{failures} of {} objects failed", objects.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds, signs, lints and writes one object's driver: the line to print, or the error to report.
fn build_one(
    object: &Path,
    args: &Args,
    root: &Path,
    out: &Path,
    session: &Session,
    signing: Option<&LoadedSigner>,
    sign_options: &SignOptions,
) -> Result<String, String> {
    let name = object.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = std::fs::read(object).map_err(|e| format!("error: cannot read {}: {e}", object.display()))?;
    let started = Instant::now();
    // An object calling kfuncs needs runtime 1.5.0 when no version is given: build it with its own session.
    let runtime_version = args.runtime_version.unwrap_or_else(|| default_runtime_version(&bytes, &name));
    let built = if runtime_version == session.options().runtime_version {
        session.build(&bytes, &name)
    } else {
        Session::new(SessionOptions { runtime_version, ..session.options().clone() })
            .and_then(|s| s.build(&bytes, &name))
    };
    let image = built.map_err(|e| format!("error: {e}"))?;
    let image = match signing {
        Some(signing) => {
            session.sign(&name, &image, &signing.signer, sign_options).map_err(|e| format!("error: {e}"))?
        }
        None => image,
    };
    let elapsed = started.elapsed();
    let report = session.lint(&image).map_err(|e| format!("error: {name}: the linked image: {e}"))?;
    let path = out.join(Path::new(&name).with_extension("sys"));
    if !report.passed() {
        return Err(format!("error: {} fails the driver lint, not written:\n{report}", path.display()));
    }
    write_atomically(&path, &image).map_err(|e| format!("error: cannot write {}: {e}", path.display()))?;
    Ok(format!(
        "{} -> {} ({} bytes, {}, {}, {:.1} ms)",
        object.display(),
        path.strip_prefix(root).unwrap_or(&path).display(),
        image.len(),
        args.target,
        signing.map_or("unsigned", |s| s.label.as_str()),
        elapsed.as_secs_f64() * 1e3
    ))
}
