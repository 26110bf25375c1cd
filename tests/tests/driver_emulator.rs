//! The emulated runtime refuses what eBPF for Windows refuses: a corrupted program-info hash, an invalid
//! metadata header, a program array out of name order (user mode would mis-pair handles), an unknown import.

mod driver_common;

use bpf2sys::compiled::Target;
use bpf2sys::link::{link_driver, LinkOptions};
use bpf2sys::lower::build_isa;
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys_tests::emulator::{self, windows_program_info_hash, EmulatorError};
use driver_common::test_module;

fn image() -> Vec<u8> {
    let (module, compiled) = test_module(Target::X64, 32);
    link_driver(&*build_isa(Target::X64).unwrap(), &module, &compiled, &LinkOptions::default()).unwrap()
}

/// File offset of the raw data of section `name`.
fn section_data(image: &[u8], name: &str) -> usize {
    let pe = goblin::pe::PE::parse(image).unwrap();
    pe.sections.iter().find(|s| s.name().unwrap() == name).unwrap().pointer_to_raw_data as usize
}

#[test]
fn a_corrupted_program_info_hash_is_refused() {
    let mut image = image();
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    let hash = windows_program_info_hash(&emulator::Guid(xdp.guid.to_bytes()), &[1], &[]).unwrap();
    let at = image.windows(32).position(|w| w == hash.as_slice()).expect("the module carries the runtime's hash");
    image[at] ^= 0xff;
    match emulator::emulator().load(&image) {
        Err(EmulatorError::Program { program, message }) => {
            assert_eq!(program, "xdp_count");
            assert!(message.contains("hash mismatch"), "{message}");
        }
        other => panic!("expected a hash mismatch, got {:?}", other.err()),
    }
}

#[test]
fn an_invalid_program_entry_header_is_refused() {
    let mut image = image();
    let programs = section_data(&image, "programs");
    image[programs + 16] = 150; // header.size of entry 0: not 144 or 154
    match emulator::emulator().load(&image) {
        Err(EmulatorError::UserMode(m)) | Err(EmulatorError::Metadata(m)) => assert!(m.contains("150"), "{m}"),
        other => panic!("expected a header error, got {:?}", other.err()),
    }
}

#[test]
fn programs_out_of_name_order_are_refused() {
    let mut image = image();
    let programs = section_data(&image, "programs");
    // Entries 1 (xdp_count) and 2 (xdp_entry) have pointers at the same offsets, so their base relocations
    // stay valid after the swap.
    let (a, b) = (programs + 144, programs + 288);
    let first = image[a..a + 144].to_vec();
    image.copy_within(b..b + 144, a);
    image[b..b + 144].copy_from_slice(&first);
    match emulator::emulator().load(&image) {
        Err(EmulatorError::Mismatch(m)) => assert!(m.contains("sorted by name"), "{m}"),
        other => panic!("expected a user-mode/kernel mismatch, got {:?}", other.err()),
    }
}

#[test]
fn an_import_the_kernel_does_not_export_is_refused() {
    let mut image = image();
    let at = image.windows(17).position(|w| w == b"NmrRegisterClient").unwrap();
    image[at..at + 17].copy_from_slice(b"NmrRegisterClienX");
    match emulator::emulator().load(&image) {
        Err(EmulatorError::UnresolvedImport(name)) => assert_eq!(name, "NETIO.SYS!NmrRegisterClienX"),
        other => panic!("expected an unresolved import, got {:?}", other.err()),
    }
}

#[test]
fn driver_entry_requires_a_16_byte_binary_npi_module_id() {
    use bpf2sys_tests::emulator::{kernel, NpiModuleIdValue};
    let cases = [
        (NpiModuleIdValue::Missing, kernel::STATUS_OBJECT_NAME_NOT_FOUND),
        (NpiModuleIdValue::Custom(4, vec![1, 0, 0, 0]), kernel::STATUS_INVALID_PARAMETER),
        (NpiModuleIdValue::Custom(3, vec![7; 15]), kernel::STATUS_INVALID_PARAMETER),
    ];
    for (value, status) in cases {
        let mut emulator = emulator::emulator();
        emulator.npi_module_id = value.clone();
        match emulator.load(&image()) {
            Err(EmulatorError::DriverEntry(m)) => {
                assert!(m.contains(&format!("{:#010x}", status as u32)), "{value:?}: {m}")
            }
            other => panic!("{value:?}: expected DriverEntry to fail, got {:?}", other.err()),
        }
        assert!(kernel::with_kernel(|k| k.client.is_none()), "{value:?}: no NMR registration after a failed query");
    }
}
