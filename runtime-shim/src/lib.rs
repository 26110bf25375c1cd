//! The kernel-side glue linked into every bpf2sys driver, and the native-module metadata it hands to EbpfCore.
//!
//! In: a [`ModuleDescription`] — the module's maps, programs (by the symbol of their compiled entry function),
//! helper tables, global sections and initial values, already in plain numbers (this crate does not depend on
//! the compiler; the compiler's linker translates its `Module` into this form), and a [`RuntimeVersion`].
//!
//! Out: a [`DriverShim`]:
//! - Cranelift IR functions ([`ShimFunction`]): `DriverEntry`, the NPI-module-id registry query routine,
//!   `ClientAttachProvider`, `ClientDetachProvider`, `DriverUnload` and the six metadata-table callbacks
//!   (native-module-contract.md §1.3, §2.2). The compiler compiles them like program code;
//! - data objects ([`DataObject`]) with symbolic absolute relocations: every struct of contract §2.2 laid out
//!   byte for byte (headers, sizes, strides, zero markers), programs sorted by name (§4.2), GUIDs in `.data`,
//!   strings in `.rdata`, the `maps` and `programs` sections user mode scans (§4.3);
//! - the PE section name of each program's code (§4.1 shortening).
//!
//! The linker places everything, resolves the relocations and emits DIR64 base relocations.

pub mod abi;
mod code;
mod hash;
mod metadata;
mod names;

pub use code::build_functions;
pub use hash::{program_info_hash, HashedBtfFunction, HashedHelper, ProgramInfoHashInput};
pub use metadata::{build_data, layout};
pub use names::pe_section_names;

use cranelift_codegen::ir;

/// Name of the symbol that is the image entry point.
pub const DRIVER_ENTRY: &str = "DriverEntry";
/// Name of the metadata table data object (the NMR client dispatch, contract §1.3).
pub const METADATA_TABLE: &str = "__bpf2sys_metadata_table";

/// Import module holding the kernel executive exports.
pub const NTOSKRNL: &str = "ntoskrnl.exe";
/// Import module holding the NMR API (contract §1.2).
pub const NETIO: &str = "NETIO.SYS";

/// Errors in a module description that would produce a module the runtime rejects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShimError {
    #[error("the module has no programs; eBPF for Windows loads only modules with at least one program")]
    NoPrograms,
    #[error("program `{program}`: {what} must be 1..63 characters, got {len}")]
    BadNameLength { program: String, what: &'static str, len: usize },
    #[error(
        "program `{program}`: helper id {id} appears twice in its helper table (contract §3.2 requires unique ids)"
    )]
    DuplicateHelper { program: String, id: u32 },
    #[error("program `{program}` references map index {index}, but the module has {count} maps")]
    MapIndexOutOfRange { program: String, index: u16, count: usize },
    #[error("two programs are named `{0}`; program names must be unique (contract §4.2)")]
    DuplicateProgram(String),
    #[error("program `{program}`: the program type GUID is null (contract §2.3)")]
    NullProgramType { program: String },
    #[error("{what} `{name}` contains a NUL byte")]
    NulInName { what: &'static str, name: String },
    #[error("too many {what}: {count} (the field is 16 bits)")]
    TooMany { what: &'static str, count: usize },
    #[error(
        "program `{program}` calls BTF-resolved functions (kfuncs), which need the 160-byte program entry of \
         runtime 1.5.0 or later (pass --runtime-version 1.5.0)"
    )]
    BtfFunctionsNeedRuntime15 { program: String },
    #[error("program `{program}`: BTF-resolved function slot {slot} has {what}")]
    BadBtfFunction { program: String, slot: usize, what: &'static str },
    #[error("Cranelift rejected shim function `{function}`: {message}")]
    Ir { function: String, message: String },
}

/// The eBPF for Windows runtime release line the module targets (contract §2.4).
///
/// The module reports this as its `bpf2c_version_t`; the runtime derives two layout choices from it:
/// - `map_data` stride: 40 (with `array_data`) for ≥ 1.4.0, else 32 (`_ebpf_native_get_map_data_element_size`);
/// - the program entry: runtimes before 1.5.0 accept only the 144-byte entry; we emit the 160-byte entry with
///   BTF-resolved-function fields only when targeting ≥ 1.5.0.
///
/// The default is **1.3.0**: the most portable choice (every runtime from v1.0 to v1.6 accepts it, contract
/// §2.4), at the cost of not inlining array lookups through `array_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuntimeVersion {
    pub major: u32,
    pub minor: u32,
    pub revision: u32,
}

impl Default for RuntimeVersion {
    fn default() -> Self {
        RuntimeVersion::PORTABLE
    }
}

impl RuntimeVersion {
    /// Accepted by every runtime release (contract §2.4).
    pub const PORTABLE: RuntimeVersion = RuntimeVersion { major: 1, minor: 3, revision: 0 };
    /// The oldest version any runtime accepts (`_ebpf_minimum_version`, contract §2.3).
    pub const MINIMUM: RuntimeVersion = RuntimeVersion { major: 0, minor: 21, revision: 0 };
    /// From here the runtime uses the 40-byte `map_data` stride (`_ebpf_version_map_data_v2`).
    pub const MAP_DATA_V2: RuntimeVersion = RuntimeVersion { major: 1, minor: 4, revision: 0 };
    /// From here the runtime accepts the 154-byte program entry with BTF-resolved functions.
    pub const PROGRAM_ENTRY_V1: RuntimeVersion = RuntimeVersion { major: 1, minor: 5, revision: 0 };

    /// Parses `major.minor.revision`; refuses versions the runtime would reject (< 0.21.0).
    pub fn parse(text: &str) -> Result<RuntimeVersion, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        if parts.len() != 3 {
            return Err(format!("runtime version `{text}` is not of the form MAJOR.MINOR.REVISION"));
        }
        let num = |s: &str| s.parse::<u32>().map_err(|_| format!("runtime version `{text}`: `{s}` is not a number"));
        let v = RuntimeVersion { major: num(parts[0])?, minor: num(parts[1])?, revision: num(parts[2])? };
        if v < RuntimeVersion::MINIMUM {
            return Err(format!(
                "runtime version {v} is older than 0.21.0, which every eBPF for Windows runtime rejects"
            ));
        }
        Ok(v)
    }

    /// Stride of `runtime_context->map_data[]` the generated code must use ([`abi::MapDataLayout`]).
    pub fn map_data_stride(self) -> u32 {
        abi::MapDataLayout::for_version(self).stride() as u32
    }

    /// Whether the runtime fills `map_data[i].array_data` (the code may inline array lookups).
    pub fn has_array_data(self) -> bool {
        abi::MapDataLayout::for_version(self).has_array_data()
    }

    /// `(size, total_size)` of the program entry header.
    pub fn program_entry_sizes(self) -> (u64, u64) {
        if self >= RuntimeVersion::PROGRAM_ENTRY_V1 {
            (154, 160)
        } else {
            (144, 144)
        }
    }
}

impl std::fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.revision)
    }
}

/// A map as `map_entry_t` records it (contract §2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDescription {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// 0-based index of the inner template; 0 means "unset" to the kernel.
    pub inner_map_idx: u32,
    pub pinning: u32,
    pub id: u32,
    pub inner_id: u32,
}

/// One slot of a program's helper table: `id` 0 is a sentinel (contract §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperSlot {
    pub id: u32,
    /// Emitted as the entry's `name` (the runtime ignores it but requires it non-NULL); `""` for sentinels.
    pub name: String,
}

/// One slot of a program's `btf_resolved_functions` table (contract §2.2, coverage §2): the kfunc's name and its
/// provider module's GUID; an unused slot is `{"", GUID_NULL}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtfFunctionSlot {
    pub name: String,
    pub module_guid: [u8; 16],
}

impl BtfFunctionSlot {
    pub fn is_unused(&self) -> bool {
        self.name.is_empty() && self.module_guid == [0; 16]
    }
}

/// A program as its `program_entry_t` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramDescription {
    /// Function name (`program_name`).
    pub program_name: String,
    /// ELF section name (`section_name`).
    pub section_name: String,
    /// Symbol of the compiled entry function (`function`).
    pub function_symbol: String,
    pub helpers: Vec<HelperSlot>,
    /// `btf_resolved_functions`: the generated code calls slot k through `btf_resolved_function_data[k]`.
    pub btf_functions: Vec<BtfFunctionSlot>,
    pub referenced_maps: Vec<u16>,
    pub instruction_count: u64,
    pub program_type: [u8; 16],
    pub expected_attach_type: [u8; 16],
    /// The program-info hash (SHA-256, contract §3.2), or `None` to let the runtime skip the check.
    pub program_info_hash: Option<[u8; 32]>,
}

/// `map_initial_values_t`: slot `i` of map `map_name` holds the map or program named `values[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialValuesDescription {
    pub map_name: String,
    pub values: Vec<Option<String>>,
}

/// `global_variable_section_info_t`: the backing map's name and the section's initial bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalSectionDescription {
    pub map_name: String,
    pub initial_data: Vec<u8>,
}

/// Everything the shim needs to know about a module.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ModuleDescription {
    pub maps: Vec<MapDescription>,
    pub programs: Vec<ProgramDescription>,
    pub map_initial_values: Vec<InitialValuesDescription>,
    pub global_sections: Vec<GlobalSectionDescription>,
    pub runtime_version: RuntimeVersion,
    /// SHA-256 of the source ELF, returned by the `hash` callback (the runtime never calls it).
    pub elf_hash: Option<[u8; 32]>,
}

/// Where a data object goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataSection {
    /// Read-only data: strings, hashes, initial data (`.rdata`, contract §4.1).
    Rdata,
    /// Writable data: GUIDs, helper tables, NMR state, the metadata table (`.data`).
    Data,
    /// The `maps` section user mode scans (contract §4.3 pass 1).
    Maps,
    /// The `programs` section user mode scans (contract §4.3 pass 2).
    Programs,
}

/// A symbol an object refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Symbol {
    Function(String),
    Data(String),
    /// The IAT slot of `dll!name`.
    Import {
        dll: String,
        name: String,
    },
}

/// An absolute 64-bit pointer field at `offset` that must hold the address of `target` + `addend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRelocation {
    pub offset: u32,
    pub target: Symbol,
    pub addend: i64,
}

/// A laid-out data object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataObject {
    pub name: String,
    pub section: DataSection,
    pub alignment: u32,
    pub bytes: Vec<u8>,
    pub relocations: Vec<DataRelocation>,
}

/// A shim function as Cranelift IR. User external name `(0, i)` refers to `externals[i]`.
pub struct ShimFunction {
    pub name: String,
    pub function: ir::Function,
    pub externals: Vec<Symbol>,
}

/// The shim: IR functions, data objects, and where each program's code goes.
pub struct DriverShim {
    pub functions: Vec<ShimFunction>,
    pub data: Vec<DataObject>,
    /// `(function symbol, PE section name)` for every entry program, in program-array order.
    pub program_sections: Vec<(String, String)>,
}

/// Builds the whole shim for `module` on a target whose Cranelift frontend config is `frontend_config`.
pub fn build(
    module: &ModuleDescription,
    frontend_config: cranelift_codegen::isa::TargetFrontendConfig,
) -> Result<DriverShim, ShimError> {
    let layout = metadata::layout(module)?;
    let data = metadata::build_data(module, &layout)?;
    let functions = code::build_functions(&layout, frontend_config)?;
    let program_sections = layout
        .sorted_programs
        .iter()
        .map(|&i| (module.programs[i].function_symbol.clone(), layout.pe_sections[i].clone()))
        .collect();
    Ok(DriverShim { functions, data, program_sections })
}
