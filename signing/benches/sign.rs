//! Cost of signing and verifying a driver-sized PE image (8 KiB, like the sample drivers) with a cached RSA-3072
//! test key: `cargo bench -p bpf2sys-signing --bench sign`.

use bpf2sys_signing::pe::{pad_to_8, update_checksum, PeLayout};
use bpf2sys_signing::{sign_pe, verify_pe, SignOptions, VerifyOptions};
use criterion::{criterion_group, criterion_main, Criterion};

// The driver-shaped test image the signing tests use, so the bench signs what they check.
#[path = "../tests/common/mod.rs"]
mod common;

fn image() -> Vec<u8> {
    // Headers, .text, .rdata, .data and .reloc: 8 KiB on disk, like the sample drivers.
    let spec = common::ImageSpec { text_len: 0x1200, rdata_len: 0x600, data_len: 0x200, seed: 1 };
    let mut buffer = common::build_image(&spec);
    pad_to_8(&mut buffer);
    let layout = PeLayout::parse(&buffer).unwrap();
    update_checksum(&mut buffer, &layout);
    assert_eq!(buffer.len(), 8 * 1024);
    buffer
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let signer = bpf2sys_signing::test_cert::load_or_create(dir.path()).unwrap().signer;
    let image = image();
    c.bench_function("sign_pe 8KiB RSA-3072", |b| {
        b.iter(|| sign_pe(&image, &signer, &SignOptions::default()).unwrap())
    });
    let page_hashes = SignOptions { page_hashes: true, ..Default::default() };
    c.bench_function("sign_pe 8KiB RSA-3072 page hashes", |b| {
        b.iter(|| sign_pe(&image, &signer, &page_hashes).unwrap())
    });
    let signed = sign_pe(&image, &signer, &SignOptions::default()).unwrap();
    c.bench_function("verify_pe 8KiB RSA-3072", |b| {
        b.iter(|| assert!(verify_pe(&signed, &VerifyOptions::default()).is_valid()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
