//! Unit tests of the loader on committed samples and on hand-made malformed inputs.

use super::*;
use crate::isa::{Imm64Kind, Instruction};
use crate::program::{MapType, Pinning};

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load_sample(name: &str) -> Module {
    load(&sample(name), name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn c_name_is_file_stem_up_to_first_dot() {
    assert_eq!(c_name("dir/sub\\droppacket.o"), "droppacket");
    assert_eq!(c_name("a.b.o"), "a");
    assert_eq!(c_name("plain"), "plain");
}

#[test]
fn map_reference_becomes_map_index_lddw() {
    let m = load_sample("droppacket.o");
    assert_eq!(m.name, "droppacket");
    assert_eq!(m.maps.len(), 1);
    assert_eq!(m.maps[0].name, "dropped_packet_map");
    assert_eq!(m.maps[0].map_type, MapType::ARRAY);
    assert_eq!((m.maps[0].key_size, m.maps[0].value_size, m.maps[0].max_entries), (4, 8, 256));
    let p = &m.programs[0];
    assert!(p
        .instructions
        .iter()
        .any(|i| matches!(i, Instruction::LoadImm64 { kind: Imm64Kind::MapIndex, imm: 0, next_imm: 0, .. })));
    assert!(!p.line_info.is_empty(), "built with -g, so line info is present");
    assert!(p.line_info.windows(2).all(|w| w[0].slot <= w[1].slot));
}

#[test]
fn btf_map_attributes_and_pinning() {
    let m = load_sample("map_types.o");
    let flows = m.maps.iter().find(|m| m.name == "recent_flows").unwrap();
    assert_eq!(flows.map_type, MapType::LRU_HASH);
    assert_eq!((flows.key_size, flows.value_size, flows.max_entries), (8, 8, 4096));
    assert_eq!(flows.pinning, Pinning::ByName);
    assert!(flows.id != 0, "BTF maps carry their struct's type id");
}

#[test]
fn map_in_map_inner_templates_declared_and_anonymous() {
    let m = load_sample("map_in_map.o");
    let outer = m.maps.iter().position(|m| m.name == "ports_by_interface").unwrap();
    let inner = m.maps[outer].inner_map_index.unwrap();
    assert_eq!(m.maps[inner].name, "default_ports");
    assert_eq!(m.maps[outer].inner_id, m.maps[inner].id);
    assert_eq!(m.maps[outer].value_size, 4);
    let tenant = m.maps.iter().position(|m| m.name == "counters_by_tenant").unwrap();
    let anon = m.maps[tenant].inner_map_index.unwrap();
    assert_eq!(m.maps[anon].name, "counters_by_tenant.inner");
    assert!(anon > tenant, "anonymous inner maps are appended");
    let init = m.map_initial_values.iter().find(|v| v.map_index == outer).unwrap();
    assert_eq!(init.values, vec![Some("default_ports".to_string())]);
}

#[test]
fn program_array_values_name_programs() {
    let m = load_sample("tail_call.o");
    let stages = m.maps.iter().position(|m| m.name == "stages").unwrap();
    let init = m.map_initial_values.iter().find(|v| v.map_index == stages).unwrap();
    assert_eq!(init.values, vec![Some("stage_ipv4".into()), None, Some("stage_ipv6".into())]);
    let names: Vec<_> = m.programs.iter().map(|p| (p.name.as_str(), p.section_name.as_str())).collect();
    assert!(names.contains(&("dispatch", "xdp/dispatch")));
}

#[test]
fn garbage_and_truncation_are_errors() {
    assert!(matches!(load(b"", "x.o"), Err(ElfError::Malformed(_))));
    assert!(matches!(load(b"not an elf at all, clearly", "x.o"), Err(ElfError::Malformed(_))));
    let bytes = sample("droppacket.o");
    for len in [16, 63, 64, 200, bytes.len() / 2, bytes.len() - 1] {
        assert!(load(&bytes[..len], "x.o").is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn wrong_machine_is_named() {
    let mut bytes = sample("droppacket.o");
    bytes[18] = 62; // EM_X86_64
    let err = load(&bytes, "x.o").unwrap_err();
    assert!(err.to_string().contains("e_machine is 62"), "{err}");
}

/// File offset and size of a section of a pristine sample.
fn section_range(bytes: &[u8], name: &str) -> (usize, usize) {
    use object::read::elf::{FileHeader, SectionHeader};
    let header = object::elf::FileHeader64::<LE>::parse(bytes).unwrap();
    let table = header.sections(LE, bytes).unwrap();
    let sh = table.section_by_name(LE, name.as_bytes()).unwrap().1;
    (sh.sh_offset(LE) as usize, sh.sh_size(LE) as usize)
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn relocation_outside_its_section_names_section_and_offset() {
    let mut bytes = sample("droppacket.o");
    let (rel, _) = section_range(&bytes, ".relxdp");
    bytes[rel..rel + 8].copy_from_slice(&0x10_0000u64.to_le_bytes());
    let err = load(&bytes, "droppacket.o").unwrap_err();
    assert_eq!(
        err,
        ElfError::Relocation {
            section: "xdp".into(),
            offset: 0x10_0000,
            what: "relocation offset is not an instruction in the section".into()
        }
    );
}

#[test]
fn relocation_on_a_non_lddw_instruction_is_rejected() {
    let mut bytes = sample("droppacket.o");
    let (rel, _) = section_range(&bytes, ".relxdp");
    bytes[rel..rel + 8].copy_from_slice(&0u64.to_le_bytes());
    let err = load(&bytes, "droppacket.o").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("section 'xdp', offset 0x0: relocation against 'dropped_packet_map' applies to opcode"),
        "{err}"
    );
}

#[test]
fn unknown_btf_kind_is_named_with_its_offset() {
    let mut bytes = sample("droppacket.o");
    let (btf, _) = section_range(&bytes, ".BTF");
    let hdr_len = u32::from_le_bytes(bytes[btf + 4..btf + 8].try_into().unwrap()) as usize;
    let type_off = u32::from_le_bytes(bytes[btf + 8..btf + 12].try_into().unwrap()) as usize;
    // First type record's info word: kind 31 does not exist.
    put_u32(&mut bytes, btf + hdr_len + type_off + 4, 31 << 24);
    let err = load(&bytes, "droppacket.o").unwrap_err();
    assert!(matches!(err, ElfError::Btf(BtfError::Malformed { section: ".BTF", .. })), "{err:?}");
    assert!(err.to_string().contains("type id 1 has unknown kind 31"), "{err}");
}

#[test]
fn btf_string_section_past_the_end_is_rejected() {
    let mut bytes = sample("droppacket.o");
    let (btf, _) = section_range(&bytes, ".BTF");
    put_u32(&mut bytes, btf + 20, u32::MAX); // str_len
    let err = load(&bytes, "droppacket.o").unwrap_err();
    assert!(err.to_string().contains("string section"), "{err}");
}

#[test]
fn legacy_map_with_bad_pinning_names_the_map() {
    let mut bytes = sample("legacy_maps.o");
    let (maps, size) = section_range(&bytes, "maps");
    assert_eq!(size, 64, "two 32-byte Windows map records");
    put_u32(&mut bytes, maps + 20, 7);
    let err = load(&bytes, "legacy_maps.o").unwrap_err();
    assert!(matches!(&err, ElfError::Map { map, .. } if map == "port_counts"), "{err:?}");
}

#[test]
fn undecodable_instruction_names_program_and_slot() {
    let mut bytes = sample("droppacket.o");
    let (code, _) = section_range(&bytes, "xdp");
    bytes[code + 8 * 3] = 0xff; // opcode 0xff is no instruction
    let err = load(&bytes, "droppacket.o").unwrap_err();
    assert_eq!(err.to_string(), "program 'drop_empty_udp' (section 'xdp'): slot 3: unknown opcode 0xff");
}

#[test]
fn global_data_offsets_and_section_maps() {
    let m = load_sample("globals.o");
    let names: Vec<_> = m.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["globals.data", "globals.rodata", "globals.bss"]);
    for g in &m.global_sections {
        let map = &m.maps[g.map_index];
        assert_eq!((map.map_type, map.key_size, map.max_entries), (MapType::ARRAY, 4, 1));
        assert_eq!(map.value_size as usize, g.initial_data.len());
        assert!(map.id != 0, "DATASEC type id");
    }
    assert_eq!(m.global_sections[0].initial_data, 1500u32.to_le_bytes(), ".data holds drop_threshold = 1500");
    let rodata: Vec<u16> =
        m.global_sections[1].initial_data.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(rodata, [23, 135, 445, 3389]);
    // packets_dropped is the second .bss variable: offset 8 in map 2.
    let offsets: Vec<(i32, i32)> = m.programs[0]
        .instructions
        .iter()
        .filter_map(|i| match *i {
            Instruction::LoadImm64 { kind: Imm64Kind::MapIndexValue, imm, next_imm, .. } => Some((imm, next_imm)),
            _ => None,
        })
        .collect();
    assert!(offsets.contains(&(2, 0)) && offsets.contains(&(2, 8)) && offsets.contains(&(0, 0)), "{offsets:?}");
}

#[test]
fn subprograms_are_appended_and_calls_rewritten() {
    let m = load_sample("bpf_calls.o");
    for p in &m.programs {
        let names: Vec<_> = p.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[0], p.name);
        for n in ["packet_length", "record_length", "length_bucket"] {
            assert!(names.contains(&n), "{n} reachable from {}", p.name);
        }
        // Every local call lands on the first slot of a function of this program.
        for (pc, insn) in p.instructions.iter().enumerate() {
            if let Instruction::CallLocal { .. } = insn {
                let target = insn.jump_target(pc).unwrap() as usize;
                assert!(p.functions.iter().any(|f| f.start == target), "{}: call at {pc} -> {target}", p.name);
            }
        }
        assert_eq!(p.functions.last().unwrap().end, p.instructions.len());
    }
}

/// A synthetic relocatable BPF object: `.text` only, two functions, `first` calling `second` through an
/// `R_BPF_64_32` relocation against `second`.
fn text_only_object() -> Vec<u8> {
    use object::write::{Object as WObject, Relocation as WReloc, Symbol as WSymbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, RelocationFlags, SymbolFlags, SymbolKind, SymbolScope};
    let mut obj = WObject::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let text = obj.section_id(object::write::StandardSection::Text);
    let first: Vec<u8> = [
        crate::isa::RawSlot { opcode: 0x85, src: 1, imm: -1, ..Default::default() }, // call second
        crate::isa::RawSlot { opcode: 0x95, ..Default::default() },                  // exit
    ]
    .iter()
    .flat_map(|s| s.to_bytes())
    .collect();
    let second: Vec<u8> = [
        crate::isa::RawSlot { opcode: 0xb7, imm: 7, ..Default::default() }, // mov r0, 7
        crate::isa::RawSlot { opcode: 0x95, ..Default::default() },
    ]
    .iter()
    .flat_map(|s| s.to_bytes())
    .collect();
    let off1 = obj.append_section_data(text, &first, 8);
    let off2 = obj.append_section_data(text, &second, 8);
    let mut add = |name: &str, value: u64| {
        obj.add_symbol(WSymbol {
            name: name.as_bytes().to_vec(),
            value,
            size: 16,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        })
    };
    add("first", off1);
    let second_sym = add("second", off2);
    obj.add_relocation(
        text,
        WReloc { offset: off1, symbol: second_sym, addend: 0, flags: RelocationFlags::Elf { r_type: R_BPF_64_32 } },
    )
    .unwrap();
    obj.write().unwrap()
}

#[test]
fn text_functions_are_programs_when_no_other_section_has_code() {
    let m = load(&text_only_object(), "text.o").unwrap();
    let names: Vec<_> = m.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    let first = &m.programs[0];
    assert_eq!(first.section_name, ".text");
    // `second` appended after `first`; the call (relocated against `second`) now jumps 1 slot forward.
    assert_eq!(first.instructions.len(), 4);
    assert_eq!(first.instructions[0], Instruction::CallLocal { offset: 1 });
    assert_eq!(first.functions[1].name, "second");
    assert_eq!(first.functions[1].start, 2);
}

#[test]
fn text_functions_are_subprograms_when_program_sections_exist() {
    let m = load_sample("bpf_calls.o");
    assert!(m.programs.iter().all(|p| p.section_name != ".text"));
}

/// A synthetic object with one function `f` in `section`.
fn single_function_object(section: &str, slots: &[crate::isa::RawSlot]) -> Vec<u8> {
    use object::write::{Object as WObject, Symbol as WSymbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope};
    let mut obj = WObject::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let id = obj.add_section(Vec::new(), section.as_bytes().to_vec(), SectionKind::Text);
    let code: Vec<u8> = slots.iter().flat_map(|s| s.to_bytes()).collect();
    let offset = obj.append_section_data(id, &code, 8);
    obj.add_symbol(WSymbol {
        name: b"f".to_vec(),
        value: offset,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(id),
        flags: SymbolFlags::None,
    });
    obj.write().unwrap()
}

#[test]
fn cpu_v4_instructions_load() {
    use crate::isa::{AluOp, ByteOrder, MemSize, Operand, RawSlot, Reg, Width};
    // clang 14 cannot emit -mcpu=v4; these are the encodings clang 18 uses (RFC 9669 §4, §5).
    let slots = [
        RawSlot { opcode: 0x37, dst: 0, offset: 1, imm: -3, ..Default::default() }, // sdiv r0, -3
        RawSlot { opcode: 0xbf, dst: 1, src: 0, offset: 8, ..Default::default() },  // movsx8 r1, r0
        RawSlot { opcode: 0x91, dst: 2, src: 10, offset: -8, ..Default::default() }, // ldxsb r2, [r10-8]
        RawSlot { opcode: 0xd7, dst: 2, imm: 16, ..Default::default() },            // bswap16 r2
        RawSlot { opcode: 0x06, imm: 0, ..Default::default() },                     // gotol +0
        RawSlot { opcode: 0x9c, dst: 0, src: 1, offset: 1, ..Default::default() },  // smod32 r0, r1
        RawSlot { opcode: 0x95, ..Default::default() },
    ];
    let m = load(&single_function_object("xdp", &slots), "v4.o").unwrap();
    let insns = &m.programs[0].instructions;
    assert_eq!(insns[0], Instruction::Alu { width: Width::W64, op: AluOp::SDiv, dst: Reg::R0, src: Operand::Imm(-3) });
    assert_eq!(
        insns[1],
        Instruction::Alu { width: Width::W64, op: AluOp::MovSx(8), dst: Reg::R1, src: Operand::Reg(Reg::R0) }
    );
    assert_eq!(
        insns[2],
        Instruction::Load { size: MemSize::B, sign_extend: true, dst: Reg::R2, src: Reg::FP, offset: -8 }
    );
    assert_eq!(insns[3], Instruction::Endian { order: ByteOrder::Swap, bits: 16, dst: Reg::R2 });
    assert_eq!(insns[4], Instruction::Jump { offset: 0, long: true });
}

#[test]
fn call_into_the_middle_of_nowhere_is_named() {
    use crate::isa::RawSlot;
    // A local call without relocation whose target lies past the section.
    let slots = [
        RawSlot { opcode: 0x85, src: 1, imm: 100, ..Default::default() },
        RawSlot { opcode: 0x95, ..Default::default() },
    ];
    let err = load(&single_function_object("xdp", &slots), "c.o").unwrap_err();
    assert_eq!(
        err.to_string(),
        "program 'f' (section 'xdp'): call at byte 0x0 of 'xdp' targets slot 101, which is in no function"
    );
}

#[test]
fn recursive_calls_lay_out_each_function_once() {
    use crate::isa::RawSlot;
    // f calls itself: the program is f alone, with the call pointing back at slot 0.
    let slots = [
        RawSlot { opcode: 0x85, src: 1, imm: -1, ..Default::default() },
        RawSlot { opcode: 0x95, ..Default::default() },
    ];
    let m = load(&single_function_object("xdp", &slots), "r.o").unwrap();
    assert_eq!(m.programs[0].functions.len(), 1);
    assert_eq!(m.programs[0].instructions[0], Instruction::CallLocal { offset: -1 });
}

#[test]
fn datasec_variables_must_fit_their_section() {
    let bytes = sample("globals.o");
    let (off, size) = section_range(&bytes, ".BTF");
    let btf = btf::Btf::parse(&bytes[off..off + size]).unwrap();
    let (_, bss) = btf.datasec(".bss").unwrap();
    // clang leaves DATASEC sizes and offsets 0 in objects; variable sizes are real.
    assert_eq!(bss.sec_infos.iter().map(|v| v.size).collect::<Vec<_>>(), [8, 8]);
    // Grow the first .bss variable past the section end.
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let types = off + word(off + 4) as usize + word(off + 8) as usize;
    let type_len = word(off + 12) as usize;
    let mut bad = bytes.clone();
    let (mut at, mut patched) = (types, false);
    while at + 12 <= types + type_len {
        let (name, info) = (word(at), word(at + 4));
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == 15 && btf.str_bytes(name).unwrap() == b".bss" {
            put_u32(&mut bad, at + 12 + 8, 100); // first entry's size
            patched = true;
            break;
        }
        at += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
    }
    assert!(patched);
    let err = load(&bad, "globals.o").unwrap_err().to_string();
    assert!(err.starts_with("section '.bss': BTF variable 'packets_"), "{err}");
    assert!(err.contains("(100 bytes at offset ") && err.ends_with("overruns the section (16 bytes)"), "{err}");
}

/// `count` programs in section `xdp`, program i loading legacy map i (32-byte records in `maps`) and calling a
/// shared `.text` subprogram.
fn many_programs_object(count: usize) -> Vec<u8> {
    use crate::isa::RawSlot;
    use object::write::{Object as WObject, Relocation as WReloc, Symbol as WSymbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let mut obj = WObject::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let xdp = obj.add_section(Vec::new(), b"xdp".to_vec(), SectionKind::Text);
    let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    let maps = obj.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
    let symbol = |obj: &mut WObject, name: String, section, value, size, kind| {
        obj.add_symbol(WSymbol {
            name: name.into_bytes(),
            value,
            size,
            kind,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        })
    };
    let sub: Vec<u8> = [RawSlot { opcode: 0xb7, ..Default::default() }, RawSlot { opcode: 0x95, ..Default::default() }]
        .iter()
        .flat_map(|s| s.to_bytes())
        .collect();
    let sub_offset = obj.append_section_data(text, &sub, 8);
    let sub_symbol = symbol(&mut obj, "shared".into(), text, sub_offset, 16, SymbolKind::Text);
    let record = [1u8, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0];
    for i in 0..count {
        let map_offset = obj.append_section_data(maps, &[&record[..], &[0u8; 16][..]].concat(), 4);
        let map = symbol(&mut obj, format!("map{i}"), maps, map_offset, 32, SymbolKind::Data);
        let code: Vec<u8> = [
            RawSlot { opcode: 0x18, dst: 1, src: 1, ..Default::default() },
            RawSlot::default(),
            RawSlot { opcode: 0x85, src: 1, imm: -1, ..Default::default() },
            RawSlot { opcode: 0x95, ..Default::default() },
        ]
        .iter()
        .flat_map(|s| s.to_bytes())
        .collect();
        let offset = obj.append_section_data(xdp, &code, 8);
        symbol(&mut obj, format!("prog{i}"), xdp, offset, 32, SymbolKind::Text);
        let flags = |r_type| RelocationFlags::Elf { r_type };
        obj.add_relocation(xdp, WReloc { offset, symbol: map, addend: 0, flags: flags(R_BPF_64_64) }).unwrap();
        obj.add_relocation(
            xdp,
            WReloc { offset: offset + 16, symbol: sub_symbol, addend: 0, flags: flags(R_BPF_64_32) },
        )
        .unwrap();
    }
    obj.write().unwrap()
}

#[test]
fn many_programs_maps_and_relocations_resolve() {
    let m = load(&many_programs_object(300), "many.o").unwrap();
    assert_eq!(m.programs.len(), 300);
    assert_eq!(m.maps.len(), 300);
    for (i, p) in m.programs.iter().enumerate() {
        assert_eq!(p.name, format!("prog{i}"));
        assert_eq!(
            p.instructions[0],
            Instruction::LoadImm64 { dst: crate::isa::Reg::R1, kind: Imm64Kind::MapIndex, imm: i as i32, next_imm: 0 }
        );
        assert_eq!(p.functions[1].name, "shared");
        assert_eq!(p.instructions[2], Instruction::CallLocal { offset: 1 });
    }
}

#[test]
fn loading_scales_linearly_with_object_size() {
    // Guard against quadratic lookups (symbols × sections, relocations × maps): 40,000 programs, maps and
    // 80,000 relocations must load in well under the time a quadratic pass would take (~10^9 steps).
    let bytes = many_programs_object(40_000);
    let start = std::time::Instant::now();
    let m = load(&bytes, "many.o").unwrap();
    assert_eq!(m.programs.len(), 40_000);
    assert!(start.elapsed() < std::time::Duration::from_secs(20), "took {:?}", start.elapsed());
}
