//! Key sources: PEM (PKCS#8, PKCS#1, encrypted PKCS#8), PFX/PKCS#12 with the password from an environment
//! variable or a file, the two-step external signer, and the refusals (ECDSA, key sizes, key/cert mismatch).

mod common;

use bpf2sys_signing::keys::{load_pem_chain, RsaKeySigner};
use bpf2sys_signing::{
    digest_to_sign, sign_pe, verify_pe, ExternalSignature, PasswordSource, SignOptions, Signer, SigningError,
    VerifyOptions,
};
use common::*;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};

fn trusted() -> VerifyOptions {
    VerifyOptions { trusted_cas: vec![cert_from_pem(&pki().ca_cert_pem)], ..Default::default() }
}

fn chain_pem() -> String {
    format!("{}{}", pki().leaf_cert_pem, pki().ca_cert_pem)
}

#[test]
fn pem_pkcs8_pkcs1_and_encrypted_keys_sign_verifiably() {
    let dir = tempfile::tempdir().unwrap();
    let chain = write(dir.path(), "chain.pem", chain_pem());
    let key = &pki().leaf_key;
    let pkcs8 = write(dir.path(), "k8.pem", &pki().leaf_key_pem);
    let pkcs1 = write(dir.path(), "k1.pem", key.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes());
    let encrypted_pem = key.to_pkcs8_encrypted_pem(&mut rsa::rand_core::OsRng, b"s3cret", LineEnding::LF).unwrap();
    let encrypted = write(dir.path(), "ke.pem", encrypted_pem.as_bytes());
    let password_file = write(dir.path(), "pw.txt", "s3cret\n");
    let image = build_image(&ImageSpec::default());
    for (path, password) in
        [(&pkcs8, None), (&pkcs1, None), (&encrypted, Some(PasswordSource::File(password_file.clone())))]
    {
        let signer = Signer::from_pem_files(path, &chain, password.as_ref()).unwrap();
        assert_eq!(signer.chain().len(), 2);
        let signed = sign_pe(&image, &signer, &SignOptions::default()).unwrap();
        assert!(verify_pe(&signed, &trusted()).is_valid(), "{}", path.display());
    }
    let err = Signer::from_pem_files(&encrypted, &chain, None).err().unwrap();
    assert!(err.to_string().contains("encrypted"), "{err}");
    let wrong = write(dir.path(), "wrong.txt", "nope");
    let err = Signer::from_pem_files(&encrypted, &chain, Some(&PasswordSource::File(wrong))).err().unwrap();
    assert!(err.to_string().contains("wrong password"), "{err}");
}

fn write_pfx(dir: &std::path::Path, password: &str, legacy: bool) -> Option<std::path::PathBuf> {
    tool("openssl")?;
    let key = write(dir, "pfxkey.pem", &pki().leaf_key_pem);
    let cert = write(dir, "pfxcert.pem", &pki().leaf_cert_pem);
    let ca = write(dir, "pfxca.pem", &pki().ca_cert_pem);
    let out = dir.join(if legacy { "legacy.pfx" } else { "modern.pfx" });
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["pkcs12", "-export", "-inkey"]).arg(&key).arg("-in").arg(&cert).arg("-certfile").arg(&ca);
    cmd.arg("-out").arg(&out).arg("-passout").arg(format!("pass:{password}"));
    if legacy {
        cmd.arg("-legacy");
    }
    let status = cmd.status().ok()?;
    status.success().then_some(out)
}

#[test]
fn pfx_with_password_from_env_or_file_signs_with_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&ImageSpec::default());
    let mut tested = 0;
    for legacy in [false, true] {
        let Some(pfx) = write_pfx(dir.path(), "pfx-pass", legacy) else {
            eprintln!("SKIP: openssl could not write a {} PFX", if legacy { "legacy" } else { "default" });
            continue;
        };
        let var = format!("BPF2SYS_TEST_PFX_PASSWORD_{}", legacy as u8);
        // SAFETY: the variable is unique to this test; no other thread reads it.
        unsafe { std::env::set_var(&var, "pfx-pass") };
        let signer = Signer::from_pfx_file(&pfx, &PasswordSource::Env(var.clone())).unwrap();
        assert_eq!(signer.chain().len(), 2, "leaf and CA from the PFX");
        assert_eq!(signer.leaf().tbs_certificate.subject.to_string(), "CN=bpf2sys test signer", "leaf first");
        let signed = sign_pe(&image, &signer, &SignOptions::default()).unwrap();
        assert!(verify_pe(&signed, &trusted()).is_valid());
        let file = write(dir.path(), "pfxpass.txt", "pfx-pass");
        assert!(Signer::from_pfx_file(&pfx, &PasswordSource::File(file)).is_ok());
        let wrong = write(dir.path(), "bad.txt", "wrong");
        let err = Signer::from_pfx_file(&pfx, &PasswordSource::File(wrong)).err().unwrap();
        assert!(err.to_string().contains("wrong password"), "{err}");
        let err =
            Signer::from_pfx_file(&pfx, &PasswordSource::Env("BPF2SYS_TEST_UNSET_VARIABLE".into())).err().unwrap();
        assert!(err.to_string().contains("BPF2SYS_TEST_UNSET_VARIABLE is not set"), "{err}");
        tested += 1;
    }
    if tested == 0 {
        eprintln!("SKIP: no openssl to make PFX files");
    }
}

#[test]
fn ecdsa_keys_and_certificates_are_refused_because_kernel_signing_needs_rsa() {
    let dir = tempfile::tempdir().unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "ec signer");
    let cert = params.self_signed(&ec).unwrap();
    let cert_path = write(dir.path(), "ec.pem", cert.pem());
    let key_path = write(dir.path(), "eckey.pem", ec.serialize_pem());
    let err = Signer::from_pem_files(&key_path, &cert_path, None).err().unwrap();
    assert!(matches!(err, SigningError::EcdsaNotSupported { .. }), "{err}");
    assert!(err.to_string().contains("Windows kernel-mode code signing needs an RSA key"), "{err}");
    assert!(err.to_string().contains("P-256"), "{err}");
    // An EC certificate with an RSA key is refused on the certificate too.
    let err = Signer::new(
        load_pem_chain(&cert_path).unwrap(),
        Box::new(RsaKeySigner::new(pki().leaf_key.clone(), "rsa").unwrap()),
    )
    .err()
    .unwrap();
    assert!(matches!(err, SigningError::EcdsaNotSupported { .. }), "{err}");
}

#[test]
fn rsa_keys_outside_2048_to_4096_bits_are_refused() {
    let small = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let err = RsaKeySigner::new(small, "small").err().unwrap();
    assert!(matches!(err, SigningError::RsaKeySize { bits: 1024 }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let small = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let small_pem = small.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let (_, cert) = issue(&small_pem, "small", true);
    let cert_path = write(dir.path(), "small.pem", cert);
    let err = Signer::new(
        load_pem_chain(&cert_path).unwrap(),
        Box::new(RsaKeySigner::new(pki().leaf_key.clone(), "rsa").unwrap()),
    )
    .err()
    .unwrap();
    assert!(matches!(err, SigningError::RsaKeySize { bits: 1024 }), "{err}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_an_error() {
    let other = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let signer = Signer::new(
        vec![cert_from_pem(&pki().leaf_cert_pem)],
        Box::new(RsaKeySigner::new(other, "other key").unwrap()),
    )
    .unwrap();
    let err = sign_pe(&build_image(&ImageSpec::default()), &signer, &SignOptions::default()).unwrap_err();
    assert!(matches!(err, SigningError::KeyCertificateMismatch { .. }), "{err}");
}

#[test]
fn two_step_external_signing_embeds_a_signature_made_elsewhere() {
    let image = build_image(&ImageSpec::default());
    let options = SignOptions { page_hashes: true, description: Some("external".into()), ..Default::default() };
    let digest = digest_to_sign(&image, &options).unwrap();
    assert_eq!(digest, digest_to_sign(&image, &options).unwrap(), "deterministic");
    // The "cloud key service": signs the pre-hashed SHA-256 digest with RSASSA-PKCS1-v1_5.
    let signature = pki().leaf_key.sign(Pkcs1v15Sign::new::<sha2::Sha256>(), &digest).unwrap();
    let chain = vec![cert_from_pem(&pki().leaf_cert_pem), cert_from_pem(&pki().ca_cert_pem)];
    let external = ExternalSignature { signature: signature.clone(), origin: "test".into() };
    let signer = Signer::new(chain.clone(), Box::new(external)).unwrap();
    let signed = sign_pe(&image, &signer, &options).unwrap();
    assert!(verify_pe(&signed, &trusted()).is_valid());
    // Same signature, different options: the signed attributes differ and the signature no longer fits.
    let signer = Signer::new(chain, Box::new(ExternalSignature { signature, origin: "test".into() })).unwrap();
    let err = sign_pe(&image, &signer, &SignOptions::default()).unwrap_err();
    assert!(matches!(err, SigningError::ExternalSignatureMismatch), "{err}");
}

#[test]
fn external_digest_signed_by_openssl_pkeyutl_embeds() {
    if tool("openssl").is_none() {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(&ImageSpec::default());
    let digest = digest_to_sign(&image, &SignOptions::default()).unwrap();
    let digest_path = write(dir.path(), "digest.bin", digest);
    let key = write(dir.path(), "key.pem", &pki().leaf_key_pem);
    let sig_path = dir.path().join("sig.bin");
    let status = std::process::Command::new("openssl")
        .args(["pkeyutl", "-sign", "-pkeyopt", "digest:sha256", "-inkey"])
        .arg(&key)
        .arg("-in")
        .arg(&digest_path)
        .arg("-out")
        .arg(&sig_path)
        .status()
        .unwrap();
    assert!(status.success());
    let signature = std::fs::read(&sig_path).unwrap();
    let chain = vec![cert_from_pem(&pki().leaf_cert_pem), cert_from_pem(&pki().ca_cert_pem)];
    let signer = Signer::new(chain, Box::new(ExternalSignature { signature, origin: "openssl".into() })).unwrap();
    let signed = sign_pe(&image, &signer, &SignOptions::default()).unwrap();
    assert!(verify_pe(&signed, &trusted()).is_valid());
}

/// The software signer signs through ring; PKCS#1 v1.5 is deterministic (RFC 8017 §8.2.1), so ring's signature
/// must be byte-for-byte the `rsa` crate's over the same digest, for the key sizes Windows accepts.
#[test]
fn ring_fast_path_signs_exactly_what_the_rsa_crate_signs() {
    use bpf2sys_signing::RawSigner;
    use sha2::{Digest, Sha256};
    let keys = [pki().leaf_key.clone(), RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 3072).unwrap()];
    for key in keys {
        let bits = rsa::traits::PublicKeyParts::size(&key) * 8;
        let signer = RsaKeySigner::new(key, "rsa").unwrap();
        assert!(signer.is_fast(), "{bits}-bit key: ring refused it");
        for message in [&b""[..], b"signed attributes", &[0xa5; 1000]] {
            let digest: [u8; 32] = Sha256::digest(message).into();
            let fast = signer.sign_sha256_message(message, &digest).unwrap();
            let reference = signer.sign_sha256_digest_reference(&digest).unwrap();
            assert_eq!(fast, reference, "{bits}-bit key, {}-byte message", message.len());
            assert_eq!(signer.sign_sha256_digest(&digest).unwrap(), reference);
        }
    }
}

/// The post-signing check (ring first, the `rsa` crate when ring refuses) accepts the leaf key's signature and
/// nothing else.
#[test]
fn signature_check_accepts_the_leaf_keys_signature_only() {
    use bpf2sys_signing::RawSigner;
    use sha2::{Digest, Sha256};
    let signer = signer();
    let key = RsaKeySigner::new(pki().leaf_key.clone(), "rsa").unwrap();
    let message = b"signed attributes";
    let digest: [u8; 32] = Sha256::digest(message).into();
    let signature = key.sign_sha256_message(message, &digest).unwrap();
    assert!(signer.signature_matches(message, &digest, &signature));
    let mut flipped = signature.clone();
    flipped[100] ^= 1;
    assert!(!signer.signature_matches(message, &digest, &flipped));
    let other: [u8; 32] = Sha256::digest(b"other").into();
    assert!(!signer.signature_matches(b"other", &other, &signature));
    let stranger = RsaKeySigner::new(RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap(), "x").unwrap();
    assert!(!signer.signature_matches(message, &digest, &stranger.sign_sha256_message(message, &digest).unwrap()));
}
