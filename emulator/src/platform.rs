//! What the emulated runtime learns from the extensions that provide program types, helpers and BTF-resolved
//! functions (contract §3.2, §7): supplied by the emulator's user through [`Extensions`], so this crate carries no
//! copy of the compiler's platform tables and does not depend on the compiler.

use std::fmt;

/// A Windows GUID in its in-memory form (contract §2.2: Data1 u32 LE, Data2 u16 LE, Data3 u16 LE, Data4 8 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const NULL: Guid = Guid([0; 16]);

    pub fn from_bytes(bytes: &[u8; 16]) -> Guid {
        Guid(*bytes)
    }

    pub fn to_bytes(&self) -> [u8; 16] {
        self.0
    }

    pub fn is_null(&self) -> bool {
        *self == Guid::NULL
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let data1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let data2 = u16::from_le_bytes([b[4], b[5]]);
        let data3 = u16::from_le_bytes([b[6], b[7]]);
        write!(f, "{data1:08x}-{data2:04x}-{data3:04x}-{:02x}{:02x}-", b[8], b[9])?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A program type as its extension registers it (`ebpf_program_type_descriptor_t`, contract §3.2 steps 1-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramTypeInfo {
    /// The descriptor name, e.g. `"xdp"`.
    pub name: String,
    pub guid: Guid,
    /// `ebpf_context_descriptor_t {size, data, end, meta}` (-1 = none).
    pub context: [i32; 4],
    pub bpf_prog_type: u32,
    pub is_privileged: bool,
}

/// A helper or BTF-resolved function prototype as its provider registers it (contract §3.2 steps 6-8): return
/// and argument types as the numbers that enter the program-info hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrototypeInfo {
    pub name: String,
    pub ret: u32,
    pub args: [u32; 5],
    pub reallocate_packet: bool,
}

/// The extensions loaded next to the emulated runtime.
pub trait Extensions {
    /// The program type registered under `guid`.
    fn program_type(&self, guid: &Guid) -> Option<ProgramTypeInfo>;
    /// Helper `id` as programs of type `program_type` see it (type-specific prototypes override global ones).
    fn helper(&self, program_type: &Guid, id: u32) -> Option<PrototypeInfo>;
    /// The BTF-resolved function `name` of provider module `module`.
    fn kfunc(&self, module: &Guid, name: &str) -> Option<PrototypeInfo>;
}

/// The module GUID of the sample extension's BTF-resolved function provider (object-and-platform-coverage §2),
/// whose `sample_ebpf_extension_btf_lookup` the emulated runtime implements.
pub const SAMPLE_BTF_FUNCTION_MODULE: Guid =
    Guid([0x83, 0x1f, 0x6c, 0x8f, 0x4c, 0xce, 0x58, 0x4b, 0x8b, 0x91, 0x65, 0x4a, 0x29, 0xe2, 0x3b, 0x7c]);
