//! Verification of an embedded Authenticode signature: everything a tampered or mis-signed driver can get wrong.
//!
//! Input: PE bytes and optional trust anchors. Output: a [`VerificationReport`] listing what was checked and every
//! problem found, each tagged with the lint rule of driver-image-and-signing.md §5.2 it breaks (S1–S7) or with
//! the chain/timestamp checks. Checks continue after a failure where they can, so a flipped byte is reported as
//! what it broke (image digest, signature, page hash…) and not only as a bad checksum.

use crate::keys::rsa_public_key;
use crate::pe::{self, PeLayout, WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA};
use crate::spc::{self, ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SHA256, ID_SIGNED_DATA};
use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier as Oid, OctetString};
use der::{Decode, Encode, Tagged};
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::fmt;
use std::time::{Duration, SystemTime};
use x509_cert::Certificate;

/// Which check a problem belongs to: the S-rules of driver-image-and-signing.md §5.2, plus trust checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// PE headers could not be parsed at all.
    Structure,
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
    /// The certificate chain to the given trust anchors, and certificate validity.
    Chain,
    /// The RFC 3161 countersignature.
    Timestamp,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Rule::Structure => "structure",
            Rule::S1 => "S1 certificate table",
            Rule::S2 => "S2 image digest",
            Rule::S3 => "S3 signed attributes",
            Rule::S4 => "S4 signature",
            Rule::S5 => "S5 page hashes",
            Rule::S6 => "S6 certificates",
            Rule::S7 => "S7 checksum",
            Rule::Chain => "chain",
            Rule::Timestamp => "timestamp",
        };
        f.write_str(name)
    }
}

/// One thing that is wrong with the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

/// Trust anchors for [`verify_pe`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Roots the signer's chain must reach. Empty: the chain's internal signatures are checked, trust is not.
    pub trusted_cas: Vec<Certificate>,
    /// Roots the timestamp authority's certificate must reach. Empty: the token's signature is checked only
    /// against the certificate it carries.
    pub trusted_tsa_cas: Vec<Certificate>,
}

/// A verified (or not) timestamp.
#[derive(Debug, Clone)]
pub struct TimestampInfo {
    pub gen_time: SystemTime,
    pub tsa_subject: String,
}

/// What [`verify_pe`] found.
#[derive(Debug, Clone, Default)]
pub struct VerificationReport {
    pub problems: Vec<Problem>,
    /// Facts and non-fatal notes, in check order.
    pub notes: Vec<String>,
    /// Warnings (e.g. the leaf lacks the Code Signing EKU) that do not make the signature invalid.
    pub warnings: Vec<(Rule, String)>,
    pub signer_subject: Option<String>,
    /// The issuer named in the signer's certificate.
    pub signer_issuer: Option<String>,
    /// Subjects of the certificates the signature carries, signer first, then each issuer found among them.
    pub chain: Vec<String>,
    /// The image digest algorithm of SpcIndirectDataContent (`SHA-256` is the only one accepted).
    pub digest_algorithm: Option<String>,
    pub image_digest: Option<[u8; 32]>,
    pub page_hash_entries: Option<usize>,
    pub timestamp: Option<TimestampInfo>,
    /// True when the image has a certificate table at all.
    pub signed: bool,
}

impl VerificationReport {
    pub fn is_valid(&self) -> bool {
        self.signed && self.problems.is_empty()
    }
    fn fail(&mut self, rule: Rule, message: impl Into<String>) {
        self.problems.push(Problem { rule, message: message.into() });
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies the embedded Authenticode signature of a PE32+ image.
pub fn verify_pe(data: &[u8], options: &VerifyOptions) -> VerificationReport {
    let mut report = VerificationReport::default();
    let layout = match PeLayout::parse(data) {
        Ok(layout) => layout,
        Err(e) => {
            report.fail(Rule::Structure, e.to_string());
            return report;
        }
    };
    // S7 first: it holds for signed and unsigned images alike.
    let recorded = pe::recorded_checksum(data, &layout);
    let computed = pe::pe_checksum(data, layout.checksum_offset);
    if recorded != computed {
        report.fail(Rule::S7, format!("header CheckSum {recorded:#010x} but the file sums to {computed:#010x}"));
    }
    if !layout.is_signed() {
        report.fail(Rule::S1, "the image has no certificate table: it is not signed");
        return report;
    }
    report.signed = true;
    let Some(pkcs7) = check_certificate_table(data, &layout, &mut report) else {
        return report;
    };
    let signed_data = match parse_signed_data(pkcs7) {
        Ok(sd) => sd,
        Err(message) => {
            report.fail(Rule::S2, message);
            return report;
        }
    };
    check_content(data, &layout, &signed_data, &mut report);
    let Some(signer_info) = single_signer(&signed_data, &mut report) else {
        return report;
    };
    check_signed_attributes(&signed_data, signer_info, &mut report);
    let certificates: Vec<Certificate> = signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let leaf = find_signer_certificate(&certificates, &signer_info.sid);
    let Some(leaf) = leaf else {
        report.fail(Rule::S6, "the signer's certificate (issuer and serial of SignerInfo) is not in the signature");
        return report;
    };
    report.signer_subject = Some(leaf.tbs_certificate.subject.to_string());
    report.signer_issuer = Some(leaf.tbs_certificate.issuer.to_string());
    report.chain = carried_chain(leaf, &certificates);
    check_signature(leaf, signer_info, &mut report);
    check_code_signing_eku(leaf, &mut report);
    let timestamp_time = check_timestamp(signer_info, &options.trusted_tsa_cas, &mut report);
    let at = timestamp_time.unwrap_or_else(SystemTime::now);
    check_chain(leaf, &certificates, &options.trusted_cas, at, &mut report);
    report
}

/// The subjects from the signer up through the issuers the signature carries (stops at a self-issued
/// certificate or one whose issuer is not included; at most 16 links).
fn carried_chain(leaf: &Certificate, certificates: &[Certificate]) -> Vec<String> {
    let mut chain = vec![leaf.tbs_certificate.subject.to_string()];
    let mut current = leaf;
    while chain.len() < 16 && current.tbs_certificate.issuer != current.tbs_certificate.subject {
        let Some(issuer) = certificates.iter().find(|c| c.tbs_certificate.subject == current.tbs_certificate.issuer)
        else {
            break;
        };
        chain.push(issuer.tbs_certificate.subject.to_string());
        current = issuer;
    }
    chain
}

/// S1: one WIN_CERTIFICATE, revision 2.0, PKCS#7 type, 8-aligned, at EOF, directory size = rounded lengths.
fn check_certificate_table<'a>(data: &'a [u8], layout: &PeLayout, report: &mut VerificationReport) -> Option<&'a [u8]> {
    let (offset, size) = layout.certificate_table;
    if !offset.is_multiple_of(8) {
        report.fail(Rule::S1, format!("certificate table offset {offset:#x} is not 8-byte aligned"));
    }
    if offset as usize + size as usize != data.len() {
        report.fail(
            Rule::S1,
            format!(
                "certificate table {offset:#x}+{size:#x} does not end at the end of the file ({:#x}): bytes outside \
                 the signed ranges",
                data.len()
            ),
        );
    }
    let entries = match pe::certificate_entries(data, layout) {
        Ok(entries) => entries,
        Err(e) => {
            report.fail(Rule::S1, e.to_string());
            return None;
        }
    };
    let rounded: usize = entries.iter().map(|e| (e.length as usize).next_multiple_of(8)).sum();
    if rounded != size as usize {
        report.fail(
            Rule::S1,
            format!("directory size {size:#x} differs from the entries' 8-rounded lengths {rounded:#x}"),
        );
    }
    let Some(first) = entries.first() else {
        report.fail(Rule::S1, "certificate table is empty");
        return None;
    };
    if entries.len() > 1 {
        report.fail(Rule::S1, format!("{} WIN_CERTIFICATE entries; a driver carries exactly one", entries.len()));
    }
    if first.revision != WIN_CERT_REVISION_2_0 || first.certificate_type != WIN_CERT_TYPE_PKCS_SIGNED_DATA {
        report.fail(
            Rule::S1,
            format!(
                "WIN_CERTIFICATE revision {:#06x} type {:#06x}; expected 0x0200 (2.0) and 0x0002 (PKCS#7)",
                first.revision, first.certificate_type
            ),
        );
    }
    // dwLength includes the padding; the DER value itself says where the SignedData ends.
    let content = first.content;
    let der_len = (|| {
        let header = der::Header::decode(&mut der::SliceReader::new(content).ok()?).ok()?;
        let total = usize::try_from(header.length).ok()? + usize::try_from(header.encoded_len().ok()?).ok()?;
        (total <= content.len() && content[total..].iter().all(|&b| b == 0)).then_some(total)
    })();
    match der_len {
        Some(len) => Some(&content[..len]),
        None => {
            report.fail(Rule::S1, "WIN_CERTIFICATE content is not one DER value followed by zero padding");
            None
        }
    }
}

fn parse_signed_data(pkcs7: &[u8]) -> Result<SignedData, String> {
    let content_info = ContentInfo::from_der(pkcs7).map_err(|e| format!("PKCS#7 ContentInfo does not parse: {e}"))?;
    if content_info.content_type != ID_SIGNED_DATA {
        return Err(format!("PKCS#7 content type is {}, not signedData", content_info.content_type));
    }
    content_info.content.decode_as::<SignedData>().map_err(|e| format!("SignedData does not parse: {e}"))
}

/// S2: content types, SpcPeImageData, and the recomputed image digest. S5: page hashes.
fn check_content(data: &[u8], layout: &PeLayout, signed_data: &SignedData, report: &mut VerificationReport) {
    if signed_data.version != CmsVersion::V1 {
        report.fail(Rule::S2, format!("SignedData version {:?}; Authenticode uses version 1", signed_data.version));
    }
    let content = &signed_data.encap_content_info;
    if content.econtent_type != spc::SPC_INDIRECT_DATA_OBJID {
        report.fail(Rule::S2, format!("content type {} is not SpcIndirectDataContent", content.econtent_type));
        return;
    }
    let Some(econtent) = &content.econtent else {
        report.fail(Rule::S2, "SignedData carries no SpcIndirectDataContent");
        return;
    };
    let indirect = match econtent
        .to_der()
        .map_err(|e| e.to_string())
        .and_then(|d| spc::parse_indirect_data(&d).map_err(|e| e.to_string()))
    {
        Ok(indirect) => indirect,
        Err(e) => {
            report.fail(Rule::S2, format!("SpcIndirectDataContent: {e}"));
            return;
        }
    };
    if indirect.data_type != spc::SPC_PE_IMAGE_DATAOBJ {
        report.fail(Rule::S2, format!("SpcIndirectDataContent data type {} is not SpcPeImageData", indirect.data_type));
    }
    report.digest_algorithm = Some(if indirect.digest_algorithm == ID_SHA256 {
        "SHA-256".to_string()
    } else {
        indirect.digest_algorithm.to_string()
    });
    if indirect.digest_algorithm != ID_SHA256 {
        report.fail(Rule::S4, format!("image digest algorithm {} is not SHA-256", indirect.digest_algorithm));
        return;
    }
    let digest = pe::authenticode_sha256(data, layout);
    report.image_digest = Some(digest);
    if indirect.digest != digest {
        report.fail(
            Rule::S2,
            format!(
                "image digest mismatch: signed {} but the file hashes to {} (headers or section data changed)",
                hex(&indirect.digest),
                hex(&digest)
            ),
        );
    } else {
        report.notes.push(format!("image digest (SHA-256) {}", hex(&digest)));
    }
    if let Some((version, table)) = &indirect.page_hashes {
        check_page_hashes(data, layout, version, table, report);
    }
}

fn check_page_hashes(data: &[u8], layout: &PeLayout, version: &Oid, table: &[u8], report: &mut VerificationReport) {
    if *version != spc::SPC_PE_IMAGE_PAGE_HASHES_V2 {
        report.fail(Rule::S5, format!("page hashes of type {version}; only V2 (SHA-256) is supported"));
        return;
    }
    let expected = match pe::page_hashes_sha256(data, layout) {
        Ok(t) => t,
        Err(e) => {
            report.fail(Rule::S5, e.to_string());
            return;
        }
    };
    report.page_hash_entries = Some(table.len() / 36);
    if !table.len().is_multiple_of(36) || table.len() != expected.len() {
        report.fail(
            Rule::S5,
            format!(
                "page-hash table has {} bytes; the image needs {} ({} entries)",
                table.len(),
                expected.len(),
                expected.len() / 36
            ),
        );
        return;
    }
    for (signed, actual) in table.chunks(36).zip(expected.chunks(36)) {
        if signed != actual {
            let offset = u32::from_le_bytes([actual[0], actual[1], actual[2], actual[3]]);
            report.fail(Rule::S5, format!("page hash mismatch for the page at file offset {offset:#x}"));
            return;
        }
    }
    report.notes.push(format!("page hashes: {} entries verified", table.len() / 36));
}

fn single_signer<'a>(signed_data: &'a SignedData, report: &mut VerificationReport) -> Option<&'a SignerInfo> {
    let signers = signed_data.signer_infos.0.as_slice();
    if signers.len() != 1 {
        report.fail(Rule::S2, format!("{} SignerInfos; Authenticode has exactly one", signers.len()));
    }
    signers.first()
}

/// S3 (contentType, messageDigest) and S4 (digest algorithm).
fn check_signed_attributes(signed_data: &SignedData, signer: &SignerInfo, report: &mut VerificationReport) {
    if signer.version != CmsVersion::V1 {
        report.fail(Rule::S2, format!("SignerInfo version {:?}; Authenticode uses version 1", signer.version));
    }
    if signer.digest_alg.oid != ID_SHA256 || !null_or_absent(&signer.digest_alg) {
        report.fail(Rule::S4, format!("SignerInfo digest algorithm {} is not SHA-256", signer.digest_alg.oid));
    }
    let digest_algorithms = signed_data.digest_algorithms.as_slice();
    if digest_algorithms.len() != 1 || digest_algorithms[0].oid != ID_SHA256 || !null_or_absent(&digest_algorithms[0]) {
        let oids: Vec<String> = digest_algorithms.iter().map(|a| a.oid.to_string()).collect();
        report.fail(Rule::S4, format!("SignedData digestAlgorithms {oids:?}; expected exactly SHA-256"));
    }
    if !null_or_absent(&signer.signature_algorithm) {
        report.fail(Rule::S4, "signature algorithm parameters are not NULL");
    }
    let Some(attrs) = &signer.signed_attrs else {
        report.fail(Rule::S3, "SignerInfo has no signed attributes");
        return;
    };
    let find = |oid: Oid| attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.get(0));
    match find(ID_CONTENT_TYPE).map(|v| v.decode_as::<Oid>()) {
        Some(Ok(oid)) if oid == spc::SPC_INDIRECT_DATA_OBJID => {}
        Some(Ok(oid)) => report.fail(Rule::S3, format!("contentType attribute is {oid}, not SpcIndirectDataContent")),
        _ => report.fail(Rule::S3, "contentType signed attribute missing or malformed"),
    }
    let Some(econtent) = &signed_data.encap_content_info.econtent else { return };
    match find(ID_MESSAGE_DIGEST).map(|v| v.decode_as::<OctetString>()) {
        Some(Ok(md)) => {
            if md.as_bytes() != Sha256::digest(econtent.value()).as_slice() {
                report.fail(
                    Rule::S3,
                    "messageDigest attribute does not match the hash of SpcIndirectDataContent (the signed content \
                     was changed)",
                );
            }
        }
        _ => report.fail(Rule::S3, "messageDigest signed attribute missing or malformed"),
    }
}

fn null_or_absent(algorithm: &spki::AlgorithmIdentifierOwned) -> bool {
    algorithm.parameters.as_ref().is_none_or(|p| p.tag() == der::Tag::Null && p.value().is_empty())
}

fn find_signer_certificate<'a>(certificates: &'a [Certificate], sid: &SignerIdentifier) -> Option<&'a Certificate> {
    let SignerIdentifier::IssuerAndSerialNumber(id) = sid else { return None };
    certificates
        .iter()
        .find(|c| c.tbs_certificate.issuer == id.issuer && c.tbs_certificate.serial_number == id.serial_number)
}

/// S4: RSA key and a PKCS#1 v1.5 SHA-256 signature over the DER SET OF signed attributes.
fn check_signature(leaf: &Certificate, signer: &SignerInfo, report: &mut VerificationReport) {
    let key = match rsa_public_key(leaf) {
        Ok(key) => key,
        Err(e) => {
            report.fail(Rule::S4, e.to_string());
            return;
        }
    };
    let alg = signer.signature_algorithm.oid;
    if alg != spc::RSA_ENCRYPTION && alg != spc::SHA256_WITH_RSA {
        report.fail(Rule::S4, format!("signature algorithm {alg} is not RSA PKCS#1 v1.5"));
        return;
    }
    let Some(attrs) = &signer.signed_attrs else { return };
    let Ok(attrs_der) = attrs.to_der() else {
        report.fail(Rule::S3, "signed attributes do not re-encode");
        return;
    };
    let digest = Sha256::digest(&attrs_der);
    if key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, signer.signature.as_bytes()).is_err() {
        report.fail(
            Rule::S4,
            "RSA signature over the signed attributes does not verify with the signer certificate's key",
        );
    }
}

fn check_code_signing_eku(leaf: &Certificate, report: &mut VerificationReport) {
    let has = extended_key_usages(leaf).map(|ekus| ekus.contains(&spc::ID_KP_CODE_SIGNING));
    match has {
        Some(true) => {}
        Some(false) => report.warnings.push((Rule::S6, "signer certificate lacks the Code Signing EKU".into())),
        None => report.warnings.push((Rule::S6, "signer certificate has no extended key usage extension".into())),
    }
}

fn extended_key_usages(cert: &Certificate) -> Option<Vec<Oid>> {
    let ext = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE)?;
    let ekus = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()).ok()?;
    Some(ekus.0)
}

/// Verifies `cert`'s signature with `issuer`'s RSA key (sha256/384/512WithRSAEncryption).
pub fn verify_certificate_signature(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    let spki_der = issuer.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    let key = <RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&spki_der)
        .map_err(|_| format!("issuer {} has no RSA key", issuer.tbs_certificate.subject))?;
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let signature = cert.signature.as_bytes().ok_or("certificate signature BIT STRING has unused bits")?;
    if !null_or_absent(&cert.signature_algorithm) {
        return Err(format!(
            "certificate {} signature algorithm parameters are not NULL",
            cert.tbs_certificate.subject
        ));
    }
    let result = match cert.signature_algorithm.oid {
        spc::SHA256_WITH_RSA => key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&tbs), signature),
        spc::SHA384_WITH_RSA => key.verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(&tbs), signature),
        spc::SHA512_WITH_RSA => key.verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(&tbs), signature),
        other => return Err(format!("unsupported certificate signature algorithm {other}")),
    };
    result.map_err(|_| {
        format!("certificate {} is not signed by {}", cert.tbs_certificate.subject, issuer.tbs_certificate.subject)
    })
}

fn validity_problem(cert: &Certificate, at: SystemTime) -> Option<String> {
    let validity = &cert.tbs_certificate.validity;
    let not_before = validity.not_before.to_system_time();
    let not_after = validity.not_after.to_system_time();
    if at < not_before || at > not_after {
        return Some(format!(
            "certificate {} is not valid at the signing time (valid {} to {})",
            cert.tbs_certificate.subject, validity.not_before, validity.not_after
        ));
    }
    None
}

/// Builds a path from `leaf` through `pool` to one of `anchors`, checking each signature.
fn chain_to_anchor(leaf: &Certificate, pool: &[Certificate], anchors: &[Certificate]) -> Result<Vec<String>, String> {
    let mut current = leaf.clone();
    let mut path = vec![current.tbs_certificate.subject.to_string()];
    for _ in 0..16 {
        if anchors.iter().any(|a| a == &current) {
            return Ok(path);
        }
        let issuer_name = &current.tbs_certificate.issuer;
        if let Some(anchor) = anchors.iter().find(|a| &a.tbs_certificate.subject == issuer_name) {
            verify_certificate_signature(&current, anchor)?;
            path.push(anchor.tbs_certificate.subject.to_string());
            return Ok(path);
        }
        let next =
            pool.iter().find(|c| &c.tbs_certificate.subject == issuer_name && *c != &current).ok_or_else(|| {
                format!(
                    "no certificate for issuer {issuer_name} of {} in the signature or the trusted CAs",
                    current.tbs_certificate.subject
                )
            })?;
        verify_certificate_signature(&current, next)?;
        path.push(next.tbs_certificate.subject.to_string());
        current = next.clone();
    }
    Err("certificate chain longer than 16".into())
}

fn check_chain(
    leaf: &Certificate,
    pool: &[Certificate],
    anchors: &[Certificate],
    at: SystemTime,
    report: &mut VerificationReport,
) {
    if let Some(problem) = validity_problem(leaf, at) {
        report.fail(Rule::Chain, problem);
    }
    check_embedded_certificates(pool, anchors, report);
    if anchors.is_empty() {
        report.notes.push("chain not checked against a trust anchor (no CA given)".into());
        return;
    }
    match chain_to_anchor(leaf, pool, anchors) {
        Ok(path) => report.notes.push(format!("chain: {}", path.join(" <- "))),
        Err(e) => report.fail(Rule::Chain, e),
    }
}

/// S6: every certificate the signature carries must be intact: signed by its issuer when the issuer is carried or
/// trusted, by itself when self-issued. The embedded copies are outside the signed bytes, so this is what
/// detects a corrupted intermediate or root that trust checking against an external anchor would skip.
fn check_embedded_certificates(pool: &[Certificate], anchors: &[Certificate], report: &mut VerificationReport) {
    for cert in pool {
        let issuer_name = &cert.tbs_certificate.issuer;
        let issuer = if issuer_name == &cert.tbs_certificate.subject {
            Some(cert)
        } else {
            pool.iter().chain(anchors).find(|c| &c.tbs_certificate.subject == issuer_name)
        };
        match issuer {
            Some(issuer) => {
                if let Err(e) = verify_certificate_signature(cert, issuer) {
                    report.fail(Rule::S6, format!("embedded certificate is corrupt or forged: {e}"));
                }
            }
            // Given trust anchors, every embedded certificate must chain to them; without, an issuer that is not
            // embedded (a root left out, as signtool does) cannot be checked.
            None if !anchors.is_empty() => report.fail(
                Rule::Chain,
                format!(
                    "embedded certificate {} has issuer {issuer_name}, which is neither embedded nor trusted",
                    cert.tbs_certificate.subject
                ),
            ),
            None => report.warnings.push((
                Rule::S6,
                format!(
                    "embedded certificate {} cannot be checked: its issuer {issuer_name} is not embedded",
                    cert.tbs_certificate.subject
                ),
            )),
        }
    }
}

const ID_AA_SIGNING_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.12");
const ID_AA_SIGNING_CERTIFICATE_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");

/// RFC 3161 §2.4.1 requires the ESS signingCertificate(V2) attribute: a hash of the TSA certificate under the TSA's
/// signature. It binds the certificate carried in the token, which nothing else covers.
fn check_ess_signing_certificate(
    attrs: &cms::signed_data::SignedAttributes,
    tsa_cert: &Certificate,
) -> Result<(), String> {
    let cert_der = tsa_cert.to_der().map_err(|e| e.to_string())?;
    let find = |oid: Oid| attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.get(0));
    let (value, v2) = match (find(ID_AA_SIGNING_CERTIFICATE_V2), find(ID_AA_SIGNING_CERTIFICATE)) {
        (Some(v), _) => (v, true),
        (None, Some(v)) => (v, false),
        (None, None) => {
            return Err("timestamp token lacks the ESS signingCertificate attribute (RFC 3161 §2.4.1)".into())
        }
    };
    let parse = || -> der::Result<(Oid, Vec<u8>)> {
        let mut outer = der::SliceReader::new(value.value())?;
        // SigningCertificate(V2) ::= SEQUENCE { certs SEQUENCE OF ESSCertID(v2), policies OPTIONAL }: `value` is the
        // outer SEQUENCE, so its content starts with `certs`.
        der::Reader::sequence(&mut outer, |certs| {
            der::Reader::sequence(certs, |id| {
                let mut algorithm = if v2 { ID_SHA256 } else { Oid::new_unwrap("1.3.14.3.2.26") };
                if v2 && der::Reader::peek_tag(id)? == der::Tag::Sequence {
                    algorithm = spki::AlgorithmIdentifierOwned::decode(id)?.oid;
                }
                let hash = OctetString::decode(id)?;
                // issuerSerial is optional and not needed once the hash matches.
                while !der::Reader::is_finished(id) {
                    der::Any::decode(id)?;
                }
                Ok((algorithm, hash.as_bytes().to_vec()))
            })
            .and_then(|first| {
                while !der::Reader::is_finished(certs) {
                    der::Any::decode(certs)?;
                }
                Ok(first)
            })
        })
    };
    let (algorithm, hash) = parse().map_err(|e| format!("timestamp ESS signingCertificate does not parse: {e}"))?;
    let actual = match algorithm {
        ID_SHA256 => Sha256::digest(&cert_der).to_vec(),
        spc::ID_SHA384 => Sha384::digest(&cert_der).to_vec(),
        spc::ID_SHA512 => Sha512::digest(&cert_der).to_vec(),
        oid if oid == Oid::new_unwrap("1.3.14.3.2.26") => sha1::Sha1::digest(&cert_der).to_vec(),
        other => return Err(format!("timestamp ESS certificate hash algorithm {other} is not supported")),
    };
    if actual != hash {
        return Err(
            "the timestamp authority's certificate does not match the hash the TSA signed (ESS signingCertificate)"
                .into(),
        );
    }
    Ok(())
}

/// Unsigned attributes a driver signature may carry: RFC 3161 timestamp, PKCS#9 countersignature, nested signature.
const KNOWN_UNSIGNED_ATTRIBUTES: [Oid; 3] =
    [spc::SPC_RFC3161_OBJID, Oid::new_unwrap("1.2.840.113549.1.9.6"), Oid::new_unwrap("1.3.6.1.4.1.311.2.4.1")];

/// The RFC 3161 countersignature, if present: returns its time when it verifies.
fn check_timestamp(
    signer: &SignerInfo,
    anchors: &[Certificate],
    report: &mut VerificationReport,
) -> Option<SystemTime> {
    // Unsigned attributes are outside the signature: an unknown one is either corruption or smuggled data.
    for attr in signer.unsigned_attrs.iter().flat_map(|a| a.iter()) {
        if !KNOWN_UNSIGNED_ATTRIBUTES.contains(&attr.oid) {
            report.fail(
                Rule::Timestamp,
                format!("unknown unsigned attribute {} (not covered by the signature)", attr.oid),
            );
        }
    }
    let attr = signer.unsigned_attrs.as_ref()?.iter().find(|a| a.oid == spc::SPC_RFC3161_OBJID)?;
    let token = attr.values.get(0)?;
    match verify_timestamp_token(token, signer.signature.as_bytes(), anchors) {
        Ok(info) => {
            let seconds = info.gen_time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
            report.notes.push(format!("timestamp by {} at unix time {seconds}", info.tsa_subject));
            let time = info.gen_time;
            report.timestamp = Some(info);
            Some(time)
        }
        Err(e) => {
            report.fail(Rule::Timestamp, e);
            None
        }
    }
}

fn verify_timestamp_token(
    token: &der::Any,
    signature: &[u8],
    anchors: &[Certificate],
) -> Result<TimestampInfo, String> {
    let token_der = token.to_der().map_err(|e| e.to_string())?;
    let tst_info = crate::timestamp::token_tst_info(&token_der).map_err(|e| e.to_string())?;
    if tst_info.message_imprint != crate::timestamp::message_imprint(signature) {
        return Err("timestamp's message imprint is not the hash of this signature".into());
    }
    let content_info = ContentInfo::from_der(&token_der).map_err(|e| e.to_string())?;
    if content_info.content_type != ID_SIGNED_DATA {
        return Err(format!("timestamp token content type {} is not signedData", content_info.content_type));
    }
    let signed_data: SignedData = content_info.content.decode_as().map_err(|e| e.to_string())?;
    let tsa_signer = match signed_data.signer_infos.0.as_slice() {
        [signer] => signer,
        signers => return Err(format!("timestamp token has {} SignerInfos; expected one", signers.len())),
    };
    if !signed_data.digest_algorithms.iter().any(|a| a.oid == tsa_signer.digest_alg.oid && null_or_absent(a))
        || !null_or_absent(&tsa_signer.digest_alg)
    {
        return Err("timestamp token digestAlgorithms do not list its signer's digest algorithm".into());
    }
    // RFC 5652 §5.1: eContentType id-ct-TSTInfo makes the token version 3 (some TSAs still write 1).
    if !matches!(signed_data.version, CmsVersion::V1 | CmsVersion::V3) {
        return Err(format!("timestamp token SignedData version {:?}", signed_data.version));
    }
    if tsa_signer.version != CmsVersion::V1 {
        return Err(format!("timestamp SignerInfo version {:?} (issuerAndSerialNumber needs 1)", tsa_signer.version));
    }
    let signature_alg = tsa_signer.signature_algorithm.oid;
    if ![spc::RSA_ENCRYPTION, spc::SHA256_WITH_RSA, spc::SHA384_WITH_RSA, spc::SHA512_WITH_RSA].contains(&signature_alg)
        || !null_or_absent(&tsa_signer.signature_algorithm)
    {
        return Err(format!("timestamp signature algorithm {signature_alg} is not RSA PKCS#1 v1.5"));
    }
    let econtent = signed_data.encap_content_info.econtent.as_ref().ok_or("timestamp token has no TSTInfo")?;
    let tst_der = OctetString::from_der(&econtent.to_der().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let attrs = tsa_signer.signed_attrs.as_ref().ok_or("timestamp SignerInfo has no signed attributes")?;
    let md = attrs
        .iter()
        .find(|a| a.oid == ID_MESSAGE_DIGEST)
        .and_then(|a| a.values.get(0))
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or("timestamp SignerInfo has no messageDigest")?;
    let (digest, verify_digest): (Vec<u8>, Pkcs1v15Sign) = match tsa_signer.digest_alg.oid {
        ID_SHA256 => (Sha256::digest(tst_der.as_bytes()).to_vec(), Pkcs1v15Sign::new::<Sha256>()),
        spc::ID_SHA384 => (Sha384::digest(tst_der.as_bytes()).to_vec(), Pkcs1v15Sign::new::<Sha384>()),
        spc::ID_SHA512 => (Sha512::digest(tst_der.as_bytes()).to_vec(), Pkcs1v15Sign::new::<Sha512>()),
        other => return Err(format!("timestamp digest algorithm {other} is not supported")),
    };
    if md.as_bytes() != digest.as_slice() {
        return Err("timestamp messageDigest does not match its TSTInfo".into());
    }
    let certificates: Vec<Certificate> = signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let tsa_cert = find_signer_certificate(&certificates, &tsa_signer.sid)
        .or_else(|| {
            let SignerIdentifier::IssuerAndSerialNumber(id) = &tsa_signer.sid else { return None };
            anchors
                .iter()
                .find(|c| c.tbs_certificate.issuer == id.issuer && c.tbs_certificate.serial_number == id.serial_number)
        })
        .ok_or("the timestamp authority's certificate is not in the token")?;
    check_ess_signing_certificate(attrs, tsa_cert)?;
    let spki_der = tsa_cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    let key = <RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&spki_der)
        .map_err(|_| "timestamp authority key is not RSA".to_string())?;
    let attrs_der = attrs.to_der().map_err(|e| e.to_string())?;
    let attrs_digest = match tsa_signer.digest_alg.oid {
        ID_SHA256 => Sha256::digest(&attrs_der).to_vec(),
        spc::ID_SHA384 => Sha384::digest(&attrs_der).to_vec(),
        _ => Sha512::digest(&attrs_der).to_vec(),
    };
    key.verify(verify_digest, &attrs_digest, tsa_signer.signature.as_bytes())
        .map_err(|_| "timestamp token signature does not verify with the TSA certificate".to_string())?;
    // The token's certificates are outside every signature but their own: check each against its issuer.
    for cert in &certificates {
        let issuer_name = &cert.tbs_certificate.issuer;
        let issuer = if issuer_name == &cert.tbs_certificate.subject {
            Some(cert)
        } else {
            certificates.iter().chain(anchors).find(|c| &c.tbs_certificate.subject == issuer_name)
        };
        if let Some(issuer) = issuer {
            verify_certificate_signature(cert, issuer).map_err(|e| format!("timestamp token certificate: {e}"))?;
        }
    }
    if !anchors.is_empty() {
        chain_to_anchor(tsa_cert, &certificates, anchors).map_err(|e| format!("TSA chain: {e}"))?;
    }
    Ok(TimestampInfo {
        gen_time: tst_info.gen_time.to_system_time(),
        tsa_subject: tsa_cert.tbs_certificate.subject.to_string(),
    })
}
