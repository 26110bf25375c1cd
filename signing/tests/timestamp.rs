//! RFC 3161 countersignatures against a local time-stamp authority that this test runs on 127.0.0.1 (HTTP,
//! signing TSTInfo with its own RSA key and a timeStamping certificate), checked by our verifier and osslsigncode.

mod common;

use bpf2sys_signing::spc::ID_CT_TST_INFO;
use bpf2sys_signing::{sign_pe, verify_pe, SignOptions, SigningError, VerifyOptions};
use cmpv2::status::{PkiStatus, PkiStatusInfo};
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use common::*;
use der::asn1::{Any, GeneralizedTime, Int, OctetString, SetOfVec};
use der::{Decode, Encode, Tag};
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use x509_cert::attr::Attribute;
use x509_cert::Certificate;
use x509_tsp::{TimeStampReq, TimeStampResp, TspVersion, TstInfo};

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Grant,
    Reject,
    WrongNonce,
    WrongImprint,
}

struct Tsa {
    url: String,
    cert_pem: String,
    requests: Arc<AtomicU32>,
}

fn tsa_identity() -> (RsaPrivateKey, Certificate, String) {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let key_pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, rsa::pkcs8::LineEnding::LF).unwrap();
    let key_pair = rcgen::KeyPair::from_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "bpf2sys test TSA");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    // RFC 3161 §2.3: the TSA certificate's EKU is exactly id-kp-timeStamping and critical.
    let mut eku = rcgen::CustomExtension::from_oid_content(
        &[2, 5, 29, 37],
        vec![0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08],
    );
    eku.set_criticality(true);
    params.custom_extensions = vec![eku];
    let cert = params.self_signed(&key_pair).unwrap();
    let pem = cert.pem();
    (key, cert_from_pem(&pem), pem)
}

fn respond(request: &[u8], key: &RsaPrivateKey, cert: &Certificate, behaviour: Behaviour, serial: u32) -> Vec<u8> {
    let request = TimeStampReq::from_der(request).unwrap();
    if behaviour == Behaviour::Reject {
        let status = PkiStatusInfo { status: PkiStatus::Rejection, status_string: None, fail_info: None };
        return TimeStampResp { status, time_stamp_token: None }.to_der().unwrap();
    }
    let mut imprint = request.message_imprint.clone();
    if behaviour == Behaviour::WrongImprint {
        imprint.hashed_message = OctetString::new(vec![0u8; 32]).unwrap();
    }
    let nonce = match behaviour {
        Behaviour::WrongNonce => Some(Int::new(&[0x42]).unwrap()),
        _ => request.nonce.clone(),
    };
    let tst_info = TstInfo {
        version: TspVersion::V1,
        policy: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.4146.2.3"),
        message_imprint: imprint,
        serial_number: Int::new(&[(serial % 0x80) as u8]).unwrap(),
        gen_time: GeneralizedTime::from_system_time(std::time::SystemTime::now()).unwrap(),
        accuracy: None,
        ordering: false,
        nonce,
        tsa: None,
        extensions: None,
    };
    let content = EncapsulatedContentInfo {
        econtent_type: ID_CT_TST_INFO,
        econtent: Some(Any::new(Tag::OctetString, tst_info.to_der().unwrap()).unwrap()),
    };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    });
    let sha256 = spki::AlgorithmIdentifierOwned { oid: bpf2sys_signing::spc::ID_SHA256, parameters: None };
    let signing_key = SigningKey::<Sha256>::new(key.clone());
    let mut signer_info = SignerInfoBuilder::new(&signing_key, sid, sha256.clone(), &content, None).unwrap();
    // signingCertificateV2 (RFC 5816): SEQUENCE { SEQUENCE OF ESSCertIDv2 { certHash } } with the default SHA-256.
    let cert_hash = Sha256::digest(cert.to_der().unwrap());
    let ess_cert_id = [vec![0x30, 0x22, 0x04, 0x20], cert_hash.to_vec()].concat();
    let signing_certificate = [vec![0x30, 0x26, 0x30, 0x24], ess_cert_id].concat();
    signer_info
        .add_signed_attribute(Attribute {
            oid: der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47"),
            values: SetOfVec::try_from(vec![Any::from_der(&signing_certificate).unwrap()]).unwrap(),
        })
        .unwrap();
    let token = SignedDataBuilder::new(&content)
        .add_digest_algorithm(sha256)
        .unwrap()
        .add_certificate(CertificateChoices::Certificate(cert.clone()))
        .unwrap()
        .add_signer_info::<SigningKey<Sha256>, Signature>(signer_info)
        .unwrap()
        .build()
        .unwrap();
    let status = PkiStatusInfo { status: PkiStatus::Accepted, status_string: None, fail_info: None };
    TimeStampResp { status, time_stamp_token: Some(token) }.to_der().unwrap()
}

/// Starts the TSA on an ephemeral loopback port; it serves until the test process exits.
fn start_tsa(behaviour: Behaviour) -> Tsa {
    let (key, cert, cert_pem) = tsa_identity();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tsa", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU32::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                data.extend_from_slice(&buf[..n]);
                if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        assert!(head.contains("content-type: application/timestamp-query"), "{head}");
                        break Some(data[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            let Some(body) = body else { continue };
            let serial = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let reply = respond(&body, &key, &cert, behaviour, serial);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                reply.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&reply));
        }
    });
    Tsa { url, cert_pem, requests }
}

#[test]
fn timestamped_signature_verifies_here_and_in_osslsigncode() {
    let tsa = start_tsa(Behaviour::Grant);
    let options = SignOptions { timestamp_url: Some(tsa.url.clone()), page_hashes: true, ..Default::default() };
    let signed = sign_pe(&build_image(&ImageSpec::default()), &signer(), &options).unwrap();
    assert_eq!(tsa.requests.load(Ordering::SeqCst), 1);
    let trusted = VerifyOptions {
        trusted_cas: vec![cert_from_pem(&pki().ca_cert_pem)],
        trusted_tsa_cas: vec![cert_from_pem(&tsa.cert_pem)],
    };
    let report = verify_pe(&signed, &trusted);
    assert!(report.is_valid(), "{:?}", report.problems);
    let stamp = report.timestamp.expect("timestamp reported");
    assert_eq!(stamp.tsa_subject, "CN=bpf2sys test TSA");
    let age = std::time::SystemTime::now().duration_since(stamp.gen_time).unwrap();
    assert!(age.as_secs() < 600);

    // A TSA the verifier does not trust is a timestamp failure.
    let (_, other_tsa, _) = tsa_identity();
    let untrusted = VerifyOptions { trusted_tsa_cas: vec![other_tsa], ..trusted.clone() };
    let report = verify_pe(&signed, &untrusted);
    assert!(
        report.problems.iter().any(|p| p.rule == bpf2sys_signing::verify::Rule::Timestamp),
        "{:?}",
        report.problems
    );

    if have_osslsigncode() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "ts.sys", &signed);
        let ca = write(dir.path(), "ca.pem", &pki().ca_cert_pem);
        let tsa_ca = write(dir.path(), "tsa.pem", &tsa.cert_pem);
        let (ok, out) = osslsigncode_verify(&path, &ca, Some(&tsa_ca));
        assert!(ok, "{out}");
        assert!(out.contains("Timestamp"), "{out}");
    }
}

#[test]
fn a_tampered_timestamp_token_is_reported() {
    let tsa = start_tsa(Behaviour::Grant);
    let options = SignOptions { timestamp_url: Some(tsa.url.clone()), ..Default::default() };
    let signed = sign_pe(&build_image(&ImageSpec::default()), &signer(), &options).unwrap();
    // Every byte of the countersignature attribute (OID 1.3.6.1.4.1.311.3.3.1 onwards: the TimeStampToken) is
    // covered by the token's own signature, its certificate's signature, or the DER structure.
    let table_start = bpf2sys_signing::pe::PeLayout::parse(&signed).unwrap().certificate_table.0 as usize;
    let oid = der::Encode::to_der(&bpf2sys_signing::spc::SPC_RFC3161_OBJID).unwrap();
    let token_start = table_start + signed[table_start..].windows(oid.len()).position(|w| w == oid).unwrap();
    let token_end = signed.len() - signed.iter().rev().take_while(|&&b| b == 0).count();
    let mut unnoticed = Vec::new();
    for offset in token_start..token_end {
        let mut tampered = signed.clone();
        tampered[offset] ^= 0x01;
        let report = verify_pe(&tampered, &VerifyOptions::default());
        if !report.problems.iter().any(|p| p.rule != bpf2sys_signing::verify::Rule::S7) {
            unnoticed.push(offset - token_start);
        }
    }
    assert!(unnoticed.is_empty(), "flips in the token only seen by the checksum at token offsets {unnoticed:x?}");
}

#[test]
fn timestamp_server_failures_are_clear_errors() {
    let image = build_image(&ImageSpec::default());
    for (behaviour, expected) in
        [(Behaviour::Reject, "refused"), (Behaviour::WrongNonce, "nonce"), (Behaviour::WrongImprint, "imprint")]
    {
        let tsa = start_tsa(behaviour);
        let options = SignOptions { timestamp_url: Some(tsa.url.clone()), ..Default::default() };
        let err = sign_pe(&image, &signer(), &options).unwrap_err();
        assert!(matches!(err, SigningError::Timestamp { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    // Nothing listens on this port once the listener is dropped.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = SignOptions { timestamp_url: Some(format!("http://127.0.0.1:{port}/")), ..Default::default() };
    let err = sign_pe(&image, &signer(), &options).unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}
