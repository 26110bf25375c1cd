//! The PE32+ writer: places functions and data objects into sections and writes a kernel-driver image.
//!
//! In: an [`ImageInput`] — compiled functions (each assigned to a code section), data objects with symbolic
//! absolute relocations, the entry-point symbol. Out: the image bytes.
//!
//! Two passes, as the `object` crate's writers do: the layout pass fixes every section's size and every object's
//! offset inside its section (nothing depends on addresses), and reserves the sections with
//! `object::write::pe::Writer`, which assigns RVAs and file offsets; the write pass fills section contents with
//! relocations resolved against those RVAs, records DIR64 base relocations, and writes. Every offset is a
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

/// Lays out and writes the image.
pub fn write_image(input: &ImageInput) -> Result<Vec<u8>, LinkError> {
    let code_fill = match input.target {
        Target::X64 => 0xcc, // int3
        Target::Arm64 => 0x00,
    };

    // ---- layout pass: sections and offsets ----
    let mut sections: Vec<SectionPlan> = Vec::new();
    let section_index = |sections: &mut Vec<SectionPlan>, name: &str, flags: u32| -> usize {
        if let Some(i) = sections.iter().position(|s| s.name == name) {
            return i;
        }
        sections.push(SectionPlan { name: name.to_string(), flags, bytes: Vec::new(), rva: 0, file_offset: 0 });
        sections.len() - 1
    };
    section_index(&mut sections, ".text", CODE_FLAGS);
    let mut functions: BTreeMap<&str, Placed> = BTreeMap::new();
    for (sec, f) in &input.functions {
        let s = section_index(&mut sections, sec, CODE_FLAGS);
        let bytes = &mut sections[s].bytes;
        let offset = align(bytes.len() as u32, f.alignment.max(4));
        bytes.resize(offset as usize, code_fill);
        bytes.extend_from_slice(&f.code);
        if functions.insert(&f.name, Placed { section: s, offset }).is_some() {
            return Err(LinkError::DuplicateSymbol(f.name.clone()));
        }
    }
    let rdata = section_index(&mut sections, ".rdata", RDATA_FLAGS);
    let data_sec = section_index(&mut sections, ".data", DATA_FLAGS);
    for kind in input.data.iter().map(|d| d.section) {
        if let DataSectionKind::Named(n) = kind {
            section_index(&mut sections, n, DATA_FLAGS);
        }
    }
    let mut data: BTreeMap<&str, Placed> = BTreeMap::new();
    for d in &input.data {
        let s = match d.section {
            DataSectionKind::Rdata => rdata,
            DataSectionKind::Data => data_sec,
            DataSectionKind::Named(n) => section_index(&mut sections, n, DATA_FLAGS),
        };
        let bytes = &mut sections[s].bytes;
        let offset = align(bytes.len() as u32, d.alignment.max(1));
        bytes.resize(offset as usize, 0);
        bytes.extend_from_slice(&d.bytes);
        if data.insert(&d.name, Placed { section: s, offset }).is_some() {
            return Err(LinkError::DuplicateSymbol(d.name.clone()));
        }
    }
    // Unwind records (.xdata) in .rdata.
    let mut xdata_offsets = Vec::new();
    for (_, f) in &input.functions {
        let bytes = &mut sections[rdata].bytes;
        let offset = align(bytes.len() as u32, 4);
        bytes.resize(offset as usize, 0);
        match &f.unwind {
            UnwindData::X64 { unwind_info } if input.target == Target::X64 => bytes.extend_from_slice(unwind_info),
            UnwindData::Arm64 { xdata } if input.target == Target::Arm64 => bytes.extend_from_slice(xdata),
            _ => return Err(LinkError::UnwindMismatch(f.name.clone())),
        }
        xdata_offsets.push(offset);
    }
    // Imports: every IAT slot any code or data refers to, sorted (deterministic).
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let all_targets = input
        .functions
        .iter()
        .flat_map(|(_, f)| f.relocations.iter().map(|r| &r.target))
        .chain(input.data.iter().flat_map(|d| d.relocations.iter().map(|r| &r.1)));
    for t in all_targets {
        if let RelocTarget::ImportSlot { dll, name } = t {
            imports.entry(dll.clone()).or_default().insert(name.clone());
        }
    }
    // Import table layout in .rdata: descriptors + null, then per DLL its ILT, then all IATs (one range for
    // directory #12), then hint/name entries and DLL names.
    let import_base = align(sections[rdata].bytes.len() as u32, 8);
    let dll_count = imports.len() as u32;
    let descriptors_size = 20 * (dll_count + 1);
    let thunk_count: u32 = imports.values().map(|n| n.len() as u32 + 1).sum();
    let ilt_start = align(import_base + descriptors_size, 8);
    let iat_start = ilt_start + 8 * thunk_count;
    let names_start = iat_start + 8 * thunk_count;
    let mut hint_names = Vec::new();
    let mut hint_name_offsets: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for (dll, names) in &imports {
        for n in names {
            if hint_names.len() % 2 == 1 {
                hint_names.push(0);
            }
            hint_name_offsets.insert((dll.as_str(), n.as_str()), names_start + hint_names.len() as u32);
            hint_names.extend_from_slice(&0u16.to_le_bytes());
            hint_names.extend_from_slice(n.as_bytes());
            hint_names.push(0);
        }
    }
    let mut dll_name_offsets = Vec::new();
    for dll in imports.keys() {
        dll_name_offsets.push(names_start + hint_names.len() as u32);
        hint_names.extend_from_slice(dll.as_bytes());
        hint_names.push(0);
    }
    let import_end = names_start + hint_names.len() as u32;
    if !imports.is_empty() {
        sections[rdata].bytes.resize(import_end as usize, 0);
    }

    // .pdata: one RUNTIME_FUNCTION per function, sorted by address (functions are placed in order, and
    // sections by index, so sorting by (section, offset) is address order).
    let mut pdata_order: Vec<usize> = (0..input.functions.len()).collect();
    pdata_order.sort_by_key(|&i| {
        let p = &functions[input.functions[i].1.name.as_str()];
        (p.section, p.offset)
    });
    let pdata_entry_size = match input.target {
        Target::X64 => 12,
        Target::Arm64 => 8,
    };
    let pdata_size = pdata_entry_size * input.functions.len() as u32;

    // Reserve.
    let mut out = Vec::new();
    let mut w = Writer::new(true, input.section_alignment, FILE_ALIGNMENT.min(input.section_alignment), &mut out);
    w.reserve_dos_header_and_stub();
    w.reserve_nt_headers(16);
    if let Some(empty) = sections.iter().find(|s| s.bytes.is_empty()) {
        return Err(LinkError::Internal(format!("section `{}` would be empty", empty.name)));
    }
    w.reserve_section_headers(sections.len() as u16 + 2);
    for s in sections.iter_mut() {
        let size = s.bytes.len() as u32;
        let range = w.reserve_section(section_name(&s.name)?, s.flags, size, size);
        s.rva = range.virtual_address;
        s.file_offset = range.file_offset;
    }
    // Not `reserve_pdata_section`: it omits NOT_PAGED (driver-image-and-signing.md §2.4 wants 0x48000040).
    let pdata_range = w.reserve_section(*b".pdata\0\0", RDATA_FLAGS, pdata_size, pdata_size);
    w.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION, pdata_range.virtual_address, pdata_size);

    // ---- write pass: resolve symbols ----
    let rvas: Vec<u32> = sections.iter().map(|s| s.rva).collect();
    let function_rva = |name: &str| functions.get(name).map(|p| rvas[p.section] + p.offset);
    let data_rva = |name: &str| data.get(name).map(|p| rvas[p.section] + p.offset);
    let rdata_rva = rvas[rdata];
    let mut iat_slots: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    {
        let mut thunk = 0u32;
        for (dll, names) in &imports {
            for n in names {
                iat_slots.insert((dll.as_str(), n.as_str()), rdata_rva + iat_start + 8 * thunk);
                thunk += 1;
            }
            thunk += 1;
        }
    }
    let resolve = |t: &RelocTarget| -> Result<u32, LinkError> {
        match t {
            RelocTarget::Function(n) => function_rva(n).ok_or_else(|| LinkError::UndefinedSymbol(n.clone())),
            RelocTarget::Data(n) => data_rva(n).ok_or_else(|| LinkError::UndefinedSymbol(n.clone())),
            RelocTarget::ImportSlot { dll, name } => iat_slots
                .get(&(dll.as_str(), name.as_str()))
                .copied()
                .ok_or_else(|| LinkError::UndefinedSymbol(format!("{dll}!{name}"))),
        }
    };
    let mut base_relocs: Vec<u32> = Vec::new();

    // Code relocations.
    for (_, f) in &input.functions {
        let p = &functions[f.name.as_str()];
        let func_rva = rvas[p.section] + p.offset;
        for r in &f.relocations {
            let s = resolve(&r.target)? as i64;
            let place = func_rva as i64 + r.offset as i64;
            let at = (p.offset + r.offset) as usize;
            let bytes = &mut sections[p.section].bytes;
            if at + if r.kind == RelocKind::Abs64 { 8 } else { 4 } > bytes.len() {
                return Err(LinkError::BadRelocation { function: f.name.clone(), offset: r.offset });
            }
            let word = |b: &[u8]| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            match r.kind {
                RelocKind::X64PcRel32 => {
                    let v = s + r.addend - place;
                    let v = i32::try_from(v)
                        .map_err(|_| LinkError::BadRelocation { function: f.name.clone(), offset: r.offset })?;
                    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                RelocKind::Abs64 => {
                    let v = IMAGE_BASE as i64 + s + r.addend;
                    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    base_relocs.push(place as u32);
                }
                RelocKind::Arm64Call26 => {
                    let delta = s + r.addend - place;
                    if delta % 4 != 0 || !(-(1 << 27)..(1 << 27)).contains(&delta) {
                        return Err(LinkError::BadRelocation { function: f.name.clone(), offset: r.offset });
                    }
                    let insn = (word(bytes) & !0x03ff_ffff) | (((delta >> 2) as u32) & 0x03ff_ffff);
                    bytes[at..at + 4].copy_from_slice(&insn.to_le_bytes());
                }
                RelocKind::Arm64AdrPrelPgHi21 => {
                    let delta = (((s + r.addend) & !0xfff) - (place & !0xfff)) >> 12;
                    let immlo = (delta as u32) & 0x3;
                    let immhi = ((delta >> 2) as u32) & 0x7ffff;
                    let insn = (word(bytes) & !((0x3 << 29) | (0x7ffff << 5))) | (immlo << 29) | (immhi << 5);
                    bytes[at..at + 4].copy_from_slice(&insn.to_le_bytes());
                }
                RelocKind::Arm64AddAbsLo12Nc => {
                    let imm = ((s + r.addend) as u32) & 0xfff;
                    let insn = (word(bytes) & !(0xfff << 10)) | (imm << 10);
                    bytes[at..at + 4].copy_from_slice(&insn.to_le_bytes());
                }
            }
        }
    }
    // Data relocations: absolute addresses with DIR64 base relocations.
    for d in &input.data {
        let p = &data[d.name.as_str()];
        let obj_rva = rvas[p.section] + p.offset;
        for (off, target, addend) in &d.relocations {
            if *off as usize + 8 > d.bytes.len() {
                return Err(LinkError::BadDataRelocation { object: d.name.clone(), offset: *off });
            }
            let v = IMAGE_BASE as i64 + resolve(target)? as i64 + addend;
            let at = (p.offset + off) as usize;
            sections[p.section].bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            base_relocs.push(obj_rva + off);
        }
    }
    // Import table contents.
    if !imports.is_empty() {
        let b = &mut sections[rdata].bytes;
        let mut thunk = 0u32;
        for (i, (dll, names)) in imports.iter().enumerate() {
            let d = (import_base + 20 * i as u32) as usize;
            let ilt = rdata_rva + ilt_start + 8 * thunk;
            let iat = rdata_rva + iat_start + 8 * thunk;
            b[d..d + 4].copy_from_slice(&ilt.to_le_bytes()); // OriginalFirstThunk
            b[d + 12..d + 16].copy_from_slice(&(rdata_rva + dll_name_offsets[i]).to_le_bytes());
            b[d + 16..d + 20].copy_from_slice(&iat.to_le_bytes()); // FirstThunk
            for n in names {
                let hint_name = (rdata_rva + hint_name_offsets[&(dll.as_str(), n.as_str())]) as u64;
                for table in [ilt_start, iat_start] {
                    let at = (table + 8 * thunk) as usize;
                    b[at..at + 8].copy_from_slice(&hint_name.to_le_bytes());
                }
                thunk += 1;
            }
            thunk += 1; // null terminators stay zero
        }
        b[names_start as usize..import_end as usize].copy_from_slice(&hint_names);
        w.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_IMPORT, rdata_rva + import_base, descriptors_size);
        w.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_IAT, rdata_rva + iat_start, 8 * thunk_count);
    }
    // .pdata contents.
    let mut pdata = Vec::with_capacity(pdata_size as usize);
    for &i in &pdata_order {
        let f = &input.functions[i].1;
        let begin = function_rva(&f.name).expect("placed above");
        let unwind = rdata_rva + xdata_offsets[i];
        pdata.extend_from_slice(&begin.to_le_bytes());
        if input.target == Target::X64 {
            pdata.extend_from_slice(&(begin + f.code.len() as u32).to_le_bytes());
        }
        pdata.extend_from_slice(&unwind.to_le_bytes());
    }

    // Base relocations (sorted; page-straddling is impossible for 8-aligned fields, and checked by lint H4).
    base_relocs.sort_unstable();
    base_relocs.dedup();
    for r in &base_relocs {
        w.add_reloc(*r, pe::IMAGE_REL_BASED_DIR64);
    }
    w.reserve_reloc_section();

    let entry = function_rva(&input.entry).ok_or_else(|| LinkError::UndefinedSymbol(input.entry.clone()))?;
    w.write_dos_header_and_stub().map_err(|e| LinkError::Internal(e.to_string()))?;
    w.write_nt_headers(NtHeaders {
        machine: match input.target {
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
    });
    w.write_section_headers();
    for s in &sections {
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
