//! The PE32+ writer: places functions and data objects into sections and writes a kernel-driver image.
//!
//! In: an [`ImageInput`] — compiled functions (each assigned to a code section), data objects with symbolic
//! absolute relocations, the entry-point symbol. Out: the image bytes.
//!
//! Two passes, as the `object` crate's writers do: the layout pass ([`Layout`]) fixes every section's size and
//! every object's offset inside its section — functions, data objects, unwind records and the [`ImportTable`] —
//! with nothing depending on addresses, and the sections are reserved with `object::write::pe::Writer`, which
//! assigns RVAs and file offsets; the write pass applies relocations against those RVAs
//! ([`Layout::apply_relocations`], recording DIR64 base relocations), fills the import table and `.pdata`, and
//! writes. Every offset is a
//! function of the input only, so the same input gives the same bytes (no timestamps, sorted imports).
//!
//! Header and section values follow driver-image-and-signing.md §2: AMD64/ARM64, `EXECUTABLE_IMAGE |
//! LARGE_ADDRESS_AWARE`, subsystem NATIVE 10.0, `DYNAMIC_BASE | NX_COMPAT | HIGH_ENTROPY_VA`, section alignment
//! 0x1000, file alignment 0x200, linker version 14.0, `.text` 0x68000020, `.rdata`/`.pdata` 0x48000040, `.data`
//! 0xC8000040, `.reloc` 0x42000040; our own import table in `.rdata` (IAT never executable, H3), `.pdata`
//! for every function, and a correct checksum (P11).

use std::collections::{BTreeMap, BTreeSet};

use bpf2sys_signing::pe::{pe_checksum, PeHeaders};
use object::pe;
use object::write::pe::{NtHeaders, Writer};

use crate::compiled::{CompiledFunction, RelocKind, RelocTarget, Target, UnwindData};

use super::LinkError;

/// Preferred image base of 64-bit drivers (link.exe and lld default).
pub const IMAGE_BASE: u64 = 0x1_4000_0000;
pub const SECTION_ALIGNMENT: u32 = 0x1000;
pub const FILE_ALIGNMENT: u32 = 0x200;

/// Section characteristics (driver-image-and-signing.md §2.4).
pub const CODE_FLAGS: u32 =
    pe::IMAGE_SCN_CNT_CODE | pe::IMAGE_SCN_MEM_NOT_PAGED | pe::IMAGE_SCN_MEM_EXECUTE | pe::IMAGE_SCN_MEM_READ;
pub const RDATA_FLAGS: u32 = pe::IMAGE_SCN_CNT_INITIALIZED_DATA | pe::IMAGE_SCN_MEM_NOT_PAGED | pe::IMAGE_SCN_MEM_READ;
pub const DATA_FLAGS: u32 = RDATA_FLAGS | pe::IMAGE_SCN_MEM_WRITE;

/// Where a data object goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataSectionKind {
    Rdata,
    Data,
    /// A writable data section with a custom name (`maps`, `programs`).
    Named(&'static str),
}

/// A symbol a data relocation refers to.
pub type DataTarget = RelocTarget;

/// A data object to place.
#[derive(Clone, Debug)]
pub struct DataItem {
    pub name: String,
    pub section: DataSectionKind,
    pub alignment: u32,
    pub bytes: Vec<u8>,
    /// `(offset, target, addend)`: a 64-bit absolute address field.
    pub relocations: Vec<(u32, DataTarget, i64)>,
}

/// Everything an image consists of.
#[derive(Clone, Debug)]
pub struct ImageInput {
    pub target: Target,
    /// `(PE section name, function)`; sections appear in first-use order, `.text` first.
    pub functions: Vec<(String, CompiledFunction)>,
    pub data: Vec<DataItem>,
    /// Name of the function the entry point is.
    pub entry: String,
    /// [`SECTION_ALIGNMENT`] for every driver (HVCI rule H2); other values exist only to build deliberately
    /// broken images for the lint's tests.
    pub section_alignment: u32,
}

struct Placed {
    section: usize,
    offset: u32,
}

struct SectionPlan {
    name: String,
    flags: u32,
    bytes: Vec<u8>,
    rva: u32,
    file_offset: u32,
}

fn align(v: u32, a: u32) -> u32 {
    v.div_ceil(a) * a
}

fn section_name(name: &str) -> Result<[u8; 8], LinkError> {
    if name.is_empty() || name.len() > 8 {
        return Err(LinkError::SectionName(name.to_string()));
    }
    let mut out = [0u8; 8];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// Lays out and writes the image: the layout pass ([`Layout::new`]) fixes every offset, the write pass resolves
/// relocations against the RVAs the writer assigned, fills the import table and `.pdata`, and writes.
pub fn write_image(input: &ImageInput) -> Result<Vec<u8>, LinkError> {
    let mut layout = Layout::new(input)?;
    let pdata_entry_size = match input.target {
        Target::X64 => 12,
        Target::Arm64 => 8,
    };
    let fragments: usize = input.functions.iter().map(|(_, f)| f.unwind.fragments().len()).sum();
    let pdata_size = pdata_entry_size * fragments as u32;

    // Reserve: headers, the laid-out sections, `.pdata`, `.reloc`; the writer assigns RVAs and file offsets.
    let mut out = Vec::new();
    let mut w = Writer::new(true, input.section_alignment, FILE_ALIGNMENT.min(input.section_alignment), &mut out);
    w.reserve_dos_header_and_stub();
    w.reserve_nt_headers(16);
    if let Some(empty) = layout.sections.iter().find(|s| s.bytes.is_empty()) {
        return Err(LinkError::Internal(format!("section `{}` would be empty", empty.name)));
    }
    w.reserve_section_headers(layout.sections.len() as u16 + 2);
    for s in layout.sections.iter_mut() {
        let size = s.bytes.len() as u32;
        let range = w.reserve_section(section_name(&s.name)?, s.flags, size, size);
        s.rva = range.virtual_address;
        s.file_offset = range.file_offset;
    }
    // Not `reserve_pdata_section`: it omits NOT_PAGED (driver-image-and-signing.md §2.4 wants 0x48000040).
    let pdata_range = w.reserve_section(*b".pdata\0\0", RDATA_FLAGS, pdata_size, pdata_size);
    w.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION, pdata_range.virtual_address, pdata_size);

    // Write pass.
    let mut base_relocs = layout.apply_relocations(input)?;
    let rdata_rva = layout.sections[layout.rdata].rva;
    if !layout.imports.dlls.is_empty() {
        let imports = &layout.imports;
        imports.write(&mut layout.sections[layout.rdata].bytes, rdata_rva);
        w.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_IMPORT, rdata_rva + imports.base, imports.descriptors_size());
        w.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_IAT, rdata_rva + imports.iat_start, 8 * imports.thunk_count);
    }
    let pdata = layout.pdata(input);
    // Base relocations (sorted; page-straddling is impossible for 8-aligned fields, and checked by lint H4).
    base_relocs.sort_unstable();
    base_relocs.dedup();
    for r in &base_relocs {
        w.add_reloc(*r, pe::IMAGE_REL_BASED_DIR64);
    }
    w.reserve_reloc_section();

    let entry = layout.function_rva(&input.entry).ok_or_else(|| LinkError::UndefinedSymbol(input.entry.clone()))?;
    w.write_dos_header_and_stub().map_err(|e| LinkError::Internal(e.to_string()))?;
    w.write_nt_headers(nt_headers(input.target, entry));
    w.write_section_headers();
    for s in &layout.sections {
        w.write_section(s.file_offset, &s.bytes);
    }
    w.write_section(pdata_range.file_offset, &pdata);
    w.write_reloc_section();
    drop(w);
    // The checksum covers the whole file (driver-image-and-signing.md §2.2), so it is written last.
    let headers = PeHeaders::parse(&out)
        .map_err(|e| LinkError::Internal(format!("the image just written does not parse: {e}")))?;
    let (check_sum_offset, sum) = (headers.checksum_offset, pe_checksum(&out, headers.checksum_offset));
    out[check_sum_offset..check_sum_offset + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// The headers of a driver image (driver-image-and-signing.md §2.1–2.3).
fn nt_headers(target: Target, entry: u32) -> NtHeaders {
    NtHeaders {
        machine: match target {
            Target::X64 => pe::IMAGE_FILE_MACHINE_AMD64,
            Target::Arm64 => pe::IMAGE_FILE_MACHINE_ARM64,
        },
        time_date_stamp: 0,
        characteristics: pe::IMAGE_FILE_EXECUTABLE_IMAGE | pe::IMAGE_FILE_LARGE_ADDRESS_AWARE,
        major_linker_version: 14,
        minor_linker_version: 0,
        address_of_entry_point: entry,
        image_base: IMAGE_BASE,
        major_operating_system_version: 10,
        minor_operating_system_version: 0,
        major_image_version: 0,
        minor_image_version: 0,
        major_subsystem_version: 10,
        minor_subsystem_version: 0,
        subsystem: pe::IMAGE_SUBSYSTEM_NATIVE,
        dll_characteristics: pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE
            | pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT
            | pe::IMAGE_DLLCHARACTERISTICS_HIGH_ENTROPY_VA,
        size_of_stack_reserve: 0x40000,
        size_of_stack_commit: 0x1000,
        size_of_heap_reserve: 0x100000,
        size_of_heap_commit: 0x1000,
    }
}

/// The layout pass's result: section contents with every function, data object, unwind record and the import
/// table at a fixed offset. RVAs are filled in when the writer reserves the sections.
struct Layout<'a> {
    sections: Vec<SectionPlan>,
    functions: BTreeMap<&'a str, Placed>,
    data: BTreeMap<&'a str, Placed>,
    /// Index of `.rdata` (unwind records and the import table).
    rdata: usize,
    /// Per input function: offsets of its unwind records (one per fragment) in `.rdata`.
    xdata_offsets: Vec<Vec<u32>>,
    imports: ImportTable,
}

impl<'a> Layout<'a> {
    fn new(input: &'a ImageInput) -> Result<Layout<'a>, LinkError> {
        let code_fill = match input.target {
            Target::X64 => 0xcc, // int3
            Target::Arm64 => 0x00,
        };
        let mut layout = Layout {
            sections: Vec::new(),
            functions: BTreeMap::new(),
            data: BTreeMap::new(),
            rdata: 0,
            xdata_offsets: Vec::new(),
            imports: ImportTable::default(),
        };
        layout.section(".text", CODE_FLAGS);
        for (sec, f) in &input.functions {
            let s = layout.section(sec, CODE_FLAGS);
            let offset = layout.append(s, &f.code, f.alignment.max(4), code_fill);
            if layout.functions.insert(&f.name, Placed { section: s, offset }).is_some() {
                return Err(LinkError::DuplicateSymbol(f.name.clone()));
            }
        }
        layout.rdata = layout.section(".rdata", RDATA_FLAGS);
        let data_section = layout.section(".data", DATA_FLAGS);
        for kind in input.data.iter().map(|d| d.section) {
            if let DataSectionKind::Named(n) = kind {
                layout.section(n, DATA_FLAGS);
            }
        }
        for d in &input.data {
            let s = match d.section {
                DataSectionKind::Rdata => layout.rdata,
                DataSectionKind::Data => data_section,
                DataSectionKind::Named(n) => layout.section(n, DATA_FLAGS),
            };
            let offset = layout.append(s, &d.bytes, d.alignment.max(1), 0);
            if layout.data.insert(&d.name, Placed { section: s, offset }).is_some() {
                return Err(LinkError::DuplicateSymbol(d.name.clone()));
            }
        }
        // Unwind records (.xdata) in .rdata, one per fragment.
        for (_, f) in &input.functions {
            match &f.unwind {
                UnwindData::X64 { .. } if input.target == Target::X64 => {}
                UnwindData::Arm64 { .. } if input.target == Target::Arm64 => {}
                _ => return Err(LinkError::UnwindMismatch(f.name.clone())),
            }
            let offsets = f.unwind.fragments().iter().map(|u| layout.append(layout.rdata, &u.record, 4, 0)).collect();
            layout.xdata_offsets.push(offsets);
        }
        layout.imports = ImportTable::new(input, layout.sections[layout.rdata].bytes.len() as u32);
        if !layout.imports.dlls.is_empty() {
            layout.sections[layout.rdata].bytes.resize(layout.imports.end() as usize, 0);
        }
        Ok(layout)
    }

    /// The index of section `name`, added (empty) if it is new.
    fn section(&mut self, name: &str, flags: u32) -> usize {
        if let Some(i) = self.sections.iter().position(|s| s.name == name) {
            return i;
        }
        self.sections.push(SectionPlan { name: name.to_string(), flags, bytes: Vec::new(), rva: 0, file_offset: 0 });
        self.sections.len() - 1
    }

    /// Appends `bytes` to section `s` at the next multiple of `alignment` (padding with `fill`); their offset.
    fn append(&mut self, s: usize, bytes: &[u8], alignment: u32, fill: u8) -> u32 {
        let section = &mut self.sections[s].bytes;
        let offset = align(section.len() as u32, alignment);
        section.resize(offset as usize, fill);
        section.extend_from_slice(bytes);
        offset
    }

    fn function_rva(&self, name: &str) -> Option<u32> {
        self.functions.get(name).map(|p| self.sections[p.section].rva + p.offset)
    }

    fn resolve(&self, target: &RelocTarget) -> Result<u32, LinkError> {
        let rva = |placed: Option<&Placed>| placed.map(|p| self.sections[p.section].rva + p.offset);
        match target {
            RelocTarget::Function(n) => rva(self.functions.get(n.as_str())),
            RelocTarget::Data(n) => rva(self.data.get(n.as_str())),
            RelocTarget::ImportSlot { dll, name } => {
                self.imports.iat_slot(dll, name).map(|slot| self.sections[self.rdata].rva + slot)
            }
        }
        .ok_or_else(|| match target {
            RelocTarget::Function(n) | RelocTarget::Data(n) => LinkError::UndefinedSymbol(n.clone()),
            RelocTarget::ImportSlot { dll, name } => LinkError::UndefinedSymbol(format!("{dll}!{name}")),
        })
    }

    /// Resolves every code and data relocation in place; returns the RVAs that need DIR64 base relocations.
    fn apply_relocations(&mut self, input: &ImageInput) -> Result<Vec<u32>, LinkError> {
        let mut base_relocs = Vec::new();
        for (_, f) in &input.functions {
            let p = &self.functions[f.name.as_str()];
            let (section, func_offset) = (p.section, p.offset);
            let func_rva = self.sections[section].rva + func_offset;
            for r in &f.relocations {
                let s = self.resolve(&r.target)? as i64;
                let place = func_rva as i64 + r.offset as i64;
                let at = (func_offset + r.offset) as usize;
                let bad = || LinkError::BadRelocation { function: f.name.clone(), offset: r.offset };
                apply_code_relocation(&mut self.sections[section].bytes, at, r.kind, s + r.addend, place)
                    .ok_or_else(bad)?;
                if r.kind == RelocKind::Abs64 {
                    base_relocs.push(place as u32);
                }
            }
        }
        // Data relocations: absolute addresses with DIR64 base relocations.
        for d in &input.data {
            let p = &self.data[d.name.as_str()];
            let (section, obj_offset) = (p.section, p.offset);
            let obj_rva = self.sections[section].rva + obj_offset;
            for (off, target, addend) in &d.relocations {
                if *off as usize + 8 > d.bytes.len() {
                    return Err(LinkError::BadDataRelocation { object: d.name.clone(), offset: *off });
                }
                let v = IMAGE_BASE as i64 + self.resolve(target)? as i64 + addend;
                let at = (obj_offset + off) as usize;
                self.sections[section].bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
                base_relocs.push(obj_rva + off);
            }
        }
        Ok(base_relocs)
    }

    /// `.pdata`: one RUNTIME_FUNCTION per unwind fragment, sorted by address (functions are placed in order and
    /// sections by index, so (section, offset) order is address order; a function's fragments are in order).
    fn pdata(&self, input: &ImageInput) -> Vec<u8> {
        let mut order: Vec<usize> = (0..input.functions.len()).collect();
        order.sort_by_key(|&i| {
            let p = &self.functions[input.functions[i].1.name.as_str()];
            (p.section, p.offset)
        });
        let rdata_rva = self.sections[self.rdata].rva;
        let mut pdata = Vec::new();
        for i in order {
            let f = &input.functions[i].1;
            let function = self.function_rva(&f.name).expect("placed by the layout pass");
            for (u, &xdata) in f.unwind.fragments().iter().zip(&self.xdata_offsets[i]) {
                pdata.extend_from_slice(&(function + u.start).to_le_bytes());
                if input.target == Target::X64 {
                    pdata.extend_from_slice(&(function + u.end).to_le_bytes());
                }
                pdata.extend_from_slice(&(rdata_rva + xdata).to_le_bytes());
            }
        }
        pdata
    }
}

/// Writes the relocated value of a code relocation of `kind` at `at`; `target` is the symbol's RVA plus addend and
/// `place` the RVA of the field. `None` when the field is out of bounds or the value out of range.
fn apply_code_relocation(bytes: &mut [u8], at: usize, kind: RelocKind, target: i64, place: i64) -> Option<()> {
    let width = if kind == RelocKind::Abs64 { 8 } else { 4 };
    let field = bytes.get_mut(at..at + width)?;
    let word = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    match kind {
        RelocKind::X64PcRel32 => field.copy_from_slice(&i32::try_from(target - place).ok()?.to_le_bytes()),
        RelocKind::Abs64 => field.copy_from_slice(&(IMAGE_BASE as i64 + target).to_le_bytes()),
        RelocKind::Arm64Call26 => {
            let delta = target - place;
            if delta % 4 != 0 || !(-(1 << 27)..(1 << 27)).contains(&delta) {
                return None;
            }
            let insn = (word & !0x03ff_ffff) | (((delta >> 2) as u32) & 0x03ff_ffff);
            field.copy_from_slice(&insn.to_le_bytes());
        }
        RelocKind::Arm64AdrPrelPgHi21 => {
            let delta = ((target & !0xfff) - (place & !0xfff)) >> 12;
            let immlo = (delta as u32) & 0x3;
            let immhi = ((delta >> 2) as u32) & 0x7ffff;
            let insn = (word & !((0x3 << 29) | (0x7ffff << 5))) | (immlo << 29) | (immhi << 5);
            field.copy_from_slice(&insn.to_le_bytes());
        }
        RelocKind::Arm64AddAbsLo12Nc => {
            let imm = (target as u32) & 0xfff;
            let insn = (word & !(0xfff << 10)) | (imm << 10);
            field.copy_from_slice(&insn.to_le_bytes());
        }
    }
    Some(())
}

/// Our import table in `.rdata` (never in an executable section, HVCI rule H3): descriptors and a null one, then
/// per DLL its import lookup table, then all IATs as one range (data directory #12), then hint/name entries and
/// DLL names. DLLs and names are sorted, so the layout is deterministic.
#[derive(Default)]
struct ImportTable {
    dlls: BTreeMap<String, BTreeSet<String>>,
    /// Offsets in `.rdata`.
    base: u32,
    ilt_start: u32,
    iat_start: u32,
    names_start: u32,
    thunk_count: u32,
    /// Hint/name entries, then DLL names, as they go at `names_start`.
    names: Vec<u8>,
    hint_name_offsets: BTreeMap<(String, String), u32>,
    dll_name_offsets: Vec<u32>,
}

impl ImportTable {
    /// Lays out the table for every IAT slot any code or data refers to, at the end of `.rdata` (`rdata_len`).
    fn new(input: &ImageInput, rdata_len: u32) -> ImportTable {
        let mut dlls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let all_targets = input
            .functions
            .iter()
            .flat_map(|(_, f)| f.relocations.iter().map(|r| &r.target))
            .chain(input.data.iter().flat_map(|d| d.relocations.iter().map(|r| &r.1)));
        for t in all_targets {
            if let RelocTarget::ImportSlot { dll, name } = t {
                dlls.entry(dll.clone()).or_default().insert(name.clone());
            }
        }
        let base = align(rdata_len, 8);
        let thunk_count: u32 = dlls.values().map(|n| n.len() as u32 + 1).sum();
        let ilt_start = align(base + 20 * (dlls.len() as u32 + 1), 8);
        let iat_start = ilt_start + 8 * thunk_count;
        let names_start = iat_start + 8 * thunk_count;
        let mut names = Vec::new();
        let mut hint_name_offsets = BTreeMap::new();
        for (dll, imported) in &dlls {
            for n in imported {
                if names.len() % 2 == 1 {
                    names.push(0);
                }
                hint_name_offsets.insert((dll.clone(), n.clone()), names_start + names.len() as u32);
                names.extend_from_slice(&0u16.to_le_bytes());
                names.extend_from_slice(n.as_bytes());
                names.push(0);
            }
        }
        let mut dll_name_offsets = Vec::new();
        for dll in dlls.keys() {
            dll_name_offsets.push(names_start + names.len() as u32);
            names.extend_from_slice(dll.as_bytes());
            names.push(0);
        }
        ImportTable {
            dlls,
            base,
            ilt_start,
            iat_start,
            names_start,
            thunk_count,
            names,
            hint_name_offsets,
            dll_name_offsets,
        }
    }

    fn descriptors_size(&self) -> u32 {
        20 * (self.dlls.len() as u32 + 1)
    }

    fn end(&self) -> u32 {
        self.names_start + self.names.len() as u32
    }

    /// The `.rdata` offset of the IAT slot of `dll!name`.
    fn iat_slot(&self, dll: &str, name: &str) -> Option<u32> {
        let mut thunk = 0u32;
        for (d, imported) in &self.dlls {
            for n in imported {
                if d == dll && n == name {
                    return Some(self.iat_start + 8 * thunk);
                }
                thunk += 1;
            }
            thunk += 1; // the null terminator
        }
        None
    }

    /// Fills the table into `.rdata` (`rdata`, at RVA `rdata_rva`).
    fn write(&self, rdata: &mut [u8], rdata_rva: u32) {
        let mut thunk = 0u32;
        for (i, (dll, imported)) in self.dlls.iter().enumerate() {
            let d = (self.base + 20 * i as u32) as usize;
            let ilt = rdata_rva + self.ilt_start + 8 * thunk;
            let iat = rdata_rva + self.iat_start + 8 * thunk;
            rdata[d..d + 4].copy_from_slice(&ilt.to_le_bytes()); // OriginalFirstThunk
            rdata[d + 12..d + 16].copy_from_slice(&(rdata_rva + self.dll_name_offsets[i]).to_le_bytes());
            rdata[d + 16..d + 20].copy_from_slice(&iat.to_le_bytes()); // FirstThunk
            for n in imported {
                let hint_name = (rdata_rva + self.hint_name_offsets[&(dll.clone(), n.clone())]) as u64;
                for table in [self.ilt_start, self.iat_start] {
                    let at = (table + 8 * thunk) as usize;
                    rdata[at..at + 8].copy_from_slice(&hint_name.to_le_bytes());
                }
                thunk += 1;
            }
            thunk += 1; // null terminators stay zero
        }
        rdata[self.names_start as usize..self.end() as usize].copy_from_slice(&self.names);
    }
}
