//! PKCS#11 signing (HSMs, smart cards, SoftHSM2) through `cryptoki`: the private key never leaves the token.
//!
//! The token signs with `CKM_RSA_PKCS` over a DER DigestInfo(SHA-256, digest) that we build, so the token only
//! needs raw PKCS#1 v1.5, the mechanism every RSA token implements, and the digest is computed here like for every
//! other signer. The certificate comes from a file or from a certificate object with the key's label on the token.

use crate::error::SigningError;
use crate::keys::{PasswordSource, RawSigner, Signer};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use der::Decode;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use x509_cert::Certificate;

/// DER prefix of DigestInfo { sha256, NULL } (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];

/// Where the key lives on a PKCS#11 token.
#[derive(Debug, Clone)]
pub struct Pkcs11KeySpec {
    /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// Token label (CKA_LABEL of the token, as `softhsm2-util --show-slots` prints it).
    pub token_label: String,
    /// CKA_LABEL of the private key (and of its certificate object, when no certificate file is given).
    pub key_label: String,
    /// User PIN source.
    pub pin: PasswordSource,
}

struct TokenKey {
    session: Session,
    key: ObjectHandle,
    // Keeps the library loaded for as long as the session lives.
    _context: Pkcs11,
}

/// A private key on a PKCS#11 token, logged in for the lifetime of this value.
pub struct Pkcs11Signer {
    token: Mutex<TokenKey>,
    description: String,
}

fn p11(what: &str) -> impl Fn(cryptoki::error::Error) -> SigningError + '_ {
    move |e| SigningError::Pkcs11(format!("{what}: {e}"))
}

impl Pkcs11Signer {
    /// Opens the module, finds the token by label, logs in and finds the private key by label.
    /// Returns the signer and, if the token holds one with the same label, its certificate.
    pub fn open(spec: &Pkcs11KeySpec) -> Result<(Self, Option<Certificate>), SigningError> {
        let context = Pkcs11::new(&spec.module)
            .map_err(|e| SigningError::Pkcs11(format!("cannot load module {}: {e}", spec.module.display())))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another user of the module in this process initialised it already; sessions are still independent.
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(p11("C_Initialize")(e)),
        }
        let mut labels = Vec::new();
        let mut found = None;
        for slot in context.get_slots_with_token().map_err(p11("C_GetSlotList"))? {
            let info = context.get_token_info(slot).map_err(p11("C_GetTokenInfo"))?;
            let label = info.label().trim_end().to_string();
            if label == spec.token_label {
                found = Some(slot);
                break;
            }
            labels.push(label);
        }
        let slot = found.ok_or_else(|| {
            SigningError::Pkcs11(format!("no token labelled {:?} (tokens present: {labels:?})", spec.token_label))
        })?;
        let session = context.open_ro_session(slot).map_err(p11("C_OpenSession"))?;
        let pin = AuthPin::from(spec.pin.read()?);
        match session.login(UserType::User, Some(&pin)) {
            // Login state is per application and token: another live session of this process already logged in.
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(p11("C_Login (wrong PIN?)")(e)),
        }
        let keys = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(spec.key_label.as_bytes().to_vec()),
            ])
            .map_err(p11("C_FindObjects"))?;
        let key = match keys.as_slice() {
            [key] => *key,
            [] => {
                return Err(SigningError::Pkcs11(format!(
                    "no private key labelled {:?} on token {:?}",
                    spec.key_label, spec.token_label
                )))
            }
            _ => {
                return Err(SigningError::Pkcs11(format!(
                    "{} private keys labelled {:?}; labels must be unique",
                    keys.len(),
                    spec.key_label
                )))
            }
        };
        let key_type = session.get_attributes(key, &[AttributeType::KeyType]).map_err(p11("C_GetAttributeValue"))?;
        if let Some(Attribute::KeyType(kind)) = key_type.first() {
            if *kind == KeyType::EC {
                return Err(SigningError::EcdsaNotSupported { curve: "PKCS#11 EC key".into() });
            }
            if *kind != KeyType::RSA {
                return Err(SigningError::UnsupportedKeyAlgorithm { oid: format!("PKCS#11 key type {kind}") });
            }
        }
        let certificate = Self::find_certificate(&session, &spec.key_label)?;
        let description = format!("PKCS#11 token {:?} key {:?}", spec.token_label, spec.key_label);
        Ok((Pkcs11Signer { token: Mutex::new(TokenKey { session, key, _context: context }), description }, certificate))
    }

    fn find_certificate(session: &Session, label: &str) -> Result<Option<Certificate>, SigningError> {
        let handles = session
            .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE), Attribute::Label(label.as_bytes().to_vec())])
            .map_err(p11("C_FindObjects (certificate)"))?;
        let Some(handle) = handles.first() else { return Ok(None) };
        let values = session.get_attributes(*handle, &[AttributeType::Value]).map_err(p11("C_GetAttributeValue"))?;
        match values.first() {
            Some(Attribute::Value(der_bytes)) => Certificate::from_der(der_bytes)
                .map(Some)
                .map_err(|e| SigningError::Pkcs11(format!("certificate object {label:?} does not parse: {e}"))),
            _ => Ok(None),
        }
    }
}

impl RawSigner for Pkcs11Signer {
    fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SigningError> {
        let mut digest_info = SHA256_DIGEST_INFO_PREFIX.to_vec();
        digest_info.extend_from_slice(digest);
        let token = self.token.lock().map_err(|_| SigningError::Pkcs11("token session poisoned".into()))?;
        token.session.sign(&Mechanism::RsaPkcs, token.key, &digest_info).map_err(p11("C_Sign"))
    }
    fn describe(&self) -> String {
        self.description.clone()
    }
}

impl Signer {
    /// A signer whose key is on a PKCS#11 token. `chain_path` gives the certificate chain; without it the token
    /// must hold a certificate object labelled like the key.
    pub fn from_pkcs11(spec: &Pkcs11KeySpec, chain_path: Option<&Path>) -> Result<Self, SigningError> {
        let (signer, token_cert) = Pkcs11Signer::open(spec)?;
        let chain = match (chain_path, token_cert) {
            (Some(path), _) => crate::keys::load_pem_chain(path)?,
            (None, Some(cert)) => vec![cert],
            (None, None) => {
                return Err(SigningError::Pkcs11(format!(
                    "no certificate file given and no certificate object labelled {:?} on the token",
                    spec.key_label
                )))
            }
        };
        Signer::new(chain, Box::new(signer))
    }
}
