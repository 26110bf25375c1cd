//! Authenticode signing of a PE32+ image (driver-image-and-signing.md §3).
//!
//! Input: unsigned (or, with `replace_existing`, signed) PE bytes, a [`Signer`], [`SignOptions`]. Output: the
//! signed image: zero padding to 8 bytes, one WIN_CERTIFICATE with a PKCS#7 SignedData (version 1, one
//! SignerInfo with rsaEncryption, signed attributes contentType, messageDigest, SpcSpOpusInfo,
//! SpcStatementType; optional RFC 3161 countersignature), the Certificate Table entry and a fresh checksum.
//!
//! The SignedData is assembled field by field rather than with `cms::builder`: Authenticode needs version 1 and
//! rsaEncryption (toolchain-notes.md §4 pitfalls 1 and 3), and the signature may come from an HSM or from a
//! different machine, so signing is a single "sign this SHA-256 digest" call on [`crate::keys::RawSigner`].
//!
//! Signed attributes carry no signing time (signtool adds no untrusted time either), so the bytes to be signed
//! are a pure function of the image and the options: that is what makes the two-step external flow
//! ([`digest_to_sign`] then [`sign_pe`] with an [`crate::keys::ExternalSignature`]) work.

use crate::error::SigningError;
use crate::keys::Signer;
use crate::pe::{self, PeLayout};
use crate::spc::{self, ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SHA256, ID_SIGNED_DATA, RSA_ENCRYPTION};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

/// How to sign.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// Program name for SpcSpOpusInfo (shown by Windows' signature UI).
    pub description: Option<String>,
    /// More-info URL for SpcSpOpusInfo.
    pub url: Option<String>,
    /// Embed SpcPeImagePageHashes V2 (SHA-256). Off by default: kernel CI does not require them (§3.4).
    pub page_hashes: bool,
    /// RFC 3161 time-stamp authority (http:// only) to countersign the signature.
    pub timestamp_url: Option<String>,
    /// Replace an existing certificate table instead of refusing to sign a signed image.
    pub replace_existing: bool,
}

/// The image prepared for signing: padded bytes plus the structures the signature covers.
struct Prepared {
    image: Vec<u8>,
    layout: PeLayout,
    indirect_data: Vec<u8>,
    signed_attrs: SignedAttributes,
    /// DER(SET OF signed attributes): what the RSA key signs.
    attrs_der: Vec<u8>,
    /// SHA-256 of `attrs_der`.
    attrs_digest: [u8; 32],
}

fn sha256_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid: ID_SHA256, parameters: Some(Any::null()) }
}

fn attribute(oid: der::asn1::ObjectIdentifier, value_der: &[u8]) -> Result<Attribute, SigningError> {
    Ok(Attribute { oid, values: SetOfVec::try_from(vec![Any::from_der(value_der)?])? })
}

fn prepare(input: &[u8], options: &SignOptions) -> Result<Prepared, SigningError> {
    let mut image = input.to_vec();
    let layout = PeLayout::parse(&image)?;
    if layout.is_signed() {
        if !options.replace_existing {
            let (offset, size) = layout.certificate_table;
            return Err(SigningError::AlreadySigned { offset, size });
        }
        pe::strip_certificate_table(&mut image, &layout)?;
    }
    pe::pad_to_8(&mut image);
    let layout = PeLayout::parse(&image)?;
    let image_digest = pe::authenticode_sha256(&image, &layout);
    let page_hashes = if options.page_hashes { Some(pe::page_hashes_sha256(&image, &layout)?) } else { None };
    let indirect_data = spc::spc_indirect_data_content(&image_digest, page_hashes.as_deref());

    // messageDigest covers the content octets of SpcIndirectDataContent, without its SEQUENCE tag and length
    // (§3.3; osslsigncode `sign_spc_indirect_data_content`).
    let content_octets = Any::from_der(&indirect_data)?;
    let message_digest = Sha256::digest(content_octets.value());
    let attrs = vec![
        attribute(ID_CONTENT_TYPE, &spc::SPC_INDIRECT_DATA_OBJID.to_der()?)?,
        attribute(ID_MESSAGE_DIGEST, &OctetString::new(message_digest.to_vec())?.to_der()?)?,
        attribute(
            spc::SPC_SP_OPUS_INFO_OBJID,
            &spc::spc_sp_opus_info(options.description.as_deref(), options.url.as_deref()),
        )?,
        attribute(spc::SPC_STATEMENT_TYPE_OBJID, &spc::spc_statement_type_individual())?,
    ];
    let signed_attrs: SignedAttributes = SetOfVec::try_from(attrs)?;
    // The signature covers the attributes re-encoded as a DER SET OF (RFC 5652 §5.4), not the [0] IMPLICIT form.
    let attrs_der = signed_attrs.to_der()?;
    let attrs_digest: [u8; 32] = Sha256::digest(&attrs_der).into();
    Ok(Prepared { image, layout, indirect_data, signed_attrs, attrs_der, attrs_digest })
}

/// Step one of external signing: the SHA-256 digest that an RSASSA-PKCS1-v1_5 (SHA-256) key must sign for this
/// image and these options. A cloud key service signs it as a pre-hashed SHA-256 digest.
pub fn digest_to_sign(input: &[u8], options: &SignOptions) -> Result<[u8; 32], SigningError> {
    Ok(prepare(input, options)?.attrs_digest)
}

/// Signs a PE32+ image. The result is verified against the leaf certificate's key before it is returned, so a
/// key that does not match the certificate, or an external signature made over other bytes, is an error.
pub fn sign_pe(input: &[u8], signer: &Signer, options: &SignOptions) -> Result<Vec<u8>, SigningError> {
    let prepared = prepare(input, options)?;
    let signature = signer.raw().sign_sha256_message(&prepared.attrs_der, &prepared.attrs_digest)?;
    if !signer.signature_matches(&prepared.attrs_der, &prepared.attrs_digest, &signature) {
        return Err(signer.raw().mismatch_error(signer.leaf().tbs_certificate.subject.to_string()));
    }
    let unsigned_attrs = match &options.timestamp_url {
        Some(url) => {
            let token = crate::timestamp::request_timestamp(url, &signature)?;
            Some(SetOfVec::try_from(vec![attribute(spc::SPC_RFC3161_OBJID, &token)?])?)
        }
        None => None,
    };
    let leaf = signer.leaf();
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: leaf.tbs_certificate.issuer.clone(),
            serial_number: leaf.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256_alg(),
        signed_attrs: Some(prepared.signed_attrs),
        signature_algorithm: AlgorithmIdentifierOwned { oid: RSA_ENCRYPTION, parameters: Some(Any::null()) },
        signature: OctetString::new(signature)?,
        unsigned_attrs,
    };
    let mut certificates = Vec::new();
    for cert in signer.chain() {
        certificates.push(CertificateChoices::Certificate(cert.clone()));
    }
    let signed_data = SignedData {
        // PKCS#7 v1.5 as Authenticode defines it: version 1 even though eContentType is not id-data.
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256_alg()])?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: spc::SPC_INDIRECT_DATA_OBJID,
            // [0] EXPLICIT followed by the SpcIndirectDataContent SEQUENCE itself, not an OCTET STRING (§3.3).
            econtent: Some(Any::from_der(&prepared.indirect_data)?),
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(certificates)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
    };
    let content_info = ContentInfo { content_type: ID_SIGNED_DATA, content: Any::from_der(&signed_data.to_der()?)? };
    let pkcs7 = content_info.to_der()?;
    let mut image = prepared.image;
    pe::append_certificate_table(&mut image, &prepared.layout, &pkcs7)?;
    Ok(image)
}
