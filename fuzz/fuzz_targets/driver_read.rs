//! Fuzz the `.sys` reader `bpf2sys inspect` uses: the section table, the metadata table found by its shape, the
//! callbacks evaluated from their x64 or ARM64 code, every array the runtime validates, and user mode's view.
//! Any byte string must read or fail with an error; never panic or hang.
//!
//! Seed corpus: drivers (`cargo xtask build-driver --out corpus/driver_read`, and `--target arm64`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(driver) = bpf2sys_emulator::read_driver_file(data) {
        // What the reader returns is what it validated: programs reference only maps that exist.
        let maps = driver.metadata.maps.len();
        assert!(driver.metadata.programs.iter().all(|p| p.referenced_maps.iter().all(|m| (*m as usize) < maps)));
    }
    let _ = bpf2sys_signing::pe::PeHeaders::parse(data).map(|h| h.imports(data));
});
