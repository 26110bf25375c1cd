//! A Linux-side emulation of the eBPF for Windows runtime: loads native-module drivers and validates their
//! metadata as the real runtime does. On Linux x86-64 it loads a bpf2sys `.sys` into this process and runs it
//! the way EbpfCore, ebpfapi and the Windows kernel do (native-module-contract.md §1.3, §2.3, §3, §4.2, §4.3).
//! x64 images run directly on this host; ARM64 images run on a [`GuestMachine`] the caller supplies, with the
//! same mock kernel and helpers. [`read_driver_file`] reads the same metadata from the file without running
//! anything, on any host (for `bpf2sys inspect`).
//!
//! [`Emulator::load`]:
//! 1. parses the file as user mode does ([`usermode::parse_native_file`], contract §4.3);
//! 2. maps it ([`loader::load_image`]: sections at RVAs, base relocations, imports bound to the mock kernel of
//!    [`kernel`]), writes `Parameters\NpiModuleId` into the mock registry and calls `DriverEntry`;
//! 3. checks the NMR client registration, acts as EbpfCore's NMR provider and calls `ClientAttachProvider`,
//!    capturing the metadata table the driver hands over as client dispatch;
//! 4. validates the table exactly as `_ebpf_native_validate_native_module` does (§2.3) and compares with the
//!    user-mode view (counts, names, order, §4.2);
//! 5. creates the maps (inner templates first, pinning by name, §3.3), fills each program's runtime context
//!    (helper addresses, map data with the version's stride, global sections with their initial data),
//!    recomputes and checks each program-info hash (§3.2), then applies initial map values.
//!
//! [`LoadedModule::invoke`] calls a program as `function(context, runtime_context)` with a 64-byte context
//! header in front of the context, takes the result as 32 bits and follows tail calls like `ebpf_program_invoke`
//! (§3.4). [`LoadedModule::unload`] calls `DriverUnload` and checks the NMR deregistration.
//!
//! The crate depends on neither the compiler nor the runtime shim: it is the oracle their output is checked
//! against. The platform facts the runtime takes from its extensions come from the caller ([`Extensions`]);
//! processors other than the host come from the caller too ([`GuestMachine`]), so an instruction emulator
//! (and its licence) is linked only where it is wanted.

pub mod abi;
pub mod callbacks;
#[cfg(all(target_arch = "x86_64", unix))]
mod extension;
#[cfg(all(target_arch = "x86_64", unix))]
pub mod helpers;
pub mod image;
#[cfg(all(target_arch = "x86_64", unix))]
pub mod kernel;
#[cfg(all(target_arch = "x86_64", unix))]
pub mod loader;
#[cfg(all(target_arch = "x86_64", unix))]
pub mod machine;
pub mod maps;
pub mod platform;
#[cfg(all(target_arch = "x86_64", unix))]
mod runtime;
pub mod usermode;
mod validate;

pub use image::{read_driver_file, DriverFile, DriverMetadata};
#[cfg(all(target_arch = "x86_64", unix))]
pub use machine::GuestMachine;
pub use maps::{EmulatedMap, MapDefinition};
pub use platform::{Extensions, Guid, ProgramTypeInfo, PrototypeInfo};
#[cfg(all(target_arch = "x86_64", unix))]
pub use runtime::*;
pub use usermode::{parse_native_file, UserModeView};
pub use validate::{validate_metadata, MetadataSource, ModuleMetadata, ProgramInfo};

/// Why the emulated runtime refused a module or a call.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("image: {0}")]
    Image(String),
    #[error("unresolved import {0}")]
    UnresolvedImport(String),
    #[error("user-mode parsing: {0}")]
    UserMode(String),
    #[error("DriverEntry: {0}")]
    DriverEntry(String),
    #[error("NMR: {0}")]
    Nmr(String),
    #[error("metadata validation (contract §2.3): {0}")]
    Metadata(String),
    #[error("user mode and kernel disagree: {0}")]
    Mismatch(String),
    #[error("map creation: {0}")]
    Maps(String),
    #[error("program `{program}`: {message}")]
    Program { program: String, message: String },
    #[error("unload: {0}")]
    Unload(String),
}

/// A map entry (`map_entry_t`, contract §2.2) as the runtime read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
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
