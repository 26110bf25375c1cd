//! Self-signed code-signing test certificates (`bpf2sys cert new`) and the cached test signer that
//! `cargo xtask build-driver` uses when no key is given.
//!
//! Test signing (driver-image-and-signing.md §4.2): with `bcdedit /set testsigning on`, Windows loads a driver
//! signed by any certificate the machine trusts; with memory integrity (HVCI) on, an unsigned driver is not
//! supported, so the default is test-signed, never unsigned. The key is RSA (kernel code signing is RSA-only),
//! generated with `rsa` and handed to rcgen as PKCS#8 (rcgen's ring backend cannot generate RSA keys:
//! toolchain-notes.md §4).

use crate::error::SigningError;
use crate::keys::{load_pem_chain, parse_private_key_pem, RsaKeySigner, Signer, MAX_RSA_BITS, MIN_RSA_BITS};
use bpf2sys_files::{write_atomically, write_atomically_with, WriteOptions};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::rand_core::{OsRng, RngCore};
use rsa::RsaPrivateKey;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// File names of the cached test signer inside its directory.
pub const TEST_KEY_FILE: &str = "bpf2sys-test-signing.key.pem";
pub const TEST_CERT_FILE: &str = "bpf2sys-test-signing.cert.pem";

/// The longest validity the CA/Browser Forum Code Signing Baseline Requirements allow a publicly-trusted
/// subscriber code-signing certificate (§6.3.2, 460 days since ballot CSC-31). A test certificate is not bound
/// by it, but one that outlives it is not what a CA would issue, so `bpf2sys cert new` warns above it.
pub const CABF_MAX_CODE_SIGNING_DAYS: u32 = 460;

/// Parameters of a new test certificate.
#[derive(Debug, Clone)]
pub struct TestCertificateParams {
    pub common_name: String,
    pub rsa_bits: usize,
    pub valid_days: u32,
}

impl Default for TestCertificateParams {
    fn default() -> Self {
        TestCertificateParams {
            common_name: "bpf2sys test signing (NOT FOR PRODUCTION)".into(),
            rsa_bits: 3072,
            valid_days: CABF_MAX_CODE_SIGNING_DAYS,
        }
    }
}

/// A newly made key and certificate, both PEM.
#[derive(Debug, Clone)]
pub struct GeneratedCertificate {
    pub key_pem: String,
    pub cert_pem: String,
}

/// Generates an RSA key and a self-signed certificate with the Code Signing EKU and digitalSignature key usage
/// (signify and Windows reject a code-signing certificate without it: toolchain-notes.md §4 pitfall 2).
pub fn generate(params: &TestCertificateParams) -> Result<GeneratedCertificate, SigningError> {
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&params.rsa_bits) {
        return Err(SigningError::RsaKeySize { bits: params.rsa_bits });
    }
    if params.valid_days < 1 {
        // A certificate valid for less than a day expires before it can be copied to a test machine.
        return Err(SigningError::CertificateGeneration(format!(
            "a validity of {} days is too short: give at least 1 day",
            params.valid_days
        )));
    }
    let gen_err = |e: &dyn std::fmt::Display| SigningError::CertificateGeneration(e.to_string());
    let key = RsaPrivateKey::new(&mut OsRng, params.rsa_bits).map_err(|e| gen_err(&e))?;
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| gen_err(&e))?.to_string();
    let key_pair =
        rcgen::KeyPair::from_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256).map_err(|e| gen_err(&e))?;
    let mut cert_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| gen_err(&e))?;
    cert_params.distinguished_name = rcgen::DistinguishedName::new();
    cert_params.distinguished_name.push(rcgen::DnType::CommonName, params.common_name.as_str());
    cert_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    cert_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    // A unique positive serial: verifiers find the signer by issuer+serial (toolchain-notes.md §4 pitfall 5).
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    cert_params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
    // Backdate an hour to tolerate clock skew between the build host and the test machine.
    cert_params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 3600).map_err(|e| gen_err(&e))?;
    cert_params.not_after =
        time::OffsetDateTime::from_unix_timestamp(now + params.valid_days as i64 * 86_400).map_err(|e| gen_err(&e))?;
    let cert = cert_params.self_signed(&key_pair).map_err(|e| gen_err(&e))?;
    Ok(GeneratedCertificate { key_pem, cert_pem: cert.pem() })
}

/// Writes a generated key (mode 0600 on Unix) and certificate, each atomically.
pub fn write_generated(
    generated: &GeneratedCertificate,
    key_path: &Path,
    cert_path: &Path,
) -> Result<(), SigningError> {
    // 0600 from creation: a private key is never readable by others, not even between the write and a chmod.
    write_atomically_with(
        key_path,
        generated.key_pem.as_bytes(),
        &WriteOptions { mode: Some(0o600), ..Default::default() },
    )?;
    Ok(write_atomically(cert_path, generated.cert_pem.as_bytes())?)
}

/// The steps to trust a test certificate on a Windows test machine (printed by `bpf2sys cert new` and by
/// `build-driver` when it creates the cached one).
pub fn trust_instructions(cert_path: &Path) -> String {
    let name = cert_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(
        "To load drivers signed with this test certificate on a Windows test machine (elevated prompt):\n\
         1. copy {name} to the machine\n\
         2. certutil -addstore Root {name}\n\
         3. certutil -addstore TrustedPublisher {name}\n\
         4. bcdedit /set testsigning on   (Secure Boot must be off to change it)\n\
         5. reboot; the desktop shows \"Test Mode\".\n\
         With memory integrity (HVCI) on, Windows requires test-signed drivers: unsigned ones are not supported.\n\
         Production drivers must be signed through Microsoft (attestation or WHQL), not with this certificate."
    )
}

/// The cached test signer of a build directory.
pub struct TestSigner {
    pub signer: Signer,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    /// True when this call created the certificate (print [`trust_instructions`] then).
    pub created: bool,
}

/// Loads `<dir>/bpf2sys-test-signing.{key,cert}.pem`, creating them once if absent.
pub fn load_or_create(dir: &Path) -> Result<TestSigner, SigningError> {
    let key_path = dir.join(TEST_KEY_FILE);
    let cert_path = dir.join(TEST_CERT_FILE);
    let created = !(key_path.exists() && cert_path.exists());
    if created {
        std::fs::create_dir_all(dir).map_err(|e| SigningError::io(dir, e))?;
        let generated = generate(&TestCertificateParams::default())?;
        write_generated(&generated, &key_path, &cert_path)?;
    }
    let key_text = std::fs::read_to_string(&key_path).map_err(|e| SigningError::io(&key_path, e))?;
    let key = parse_private_key_pem(&key_text, &key_path, None)?;
    let chain = load_pem_chain(&cert_path)?;
    let signer = Signer::new(chain, Box::new(RsaKeySigner::new(key, format!("test key {}", key_path.display()))?))?;
    Ok(TestSigner { signer, key_path, cert_path, created })
}
