//! The signing options `sign` and `build` share, parsed in this one place: which key (PEM, PFX, PKCS#11, an
//! external signature, or the test certificate) and how to sign (timestamp, page hashes, descriptions).
//!
//! Passwords and PINs are read from an environment variable or a file, never from the command line, where they
//! would be visible in `ps` and shell history.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bpf2sys_signing::{test_cert, KeySource, PasswordSource, Pkcs11KeySpec, SignOptions, Signer};

/// Default environment variable for a key or PFX password, and for a PKCS#11 PIN.
pub const DEFAULT_PASSWORD_ENV: &str = "BPF2SYS_KEY_PASSWORD";
pub const DEFAULT_PIN_ENV: &str = "BPF2SYS_PKCS11_PIN";

/// Key selection.
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

/// Where `--test-sign` keeps its certificate by default: the directory `cargo xtask build-driver` uses, relative
/// to the repository root (run from there, `build --test-sign` and the xtask sign with the same certificate).
pub const DEFAULT_TEST_CERT_DIR: &str = "target/test-signing";

/// Everything that selects a signer and shapes the signature, for `sign` and `build`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SigningArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Test-sign with the bpf2sys test certificate in --test-cert-dir, creating it there if missing (not for
    /// production: Windows needs test mode and the certificate trusted).
    #[arg(long, conflicts_with_all = ["key", "pfx", "pkcs11_module", "signature_in"])]
    pub test_sign: bool,
    /// Directory of the --test-sign certificate.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TEST_CERT_DIR, requires = "test_sign")]
    pub test_cert_dir: PathBuf,
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
}

/// A loaded signer and how to describe what it makes.
pub struct LoadedSigner {
    pub signer: Signer,
    /// "signed by CN=… (RSA key from …)" or "TEST-SIGNED with …".
    pub label: String,
}

impl SigningArgs {
    /// How to sign; `replace_existing` is `sign --replace`.
    pub fn sign_options(&self, replace_existing: bool) -> SignOptions {
        SignOptions {
            description: self.description.clone(),
            url: self.url.clone(),
            page_hashes: self.page_hashes,
            timestamp_url: self.timestamp_url.clone(),
            replace_existing,
        }
    }

    /// The signer these options select, or None when none was given.
    pub fn load(&self) -> Result<Option<LoadedSigner>> {
        if self.test_sign {
            let test = test_cert::load_or_create(&self.test_cert_dir)?;
            if test.created {
                eprintln!("created test-signing certificate {}", test.cert_path.display());
                eprintln!("{}", test_cert::trust_instructions(&test.cert_path));
            }
            let label = format!("TEST-SIGNED with {} (not for production)", test.cert_path.display());
            return Ok(Some(LoadedSigner { signer: test.signer, label }));
        }
        let source = match (&self.signature_in, self.key.key_source()?) {
            (Some(_), Some(_)) => bail!("--signature-in embeds an external signature: give no key with it"),
            (Some(signature), None) => KeySource::External {
                chain: self.key.cert.clone().context("--signature-in needs --cert with the certificate chain")?,
                signature: signature.clone(),
            },
            (None, Some(source)) => source,
            (None, None) => return Ok(None),
        };
        let signer = Signer::load(&source)?;
        let label = format!("signed by {} ({})", signer.leaf().tbs_certificate.subject, signer.describe());
        Ok(Some(LoadedSigner { signer, label }))
    }
}
