//! The runtime-owned tables EbpfCore allocates and fills for each loaded program (contract §2.2), defined here
//! from the contract rather than taken from the shim, so a layout mistake in the shim cannot hide from the oracle.

use std::mem::{offset_of, size_of};

/// `ebpf_extension_header_t` (not filled in by the runtime for these tables).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeHeader(pub [u64; 3]);

/// `helper_function_data_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HelperFunctionData {
    pub header: NativeHeader,
    pub address: u64,
    pub tail_call: bool,
}

/// `map_data_t` (its stride depends on the module version, see `runtime::load_programs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapData {
    pub header: NativeHeader,
    pub address: u64,
    pub array_data: u64,
}

/// `global_variable_section_data_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalVariableSectionData {
    pub header: NativeHeader,
    pub address_of_map_value: u64,
}

/// `btf_resolved_function_data_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BtfResolvedFunctionData {
    pub header: NativeHeader,
    pub address: u64,
}

/// `program_runtime_context_t`, the second argument of every program call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProgramRuntimeContext {
    pub header: NativeHeader,
    pub helper_data: *const HelperFunctionData,
    pub map_data: *const u8,
    pub global_variable_section_data: *const GlobalVariableSectionData,
    pub btf_resolved_function_data: *const BtfResolvedFunctionData,
}

// The offsets of contract §2.2.
const _: () = assert!(size_of::<HelperFunctionData>() == 40 && offset_of!(HelperFunctionData, address) == 24);
const _: () = assert!(offset_of!(HelperFunctionData, tail_call) == 32);
const _: () = assert!(size_of::<MapData>() == 40 && offset_of!(MapData, address) == 24);
const _: () = assert!(offset_of!(MapData, array_data) == 32);
const _: () = assert!(size_of::<GlobalVariableSectionData>() == 32);
const _: () = assert!(size_of::<BtfResolvedFunctionData>() == 32);
const _: () = assert!(size_of::<ProgramRuntimeContext>() == 56);
const _: () = assert!(
    offset_of!(ProgramRuntimeContext, helper_data) == 24
        && offset_of!(ProgramRuntimeContext, map_data) == 32
        && offset_of!(ProgramRuntimeContext, global_variable_section_data) == 40
        && offset_of!(ProgramRuntimeContext, btf_resolved_function_data) == 48
);
