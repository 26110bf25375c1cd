//! Errors of the signing crate: every variant names what is wrong and, where it applies, where.

use std::path::PathBuf;

/// Why a PE image could not be read, signed or loaded with a key.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("malformed PE image: {0}")]
    MalformedPe(String),
    #[error("unsupported PE image: {0}")]
    UnsupportedPe(String),
    #[error(
        "the image already carries a certificate table ({size} bytes at file offset {offset:#x}); \
         remove it or ask to replace the existing signature"
    )]
    AlreadySigned { offset: u32, size: u32 },
    #[error(
        "the signing key is ECDSA ({curve}); Windows kernel-mode code signing needs an RSA key (2048-4096 bits): \
         the Microsoft Trusted Root Program states that code signing does not support ECC"
    )]
    EcdsaNotSupported { curve: String },
    #[error("unsupported signing key algorithm {oid}; Windows kernel-mode code signing needs an RSA key")]
    UnsupportedKeyAlgorithm { oid: String },
    #[error("RSA key of {bits} bits is outside the supported range 2048-4096 bits")]
    RsaKeySize { bits: usize },
    #[error("the private key does not belong to the signing certificate ({subject})")]
    KeyCertificateMismatch { subject: String },
    #[error("no certificate given: the signer needs its certificate chain (leaf first)")]
    NoCertificate,
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    #[error("password: {0}")]
    Password(String),
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    #[error(
        "the external signature does not verify against the signing certificate's key over this image's \
         signed attributes (was it made for a different image, different sign options, or a different key?)"
    )]
    ExternalSignatureMismatch,
    #[error("timestamp server {url}: {message}")]
    Timestamp { url: String, message: String },
    #[error("certificate generation: {0}")]
    CertificateGeneration(String),
    #[error("ASN.1 encoding: {0}")]
    Encoding(String),
    #[error("RSA signing failed: {0}")]
    Rsa(String),
    #[error(transparent)]
    File(#[from] bpf2sys_files::FileError),
}

impl From<der::Error> for SigningError {
    fn from(e: der::Error) -> Self {
        SigningError::Encoding(e.to_string())
    }
}

impl SigningError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SigningError::Io { path: path.into(), source }
    }
}
