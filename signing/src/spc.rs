//! Authenticode's Microsoft-specific ASN.1 (the `Spc*` structures) and the OIDs of driver-image-and-signing.md
//! §3.3–§3.5: encoding for signing, decoding for verification.
//!
//! The structures are small and fixed, so they are written as DER TLVs directly; decoding goes through the `der`
//! crate's reader so malformed input gives a positioned error rather than a panic.

use crate::error::SigningError;
use der::asn1::{ObjectIdentifier as Oid, OctetString};
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};

pub const SPC_INDIRECT_DATA_OBJID: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.4");
pub const SPC_PE_IMAGE_DATAOBJ: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.15");
pub const SPC_SP_OPUS_INFO_OBJID: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.12");
pub const SPC_STATEMENT_TYPE_OBJID: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.11");
pub const SPC_INDIVIDUAL_SP_KEY_PURPOSE_OBJID: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.21");
pub const SPC_PE_IMAGE_PAGE_HASHES_V1: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.3.1");
pub const SPC_PE_IMAGE_PAGE_HASHES_V2: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.3.2");
/// signtool's unsigned attribute that carries an RFC 3161 TimeStampToken.
pub const SPC_RFC3161_OBJID: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.3.3.1");
/// classId of the SpcSerializedObject that carries page hashes (osslsigncode `classid_page_hash`).
pub const PAGE_HASH_CLASS_ID: [u8; 16] =
    [0xa6, 0xb5, 0x86, 0xd5, 0xb4, 0xa1, 0x24, 0x66, 0xae, 0x05, 0xa2, 0x17, 0xda, 0x8e, 0x60, 0xd6];

pub const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
pub const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
pub const ID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const ID_SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub const ID_SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub const ID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub const ID_KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
pub const ID_CT_TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");

/// DER tag-length-value with a one-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn bmp_string(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(|unit| unit.to_be_bytes()).collect()
}

/// `SpcLink` for `SpcPeImageData.file`: either the conventional `file [2] { unicode [0] "<<<Obsolete>>>" }`
/// (osslsigncode `spc_link_obsolete_get`) or the page-hash moniker of §3.4.
fn spc_pe_image_data(page_hashes: Option<&[u8]>) -> Vec<u8> {
    let link = match page_hashes {
        None => tlv(0xa2, &tlv(0x80, &bmp_string("<<<Obsolete>>>"))),
        Some(table) => {
            // serializedData = SET { SEQUENCE { V2 OID, SET { OCTET STRING table } } }
            let mut attr = Oid::to_der(&SPC_PE_IMAGE_PAGE_HASHES_V2).expect("OID encodes");
            attr.extend(tlv(0x31, &tlv(0x04, table)));
            let serialized = tlv(0x31, &tlv(0x30, &attr));
            let mut object = tlv(0x04, &PAGE_HASH_CLASS_ID);
            object.extend(tlv(0x04, &serialized));
            // moniker [1] IMPLICIT SpcSerializedObject
            tlv(0xa1, &object)
        }
    };
    // flags: empty BIT STRING (osslsigncode writes no flag bits either way; they do not change the hash).
    let mut content = vec![0x03, 0x01, 0x00];
    content.extend(tlv(0xa0, &link));
    tlv(0x30, &content)
}

/// The DER `SpcIndirectDataContent` SEQUENCE for a SHA-256 image hash.
pub fn spc_indirect_data_content(image_digest: &[u8; 32], page_hashes: Option<&[u8]>) -> Vec<u8> {
    let mut data = SPC_PE_IMAGE_DATAOBJ.to_der().expect("OID encodes");
    data.extend(spc_pe_image_data(page_hashes));
    let mut algorithm = ID_SHA256.to_der().expect("OID encodes");
    algorithm.extend([0x05, 0x00]);
    let mut digest_info = tlv(0x30, &algorithm);
    digest_info.extend(tlv(0x04, image_digest));
    let mut content = tlv(0x30, &data);
    content.extend(tlv(0x30, &digest_info));
    tlv(0x30, &content)
}

/// DER `SpcSpOpusInfo` with an optional program name and more-info URL.
pub fn spc_sp_opus_info(program_name: Option<&str>, more_info_url: Option<&str>) -> Vec<u8> {
    let mut content = Vec::new();
    if let Some(name) = program_name {
        content.extend(tlv(0xa0, &tlv(0x80, &bmp_string(name))));
    }
    if let Some(url) = more_info_url {
        content.extend(tlv(0xa1, &tlv(0x80, url.as_bytes())));
    }
    tlv(0x30, &content)
}

/// DER `SpcStatementType` = SEQUENCE { individual code signing }.
pub fn spc_statement_type_individual() -> Vec<u8> {
    tlv(0x30, &SPC_INDIVIDUAL_SP_KEY_PURPOSE_OBJID.to_der().expect("OID encodes"))
}

/// What verification needs out of a decoded `SpcIndirectDataContent`.
#[derive(Debug, Clone)]
pub struct IndirectData {
    pub data_type: Oid,
    pub digest_algorithm: Oid,
    pub digest: Vec<u8>,
    /// (hash version OID, table bytes) when the signature carries page hashes.
    pub page_hashes: Option<(Oid, Vec<u8>)>,
}

fn bad(what: &str, e: impl std::fmt::Display) -> SigningError {
    SigningError::Encoding(format!("{what}: {e}"))
}

fn context_tag(number: u8, constructed: bool) -> Tag {
    Tag::ContextSpecific { constructed, number: TagNumber::new(number) }
}

/// Decodes the DER `SpcIndirectDataContent` (the whole SEQUENCE).
pub fn parse_indirect_data(der_bytes: &[u8]) -> Result<IndirectData, SigningError> {
    let mut reader = SliceReader::new(der_bytes).map_err(|e| bad("SpcIndirectDataContent", e))?;
    let parsed = reader
        .sequence(|outer| {
            let (data_type, page_hashes) = outer.sequence(|data| {
                let data_type = Oid::decode(data)?;
                let mut page_hashes = None;
                if !data.is_finished() {
                    let any = der::Any::decode(data)?;
                    if any.tag() == Tag::Sequence {
                        page_hashes = parse_pe_image_data(any.value())?;
                    }
                }
                Ok((data_type, page_hashes))
            })?;
            let (digest_algorithm, digest) = outer.sequence(|info| {
                let algorithm = spki::AlgorithmIdentifierOwned::decode(info)?;
                let digest = OctetString::decode(info)?;
                Ok((algorithm.oid, digest.as_bytes().to_vec()))
            })?;
            Ok(IndirectData { data_type, digest_algorithm, digest, page_hashes })
        })
        .map_err(|e| bad("SpcIndirectDataContent", e))?;
    Ok(parsed)
}

/// Finds the page-hash table in the content octets of `SpcPeImageData`, if its link is the page-hash moniker.
fn parse_pe_image_data(content: &[u8]) -> der::Result<Option<(Oid, Vec<u8>)>> {
    let mut reader = SliceReader::new(content)?;
    let _flags = der::asn1::BitString::decode(&mut reader)?;
    if reader.is_finished() {
        return Ok(None);
    }
    let file = der::Any::decode(&mut reader)?;
    if file.tag() != context_tag(0, true) {
        return Ok(None);
    }
    let link = der::Any::from_der(file.value())?;
    if link.tag() != context_tag(1, true) {
        return Ok(None);
    }
    let mut object = SliceReader::new(link.value())?;
    let class_id = OctetString::decode(&mut object)?;
    let serialized = OctetString::decode(&mut object)?;
    if class_id.as_bytes() != PAGE_HASH_CLASS_ID {
        return Ok(None);
    }
    let set = der::Any::from_der(serialized.as_bytes())?;
    let mut attrs = SliceReader::new(set.value())?;
    let (oid, table) = attrs.sequence(|attr| {
        let oid = Oid::decode(attr)?;
        let values = der::Any::decode(attr)?;
        let table = OctetString::from_der(values.value())?;
        Ok((oid, table.as_bytes().to_vec()))
    })?;
    Ok(Some((oid, table)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indirect_data_round_trips_without_page_hashes() {
        let digest = [7u8; 32];
        let encoded = spc_indirect_data_content(&digest, None);
        let parsed = parse_indirect_data(&encoded).unwrap();
        assert_eq!(parsed.data_type, SPC_PE_IMAGE_DATAOBJ);
        assert_eq!(parsed.digest_algorithm, ID_SHA256);
        assert_eq!(parsed.digest, digest);
        assert!(parsed.page_hashes.is_none());
        // The authenticode crate decodes the same structure.
        let theirs = authenticode::SpcIndirectDataContent::from_der(&encoded).unwrap();
        assert_eq!(theirs.message_digest.digest.as_bytes(), digest);
    }

    #[test]
    fn indirect_data_round_trips_page_hashes() {
        let table: Vec<u8> = (0..=255u8).cycle().take(36 * 300).collect();
        let encoded = spc_indirect_data_content(&[1u8; 32], Some(&table));
        let parsed = parse_indirect_data(&encoded).unwrap();
        assert_eq!(parsed.page_hashes, Some((SPC_PE_IMAGE_PAGE_HASHES_V2, table)));
    }

    #[test]
    fn truncated_indirect_data_is_an_error() {
        let encoded = spc_indirect_data_content(&[1u8; 32], None);
        for cut in 0..encoded.len() {
            assert!(parse_indirect_data(&encoded[..cut]).is_err());
        }
    }
}
