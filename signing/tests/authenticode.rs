//! Authenticode signing of PE32+ images checked against independent implementations: the `authenticode` crate and
//! goblin (digest), osslsigncode (full verification), pefile (checksum); and our verifier against tampering.

mod common;

use bpf2sys_signing::pe::{self, PeLayout};
use bpf2sys_signing::verify::Rule;
use bpf2sys_signing::{sign_pe, verify_pe, SignOptions, VerifyOptions};
use common::*;
use sha2::{Digest, Sha256};

fn authenticode_crate_digest(image: &[u8]) -> Vec<u8> {
    let file = object::read::pe::PeFile64::parse(image).unwrap();
    let mut hasher = Sha256::new();
    authenticode::authenticode_digest(&file, &mut hasher).unwrap();
    hasher.finalize().to_vec()
}

fn goblin_digest(image: &[u8]) -> Vec<u8> {
    let parsed = goblin::pe::PE::parse(image).unwrap();
    let mut hasher = Sha256::new();
    for range in parsed.authenticode_ranges() {
        hasher.update(range);
    }
    hasher.finalize().to_vec()
}

#[test]
fn image_digest_equals_authenticode_crate_and_goblin_before_and_after_signing() {
    for spec in [
        ImageSpec::default(),
        ImageSpec { text_len: 0x200, rdata_len: 0x10, data_len: 0x8, seed: 7 },
        ImageSpec { text_len: 0x3001, rdata_len: 0x1000, data_len: 0x777, seed: 9 },
    ] {
        let mut image = build_image(&spec);
        pe::pad_to_8(&mut image);
        let layout = PeLayout::parse(&image).unwrap();
        let ours = pe::authenticode_sha256(&image, &layout);
        assert_eq!(ours.to_vec(), authenticode_crate_digest(&image), "{spec:?}");
        assert_eq!(ours.to_vec(), goblin_digest(&image), "{spec:?}");
        let signed = sign_pe(&image, &signer(), &SignOptions::default()).unwrap();
        let signed_layout = PeLayout::parse(&signed).unwrap();
        assert_eq!(pe::authenticode_sha256(&signed, &signed_layout), ours, "signing must not change the hash");
        assert_eq!(authenticode_crate_digest(&signed), ours.to_vec());
    }
}

#[test]
fn authenticode_crate_parses_our_signature_and_finds_the_digest() {
    let signed = sign_pe(&build_image(&ImageSpec::default()), &signer(), &SignOptions::default()).unwrap();
    let file = object::read::pe::PeFile64::parse(&*signed).unwrap();
    let mut count = 0;
    for entry in authenticode::AttributeCertificateIterator::new(&file).unwrap().unwrap() {
        let signature = entry.unwrap().get_authenticode_signature().unwrap();
        assert_eq!(signature.digest(), authenticode_crate_digest(&signed).as_slice());
        assert_eq!(signature.certificates().count(), 2, "leaf and CA are embedded");
        count += 1;
    }
    assert_eq!(count, 1);
}

#[test]
fn signed_image_layout_follows_the_pe_spec() {
    let image = build_image(&ImageSpec::default());
    let signed = sign_pe(&image, &signer(), &SignOptions::default()).unwrap();
    let layout = PeLayout::parse(&signed).unwrap();
    let (offset, size) = layout.certificate_table;
    assert_eq!(offset % 8, 0);
    assert_eq!(offset as usize + size as usize, signed.len(), "table ends the file");
    assert_eq!(size % 8, 0);
    assert_eq!(
        &signed[..image.len()],
        &image[..layout.checksum_offset]
            .iter()
            .chain(&signed[layout.checksum_offset..layout.checksum_offset + 4])
            .chain(&image[layout.checksum_offset + 4..layout.security_dir_offset])
            .chain(&signed[layout.security_dir_offset..layout.security_dir_offset + 8])
            .chain(&image[layout.security_dir_offset + 8..])
            .copied()
            .collect::<Vec<u8>>()[..]
    );
    assert_eq!(pe::recorded_checksum(&signed, &layout), pe::pe_checksum(&signed, layout.checksum_offset));
    let parsed = goblin::pe::PE::parse(&signed).unwrap();
    assert_eq!(parsed.certificates.len(), 1);
    let report = verify_pe(
        &signed,
        &VerifyOptions { trusted_cas: vec![cert_from_pem(&pki().ca_cert_pem)], ..Default::default() },
    );
    assert!(report.is_valid(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn osslsigncode_accepts_signed_images_and_rejects_tampered_copies() {
    if !have_osslsigncode() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki().ca_cert_pem);
    for (name, options) in [
        ("plain", SignOptions::default()),
        ("pagehashes", SignOptions { page_hashes: true, ..Default::default() }),
        (
            "opus",
            SignOptions {
                description: Some("bpf2sys sample".into()),
                url: Some("https://example.com/bpf2sys".into()),
                ..Default::default()
            },
        ),
    ] {
        let signed = sign_pe(&build_image(&ImageSpec::default()), &signer(), &options).unwrap();
        let path = write(dir.path(), &format!("{name}.sys"), &signed);
        let (ok, out) = osslsigncode_verify(&path, &ca, None);
        assert!(ok, "{name}: osslsigncode rejected our signature:\n{out}");
        assert!(!out.contains("MISMATCH"), "{name}:\n{out}");
        if options.page_hashes {
            assert!(out.contains("Page hash algorithm"), "{name}: page hashes not seen by osslsigncode:\n{out}");
        }
        let layout = PeLayout::parse(&signed).unwrap();
        let text = &layout.sections[0];
        let mut tampered = signed.clone();
        tampered[text.pointer_to_raw_data as usize + 0x123] ^= 0x01;
        let bad = write(dir.path(), &format!("{name}-tampered.sys"), &tampered);
        let (ok, out) = osslsigncode_verify(&bad, &ca, None);
        assert!(!ok, "{name}: osslsigncode accepted a tampered copy:\n{out}");
    }
}

#[test]
fn osslsigncode_rejects_a_signature_chained_to_another_ca() {
    if !have_osslsigncode() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (other_ca, _) = issue(&pki().leaf_key_pem, "unrelated", true);
    let other = write(dir.path(), "other-ca.pem", other_ca);
    let signed = sign_pe(&build_image(&ImageSpec::default()), &signer(), &SignOptions::default()).unwrap();
    let path = write(dir.path(), "a.sys", &signed);
    assert!(!osslsigncode_verify(&path, &other, None).0);
}

#[test]
fn pefile_reports_a_valid_checksum_on_signed_images() {
    let Some(python) = tool("python3") else {
        eprintln!("SKIP: python3 not installed");
        return;
    };
    // CI provides a venv with pefile (BPF2SYS_PYTHON); otherwise make one in the temp directory.
    let venv = std::env::temp_dir().join("bpf2sys-signing-pefile-venv");
    let venv_python =
        std::env::var_os("BPF2SYS_PYTHON").map(std::path::PathBuf::from).unwrap_or(venv.join("bin/python"));
    let ready = venv_python.is_file()
        && std::process::Command::new(&venv_python).args(["-c", "import pefile"]).status().is_ok_and(|s| s.success());
    if !ready {
        let made = std::process::Command::new(&python).arg("-m").arg("venv").arg(&venv).status();
        let installed = made.is_ok_and(|s| s.success())
            && std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "pefile==2024.8.26"])
                .status()
                .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("SKIP: could not create a venv with pefile (no PyPI access?)");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let signed = sign_pe(
        &build_image(&ImageSpec::default()),
        &signer(),
        &SignOptions { page_hashes: true, ..Default::default() },
    )
    .unwrap();
    let path = write(dir.path(), "a.sys", &signed);
    let out = std::process::Command::new(&venv_python)
        .arg("-c")
        .arg("import sys, pefile; pe = pefile.PE(sys.argv[1]); print(pe.verify_checksum(), hex(pe.OPTIONAL_HEADER.CheckSum), hex(pe.generate_checksum()))")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("True"), "pefile: {text}");
    let mut tampered = signed.clone();
    tampered[0x400] ^= 0x40;
    let bad = write(dir.path(), "b.sys", &tampered);
    let out = std::process::Command::new(&venv_python)
        .arg("-c")
        .arg("import sys, pefile; print(pefile.PE(sys.argv[1]).verify_checksum())")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("False"));
}

/// Every byte of a signed image is covered: flipping any one is reported, and (outside the CheckSum field, which
/// only the checksum covers) reported as something more specific than the checksum.
#[test]
fn verify_detects_a_flipped_byte_anywhere_in_the_file() {
    let signed = sign_pe(
        &build_image(&ImageSpec { text_len: 0x1100, rdata_len: 0x80, data_len: 0x40, seed: 3 }),
        &signer(),
        &SignOptions { page_hashes: true, ..Default::default() },
    )
    .unwrap();
    let options = VerifyOptions { trusted_cas: vec![cert_from_pem(&pki().ca_cert_pem)], ..Default::default() };
    assert!(verify_pe(&signed, &options).is_valid());
    let layout = PeLayout::parse(&signed).unwrap();
    let mut regions_seen = std::collections::BTreeSet::new();
    let mut only_checksum = Vec::new();
    for offset in 0..signed.len() {
        let mut tampered = signed.clone();
        tampered[offset] ^= 0x01;
        let report = verify_pe(&tampered, &options);
        assert!(!report.is_valid(), "flipped byte at {offset:#x} went unnoticed");
        let in_checksum = (layout.checksum_offset..layout.checksum_offset + 4).contains(&offset);
        if !in_checksum && !report.problems.iter().any(|p| p.rule != Rule::S7) {
            only_checksum.push(offset);
        }
        let region = if offset < layout.size_of_headers as usize {
            "headers".to_string()
        } else if offset >= layout.certificate_table.0 as usize {
            "certificate table".to_string()
        } else {
            layout
                .sections
                .iter()
                .find(|s| {
                    (s.pointer_to_raw_data as usize..(s.pointer_to_raw_data + s.size_of_raw_data) as usize)
                        .contains(&offset)
                })
                .map(|s| s.name.clone())
                .unwrap_or_else(|| "padding".into())
        };
        regions_seen.insert(region);
    }
    assert!(
        only_checksum.is_empty(),
        "flips only reported as a checksum problem at {only_checksum:x?} (certificate table at {:#x})",
        layout.certificate_table.0
    );
    let expected: std::collections::BTreeSet<String> =
        ["headers", "certificate table", ".text", ".rdata", ".data", ".reloc"].iter().map(|s| s.to_string()).collect();
    assert!(expected.is_subset(&regions_seen), "{regions_seen:?}");
}

#[test]
fn a_flipped_section_byte_is_reported_as_an_image_digest_and_page_hash_mismatch() {
    let signed = sign_pe(
        &build_image(&ImageSpec::default()),
        &signer(),
        &SignOptions { page_hashes: true, ..Default::default() },
    )
    .unwrap();
    let layout = PeLayout::parse(&signed).unwrap();
    let offset = layout.sections[0].pointer_to_raw_data as usize + 0x1010;
    let mut tampered = signed.clone();
    tampered[offset] ^= 0x80;
    let report = verify_pe(&tampered, &VerifyOptions::default());
    let rules: Vec<Rule> = report.problems.iter().map(|p| p.rule).collect();
    assert!(rules.contains(&Rule::S2), "{:?}", report.problems);
    assert!(rules.contains(&Rule::S7), "{:?}", report.problems);
    let page = report.problems.iter().find(|p| p.rule == Rule::S5).expect("page hash problem");
    let page_offset = layout.sections[0].pointer_to_raw_data + 0x1000;
    assert!(page.message.contains(&format!("{page_offset:#x}")), "{}", page.message);
}

#[test]
fn signing_a_signed_image_needs_replace_and_then_verifies() {
    let signed = sign_pe(&build_image(&ImageSpec::default()), &signer(), &SignOptions::default()).unwrap();
    let err = sign_pe(&signed, &signer(), &SignOptions::default()).unwrap_err();
    assert!(err.to_string().contains("already carries a certificate table"), "{err}");
    let resigned =
        sign_pe(&signed, &signer(), &SignOptions { replace_existing: true, page_hashes: true, ..Default::default() })
            .unwrap();
    assert!(verify_pe(&resigned, &VerifyOptions::default()).is_valid());
    assert_eq!(
        PeLayout::parse(&resigned).unwrap().certificate_table.0,
        PeLayout::parse(&signed).unwrap().certificate_table.0
    );
}

#[test]
fn malformed_images_are_errors_not_panics() {
    let image = build_image(&ImageSpec::default());
    for cut in [0, 1, 0x3c, 0x80, 0x100, 0x180, 0x300, 0x500, image.len() - 1] {
        let _ = sign_pe(&image[..cut], &signer(), &SignOptions::default());
        let _ = verify_pe(&image[..cut], &VerifyOptions::default());
    }
    let err = sign_pe(b"not a PE file at all", &signer(), &SignOptions::default()).unwrap_err();
    assert!(err.to_string().contains("MZ"), "{err}");
}

#[test]
fn lint_rules_pass_on_a_signed_image_and_do_not_apply_to_an_unsigned_one() {
    use bpf2sys_signing::lint::{check, RuleStatus};
    let mut image = build_image(&ImageSpec::default());
    assert!(matches!(check(&image)[6].status, RuleStatus::Fail(_)), "object's writer leaves CheckSum 0");
    let layout = PeLayout::parse(&image).unwrap();
    pe::update_checksum(&mut image, &layout);
    let unsigned = check(&image);
    let rules: Vec<Rule> = unsigned.iter().map(|o| o.rule).collect();
    assert_eq!(rules, [Rule::S1, Rule::S2, Rule::S3, Rule::S4, Rule::S5, Rule::S6, Rule::S7]);
    assert!(unsigned[..6].iter().all(|o| matches!(o.status, RuleStatus::NotApplicable(_))), "{unsigned:?}");
    assert_eq!(unsigned[6].status, RuleStatus::Pass, "the writer's checksum is valid");
    assert!(!bpf2sys_signing::lint::is_signed(&image));
    let signed = sign_pe(&image, &signer(), &SignOptions { page_hashes: true, ..Default::default() }).unwrap();
    for outcome in check(&signed) {
        assert_eq!(outcome.status, RuleStatus::Pass, "{outcome:?}");
    }
    let mut bad_checksum = signed.clone();
    let layout = PeLayout::parse(&signed).unwrap();
    bad_checksum[layout.checksum_offset] ^= 1;
    let outcomes = check(&bad_checksum);
    assert!(matches!(outcomes[6].status, RuleStatus::Fail(_)));
    assert!(outcomes[..6].iter().all(|o| o.status == RuleStatus::Pass), "{outcomes:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// The parsers never panic on arbitrary corruption of a signed image.
    #[test]
    fn verify_and_layout_never_panic_on_corrupted_images(edits in proptest::collection::vec((0usize..20_000, proptest::prelude::any::<u8>()), 1..8), cut in 0usize..20_000) {
        static SIGNED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let signed = SIGNED.get_or_init(|| sign_pe(&build_image(&ImageSpec::default()), &signer(), &SignOptions { page_hashes: true, ..Default::default() }).unwrap());
        let mut data = signed.clone();
        for (offset, value) in edits {
            let len = data.len();
            data[offset % len] = value;
        }
        data.truncate(cut.max(1).min(data.len()));
        let _ = verify_pe(&data, &VerifyOptions::default());
        let _ = bpf2sys_signing::lint::check(&data);
    }
}

#[test]
fn a_section_overlapping_the_headers_is_refused_before_signing() {
    // Issue 17 #4: page hashes over such an image were written and then rejected by verify_pe and osslsigncode.
    let mut image = build_image(&ImageSpec::default());
    let layout = PeLayout::parse(&image).unwrap();
    let section_table = {
        let e_lfanew = u32::from_le_bytes(image[0x3c..0x40].try_into().unwrap()) as usize;
        let size_of_optional = u16::from_le_bytes(image[e_lfanew + 20..e_lfanew + 22].try_into().unwrap()) as usize;
        e_lfanew + 24 + size_of_optional
    };
    let first_with_data = layout.sections.iter().position(|s| s.size_of_raw_data != 0).unwrap();
    let pointer = section_table + 40 * first_with_data + 20;
    image[pointer..pointer + 4].copy_from_slice(&0x100u32.to_le_bytes());
    let e = PeLayout::parse(&image).unwrap_err();
    assert!(e.to_string().contains("overlaps the headers"), "{e}");
    let e = sign_pe(&image, &signer(), &SignOptions { page_hashes: true, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("overlaps the headers"), "{e}");
}
