//! Machine code as the Cranelift lowering hands it to the driver linker.
//!
//! In: produced by [`crate::lower`] for eBPF programs and for the runtime shim's functions.
//! Out: consumed by [`crate::link`], which places code, resolves [`RelocTarget`]s and writes `.pdata`/`.xdata`.
//! Everything here is position-independent: no absolute address is known until the linker lays out the image.

/// Target architecture of a driver image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// x86-64 Windows (`IMAGE_FILE_MACHINE_AMD64`), the shipping target.
    X64,
    /// ARM64 Windows (`IMAGE_FILE_MACHINE_ARM64`).
    Arm64,
}

/// One compiled function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledFunction {
    /// Symbol name, unique within the image.
    pub name: String,
    pub code: Vec<u8>,
    /// Required alignment of the code in bytes.
    pub alignment: u32,
    pub relocations: Vec<CodeRelocation>,
    pub unwind: UnwindData,
}

/// A place in `code` the linker must patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRelocation {
    /// Byte offset in the function's code.
    pub offset: u32,
    pub kind: RelocKind,
    pub target: RelocTarget,
    pub addend: i64,
}

/// How to patch (formulas from ../shared/docs/toolchain-notes.md §1.4; S = target, A = addend, P = place).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelocKind {
    /// x64: 32-bit `S + A - P` (calls and RIP-relative data; Cranelift's addend already includes -4).
    X64PcRel32,
    /// 64-bit absolute `ImageBase + S + A`; needs a DIR64 base relocation.
    Abs64,
    /// ARM64 `BL`: `imm26 = (S + A - P) >> 2`.
    Arm64Call26,
    /// ARM64 `ADRP`: page delta into immlo/immhi.
    Arm64AdrPrelPgHi21,
    /// ARM64 `ADD`: low 12 bits of `S + A` into bits 21:10.
    Arm64AddAbsLo12Nc,
}

/// What a relocation refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RelocTarget {
    /// Another function in the image, by [`CompiledFunction::name`].
    Function(String),
    /// A data object in the image, by name.
    Data(String),
    /// The import address table slot of `dll!name`.
    ImportSlot { dll: String, name: String },
}

/// Windows unwind data for one function: one record per fragment, each with its own `.pdata` entry (a function
/// is split where one record cannot describe every instruction offset exactly, see [`crate::lower::unwind`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnwindData {
    /// x64 `UNWIND_INFO` records.
    X64 { fragments: Vec<UnwindFragment> },
    /// ARM64 `.xdata` records: header word(s), epilogue scopes, unwind codes.
    Arm64 { fragments: Vec<UnwindFragment> },
}

impl UnwindData {
    pub fn fragments(&self) -> &[UnwindFragment] {
        match self {
            UnwindData::X64 { fragments } | UnwindData::Arm64 { fragments } => fragments,
        }
    }
}

/// The unwind record of the code bytes `start..end` of a function, in ascending, contiguous order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwindFragment {
    pub start: u32,
    pub end: u32,
    pub record: Vec<u8>,
}

/// An entry program after lowering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledProgram {
    /// The eBPF program name.
    pub program_name: String,
    /// The entry function first, then the program's subprograms.
    pub functions: Vec<CompiledFunction>,
    /// Helper ids in the order the code indexes `runtime_context->helper_data[i]` (contract §5.2);
    /// 0 marks a sentinel slot.
    pub helper_ids: Vec<u32>,
    /// Module map indices the program references, directly or through subprograms and global data.
    pub referenced_maps: Vec<u16>,
}
