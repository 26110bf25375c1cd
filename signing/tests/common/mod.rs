//! Shared test fixtures: small valid PE32+ driver-shaped images (until the linker's .sys files exist), a test PKI
//! (root CA + code-signing leaf, RSA), and external-tool discovery.
#![allow(dead_code)]

use bpf2sys_signing::keys::{RsaKeySigner, Signer};
use der::Decode;
use object::pe;
use object::write::pe::{NtHeaders, Writer};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Shape of a test image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub text_len: u32,
    pub rdata_len: u32,
    pub data_len: u32,
    pub seed: u32,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec { text_len: 0x1840, rdata_len: 0x310, data_len: 0x128, seed: 1 }
    }
}

fn filler(len: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 16) as u8
        })
        .collect()
}

/// A PE32+ x64 image laid out like a bpf2sys driver: .text, .rdata, .data, .reloc; NATIVE; NX|DYNAMIC_BASE.
pub fn build_image(spec: &ImageSpec) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut writer = Writer::new(true, 0x1000, 0x200, &mut buffer);
    writer.reserve_dos_header_and_stub();
    writer.reserve_nt_headers(16);
    writer.reserve_section_headers(4);
    let text = writer.reserve_section(*b".text\0\0\0", 0x6800_0020, spec.text_len, spec.text_len);
    let rdata = writer.reserve_section(*b".rdata\0\0", 0x4800_0040, spec.rdata_len, spec.rdata_len);
    let data = writer.reserve_section(*b".data\0\0\0", 0xc800_0040, spec.data_len, spec.data_len);
    writer.add_reloc(data.virtual_address, pe::IMAGE_REL_BASED_DIR64);
    writer.reserve_reloc_section();
    writer.write_dos_header_and_stub().unwrap();
    writer.write_nt_headers(NtHeaders {
        machine: pe::IMAGE_FILE_MACHINE_AMD64,
        time_date_stamp: 0,
        characteristics: pe::IMAGE_FILE_EXECUTABLE_IMAGE | pe::IMAGE_FILE_LARGE_ADDRESS_AWARE,
        major_linker_version: 14,
        minor_linker_version: 0,
        address_of_entry_point: text.virtual_address,
        image_base: 0x1_4000_0000,
        major_operating_system_version: 10,
        minor_operating_system_version: 0,
        major_image_version: 0,
        minor_image_version: 0,
        major_subsystem_version: 10,
        minor_subsystem_version: 0,
        subsystem: pe::IMAGE_SUBSYSTEM_NATIVE,
        dll_characteristics: pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE | pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT,
        size_of_stack_reserve: 0x40000,
        size_of_stack_commit: 0x1000,
        size_of_heap_reserve: 0,
        size_of_heap_commit: 0,
    });
    writer.write_section_headers();
    writer.write_section(text.file_offset, &filler(spec.text_len, spec.seed));
    writer.write_section(rdata.file_offset, &filler(spec.rdata_len, spec.seed + 1));
    writer.write_section(data.file_offset, &filler(spec.data_len, spec.seed + 2));
    writer.write_reloc_section();
    buffer
}

/// A root CA and a code-signing leaf it issued, RSA 2048.
pub struct TestPki {
    pub ca_cert_pem: String,
    pub leaf_cert_pem: String,
    pub leaf_key_pem: String,
    pub leaf_key: RsaPrivateKey,
}

fn rsa_key(bits: usize) -> (RsaPrivateKey, String) {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    (key, pem)
}

/// Makes a certificate for `key_pem` issued by a fresh CA, or self-signed; returns (ca pem, leaf pem).
pub fn issue(leaf_key_pem: &str, common_name: &str, code_signing: bool) -> (String, String) {
    let (_, ca_key_pem) = rsa_key(2048);
    let ca_kp = rcgen::KeyPair::from_pem_and_sign_algo(&ca_key_pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{common_name} Root CA"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_kp).unwrap();
    // The leaf's public key only: ring refuses to load RSA keys under 2048 bits, which the tests need to make.
    let leaf_key = <RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(leaf_key_pem).unwrap();
    let leaf_kp = RsaPublicKeyData(
        rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&leaf_key.to_public_key()).unwrap().as_bytes().to_vec(),
    );
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    if code_signing {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    }
    let leaf = params.signed_by(&leaf_kp, &ca).unwrap();
    (ca.pem(), leaf.pem())
}

/// An RSA public key for rcgen (PKCS#1 RSAPublicKey bytes).
struct RsaPublicKeyData(Vec<u8>);

impl rcgen::PublicKeyData for RsaPublicKeyData {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let (leaf_key, leaf_key_pem) = rsa_key(2048);
        let (ca_cert_pem, leaf_cert_pem) = issue(&leaf_key_pem, "bpf2sys test signer", true);
        TestPki { ca_cert_pem, leaf_cert_pem, leaf_key_pem, leaf_key }
    })
}

pub fn cert_from_pem(pem: &str) -> x509_cert::Certificate {
    let (_, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
    x509_cert::Certificate::from_der(&der).unwrap()
}

/// The leaf + CA chain signer of [`pki`].
pub fn signer() -> Signer {
    let pki = pki();
    let chain = vec![cert_from_pem(&pki.leaf_cert_pem), cert_from_pem(&pki.ca_cert_pem)];
    Signer::new(chain, Box::new(RsaKeySigner::new(pki.leaf_key.clone(), "test leaf key").unwrap())).unwrap()
}

/// Finds an external tool on PATH.
pub fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

pub fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `osslsigncode verify` and returns (success, combined output).
pub fn osslsigncode_verify(file: &Path, ca: &Path, tsa_ca: Option<&Path>) -> (bool, String) {
    let mut cmd = std::process::Command::new("osslsigncode");
    cmd.arg("verify").arg("-in").arg(file).arg("-CAfile").arg(ca);
    if let Some(tsa) = tsa_ca {
        cmd.arg("-TSA-CAfile").arg(tsa);
    }
    let out = cmd.output().expect("run osslsigncode");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// osslsigncode is a required oracle where it is installed (CI installs it); tests skip with a reason otherwise.
pub fn have_osslsigncode() -> bool {
    if tool("osslsigncode").is_some() {
        return true;
    }
    // In CI a missing oracle is a failure, not a skip (.ci/run installs it).
    assert!(std::env::var_os("CI").is_none(), "osslsigncode is not installed (.ci/run installs it)");
    eprintln!("SKIP: osslsigncode not installed (apt-get install osslsigncode)");
    false
}
