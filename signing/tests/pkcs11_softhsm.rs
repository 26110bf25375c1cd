//! PKCS#11 signing against a SoftHSM2 token that the test creates in a temporary directory (SOFTHSM2_CONF).
//! The key is imported into the token; signing goes through the token, never through the key file.

mod common;

use bpf2sys_signing::{sign_pe, verify_pe, PasswordSource, Pkcs11KeySpec, SignOptions, Signer, VerifyOptions};
use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, CertificateType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "bpf2sys-test";
const USER_PIN: &str = "56781234";

fn softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test: SOFTHSM2_CONF is process-wide and the module is initialised once per process.
#[test]
fn pkcs11_softhsm2_token_signs_drivers_that_verify() {
    let (Some(module), Some(_)) = (softhsm_module(), tool("softhsm2-util")) else {
        eprintln!("SKIP: softhsm2 is not installed (apt-get install softhsm2)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = write(
        dir.path(),
        "softhsm2.conf",
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    );
    // SAFETY: this binary has a single test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var("BPF2SYS_TEST_PKCS11_PIN", USER_PIN);
    }
    run(Command::new("softhsm2-util").args([
        "--init-token",
        "--free",
        "--label",
        TOKEN,
        "--so-pin",
        "12345678",
        "--pin",
        USER_PIN,
    ]));
    let key = write(dir.path(), "key.pem", &pki().leaf_key_pem);
    run(Command::new("softhsm2-util").args(["--import"]).arg(&key).args([
        "--token",
        TOKEN,
        "--label",
        "driver-signing",
        "--id",
        "01",
        "--pin",
        USER_PIN,
    ]));
    std::fs::remove_file(&key).unwrap();

    let chain = write(dir.path(), "chain.pem", format!("{}{}", pki().leaf_cert_pem, pki().ca_cert_pem));
    let spec = Pkcs11KeySpec {
        module: module.clone(),
        token_label: TOKEN.into(),
        key_label: "driver-signing".into(),
        pin: PasswordSource::Env("BPF2SYS_TEST_PKCS11_PIN".into()),
    };
    let signer = Signer::from_pkcs11(&spec, Some(&chain)).unwrap();
    assert!(signer.describe().contains("PKCS#11"));
    let image = build_image(&ImageSpec::default());
    let signed = sign_pe(&image, &signer, &SignOptions { page_hashes: true, ..Default::default() }).unwrap();
    let trusted = VerifyOptions { trusted_cas: vec![cert_from_pem(&pki().ca_cert_pem)], ..Default::default() };
    let report = verify_pe(&signed, &trusted);
    assert!(report.is_valid(), "{:?}", report.problems);
    if have_osslsigncode() {
        let ca = write(dir.path(), "ca.pem", &pki().ca_cert_pem);
        let path = write(dir.path(), "hsm.sys", &signed);
        let (ok, out) = osslsigncode_verify(&path, &ca, None);
        assert!(ok, "{out}");
    }

    // Errors name what is wrong. (Login state is per process and token: close the first session first.)
    drop(signer);
    let wrong_pin = write(dir.path(), "wrong-pin", "00000000");
    let err =
        Signer::from_pkcs11(&Pkcs11KeySpec { pin: PasswordSource::File(wrong_pin), ..spec.clone() }, Some(&chain))
            .err()
            .unwrap();
    assert!(err.to_string().contains("C_Login"), "{err}");
    let err =
        Signer::from_pkcs11(&Pkcs11KeySpec { key_label: "absent".into(), ..spec.clone() }, Some(&chain)).err().unwrap();
    assert!(err.to_string().contains("no private key labelled \"absent\""), "{err}");
    let err =
        Signer::from_pkcs11(&Pkcs11KeySpec { token_label: "nope".into(), ..spec.clone() }, Some(&chain)).err().unwrap();
    assert!(err.to_string().contains("no token labelled \"nope\""), "{err}");
    let err = Signer::from_pkcs11(&spec, None).err().unwrap();
    assert!(err.to_string().contains("no certificate"), "{err}");

    // With the certificate stored on the token next to the key, no certificate file is needed.
    {
        let context = Pkcs11::new(&module).unwrap();
        let _ = context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = context
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| context.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
            .unwrap();
        let session = context.open_rw_session(slot).unwrap();
        session.login(UserType::User, Some(&AuthPin::from(USER_PIN.to_string()))).unwrap();
        let leaf = cert_from_pem(&pki().leaf_cert_pem);
        let leaf_der = der::Encode::to_der(&leaf).unwrap();
        let subject_der = der::Encode::to_der(&leaf.tbs_certificate.subject).unwrap();
        session
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Label(b"driver-signing".to_vec()),
                Attribute::Id(vec![1]),
                Attribute::Subject(subject_der),
                Attribute::Value(leaf_der),
            ])
            .unwrap();
    }
    let signer = Signer::from_pkcs11(&spec, None).unwrap();
    assert_eq!(signer.chain().len(), 1);
    let signed = sign_pe(&image, &signer, &SignOptions::default()).unwrap();
    let report = verify_pe(&signed, &trusted);
    assert!(report.is_valid(), "{:?}", report.problems);
}
