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
