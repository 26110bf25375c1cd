//! Authenticode signing and verification of the PE32+ driver images bpf2sys produces.
//!
//! ```text
//! .sys bytes ─► pe (layout, checksum, image hash, page hashes)
//!            ─► spc (SpcIndirectDataContent) ─► sign (SignedData v1, signed attributes, RawSigner) ─► timestamp
//!            ─► WIN_CERTIFICATE appended, checksum recomputed ─► signed .sys
//! signed .sys ─► verify (digest, messageDigest, RSA signature, chain, page hashes, timestamp, checksum) ─► lint S1–S7
//! ```
//!
//! Entry points: [`sign_pe`] with a [`Signer`] (PEM, PFX, PKCS#11 or an external signature) and [`SignOptions`];
//! [`digest_to_sign`] for the two-step external flow; [`verify_pe`]; [`lint::check`]; [`test_cert::load_or_create`]
//! for the cached test signer. Format: ../shared/docs/driver-image-and-signing.md §3; stack and pitfalls:
//! ../shared/docs/toolchain-notes.md §4.

pub mod error;
pub mod keys;
pub mod lint;
pub mod pe;
pub mod pkcs11;
pub mod sign;
pub mod spc;
pub mod test_cert;
pub mod timestamp;
pub mod verify;

pub use error::SigningError;
pub use keys::{ExternalSignature, KeySource, PasswordSource, RawSigner, Signer};
pub use pkcs11::Pkcs11KeySpec;
pub use sign::{digest_to_sign, sign_pe, SignOptions};
pub use verify::{verify_pe, VerificationReport, VerifyOptions};
