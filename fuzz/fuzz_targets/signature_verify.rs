//! Fuzz the signature parsers: PE layout, WIN_CERTIFICATE table, PKCS#7/SpcIndirectDataContent, page hashes and
//! timestamp tokens. Any byte string must verify, fail with problems, or lint; never panic or hang.
//!
//! Seed corpus: signed drivers (`cargo xtask build-driver --out corpus/signature_verify`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let report = bpf2sys_signing::verify_pe(data, &bpf2sys_signing::VerifyOptions::default());
    // A signature can only be valid if the file has a certificate table the layout parser accepts.
    if report.is_valid() {
        let layout = bpf2sys_signing::pe::PeLayout::parse(data).expect("valid signature implies parseable headers");
        assert!(layout.is_signed());
    }
    let outcomes = bpf2sys_signing::lint::check(data);
    assert_eq!(outcomes.len(), 7);
});
