//! `bpf2sys sign`, `bpf2sys verify-signature` and `bpf2sys cert new`: Authenticode signing of driver images
//! (the `bpf2sys-signing` crate does the work; this is argument handling and reporting).
//!
//! Passwords and PINs are read from an environment variable or a file, never from the command line, where they
//! would be visible in `ps` and shell history.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use bpf2sys_signing::keys::load_pem_chain;
use bpf2sys_signing::sign::write_atomically;
use bpf2sys_signing::test_cert::{self, TestCertificateParams};
use bpf2sys_signing::{
    digest_to_sign, sign_pe, verify_pe, KeySource, PasswordSource, Pkcs11KeySpec, SignOptions, Signer, VerifyOptions,
};

/// Default environment variable for a key or PFX password, and for a PKCS#11 PIN.
pub const DEFAULT_PASSWORD_ENV: &str = "BPF2SYS_KEY_PASSWORD";
pub const DEFAULT_PIN_ENV: &str = "BPF2SYS_PKCS11_PIN";

/// Key selection shared by `sign` (and mirrored by `cargo xtask build-driver`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// PEM private key (PKCS#8, PKCS#1, or encrypted PKCS#8); needs --cert.
    #[arg(long, value_name = "KEY.pem")]
    pub key: Option<PathBuf>,
    /// PEM certificate chain, leaf first (with --key, --signature-in or --pkcs11-module).
    #[arg(long, value_name = "CHAIN.pem")]
    pub cert: Option<PathBuf>,
    /// PFX/PKCS#12 file with the key and its chain.
    #[arg(long, value_name = "FILE.pfx")]
    pub pfx: Option<PathBuf>,
    /// Environment variable holding the key/PFX password [default: BPF2SYS_KEY_PASSWORD].
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// File whose first line is the key/PFX password.
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// PKCS#11 module of an HSM or smart card (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, value_name = "LIB.so", requires_all = ["pkcs11_token", "pkcs11_key"])]
    pub pkcs11_module: Option<PathBuf>,
    /// Token label on the PKCS#11 module.
    #[arg(long, value_name = "LABEL")]
    pub pkcs11_token: Option<String>,
    /// Label of the private key (and of its certificate object if --cert is not given).
    #[arg(long, value_name = "LABEL")]
    pub pkcs11_key: Option<String>,
    /// Environment variable holding the token user PIN [default: BPF2SYS_PKCS11_PIN].
    #[arg(long, value_name = "VAR")]
    pub pin_env: Option<String>,
    /// File whose first line is the token user PIN.
    #[arg(long, value_name = "FILE", conflicts_with = "pin_env")]
    pub pin_file: Option<PathBuf>,
}

impl KeyArgs {
    fn password(&self) -> Option<PasswordSource> {
        match (&self.password_file, &self.password_env) {
            (Some(file), _) => Some(PasswordSource::File(file.clone())),
            (None, Some(var)) => Some(PasswordSource::Env(var.clone())),
            (None, None) => None,
        }
    }

    /// The key source these arguments select, or None when no key was given.
    pub fn key_source(&self) -> anyhow::Result<Option<KeySource>> {
        let chosen = [self.key.is_some(), self.pfx.is_some(), self.pkcs11_module.is_some()];
        if chosen.iter().filter(|&&c| c).count() > 1 {
            bail!("give one key: --key, --pfx or --pkcs11-module");
        }
        if let Some(key) = &self.key {
            let chain = self.cert.clone().context("--key needs --cert with the certificate chain")?;
            let password = self.password().or_else(|| {
                std::env::var_os(DEFAULT_PASSWORD_ENV).map(|_| PasswordSource::Env(DEFAULT_PASSWORD_ENV.into()))
            });
            return Ok(Some(KeySource::Pem { key: key.clone(), chain, password }));
        }
        if let Some(path) = &self.pfx {
            let password = self.password().unwrap_or_else(|| PasswordSource::Env(DEFAULT_PASSWORD_ENV.into()));
            return Ok(Some(KeySource::Pfx { path: path.clone(), password }));
        }
        if let Some(module) = &self.pkcs11_module {
            let pin = match (&self.pin_file, &self.pin_env) {
                (Some(file), _) => PasswordSource::File(file.clone()),
                (None, Some(var)) => PasswordSource::Env(var.clone()),
                (None, None) => PasswordSource::Env(DEFAULT_PIN_ENV.into()),
            };
            let spec = Pkcs11KeySpec {
                module: module.clone(),
                token_label: self.pkcs11_token.clone().context("--pkcs11-module needs --pkcs11-token")?,
                key_label: self.pkcs11_key.clone().context("--pkcs11-module needs --pkcs11-key")?,
                pin,
            };
            return Ok(Some(KeySource::Pkcs11 { spec, chain: self.cert.clone() }));
        }
        Ok(None)
    }
}

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// Driver image to sign.
    pub image: PathBuf,
    /// Signed output (default: sign the input in place, atomically).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Step 1 of external signing: write the 32-byte SHA-256 digest that the key must sign
    /// (RSASSA-PKCS1-v1_5, pre-hashed) to FILE and stop.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["signature_in", "timestamp_url", "output"])]
    pub digest_out: Option<PathBuf>,
    /// Step 2 of external signing: embed the raw RSA signature in FILE (made over the --digest-out digest, with
    /// the same image and options); needs --cert.
    #[arg(long, value_name = "FILE")]
    pub signature_in: Option<PathBuf>,
    /// RFC 3161 time-stamp authority (http://) to countersign with.
    #[arg(long, value_name = "URL")]
    pub timestamp_url: Option<String>,
    /// Embed SHA-256 page hashes (SpcPeImagePageHashes V2).
    #[arg(long)]
    pub page_hashes: bool,
    /// Program description shown by Windows (SpcSpOpusInfo).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// More-information URL (SpcSpOpusInfo).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Replace an existing signature instead of refusing.
    #[arg(long)]
    pub replace: bool,
}

pub fn sign(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let image = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
    let options = SignOptions {
        description: args.description.clone(),
        url: args.url.clone(),
        page_hashes: args.page_hashes,
        timestamp_url: args.timestamp_url.clone(),
        replace_existing: args.replace,
    };
    if let Some(digest_path) = &args.digest_out {
        let digest = digest_to_sign(&image, &options).with_context(|| format!("{}", args.image.display()))?;
        write_atomically(digest_path, &digest)?;
        println!(
            "{}: wrote the SHA-256 digest to sign to {}.\n\
             Sign it as a pre-hashed SHA-256 digest with RSASSA-PKCS1-v1_5, for example\n  \
             openssl pkeyutl -sign -pkeyopt digest:sha256 -inkey KEY.pem -in {} -out SIG.bin\n  \
             (cloud KMS: sign with message type DIGEST, algorithm RSASSA_PKCS1_V1_5_SHA_256; store the raw bytes)\n\
             then embed it, with the same image and the same --page-hashes/--description/--url:\n  \
             bpf2sys sign {} --cert CHAIN.pem --signature-in SIG.bin [-o OUT.sys] [--timestamp-url URL]",
            args.image.display(),
            digest_path.display(),
            digest_path.display(),
            args.image.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let source = match (&args.signature_in, args.key.key_source()?) {
        (Some(_), Some(_)) => bail!("--signature-in embeds an external signature: give no key with it"),
        (Some(signature), None) => KeySource::External {
            chain: args.key.cert.clone().context("--signature-in needs --cert with the certificate chain")?,
            signature: signature.clone(),
        },
        (None, Some(source)) => source,
        (None, None) => bail!(
            "no signing key: give --key/--cert, --pfx, --pkcs11-module, or --signature-in \
             (for a test certificate: bpf2sys cert new)"
        ),
    };
    let signer = Signer::load(&source)?;
    let signed = sign_pe(&image, &signer, &options).with_context(|| format!("cannot sign {}", args.image.display()))?;
    let output = args.output.as_ref().unwrap_or(&args.image);
    write_atomically(output, &signed)?;
    println!(
        "{} -> {}: signed by {} ({}){}{}",
        args.image.display(),
        output.display(),
        signer.leaf().tbs_certificate.subject,
        signer.describe(),
        if options.page_hashes { ", page hashes" } else { "" },
        if options.timestamp_url.is_some() { ", timestamped" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
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
}

/// Exit status: 0 valid, 1 invalid (each problem printed), 2 unreadable arguments.
pub fn verify_signature(args: &VerifySignatureArgs) -> anyhow::Result<ExitCode> {
    let image = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
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
    /// Validity in days.
    #[arg(long, default_value_t = 3 * 365)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn cert(command: &CertCommand) -> anyhow::Result<ExitCode> {
    let CertCommand::New(args) = command;
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
