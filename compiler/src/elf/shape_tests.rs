//! Object shapes clang 14 does not emit, made from committed samples by rewriting ELF fields (older clang/LLVM
//! conventions, coverage §4.1–§4.2) or written with the `object` crate's ELF writer, and the refusals that must
//! name the symbol, section or offset.

use object::read::elf::{FileHeader, SectionHeader};
use object::LittleEndian as LE;

use super::*;
use crate::isa::Instruction;
use crate::platform::{linux::LINUX, windows::WINDOWS};
use crate::program::{LegacyLayout, MapType};

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (file offset, size) of every section of type `sh_type`, with its name.
fn sections_of(bytes: &[u8], sh_type: u32) -> Vec<(String, usize, usize, u32)> {
    let header = object::elf::FileHeader64::<LE>::parse(bytes).unwrap();
    let table = header.sections(LE, bytes).unwrap();
    table
        .iter()
        .filter(|sh| sh.sh_type(LE) == sh_type)
        .map(|sh| {
            let name = String::from_utf8_lossy(table.section_name(LE, sh).unwrap()).into_owned();
            (name, sh.sh_offset(LE) as usize, sh.sh_size(LE) as usize, sh.sh_info(LE))
        })
        .collect()
}

/// Rewrites every `STT_FUNC` `STB_GLOBAL` symbol into `STT_NOTYPE` of size 0, as clang before LLVM 12 wrote
/// program entries.
fn programs_as_notype(bytes: &mut [u8]) -> usize {
    let (_, at, size, _) = sections_of(bytes, elf::SHT_SYMTAB).remove(0);
    let mut rewritten = 0;
    for sym in (at..at + size).step_by(24) {
        let info = bytes[sym + 4];
        if info == (elf::STB_GLOBAL << 4) | elf::STT_FUNC {
            bytes[sym + 4] = (elf::STB_GLOBAL << 4) | elf::STT_NOTYPE;
            bytes[sym + 16..sym + 24].fill(0);
            rewritten += 1;
        }
    }
    rewritten
}

/// Rewrites the type of every relocation of section `target` from `from` to `to`.
fn retype_relocations(bytes: &mut [u8], target: &str, from: u32, to: u32) -> usize {
    let rel = sections_of(bytes, elf::SHT_REL);
    let (_, at, size, _) = rel.into_iter().find(|(n, ..)| n == &format!(".rel{target}")).unwrap();
    let mut n = 0;
    for r in (at..at + size).step_by(16) {
        if u32::from_le_bytes(bytes[r + 8..r + 12].try_into().unwrap()) == from {
            bytes[r + 8..r + 12].copy_from_slice(&to.to_le_bytes());
            n += 1;
        }
    }
    n
}

#[test]
fn notype_global_program_symbols_are_programs_like_func_symbols() {
    for name in ["tail_call.o", "droppacket.o", "bpf_calls.o"] {
        let original = load(&sample(name), name).unwrap();
        let mut bytes = sample(name);
        assert!(programs_as_notype(&mut bytes) > 0, "{name} has global functions");
        let old_style = load(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(old_style.programs, original.programs, "{name}");
    }
}

#[test]
fn r_bpf_64_64_in_maps_and_code_relocates_like_the_newer_types() {
    let original = load(&sample("map_in_map.o"), "map_in_map.o").unwrap();
    let mut bytes = sample("map_in_map.o");
    assert!(retype_relocations(&mut bytes, ".maps", R_BPF_64_ABS64, R_BPF_64_64) > 0);
    assert_eq!(load(&bytes, "map_in_map.o").unwrap(), original, "values relocated with R_BPF_64_64");

    // libbpf decides by the instruction: a call relocated with R_BPF_64_64 is still a call.
    let original = load(&sample("bpf_calls.o"), "bpf_calls.o").unwrap();
    let mut bytes = sample("bpf_calls.o");
    assert!(retype_relocations(&mut bytes, "xdp", R_BPF_64_32, R_BPF_64_64) > 0);
    assert_eq!(load(&bytes, "bpf_calls.o").unwrap(), original);

    let mut bytes = sample("map_in_map.o");
    retype_relocations(&mut bytes, ".maps", R_BPF_64_ABS64, R_BPF_64_ABS32);
    let err = load(&bytes, "map_in_map.o").unwrap_err().to_string();
    assert!(err.starts_with("section '.maps', offset 0x") && err.contains("R_BPF_64_ABS64 (2) or R_BPF_64_64 (1)"));
}

/// A minimal object: one `xdp` program `lddw r1, <symbol>; mov r0, 0; exit` (the lddw only if `reference`),
/// and a `.rodata` section with `contents` and, if `variable`, an object symbol in it.
fn rodata_object(reference: bool, variable: bool) -> Vec<u8> {
    use object::write::{Object as Writer, Relocation as WriterRelocation, Symbol as WriterSymbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let mut w = Writer::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let code = w.add_section(Vec::new(), b"xdp".to_vec(), SectionKind::Text);
    let mut insns: Vec<u8> = Vec::new();
    if reference {
        insns.extend([0x18, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    insns.extend([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]);
    w.append_section_data(code, &insns, 8);
    w.add_symbol(WriterSymbol {
        name: b"prog".to_vec(),
        value: 0,
        size: insns.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(code),
        flags: SymbolFlags::None,
    });
    let rodata = w.add_section(Vec::new(), b".rodata".to_vec(), SectionKind::ReadOnlyData);
    w.append_section_data(rodata, &[7u8; 16], 8);
    if variable {
        w.add_symbol(WriterSymbol {
            name: b"table".to_vec(),
            value: 0,
            size: 16,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(rodata),
            flags: SymbolFlags::None,
        });
    }
    if reference {
        let symbol = w.section_symbol(rodata);
        let flags = RelocationFlags::Elf { r_type: R_BPF_64_64 };
        w.add_relocation(code, WriterRelocation { offset: 0, symbol, addend: 0, flags }).unwrap();
    }
    w.write().unwrap()
}

#[test]
fn rodata_without_references_or_variables_makes_no_map() {
    let unused = load(&rodata_object(false, false), "consts.o").unwrap();
    assert!(unused.maps.is_empty() && unused.global_sections.is_empty());
    let with_variable = load(&rodata_object(false, true), "consts.o").unwrap();
    assert_eq!(with_variable.maps[0].name, "consts.rodata");
    let referenced = load(&rodata_object(true, false), "consts.o").unwrap();
    assert_eq!(referenced.global_sections[0].section_name, ".rodata");
    assert!(matches!(
        referenced.programs[0].instructions[0],
        Instruction::LoadImm64 { kind: crate::isa::Imm64Kind::MapIndexValue, imm: 0, next_imm: 0, .. }
    ));
}

#[test]
fn named_global_sections_are_maps_named_like_libbpf() {
    let m = load(&sample("named_globals.o"), "named_globals.o").unwrap();
    let names: Vec<&str> = m.global_sections.iter().map(|g| g.section_name.as_str()).collect();
    assert_eq!(names, [".rodata.config", ".data.custom", ".bss.counters", ".rodata.str1.1"]);
    for g in &m.global_sections {
        assert_eq!(m.maps[g.map_index].name, g.section_name, "a dotted section name is its own map name");
        assert_eq!(m.maps[g.map_index].map_type, MapType::ARRAY);
    }
    assert_eq!(m.global_sections[3].initial_data, b"short packet: %u bytes\0");
}

#[test]
fn legacy_inner_map_index_is_module_wide() {
    let m = load(&sample("legacy_inner_maps.o"), "legacy_inner_maps.o").unwrap();
    assert_eq!(m.maps[0].inner_map_index, Some(1));
    assert_eq!(m.legacy_map_records[2].section, "maps/inner");
    assert_eq!(m.legacy_map_records[2].offset, 32);

    // An index past every legacy map of the module is refused, naming the map and its section.
    let mut bytes = sample("legacy_inner_maps.o");
    let header = object::elf::FileHeader64::<LE>::parse(&*bytes).unwrap();
    let table = header.sections(LE, &*bytes).unwrap();
    let at = table.section_by_name(LE, b"maps/outer").unwrap().1.sh_offset(LE) as usize;
    bytes[at + 16..at + 20].copy_from_slice(&3u32.to_le_bytes());
    let err = load(&bytes, "legacy_inner_maps.o").unwrap_err().to_string();
    assert_eq!(
        err,
        "map 'port_tables': inner_map_idx 3 (in 'maps/outer') does not name another of the module's 3 legacy maps"
    );
}

#[test]
fn linux_legacy_records_are_decoded_by_their_size() {
    let path = |n: &str| format!("linux/{n}");
    let m = load_with(&sample(&path("bpf_load_map_def.o")), "x.o", ObjectConventions::Linux).unwrap();
    assert_eq!(m.legacy_map_records[0].record_size, 28);
    assert_eq!(m.legacy_map_records[0].layout, LegacyLayout::LinuxBpfMapDef);
    assert_eq!((m.maps[1].map_type, m.maps[1].inner_map_index), (MapType(12), Some(0)), "array_of_maps, inner 0");
    let m = load_with(&sample(&path("iproute2_maps.o")), "x.o", ObjectConventions::Linux).unwrap();
    assert_eq!(m.legacy_map_records[0].layout, LegacyLayout::LinuxBpfElfMap);
    assert_eq!((m.maps[0].id, m.maps[0].pinning), (7, crate::program::Pinning::ByName));
    assert_eq!((m.maps[1].inner_id, m.maps[1].inner_map_index), (7, Some(0)), "inner map named by id");
    // inner_idx: class_of_mark (id 7, inner_idx 3) fills slot 3 of classes_by_device (inner_id 7);
    // template_only (id 9, inner_idx -1) is only a template for arrays_by_queue and fills no slot.
    assert_eq!(m.legacy_map_records[0].inner_slot, Some(3));
    assert_eq!(m.legacy_map_records[2].inner_slot, None);
    let slots = |name: &str| {
        let index = m.maps.iter().position(|x| x.name == name).unwrap();
        m.map_initial_values.iter().find(|v| v.map_index == index).map(|v| v.values.clone())
    };
    assert_eq!(slots("classes_by_device"), Some(vec![None, None, None, Some("class_of_mark".to_string())]));
    assert_eq!(slots("arrays_by_queue"), None);
    assert_eq!(m.maps[3].inner_map_index, Some(2), "arrays_by_queue's template is template_only");
    // The same bytes read with Windows conventions are a different (wrong) layout; Linux numbering is not.
    assert!(LINUX.check_maps(&m.maps).is_ok());
}

#[test]
fn btf_maps_without_max_entries_are_left_to_the_platform() {
    let bytes = sample("linux/perf_output.o");
    let m = load_with(&bytes, "perf_output.o", ObjectConventions::Linux).unwrap();
    let events = m.maps.iter().find(|m| m.name == "events").unwrap();
    assert_eq!(events.max_entries, 0);
    assert!(LINUX.check_maps(&m.maps).is_ok(), "Linux fills in PERF_EVENT_ARRAY max_entries");
    let outer = m.maps.iter().find(|m| m.name == "counts_by_cgroup").unwrap();
    assert_eq!(outer.key_size, 8, "a values member without initialiser allows any key size");
    assert_eq!(m.maps[outer.inner_map_index.unwrap()].name, "counts_by_cgroup.inner");
    let mut windows_view = m.maps.clone();
    windows_view.retain(|m| m.name == "events");
    windows_view[0].map_type = MapType::HASH;
    assert_eq!(
        WINDOWS.check_maps(&windows_view).unwrap_err().to_string(),
        "map 'events' (hash): max_entries is 0 (not declared?); windows requires a positive max_entries"
    );
}

#[test]
fn unknown_map_types_are_refused_naming_map_and_type() {
    let mut m = load(&sample("legacy_maps.o"), "legacy_maps.o").unwrap();
    assert!(WINDOWS.check_maps(&m.maps).is_ok());
    m.maps[0].map_type = MapType(100);
    assert_eq!(
        WINDOWS.check_maps(&m.maps).unwrap_err().to_string(),
        "map 'port_counts': type 100 is not a map type windows supports"
    );
}

/// Renames every occurrence of `from` (string tables, BTF, debug strings) to `to` of the same length.
fn rename(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from) {
        bytes[at + i..at + i + from.len()].copy_from_slice(to);
        at += i + from.len();
    }
}

#[test]
fn kfunc_calls_become_btf_calls_with_the_module_table() {
    let m = load(&sample("kfunc.o"), "kfunc.o").unwrap();
    assert_eq!(m.kfuncs.len(), 1);
    let k = &m.kfuncs[0];
    assert_eq!((k.id, k.name.as_str()), (1, "sample_ebpf_extension_btf_lookup"));
    assert_eq!(k.module_guid, Some(crate::platform::windows::SAMPLE_BTF_FUNCTION_MODULE));
    assert!(m.programs[0].instructions.contains(&Instruction::CallBtf { btf_id: 1, module: 0 }));

    // A malformed module_id tag is refused, naming the function and saying "kfunc".
    let mut bytes = sample("kfunc.o");
    rename(&mut bytes, b"{8f6c1f83-ce4c", b"{8f6c1f83+ce4c");
    let err = load(&bytes, "kfunc.o").unwrap_err().to_string();
    assert!(err.starts_with("symbol 'sample_ebpf_extension_btf_lookup': kfunc: tag 'module_id:"), "{err}");
}

#[test]
fn an_unknown_kfunc_is_refused_by_the_verifier_as_a_kfunc() {
    use crate::verifier::{verify_program, VerifierOptions};
    let mut bytes = sample("kfunc.o");
    rename(&mut bytes, b"sample_ebpf_extension_btf_lookup", b"sample_ebpf_extension_btf_lookuq");
    let m = load(&bytes, "kfunc.o").unwrap();
    let sample_type = WINDOWS.program_type_by_name("sample").unwrap();
    let r = verify_program(&m, 0, &WINDOWS, sample_type, &VerifierOptions::default()).unwrap_err();
    assert!(
        r.message.contains("unknown kfunc 'sample_ebpf_extension_btf_lookuq' of module 8f6c1f83-"),
        "{}",
        r.message
    );
    // The real one verifies against the platform's prototype.
    let m = load(&sample("kfunc.o"), "kfunc.o").unwrap();
    verify_program(&m, 0, &WINDOWS, sample_type, &VerifierOptions::default()).unwrap();
}

#[test]
fn a_program_two_of_whose_functions_share_a_name_is_refused() {
    // Every function becomes a driver symbol (contract §5.1); a symbol table naming two of one program's
    // functions alike (here `length_bucket` renamed to its sibling `packet_length`) must not reach the linker.
    let mut bytes = sample("bpf_calls.o");
    rename(&mut bytes, b"length_bucket", b"packet_length");
    let err = load(&bytes, "bpf_calls.o").unwrap_err().to_string();
    assert!(err.contains("two of its functions are named `packet_length`"), "{err}");
}
