//! Fuzz the ELF front end: any byte string must load or give an `ElfError` — no panic, hang or huge allocation
//! (libFuzzer's -rss_limit_mb and -timeout enforce the last two).
//!
//! Seed corpus: the committed samples (`cp ../samples/*.o ../samples/variants/*.o corpus/elf_load/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(module) = bpf2sys::elf::load(data, "fuzz.o") {
        // Touch the result so the whole module is materialised and checked for internal consistency.
        for program in &module.programs {
            // Functions tile the instruction vector: entry at 0, subprograms appended back to back.
            let mut next = 0;
            for f in &program.functions {
                assert!(f.start == next && f.start < f.end, "function ranges are contiguous and non-empty");
                next = f.end;
            }
            assert_eq!(next, program.instructions.len(), "functions cover every slot");
            for line in &program.line_info {
                assert!(line.slot < program.instructions.len(), "line info past the program");
            }
        }
        for m in &module.maps {
            if let Some(inner) = m.inner_map_index {
                assert!(inner < module.maps.len(), "inner map index in range");
            }
        }
        for g in &module.global_sections {
            assert!(g.map_index < module.maps.len());
        }
    }
});
