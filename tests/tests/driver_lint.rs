//! The driver lint (driver-image-and-signing.md §5.2): a good image passes every rule, and each deliberately
//! broken image fails exactly the rule it breaks (the checksum is recomputed after each mutation, except for
//! the checksum rule itself).

mod driver_common;

use bpf2sys::compiled::Target;
use bpf2sys::link::image::write_image;
use bpf2sys::link::lint::{lint_image, RULES};
use bpf2sys::link::{image_input, LinkOptions};
use bpf2sys::lower::build_isa;
use bpf2sys_signing::pe::pe_checksum;
use driver_common::test_module;

fn good_image() -> Vec<u8> {
    good_image_for(Target::X64)
}

fn good_image_for(target: Target) -> Vec<u8> {
    let (module, compiled) = test_module(target, 32);
    let options = LinkOptions { target, ..LinkOptions::default() };
    bpf2sys::link::link_driver(&*build_isa(target).unwrap(), &module, &compiled, &options).unwrap()
}

/// Offsets into the headers.
struct Headers {
    coff: usize,
    opt: usize,
    table: usize,
    count: usize,
}

fn headers(image: &[u8]) -> Headers {
    let pe = u32::from_le_bytes(image[0x3c..0x40].try_into().unwrap()) as usize;
    let coff = pe + 4;
    let opt = coff + 20;
    let size_of_optional = u16::from_le_bytes([image[coff + 16], image[coff + 17]]) as usize;
    let count = u16::from_le_bytes([image[coff + 2], image[coff + 3]]) as usize;
    Headers { coff, opt, table: opt + size_of_optional, count }
}

fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn wr32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

/// The section header offset of `name`.
fn section(image: &[u8], name: &str) -> usize {
    let h = headers(image);
    (0..h.count)
        .map(|i| h.table + 40 * i)
        .find(|&s| image[s..s + 8].split(|&c| c == 0).next().unwrap() == name.as_bytes())
        .unwrap_or_else(|| panic!("no section {name}"))
}

/// File offset of an RVA.
fn file_offset(image: &[u8], rva: u32) -> usize {
    let h = headers(image);
    for i in 0..h.count {
        let s = h.table + 40 * i;
        let (va, raw, ptr) = (rd32(image, s + 12), rd32(image, s + 16), rd32(image, s + 20));
        if rva >= va && rva < va + raw {
            return (ptr + rva - va) as usize;
        }
    }
    panic!("rva {rva:#x} has no raw data")
}

/// `OptionalHeader.CheckSum`: e_lfanew + PE signature + COFF header + 64 (PE format), computed independently of
/// the reader under test, so it works on images whose other headers a test has broken.
fn checksum_offset(image: &[u8]) -> usize {
    u32::from_le_bytes(image[0x3c..0x40].try_into().unwrap()) as usize + 4 + 20 + 64
}

fn fix_checksum(image: &mut [u8]) {
    let off = checksum_offset(image);
    let sum = pe_checksum(image, off);
    wr32(image, off, sum);
}

/// Appends a 0x200-byte section `name` with `flags` after the last one.
fn add_section(image: &mut Vec<u8>, name: &str, flags: u32, raw: bool) {
    let h = headers(image);
    let last = h.table + 40 * (h.count - 1);
    let next_va = (rd32(image, last + 12) + rd32(image, last + 8)).div_ceil(0x1000) * 0x1000;
    let new = h.table + 40 * h.count;
    assert!(new + 40 <= rd32(image, h.opt + 60) as usize, "room for another section header");
    let file_offset = image.len() as u32;
    let mut header = [0u8; 40];
    header[..name.len()].copy_from_slice(name.as_bytes());
    wr32(&mut header, 8, 0x200);
    wr32(&mut header, 12, next_va);
    if raw {
        wr32(&mut header, 16, 0x200);
        wr32(&mut header, 20, file_offset);
        image.extend_from_slice(&[0xcc; 0x200]);
    }
    wr32(&mut header, 36, flags);
    image[new..new + 40].copy_from_slice(&header);
    wr16(image, h.coff + 2, h.count as u16 + 1);
    wr32(image, h.opt + 56, next_va + 0x1000);
}

/// Applies `mutate`, fixes the checksum unless `keep_checksum`, and asserts that exactly `rule` fails.
fn assert_breaks_only(rule: &str, keep_checksum: bool, mutate: impl FnOnce(&mut Vec<u8>)) {
    let mut image = good_image();
    mutate(&mut image);
    if !keep_checksum {
        fix_checksum(&mut image);
    }
    let report = lint_image(&image);
    assert_eq!(report.failed_rules(), [rule], "\n{report}");
}

const EXECUTE: u32 = 0x2000_0000;
const WRITE: u32 = 0x8000_0000;

#[test]
fn the_good_image_passes_every_rule() {
    let report = lint_image(&good_image());
    assert!(report.passed(), "{report}");
    assert_eq!(report.results.len(), RULES.len());
    assert_eq!(RULES.len(), 18, "H1–H7 and P1–P11");
}

#[test]
fn h1_writable_and_executable_section() {
    assert_breaks_only("H1", false, |img| {
        let s = section(img, ".data");
        let f = rd32(img, s + 36);
        wr32(img, s + 36, f | EXECUTE);
    });
}

#[test]
fn h2_section_not_page_aligned() {
    let (module, compiled) = test_module(Target::X64, 32);
    let mut input =
        image_input(&*build_isa(Target::X64).unwrap(), &module, &compiled, &LinkOptions::default()).unwrap();
    input.section_alignment = 0x200;
    let image = write_image(&input).unwrap();
    let report = lint_image(&image);
    assert_eq!(report.failed_rules(), ["H2"], "\n{report}");
}

#[test]
fn h3_iat_in_executable_section() {
    assert_breaks_only("H3", false, |img| {
        let s = section(img, ".rdata");
        let f = rd32(img, s + 36);
        wr32(img, s + 36, f | EXECUTE);
    });
}

#[test]
fn h4_base_relocation_crossing_a_page() {
    assert_breaks_only("H4", false, |img| {
        let h = headers(img);
        let reloc_rva = rd32(img, h.opt + 112 + 8 * 5);
        let block = file_offset(img, reloc_rva);
        // First entry of the first block: DIR64 at page offset 0xffc.
        wr16(img, block + 8, (10 << 12) | 0xffc);
    });
}

#[test]
fn h5_no_nx_compat() {
    assert_breaks_only("H5", false, |img| {
        let o = headers(img).opt + 70;
        let v = u16::from_le_bytes([img[o], img[o + 1]]);
        wr16(img, o, v & !0x0100);
    });
}

#[test]
fn h6_writable_discardable_code_section() {
    // Code content without execute rights, so only H6 (not H1) applies.
    assert_breaks_only("H6", false, |img| add_section(img, "INIT", 0x0200_0000 | 0x20 | 0x4000_0000 | WRITE, true));
}

#[test]
fn h7_import_outside_the_allow_list() {
    assert_breaks_only("H7", false, |img| {
        let at = img.windows(22).position(|w| w == b"RtlQueryRegistryValues").unwrap();
        img[at..at + 22].copy_from_slice(b"MmMapIoSpace\0\0\0\0\0\0\0\0\0\0");
    });
}

#[test]
fn p1_dll_characteristic() {
    assert_breaks_only("P1", false, |img| {
        let o = headers(img).coff + 18;
        let v = u16::from_le_bytes([img[o], img[o + 1]]);
        wr16(img, o, v | 0x2000);
    });
}

#[test]
fn p2_wrong_subsystem() {
    assert_breaks_only("P2", false, |img| {
        let o = headers(img).opt + 68;
        wr16(img, o, 2);
    });
}

#[test]
fn p3_wrong_size_of_image() {
    assert_breaks_only("P3", false, |img| {
        let o = headers(img).opt + 56;
        let v = rd32(img, o);
        wr32(img, o, v + 0x1000);
    });
}

#[test]
fn p4_section_without_not_paged() {
    assert_breaks_only("P4", false, |img| {
        let s = section(img, ".data");
        let f = rd32(img, s + 36);
        wr32(img, s + 36, f & !0x0800_0000);
    });
}

#[test]
fn p5_force_integrity_with_raw_uninitialized_data() {
    assert_breaks_only("P5", false, |img| {
        add_section(img, ".bss", 0x80 | 0x0800_0000 | 0x4000_0000 | WRITE, true);
        let o = headers(img).opt + 70;
        let v = u16::from_le_bytes([img[o], img[o + 1]]);
        wr16(img, o, v | 0x0080);
    });
}

#[test]
fn p6_entry_point_outside_code() {
    assert_breaks_only("P6", false, |img| {
        let rdata = rd32(img, section(img, ".rdata") + 12);
        let o = headers(img).opt + 16;
        wr32(img, o, rdata);
    });
}

#[test]
fn p7_unsorted_pdata() {
    assert_breaks_only("P7", false, |img| {
        let h = headers(img);
        let pdata = file_offset(img, rd32(img, h.opt + 112 + 8 * 3));
        let (a, b) = (img[pdata..pdata + 12].to_vec(), img[pdata + 12..pdata + 24].to_vec());
        img[pdata..pdata + 12].copy_from_slice(&b);
        img[pdata + 12..pdata + 24].copy_from_slice(&a);
    });
}

#[test]
fn p7_arm64_xdata_that_overlaps_the_next_entry_or_lacks_end() {
    let image = good_image_for(Target::Arm64);
    assert!(lint_image(&image).passed(), "{}", lint_image(&image));
    let h = headers(&image);
    let pdata = file_offset(&image, rd32(&image, h.opt + 112 + 8 * 3));
    let xdata = file_offset(&image, rd32(&image, pdata + 4));
    // FunctionLength stretched over the next entry.
    let mut stretched = image.clone();
    wr32(&mut stretched, xdata, rd32(&image, xdata) | 0x3ffff);
    fix_checksum(&mut stretched);
    assert_eq!(lint_image(&stretched).failed_rules(), ["P7"], "\n{}", lint_image(&stretched));
    // Unwind codes without `end`.
    let mut endless = image.clone();
    let header = rd32(&image, xdata);
    let (scopes, words) = ((header >> 22) & 0x1f, header >> 27);
    assert!(words > 0);
    let codes = xdata + 4 + 4 * scopes as usize;
    endless[codes..codes + 4 * words as usize].fill(0xe3);
    fix_checksum(&mut endless);
    assert_eq!(lint_image(&endless).failed_rules(), ["P7"], "\n{}", lint_image(&endless));
}

#[test]
fn p8_guard_cf_without_load_config() {
    assert_breaks_only("P8", false, |img| {
        let o = headers(img).opt + 70;
        let v = u16::from_le_bytes([img[o], img[o + 1]]);
        wr16(img, o, v | 0x4000);
    });
}

#[test]
fn p9_import_from_a_user_mode_dll() {
    assert_breaks_only("P9", false, |img| {
        let at = img.windows(10).position(|w| w == b"NETIO.SYS\0").unwrap();
        img[at..at + 9].copy_from_slice(b"KBDUS.DLL");
    });
}

#[test]
fn p10_old_linker_version() {
    assert_breaks_only("P10", false, |img| {
        let o = headers(img).opt + 2;
        img[o] = 9;
    });
}

#[test]
fn p11_wrong_checksum() {
    assert_breaks_only("P11", true, |img| {
        let o = checksum_offset(img);
        img[o] ^= 1;
    });
}

#[test]
fn a_truncated_file_fails_the_structure_rules_without_panicking() {
    let image = good_image();
    for len in [0, 2, 0x40, 0x100, 0x200, image.len() / 2] {
        let report = lint_image(&image[..len]);
        assert!(!report.passed(), "truncated to {len} bytes");
    }
}

mod robustness {
    use super::*;
    use bpf2sys_tests::emulator::parse_native_file;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Corrupt headers, section tables or directory contents never make the lint or the user-mode parser
        /// panic; the lint then reports some failing rule or still passes (if the bytes changed nothing it checks).
        #[test]
        fn corrupted_images_never_panic(edits in proptest::collection::vec((0usize..0x5000, any::<u8>()), 1..16), cut in 0usize..0x6000) {
            let mut image = good_image();
            for (at, value) in edits {
                if at < image.len() {
                    image[at] = value;
                }
            }
            let _ = lint_image(&image);
            let _ = parse_native_file(&image);
            let truncated = &image[..cut.min(image.len())];
            let report = lint_image(truncated);
            if truncated.len() < image.len() {
                prop_assert!(!report.passed() || truncated.len() >= image.len());
            }
            let _ = parse_native_file(truncated);
        }

        /// Extreme values in 32-bit header and directory fields (RVAs near 4 GiB, sizes that wrap) make no RVA
        /// arithmetic overflow (issue 17: `check` panicked on a mutated driver's section table).
        #[test]
        fn extreme_field_values_never_panic(
            edits in proptest::collection::vec((0usize..0x400, prop_oneof![Just(u32::MAX), Just(0xffff_fff0u32), Just(0x8000_0000u32), any::<u32>()]), 1..6)
        ) {
            let mut image = good_image();
            for (field, value) in edits {
                let at = field * 4;
                if at + 4 <= image.len() {
                    image[at..at + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            let _ = lint_image(&image);
            let _ = bpf2sys::link::lint::lint_driver(&image);
        }
    }
}
