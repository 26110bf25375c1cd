//! The front end's output: an eBPF module as typed programs, maps and global data, with ELF gone.
//!
//! In: produced by [`crate::elf`] from a clang `-target bpf` object (or built directly by tests).
//! Out: consumed by the verifier, the Cranelift lowering and the driver linker.
//!
//! Relocations are already applied (aya-obj style: parsing, then relocation passes):
//! - a map reference is a `lddw` with [`Imm64Kind::MapIndex`](crate::isa::Imm64Kind::MapIndex), `imm` = index
//!   into [`Module::maps`];
//! - a global-variable reference is a `lddw` with
//!   [`Imm64Kind::MapIndexValue`](crate::isa::Imm64Kind::MapIndexValue), `imm` = the index of the section's
//!   backing map in [`Module::maps`], `next_imm` = the byte offset in the section;
//! - a bpf-to-bpf call is a [`CallLocal`](crate::isa::Instruction::CallLocal) whose target slot lies inside
//!   [`Program::instructions`] (subprograms are appended after the entry function).

use std::collections::BTreeSet;

use crate::isa::Instruction;
use crate::platform::Guid;

/// An eBPF module: everything one ELF object defines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Module {
    /// The C name: the object file name up to its first `.` (contract §1.1), used to name global-data maps.
    pub name: String,
    /// Entry programs, in ELF order.
    pub programs: Vec<Program>,
    /// Every map of the module, in module index order (legacy `maps`, BTF `.maps`, then global-data maps).
    pub maps: Vec<MapDefinition>,
    /// Global-variable sections (`.data`, `.rodata`, `.bss`), each backed by an array map in `maps`.
    pub global_sections: Vec<GlobalSection>,
    /// Initial contents of map-in-map and program-array maps (BTF `values` initialisers).
    pub map_initial_values: Vec<MapInitialValues>,
    /// Extern functions resolved through BTF (kfuncs) that calls name: a
    /// [`CallBtf`](crate::isa::Instruction::CallBtf) carries [`Kfunc::id`] in `btf_id`.
    pub kfuncs: Vec<Kfunc>,
    /// Where each legacy map record came from (`maps`, `maps/*`), in map order.
    pub legacy_map_records: Vec<LegacyMapRecord>,
    /// Entry programs the front end could not build (e.g. a call to an undefined symbol); the object's other
    /// programs are unaffected.
    pub refused_programs: Vec<RefusedProgram>,
    /// Programs with CO-RE relocations in `.BTF.ext`, which bpf2sys reports and does not apply.
    pub core_relocations: Vec<CoreRelocations>,
}

/// The CO-RE relocations (`.BTF.ext` `bpf_core_relo` records, btf.rst §4.2) in one entry program and the
/// subprograms it calls.
///
/// A loader with the running kernel's BTF would rewrite these instructions' offsets and immediates. Windows has no
/// kernel BTF to relocate against, so the only BTF there is the object's own, and relocating against it gives what
/// clang already compiled (every field offset, size, existence flag and type id is the local one): bpf2sys keeps the
/// instructions as compiled, verifies them as they are, and says so. A program written against Linux kernel
/// structures it expects to be relocated does not describe Windows memory either way; the warning names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreRelocations {
    /// The entry program's name.
    pub program: String,
    /// Number of relocation records in the program and its subprograms.
    pub count: usize,
}

impl CoreRelocations {
    /// The one-line warning the CLI prints (after `warning: FILE: `).
    pub fn warning(&self) -> String {
        format!(
            "program `{}` has {} CO-RE relocation{} (.BTF.ext); none is applied: Windows has no kernel BTF to \
             relocate against, so its offsets stay as compiled against the object's own BTF",
            self.program,
            self.count,
            if self.count == 1 { "" } else { "s" }
        )
    }
}

impl Module {
    /// The module's `btf_resolved_functions` order (contract §5.3, coverage §2): by module GUID bytes
    /// (`memcmp`), then name. Generated code calls kfunc `k` of this list through
    /// `runtime_context->btf_resolved_function_data[k]`, and every program's table uses the same slots.
    pub fn kfunc_table(&self) -> Vec<&Kfunc> {
        let mut table: Vec<&Kfunc> = self.kfuncs.iter().collect();
        table.sort_by(|a, b| {
            let key = |k: &Kfunc| (k.module_guid.unwrap_or(Guid::NULL).to_bytes(), k.name.clone());
            key(a).cmp(&key(b))
        });
        table
    }
}

impl Program {
    /// Ids (in [`Module::kfuncs`]) of the kfuncs this program calls, including from its subprograms.
    pub fn kfunc_ids(&self) -> std::collections::BTreeSet<u32> {
        self.instructions
            .iter()
            .filter_map(|i| match *i {
                Instruction::CallBtf { btf_id, module: 0 } => u32::try_from(btf_id).ok(),
                _ => None,
            })
            .collect()
    }
}

/// An extern function declared in the object and resolved through BTF by the runtime (contract §5.3, coverage
/// §2): the table entry `{name, module_guid}` of `btf_resolved_functions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kfunc {
    /// Synthetic id: 1..n in ascending BTF type id, as the Windows verifier numbers them.
    pub id: u32,
    pub name: String,
    /// The GUID of `btf_decl_tag("module_id:{...}")`; `None` when the declaration has no module tag (Linux
    /// kfuncs of vmlinux). Platforms that need it refuse calls without it.
    pub module_guid: Option<Guid>,
    /// Declared `__weak`: an unresolved weak kfunc may be checked for by the program.
    pub weak: bool,
}

/// One legacy map record (object-and-platform-coverage.md §3, §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyMapRecord {
    /// Index of the map in [`Module::maps`].
    pub map_index: usize,
    pub section: String,
    pub offset: u64,
    pub record_size: u64,
    /// Which C struct the record was decoded as.
    pub layout: LegacyLayout,
    /// iproute2 `bpf_elf_map.inner_idx` of a map with an `id`: the slot this map fills in every map-in-map whose
    /// `inner_id` is that id (coverage §5). None for other layouts, for `id` 0 and for `inner_idx` −1.
    pub inner_slot: Option<u32>,
}

/// The C struct a legacy map record is decoded as; the platform and the record size choose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LegacyLayout {
    /// eBPF for Windows `ebpf_map_definition_in_file_t` (32 bytes; shorter records zero-extended).
    Windows,
    /// Linux: iproute2's minimal record (16 bytes), libbpf's `bpf_map_def` (20) or samples/bpf's
    /// `bpf_load_map_def` (28), which share their leading fields.
    LinuxBpfMapDef,
    /// iproute2 `struct bpf_elf_map` (36 bytes: id, pinning, inner_id, inner_idx).
    LinuxBpfElfMap,
}

impl LegacyLayout {
    pub fn name(self) -> &'static str {
        match self {
            LegacyLayout::Windows => "ebpf_map_definition_in_file_t",
            LegacyLayout::LinuxBpfMapDef => "bpf_map_def",
            LegacyLayout::LinuxBpfElfMap => "bpf_elf_map",
        }
    }
}

/// An entry program the front end refused, and why (one line naming the symbol and where).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedProgram {
    pub name: String,
    pub section_name: String,
    pub reason: String,
}

/// One entry program with the subprograms it calls appended.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Function symbol name.
    pub name: String,
    /// ELF section name; selects the program type through the platform's section-prefix table.
    pub section_name: String,
    /// One entry per slot (see [`crate::isa`]): the entry function first, then each reachable subprogram.
    pub instructions: Vec<Instruction>,
    /// Functions in `instructions`: the entry function at slot 0, then subprograms, each with its slot range.
    pub functions: Vec<Function>,
    /// Source locations by slot, from `.BTF.ext` line info (empty without `-g`).
    pub line_info: Vec<LineInfo>,
}

/// A function inside [`Program::instructions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    /// First slot.
    pub start: usize,
    /// One past the last slot.
    pub end: usize,
}

/// Splits a flat instruction sequence into functions at the targets of local calls: for programs given as raw
/// bytecode (conformance tests, the plugin), where there is no ELF symbol table to say where functions start.
pub fn functions_from_calls(instructions: &[Instruction]) -> Vec<Function> {
    let mut starts = BTreeSet::from([0usize]);
    for (pc, insn) in instructions.iter().enumerate() {
        if let Instruction::CallLocal { .. } = insn {
            if let Some(t) = insn.jump_target(pc).and_then(|t| usize::try_from(t).ok()) {
                if t < instructions.len() {
                    starts.insert(t);
                }
            }
        }
    }
    let starts: Vec<usize> = starts.into_iter().collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| Function {
            name: if start == 0 { String::new() } else { format!("sub_{start}") },
            start,
            end: starts.get(i + 1).copied().unwrap_or(instructions.len()),
        })
        .collect()
}

/// A source location for one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineInfo {
    /// Slot in [`Program::instructions`].
    pub slot: usize,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The source line's text as BTF records it (may be empty).
    pub source_line: String,
}

/// Map types (`ebpf_map_type_t`, contract §7.3). Unknown numbers are kept so they can be reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapType(pub u32);

impl MapType {
    pub const UNSPEC: MapType = MapType(0);
    pub const HASH: MapType = MapType(1);
    pub const ARRAY: MapType = MapType(2);
    pub const PROG_ARRAY: MapType = MapType(3);
    pub const PERCPU_HASH: MapType = MapType(4);
    pub const PERCPU_ARRAY: MapType = MapType(5);
    pub const HASH_OF_MAPS: MapType = MapType(6);
    pub const ARRAY_OF_MAPS: MapType = MapType(7);
    pub const LRU_HASH: MapType = MapType(8);
    pub const LPM_TRIE: MapType = MapType(9);
    pub const QUEUE: MapType = MapType(10);
    pub const LRU_PERCPU_HASH: MapType = MapType(11);
    pub const STACK: MapType = MapType(12);
    pub const RINGBUF: MapType = MapType(13);
    pub const PERF_EVENT_ARRAY: MapType = MapType(14);

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "unspec",
            1 => "hash",
            2 => "array",
            3 => "prog_array",
            4 => "percpu_hash",
            5 => "percpu_array",
            6 => "hash_of_maps",
            7 => "array_of_maps",
            8 => "lru_hash",
            9 => "lpm_trie",
            10 => "queue",
            11 => "lru_percpu_hash",
            12 => "stack",
            13 => "ringbuf",
            14 => "perf_event_array",
            15 => "sample_hash_map",
            16 => "xskmap",
            _ => "unknown",
        }
    }

    /// Whether values are maps (map-in-map).
    pub fn is_map_of_maps(self) -> bool {
        self == MapType::HASH_OF_MAPS || self == MapType::ARRAY_OF_MAPS
    }
}

/// Map pinning (`ebpf_pin_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pinning {
    None,
    ByName,
}

/// A map, as `ebpf_map_definition_in_file_t` describes it (contract §2.2) plus its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDefinition {
    pub name: String,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Index (into [`Module::maps`]) of the inner-map template of a map-in-map.
    pub inner_map_index: Option<usize>,
    pub pinning: Pinning,
    /// Template id: for BTF maps the BTF type id of the map struct (contract §6).
    pub id: u32,
    /// `id` of the inner template, 0 for none.
    pub inner_id: u32,
}

/// Which global-variable section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GlobalSectionKind {
    Data,
    Rodata,
    Bss,
}

impl GlobalSectionKind {
    /// The kind of a global-data section name: `.data`, `.rodata`, `.bss` and their `.name.*` variants
    /// (libbpf `bpf_object__init_global_data_maps`, coverage §4.3).
    pub fn of_section(name: &str) -> Option<GlobalSectionKind> {
        [(".data", GlobalSectionKind::Data), (".rodata", GlobalSectionKind::Rodata), (".bss", GlobalSectionKind::Bss)]
            .into_iter()
            .find(|(prefix, _)| name.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('.')))
            .map(|(_, kind)| kind)
    }
}

/// A global-variable section, backed by a one-entry array map (contract §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalSection {
    /// The ELF section name (`.data`, `.rodata.str1.1`, `.bss.counters`, ...).
    pub section_name: String,
    pub kind: GlobalSectionKind,
    /// Index of the backing map in [`Module::maps`]; its name is the section info's `name`.
    pub map_index: usize,
    /// Initial bytes (zeros for `.bss`); the length is the section size.
    pub initial_data: Vec<u8>,
}

/// Initial values of a map-in-map or program array: slot `i` holds the map or program named `values[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInitialValues {
    /// Index of the map in [`Module::maps`].
    pub map_index: usize,
    pub values: Vec<Option<String>>,
}
