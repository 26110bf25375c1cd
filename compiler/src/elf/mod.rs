//! The ELF front end: a clang `-target bpf` relocatable object in, a [`Module`] out.
//!
//! In: the bytes of an ELF64 little-endian `EM_BPF` relocatable object (clang -O2, with or without `-g`,
//! `-mcpu=v1..v4`). Out: [`Module`] with programs, maps, global sections and map initial values, relocations
//! applied as [`crate::program`] documents.
//!
//! The passes follow native-module-contract.md §6 (what bpf2c accepts) and libbpf's reading of the same
//! objects:
//! 1. [`object`] parses headers, sections, symbols and relocation entries (bounds-checked).
//! 2. `.BTF` / `.BTF.ext` are parsed by [`btf`] (no crate reads them at our versions).
//! 3. [`maps`] builds the map list: legacy `maps`/`maps/*` records, BTF `.maps` definitions (with anonymous
//!    inner maps appended), then one array map per `.data`/`.rodata`/`.bss` section.
//! 4. [`programs`] applies relocations to each executable section's raw slots, then lays out every entry
//!    program with the subprograms it reaches through `call src=1`, rewriting call offsets, and decodes it
//!    with the strict [`crate::isa`] decoder. CO-RE relocations in `.BTF.ext` are counted per program and
//!    reported in [`Module::core_relocations`], not applied (see [`crate::program::CoreRelocations`]).
//!
//! Hostile input: every offset and count read from the file is checked against the file's length, and all
//! output is bounded by a multiple of the input size (see [`programs`]), so malformed objects give an
//! [`ElfError`] naming the section, symbol or offset — never a panic, a hang or an unbounded allocation.

pub mod btf;
mod kfuncs;
mod maps;
mod programs;

use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::LittleEndian as LE;
use thiserror::Error;

use crate::isa::DecodeError;
use crate::program::{MapType, Module};

pub use btf::BtfError;

/// Why an object could not be loaded. Each variant names where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ElfError {
    #[error("not a valid ELF object: {0}")]
    Malformed(String),
    #[error("not an eBPF object: {0}")]
    NotBpf(String),
    #[error("section '{section}': {what}")]
    Section { section: String, what: String },
    #[error("symbol '{symbol}': {what}")]
    Symbol { symbol: String, what: String },
    #[error("section '{section}', offset {offset:#x}: {what}")]
    Relocation { section: String, offset: u64, what: String },
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("map '{map}': {what}")]
    Map { map: String, what: String },
    #[error("program '{program}' (section '{section}'): {what}")]
    Program { program: String, section: String, what: String },
    #[error("program '{program}' (section '{section}'): {source}")]
    Decode { program: String, section: String, source: DecodeError },
    #[error("object too large: {0}")]
    TooLarge(String),
}

impl From<object::read::Error> for ElfError {
    fn from(e: object::read::Error) -> ElfError {
        ElfError::Malformed(e.to_string())
    }
}

/// Relocation types of the BPF ELF ABI (LLVM `BPFELFObjectWriter`, kernel `Documentation/bpf/llvm_reloc.rst`).
pub(crate) const R_BPF_NONE: u32 = 0;
pub(crate) const R_BPF_64_64: u32 = 1;
pub(crate) const R_BPF_64_ABS64: u32 = 2;
pub(crate) const R_BPF_64_ABS32: u32 = 3;
pub(crate) const R_BPF_64_32: u32 = 10;

/// A section as the passes need it.
#[derive(Clone, Debug)]
pub(crate) struct Section<'a> {
    pub index: usize,
    /// Borrowed from the file: many sections may share one long name, so names are never copied eagerly.
    pub name: &'a str,
    pub sh_type: u32,
    pub flags: u64,
    pub size: u64,
    /// File bytes (empty for `SHT_NOBITS`).
    pub data: &'a [u8],
    /// For `SHT_REL`/`SHT_RELA`: the section the relocations apply to.
    pub info: u32,
}

impl Section<'_> {
    pub fn is_executable(&self) -> bool {
        self.sh_type == elf::SHT_PROGBITS
            && self.flags & u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR)
                == u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR)
    }
}

/// A symbol as the passes need it.
#[derive(Clone, Debug)]
pub(crate) struct Symbol<'a> {
    /// Borrowed from the file (see [`Section::name`]).
    pub name: &'a str,
    pub value: u64,
    pub size: u64,
    pub kind: u8,
    /// `STB_LOCAL`, `STB_GLOBAL` or `STB_WEAK`.
    pub binding: u8,
    /// Section index; `None` for undefined, absolute and common symbols.
    pub section: Option<usize>,
}

impl Symbol<'_> {
    /// Whether the symbol starts a function in an executable section: any `STT_FUNC`, or a global/weak
    /// `STT_NOTYPE` symbol — older clang/LLVM emit program entries as `NOTYPE GLOBAL` with size 0
    /// (object-and-platform-coverage.md §4.1; libbpf ≤ v0.1 names programs by their first global symbol).
    /// Local `NOTYPE` symbols in code are branch labels (`LBB0_3`) and start nothing.
    pub fn starts_function(&self) -> bool {
        self.kind == elf::STT_FUNC
            || (self.kind == elf::STT_NOTYPE
                && matches!(self.binding, elf::STB_GLOBAL | elf::STB_WEAK)
                && !self.name.is_empty())
    }
}

/// A relocation entry, with its symbol index resolved later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relocation {
    pub offset: u64,
    pub kind: u32,
    pub symbol: usize,
}

/// The parsed object: sections, symbols, relocations by target section, BTF.
pub(crate) struct Object<'a> {
    pub file_len: usize,
    pub sections: Vec<Section<'a>>,
    pub symbols: Vec<Symbol<'a>>,
    /// Indices into `symbols` of the symbols defined in each section (so per-section lookups stay linear).
    pub symbols_by_section: Vec<Vec<usize>>,
    /// Relocations per target section index.
    pub relocations: Vec<Vec<Relocation>>,
    pub btf: Option<btf::Btf>,
    pub line_info: btf::LineInfoBySection,
    pub core_relocations: btf::CoreRelocationsBySection,
}

impl<'a> Object<'a> {
    pub fn section_name(&self, index: usize) -> &'a str {
        self.sections.get(index).map_or("<none>", |s| s.name)
    }

    /// The symbols defined in section `index`.
    pub fn section_symbols(&self, index: usize) -> impl Iterator<Item = &Symbol<'a>> {
        self.symbols_by_section.get(index).into_iter().flatten().map(|&i| &self.symbols[i])
    }

    pub fn symbol(&self, index: usize, in_section: &str, offset: u64) -> Result<&Symbol<'a>, ElfError> {
        self.symbols.get(index).ok_or_else(|| ElfError::Relocation {
            section: in_section.to_string(),
            offset,
            what: format!("relocation names symbol index {index}, but the symbol table has {}", self.symbols.len()),
        })
    }

    fn parse(bytes: &'a [u8]) -> Result<Object<'a>, ElfError> {
        let header = elf::FileHeader64::<LE>::parse(bytes)
            .map_err(|e| ElfError::Malformed(format!("{e} (expected a 64-bit ELF header)")))?;
        if !header.is_little_endian() {
            return Err(ElfError::NotBpf("big-endian ELF (bpf2sys targets little-endian eBPF)".into()));
        }
        let endian = LE;
        let machine = header.e_machine(endian);
        if machine != elf::EM_BPF {
            return Err(ElfError::NotBpf(format!("e_machine is {machine}, expected EM_BPF ({})", elf::EM_BPF)));
        }
        let e_type = header.e_type(endian);
        if e_type != elf::ET_REL {
            return Err(ElfError::NotBpf(format!("e_type is {e_type}, expected a relocatable object (ET_REL)")));
        }
        let table = header.sections(endian, bytes).map_err(|e| {
            ElfError::Malformed(format!(
                "section header table at offset {:#x} ({} entries of {} bytes, names in section {}): {e}",
                header.e_shoff(endian),
                header.e_shnum(endian),
                header.e_shentsize(endian),
                header.e_shstrndx(endian)
            ))
        })?;
        let sections = read_sections(&table, bytes)?;
        let symbols = read_symbols(&table, bytes, &sections)?;
        let relocations = read_relocations(&table, bytes, &sections)?;
        let btf = match sections.iter().find(|s| s.name == ".BTF") {
            Some(s) => Some(btf::Btf::parse(s.data)?),
            None => None,
        };
        let (line_info, core_relocations) = match (&btf, sections.iter().find(|s| s.name == ".BTF.ext")) {
            (Some(b), Some(ext)) => (btf::parse_line_info(ext.data, b)?, btf::parse_core_relocations(ext.data, b)?),
            _ => (Vec::new(), Vec::new()),
        };
        let mut symbols_by_section = vec![Vec::new(); sections.len()];
        for (i, sym) in symbols.iter().enumerate() {
            if let Some(list) = sym.section.and_then(|s| symbols_by_section.get_mut(s)) {
                list.push(i);
            }
        }
        Ok(Object {
            file_len: bytes.len(),
            sections,
            symbols,
            symbols_by_section,
            relocations,
            btf,
            line_info,
            core_relocations,
        })
    }
}

type SectionTable<'a> = object::read::elf::SectionTable<'a, elf::FileHeader64<LE>>;

/// The section headers with their names and contents.
fn read_sections<'a>(table: &SectionTable<'a>, bytes: &'a [u8]) -> Result<Vec<Section<'a>>, ElfError> {
    let endian = LE;
    let mut sections = Vec::with_capacity(table.len());
    for (index, sh) in table.enumerate() {
        let name = table
            .section_name(endian, sh)
            .map_err(|e| ElfError::Malformed(format!("section {}: name: {e}", index.0)))?;
        let name = utf8_name(name);
        let sh_type = sh.sh_type(endian);
        let data = if sh_type == elf::SHT_NOBITS {
            &[][..]
        } else {
            sh.data(endian, bytes).map_err(|e| ElfError::Section { section: name.to_string(), what: e.to_string() })?
        };
        sections.push(Section {
            index: index.0,
            name,
            sh_type,
            flags: sh.sh_flags(endian),
            size: sh.sh_size(endian),
            data,
            info: sh.sh_info(endian),
        });
    }
    Ok(sections)
}

/// The `.symtab` symbols; a section symbol is named after its section.
fn read_symbols<'a>(
    table: &SectionTable<'a>,
    bytes: &'a [u8],
    sections: &[Section<'a>],
) -> Result<Vec<Symbol<'a>>, ElfError> {
    let endian = LE;
    let symtab = table
        .symbols(endian, bytes, elf::SHT_SYMTAB)
        .map_err(|e| ElfError::Malformed(format!("symbol table (.symtab): {e}")))?;
    let mut symbols = Vec::with_capacity(symtab.len());
    for (index, sym) in symtab.enumerate() {
        let name = symtab
            .symbol_name(endian, sym)
            .map_err(|e| ElfError::Malformed(format!("symbol {}: name: {e}", index.0)))?;
        let shndx = sym.st_shndx(endian);
        let section = match shndx {
            elf::SHN_UNDEF => None,
            n if n >= elf::SHN_LORESERVE => None,
            n => Some(n as usize),
        };
        let kind = sym.st_type();
        // Section symbols have no name of their own; give them their section's.
        let name = if kind == elf::STT_SECTION && name.is_empty() {
            section.and_then(|s| sections.get(s)).map_or("", |s| s.name)
        } else {
            utf8_name(name)
        };
        symbols.push(Symbol {
            name,
            value: sym.st_value(endian),
            size: sym.st_size(endian),
            kind,
            binding: sym.st_bind(),
            section,
        });
    }
    Ok(symbols)
}

/// The entries of every `SHT_REL` / `SHT_RELA` section, by the index of the section they apply to.
fn read_relocations(
    table: &SectionTable,
    bytes: &[u8],
    sections: &[Section],
) -> Result<Vec<Vec<Relocation>>, ElfError> {
    let endian = LE;
    let mut relocations: Vec<Vec<Relocation>> = vec![Vec::new(); sections.len()];
    for (index, sh) in table.enumerate() {
        let sh_type = sh.sh_type(endian);
        if sh_type != elf::SHT_REL && sh_type != elf::SHT_RELA {
            continue;
        }
        let section = &sections[index.0];
        let target = section.info as usize;
        let Some(target_relocs) = relocations.get_mut(target) else {
            return Err(ElfError::Section {
                section: section.name.to_string(),
                what: format!("applies to section index {target}, which does not exist"),
            });
        };
        let malformed =
            |e: object::read::Error| ElfError::Section { section: section.name.to_string(), what: e.to_string() };
        // r_info: symbol index in the upper 32 bits, type in the lower 32 (ELF64 gABI).
        if let Some((rels, _)) = sh.rel(endian, bytes).map_err(malformed)? {
            for r in rels {
                let info = r.r_info.get(endian);
                target_relocs.push(Relocation {
                    offset: r.r_offset.get(endian),
                    kind: info as u32,
                    symbol: (info >> 32) as usize,
                });
            }
        }
        if let Some((relas, _)) = sh.rela(endian, bytes).map_err(malformed)? {
            for r in relas {
                let info = r.r_info.get(endian);
                if r.r_addend.get(endian) != 0 {
                    return Err(ElfError::Relocation {
                        section: section.name.to_string(),
                        offset: r.r_offset.get(endian),
                        what: "non-zero RELA addend is not supported for eBPF".into(),
                    });
                }
                target_relocs.push(Relocation {
                    offset: r.r_offset.get(endian),
                    kind: info as u32,
                    symbol: (info >> 32) as usize,
                });
            }
        }
    }
    Ok(relocations)
}

/// A name from a string table; names that are not UTF-8 cannot match anything we look for.
fn utf8_name(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("<non-UTF-8 name>")
}

/// The C name of a module: the file name after the last path separator, up to its first `.` (contract §1.1).
pub fn c_name(file_name: &str) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    base.split('.').next().unwrap_or(base).to_string()
}

/// Whose conventions an object follows where the ELF alone does not say: the numbering of map types (which
/// ones are map-in-map) and the layout of legacy map records (coverage §3, §5, §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ObjectConventions {
    /// eBPF for Windows: `ebpf_map_type_t` numbering, 32-byte `ebpf_map_definition_in_file_t` records.
    #[default]
    Windows,
    /// Linux: `enum bpf_map_type` numbering, `bpf_map_def` / `bpf_load_map_def` / iproute2 `bpf_elf_map` records.
    Linux,
}

impl ObjectConventions {
    /// Whether maps of this type hold maps (HASH_OF_MAPS / ARRAY_OF_MAPS: 6/7 on Windows, 13/12 on Linux).
    pub fn is_map_of_maps(self, map_type: MapType) -> bool {
        match self {
            ObjectConventions::Windows => map_type.is_map_of_maps(),
            ObjectConventions::Linux => matches!(map_type.0, 12 | 13),
        }
    }
}

/// Loads an eBPF ELF object with eBPF for Windows conventions. `file_name` supplies the module's C name
/// (global-data maps are named after it).
pub fn load(bytes: &[u8], file_name: &str) -> Result<Module, ElfError> {
    load_with(bytes, file_name, ObjectConventions::Windows)
}

/// Loads an eBPF ELF object following the given platform conventions.
pub fn load_with(bytes: &[u8], file_name: &str, conventions: ObjectConventions) -> Result<Module, ElfError> {
    let object = Object::parse(bytes)?;
    let name = c_name(file_name);
    let map_layout = maps::build(&object, &name, conventions)?;
    let kfuncs = kfuncs::discover(&object)?;
    let built = programs::build(&object, &map_layout, &kfuncs)?;
    let map_initial_values = maps::initial_values(&object, &map_layout, &built.programs, conventions)?;
    Ok(Module {
        name,
        programs: built.programs,
        maps: map_layout.maps,
        global_sections: map_layout.global_sections,
        map_initial_values,
        kfuncs: kfuncs.into_iter().map(|k| k.kfunc).collect(),
        legacy_map_records: map_layout.legacy_records,
        refused_programs: built.refused,
        core_relocations: built.core_relocations,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod shape_tests;
