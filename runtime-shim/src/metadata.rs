//! The native-module metadata as data objects (native-module-contract.md §2.2, §4.1, §4.3).
//!
//! Every struct is written field by field at the x64 offsets of contract §2.2 (LLP64 and LP64 agree, and ARM64
//! uses the same layout). Pointer fields are left zero in the bytes and carry a [`DataRelocation`]; the linker
//! writes the address and a DIR64 base relocation.

use std::collections::BTreeMap;

use crate::{
    names, DataObject, DataRelocation, DataSection, ModuleDescription, ProgramDescription, RuntimeVersion, ShimError,
    Symbol, METADATA_TABLE,
};

/// `ebpf_extension_header_t` version of every metadata struct (contract §2.1).
const HEADER_VERSION: u16 = 1;
const MAP_ENTRY_SIZE: u64 = 80;
const HELPER_ENTRY_SIZE: u64 = 40;
/// `btf_resolved_function_entry_t`: header, name @24, module GUID @32 (contract §2.2; validated exactly).
const BTF_FUNCTION_ENTRY_SIZE: u64 = 48;
const MAP_INITIAL_VALUES_SIZE: u64 = 48;
const GLOBAL_SECTION_INFO_SIZE: u64 = 48;
/// `sizeof(metadata_table_t)` (contract §2.2).
pub const METADATA_TABLE_SIZE: u64 = 56;
/// `STATUS_INVALID_PARAMETER`.
pub(crate) const STATUS_INVALID_PARAMETER: i32 = 0xC000_000Du32 as i32;

// Names of the shim's data objects and functions.
pub(crate) const MAPS: &str = "__bpf2sys_maps";
pub(crate) const PROGRAMS: &str = "__bpf2sys_programs";
pub(crate) const MAP_INITIAL_VALUES: &str = "__bpf2sys_map_initial_values";
pub(crate) const GLOBAL_SECTIONS: &str = "__bpf2sys_global_variable_sections";
pub(crate) const ELF_HASH: &str = "__bpf2sys_elf_hash";
pub(crate) const NPI_ID: &str = "__bpf2sys_npi_id";
pub(crate) const MODULE_ID: &str = "__bpf2sys_module_id";
pub(crate) const CLIENT_CHARACTERISTICS: &str = "__bpf2sys_client_characteristics";
pub(crate) const CLIENT_HANDLE: &str = "__bpf2sys_client_handle";
pub(crate) const BINDING_HANDLE: &str = "__bpf2sys_binding_handle";
pub(crate) const PROVIDER_BINDING_CONTEXT: &str = "__bpf2sys_provider_binding_context";
pub(crate) const PROVIDER_DISPATCH: &str = "__bpf2sys_provider_dispatch";
pub(crate) const REGISTRY_QUERY_TABLE: &str = "__bpf2sys_registry_query_table";

pub(crate) const FN_QUERY_NPI_MODULE_ID: &str = "__bpf2sys_query_npi_module_id";
pub(crate) const FN_CLIENT_ATTACH: &str = "__bpf2sys_client_attach_provider";
pub(crate) const FN_CLIENT_DETACH: &str = "__bpf2sys_client_detach_provider";
pub(crate) const FN_DRIVER_UNLOAD: &str = "__bpf2sys_driver_unload";
pub(crate) const FN_GET_PROGRAMS: &str = "__bpf2sys_get_programs";
pub(crate) const FN_GET_MAPS: &str = "__bpf2sys_get_maps";
pub(crate) const FN_GET_HASH: &str = "__bpf2sys_get_hash";
pub(crate) const FN_GET_VERSION: &str = "__bpf2sys_get_version";
pub(crate) const FN_GET_MAP_INITIAL_VALUES: &str = "__bpf2sys_get_map_initial_values";
pub(crate) const FN_GET_GLOBAL_SECTIONS: &str = "__bpf2sys_get_global_variable_sections";

/// The "eBPF native module" NPI id, bytes as in memory (contract §1.3).
pub const NATIVE_MODULE_NPI_ID: [u8; 16] =
    [0xc8, 0xaa, 0x47, 0xc8, 0xf2, 0xa6, 0x53, 0x4b, 0xae, 0xa3, 0xf4, 0xa9, 0x4b, 0x9a, 0x80, 0xcb];

/// Decisions shared by the data and the code: counts, order, names.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Program indices (into `ModuleDescription::programs`) sorted by `program_name` (strcmp order, §4.2).
    pub sorted_programs: Vec<usize>,
    /// PE section name per program (indexed like `ModuleDescription::programs`).
    pub pe_sections: Vec<String>,
    pub map_count: usize,
    pub initial_values_count: usize,
    pub global_section_count: usize,
    pub has_elf_hash: bool,
    pub version: [u32; 3],
}

/// Checks the description and decides order and names.
pub fn layout(module: &ModuleDescription) -> Result<Layout, ShimError> {
    if module.programs.is_empty() {
        return Err(ShimError::NoPrograms);
    }
    for what in [("maps", module.maps.len()), ("programs", module.programs.len())] {
        if what.1 > u16::MAX as usize {
            return Err(ShimError::TooMany { what: what.0, count: what.1 });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &module.programs {
        if !seen.insert(p.program_name.as_str()) {
            return Err(ShimError::DuplicateProgram(p.program_name.clone()));
        }
        for (what, s) in [("program name", &p.program_name), ("section name", &p.section_name)] {
            if s.is_empty() || s.len() > 63 {
                return Err(ShimError::BadNameLength { program: p.program_name.clone(), what, len: s.len() });
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for h in &p.helpers {
            if h.id != 0 && !ids.insert(h.id) {
                return Err(ShimError::DuplicateHelper { program: p.program_name.clone(), id: h.id });
            }
        }
        for &m in &p.referenced_maps {
            if m as usize >= module.maps.len() {
                return Err(ShimError::MapIndexOutOfRange {
                    program: p.program_name.clone(),
                    index: m,
                    count: module.maps.len(),
                });
            }
        }
        if p.program_type == [0; 16] {
            return Err(ShimError::NullProgramType { program: p.program_name.clone() });
        }
        if !p.btf_functions.is_empty() && module.runtime_version < RuntimeVersion::PROGRAM_ENTRY_V1 {
            return Err(ShimError::BtfFunctionsNeedRuntime15 { program: p.program_name.clone() });
        }
        // The runtime accepts a slot only if it is unused or has both a name and a GUID (coverage §2).
        for (slot, f) in p.btf_functions.iter().enumerate() {
            if !f.is_unused() && (f.name.is_empty() || f.module_guid == [0; 16]) {
                let what = if f.name.is_empty() { "a GUID but no name" } else { "a name but GUID_NULL" };
                return Err(ShimError::BadBtfFunction { program: p.program_name.clone(), slot, what });
            }
        }
        for (what, n) in [
            ("helper table", p.helpers.len()),
            ("referenced map list", p.referenced_maps.len()),
            ("BTF-resolved function table", p.btf_functions.len()),
        ] {
            if n > u16::MAX as usize {
                return Err(ShimError::TooMany { what, count: n });
            }
        }
    }
    let mut sorted_programs: Vec<usize> = (0..module.programs.len()).collect();
    sorted_programs
        .sort_by(|&a, &b| module.programs[a].program_name.as_bytes().cmp(module.programs[b].program_name.as_bytes()));
    let pe_sections = names::pe_section_names(module.programs.iter().map(|p| p.section_name.as_str()));
    let v = module.runtime_version;
    Ok(Layout {
        sorted_programs,
        pe_sections,
        map_count: module.maps.len(),
        initial_values_count: module.map_initial_values.len(),
        global_section_count: module.global_sections.len(),
        has_elf_hash: module.elf_hash.is_some(),
        version: [v.major, v.minor, v.revision],
    })
}

/// Builds data objects; strings are pooled into `.rdata` objects named `__bpf2sys_str<N>`.
struct Objects {
    objects: Vec<DataObject>,
    strings: BTreeMap<Vec<u8>, String>,
}

impl Objects {
    fn add(
        &mut self,
        name: &str,
        section: DataSection,
        alignment: u32,
        bytes: Vec<u8>,
        relocations: Vec<DataRelocation>,
    ) {
        self.objects.push(DataObject { name: name.to_string(), section, alignment, bytes, relocations });
    }

    /// A NUL-terminated string in `.rdata`; returns its symbol.
    fn string(&mut self, s: &str, what: &'static str) -> Result<Symbol, ShimError> {
        if s.as_bytes().contains(&0) {
            return Err(ShimError::NulInName { what, name: s.to_string() });
        }
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        Ok(Symbol::Data(self.raw_string(bytes, 1)))
    }

    fn raw_string(&mut self, bytes: Vec<u8>, alignment: u32) -> String {
        if let Some(name) = self.strings.get(&bytes) {
            return name.clone();
        }
        let name = format!("__bpf2sys_str{}", self.strings.len());
        self.strings.insert(bytes.clone(), name.clone());
        self.add(&name, DataSection::Rdata, alignment, bytes, Vec::new());
        name
    }
}

/// A little-endian struct under construction.
struct Record {
    bytes: Vec<u8>,
    relocations: Vec<DataRelocation>,
}

impl Record {
    fn new(size: usize) -> Record {
        Record { bytes: vec![0; size], relocations: Vec::new() }
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn ptr(&mut self, off: usize, target: Symbol) {
        self.relocations.push(DataRelocation { offset: off as u32, target, addend: 0 });
    }
    /// `ebpf_extension_header_t {version, size, total_size}` at `off`.
    fn header(&mut self, off: usize, size: u64, total_size: u64) {
        self.u16(off, HEADER_VERSION);
        self.u64(off + 8, size);
        self.u64(off + 16, total_size);
    }
    /// Appends another record (an array element).
    fn append(&mut self, other: Record) {
        let base = self.bytes.len() as u32;
        self.bytes.extend_from_slice(&other.bytes);
        self.relocations.extend(other.relocations.into_iter().map(|mut r| {
            r.offset += base;
            r
        }));
    }
}

/// All data objects of the shim, in the order the image lays them out.
pub fn build_data(module: &ModuleDescription, layout: &Layout) -> Result<Vec<DataObject>, ShimError> {
    let mut o = Objects { objects: Vec::new(), strings: BTreeMap::new() };
    o.map_entries(module)?;
    o.program_entries(module, layout)?;
    o.map_initial_values(module)?;
    o.global_sections(module)?;
    if let Some(hash) = &module.elf_hash {
        o.add(ELF_HASH, DataSection::Rdata, 8, hash.to_vec(), Vec::new());
    }
    o.nmr_client_state();
    o.registry_query_table();
    o.metadata_table();
    Ok(o.objects)
}

/// The objects of [`build_data`], one method per contract structure; each appends in layout order.
impl Objects {
    /// `map_entry_t[]` in section `maps` (contract §2.2, §4.3 pass 1).
    fn map_entries(&mut self, module: &ModuleDescription) -> Result<(), ShimError> {
        if !module.maps.is_empty() {
            let mut maps = Record::new(0);
            for m in &module.maps {
                let mut e = Record::new(MAP_ENTRY_SIZE as usize);
                // zero_marker[2] @0 stays zero.
                e.header(16, MAP_ENTRY_SIZE, MAP_ENTRY_SIZE);
                e.u32(40, m.map_type);
                e.u32(44, m.key_size);
                e.u32(48, m.value_size);
                e.u32(52, m.max_entries);
                e.u32(56, m.inner_map_idx);
                e.u32(60, m.pinning);
                e.u32(64, m.id);
                e.u32(68, m.inner_id);
                e.ptr(72, self.string(&m.name, "map name")?);
                maps.append(e);
            }
            self.add(MAPS, DataSection::Maps, 16, maps.bytes, maps.relocations);
        }
        Ok(())
    }

    /// The per-program arrays, then `program_entry_t[]` in section `programs`.
    fn program_entries(&mut self, module: &ModuleDescription, layout: &Layout) -> Result<(), ShimError> {
        let (entry_size, entry_total) = module.runtime_version.program_entry_sizes();
        let mut programs = Record::new(0);
        for (k, &pi) in layout.sorted_programs.iter().enumerate() {
            let e = self.program_entry(k, &module.programs[pi], &layout.pe_sections[pi], entry_size, entry_total)?;
            programs.append(e);
        }
        self.add(PROGRAMS, DataSection::Programs, 16, programs.bytes, programs.relocations);
        Ok(())
    }

    /// One `program_entry_t` (the `k`-th in layout order) and the arrays it points to.
    fn program_entry(
        &mut self,
        k: usize,
        p: &ProgramDescription,
        pe_section: &str,
        entry_size: u64,
        entry_total: u64,
    ) -> Result<Record, ShimError> {
        let mut e = Record::new(entry_total as usize);
        // zero @0 stays zero (user-mode marker).
        e.header(8, entry_size, entry_total);
        e.ptr(32, Symbol::Function(p.function_symbol.clone()));
        e.ptr(40, self.string(pe_section, "PE section name")?);
        e.ptr(48, self.string(&p.section_name, "section name")?);
        e.ptr(56, self.string(&p.program_name, "program name")?);
        if !p.referenced_maps.is_empty() {
            let name = format!("__bpf2sys_prog{k}_maps");
            let bytes = p.referenced_maps.iter().flat_map(|m| m.to_le_bytes()).collect();
            self.add(&name, DataSection::Data, 8, bytes, Vec::new());
            e.ptr(64, Symbol::Data(name));
        }
        e.u16(72, p.referenced_maps.len() as u16);
        if !p.helpers.is_empty() {
            let mut helpers = Record::new(0);
            for h in &p.helpers {
                let mut he = Record::new(HELPER_ENTRY_SIZE as usize);
                he.header(0, HELPER_ENTRY_SIZE, HELPER_ENTRY_SIZE);
                he.u32(24, h.id);
                he.ptr(32, self.string(&h.name, "helper name")?);
                helpers.append(he);
            }
            let name = format!("__bpf2sys_prog{k}_helpers");
            self.add(&name, DataSection::Data, 8, helpers.bytes, helpers.relocations);
            e.ptr(80, Symbol::Data(name));
        }
        e.u16(88, p.helpers.len() as u16);
        e.u64(96, p.instruction_count);
        // GUID objects live in `.data`: user mode asserts both pointers fall inside it (contract §4.3 pass 2).
        let type_name = format!("__bpf2sys_prog{k}_program_type");
        self.add(&type_name, DataSection::Data, 8, p.program_type.to_vec(), Vec::new());
        e.ptr(104, Symbol::Data(type_name));
        let attach_name = format!("__bpf2sys_prog{k}_attach_type");
        self.add(&attach_name, DataSection::Data, 8, p.expected_attach_type.to_vec(), Vec::new());
        e.ptr(112, Symbol::Data(attach_name));
        if let Some(hash) = &p.program_info_hash {
            let name = format!("__bpf2sys_prog{k}_program_info_hash");
            self.add(&name, DataSection::Rdata, 8, hash.to_vec(), Vec::new());
            e.ptr(120, Symbol::Data(name));
            e.u64(128, hash.len() as u64);
        }
        // Always name the algorithm (contract §10 item 6).
        e.ptr(136, self.string("SHA256", "hash type")?);
        // btf_resolved_functions @144 / count @152 (160-byte entry only; `layout` refused them otherwise).
        if !p.btf_functions.is_empty() {
            let mut table = Record::new(0);
            for f in &p.btf_functions {
                let mut fe = Record::new(BTF_FUNCTION_ENTRY_SIZE as usize);
                fe.header(0, BTF_FUNCTION_ENTRY_SIZE, BTF_FUNCTION_ENTRY_SIZE);
                fe.ptr(24, self.string(&f.name, "BTF-resolved function name")?);
                fe.bytes[32..48].copy_from_slice(&f.module_guid);
                table.append(fe);
            }
            let name = format!("__bpf2sys_prog{k}_btf_resolved_functions");
            self.add(&name, DataSection::Data, 8, table.bytes, table.relocations);
            e.ptr(144, Symbol::Data(name));
            e.u16(152, p.btf_functions.len() as u16);
        }
        Ok(e)
    }

    /// `map_initial_values_t[]`.
    fn map_initial_values(&mut self, module: &ModuleDescription) -> Result<(), ShimError> {
        if !module.map_initial_values.is_empty() {
            let mut arr = Record::new(0);
            for (k, iv) in module.map_initial_values.iter().enumerate() {
                let mut values = Record::new(8 * iv.values.len());
                for (j, v) in iv.values.iter().enumerate() {
                    if let Some(v) = v {
                        values.ptr(8 * j, self.string(v, "initial value")?);
                    }
                }
                let values_name = format!("__bpf2sys_initial_values{k}");
                // `values` must be non-NULL even for an empty list (contract §2.3 item 6): keep one NULL slot.
                if values.bytes.is_empty() {
                    values.bytes = vec![0; 8];
                }
                self.add(&values_name, DataSection::Data, 8, values.bytes, values.relocations);
                arr.append(self.map_data_entry(MAP_INITIAL_VALUES_SIZE, &iv.map_name, iv.values.len(), values_name)?);
            }
            self.add(MAP_INITIAL_VALUES, DataSection::Data, 8, arr.bytes, arr.relocations);
        }
        Ok(())
    }

    /// An entry naming a map and an array of its data: `map_initial_values_t` and
    /// `global_variable_section_info_t` share the layout {header, name @24, count @32, data @40} (contract §2.2).
    fn map_data_entry(&mut self, size: u64, map_name: &str, count: usize, data: String) -> Result<Record, ShimError> {
        let mut e = Record::new(size as usize);
        e.header(0, size, size);
        e.ptr(24, self.string(map_name, "map name")?);
        e.u64(32, count as u64);
        e.ptr(40, Symbol::Data(data));
        Ok(e)
    }

    /// `global_variable_section_info_t[]`.
    fn global_sections(&mut self, module: &ModuleDescription) -> Result<(), ShimError> {
        if !module.global_sections.is_empty() {
            let mut arr = Record::new(0);
            for (k, g) in module.global_sections.iter().enumerate() {
                let data_name = format!("__bpf2sys_global_initial_data{k}");
                // `initial_data` must be non-NULL (contract §2.3 item 6), even for an empty section.
                let bytes = if g.initial_data.is_empty() { vec![0] } else { g.initial_data.clone() };
                self.add(&data_name, DataSection::Rdata, 16, bytes, Vec::new());
                arr.append(self.map_data_entry(
                    GLOBAL_SECTION_INFO_SIZE,
                    &g.map_name,
                    g.initial_data.len(),
                    data_name,
                )?);
            }
            self.add(GLOBAL_SECTIONS, DataSection::Data, 8, arr.bytes, arr.relocations);
        }
        Ok(())
    }

    /// NMR client state (contract §1.3; WDK layouts).
    fn nmr_client_state(&mut self) {
        self.add(NPI_ID, DataSection::Data, 8, NATIVE_MODULE_NPI_ID.to_vec(), Vec::new());
        let mut module_id = Record::new(24);
        module_id.u16(0, 24); // Length = sizeof(NPI_MODULEID)
        module_id.u32(4, 1); // Type = MIT_GUID; the GUID is filled in by DriverEntry.
        self.add(MODULE_ID, DataSection::Data, 8, module_id.bytes, Vec::new());
        let mut chars = Record::new(72);
        chars.u16(0, 0); // Version
        chars.u16(2, 72); // Length
        chars.ptr(8, Symbol::Function(FN_CLIENT_ATTACH.into()));
        chars.ptr(16, Symbol::Function(FN_CLIENT_DETACH.into()));
        // ClientCleanupBindingContext @24 = NULL; ClientRegistrationInstance @32:
        chars.u16(32, 0); // Version
        chars.u16(34, 40); // Size
        chars.ptr(40, Symbol::Data(NPI_ID.into()));
        chars.ptr(48, Symbol::Data(MODULE_ID.into()));
        // Number @56 = 0, NpiSpecificCharacteristics @64 = NULL.
        self.add(CLIENT_CHARACTERISTICS, DataSection::Data, 8, chars.bytes, chars.relocations);
        for name in [CLIENT_HANDLE, BINDING_HANDLE, PROVIDER_BINDING_CONTEXT, PROVIDER_DISPATCH] {
            self.add(name, DataSection::Data, 8, vec![0; 8], Vec::new());
        }
    }

    /// `RTL_QUERY_REGISTRY_TABLE[3]` for the NpiModuleId registry value.
    fn registry_query_table(&mut self) {
        // RTL_QUERY_REGISTRY_TABLE[3]: {SUBKEY "Parameters"}, {routine, REQUIRED, "NpiModuleId", REG_NONE}, {0}.
        let wide = |s: &str| -> Vec<u8> { s.encode_utf16().chain([0]).flat_map(|c| c.to_le_bytes()).collect() };
        let parameters = self.raw_string(wide("Parameters"), 2);
        let npi_module_id = self.raw_string(wide("NpiModuleId"), 2);
        let mut table = Record::new(56 * 3);
        table.u32(8, 0x1); // RTL_QUERY_REGISTRY_SUBKEY
        table.ptr(16, Symbol::Data(parameters));
        table.ptr(56, Symbol::Function(FN_QUERY_NPI_MODULE_ID.into()));
        table.u32(56 + 8, 0x4); // RTL_QUERY_REGISTRY_REQUIRED
        table.ptr(56 + 16, Symbol::Data(npi_module_id));
        // DefaultType REG_NONE (0) @56+32.
        self.add(REGISTRY_QUERY_TABLE, DataSection::Data, 8, table.bytes, table.relocations);
    }

    /// `metadata_table_t` (contract §2.2): size, then the six callbacks.
    fn metadata_table(&mut self) {
        let mut t = Record::new(METADATA_TABLE_SIZE as usize);
        t.u64(0, METADATA_TABLE_SIZE);
        for (off, f) in [
            (8, FN_GET_PROGRAMS),
            (16, FN_GET_MAPS),
            (24, FN_GET_HASH),
            (32, FN_GET_VERSION),
            (40, FN_GET_MAP_INITIAL_VALUES),
            (48, FN_GET_GLOBAL_SECTIONS),
        ] {
            t.ptr(off, Symbol::Function(f.into()));
        }
        self.add(METADATA_TABLE, DataSection::Data, 8, t.bytes, t.relocations);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HelperSlot, MapDescription, ProgramDescription, RuntimeVersion};

    fn program(name: &str, section: &str) -> ProgramDescription {
        ProgramDescription {
            program_name: name.into(),
            section_name: section.into(),
            function_symbol: format!("fn_{name}"),
            btf_functions: Vec::new(),
            helpers: vec![
                HelperSlot { id: 1, name: "bpf_map_lookup_elem".into() },
                HelperSlot { id: 0, name: String::new() },
            ],
            referenced_maps: vec![0],
            instruction_count: 9,
            program_type: [1; 16],
            expected_attach_type: [2; 16],
            program_info_hash: Some([3; 32]),
        }
    }

    fn module(version: RuntimeVersion) -> ModuleDescription {
        ModuleDescription {
            maps: vec![MapDescription {
                name: "counts".into(),
                map_type: 2,
                key_size: 4,
                value_size: 8,
                max_entries: 1,
                inner_map_idx: 0,
                pinning: 1,
                id: 10,
                inner_id: 0,
            }],
            programs: vec![program("zeta", "xdp"), program("alpha", "sample_ext")],
            runtime_version: version,
            ..ModuleDescription::default()
        }
    }

    fn object<'a>(objects: &'a [DataObject], name: &str) -> &'a DataObject {
        objects.iter().find(|o| o.name == name).unwrap_or_else(|| panic!("{name}"))
    }

    fn target_at(o: &DataObject, offset: u32) -> Option<&Symbol> {
        o.relocations.iter().find(|r| r.offset == offset).map(|r| &r.target)
    }

    #[test]
    fn map_entries_have_zero_markers_header_and_definition_at_contract_offsets() {
        let m = module(RuntimeVersion::PORTABLE);
        let objects = build_data(&m, &layout(&m).unwrap()).unwrap();
        let maps = object(&objects, MAPS);
        assert_eq!(maps.section, DataSection::Maps);
        assert_eq!(maps.bytes.len(), 80);
        assert_eq!(&maps.bytes[0..16], &[0; 16]);
        assert_eq!(u16::from_le_bytes([maps.bytes[16], maps.bytes[17]]), 1);
        assert_eq!(&maps.bytes[24..40], &[80, 0, 0, 0, 0, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 0]);
        let words: Vec<u32> = maps.bytes[40..72].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(words, [2, 4, 8, 1, 0, 1, 10, 0]);
        let Some(Symbol::Data(name)) = target_at(maps, 72) else { panic!("name pointer") };
        assert_eq!(object(&objects, name).bytes, b"counts\0");
        assert_eq!(object(&objects, name).section, DataSection::Rdata);
    }

    #[test]
    fn programs_are_sorted_by_name_with_the_portable_144_byte_entry() {
        let m = module(RuntimeVersion::PORTABLE);
        let l = layout(&m).unwrap();
        assert_eq!(l.sorted_programs, [1, 0]);
        assert_eq!(l.pe_sections, ["xdp", "sample~1"]);
        let objects = build_data(&m, &l).unwrap();
        let programs = object(&objects, PROGRAMS);
        assert_eq!(programs.bytes.len(), 2 * 144);
        assert_eq!(&programs.bytes[0..8], &[0; 8]);
        assert_eq!(u64::from_le_bytes(programs.bytes[16..24].try_into().unwrap()), 144);
        assert_eq!(u64::from_le_bytes(programs.bytes[24..32].try_into().unwrap()), 144);
        assert_eq!(target_at(programs, 32), Some(&Symbol::Function("fn_alpha".into())));
        assert_eq!(target_at(programs, 144 + 32), Some(&Symbol::Function("fn_zeta".into())));
        assert_eq!(u16::from_le_bytes([programs.bytes[72], programs.bytes[73]]), 1, "referenced_map_count");
        assert_eq!(u16::from_le_bytes([programs.bytes[88], programs.bytes[89]]), 2, "helper_count with sentinel");
        assert_eq!(u64::from_le_bytes(programs.bytes[96..104].try_into().unwrap()), 9);
        assert_eq!(u64::from_le_bytes(programs.bytes[128..136].try_into().unwrap()), 32, "hash length");
        let Some(Symbol::Data(guid)) = target_at(programs, 104) else { panic!("program type") };
        assert_eq!(object(&objects, guid).section, DataSection::Data, "GUIDs live in .data");
        let Some(Symbol::Data(helpers)) = target_at(programs, 80) else { panic!("helpers") };
        let helpers = object(&objects, helpers);
        assert_eq!(helpers.bytes.len(), 80);
        assert_eq!(u32::from_le_bytes(helpers.bytes[24..28].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(helpers.bytes[64..68].try_into().unwrap()), 0, "sentinel id");
        assert!(target_at(helpers, 72).is_some(), "sentinel names are non-NULL (\"\")");
    }

    #[test]
    fn runtime_1_5_uses_the_160_byte_entry_with_size_154() {
        let m = module(RuntimeVersion::parse("1.5.0").unwrap());
        let objects = build_data(&m, &layout(&m).unwrap()).unwrap();
        let programs = object(&objects, PROGRAMS);
        assert_eq!(programs.bytes.len(), 2 * 160);
        assert_eq!(u64::from_le_bytes(programs.bytes[16..24].try_into().unwrap()), 154);
        assert_eq!(u64::from_le_bytes(programs.bytes[24..32].try_into().unwrap()), 160);
    }

    #[test]
    fn invalid_descriptions_are_refused() {
        let mut m = module(RuntimeVersion::PORTABLE);
        m.programs[0].helpers.push(HelperSlot { id: 1, name: "again".into() });
        assert!(matches!(layout(&m), Err(ShimError::DuplicateHelper { id: 1, .. })));
        let mut m = module(RuntimeVersion::PORTABLE);
        m.programs[1].referenced_maps = vec![3];
        assert!(matches!(layout(&m), Err(ShimError::MapIndexOutOfRange { index: 3, .. })));
        let mut m = module(RuntimeVersion::PORTABLE);
        m.programs[1].program_name = "zeta".into();
        assert!(matches!(layout(&m), Err(ShimError::DuplicateProgram(_))));
        let mut m = module(RuntimeVersion::PORTABLE);
        m.programs.clear();
        assert_eq!(layout(&m).unwrap_err(), ShimError::NoPrograms);
        let mut m = module(RuntimeVersion::PORTABLE);
        m.programs[0].program_type = [0; 16];
        assert!(matches!(layout(&m), Err(ShimError::NullProgramType { .. })));
        assert!(RuntimeVersion::parse("0.20.9").is_err());
        assert!(RuntimeVersion::parse("1.3").is_err());
    }

    #[test]
    fn nmr_client_characteristics_follow_the_wdk_layout() {
        let m = module(RuntimeVersion::PORTABLE);
        let objects = build_data(&m, &layout(&m).unwrap()).unwrap();
        let chars = object(&objects, CLIENT_CHARACTERISTICS);
        assert_eq!(chars.bytes.len(), 72);
        assert_eq!(u16::from_le_bytes([chars.bytes[2], chars.bytes[3]]), 72);
        assert_eq!(u16::from_le_bytes([chars.bytes[34], chars.bytes[35]]), 40);
        assert_eq!(target_at(chars, 8), Some(&Symbol::Function(FN_CLIENT_ATTACH.into())));
        assert_eq!(target_at(chars, 40), Some(&Symbol::Data(NPI_ID.into())));
        assert_eq!(object(&objects, NPI_ID).bytes, NATIVE_MODULE_NPI_ID);
        let table = object(&objects, crate::METADATA_TABLE);
        assert_eq!(u64::from_le_bytes(table.bytes[0..8].try_into().unwrap()), 56);
        assert_eq!(table.relocations.len(), 6);
    }
}
