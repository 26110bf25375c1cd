//! Cost of signing and verifying a driver-sized PE image (8 KiB, like the sample drivers) with a cached RSA-3072
//! test key: `cargo bench -p bpf2sys-signing --bench sign`.

use bpf2sys_signing::pe::{pad_to_8, update_checksum, PeLayout};
use bpf2sys_signing::{sign_pe, verify_pe, SignOptions, VerifyOptions};
use criterion::{criterion_group, criterion_main, Criterion};
use object::pe;
use object::write::pe::{NtHeaders, Writer};

fn image() -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut writer = Writer::new(true, 0x1000, 0x200, &mut buffer);
    writer.reserve_dos_header_and_stub();
    writer.reserve_nt_headers(16);
    writer.reserve_section_headers(2);
    let text = writer.reserve_section(*b".text\0\0\0", 0x6800_0020, 0x1000, 0x1000);
    let data = writer.reserve_section(*b".rdata\0\0", 0x4800_0040, 0x800, 0x800);
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
    writer.write_section(text.file_offset, &[0xcc; 0x1000]);
    writer.write_section(data.file_offset, &[0x11; 0x800]);
    pad_to_8(&mut buffer);
    let layout = PeLayout::parse(&buffer).unwrap();
    update_checksum(&mut buffer, &layout);
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
