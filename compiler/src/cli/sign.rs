//! `bpf2sys sign`, `bpf2sys verify-signature` and `bpf2sys cert new`: Authenticode signing of driver images
//! (the `bpf2sys-signing` crate does the work; this is argument handling and reporting).
//!
//! Key options are parsed by [`super::keys`], shared with `build`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bpf2sys_signing::keys::load_pem_chain;
use bpf2sys_signing::test_cert::{self, TestCertificateParams};
use bpf2sys_signing::{digest_to_sign, sign_pe, verify_pe, SignOptions, Signer, VerifyOptions};

use super::common::{InputLimit, OutputReplace};
use super::keys::SigningArgs;

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// Driver image to sign.
    pub image: PathBuf,
    /// Signed output (default: sign the input in place, atomically).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Step 1 of external signing: write the 32-byte SHA-256 digest that the key must sign
    /// (RSASSA-PKCS1-v1_5, pre-hashed) to FILE and stop.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["signature_in", "timestamp_url", "output", "test_sign"])]
    pub digest_out: Option<PathBuf>,
    /// Replace an existing signature instead of refusing.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub input: InputLimit,
    #[command(flatten)]
    pub replace_output: OutputReplace,
}

pub fn sign(args: &SignArgs) -> Result<ExitCode> {
    let image = args.input.read(&args.image)?;
    let options = args.signing.sign_options(args.replace);
    if let Some(digest_path) = &args.digest_out {
        let digest = digest_to_sign(&image, &options).with_context(|| args.image.display().to_string())?;
        args.replace_output.write(digest_path, &digest, &[&args.image])?;
        println!("{}", external_signing_steps(&args.image, digest_path));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(loaded) = args.signing.load()? else {
        bail!(
            "no signing key: give --key/--cert, --pfx, --pkcs11-module, --signature-in or --test-sign \
             (for a test certificate: bpf2sys cert new)"
        );
    };
    let Some(signed) = sign_checked(&args.image, &image, &loaded.signer, &options)? else {
        return Ok(ExitCode::from(1));
    };
    // Signing in place is what `sign` without -o means; with -o the output may not be the input.
    let output = args.output.as_ref().unwrap_or(&args.image);
    let inputs: Vec<&Path> = if args.output.is_some() { vec![&args.image] } else { vec![] };
    args.replace_output.write(output, &signed, &inputs)?;
    println!(
        "{} -> {}: {}{}{}",
        args.image.display(),
        output.display(),
        loaded.label,
        if options.page_hashes { ", page hashes" } else { "" },
        if options.timestamp_url.is_some() { ", timestamped" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Step 2 of the two-step external flow, as printed after step 1.
pub fn external_signing_steps(image: &Path, digest_path: &Path) -> String {
    format!(
        "{}: wrote the SHA-256 digest to sign to {}.\n\
         Sign it as a pre-hashed SHA-256 digest with RSASSA-PKCS1-v1_5, for example\n  \
         openssl pkeyutl -sign -pkeyopt digest:sha256 -inkey KEY.pem -in {} -out SIG.bin\n  \
         (cloud KMS: sign with message type DIGEST, algorithm RSASSA_PKCS1_V1_5_SHA_256; store the raw bytes)\n\
         then embed it, with the same input and the same --page-hashes/--description/--url:\n  \
         --cert CHAIN.pem --signature-in SIG.bin [--timestamp-url URL]",
        image.display(),
        digest_path.display(),
        digest_path.display(),
    )
}

/// Signs `image` and checks the result with the same verification `verify-signature` runs, so nothing this
/// tool would itself reject is ever written. `None` (after printing why, naming `path`) when the signed image
/// does not verify; `Err` when the image cannot be signed at all.
pub fn sign_checked(path: &Path, image: &[u8], signer: &Signer, options: &SignOptions) -> Result<Option<Vec<u8>>> {
    let signed = sign_pe(image, signer, options).with_context(|| format!("{}: cannot sign", path.display()))?;
    Ok(signed_image_verifies(path, &signed).then_some(signed))
}

/// Whether a freshly signed image passes `verify-signature`'s checks; if not, says why (one line naming `path`).
pub fn signed_image_verifies(path: &Path, signed: &[u8]) -> bool {
    match signed_image_problems(signed) {
        None => true,
        Some(problems) => {
            eprintln!("error: {}: the signed image does not verify, nothing was written: {problems}", path.display());
            false
        }
    }
}

/// Why a freshly signed image does not verify (problems joined by "; "), or `None` when it does.
pub fn signed_image_problems(signed: &[u8]) -> Option<String> {
    let report = verify_pe(signed, &VerifyOptions::default());
    if report.is_valid() {
        return None;
    }
    Some(report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))
}

#[derive(clap::Args, Debug)]
pub struct VerifySignatureArgs {
    /// Signed driver image.
    pub image: PathBuf,
    /// Trusted root or intermediate (PEM or DER); repeatable. Without it the chain's trust is not checked.
    #[arg(long, value_name = "CERT")]
    pub ca: Vec<PathBuf>,
    /// Trusted time-stamp authority root (PEM or DER); repeatable.
    #[arg(long, value_name = "CERT")]
    pub tsa_ca: Vec<PathBuf>,
    #[command(flatten)]
    pub input: InputLimit,
}

/// Exit status: 0 valid, 1 invalid (each problem printed), 2 unreadable arguments.
pub fn verify_signature(args: &VerifySignatureArgs) -> Result<ExitCode> {
    let image = args.input.read(&args.image)?;
    if let Err(e) = bpf2sys_signing::pe::PeLayout::parse(&image) {
        bail!("{}: not a PE32+ image: {e}", args.image.display());
    }
    let mut options = VerifyOptions::default();
    for path in &args.ca {
        options.trusted_cas.extend(load_pem_chain(path)?);
    }
    for path in &args.tsa_ca {
        options.trusted_tsa_cas.extend(load_pem_chain(path)?);
    }
    let report = verify_pe(&image, &options);
    println!("{}:", args.image.display());
    if let Some(subject) = &report.signer_subject {
        println!("  signer: {subject}");
    }
    for note in &report.notes {
        println!("  {note}");
    }
    for (rule, warning) in &report.warnings {
        println!("  warning [{rule}]: {warning}");
    }
    for problem in &report.problems {
        println!("  FAILED {problem}");
    }
    if report.is_valid() {
        println!("  signature OK");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("  signature INVALID");
        Ok(ExitCode::from(1))
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Create a self-signed RSA code-signing test certificate and key, and print how to trust it.
    New(CertNewArgs),
}

#[derive(clap::Args, Debug)]
pub struct CertNewArgs {
    /// Directory for NAME.key.pem and NAME.cert.pem.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// File name stem.
    #[arg(long, default_value = "bpf2sys-test-signing")]
    pub name: String,
    /// Certificate subject common name.
    #[arg(long, default_value = "bpf2sys test signing (NOT FOR PRODUCTION)")]
    pub common_name: String,
    /// RSA key size (2048-4096).
    #[arg(long, default_value_t = 3072)]
    pub bits: usize,
    /// Validity in days (at least 1; above 460, the CA/Browser Forum limit for code signing, a warning).
    #[arg(long, default_value_t = test_cert::CABF_MAX_CODE_SIGNING_DAYS)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn cert(command: &CertCommand) -> Result<ExitCode> {
    let CertCommand::New(args) = command;
    if args.days < 1 {
        bail!("--days {}: a certificate must be valid for at least 1 day", args.days);
    }
    if args.days > test_cert::CABF_MAX_CODE_SIGNING_DAYS {
        eprintln!(
            "warning: --days {} is over {} days, the longest validity the CA/Browser Forum Code Signing Baseline \
             Requirements allow a publicly-trusted code-signing certificate",
            args.days,
            test_cert::CABF_MAX_CODE_SIGNING_DAYS
        );
    }
    let key_path = args.out_dir.join(format!("{}.key.pem", args.name));
    let cert_path = args.out_dir.join(format!("{}.cert.pem", args.name));
    for path in [&key_path, &cert_path] {
        if path.exists() && !args.force {
            bail!("{} exists (use --force to overwrite)", path.display());
        }
    }
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let params =
        TestCertificateParams { common_name: args.common_name.clone(), rsa_bits: args.bits, valid_days: args.days };
    let generated = test_cert::generate(&params)?;
    test_cert::write_generated(&generated, &key_path, &cert_path)?;
    println!("wrote {} (private key, mode 0600) and {}", key_path.display(), cert_path.display());
    println!("sign with: bpf2sys sign DRIVER.sys --key {} --cert {}\n", key_path.display(), cert_path.display());
    println!("{}", test_cert::trust_instructions(Path::new(&cert_path)));
    Ok(ExitCode::SUCCESS)
}
