//! Static lint of a driver image: the HVCI rules H1–H7 and the PE-structure rules P1–P11 of
//! driver-image-and-signing.md §5.2.
//!
//! In: the bytes of a `.sys`. Out: a [`LintReport`] with one [`RuleResult`] per rule (pass, or the findings that
//! break it). The image is parsed here with a deliberately small, bounds-checked reader rather than a PE crate,
//! so that a broken image fails the rule it breaks instead of failing to parse.
//!
//! The rule list is data ([`RULES`]). [`lint_driver`] is the whole lint as `bpf2sys check` and `build` apply it:
//! it refuses a file that is not a PE32+ image at all, then adds the signature rules S1–S7 of the signing crate,
//! whose verification runs once for all seven. Every rule is named by one [`RuleId`].

use bpf2sys_signing::pe::{pe_checksum, PeHeaders, SectionHeader};

const IMAGE_SCN_CNT_CODE: u32 = 0x20;
const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x40;
const IMAGE_SCN_CNT_UNINITIALIZED_DATA: u32 = 0x80;
const IMAGE_SCN_MEM_DISCARDABLE: u32 = 0x0200_0000;
const IMAGE_SCN_MEM_NOT_PAGED: u32 = 0x0800_0000;
const IMAGE_SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
const IMAGE_SCN_MEM_WRITE: u32 = 0x8000_0000;

const DLL_HIGH_ENTROPY_VA: u16 = 0x0020;
const DLL_DYNAMIC_BASE: u16 = 0x0040;
const DLL_FORCE_INTEGRITY: u16 = 0x0080;
const DLL_NX_COMPAT: u16 = 0x0100;
const DLL_GUARD_CF: u16 = 0x4000;
const DLL_TERMINAL_SERVER_AWARE: u16 = 0x8000;
const _: u16 = DLL_HIGH_ENTROPY_VA;

const FILE_RELOCS_STRIPPED: u16 = 0x0001;
const FILE_EXECUTABLE_IMAGE: u16 = 0x0002;
const FILE_32BIT_MACHINE: u16 = 0x0100;
const FILE_DLL: u16 = 0x2000;
const FILE_UP_SYSTEM_ONLY: u16 = 0x4000;

const MACHINE_AMD64: u16 = 0x8664;
const MACHINE_ARM64: u16 = 0xAA64;

const DIR_IMPORT: usize = 1;
const DIR_EXCEPTION: usize = 3;
const DIR_BASERELOC: usize = 5;
const DIR_TLS: usize = 9;
const DIR_LOAD_CONFIG: usize = 10;
const DIR_IAT: usize = 12;
const DIR_DELAY_IMPORT: usize = 13;

/// Import modules a kernel driver may use (rule P9).
pub const ALLOWED_IMPORT_MODULES: &[&str] = &["ntoskrnl.exe", "NETIO.SYS", "HAL.dll"];

/// Kernel functions bpf2sys drivers are allowed to import (rule H7). Everything the runtime shim calls is here;
/// none of them allocates or maps executable memory (implement-hvci-compatible-code.md's DDI list).
pub const ALLOWED_IMPORTS: &[&str] = &[
    "RtlQueryRegistryValues",
    "memcpy",
    "memset",
    "memmove",
    "NmrRegisterClient",
    "NmrDeregisterClient",
    "NmrWaitForClientDeregisterComplete",
    "NmrClientAttachProvider",
];

/// The identifier of a lint rule of driver-image-and-signing.md §5.2: HVCI (H), PE structure (P), signature (S).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleId {
    H1,
    H2,
    H3,
    H4,
    H5,
    H6,
    H7,
    P1,
    P2,
    P3,
    P4,
    P5,
    P6,
    P7,
    P8,
    P9,
    P10,
    P11,
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
}

impl RuleId {
    /// The rule id of a signature rule of the signing crate; None for its non-lint categories (chain trust,
    /// timestamp, structure), which `check` does not report as rules.
    pub fn from_signature_rule(rule: bpf2sys_signing::verify::Rule) -> Option<RuleId> {
        use bpf2sys_signing::verify::Rule;
        Some(match rule {
            Rule::S1 => RuleId::S1,
            Rule::S2 => RuleId::S2,
            Rule::S3 => RuleId::S3,
            Rule::S4 => RuleId::S4,
            Rule::S5 => RuleId::S5,
            Rule::S6 => RuleId::S6,
            Rule::S7 => RuleId::S7,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Padding applies to the name ("{:<4}" in the report).
        f.pad(&format!("{self:?}"))
    }
}

impl PartialEq<&str> for RuleId {
    fn eq(&self, other: &&str) -> bool {
        format!("{self:?}") == *other
    }
}

/// One lint rule.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub id: RuleId,
    pub title: &'static str,
    check: fn(&Image) -> Vec<String>,
}

/// The built-in rules, in report order.
pub static RULES: &[Rule] = &[
    Rule { id: RuleId::H1, title: "no section is both writable and executable", check: h1 },
    Rule { id: RuleId::H2, title: "section alignment and section addresses are page multiples", check: h2 },
    Rule { id: RuleId::H3, title: "the import address table is not in an executable section", check: h3 },
    Rule { id: RuleId::H4, title: "no base relocation crosses a 4 KiB page", check: h4 },
    Rule { id: RuleId::H5, title: "NX_COMPAT is set", check: h5 },
    Rule { id: RuleId::H6, title: "discardable code sections (INIT) are not writable", check: h6 },
    Rule { id: RuleId::H7, title: "imports are limited to an allow-list (no executable-memory DDIs)", check: h7 },
    Rule { id: RuleId::P1, title: "machine, magic and file characteristics are those of a driver", check: p1 },
    Rule {
        id: RuleId::P2,
        title: "subsystem NATIVE, DYNAMIC_BASE, and a valid .reloc with DIR64 entries only",
        check: p2,
    },
    Rule { id: RuleId::P3, title: "section table, alignments and header sizes are consistent", check: p3 },
    Rule { id: RuleId::P4, title: "every section is readable, typed, and non-paged unless PAGE*", check: p4 },
    Rule { id: RuleId::P5, title: "with FORCE_INTEGRITY, uninitialized sections have no raw data", check: p5 },
    Rule { id: RuleId::P6, title: "the entry point lies in an executable section", check: p6 },
    Rule { id: RuleId::P7, title: ".pdata is sorted, inside code, with well-formed unwind data", check: p7 },
    Rule {
        id: RuleId::P8,
        title: "GUARD_CF only with a load-config function table; cookie in writable data",
        check: p8,
    },
    Rule { id: RuleId::P9, title: "imports only from kernel modules; no delay-load or TLS directory", check: p9 },
    Rule { id: RuleId::P10, title: "linker version ≥ 14 and no TERMINAL_SERVER_AWARE", check: p10 },
    Rule { id: RuleId::P11, title: "the CheckSum field equals the recomputed checksum", check: p11 },
];

/// The outcome of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleResult {
    pub id: RuleId,
    pub title: &'static str,
    /// Empty when the rule passes.
    pub findings: Vec<String>,
}

/// The outcome of all rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintReport {
    pub results: Vec<RuleResult>,
}

impl LintReport {
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.findings.is_empty())
    }

    /// Ids of the failing rules.
    pub fn failed_rules(&self) -> Vec<RuleId> {
        self.results.iter().filter(|r| !r.findings.is_empty()).map(|r| r.id).collect()
    }
}

impl std::fmt::Display for LintReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.results {
            if r.findings.is_empty() {
                writeln!(f, "{:<4} pass  {}", r.id, r.title)?;
            } else {
                writeln!(f, "{:<4} FAIL  {}", r.id, r.title)?;
                for finding in &r.findings {
                    writeln!(f, "            {finding}")?;
                }
            }
        }
        let failed = self.failed_rules();
        if failed.is_empty() {
            write!(f, "all {} rules pass", self.results.len())
        } else {
            let names: Vec<String> = failed.iter().map(RuleId::to_string).collect();
            write!(f, "{} of {} rules fail: {}", failed.len(), self.results.len(), names.join(", "))
        }
    }
}

/// The file is not a PE32+ image at all, so no rule can be evaluated.
#[derive(Debug, thiserror::Error)]
#[error("not a PE32+ image: {0}")]
pub struct NotAnImage(String);

/// The whole lint: the PE headers must parse, then H1–H7, P1–P11 and S1–S7 (the signature is verified once).
pub fn lint_driver(bytes: &[u8]) -> Result<LintReport, NotAnImage> {
    let image = Image::parse(bytes).map_err(NotAnImage)?;
    let mut results: Vec<RuleResult> = RULES
        .iter()
        .map(|rule| RuleResult { id: rule.id, title: rule.title, findings: (rule.check)(&image) })
        .collect();
    for outcome in bpf2sys_signing::lint::check(bytes) {
        let Some(id) = RuleId::from_signature_rule(outcome.rule) else { continue };
        let findings = match outcome.status {
            bpf2sys_signing::lint::RuleStatus::Fail(messages) => messages,
            _ => Vec::new(),
        };
        results.push(RuleResult { id, title: outcome.summary, findings });
    }
    Ok(LintReport { results })
}

/// Runs the built-in rules H1–H7 and P1–P11; an image whose headers do not parse fails P1 and P3.
pub fn lint_image(bytes: &[u8]) -> LintReport {
    let results = match Image::parse(bytes) {
        Ok(image) => RULES
            .iter()
            .map(|rule| RuleResult { id: rule.id, title: rule.title, findings: (rule.check)(&image) })
            .collect(),
        // Nothing else can be checked without headers: report it under the structure rules.
        Err(e) => RULES
            .iter()
            .map(|rule| {
                let findings = if matches!(rule.id, RuleId::P1 | RuleId::P3) {
                    vec![format!("cannot parse headers: {e}")]
                } else {
                    vec![]
                };
                RuleResult { id: rule.id, title: rule.title, findings }
            })
            .collect(),
    };
    LintReport { results }
}

/// The parsed headers.
struct Image<'a> {
    bytes: &'a [u8],
    machine: u16,
    number_of_sections: u16,
    characteristics: u16,
    magic: u16,
    major_linker_version: u8,
    address_of_entry_point: u32,
    section_alignment: u32,
    file_alignment: u32,
    size_of_image: u32,
    size_of_headers: u32,
    check_sum: u32,
    checksum_offset: usize,
    subsystem: u16,
    dll_characteristics: u16,
    directories: Vec<(u32, u32)>,
    sections: Vec<SectionHeader>,
    /// File offset just past the section table.
    headers_end: usize,
}

fn rd16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn rd32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn rd64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

impl<'a> Image<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Image<'a>, String> {
        let h = PeHeaders::parse(bytes).map_err(|e| e.to_string())?;
        let number_of_rva = h.number_of_rva_and_sizes as usize;
        if number_of_rva > 16 || 112 + 8 * number_of_rva > h.size_of_optional_header as usize {
            return Err(format!("{number_of_rva} data directories do not fit the optional header"));
        }
        Ok(Image {
            bytes,
            machine: h.machine,
            number_of_sections: h.number_of_sections,
            characteristics: h.characteristics,
            magic: h.magic,
            major_linker_version: h.major_linker_version,
            address_of_entry_point: h.address_of_entry_point,
            section_alignment: h.section_alignment,
            file_alignment: h.file_alignment,
            size_of_image: h.size_of_image,
            size_of_headers: h.size_of_headers,
            check_sum: h.check_sum,
            checksum_offset: h.checksum_offset,
            subsystem: h.subsystem,
            dll_characteristics: h.dll_characteristics,
            directories: h.data_directories.to_vec(),
            sections: h.sections,
            headers_end: h.section_table_end,
        })
    }

    /// The section holding `rva`, if any. Every RVA sum below wraps instead of overflowing: the fields come from
    /// the file, and a wrapped RVA simply lies in no section.
    fn section_of(&self, rva: u32) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| rva >= s.virtual_address && u64::from(rva) < section_end(s))
    }

    /// File offset of an RVA with `len` bytes of raw data behind it.
    fn offset_of(&self, rva: u32, len: u32) -> Option<usize> {
        let s = self.section_of(rva)?;
        let delta = rva - s.virtual_address;
        if delta.checked_add(len)? > s.size_of_raw_data {
            return None;
        }
        let off = s.pointer_to_raw_data as usize + delta as usize;
        (off + len as usize <= self.bytes.len()).then_some(off)
    }

    fn read32(&self, rva: u32) -> Option<u32> {
        self.offset_of(rva, 4).and_then(|o| rd32(self.bytes, o))
    }
    fn read64(&self, rva: u32) -> Option<u64> {
        self.offset_of(rva, 8).and_then(|o| rd64(self.bytes, o))
    }
    fn c_string(&self, rva: u32) -> Option<String> {
        let start = self.offset_of(rva, 1)?;
        let len = self.bytes[start..].iter().take(256).position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&self.bytes[start..start + len]).into_owned())
    }

    fn is_exec(s: &SectionHeader) -> bool {
        s.characteristics & IMAGE_SCN_MEM_EXECUTE != 0
    }

    /// `(dll, FirstThunk rva, [function names])` for each import descriptor; errors as findings.
    fn imports(&self) -> Result<Vec<(String, u32, Vec<String>)>, String> {
        let (rva, size) = self.directories[DIR_IMPORT];
        if rva == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for i in 0..(size / 20).max(1) + 64 {
            let d = rva.wrapping_add(i.wrapping_mul(20));
            let ilt = self.read32(d).ok_or(format!("import descriptor {i} at RVA {d:#x} is outside the image"))?;
            let name = self.read32(d.wrapping_add(12)).ok_or("truncated import descriptor")?;
            let iat = self.read32(d.wrapping_add(16)).ok_or("truncated import descriptor")?;
            if ilt == 0 && name == 0 && iat == 0 {
                return Ok(out);
            }
            let dll = self.c_string(name).ok_or(format!("import descriptor {i}: DLL name RVA {name:#x} is invalid"))?;
            let mut names = Vec::new();
            let lookup = if ilt != 0 { ilt } else { iat };
            for k in 0..4096u32 {
                let thunk =
                    self.read64(lookup.wrapping_add(8 * k)).ok_or(format!("{dll}: thunk {k} is outside the image"))?;
                if thunk == 0 {
                    break;
                }
                if thunk & (1 << 63) != 0 {
                    names.push(format!("#{}", thunk & 0xffff));
                } else {
                    names.push(
                        self.c_string((thunk as u32).wrapping_add(2))
                            .ok_or(format!("{dll}: hint/name {k} is invalid"))?,
                    );
                }
            }
            out.push((dll, iat, names));
        }
        Err("import descriptor list has no terminator".into())
    }
}

/// One past the section's last RVA, without overflow.
fn section_end(s: &SectionHeader) -> u64 {
    u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.size_of_raw_data))
}

fn h1(img: &Image) -> Vec<String> {
    img.sections
        .iter()
        .filter(|s| s.characteristics & IMAGE_SCN_MEM_WRITE != 0 && s.characteristics & IMAGE_SCN_MEM_EXECUTE != 0)
        .map(|s| format!("section `{}` ({:#010x}) is writable and executable", s.name, s.characteristics))
        .collect()
}

fn h2(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.section_alignment == 0 || !img.section_alignment.is_multiple_of(0x1000) {
        f.push(format!("SectionAlignment {:#x} is not a multiple of 0x1000", img.section_alignment));
    }
    for s in &img.sections {
        if s.virtual_address % 0x1000 != 0 {
            f.push(format!("section `{}` starts at RVA {:#x}, not page-aligned", s.name, s.virtual_address));
        }
    }
    f
}

fn h3(img: &Image) -> Vec<String> {
    let mut ranges = Vec::new();
    let (iat, size) = img.directories[DIR_IAT];
    if iat != 0 {
        ranges.push((iat, size.max(1)));
    } else {
        match img.imports() {
            Ok(list) => {
                ranges.extend(list.iter().map(|(_, first_thunk, names)| (*first_thunk, 8 * (names.len() as u32 + 1))))
            }
            Err(e) => return vec![e],
        }
    }
    let mut f = Vec::new();
    for (start, len) in ranges {
        let end = u64::from(start) + u64::from(len);
        match (img.section_of(start), img.section_of(start.wrapping_add(len - 1))) {
            (Some(a), Some(b)) if a.name == b.name && end <= section_end(a) && !Image::is_exec(a) => {}
            (Some(a), Some(b)) if a.name == b.name && end <= section_end(a) => {
                f.push(format!("IAT {start:#x}..{end:#x} is in executable section `{}`", a.name))
            }
            _ => f.push(format!("IAT {start:#x}..{end:#x} is not inside one section")),
        }
    }
    f
}

/// Base relocation entries `(page rva, type, offset)`, or a structural error.
fn base_relocations(img: &Image) -> Result<Vec<(u32, u16, u16)>, String> {
    let (rva, size) = img.directories[DIR_BASERELOC];
    if rva == 0 || size == 0 {
        return Err("no base relocation directory".into());
    }
    let mut out = Vec::new();
    let mut at = 0u32;
    while at < size {
        if !at.is_multiple_of(4) {
            return Err(format!("relocation block at +{at:#x} is not 32-bit aligned"));
        }
        let page =
            img.read32(rva.wrapping_add(at)).ok_or(format!("relocation block at +{at:#x} is outside the image"))?;
        let block = img
            .read32(rva.wrapping_add(at).wrapping_add(4))
            .ok_or(format!("relocation block at +{at:#x} is truncated"))?;
        if block < 8 || block % 2 != 0 || u64::from(at) + u64::from(block) > u64::from(size) {
            return Err(format!("relocation block at +{at:#x} has an inconsistent BlockSize {block}"));
        }
        let off = img
            .offset_of(rva.wrapping_add(at), block)
            .ok_or(format!("relocation block at +{at:#x} is outside the image"))?;
        for k in 0..(block - 8) / 2 {
            let e = rd16(img.bytes, off + 8 + 2 * k as usize).expect("checked");
            out.push((page, e >> 12, e & 0xfff));
        }
        at += block;
    }
    Ok(out)
}

fn h4(img: &Image) -> Vec<String> {
    let Ok(relocs) = base_relocations(img) else { return Vec::new() }; // P2 reports structure problems.
    relocs
        .iter()
        .filter_map(|&(page, ty, off)| match ty {
            10 if off > 0xff8 => {
                Some(format!("DIR64 at RVA {:#x} crosses a page boundary", page.wrapping_add(off as u32)))
            }
            3 if off > 0xffc => {
                Some(format!("HIGHLOW at RVA {:#x} crosses a page boundary", page.wrapping_add(off as u32)))
            }
            _ => None,
        })
        .collect()
}

fn h5(img: &Image) -> Vec<String> {
    if img.dll_characteristics & DLL_NX_COMPAT == 0 {
        vec![format!("DllCharacteristics {:#06x} lacks NX_COMPAT (0x0100)", img.dll_characteristics)]
    } else {
        Vec::new()
    }
}

fn h6(img: &Image) -> Vec<String> {
    img.sections
        .iter()
        .filter(|s| {
            let code = s.characteristics & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE) != 0;
            let discardable = s.characteristics & IMAGE_SCN_MEM_DISCARDABLE != 0 || s.name == "INIT";
            code && discardable && s.characteristics & IMAGE_SCN_MEM_WRITE != 0
        })
        .map(|s| format!("discardable code section `{}` ({:#010x}) is writable", s.name, s.characteristics))
        .collect()
}

fn h7(img: &Image) -> Vec<String> {
    match img.imports() {
        Ok(list) => list
            .iter()
            .flat_map(|(dll, _, names)| {
                names.iter().filter(|n| !ALLOWED_IMPORTS.contains(&n.as_str())).map(move |n| {
                    format!("import {dll}!{n} is not on the allow-list of kernel functions a bpf2sys driver may call")
                })
            })
            .collect(),
        Err(e) => vec![e],
    }
}

fn p1(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.machine != MACHINE_AMD64 && img.machine != MACHINE_ARM64 {
        f.push(format!("Machine {:#06x} is neither AMD64 (0x8664) nor ARM64 (0xaa64)", img.machine));
    }
    if img.magic != 0x20b {
        f.push(format!("magic {:#x} is not PE32+", img.magic));
    }
    if img.characteristics & FILE_EXECUTABLE_IMAGE == 0 {
        f.push("Characteristics lacks EXECUTABLE_IMAGE".into());
    }
    for (bit, name) in [
        (FILE_DLL, "DLL"),
        (FILE_RELOCS_STRIPPED, "RELOCS_STRIPPED"),
        (FILE_UP_SYSTEM_ONLY, "UP_SYSTEM_ONLY"),
        (FILE_32BIT_MACHINE, "32BIT_MACHINE"),
    ] {
        if img.characteristics & bit != 0 {
            f.push(format!("Characteristics has {name}"));
        }
    }
    f
}

fn p2(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.subsystem != 1 {
        f.push(format!("Subsystem {} is not NATIVE (1)", img.subsystem));
    }
    if img.dll_characteristics & DLL_DYNAMIC_BASE == 0 {
        f.push("DllCharacteristics lacks DYNAMIC_BASE".into());
    }
    if !img.sections.iter().any(|s| s.name == ".reloc") {
        f.push("no .reloc section".into());
    }
    match base_relocations(img) {
        Ok(relocs) => {
            for (page, ty, off) in relocs {
                if ty != 0 && ty != 10 {
                    f.push(format!(
                        "base relocation type {ty} at RVA {:#x} (only ABSOLUTE and DIR64 allowed)",
                        page.wrapping_add(off as u32)
                    ));
                }
            }
        }
        Err(e) => f.push(e),
    }
    f
}

fn p3(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.number_of_sections > 96 {
        f.push(format!("{} sections (the loader allows 96)", img.number_of_sections));
    }
    let fa = img.file_alignment;
    if !fa.is_power_of_two() || !(512..=65536).contains(&fa) || fa > img.section_alignment {
        f.push(format!("FileAlignment {fa:#x} is not a power of two in 512..65536 and ≤ SectionAlignment"));
        return f;
    }
    let sa = img.section_alignment.max(1);
    let mut expected_va = None;
    for s in &img.sections {
        if let Some(e) = expected_va {
            if s.virtual_address as u64 != e {
                f.push(format!(
                    "section `{}` at RVA {:#x}, expected {e:#x} (ascending and adjacent)",
                    s.name, s.virtual_address
                ));
            }
        }
        // In u64: a corrupted header may place a section so that the next page-aligned RVA passes 4 GiB.
        expected_va = Some(
            (s.virtual_address as u64 + s.virtual_size.max(s.size_of_raw_data) as u64).div_ceil(sa as u64) * sa as u64,
        );
        if s.pointer_to_raw_data % fa != 0 || s.size_of_raw_data % fa != 0 {
            f.push(format!(
                "section `{}`: raw pointer/size {:#x}/{:#x} are not FileAlignment multiples",
                s.name, s.pointer_to_raw_data, s.size_of_raw_data
            ));
        }
        if s.pointer_to_raw_data as u64 + s.size_of_raw_data as u64 > img.bytes.len() as u64 {
            f.push(format!("section `{}`: raw data runs past the end of the file", s.name));
        }
    }
    if let Some(e) = expected_va {
        if img.size_of_image as u64 != e {
            f.push(format!("SizeOfImage {:#x}, expected {e:#x}", img.size_of_image));
        }
    }
    let headers = (img.headers_end as u64).div_ceil(fa as u64) * fa as u64;
    if img.size_of_headers as u64 != headers {
        f.push(format!("SizeOfHeaders {:#x}, expected {headers:#x}", img.size_of_headers));
    }
    f
}

fn p4(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    for s in &img.sections {
        let c = s.characteristics;
        if c & IMAGE_SCN_MEM_READ == 0 {
            f.push(format!("section `{}` ({c:#010x}) is not readable", s.name));
        }
        if c & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_CNT_UNINITIALIZED_DATA) == 0 {
            f.push(format!("section `{}` ({c:#010x}) has no content type", s.name));
        }
        let pageable = s.name.starts_with("PAGE");
        if pageable && c & IMAGE_SCN_MEM_EXECUTE != 0 {
            f.push(format!("code section `{}` is pageable (PAGE*) but eBPF code runs at DISPATCH_LEVEL", s.name));
        }
        if !pageable && c & IMAGE_SCN_MEM_DISCARDABLE == 0 && c & IMAGE_SCN_MEM_NOT_PAGED == 0 {
            f.push(format!("section `{}` ({c:#010x}) lacks NOT_PAGED", s.name));
        }
    }
    f
}

fn p5(img: &Image) -> Vec<String> {
    if img.dll_characteristics & DLL_FORCE_INTEGRITY == 0 {
        return Vec::new();
    }
    img.sections
        .iter()
        .filter(|s| {
            s.characteristics & IMAGE_SCN_CNT_UNINITIALIZED_DATA != 0
                && s.characteristics & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_CNT_INITIALIZED_DATA) == 0
                && s.pointer_to_raw_data != 0
        })
        .map(|s| {
            format!(
                "uninitialized section `{}` has PointerToRawData {:#x} under FORCE_INTEGRITY",
                s.name, s.pointer_to_raw_data
            )
        })
        .collect()
}

fn p6(img: &Image) -> Vec<String> {
    match img.section_of(img.address_of_entry_point) {
        Some(s) if Image::is_exec(s) => Vec::new(),
        Some(s) => {
            vec![format!("entry point {:#x} is in non-executable section `{}`", img.address_of_entry_point, s.name)]
        }
        None => vec![format!("entry point {:#x} is outside every section", img.address_of_entry_point)],
    }
}

fn p7(img: &Image) -> Vec<String> {
    let (rva, size) = img.directories[DIR_EXCEPTION];
    if rva == 0 {
        return vec!["no exception directory (.pdata)".into()];
    }
    let mut f = Vec::new();
    let arm = img.machine == MACHINE_ARM64;
    let entry = if arm { 8 } else { 12 };
    if size % entry != 0 {
        f.push(format!("exception directory size {size} is not a multiple of {entry}"));
    }
    let mut previous_end = 0u32;
    for i in 0..size / entry {
        let at = rva.wrapping_add(i * entry);
        let (Some(begin), Some(second)) = (img.read32(at), img.read32(at.wrapping_add(4))) else {
            f.push(format!("RUNTIME_FUNCTION {i} is outside the image"));
            break;
        };
        match img.section_of(begin) {
            Some(s) if Image::is_exec(s) => {}
            _ => f.push(format!("RUNTIME_FUNCTION {i}: begin {begin:#x} is not in an executable section")),
        }
        if begin < previous_end {
            f.push(format!("RUNTIME_FUNCTION {i}: begin {begin:#x} overlaps or precedes the previous entry"));
        }
        if arm {
            // Flag bits 0 mean `second` is the RVA of a 4-byte-aligned .xdata record; otherwise packed data.
            previous_end = begin.saturating_add(if second & 3 == 0 { 4 } else { 4 * ((second >> 2) & 0x7ff) });
            if second & 3 == 0 {
                match arm64_xdata_extent(img, second) {
                    Ok(length) => previous_end = begin.saturating_add(length),
                    Err(why) => f.push(format!("RUNTIME_FUNCTION {i}: .xdata at {second:#x}: {why}")),
                }
            }
        } else {
            let end = second;
            let unwind = img.read32(at.wrapping_add(8)).unwrap_or(0);
            if end <= begin {
                f.push(format!("RUNTIME_FUNCTION {i}: end {end:#x} ≤ begin {begin:#x}"));
            }
            previous_end = end;
            if !unwind.is_multiple_of(4) {
                f.push(format!("RUNTIME_FUNCTION {i}: UNWIND_INFO {unwind:#x} is not DWORD-aligned"));
            }
            match img.offset_of(unwind, 4) {
                Some(o) => {
                    let version = img.bytes[o] & 7;
                    let count = img.bytes[o + 2] as u32;
                    if version != 1 {
                        f.push(format!("RUNTIME_FUNCTION {i}: UNWIND_INFO version {version}, expected 1"));
                    }
                    if img.offset_of(unwind, 4 + 2 * count).is_none() {
                        f.push(format!("RUNTIME_FUNCTION {i}: {count} unwind codes run past their section"));
                    }
                }
                None => f.push(format!("RUNTIME_FUNCTION {i}: UNWIND_INFO {unwind:#x} is outside the image")),
            }
        }
    }
    f
}

/// Checks an ARM64 `.xdata` record (Microsoft, "ARM64 exception handling", .xdata records) and returns the
/// length in bytes of the code it describes: the header (extended when both counts are zero), every epilogue
/// scope inside the function and pointing into the codes, and codes that end with `end` (a function split into
/// fragments has one record per fragment, each describing only its own range).
fn arm64_xdata_extent(img: &Image, rva: u32) -> Result<u32, String> {
    let word = |k: u32| img.read32(rva.wrapping_add(4 * k)).ok_or_else(|| "outside the image".to_string());
    let header = word(0)?;
    let length = (header & 0x3ffff) * 4;
    if length == 0 {
        return Err("FunctionLength is 0".into());
    }
    let (mut epilogues, mut code_words, mut next) = ((header >> 22) & 0x1f, header >> 27, 1);
    if epilogues == 0 && code_words == 0 {
        let ext = word(1)?;
        (epilogues, code_words, next) = (ext & 0xffff, (ext >> 16) & 0xff, 2);
    }
    let packed_epilogue = header & (1 << 21) != 0;
    let scopes = if packed_epilogue { 0 } else { epilogues };
    let code_at = next + scopes;
    let codes: Vec<u8> =
        (0..code_words).map(|k| word(code_at + k).map(u32::to_le_bytes)).collect::<Result<Vec<_>, _>>()?.concat();
    for k in 0..scopes {
        let scope = word(next + k)?;
        if (scope & 0x3ffff) * 4 >= length {
            return Err(format!(
                "epilogue scope {k} starts past the function ({} of {length} bytes)",
                (scope & 0x3ffff) * 4
            ));
        }
        if (scope >> 22) as usize >= codes.len() {
            return Err(format!("epilogue scope {k} starts past the unwind codes"));
        }
    }
    if !codes.contains(&0xe4) {
        return Err("the unwind codes do not end with `end`".into());
    }
    Ok(length)
}

fn p8(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    let (lc, lc_size) = img.directories[DIR_LOAD_CONFIG];
    let guard = img.dll_characteristics & DLL_GUARD_CF != 0;
    if lc == 0 {
        if guard {
            f.push("GUARD_CF is set but there is no load-config directory".into());
        }
        return f;
    }
    // IMAGE_LOAD_CONFIG_DIRECTORY64: SecurityCookie @88, GuardCFFunctionTable @128, Count @136, GuardFlags @144.
    if let Some(cookie) = img.read64(lc.wrapping_add(88)).filter(|c| *c != 0) {
        let image_base = rd64(img.bytes, rd32(img.bytes, 0x3c).unwrap_or(0) as usize + 24 + 24).unwrap_or(0);
        let rva = cookie.wrapping_sub(image_base) as u32;
        match img.section_of(rva) {
            Some(s) if s.characteristics & IMAGE_SCN_MEM_WRITE != 0 => {}
            _ => f.push(format!("SecurityCookie {cookie:#x} is not in a writable section")),
        }
    }
    if guard {
        let table = img.read64(lc.wrapping_add(128)).unwrap_or(0);
        let flags = if lc_size >= 148 { img.read32(lc.wrapping_add(144)).unwrap_or(0) } else { 0 };
        if table == 0 || flags == 0 {
            f.push("GUARD_CF is set but the load config has no GuardFlags/function table".into());
        }
    }
    f
}

fn p9(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    match img.imports() {
        Ok(list) => {
            for (dll, _, _) in list {
                if !ALLOWED_IMPORT_MODULES.iter().any(|m| m.eq_ignore_ascii_case(&dll)) {
                    f.push(format!(
                        "imports from `{dll}`, which is not a kernel module (allowed: {})",
                        ALLOWED_IMPORT_MODULES.join(", ")
                    ));
                }
            }
        }
        Err(e) => f.push(e),
    }
    if img.directories[DIR_DELAY_IMPORT].0 != 0 {
        f.push("has a delay-load import directory".into());
    }
    if img.directories[DIR_TLS].0 != 0 {
        f.push("has a TLS directory".into());
    }
    f
}

fn p10(img: &Image) -> Vec<String> {
    let mut f = Vec::new();
    if img.major_linker_version < 14 {
        f.push(format!("MajorLinkerVersion {} < 14", img.major_linker_version));
    }
    if img.dll_characteristics & DLL_TERMINAL_SERVER_AWARE != 0 {
        f.push("DllCharacteristics has TERMINAL_SERVER_AWARE".into());
    }
    f
}

fn p11(img: &Image) -> Vec<String> {
    let computed = pe_checksum(img.bytes, img.checksum_offset);
    if computed != img.check_sum {
        vec![format!("CheckSum {:#010x}, computed {computed:#010x}", img.check_sum)]
    } else {
        Vec::new()
    }
}
