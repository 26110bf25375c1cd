//! Fuzz the ELF front end: any byte string must load or give an `ElfError` — no panic, hang or huge allocation
//! (libFuzzer's -rss_limit_mb and -timeout enforce the last two).
//!
//! Seed corpus: the committed samples, each prefixed with a selector byte
//! (`for f in ../samples/*.o ../samples/variants/*.o ../samples/linux/*.o; do (printf '\0'; cat $f) > corpus/elf_load/$(basename $f); done`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the platform conventions (Windows or Linux legacy records and map numbering).
    let Some((&selector, data)) = data.split_first() else { return };
    let conventions =
        if selector & 1 == 0 { bpf2sys::elf::ObjectConventions::Windows } else { bpf2sys::elf::ObjectConventions::Linux };
    if let Ok(module) = bpf2sys::elf::load_with(data, "fuzz.o", conventions) {
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
        // kfunc calls name declared kfuncs; legacy records name maps; the platform checks answer.
        for program in &module.programs {
            for insn in &program.instructions {
                if let bpf2sys::isa::Instruction::CallBtf { btf_id, .. } = *insn {
                    assert!(module.kfuncs.iter().any(|k| i64::from(k.id) == i64::from(btf_id)), "undeclared kfunc");
                }
            }
        }
        for r in &module.legacy_map_records {
            assert!(r.map_index < module.maps.len(), "legacy record names a map");
        }
        let _ = bpf2sys::platform::windows::WINDOWS.check_maps(&module.maps);
        let _ = bpf2sys::platform::linux::LINUX.check_maps(&module.maps);
    }
});
