//! Signers: a certificate chain plus something that makes an RSA PKCS#1 v1.5 signature over a SHA-256 digest.
//!
//! Sources: an in-memory RSA key (PEM PKCS#8/PKCS#1, encrypted PKCS#8, PFX/PKCS#12), a PKCS#11 token
//! ([`crate::pkcs11`]), or a signature made elsewhere ([`ExternalSignature`], the two-step flow). Passwords come
//! from an environment variable or a file ([`PasswordSource`]), never from the command line.
//!
//! Windows kernel code signing accepts RSA only (driver-image-and-signing.md §3.3), so every signer is checked
//! here: RSA, 2048–4096 bits; an ECDSA certificate or key is refused with that reason.

use crate::error::SigningError;
use crate::spc::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION};
use der::{Decode, Encode};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use x509_cert::Certificate;

pub const MIN_RSA_BITS: usize = 2048;
pub const MAX_RSA_BITS: usize = 4096;

/// Produces an RSASSA-PKCS1-v1_5 signature over an already computed SHA-256 digest.
pub trait RawSigner: Send + Sync {
    fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SigningError>;
    /// Signs `message`, whose SHA-256 is `digest`. PKCS#1 v1.5 over SHA-256 is deterministic (RFC 8017 §8.2.1),
    /// so this is the same signature as [`RawSigner::sign_sha256_digest`]; a signer that can only hash for
    /// itself (ring's, the fast software path) needs the message, HSMs and external signatures need the digest.
    fn sign_sha256_message(&self, message: &[u8], digest: &[u8; 32]) -> Result<Vec<u8>, SigningError> {
        let _ = message;
        self.sign_sha256_digest(digest)
    }
    /// A short description for messages ("RSA key from key.pem", "PKCS#11 token X key Y").
    fn describe(&self) -> String;
    /// The error to report when the signature does not verify against the leaf certificate's key.
    fn mismatch_error(&self, certificate_subject: String) -> SigningError {
        SigningError::KeyCertificateMismatch { subject: certificate_subject }
    }
}

/// A software RSA private key.
///
/// Signing goes through `ring` (constant-time assembly Montgomery arithmetic: about 5x faster than the `rsa`
/// crate for RSA-2048), which takes the key as PKCS#8 DER and hashes the message itself. The `rsa` crate key stays
/// for what ring cannot do: signing a bare digest ([`RawSigner::sign_sha256_digest`]) and keys ring refuses to
/// load (ring accepts 2048–4096-bit moduli with a public exponent of at least 65537 and checks the CRT values).
pub struct RsaKeySigner {
    key: RsaPrivateKey,
    fast: Option<ring::signature::RsaKeyPair>,
    random: ring::rand::SystemRandom,
    origin: String,
}

impl RsaKeySigner {
    pub fn new(key: RsaPrivateKey, origin: impl Into<String>) -> Result<Self, SigningError> {
        check_rsa_bits(key.size() * 8)?;
        let fast = key.to_pkcs8_der().ok().and_then(|der| ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).ok());
        Ok(RsaKeySigner { key, fast, random: ring::rand::SystemRandom::new(), origin: origin.into() })
    }

    /// Whether signing takes the fast (ring) path for this key.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// The signature the `rsa` crate makes over `digest`: the reference the fast path is tested against.
    pub fn sign_sha256_digest_reference(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SigningError> {
        self.key.sign(Pkcs1v15Sign::new::<Sha256>(), digest).map_err(|e| SigningError::Rsa(e.to_string()))
    }
}

impl RawSigner for RsaKeySigner {
    fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SigningError> {
        self.sign_sha256_digest_reference(digest)
    }
    fn sign_sha256_message(&self, message: &[u8], digest: &[u8; 32]) -> Result<Vec<u8>, SigningError> {
        let Some(pair) = &self.fast else {
            return self.sign_sha256_digest_reference(digest);
        };
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(&ring::signature::RSA_PKCS1_SHA256, &self.random, message, &mut signature)
            .map_err(|_| SigningError::Rsa("ring could not sign with the RSA key".into()))?;
        Ok(signature)
    }
    fn describe(&self) -> String {
        self.origin.clone()
    }
}

/// A signature produced outside this process (second step of `--digest-out` / `--signature-in`).
pub struct ExternalSignature {
    pub signature: Vec<u8>,
    pub origin: String,
}

impl RawSigner for ExternalSignature {
    fn sign_sha256_digest(&self, _digest: &[u8; 32]) -> Result<Vec<u8>, SigningError> {
        // The caller verifies it against the certificate's key over the digest it computed itself.
        Ok(self.signature.clone())
    }
    fn describe(&self) -> String {
        self.origin.clone()
    }
    fn mismatch_error(&self, _certificate_subject: String) -> SigningError {
        SigningError::ExternalSignatureMismatch
    }
}

/// A certificate chain (leaf first) and the key that signs for the leaf.
pub struct Signer {
    chain: Vec<Certificate>,
    key: Box<dyn RawSigner>,
    public_key: RsaPublicKey,
}

impl Signer {
    /// Builds a signer; refuses non-RSA certificates and key sizes outside 2048–4096 bits.
    pub fn new(chain: Vec<Certificate>, key: Box<dyn RawSigner>) -> Result<Self, SigningError> {
        let leaf = chain.first().ok_or(SigningError::NoCertificate)?;
        let public_key = rsa_public_key(leaf)?;
        Ok(Signer { chain, key, public_key })
    }

    pub fn leaf(&self) -> &Certificate {
        &self.chain[0]
    }
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public_key
    }

    /// Whether `signature` is the leaf key's RSASSA-PKCS1-v1_5 SHA-256 signature over `message`, whose SHA-256 is
    /// `digest`. ring checks it first (its public-key operation is several times faster than the `rsa` crate's,
    /// which matters for the ≤ 1 ms signing budget); only when ring says no (a mismatch, or an exponent ring does
    /// not accept) does the `rsa` crate decide, so exactly the signatures it accepted before are accepted.
    pub fn signature_matches(&self, message: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
        let spki = &self.leaf().tbs_certificate.subject_public_key_info;
        let fast = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            spki.subject_public_key.raw_bytes(),
        );
        fast.verify(message, signature).is_ok()
            || self.public_key.verify(Pkcs1v15Sign::new::<Sha256>(), digest, signature).is_ok()
    }
    pub fn describe(&self) -> String {
        self.key.describe()
    }
    pub(crate) fn raw(&self) -> &dyn RawSigner {
        self.key.as_ref()
    }

    /// Loads a PEM private key and a PEM certificate chain (leaf first).
    pub fn from_pem_files(
        key_path: &Path,
        chain_path: &Path,
        password: Option<&PasswordSource>,
    ) -> Result<Self, SigningError> {
        let chain = load_pem_chain(chain_path)?;
        let key_text = std::fs::read_to_string(key_path).map_err(|e| SigningError::io(key_path, e))?;
        let key = parse_private_key_pem(&key_text, key_path, password)?;
        Signer::new(chain, Box::new(RsaKeySigner::new(key, format!("RSA key from {}", key_path.display()))?))
    }

    /// Loads a PFX/PKCS#12 file (OpenSSL 3 AES or legacy 3DES/RC2): the key and the chain stored with it.
    pub fn from_pfx_file(path: &Path, password: &PasswordSource) -> Result<Self, SigningError> {
        let data = std::fs::read(path).map_err(|e| SigningError::io(path, e))?;
        let password = password.read()?;
        let key_file = |message: String| SigningError::KeyFile { path: path.to_owned(), message };
        let store =
            p12_keystore::KeyStore::from_pkcs12(&data, &password).map_err(|e| key_file(pkcs12_error_message(&e)))?;
        let (_alias, entry) =
            store.private_key_chain().ok_or_else(|| key_file("no private key entry in the PKCS#12 file".into()))?;
        let mut chain = Vec::new();
        for cert in entry.chain() {
            chain.push(
                Certificate::from_der(cert.as_der())
                    .map_err(|e| key_file(format!("certificate in PKCS#12 does not parse: {e}")))?,
            );
        }
        order_chain_leaf_first(&mut chain);
        let key = parse_pkcs8_der(entry.key(), path)?;
        Signer::new(chain, Box::new(RsaKeySigner::new(key, format!("RSA key from {}", path.display()))?))
    }
}

fn check_rsa_bits(bits: usize) -> Result<(), SigningError> {
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(SigningError::RsaKeySize { bits });
    }
    Ok(())
}

/// The RSA public key of a certificate, refusing ECDSA and other algorithms and sizes outside 2048–4096 bits.
pub fn rsa_public_key(cert: &Certificate) -> Result<RsaPublicKey, SigningError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid == ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .map(|oid| curve_name(&oid))
            .unwrap_or_else(|| "unknown curve".into());
        return Err(SigningError::EcdsaNotSupported { curve });
    }
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(SigningError::UnsupportedKeyAlgorithm { oid: spki.algorithm.oid.to_string() });
    }
    let der = spki.to_der()?;
    let key = <RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&der)
        .map_err(|e| SigningError::Encoding(format!("certificate RSA public key: {e}")))?;
    check_rsa_bits(key.size() * 8)?;
    Ok(key)
}

fn curve_name(oid: &der::asn1::ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => "P-256".into(),
        "1.3.132.0.34" => "P-384".into(),
        "1.3.132.0.35" => "P-521".into(),
        other => other.to_string(),
    }
}

/// Puts the certificate whose subject issues no other certificate in the set (the leaf) first.
fn order_chain_leaf_first(chain: &mut [Certificate]) {
    let is_issuer_of_another = |i: usize| {
        chain.iter().enumerate().any(|(j, other)| {
            j != i
                && other.tbs_certificate.issuer == chain[i].tbs_certificate.subject
                && other.tbs_certificate.subject != other.tbs_certificate.issuer
        })
    };
    if let Some(leaf) = (0..chain.len()).find(|&i| !is_issuer_of_another(i)) {
        chain.swap(0, leaf);
    }
}

/// Reads every CERTIFICATE block of a PEM file (leaf first), or a single DER certificate.
pub fn load_pem_chain(path: &Path) -> Result<Vec<Certificate>, SigningError> {
    let data = std::fs::read(path).map_err(|e| SigningError::io(path, e))?;
    let chain = if data.starts_with(b"-----") || data.iter().take(64).all(|b| b.is_ascii()) {
        Certificate::load_pem_chain(&data).map_err(|e| SigningError::KeyFile {
            path: path.to_owned(),
            message: format!("not a PEM certificate chain: {e}"),
        })?
    } else {
        vec![Certificate::from_der(&data).map_err(|e| SigningError::KeyFile {
            path: path.to_owned(),
            message: format!("not a DER certificate: {e}"),
        })?]
    };
    if chain.is_empty() {
        return Err(SigningError::KeyFile { path: path.to_owned(), message: "no CERTIFICATE block".into() });
    }
    Ok(chain)
}

fn parse_pkcs8_der(der_bytes: &[u8], path: &Path) -> Result<RsaPrivateKey, SigningError> {
    let info = pkcs8::PrivateKeyInfo::try_from(der_bytes).map_err(|e| SigningError::KeyFile {
        path: path.to_owned(),
        message: format!("not a PKCS#8 private key: {e}"),
    })?;
    if info.algorithm.oid == ID_EC_PUBLIC_KEY {
        let curve = info
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .map(|oid| curve_name(&oid))
            .unwrap_or_else(|| "unknown curve".into());
        return Err(SigningError::EcdsaNotSupported { curve });
    }
    if info.algorithm.oid != RSA_ENCRYPTION {
        return Err(SigningError::UnsupportedKeyAlgorithm { oid: info.algorithm.oid.to_string() });
    }
    RsaPrivateKey::from_pkcs8_der(der_bytes).map_err(|e| SigningError::KeyFile {
        path: path.to_owned(),
        message: format!("RSA private key does not parse: {e}"),
    })
}

/// Parses a PEM private key: PKCS#8 (`PRIVATE KEY`), encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, password
/// required) or PKCS#1 (`RSA PRIVATE KEY`). `EC PRIVATE KEY` is refused: kernel signing needs RSA.
pub fn parse_private_key_pem(
    text: &str,
    path: &Path,
    password: Option<&PasswordSource>,
) -> Result<RsaPrivateKey, SigningError> {
    let key_file = |message: String| SigningError::KeyFile { path: path.to_owned(), message };
    let (label, der_bytes) =
        der::pem::decode_vec(text.trim().as_bytes()).map_err(|e| key_file(format!("not a PEM file: {e}")))?;
    match label {
        "PRIVATE KEY" => parse_pkcs8_der(&der_bytes, path),
        "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(&der_bytes)
            .map_err(|e| key_file(format!("PKCS#1 RSA private key does not parse: {e}"))),
        "ENCRYPTED PRIVATE KEY" => {
            let password = password
                .ok_or_else(|| {
                    key_file("the key is encrypted: give its password through an environment variable or a file".into())
                })?
                .read()?;
            let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(der_bytes.as_slice())
                .map_err(|e| key_file(format!("encrypted PKCS#8 does not parse: {e}")))?;
            let document = encrypted
                .decrypt(password.as_bytes())
                .map_err(|e| key_file(format!("cannot decrypt the key (wrong password?): {e}")))?;
            parse_pkcs8_der(document.as_bytes(), path)
        }
        "EC PRIVATE KEY" => Err(SigningError::EcdsaNotSupported { curve: "SEC1 EC key".into() }),
        other => Err(key_file(format!("unexpected PEM block {other:?}; expected a PRIVATE KEY"))),
    }
}

/// Where a password or PIN comes from. Never the command line: it would show in `ps` and shell history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The value of an environment variable.
    Env(String),
    /// The first line of a file.
    File(PathBuf),
}

impl PasswordSource {
    pub fn read(&self) -> Result<String, SigningError> {
        match self {
            PasswordSource::Env(name) => std::env::var(name)
                .map_err(|_| SigningError::Password(format!("environment variable {name} is not set (or not UTF-8)"))),
            PasswordSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| SigningError::io(path, e))?;
                Ok(text.lines().next().unwrap_or("").to_string())
            }
        }
    }
}

/// Where a signing key comes from: what the `bpf2sys sign` command line and `cargo xtask build-driver` accept.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A PEM private key (PKCS#8, PKCS#1 or encrypted PKCS#8) and a PEM certificate chain, leaf first.
    Pem { key: PathBuf, chain: PathBuf, password: Option<PasswordSource> },
    /// A PFX/PKCS#12 file holding the key and its chain.
    Pfx { path: PathBuf, password: PasswordSource },
    /// A key on a PKCS#11 token; the chain from a file or from the token.
    Pkcs11 { spec: crate::pkcs11::Pkcs11KeySpec, chain: Option<PathBuf> },
    /// A raw RSASSA-PKCS1-v1_5 signature produced elsewhere over [`crate::digest_to_sign`]'s digest.
    External { chain: PathBuf, signature: PathBuf },
}

impl Signer {
    /// Loads the signer a [`KeySource`] describes.
    pub fn load(source: &KeySource) -> Result<Self, SigningError> {
        match source {
            KeySource::Pem { key, chain, password } => Signer::from_pem_files(key, chain, password.as_ref()),
            KeySource::Pfx { path, password } => Signer::from_pfx_file(path, password),
            KeySource::Pkcs11 { spec, chain } => Signer::from_pkcs11(spec, chain.as_deref()),
            KeySource::External { chain, signature } => {
                let chain = load_pem_chain(chain)?;
                let bytes = std::fs::read(signature).map_err(|e| SigningError::io(signature, e))?;
                let origin = format!("external signature {}", signature.display());
                Signer::new(chain, Box::new(ExternalSignature { signature: bytes, origin }))
            }
        }
    }
}

/// What a PKCS#12 parse failure means to the user, in words (the library's errors are type names).
fn pkcs12_error_message(error: &p12_keystore::error::Error) -> String {
    use p12_keystore::error::Error;
    match error {
        // RFC 7292 §5: the MAC over the contents is keyed by the password, so a mismatch is a wrong password (or
        // a file altered after it was written).
        Error::MacError(_) => "wrong password (the PKCS#12 integrity check fails)".into(),
        Error::DerError(e) => format!("not a PFX/PKCS#12 file (ASN.1: {e})"),
        Error::InvalidVersion => "not a PFX/PKCS#12 file (unsupported PFX version)".into(),
        Error::IoError(e) => format!("cannot read: {e}"),
        Error::UnsupportedEncryptionScheme | Error::UnsupportedMacAlgorithm | Error::UnsupportedContentType => {
            format!("unsupported PKCS#12 protection: {}", error.to_string().to_lowercase())
        }
        Error::Pkcs5Error(_) | Error::UnpadError => {
            "cannot decrypt the PKCS#12 contents (wrong password or corrupt file)".into()
        }
        other => format!("malformed PFX/PKCS#12 file: {}", other.to_string().to_lowercase()),
    }
}
