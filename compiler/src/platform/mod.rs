//! The platform model: program types, their contexts, and helper prototypes, as data.
//!
//! In: nothing (static tables). Out: a [`Platform`] that the front end asks which program type an ELF section
//! names, that the verifier asks what a context looks like and what a helper takes and returns, and that the
//! driver linker asks for GUIDs and the program-info hash inputs (native-module-contract.md §3.2, §7).
//!
//! Every platform fact lives in these tables; no stage hard-codes a helper id or a context offset.

use std::fmt;

pub use crate::elf::ObjectConventions;
use crate::program::MapDefinition;

pub mod emulated;
pub mod linux;
mod linux_helpers;
pub mod windows;

/// `const` constructors the platform tables are written with (one set, shared by every platform).
mod table {
    use super::{
        AttachType, ContextField, HelperArg, HelperPrototype, HelperReturn, MapTypeInfo, ObjectField, Reference,
        SectionPrefix, ZeroMaxEntries,
    };

    /// A helper prototype whose unlisted trailing arguments are `DontCare`.
    pub(super) const fn proto(id: u32, name: &'static str, ret: HelperReturn, a: &[HelperArg]) -> HelperPrototype {
        let mut args = [HelperArg::DontCare; 5];
        let mut i = 0;
        while i < a.len() {
            args[i] = a[i];
            i += 1;
        }
        HelperPrototype { id, name, ret, args, reallocate_packet: false, reference: Reference::None }
    }

    /// A map type entry.
    pub(super) const fn map_type(number: u32, name: &'static str, zero_max_entries: ZeroMaxEntries) -> MapTypeInfo {
        MapTypeInfo { number, name, zero_max_entries, extension: false }
    }

    pub(super) const fn field(name: &'static str, offset: u32, size: u32, writable: bool) -> ContextField {
        ContextField { name, offset, size, writable }
    }

    pub(super) const fn object_field(name: &'static str, offset: u32, size: u32, narrow: bool) -> ObjectField {
        ObjectField { name, offset, size, narrow }
    }

    pub(super) const fn prefix(prefix: &'static str, attach_type: AttachType) -> SectionPrefix {
        SectionPrefix { prefix, attach_type }
    }
}

/// A Windows GUID in its in-memory form (native-module-contract.md §2.2: Data1 u32 LE, Data2 u16 LE,
/// Data3 u16 LE, Data4 8 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl Guid {
    pub const NULL: Guid = Guid { data1: 0, data2: 0, data3: 0, data4: [0; 8] };

    /// Builds a GUID from its canonical text fields, e.g. `guid(0xf1832a85, 0x85d5, 0x45b0, 0x98a0, 0x7069d63013b0)`.
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, d4_hi: u16, d4_lo: u64) -> Guid {
        let hi = d4_hi.to_be_bytes();
        let lo = d4_lo.to_be_bytes();
        Guid { data1, data2, data3, data4: [hi[0], hi[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7]] }
    }

    /// The 16 bytes as they are laid out in memory (and hashed, contract §3.2).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.data1.to_le_bytes());
        b[4..6].copy_from_slice(&self.data2.to_le_bytes());
        b[6..8].copy_from_slice(&self.data3.to_le_bytes());
        b[8..16].copy_from_slice(&self.data4);
        b
    }

    pub fn from_bytes(b: &[u8; 16]) -> Guid {
        Guid {
            data1: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            data2: u16::from_le_bytes([b[4], b[5]]),
            data3: u16::from_le_bytes([b[6], b[7]]),
            data4: [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        }
    }

    pub fn is_null(&self) -> bool {
        *self == Guid::NULL
    }

    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, either case).
    pub fn parse(text: &str) -> Option<Guid> {
        let parts: Vec<&str> = text.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5
            || parts.iter().zip(lens).any(|(p, n)| p.len() != n || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        Some(Guid::from_fields(
            u32::from_str_radix(parts[0], 16).ok()?,
            u16::from_str_radix(parts[1], 16).ok()?,
            u16::from_str_radix(parts[2], 16).ok()?,
            u16::from_str_radix(parts[3], 16).ok()?,
            u64::from_str_radix(parts[4], 16).ok()?,
        ))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where the packet pointers live in a context (`ebpf_ctx_descriptor_t`, contract §7.2); -1 means "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextDescriptor {
    /// Size of the context structure in bytes.
    pub size: i32,
    /// Offset of the packet-start pointer, or -1.
    pub data: i32,
    /// Offset of the packet-end pointer, or -1.
    pub end: i32,
    /// Offset of the packet-metadata pointer, or -1.
    pub meta: i32,
}

impl ContextDescriptor {
    /// The 16 bytes hashed into the program-info hash (contract §3.2 step 2).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.size.to_le_bytes());
        b[4..8].copy_from_slice(&self.data.to_le_bytes());
        b[8..12].copy_from_slice(&self.end.to_le_bytes());
        b[12..16].copy_from_slice(&self.meta.to_le_bytes());
        b
    }
}

/// A named field of a context structure, for diagnostics and the samples' header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextField {
    pub name: &'static str,
    pub offset: u32,
    pub size: u32,
    /// Whether a program may store to it. Pointer fields (data, data_end, meta) are never writable.
    pub writable: bool,
}

/// A readable field of a kernel object a helper returns a pointer to (Linux `bpf_sock_is_valid_access`): a
/// load of `n` bytes at offset `o` is allowed when it lies inside one field, `o` is a multiple of `n`, and it
/// reads the whole field or the field allows narrower loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectField {
    pub name: &'static str,
    pub offset: u32,
    pub size: u32,
    /// Whether a 1-, 2- (or 4-)byte load of part of the field is allowed.
    pub narrow: bool,
}

impl ObjectField {
    /// Whether a load of `size` bytes at `offset` is allowed by one of `fields`.
    pub fn readable(fields: &[ObjectField], offset: i64, size: i64) -> bool {
        offset >= 0
            && size > 0
            && offset % size == 0
            && fields.iter().any(|f| {
                let (lo, hi) = (f.offset as i64, (f.offset + f.size) as i64);
                lo <= offset && offset + size <= hi && (size == f.size as i64 || f.narrow)
            })
    }
}

/// Helper return types; the discriminants are PREVAIL's `ebpf_return_type_t` values, which enter the
/// program-info hash (contract §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum HelperReturn {
    Integer = 0,
    PtrToMapValueOrNull = 1,
    IntegerOrNoReturnIfSucceed = 2,
    /// A read-only pointer to a socket's common fields (`struct bpf_sock` as Linux exposes `sock_common`), or
    /// null; which bytes may be read is the platform's [`Platform::sock_common_fields`].
    PtrToSockCommonOrNull = 4,
    /// A read-only pointer to a full socket (`struct bpf_sock`), or null. The verifier gives it the
    /// [`HelperReturn::PtrToSockCommonOrNull`] view (fewer readable fields: sound, less precise).
    PtrToSocketOrNull = 5,
    /// A writable region of the size given by the helper's [`HelperArg::ConstAllocSizeOrZero`] argument (a
    /// reserved ring-buffer record), or null.
    PtrToAllocMemOrNull = 7,
}

/// Helper argument types; the discriminants are PREVAIL's `ebpf_argument_type_t` values (contract §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum HelperArg {
    DontCare = 0,
    Anything = 1,
    ConstSize = 2,
    ConstSizeOrZero = 3,
    PtrToCtx = 4,
    PtrToMap = 5,
    PtrToMapOfPrograms = 6,
    PtrToMapKey = 7,
    PtrToMapValue = 8,
    PtrToReadableMem = 9,
    PtrToReadableMemOrNull = 10,
    PtrToWritableMem = 11,
    PtrToStack = 12,
    PtrToStackOrNull = 13,
    PtrToCtxOrNull = 14,
    PtrToWritableMemOrNull = 15,
    /// A socket the program holds a reference to (`bpf_sk_release`), unmodified and not null.
    PtrToBtfIdSockCommon = 17,
    /// A number: the size of the region the helper returns ([`HelperReturn::PtrToAllocMemOrNull`]).
    ConstAllocSizeOrZero = 25,
    /// A ring-buffer record the program holds a reference to (`bpf_ringbuf_submit`/`discard`), unmodified and
    /// not null.
    PtrToAllocMem = 26,
}

/// What a helper does to the references the program holds (Linux `is_acquire_function` / `OBJ_RELEASE`;
/// docs/verifier.md §2, "References").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// Nothing.
    None,
    /// A non-null result is a new reference the program must release before it ends.
    Acquires,
    /// The [`HelperArg::PtrToAllocMem`] / [`HelperArg::PtrToBtfIdSockCommon`] argument's reference ends: every
    /// copy of the pointer becomes unusable.
    Releases,
}

/// A helper function's prototype (`ebpf_helper_function_prototype_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelperPrototype {
    pub id: u32,
    /// The prototype name, exactly as hashed (contract §3.2 step 7).
    pub name: &'static str,
    pub ret: HelperReturn,
    /// Argument types for r1..r5; unused trailing arguments are `DontCare`.
    pub args: [HelperArg; 5],
    /// `flags.reallocate_packet`: the helper may move the packet, invalidating packet pointers.
    pub reallocate_packet: bool,
    /// Whether the helper acquires or releases a reference (never on the Windows platform).
    pub reference: Reference,
}

impl HelperPrototype {
    /// Number of arguments before the first `DontCare`.
    pub fn arity(&self) -> usize {
        self.args.iter().position(|a| *a == HelperArg::DontCare).unwrap_or(5)
    }
}

/// An ELF section prefix and the attach type it selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionPrefix {
    pub prefix: &'static str,
    pub attach_type: AttachType,
}

/// An attach type: its GUID on Windows, its `bpf_attach_type` number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachType {
    pub name: &'static str,
    pub guid: Guid,
    pub bpf_attach_type: u32,
}

/// A program type: what context a program receives and which helpers it may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramType {
    /// The descriptor name, exactly as hashed (contract §3.2 step 1), e.g. `"xdp"`.
    pub name: &'static str,
    pub guid: Guid,
    /// `bpf_prog_type` number.
    pub bpf_prog_type: u32,
    pub is_privileged: bool,
    pub context: ContextDescriptor,
    pub context_fields: &'static [ContextField],
    pub section_prefixes: &'static [SectionPrefix],
    /// Helpers only this program type provides (ids ≥ 65536 on Windows), and overrides of global helpers.
    pub specific_helpers: &'static [HelperPrototype],
}

/// What a map type requires of `max_entries` when a BTF map leaves it out (declared as 0; coverage §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroMaxEntries {
    /// The runtime refuses 0: the object must declare it.
    Refused,
    /// The loader fills it in (Linux PERF_EVENT_ARRAY: the possible-CPU count).
    FilledIn,
    /// 0 is the only valid value (Linux local-storage maps).
    Required,
}

/// A map type the platform's runtime can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapTypeInfo {
    pub number: u32,
    pub name: &'static str,
    pub zero_max_entries: ZeroMaxEntries,
    /// Whether an extension provides it (rather than the core runtime); it loads only where the extension runs.
    pub extension: bool,
}

/// A BTF-resolved function (kfunc) a provider module exports: `ebpf_btf_resolved_function_prototype_t`
/// (coverage §2), keyed by (module GUID, name). `proto.id` is unused (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfuncPrototype {
    pub module: Guid,
    pub proto: HelperPrototype,
}

/// A platform: its program types, helpers, map types and kfuncs.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    pub name: &'static str,
    pub program_types: &'static [ProgramType],
    pub global_helpers: &'static [HelperPrototype],
    /// Which map types a map helper works on, where the runtime would not return a usable result otherwise.
    pub map_helper_rules: &'static [MapHelperRule],
    pub map_types: &'static [MapTypeInfo],
    pub kfuncs: &'static [KfuncPrototype],
    /// Whether a context's `data_meta` is the start of packet metadata directly before `data` (Linux:
    /// `bpf_xdp_adjust_meta`), so that bytes between `data_meta` and `data` may be accessed once a comparison
    /// proves `data_meta + n <= data`. Otherwise `data_meta` is never dereferenceable.
    pub data_meta_is_metadata: bool,
    /// The readable fields behind a [`HelperReturn::PtrToSockCommonOrNull`] pointer (empty: no such helper).
    pub sock_common_fields: &'static [ObjectField],
    /// Map-type numbering and legacy map records of objects written for this platform.
    pub conventions: ObjectConventions,
}

/// Map types a helper's map argument may (`allowed`) or may not have. A helper without a rule takes any map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapHelperRule {
    pub helper: u32,
    pub allowed: bool,
    pub map_types: &'static [crate::program::MapType],
}

impl MapHelperRule {
    /// Whether helper `helper` may be called on a map of type `map_type` under these rules.
    pub fn permits(rules: &[MapHelperRule], helper: u32, map_type: crate::program::MapType) -> bool {
        rules.iter().filter(|r| r.helper == helper).all(|r| r.map_types.contains(&map_type) == r.allowed)
    }
}

/// A map or kfunc the platform cannot provide; the message names the map or function.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("map '{map}': type {map_type} is not a map type {platform} supports")]
    UnknownMapType { map: String, map_type: u32, platform: &'static str },
    #[error("map '{map}' ({type_name}): max_entries is 0 (not declared?); {platform} requires a positive max_entries")]
    ZeroMaxEntries { map: String, type_name: &'static str, platform: &'static str },
    #[error("map '{map}' ({type_name}): max_entries must be 0 for this map type, not {max_entries}")]
    NonZeroMaxEntries { map: String, type_name: &'static str, max_entries: u32 },
}

impl Platform {
    /// The program type (and attach type) an ELF section name selects: the longest matching prefix wins.
    pub fn program_type_for_section(&self, section: &str) -> Option<(&'static ProgramType, AttachType)> {
        let mut best: Option<(&'static ProgramType, AttachType, usize)> = None;
        for pt in self.program_types {
            for sp in pt.section_prefixes {
                if section.starts_with(sp.prefix) && best.is_none_or(|(_, _, len)| sp.prefix.len() > len) {
                    best = Some((pt, sp.attach_type, sp.prefix.len()));
                }
            }
        }
        best.map(|(pt, at, _)| (pt, at))
    }

    /// What the platform knows about map type `number`.
    pub fn map_type(&self, number: u32) -> Option<&'static MapTypeInfo> {
        self.map_types.iter().find(|t| t.number == number)
    }

    /// The platform's name for a map type number (`"unknown"` if it has none).
    pub fn map_type_name(&self, number: u32) -> &'static str {
        self.map_type(number).map_or("unknown", |t| t.name)
    }

    /// Checks that the runtime can create every map of the module: a type the platform lists, and a
    /// `max_entries` the type accepts (a map of another type is compiled into a driver the runtime refuses).
    pub fn check_maps(&self, maps: &[MapDefinition]) -> Result<(), PlatformError> {
        for m in maps {
            let Some(t) = self.map_type(m.map_type.0) else {
                return Err(PlatformError::UnknownMapType {
                    map: m.name.clone(),
                    map_type: m.map_type.0,
                    platform: self.name,
                });
            };
            match (t.zero_max_entries, m.max_entries) {
                (ZeroMaxEntries::Refused, 0) => {
                    return Err(PlatformError::ZeroMaxEntries {
                        map: m.name.clone(),
                        type_name: t.name,
                        platform: self.name,
                    })
                }
                (ZeroMaxEntries::Required, n) if n != 0 => {
                    return Err(PlatformError::NonZeroMaxEntries {
                        map: m.name.clone(),
                        type_name: t.name,
                        max_entries: n,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The prototype of kfunc `name` of provider `module`.
    pub fn kfunc(&self, module: Guid, name: &str) -> Option<&'static KfuncPrototype> {
        self.kfuncs.iter().find(|k| k.module == module && k.proto.name == name)
    }

    /// The program type with this descriptor name.
    pub fn program_type_by_name(&self, name: &str) -> Option<&'static ProgramType> {
        self.program_types.iter().find(|pt| pt.name == name)
    }

    /// The prototype of helper `id` as seen by programs of type `program_type`: a type-specific prototype
    /// overrides a global one (contract §1.1: the store merges global helpers into the type's list).
    pub fn helper(&self, program_type: &ProgramType, id: u32) -> Option<&'static HelperPrototype> {
        program_type
            .specific_helpers
            .iter()
            .find(|h| h.id == id)
            .or_else(|| self.global_helpers.iter().find(|h| h.id == id))
    }
}
