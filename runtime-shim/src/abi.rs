//! The runtime-owned structures a loaded program reads (native-module contract §2.2): the one definition of
//! `program_runtime_context_t` and the tables it points to.
//!
//! EbpfCore allocates and fills these; generated code only reads them (`runtime_context->helper_data[i].address`,
//! `->map_data[m].address`, `->global_variable_section_data[g].address_of_map_value`, contract §5.2–5.4). Lowering
//! takes its offsets and strides from here, and the test harnesses that play the runtime's part (the emulator's
//! loader, the native-code runner) build their tables from these types, so a layout change is made once. The
//! emulator's *validation* of the module-owned metadata (program, map and helper entries) deliberately does not
//! use this module: it stays an independent oracle of the contract.
//!
//! The layouts are those of Windows x64 and ARM64 (8-byte pointers); the assertions at the end stop the build on a
//! host where `#[repr(C)]` would lay them out differently.

use std::mem::{offset_of, size_of};

use crate::RuntimeVersion;

/// The 24-byte `ebpf_native_header_t` slot at the start of every runtime-owned struct; the runtime does not fill
/// it in for these structs, and generated code never reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NativeHeader(pub [u64; 3]);

/// `helper_function_data_t` (runtime-owned, one per helper-table slot, stride 40).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelperFunctionData {
    pub header: NativeHeader,
    /// `uint64_t (*)(u64, u64, u64, u64, u64, void* context)`; 0 for sentinel slots.
    pub address: u64,
    /// Set for `bpf_tail_call`; unused by generated code (contract §5.2).
    pub tail_call: bool,
}

/// `map_data_t` as the runtime lays it out for modules reporting 1.4.0 or later (stride 40).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapData {
    pub header: NativeHeader,
    /// The kernel `ebpf_map_t*`, what map helpers take.
    pub address: u64,
    /// Direct pointer to an ARRAY map's values, else 0 (never written for modules before 1.4.0).
    pub array_data: u64,
}

/// `global_variable_section_data_t` (runtime-owned, stride 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalVariableSectionData {
    pub header: NativeHeader,
    pub address_of_map_value: u64,
}

/// `btf_resolved_function_data_t` (runtime-owned, stride 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BtfResolvedFunctionData {
    pub header: NativeHeader,
    pub address: u64,
}

/// `program_runtime_context_t`: one per loaded program, the second argument of every program call (contract §5.1).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProgramRuntimeContext {
    pub header: NativeHeader,
    /// NULL when the program's helper table is empty.
    pub helper_data: *const HelperFunctionData,
    /// Over all maps of the module, with the stride of [`MapDataLayout::for_version`]; NULL without maps.
    pub map_data: *const u8,
    pub global_variable_section_data: *const GlobalVariableSectionData,
    pub btf_resolved_function_data: *const BtfResolvedFunctionData,
}

/// Byte offsets and strides generated code uses, as `i32` displacements.
pub mod offsets {
    use super::*;

    pub const RUNTIME_CONTEXT_HELPER_DATA: i32 = offset_of!(ProgramRuntimeContext, helper_data) as i32;
    pub const RUNTIME_CONTEXT_MAP_DATA: i32 = offset_of!(ProgramRuntimeContext, map_data) as i32;
    pub const RUNTIME_CONTEXT_GLOBAL_VARIABLE_SECTION_DATA: i32 =
        offset_of!(ProgramRuntimeContext, global_variable_section_data) as i32;
    pub const HELPER_DATA_STRIDE: i32 = size_of::<HelperFunctionData>() as i32;
    pub const HELPER_DATA_ADDRESS: i32 = offset_of!(HelperFunctionData, address) as i32;
    pub const MAP_DATA_ADDRESS: i32 = offset_of!(MapData, address) as i32;
    pub const MAP_DATA_ARRAY_DATA: i32 = offset_of!(MapData, array_data) as i32;
    pub const GLOBAL_SECTION_DATA_STRIDE: i32 = size_of::<GlobalVariableSectionData>() as i32;
    pub const GLOBAL_SECTION_DATA_ADDRESS: i32 = offset_of!(GlobalVariableSectionData, address_of_map_value) as i32;
}

/// The `map_data_t` stride the runtime uses for a module, chosen by the version the module reports
/// (`_ebpf_native_get_map_data_element_size`, contract §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MapDataLayout {
    /// Modules reporting a version before 1.4.0: `SIZE_INCLUDING(address)` = 32, no `array_data`.
    V1_3,
    /// Modules reporting 1.4.0 or later: `SIZE_INCLUDING(array_data)` = 40.
    #[default]
    V1_4,
}

impl MapDataLayout {
    /// The layout the runtime uses for a module reporting `version`.
    pub fn for_version(version: RuntimeVersion) -> MapDataLayout {
        if version >= RuntimeVersion::MAP_DATA_V2 {
            MapDataLayout::V1_4
        } else {
            MapDataLayout::V1_3
        }
    }

    /// Bytes from one `map_data[i]` to the next.
    pub fn stride(self) -> i32 {
        match self {
            MapDataLayout::V1_3 => offsets::MAP_DATA_ARRAY_DATA,
            MapDataLayout::V1_4 => size_of::<MapData>() as i32,
        }
    }

    /// Whether the runtime fills `array_data`.
    pub fn has_array_data(self) -> bool {
        self == MapDataLayout::V1_4
    }
}

// The contract's numbers (§2.2); a host whose `repr(C)` differs from Windows x64/ARM64 fails here.
const _: () = assert!(size_of::<NativeHeader>() == 24);
const _: () = assert!(size_of::<HelperFunctionData>() == 40 && offsets::HELPER_DATA_ADDRESS == 24);
const _: () = assert!(offset_of!(HelperFunctionData, tail_call) == 32);
const _: () =
    assert!(size_of::<MapData>() == 40 && offsets::MAP_DATA_ADDRESS == 24 && offsets::MAP_DATA_ARRAY_DATA == 32);
const _: () = assert!(size_of::<GlobalVariableSectionData>() == 32 && offsets::GLOBAL_SECTION_DATA_ADDRESS == 24);
const _: () = assert!(size_of::<BtfResolvedFunctionData>() == 32);
const _: () = assert!(size_of::<ProgramRuntimeContext>() == 56);
const _: () = assert!(
    offsets::RUNTIME_CONTEXT_HELPER_DATA == 24
        && offsets::RUNTIME_CONTEXT_MAP_DATA == 32
        && offsets::RUNTIME_CONTEXT_GLOBAL_VARIABLE_SECTION_DATA == 40
        && offset_of!(ProgramRuntimeContext, btf_resolved_function_data) == 48
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_data_stride_follows_the_reported_version() {
        let v = |s: &str| RuntimeVersion::parse(s).unwrap();
        assert_eq!(MapDataLayout::for_version(v("1.3.0")).stride(), 32);
        assert_eq!(MapDataLayout::for_version(v("1.3.9")).stride(), 32);
        assert_eq!(MapDataLayout::for_version(v("1.4.0")).stride(), 40);
        assert_eq!(MapDataLayout::for_version(v("1.6.0")).stride(), 40);
        assert!(!MapDataLayout::for_version(RuntimeVersion::PORTABLE).has_array_data());
    }
}
