//! `bpf2sys cert new | sign | verify-signature | check` on the sample drivers, with osslsigncode as the
//! independent verifier (skipped with a printed reason where it is not installed).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bpf2sys::compiled::Target;
use bpf2sys::driver::{build_driver, SessionOptions};
use common::{bpf2sys, osslsigncode_verify, pfx, sample_objects as samples, sign_digest_with_openssl, text};

fn new_test_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let out = bpf2sys(&[&"cert", &"new", &"--out-dir", &dir, &"--name", &"t", &"--bits", &"2048"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("certutil -addstore Root") && printed.contains("bcdedit /set testsigning on"),
        "{printed}"
    );
    let again = bpf2sys(&[&"cert", &"new", &"--out-dir", &dir, &"--name", &"t"]);
    assert!(!again.status.success() && text(&again).contains("exists"), "{}", text(&again));
    (dir.join("t.key.pem"), dir.join("t.cert.pem"))
}

#[test]
fn every_sample_driver_signed_by_the_cli_verifies_here_and_in_osslsigncode() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = new_test_cert(dir.path());
    let mut signed_count = 0;
    for object in samples() {
        let bytes = std::fs::read(&object).unwrap();
        let name = object.file_name().unwrap().to_string_lossy().into_owned();
        for target in [Target::X64, Target::Arm64] {
            let options = SessionOptions { target, ..SessionOptions::default() };
            let Ok(image) = build_driver(&bytes, &name, &options) else {
                eprintln!("note: {name} ({target:?}) does not build; not a signing concern");
                continue;
            };
            let unsigned = dir.path().join(format!("{name}-{target:?}.sys"));
            std::fs::write(&unsigned, &image).unwrap();
            let signed = dir.path().join(format!("{name}-{target:?}-signed.sys"));
            let out =
                bpf2sys(&[&"sign", &unsigned, &"--key", &key, &"--cert", &cert, &"-o", &signed, &"--page-hashes"]);
            assert!(out.status.success(), "{name}: {}", text(&out));
            let out = bpf2sys(&[&"verify-signature", &signed, &"--ca", &cert]);
            assert!(out.status.success(), "{name}: {}", text(&out));
            assert!(text(&out).contains("signature OK"));
            let out = bpf2sys(&[&"check", &signed]);
            assert!(out.status.success(), "{name}: check failed on the signed driver:\n{}", text(&out));
            assert!(text(&out).contains("S1") && text(&out).contains("S7"), "{}", text(&out));
            let mut tampered = std::fs::read(&signed).unwrap();
            let middle = tampered.len() / 3;
            tampered[middle] ^= 0x10;
            let bad = dir.path().join(format!("{name}-{target:?}-tampered.sys"));
            std::fs::write(&bad, &tampered).unwrap();
            let out = bpf2sys(&[&"verify-signature", &bad, &"--ca", &cert]);
            assert_eq!(out.status.code(), Some(1), "{name}: tampered copy accepted:\n{}", text(&out));
            assert!(text(&out).contains("FAILED"), "{}", text(&out));
            if let Some(ok) = osslsigncode_verify(&signed, &cert) {
                assert!(ok.status.success(), "{name} {target:?}: osslsigncode rejects:\n{}", text(&ok));
                let bad = osslsigncode_verify(&bad, &cert).expect("osslsigncode ran a moment ago");
                assert!(!bad.status.success(), "{name}: osslsigncode accepts a tampered copy");
            }
            signed_count += 1;
        }
    }
    assert!(signed_count >= 10, "only {signed_count} sample drivers built and signed");
}

#[test]
fn two_step_external_signing_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = new_test_cert(dir.path());
    let object = samples().into_iter().next().unwrap();
    let image = build_driver(&std::fs::read(&object).unwrap(), "x.o", &SessionOptions::default()).unwrap();
    let unsigned = dir.path().join("x.sys");
    std::fs::write(&unsigned, &image).unwrap();
    let digest = dir.path().join("digest.bin");
    let out = bpf2sys(&[&"sign", &unsigned, &"--digest-out", &digest, &"--description", &"two step"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&digest).unwrap().len(), 32);
    assert_eq!(std::fs::read(&unsigned).unwrap(), image, "step 1 leaves the image alone");
    let signature = dir.path().join("sig.bin");
    if !sign_digest_with_openssl(&key, &digest, &signature) {
        return;
    }
    // Different options than step 1: refused, nothing written.
    let out = bpf2sys(&[&"sign", &unsigned, &"--cert", &cert, &"--signature-in", &signature]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("does not verify"), "{}", text(&out));
    assert_eq!(std::fs::read(&unsigned).unwrap(), image);
    let out =
        bpf2sys(&[&"sign", &unsigned, &"--cert", &cert, &"--signature-in", &signature, &"--description", &"two step"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = bpf2sys(&[&"verify-signature", &unsigned, &"--ca", &cert]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn pfx_password_comes_from_the_environment_and_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = new_test_cert(dir.path());
    let object = samples().into_iter().next().unwrap();
    let image = build_driver(&std::fs::read(&object).unwrap(), "x.o", &SessionOptions::default()).unwrap();
    let unsigned = dir.path().join("x.sys");
    std::fs::write(&unsigned, &image).unwrap();
    let out = bpf2sys(&[&"sign", &unsigned]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no signing key"), "{}", text(&out));
    let Some(pfx) = pfx(dir.path(), &key, &cert, "pfx-secret") else { return };
    let signed = dir.path().join("s.sys");
    let out = Command::new(env!("CARGO_BIN_EXE_bpf2sys"))
        .arg("sign")
        .arg(&unsigned)
        .arg("--pfx")
        .arg(&pfx)
        .arg("-o")
        .arg(&signed)
        .env("BPF2SYS_KEY_PASSWORD", "pfx-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_bpf2sys"))
        .arg("sign")
        .arg(&unsigned)
        .arg("--pfx")
        .arg(&pfx)
        .env("BPF2SYS_KEY_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("wrong password"), "{}", text(&out));
    // Signing in place: a signed input needs --replace.
    let out = bpf2sys(&[&"sign", &signed, &"--key", &key, &"--cert", &cert]);
    assert!(text(&out).contains("already carries a certificate table"), "{}", text(&out));
    let out = bpf2sys(&[&"sign", &signed, &"--key", &key, &"--cert", &cert, &"--replace"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = bpf2sys(&[&"verify-signature", &signed, &"--ca", &cert]);
    assert!(out.status.success(), "{}", text(&out));
}

/// On the real sample drivers: our Authenticode digest equals goblin's (an independent PE parser's hashed ranges)
/// before and after signing, and pefile (CI's BPF2SYS_PYTHON venv) finds the signed file's checksum valid.
#[test]
fn sample_driver_digests_match_goblin_and_pefile_accepts_the_checksum() {
    use bpf2sys_signing::pe::{authenticode_sha256, pad_to_8, PeLayout};
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let signer = bpf2sys_signing::test_cert::load_or_create(dir.path()).unwrap().signer;
    let python = std::env::var_os("BPF2SYS_PYTHON").map(PathBuf::from);
    if python.is_none() {
        eprintln!("SKIP part: BPF2SYS_PYTHON (a python with pefile) not set; pefile checksum not checked");
    }
    let mut checked = 0;
    for object in samples() {
        let name = object.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(mut image) = build_driver(&std::fs::read(&object).unwrap(), &name, &SessionOptions::default()) else {
            continue;
        };
        pad_to_8(&mut image);
        let signed = bpf2sys_signing::sign_pe(&image, &signer, &Default::default()).unwrap();
        for bytes in [&image, &signed] {
            let ours = authenticode_sha256(bytes, &PeLayout::parse(bytes).unwrap());
            let parsed = goblin::pe::PE::parse(bytes).unwrap();
            let mut hasher = Sha256::new();
            for range in parsed.authenticode_ranges() {
                hasher.update(range);
            }
            assert_eq!(ours.as_slice(), hasher.finalize().as_slice(), "{name}");
        }
        if let Some(python) = &python {
            let path = dir.path().join(format!("{name}.sys"));
            std::fs::write(&path, &signed).unwrap();
            let out = Command::new(python)
                .arg("-c")
                .arg("import sys, pefile; print(pefile.PE(sys.argv[1]).verify_checksum())")
                .arg(&path)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True", "{name}: {}", text(&out));
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} samples built");
}

#[cfg(unix)]
#[test]
fn cert_new_writes_the_key_private_and_sign_keeps_output_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = new_test_cert(dir.path());
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let image = build_driver(&std::fs::read(&samples()[0]).unwrap(), "x.o", &SessionOptions::default()).unwrap();
    let driver = dir.path().join("x.sys");
    std::fs::write(&driver, &image).unwrap();
    std::fs::set_permissions(&driver, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = bpf2sys(&[&"sign", &driver, &"--key", &key, &"--cert", &cert]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(&driver).unwrap().permissions().mode() & 0o777, 0o640, "in-place keeps the mode");
}
