//! Map pass: the module's map list from legacy `maps` records, BTF `.maps` definitions and global-variable
//! sections (native-module-contract.md §6), plus (in `initial_values`) the initial slots of map-in-map and
//! program-array maps.
//!
//! Order of [`Module::maps`](crate::program::Module::maps): legacy maps (by section, then symbol offset), BTF
//! maps by symbol offset in `.maps`, anonymous inner maps (declared inline in `__array(values, struct {...})`),
//! then one array map per `.data` / `.rodata` / `.bss` section in ELF order.

use std::collections::{HashMap, HashSet};

use object::elf;

mod initial_values;
pub(crate) use initial_values::initial_values;

use super::btf::{Btf, BtfKind, BtfType};
use super::ObjectConventions;
use super::{ElfError, Object, Symbol};
use crate::program::{
    GlobalSection, GlobalSectionKind, LegacyLayout, LegacyMapRecord, MapDefinition, MapType, Pinning,
};

/// Size of `ebpf_map_definition_in_file_t`, the Windows legacy map record (contract §2.2).
const LEGACY_RECORD_SIZE: u64 = 32;
/// Largest global-variable section bpf2c accepts (contract §6).
const MAX_GLOBAL_SECTION_SIZE: u64 = 1 << 20;

/// A legacy map section: its maps are `first_map + symbol_value / record_size`.
struct LegacySection {
    section: usize,
    record_size: u64,
    first_map: usize,
    count: usize,
}

/// What the `values` member of a BTF map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValuesOf {
    Maps,
    Programs,
}

/// A BTF map declared by a symbol in `.maps`.
struct BtfMapSymbol {
    offset: u64,
    size: u64,
    map_index: usize,
    /// Byte offset of the `values` member inside the map struct, and what it holds.
    values: Option<(u64, ValuesOf)>,
}

/// The maps of a module and how symbols resolve to them.
pub(crate) struct MapLayout {
    pub maps: Vec<MapDefinition>,
    pub global_sections: Vec<GlobalSection>,
    pub legacy_records: Vec<LegacyMapRecord>,
    legacy: Vec<LegacySection>,
    maps_section: Option<usize>,
    /// Sorted by offset (the order of the `.maps` symbols).
    btf_maps: Vec<BtfMapSymbol>,
    /// `.maps` symbol offset → index in `btf_maps`.
    btf_map_at: HashMap<u64, usize>,
    /// ELF section index → what its symbols are (indexes `legacy` or a global map).
    roles: HashMap<usize, SectionRole>,
}

#[derive(Clone, Copy)]
enum SectionRole {
    Legacy(usize),
    BtfMaps,
    Global(usize),
}

/// How a relocation's symbol resolves for a `lddw`.
pub(crate) enum MapReference {
    /// `lddw` of the map itself (`map_by_idx`).
    Map(usize),
    /// `lddw` of the address of a global variable: the section's map and the byte offset of the symbol.
    GlobalValue { map_index: usize, symbol_offset: u64, section_size: u64 },
}

impl MapLayout {
    /// Resolves a relocation symbol to a map or global section, or `None` if it lies in neither.
    pub fn resolve(&self, object: &Object, symbol: &Symbol) -> Result<Option<MapReference>, ElfError> {
        let Some(section) = symbol.section else { return Ok(None) };
        let role = self.roles.get(&section).copied();
        if let Some(SectionRole::Legacy(i)) = role {
            let l = &self.legacy[i];
            let idx = symbol.value / l.record_size;
            if !symbol.value.is_multiple_of(l.record_size) || idx >= l.count as u64 {
                return Err(ElfError::Symbol {
                    symbol: symbol.name.to_string(),
                    what: format!(
                        "offset {:#x} in '{}' is not the start of a {}-byte map record",
                        symbol.value,
                        object.section_name(section),
                        l.record_size
                    ),
                });
            }
            return Ok(Some(MapReference::Map(l.first_map + idx as usize)));
        }
        if let Some(SectionRole::BtfMaps) = role {
            return match self.btf_map_by_offset(symbol.value) {
                Some(m) => Ok(Some(MapReference::Map(m.map_index))),
                None => Err(ElfError::Symbol {
                    symbol: symbol.name.to_string(),
                    what: format!("offset {:#x} in '.maps' is not the start of a map", symbol.value),
                }),
            };
        }
        if let Some(SectionRole::Global(map_index)) = role {
            let section_size = object.sections[section].size;
            // Section symbols carry value 0; the instruction's immediate holds the offset (added by the caller).
            let symbol_offset = if symbol.kind == elf::STT_SECTION { 0 } else { symbol.value };
            return Ok(Some(MapReference::GlobalValue { map_index, symbol_offset, section_size }));
        }
        Ok(None)
    }

    fn btf_map_by_offset(&self, offset: u64) -> Option<&BtfMapSymbol> {
        self.btf_map_at.get(&offset).map(|&i| &self.btf_maps[i])
    }

    /// The BTF map whose symbol range contains `offset`.
    fn btf_map_containing(&self, offset: u64) -> Option<&BtfMapSymbol> {
        let after = self.btf_maps.partition_point(|m| m.offset <= offset);
        self.btf_maps[..after].last().filter(|m| offset < m.offset.saturating_add(m.size))
    }
}

fn map_error(map: &str, what: impl Into<String>) -> ElfError {
    ElfError::Map { map: map.to_string(), what: what.into() }
}

fn u32_field(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn pinning(map: &str, value: u32) -> Result<Pinning, ElfError> {
    match value {
        0 => Ok(Pinning::None),
        1 => Ok(Pinning::ByName),
        other => Err(map_error(map, format!("pinning {other} is not LIBBPF_PIN_NONE (0) or LIBBPF_PIN_BY_NAME (1)"))),
    }
}

/// Named symbols (objects, or untyped) defined in a section, sorted by offset.
fn data_symbols<'o, 'a>(object: &'o Object<'a>, section: usize) -> Vec<&'o Symbol<'a>> {
    let mut syms: Vec<&Symbol> = object
        .section_symbols(section)
        .filter(|s| {
            !s.name.is_empty() && matches!(s.kind, elf::STT_OBJECT | elf::STT_NOTYPE) && s.kind != elf::STT_SECTION
        })
        .collect();
    syms.sort_by_key(|s| s.value);
    syms
}

/// One legacy record decoded into the fields every layout has in common.
struct LegacyFields {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    /// Module-wide index of the inner-map template, if the layout has the field.
    inner_map_idx: Option<u32>,
    pinning: u32,
    id: u32,
    inner_id: u32,
    /// iproute2 `inner_idx` (36-byte `bpf_elf_map` only).
    inner_idx: Option<u32>,
}

/// Decodes one record (coverage §3, §5). Windows: `ebpf_map_definition_in_file_t`, shorter records
/// zero-extended, longer ones truncated (bpf2c). Linux: the record size picks the layout, since offsets 16–24
/// mean different things in each — 16/20/28 bytes are `bpf_map_def` / `bpf_load_map_def` (map_flags @16,
/// inner_map_idx @20), 36 bytes iproute2's `bpf_elf_map` (flags @16, id @20, pinning @24, inner_id @28,
/// inner_idx @32).
fn decode_legacy(
    record: &[u8],
    conventions: ObjectConventions,
    section: &str,
) -> Result<(LegacyLayout, LegacyFields), ElfError> {
    let f = |at: usize| u32_field(record, at);
    let common = |inner_map_idx, pinning, id, inner_id| LegacyFields {
        map_type: f(0),
        key_size: f(4),
        value_size: f(8),
        max_entries: f(12),
        inner_map_idx,
        pinning,
        id,
        inner_id,
        inner_idx: None,
    };
    Ok(match conventions {
        ObjectConventions::Windows => (LegacyLayout::Windows, common(Some(f(16)), f(20), f(24), f(28))),
        ObjectConventions::Linux => match record.len() {
            16 | 20 | 24 => (LegacyLayout::LinuxBpfMapDef, common(None, 0, 0, 0)),
            28 | 32 => (LegacyLayout::LinuxBpfMapDef, common(Some(f(20)), 0, 0, 0)),
            36 => {
                // iproute2 pinning: 0 none, 1 object namespace, 2 global namespace — all by name.
                let pin = match f(24) {
                    0 => 0,
                    1 | 2 => 1,
                    other => {
                        return Err(ElfError::Section {
                            section: section.to_string(),
                            what: format!(
                                "bpf_elf_map pinning {other} is not PIN_NONE, PIN_OBJECT_NS or PIN_GLOBAL_NS"
                            ),
                        })
                    }
                };
                (
                    LegacyLayout::LinuxBpfElfMap,
                    LegacyFields { inner_idx: Some(f(32)), ..common(None, pin, f(20), f(28)) },
                )
            }
            other => {
                return Err(ElfError::Section {
                    section: section.to_string(),
                    what: format!("{other}-byte map records match no Linux layout (16, 20, 28 or 36 bytes)"),
                })
            }
        },
    })
}

/// Legacy map records in `maps` or `maps/<name>` (contract §6, coverage §3/§5): record size = section size /
/// number of named symbols. `inner_map_idx` names a map across every legacy section of the module (its index
/// in the module's map list, where legacy maps come first), not within the record's own section.
fn legacy_maps(
    object: &Object,
    conventions: ObjectConventions,
    maps: &mut Vec<MapDefinition>,
    records: &mut Vec<LegacyMapRecord>,
) -> Result<Vec<LegacySection>, ElfError> {
    let mut sections = Vec::new();
    // (map index, inner_map_idx) of map-in-maps that name their template by index.
    let mut by_index: Vec<(usize, u32)> = Vec::new();
    for section in &object.sections {
        if section.name != "maps" && !section.name.starts_with("maps/") {
            continue;
        }
        let err = |what: String| ElfError::Section { section: section.name.to_string(), what };
        let syms = data_symbols(object, section.index);
        if syms.is_empty() {
            if section.size == 0 {
                continue;
            }
            return Err(err("legacy map section has no map symbols".into()));
        }
        if section.data.len() as u64 != section.size {
            return Err(err("legacy map section has no file contents".into()));
        }
        let count = syms.len() as u64;
        if section.size % count != 0 {
            return Err(err(format!("size {} is not a multiple of its {count} map symbols", section.size)));
        }
        let record_size = section.size / count;
        // type, key_size, value_size and max_entries are the least a record must hold.
        if record_size < 16 {
            return Err(err(format!("map record size {record_size} is smaller than 16 bytes")));
        }
        let first_map = maps.len();
        for (i, sym) in syms.iter().enumerate() {
            if sym.value != i as u64 * record_size {
                return Err(ElfError::Symbol {
                    symbol: sym.name.to_string(),
                    what: format!(
                        "offset {:#x} in '{}' is not record {i} ({record_size} bytes each)",
                        sym.value, section.name
                    ),
                });
            }
            let start = sym.value as usize;
            let raw = &section.data[start..start + record_size as usize];
            let take = raw.len().min(LEGACY_RECORD_SIZE as usize);
            let (layout, fields) = match conventions {
                ObjectConventions::Windows => {
                    let mut record = [0u8; LEGACY_RECORD_SIZE as usize];
                    record[..take].copy_from_slice(&raw[..take]);
                    decode_legacy(&record, conventions, section.name)?
                }
                ObjectConventions::Linux => decode_legacy(raw, conventions, section.name)?,
            };
            let map_type = MapType(fields.map_type);
            let map_index = maps.len();
            // The user-mode verifier resolves `inner_id` first, then `inner_map_idx` (0 is map 0 there).
            if conventions.is_map_of_maps(map_type) && fields.inner_id == 0 {
                if let Some(idx) = fields.inner_map_idx {
                    by_index.push((map_index, idx));
                }
            }
            maps.push(MapDefinition {
                name: sym.name.to_string(),
                map_type,
                key_size: fields.key_size,
                value_size: fields.value_size,
                max_entries: fields.max_entries,
                inner_map_index: None,
                pinning: pinning(sym.name, fields.pinning)?,
                id: fields.id,
                inner_id: fields.inner_id,
            });
            records.push(LegacyMapRecord {
                map_index,
                section: section.name.to_string(),
                offset: sym.value,
                record_size,
                layout,
                // iproute2 places a map with an id into slot inner_idx of the maps naming it; −1 opts out.
                inner_slot: fields.inner_idx.filter(|&slot| fields.id != 0 && slot != u32::MAX),
            });
        }
        sections.push(LegacySection { section: section.index, record_size, first_map, count: syms.len() });
    }
    let legacy_count = maps.len();
    for (map_index, idx) in by_index {
        let idx = idx as usize;
        if idx >= legacy_count || idx == map_index {
            let section = &records[map_index].section;
            return Err(map_error(
                &maps[map_index].name,
                format!(
                    "inner_map_idx {idx} (in '{section}') does not name another of the module's {legacy_count} legacy maps"
                ),
            ));
        }
        maps[map_index].inner_map_index = Some(idx);
    }
    // Resolve inner maps given by template id (first other map with that id).
    let mut by_id: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, m) in maps.iter().enumerate() {
        by_id.entry(m.id).or_default().push(i);
    }
    for (i, map) in maps.iter_mut().enumerate() {
        if map.inner_id != 0 && map.inner_map_index.is_none() {
            let inner_id = map.inner_id;
            match by_id.get(&inner_id).and_then(|c| c.iter().copied().find(|&j| j != i)) {
                Some(j) => map.inner_map_index = Some(j),
                None => return Err(map_error(&map.name, format!("inner_id {inner_id} matches no other map's id"))),
            }
        }
    }
    Ok(sections)
}

/// A BTF map definition read from its struct type (libbpf `parse_btf_map_def` semantics).
struct BtfMapDef {
    def: MapDefinition,
    /// `values` member: byte offset and the element's pointee type id.
    values: Option<(u64, u32)>,
}

/// Reads `__uint(name, N)`: a pointer to an array of N elements.
fn btf_uint(btf: &Btf, map: &str, member: &str, type_id: u32) -> Result<u32, ElfError> {
    let bad = || map_error(map, format!("member '{member}' is not declared with __uint(...)"));
    let ptr = btf.get(btf.skip_modifiers(type_id)?)?;
    if ptr.kind != BtfKind::Ptr {
        return Err(bad());
    }
    let arr = btf.get(btf.skip_modifiers(ptr.size_or_type)?)?;
    match (arr.kind, arr.array) {
        (BtfKind::Array, Some((_, n))) => Ok(n),
        _ => Err(bad()),
    }
}

/// Reads `__type(name, T)`: a pointer to T; returns sizeof(T).
fn btf_type_size(btf: &Btf, map: &str, member: &str, type_id: u32) -> Result<u32, ElfError> {
    let ptr = btf.get(btf.skip_modifiers(type_id)?)?;
    if ptr.kind != BtfKind::Ptr {
        return Err(map_error(map, format!("member '{member}' is not declared with __type(...)")));
    }
    let size = btf.size_of(ptr.size_or_type)?;
    u32::try_from(size).map_err(|_| map_error(map, format!("{member} size {size} does not fit 32 bits")))
}

fn parse_btf_map_def(
    btf: &Btf,
    conventions: ObjectConventions,
    name: &str,
    struct_id: u32,
    inner: bool,
) -> Result<BtfMapDef, ElfError> {
    let st: &BtfType = btf.get(struct_id)?;
    if st.kind != BtfKind::Struct {
        return Err(map_error(name, format!("BTF type {struct_id} is a {:?}, not a map definition struct", st.kind)));
    }
    let mut map_type = None;
    let (mut key_size, mut value_size, mut max_entries, mut pin) = (None, None, None, 0);
    let mut values = None;
    let set = |slot: &mut Option<u32>, v: u32, what: &str| -> Result<(), ElfError> {
        match *slot {
            Some(old) if old != v => Err(map_error(name, format!("{what} given as both {old} and {v}"))),
            _ => {
                *slot = Some(v);
                Ok(())
            }
        }
    };
    for m in &st.members {
        let member = btf.name(m.name_offset);
        match &*member {
            "type" => map_type = Some(btf_uint(btf, name, &member, m.type_id)?),
            "max_entries" => max_entries = Some(btf_uint(btf, name, &member, m.type_id)?),
            "map_flags" => {
                btf_uint(btf, name, &member, m.type_id)?;
            }
            "pinning" => pin = btf_uint(btf, name, &member, m.type_id)?,
            "key_size" => set(&mut key_size, btf_uint(btf, name, &member, m.type_id)?, "key size")?,
            "value_size" => set(&mut value_size, btf_uint(btf, name, &member, m.type_id)?, "value size")?,
            "key" => set(&mut key_size, btf_type_size(btf, name, &member, m.type_id)?, "key size")?,
            "value" => set(&mut value_size, btf_type_size(btf, name, &member, m.type_id)?, "value size")?,
            "values" => {
                if inner {
                    return Err(map_error(name, "an inner map cannot itself have 'values'"));
                }
                // `__array(values, T)` is `typeof(T) *values[]`: an array of pointers to T.
                let bad = || map_error(name, "member 'values' is not declared with __array(values, ...)");
                let arr = btf.get(btf.skip_modifiers(m.type_id)?)?;
                let (elem, _) = arr.array.filter(|_| arr.kind == BtfKind::Array).ok_or_else(bad)?;
                let ptr = btf.get(btf.skip_modifiers(elem)?)?;
                if ptr.kind != BtfKind::Ptr {
                    return Err(bad());
                }
                if m.bit_offset % 64 != 0 {
                    return Err(map_error(name, "member 'values' is not 8-byte aligned"));
                }
                values = Some((u64::from(m.bit_offset / 8), btf.skip_modifiers(ptr.size_or_type)?));
            }
            other => return Err(map_error(name, format!("unknown map attribute '{other}'"))),
        }
    }
    let map_type = MapType(map_type.ok_or_else(|| map_error(name, "no 'type' member"))?);
    if values.is_some() && (conventions.is_map_of_maps(map_type) || map_type == MapType::PROG_ARRAY) {
        // Map-in-map and program-array values are 32-bit ids (libbpf defaults value_size to 4).
        let v = value_size.unwrap_or(4);
        set(&mut value_size, v, "value size")?;
    }
    let def = MapDefinition {
        name: name.to_string(),
        map_type,
        key_size: key_size.unwrap_or(0),
        value_size: value_size.unwrap_or(0),
        // Without `max_entries` the map is declared with 0 (libbpf leaves it 0 and fills it in for some types,
        // coverage §4.4); whether 0 is acceptable is the platform's decision, not the object format's.
        max_entries: max_entries.unwrap_or(0),
        inner_map_index: None,
        pinning: pinning(name, pin)?,
        id: struct_id,
        inner_id: 0,
    };
    Ok(BtfMapDef { def, values })
}

/// BTF maps: every symbol in `.maps`, in offset order, typed by the VAR of the same name in DATASEC `.maps`.
fn btf_maps(
    object: &Object,
    conventions: ObjectConventions,
    maps: &mut Vec<MapDefinition>,
) -> Result<(Option<usize>, Vec<BtfMapSymbol>), ElfError> {
    let Some(section) = object.sections.iter().find(|s| s.name == ".maps") else { return Ok((None, Vec::new())) };
    let syms = data_symbols(object, section.index);
    if syms.is_empty() {
        return Ok((Some(section.index), Vec::new()));
    }
    let btf = object.btf.as_ref().ok_or_else(|| ElfError::Section {
        section: ".maps".into(),
        what: "BTF-defined maps need the .BTF section (compile with -g)".into(),
    })?;
    let (_, datasec) = btf
        .datasec(".maps")
        .ok_or_else(|| ElfError::Section { section: ".maps".into(), what: "no DATASEC '.maps' in .BTF".into() })?;
    // VAR name → VAR type, for the variables of DATASEC `.maps`.
    let mut vars = HashMap::new();
    for vi in &datasec.sec_infos {
        if let Ok(v) = btf.get(vi.type_id) {
            if v.kind == BtfKind::Var {
                vars.entry(btf.str_bytes(v.name_offset)?).or_insert(v);
            }
        }
    }
    let mut parsed = Vec::with_capacity(syms.len());
    for sym in &syms {
        // The symbol must lie inside the section's file bytes: its size bounds the `values` array.
        if sym.value.checked_add(sym.size).is_none_or(|end| end > section.data.len() as u64) {
            return Err(map_error(
                sym.name,
                format!("symbol range {:#x}+{:#x} lies outside '.maps'", sym.value, sym.size),
            ));
        }
        // Find this symbol's VAR in the DATASEC by name.
        let var = vars.get(sym.name.as_bytes()).copied();
        let var = var.ok_or_else(|| map_error(sym.name, "no BTF variable of this name in DATASEC '.maps'"))?;
        let struct_id = btf.skip_modifiers(var.size_or_type)?;
        let def = parse_btf_map_def(btf, conventions, sym.name, struct_id, false)?;
        parsed.push((sym, def));
    }
    let first = maps.len();
    let mut out = Vec::with_capacity(parsed.len());
    for (i, (sym, def)) in parsed.iter().enumerate() {
        maps.push(def.def.clone());
        let values = match def.values {
            None => None,
            Some((off, _)) if conventions.is_map_of_maps(def.def.map_type) => Some((off, ValuesOf::Maps)),
            Some((off, _)) if def.def.map_type == MapType::PROG_ARRAY => Some((off, ValuesOf::Programs)),
            Some(_) => {
                return Err(map_error(sym.name, "'values' is only allowed in map-in-map and program-array maps"))
            }
        };
        out.push(BtfMapSymbol { offset: sym.value, size: sym.size, map_index: first + i, values });
    }
    // Inner maps: a declared map with the same struct type, else an anonymous map appended after the others.
    let mut declared_by_id: HashMap<u32, usize> = HashMap::new();
    for (j, map) in maps.iter().enumerate().skip(first) {
        declared_by_id.entry(map.id).or_insert(j);
    }
    for (i, (sym, def)) in parsed.iter().enumerate() {
        if !conventions.is_map_of_maps(def.def.map_type) {
            continue;
        }
        let Some((_, inner_struct)) = def.values else {
            return Err(map_error(sym.name, "map-in-map needs __array(values, <inner map type>)"));
        };
        let inner_index = match declared_by_id.get(&inner_struct).copied() {
            Some(j) => j,
            None => {
                let inner_name = format!("{}.inner", sym.name);
                let inner = parse_btf_map_def(btf, conventions, &inner_name, inner_struct, true)?;
                maps.push(inner.def);
                maps.len() - 1
            }
        };
        maps[first + i].inner_map_index = Some(inner_index);
        maps[first + i].inner_id = inner_struct;
    }
    Ok((Some(section.index), out))
}

/// Global sections and their (ELF section index, map index) pairs.
type GlobalMaps = (Vec<GlobalSection>, Vec<(usize, usize)>);

/// Longest map name libbpf derives from a section name (`BPF_OBJ_NAME_LEN` − 1).
const MAX_DERIVED_NAME: usize = 15;

/// The backing map's name (coverage §4.3): `.data`, `.rodata`, `.bss` get the first 7 characters of the C name
/// in front, as bpf2c does (contract §6, `global_.rodata`); a named section (`.rodata.str1.1`, `.data.custom`)
/// is its own name cut to 15 characters, as libbpf does; characters outside `[A-Za-z0-9_.]` become `_`.
fn global_map_name(module_name: &str, section: &str) -> String {
    let raw: String = if section.matches('.').count() >= 2 {
        section.chars().take(MAX_DERIVED_NAME).collect()
    } else {
        module_name.chars().take(7).chain(section.chars()).collect()
    };
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// ELF sections that instructions reference through relocations.
fn sections_referenced_by_code(object: &Object) -> HashSet<usize> {
    let mut out = HashSet::new();
    for code in object.sections.iter().filter(|s| s.is_executable()) {
        for r in &object.relocations[code.index] {
            if let Some(section) = object.symbols.get(r.symbol).and_then(|s| s.section) {
                out.insert(section);
            }
        }
    }
    out
}

/// Checks a global-data section's DATASEC against the ELF (clang leaves the DATASEC size and non-static
/// variable offsets 0 in objects; libbpf fills them in from the ELF): a non-zero size must match, and every
/// variable must be a symbol of this section whose BTF size fits inside it. Returns the DATASEC's type id.
fn check_datasec(object: &Object, section: &super::Section) -> Result<Option<(u32, usize)>, ElfError> {
    let Some(btf) = &object.btf else { return Ok(None) };
    let Some((datasec_id, datasec)) = btf.datasec(section.name) else { return Ok(None) };
    let err = |what: String| ElfError::Section { section: section.name.to_string(), what };
    let symbols_by_name: HashMap<&[u8], &Symbol> =
        object.section_symbols(section.index).map(|s| (s.name.as_bytes(), s)).collect();
    let btf_size = u64::from(datasec.size_or_type);
    if btf_size != 0 && btf_size != section.size {
        return Err(err(format!("BTF DATASEC size {btf_size} differs from the section size {}", section.size)));
    }
    for info in &datasec.sec_infos {
        let var = btf.get(info.type_id)?;
        if var.kind != BtfKind::Var {
            return Err(err(format!("DATASEC entry type {} is a {:?}, not a variable", info.type_id, var.kind)));
        }
        let var_name = btf.str_bytes(var.name_offset)?;
        let symbol = symbols_by_name
            .get(var_name)
            .copied()
            .ok_or_else(|| err(format!("BTF variable '{}' has no symbol in the section", btf.name(var.name_offset))))?;
        if symbol.value.saturating_add(u64::from(info.size)) > section.size {
            return Err(err(format!(
                "BTF variable '{}' ({} bytes at offset {}) overruns the section ({} bytes)",
                symbol.name, info.size, symbol.value, section.size
            )));
        }
    }
    Ok(Some((datasec_id, datasec.sec_infos.len())))
}

/// One ARRAY map per global-data section — `.data`, `.rodata`, `.bss` and their named variants `.data.*`,
/// `.rodata.*`, `.bss.*` (contract §6; libbpf `bpf_object__init_global_data_maps`, coverage §4.3): key 4,
/// value = the section, one entry. Empty sections make no map, nor does a read-only section that no
/// instruction references and that declares no variable (string-literal pools of dead code, for example).
fn global_maps(object: &Object, module_name: &str, maps: &mut Vec<MapDefinition>) -> Result<GlobalMaps, ElfError> {
    let mut sections = Vec::new();
    let mut index = Vec::new();
    let referenced = sections_referenced_by_code(object);
    let mut names: HashMap<String, &str> = HashMap::new();
    for section in &object.sections {
        let Some(kind) = GlobalSectionKind::of_section(section.name) else { continue };
        if !matches!(section.sh_type, elf::SHT_PROGBITS | elf::SHT_NOBITS)
            || section.flags & u64::from(elf::SHF_ALLOC) == 0
            || section.size == 0
        {
            continue;
        }
        let err = |what: String| ElfError::Section { section: section.name.to_string(), what };
        if section.size > MAX_GLOBAL_SECTION_SIZE {
            return Err(err(format!("size {} exceeds the 1 MiB limit for global variables", section.size)));
        }
        if let Some(r) = object.relocations[section.index].iter().find(|r| r.kind != super::R_BPF_NONE) {
            return Err(ElfError::Relocation {
                section: section.name.to_string(),
                offset: r.offset,
                what: "global data holds a relocated pointer, which the runtime cannot fill in".into(),
            });
        }
        let datasec = check_datasec(object, section)?;
        let has_variables = datasec.is_some_and(|(_, vars)| vars > 0)
            || object.section_symbols(section.index).any(|s| s.kind == elf::STT_OBJECT);
        if kind == GlobalSectionKind::Rodata && !has_variables && !referenced.contains(&section.index) {
            continue;
        }
        let initial_data = if kind == GlobalSectionKind::Bss || section.sh_type == elf::SHT_NOBITS {
            vec![0u8; section.size as usize]
        } else if section.data.len() as u64 == section.size {
            section.data.to_vec()
        } else {
            return Err(err("has no file contents".into()));
        };
        let name = global_map_name(module_name, section.name);
        if let Some(other) = names.insert(name.clone(), section.name) {
            return Err(err(format!("its map name '{name}' is also the map name of section '{other}'")));
        }
        maps.push(MapDefinition {
            name,
            map_type: MapType::ARRAY,
            key_size: 4,
            value_size: section.size as u32,
            max_entries: 1,
            inner_map_index: None,
            pinning: Pinning::None,
            id: datasec.map_or(0, |(id, _)| id),
            inner_id: 0,
        });
        index.push((section.index, maps.len() - 1));
        sections.push(GlobalSection {
            section_name: section.name.to_string(),
            kind,
            map_index: maps.len() - 1,
            initial_data,
        });
    }
    Ok((sections, index))
}

/// Builds the module's map list.
pub(crate) fn build(object: &Object, module_name: &str, conventions: ObjectConventions) -> Result<MapLayout, ElfError> {
    let mut maps = Vec::new();
    let mut legacy_records = Vec::new();
    let legacy = legacy_maps(object, conventions, &mut maps, &mut legacy_records)?;
    let (maps_section, btf_maps) = btf_maps(object, conventions, &mut maps)?;
    let (global_sections, globals) = global_maps(object, module_name, &mut maps)?;
    let mut roles = HashMap::new();
    for (i, l) in legacy.iter().enumerate() {
        roles.insert(l.section, SectionRole::Legacy(i));
    }
    if let Some(s) = maps_section {
        roles.insert(s, SectionRole::BtfMaps);
    }
    for &(s, map_index) in &globals {
        roles.insert(s, SectionRole::Global(map_index));
    }
    let mut btf_map_at = HashMap::new();
    for (i, m) in btf_maps.iter().enumerate() {
        btf_map_at.entry(m.offset).or_insert(i);
    }
    Ok(MapLayout { maps, global_sections, legacy_records, legacy, maps_section, btf_maps, btf_map_at, roles })
}
