//! An emulated eBPF for Windows runtime on Linux x86-64: loads a bpf2sys `.sys` into this process and runs it
//! the way EbpfCore, ebpfapi and the Windows kernel do (native-module-contract.md §1.3, §2.3, §3, §4.2, §4.3).
//! x64 images run directly on this host; ARM64 images run in the AArch64 emulator ([`machine`]), with the same
//! mock kernel and helpers.
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

pub mod helpers;
pub mod kernel;
pub mod loader;
pub mod machine;
pub mod maps;
pub mod usermode;

use std::collections::BTreeMap;
use std::rc::Rc;

use bpf2sys::platform::{windows::WINDOWS, Guid};
// The runtime-owned tables the loader fills (contract §2.2) have one definition, the shim's `abi`; which stride
// a module version selects is decided here, independently (`load_programs`).
use bpf2sys_runtime_shim::abi::{
    BtfResolvedFunctionData, GlobalVariableSectionData, HelperFunctionData, MapData, ProgramRuntimeContext,
};

// The emulator parses `map_entry_t` itself; it reports each entry in the shim's own description type, so a test
// can compare what the kernel read with what the shim was asked to write.
pub use bpf2sys_runtime_shim::MapDescription;
pub use maps::{EmulatedMap, MapDefinition};
pub use usermode::{parse_native_file, UserModeView};

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

/// The NPI ids of contract §1.3, in memory order.
const NATIVE_NPI_ID: [u8; 16] =
    [0xc8, 0xaa, 0x47, 0xc8, 0xf2, 0xa6, 0x53, 0x4b, 0xae, 0xa3, 0xf4, 0xa9, 0x4b, 0x9a, 0x80, 0xcb];

/// `_ebpf_minimum_version` (contract §2.3).
const MINIMUM_VERSION: [u32; 3] = [0, 21, 0];
/// `_ebpf_version_map_data_v2`.
const MAP_DATA_V2: [u32; 3] = [1, 4, 0];
const MAX_TAIL_CALL_CNT: u32 = 33;

/// Reads a `T` at `addr` after checking it lies inside the image.
fn read<T: Copy>(image: &loader::LoadedImage, addr: usize, what: &str) -> Result<T, EmulatorError> {
    if !image.contains(addr, std::mem::size_of::<T>()) {
        return Err(EmulatorError::Metadata(format!("{what}: pointer {addr:#x} is outside the driver image")));
    }
    // SAFETY: inside our mapping (checked above); unaligned reads are fine for plain data.
    Ok(unsafe { (addr as *const T).read_unaligned() })
}

fn read_c_string(image: &loader::LoadedImage, addr: usize, what: &str) -> Result<String, EmulatorError> {
    if addr == 0 {
        return Err(EmulatorError::Metadata(format!("{what} is NULL")));
    }
    let mut bytes = Vec::new();
    loop {
        let b: u8 = read(image, addr + bytes.len(), what)?;
        if b == 0 {
            break;
        }
        bytes.push(b);
        if bytes.len() > 4096 {
            return Err(EmulatorError::Metadata(format!("{what} is not terminated")));
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `ebpf_extension_header_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    version: u16,
    size: u64,
    total_size: u64,
}

fn header(image: &loader::LoadedImage, addr: usize, what: &str) -> Result<Header, EmulatorError> {
    Ok(Header {
        version: read(image, addr, what)?,
        size: read(image, addr + 8, what)?,
        total_size: read(image, addr + 16, what)?,
    })
}

fn check_header(h: Header, sizes: &[u64], what: &str) -> Result<(), EmulatorError> {
    if h.version != 1 || !sizes.contains(&h.size) {
        return Err(EmulatorError::Metadata(format!(
            "{what}: header {{version {}, size {}}} is not one of version 1 sizes {sizes:?}",
            h.version, h.size
        )));
    }
    Ok(())
}

/// A program entry as the kernel normalised it.
#[derive(Clone, Debug)]
pub struct ProgramInfo {
    pub program_name: String,
    pub section_name: String,
    pub pe_section_name: String,
    pub function: usize,
    pub program_type: Guid,
    pub expected_attach_type: Guid,
    pub helper_ids: Vec<u32>,
    /// `btf_resolved_functions` as `(name, module GUID)`; `("", GUID_NULL)` marks an unused slot.
    pub btf_functions: Vec<(String, Guid)>,
    pub referenced_maps: Vec<u16>,
    pub instruction_count: u64,
    pub program_info_hash: Option<Vec<u8>>,
    pub hash_type: Option<String>,
}

/// A loaded program with its runtime context.
pub struct LoadedProgram {
    pub info: ProgramInfo,
    runtime_context: Box<ProgramRuntimeContext>,
    _helper_data: Vec<HelperFunctionData>,
    _btf_data: Vec<BtfResolvedFunctionData>,
    _map_data: Vec<u64>,
    _global_data: Vec<GlobalVariableSectionData>,
}

/// What the metadata table describes (after validation).
#[derive(Clone, Debug)]
pub struct ModuleMetadata {
    pub version: [u32; 3],
    pub programs: Vec<ProgramInfo>,
    pub maps: Vec<MapDescription>,
    /// `(map name, values)`.
    pub initial_values: Vec<(String, Vec<Option<String>>)>,
    /// `(map name, initial data)`.
    pub global_sections: Vec<(String, Vec<u8>)>,
    /// Whether the `hash` callback returned a 32-byte ELF hash.
    pub elf_hash: Option<Vec<u8>>,
}

/// What the service's `Parameters\NpiModuleId` registry value holds when the driver starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NpiModuleIdValue {
    /// The 16-byte REG_BINARY module id ebpfapi writes (contract §3.1 step 3).
    #[default]
    ModuleId,
    /// Some other `(type, data)`.
    Custom(u32, Vec<u8>),
    /// No value at all.
    Missing,
}

/// The emulated runtime: owns pinned maps across module loads.
///
/// The mock kernel is per thread: load one module at a time per thread (unload before loading the next).
#[derive(Default)]
pub struct Emulator {
    pinned: BTreeMap<String, Rc<EmulatedMap>>,
    next_module: u8,
    /// The registry value the next load provides.
    pub npi_module_id: NpiModuleIdValue,
}

/// A loaded module.
pub struct LoadedModule {
    pub metadata: ModuleMetadata,
    pub user_mode: UserModeView,
    pub maps: Vec<Rc<EmulatedMap>>,
    pub programs: Vec<LoadedProgram>,
    driver_object: Box<[u64; 48]>,
    /// Pinned by this module: name → map.
    pub pinned: Vec<String>,
    /// Pinned maps this module reused instead of creating.
    pub reused_pins: Vec<String>,
    unloaded: bool,
    /// The processor the image runs on; dropped before the image it maps.
    machine: machine::Machine,
    // Dropped last: programs and maps point into it.
    pub image: loader::LoadedImage,
}

/// The execution state the runtime keeps in context-header slot 0 (contract §3.4).
pub struct ExecutionState {
    pub module: *const LoadedModule,
    pub next_program: Option<usize>,
    pub tail_calls: u32,
    /// Messages from `bpf_trace_printk*`.
    pub trace: Vec<String>,
}

/// `DRIVER_OBJECT.DriverUnload`.
const DRIVER_UNLOAD_SLOT: usize = 0x68 / 8;

/// An NTSTATUS from a driver function's 64-bit result register (only the low 32 bits are defined).
fn ntstatus(value: u64) -> i32 {
    value as u32 as i32
}

impl Emulator {
    pub fn new() -> Emulator {
        Emulator::default()
    }

    /// A pinned map, if one is pinned under `name`.
    pub fn pinned_map(&self, name: &str) -> Option<Rc<EmulatedMap>> {
        self.pinned.get(name).cloned()
    }

    /// Loads a driver image and all its programs (ebpfapi's `bpf_object__load` on a `.sys`).
    pub fn load(&mut self, bytes: &[u8]) -> Result<LoadedModule, EmulatorError> {
        let user_mode = parse_native_file(bytes)?;
        self.next_module = self.next_module.wrapping_add(1);
        let service = format!("bpf2sys_emulated_{}", self.next_module);
        let module_id: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(17) ^ self.next_module);

        kernel::reset_kernel();
        let key = format!("\\registry\\machine\\system\\currentcontrolset\\services\\{service}");
        kernel::with_kernel(|k| {
            k.registry.insert(key.clone(), BTreeMap::new());
            let mut parameters = BTreeMap::new();
            match &self.npi_module_id {
                NpiModuleIdValue::ModuleId => {
                    parameters.insert("npimoduleid".to_string(), (3, module_id.to_vec()));
                }
                NpiModuleIdValue::Custom(ty, data) => {
                    parameters.insert("npimoduleid".to_string(), (*ty, data.clone()));
                }
                NpiModuleIdValue::Missing => {}
            }
            k.registry.insert(format!("{key}\\parameters"), parameters);
        });
        let machine = machine::Machine::for_image(loader::image_machine(bytes)?)?;
        let image = loader::load_image(bytes, &|dll, name| {
            kernel::kernel_export(dll, name).and_then(|f| machine.bind(f).ok())
        })?;
        for (_, va, vs, flags) in &image.sections {
            if flags & 0x2000_0000 != 0 {
                machine.map_code(image.base() + *va as usize, *vs as usize)?;
            }
        }

        // DriverEntry(DRIVER_OBJECT*, UNICODE_STRING* registry_path).
        let mut driver_object = Box::new([0u64; 48]);
        let path: Vec<u16> = format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{service}")
            .encode_utf16()
            .chain([0])
            .collect();
        let mut unicode = [0u8; 16];
        unicode[0..2].copy_from_slice(&(((path.len() - 1) * 2) as u16).to_le_bytes());
        unicode[2..4].copy_from_slice(&((path.len() * 2) as u16).to_le_bytes());
        unicode[8..16].copy_from_slice(&(path.as_ptr() as u64).to_le_bytes());
        let entry = image
            .address(image.entry_rva as u64)
            .ok_or_else(|| EmulatorError::DriverEntry("entry point outside the image".into()))?;
        // SAFETY: the entry point is the driver's DriverEntry (lint P6 checks it is code); both arguments live
        // across the call.
        let status = unsafe { machine.call(entry, &[driver_object.as_mut_ptr() as u64, unicode.as_ptr() as u64]) }
            .map(ntstatus)
            .map_err(EmulatorError::DriverEntry)?;
        if status != 0 {
            return Err(EmulatorError::DriverEntry(format!("returned status {:#010x}", status as u32)));
        }
        let unload = driver_object[DRIVER_UNLOAD_SLOT] as usize;
        match image.section_of(unload) {
            Some((_, _, _, flags)) if flags & 0x2000_0000 != 0 => {}
            _ => return Err(EmulatorError::DriverEntry(format!("DriverUnload {unload:#x} is not code in the image"))),
        }

        // The client registration (contract §1.3).
        let registration = kernel::with_kernel(|k| k.client)
            .ok_or_else(|| EmulatorError::Nmr("DriverEntry did not register an NMR client".into()))?;
        let chars = registration.characteristics;
        let length: u16 = read(&image, chars + 2, "NPI_CLIENT_CHARACTERISTICS")?;
        let reg_size: u16 = read(&image, chars + 34, "NPI_REGISTRATION_INSTANCE")?;
        if length != 72 || reg_size != 40 {
            return Err(EmulatorError::Nmr(format!(
                "characteristics length {length} / registration size {reg_size}, expected 72 / 40"
            )));
        }
        let npi_id: [u8; 16] = read(&image, read::<usize>(&image, chars + 40, "NpiId")?, "NpiId")?;
        if npi_id != NATIVE_NPI_ID {
            return Err(EmulatorError::Nmr(format!(
                "NPI id {} is not the native-module NPI",
                Guid::from_bytes(&npi_id)
            )));
        }
        let module_id_ptr: usize = read(&image, chars + 48, "ModuleId")?;
        let mid_len: u16 = read(&image, module_id_ptr, "NPI_MODULEID")?;
        let mid_type: u32 = read(&image, module_id_ptr + 4, "NPI_MODULEID")?;
        let mid_guid: [u8; 16] = read(&image, module_id_ptr + 8, "NPI_MODULEID")?;
        if mid_len != 24 || mid_type != 1 || mid_guid != module_id {
            return Err(EmulatorError::Nmr(format!(
                "module id {{Length {mid_len}, Type {mid_type}, Guid {}}} does not carry the registry's NpiModuleId {}",
                Guid::from_bytes(&mid_guid),
                Guid::from_bytes(&module_id)
            )));
        }

        // Attach as EbpfCore's provider.
        let attach: usize = read(&image, chars + 8, "ClientAttachProvider")?;
        let binding = 0xB1_4D1Eu64;
        kernel::with_kernel(|k| k.binding_handle = binding);
        let mut provider_registration = [0u8; 40];
        provider_registration[2..4].copy_from_slice(&40u16.to_le_bytes());
        // SAFETY: a driver function with the ClientAttachProvider signature (checked to be in the image below
        // by the call succeeding and the dispatch check).
        if image.section_of(attach).is_none_or(|s| s.3 & 0x2000_0000 == 0) {
            return Err(EmulatorError::Nmr("ClientAttachProvider is not code in the image".into()));
        }
        let status = unsafe {
            machine.call(attach, &[binding, registration.client_context as u64, provider_registration.as_ptr() as u64])
        }
        .map(ntstatus)
        .map_err(EmulatorError::Nmr)?;
        if status != 0 {
            return Err(EmulatorError::Nmr(format!("ClientAttachProvider returned {:#010x}", status as u32)));
        }
        let table = kernel::with_kernel(|k| k.client_dispatch)
            .ok_or_else(|| EmulatorError::Nmr("no client dispatch was attached".into()))?;

        let metadata = validate_metadata(&machine, &image, table)?;
        compare_views(&metadata, &user_mode)?;

        let mut module = LoadedModule {
            metadata,
            user_mode,
            maps: Vec::new(),
            programs: Vec::new(),
            driver_object,
            pinned: Vec::new(),
            reused_pins: Vec::new(),
            unloaded: false,
            machine,
            image,
        };
        self.create_maps(&mut module)?;
        load_programs(&mut module)?;
        apply_initial_values(&module)?;
        Ok(module)
    }

    /// `_ebpf_native_create_maps` (contract §3.3 step 1).
    fn create_maps(&mut self, module: &mut LoadedModule) -> Result<(), EmulatorError> {
        let entries = module.metadata.maps.clone();
        let mut created: Vec<Option<Rc<EmulatedMap>>> = vec![None; entries.len()];
        // Inner templates first: a map-in-map's template must exist before it.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| !entries.iter().any(|e| inner_template(&entries, e) == Some(i)));
        for i in order {
            let e = &entries[i];
            if !maps::is_supported(e.map_type) {
                return Err(EmulatorError::Maps(format!(
                    "map `{}` has type {}, which the emulator does not implement",
                    e.name, e.map_type
                )));
            }
            if e.pinning > 1 {
                return Err(EmulatorError::Maps(format!(
                    "map `{}` has pinning {}, only NONE/BY_NAME exist",
                    e.name, e.pinning
                )));
            }
            if matches!(e.map_type, maps::MAP_HASH_OF_MAPS | maps::MAP_ARRAY_OF_MAPS)
                && inner_template(&entries, e).is_none()
            {
                return Err(EmulatorError::Maps(format!("map-in-map `{}` has no inner template", e.name)));
            }
            let definition = MapDefinition {
                map_type: e.map_type,
                key_size: e.key_size,
                value_size: e.value_size,
                max_entries: e.max_entries,
            };
            let map = if e.pinning == 1 {
                match self.pinned.get(&e.name) {
                    Some(existing) if existing.definition == definition => {
                        module.reused_pins.push(e.name.clone());
                        existing.clone()
                    }
                    Some(existing) => {
                        return Err(EmulatorError::Maps(format!(
                            "pinned map `{}` exists with a different definition {:?}",
                            e.name, existing.definition
                        )))
                    }
                    None => {
                        let m = Rc::new(EmulatedMap::new(&e.name, definition));
                        self.pinned.insert(e.name.clone(), m.clone());
                        module.pinned.push(e.name.clone());
                        m
                    }
                }
            } else {
                Rc::new(EmulatedMap::new(&e.name, definition))
            };
            created[i] = Some(map);
        }
        module.maps = created.into_iter().map(|m| m.expect("every index created")).collect();
        Ok(())
    }
}

/// The inner template of a map-in-map entry: `inner_map_idx` if non-zero, else the map whose `id == inner_id`.
fn inner_template(entries: &[MapDescription], e: &MapDescription) -> Option<usize> {
    if !matches!(e.map_type, maps::MAP_HASH_OF_MAPS | maps::MAP_ARRAY_OF_MAPS) {
        return None;
    }
    if e.inner_map_idx != 0 {
        return Some(e.inner_map_idx as usize).filter(|i| *i < entries.len());
    }
    if e.inner_id != 0 {
        return entries.iter().position(|m| m.id == e.inner_id);
    }
    None
}

/// Calls an array callback: `(pointer, count)`, enforcing count > 0 ⇔ pointer non-NULL.
fn array_callback(
    machine: &machine::Machine,
    image: &loader::LoadedImage,
    f: usize,
    what: &str,
) -> Result<(usize, u64), EmulatorError> {
    if image.section_of(f).is_none_or(|s| s.3 & 0x2000_0000 == 0) {
        return Err(EmulatorError::Metadata(format!("{what} callback {f:#x} is not code in the image")));
    }
    let (mut ptr, mut count) = (usize::MAX, u64::MAX);
    // SAFETY: a metadata callback `void f(T**, size_t*)` inside the image.
    unsafe { machine.call(f, &[&mut ptr as *mut usize as u64, &mut count as *mut u64 as u64]) }
        .map_err(|e| EmulatorError::Metadata(format!("{what} callback: {e}")))?;
    if (count > 0) != (ptr != 0) {
        return Err(EmulatorError::Metadata(format!("{what}: count {count} with pointer {ptr:#x}")));
    }
    Ok((ptr, count))
}

/// `_ebpf_native_validate_native_module` and the reads of `ebpf_native_load_programs` (contract §2.3).
pub fn validate_metadata(
    machine: &machine::Machine,
    image: &loader::LoadedImage,
    table: usize,
) -> Result<ModuleMetadata, EmulatorError> {
    let meta = |m: String| EmulatorError::Metadata(m);
    if table == 0 {
        return Err(meta("client dispatch (metadata table) is NULL".into()));
    }
    let size: u64 = read(image, table, "metadata table")?;
    if size < 32 {
        return Err(meta(format!("metadata table size {size} < offsetof(version)")));
    }
    let callbacks: [usize; 6] = std::array::from_fn(|i| read(image, table + 8 + 8 * i, "metadata table").unwrap_or(0));
    if size < 56 {
        return Err(meta(format!("metadata table size {size}: the runtime calls all six callbacks, so it must be 56")));
    }
    if callbacks.contains(&0) {
        return Err(meta(format!("metadata table has a NULL callback: {callbacks:x?}")));
    }
    let [get_programs, get_maps, get_hash, get_version, get_initial_values, get_globals] = callbacks;

    let mut version = [0u32; 3];
    if image.section_of(get_version).is_none_or(|s| s.3 & 0x2000_0000 == 0) {
        return Err(meta("version callback is not code in the image".into()));
    }
    // SAFETY: `void version(bpf2c_version_t*)` inside the image.
    unsafe { machine.call(get_version, &[version.as_mut_ptr() as u64]) }
        .map_err(|e| meta(format!("version callback: {e}")))?;
    if version < MINIMUM_VERSION {
        return Err(meta(format!("module version {version:?} < minimum 0.21.0")));
    }

    let (hash_ptr, hash_len) = array_callback(machine, image, get_hash, "hash")?;
    let elf_hash = if hash_ptr != 0 {
        Some(
            (0..hash_len as usize)
                .map(|i| read::<u8>(image, hash_ptr + i, "ELF hash"))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };

    // Programs.
    let (pp, pcount) = array_callback(machine, image, get_programs, "programs")?;
    let mut programs = Vec::new();
    let stride = if pcount > 0 { header(image, pp + 8, "program entry 0")?.total_size } else { 0 };
    for i in 0..pcount as usize {
        let e = pp + i * stride as usize;
        let what = format!("program entry {i}");
        check_header(header(image, e + 8, &what)?, &[144, 154], &what)?;
        // Normalise: copy min(total_size, 160) bytes into a zeroed entry.
        let mut entry = [0u8; 160];
        for (k, b) in entry.iter_mut().enumerate().take(stride.min(160) as usize) {
            *b = read(image, e + k, &what)?;
        }
        let u64_at = |o: usize| u64::from_le_bytes(entry[o..o + 8].try_into().expect("8"));
        let u16_at = |o: usize| u16::from_le_bytes([entry[o], entry[o + 1]]);
        let program_name = read_c_string(image, u64_at(56) as usize, &format!("{what} program_name"))?;
        let what = format!("program `{program_name}`");
        let section_name = read_c_string(image, u64_at(48) as usize, &format!("{what} section_name"))?;
        let pe_section_name = read_c_string(image, u64_at(40) as usize, &format!("{what} pe_section_name"))?;
        for (n, s) in [("program_name", &program_name), ("section_name", &section_name)] {
            if s.is_empty() || s.len() > 63 {
                return Err(meta(format!("{what}: {n} length {}", s.len())));
            }
        }
        let function = u64_at(32) as usize;
        if image.section_of(function).is_none_or(|s| s.3 & 0x2000_0000 == 0) {
            return Err(meta(format!("{what}: function {function:#x} is not code in the image")));
        }
        let map_count = u16_at(72) as u64;
        let maps_ptr = u64_at(64) as usize;
        if (map_count > 0) != (maps_ptr != 0) {
            return Err(meta(format!("{what}: referenced_map_count {map_count} with pointer {maps_ptr:#x}")));
        }
        let referenced_maps = (0..map_count as usize)
            .map(|k| read::<u16>(image, maps_ptr + 2 * k, &what))
            .collect::<Result<Vec<_>, _>>()?;
        // Helpers: stride from helpers[0], header {1, 40}, names non-NULL.
        let helper_count = u16_at(88) as usize;
        let helpers_ptr = u64_at(80) as usize;
        if (helper_count > 0) != (helpers_ptr != 0) {
            return Err(meta(format!("{what}: helper_count {helper_count} with pointer {helpers_ptr:#x}")));
        }
        let mut helper_ids = Vec::new();
        let hstride = if helper_count > 0 { header(image, helpers_ptr, &what)?.total_size as usize } else { 0 };
        for k in 0..helper_count {
            let h = helpers_ptr + k * hstride;
            let hw = format!("{what} helper {k}");
            check_header(header(image, h, &hw)?, &[40], &hw)?;
            // The name must be non-NULL (its contents, "" for sentinels, are ignored by the runtime).
            read_c_string(image, read::<usize>(image, h + 32, &hw)?, &format!("{hw} name"))?;
            helper_ids.push(read::<u32>(image, h + 24, &hw)?);
        }
        let mut seen = std::collections::BTreeSet::new();
        for id in helper_ids.iter().filter(|id| **id != 0) {
            if !seen.insert(*id) {
                return Err(meta(format!(
                    "{what}: helper id {id} appears twice (the runtime's prototype count mismatches)"
                )));
            }
        }
        // BTF-resolved functions (size ≥ 154 only): header exactly {1, 48, 48}; each entry unused ("" and
        // GUID_NULL) or with both a name and a GUID (coverage §2).
        let mut btf_functions = Vec::new();
        if stride >= 154 {
            let btf_count = u16_at(152) as usize;
            let btf_ptr = u64_at(144) as usize;
            if (btf_count > 0) != (btf_ptr != 0) {
                return Err(meta(format!("{what}: BTF count {btf_count} with pointer {btf_ptr:#x}")));
            }
            for k in 0..btf_count {
                let entry = btf_ptr + 48 * k;
                let h = header(image, entry, &what)?;
                if h != (Header { version: 1, size: 48, total_size: 48 }) {
                    return Err(meta(format!("{what}: BTF entry {k} header {h:?}")));
                }
                let bw = format!("{what} BTF entry {k}");
                let name_ptr = read::<usize>(image, entry + 24, &bw)?;
                let name = if name_ptr == 0 { None } else { Some(read_c_string(image, name_ptr, &bw)?) };
                let guid = Guid::from_bytes(&read::<[u8; 16]>(image, entry + 32, &bw)?);
                match name {
                    Some(n) if n.is_empty() && guid.is_null() => btf_functions.push((n, guid)),
                    Some(n) if !n.is_empty() && !guid.is_null() => btf_functions.push((n, guid)),
                    _ => return Err(meta(format!("{bw}: neither unused nor a name with a module GUID"))),
                }
            }
        }
        let guid_at = |p: usize, w: &str| -> Result<Guid, EmulatorError> {
            Ok(Guid::from_bytes(&read::<[u8; 16]>(image, p, w)?))
        };
        let type_ptr = u64_at(104) as usize;
        if type_ptr == 0 {
            return Err(meta(format!("{what}: program_type is NULL")));
        }
        let program_type = guid_at(type_ptr, "program_type")?;
        if program_type.is_null() {
            return Err(meta(format!("{what}: program_type is GUID_NULL")));
        }
        let attach_ptr = u64_at(112) as usize;
        let expected_attach_type =
            if attach_ptr == 0 { Guid::NULL } else { guid_at(attach_ptr, "expected_attach_type")? };
        let hash_ptr = u64_at(120) as usize;
        let hash_len = u64_at(128) as usize;
        let program_info_hash = if hash_ptr != 0 && hash_len != 0 {
            Some(
                (0..hash_len)
                    .map(|k| read::<u8>(image, hash_ptr + k, "program_info_hash"))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        } else {
            None
        };
        let hash_type_ptr = u64_at(136) as usize;
        let hash_type = if hash_type_ptr != 0 {
            Some(read_c_string(image, hash_type_ptr, "program_info_hash_type")?)
        } else {
            None
        };
        programs.push(ProgramInfo {
            program_name,
            section_name,
            pe_section_name,
            function,
            program_type,
            expected_attach_type,
            helper_ids,
            btf_functions,
            referenced_maps,
            instruction_count: u64_at(96),
            program_info_hash,
            hash_type,
        });
    }

    // Maps: header {1, 80}, stride maps[0].total_size, names non-NULL.
    let (mp, mcount) = array_callback(machine, image, get_maps, "maps")?;
    let mut maps = Vec::new();
    let mstride = if mcount > 0 { header(image, mp + 16, "map entry 0")?.total_size as usize } else { 0 };
    for i in 0..mcount as usize {
        let e = mp + i * mstride;
        let what = format!("map entry {i}");
        check_header(header(image, e + 16, &what)?, &[80], &what)?;
        let g = |o: usize| read::<u32>(image, e + o, &what);
        maps.push(MapDescription {
            name: read_c_string(image, read::<usize>(image, e + 72, &what)?, &format!("{what} name"))?,
            map_type: g(40)?,
            key_size: g(44)?,
            value_size: g(48)?,
            max_entries: g(52)?,
            inner_map_idx: g(56)?,
            pinning: g(60)?,
            id: g(64)?,
            inner_id: g(68)?,
        });
    }
    for p in &programs {
        if let Some(bad) = p.referenced_maps.iter().find(|m| **m as usize >= maps.len()) {
            return Err(meta(format!("program `{}` references map {bad} of {}", p.program_name, maps.len())));
        }
    }

    // Map initial values: header {1, 48}, values non-NULL.
    let (ip, icount) = array_callback(machine, image, get_initial_values, "map_initial_values")?;
    let mut initial_values = Vec::new();
    for i in 0..icount as usize {
        let e = ip + 48 * i;
        let what = format!("map_initial_values {i}");
        check_header(header(image, e, &what)?, &[48], &what)?;
        let name = read_c_string(image, read::<usize>(image, e + 24, &what)?, &what)?;
        let count: u64 = read(image, e + 32, &what)?;
        let values: usize = read(image, e + 40, &what)?;
        if values == 0 {
            return Err(meta(format!("{what}: values is NULL")));
        }
        let mut list = Vec::new();
        for j in 0..count as usize {
            let p: usize = read(image, values + 8 * j, &what)?;
            list.push(if p == 0 { None } else { Some(read_c_string(image, p, &what)?) });
        }
        initial_values.push((name, list));
    }

    // Global variable sections: header {1, 48}, initial_data non-NULL.
    let (gp, gcount) = array_callback(machine, image, get_globals, "global_variable_sections")?;
    let mut global_sections = Vec::new();
    for i in 0..gcount as usize {
        let e = gp + 48 * i;
        let what = format!("global_variable_section {i}");
        check_header(header(image, e, &what)?, &[48], &what)?;
        let name = read_c_string(image, read::<usize>(image, e + 24, &what)?, &what)?;
        let size: u64 = read(image, e + 32, &what)?;
        let data: usize = read(image, e + 40, &what)?;
        if data == 0 {
            return Err(meta(format!("{what}: initial_data is NULL")));
        }
        let bytes = (0..size as usize).map(|k| read::<u8>(image, data + k, &what)).collect::<Result<Vec<_>, _>>()?;
        global_sections.push((name, bytes));
    }
    Ok(ModuleMetadata { version, programs, maps, initial_values, global_sections, elf_hash })
}

/// User mode pairs kernel handles positionally with its name-sorted program list and its map list (§4.2).
fn compare_views(metadata: &ModuleMetadata, user: &UserModeView) -> Result<(), EmulatorError> {
    let mismatch = |m: String| EmulatorError::Mismatch(m);
    if metadata.programs.len() != user.programs.len() {
        return Err(mismatch(format!(
            "kernel has {} programs, user mode found {}",
            metadata.programs.len(),
            user.programs.len()
        )));
    }
    for (k, u) in metadata.programs.iter().zip(&user.programs) {
        if k.program_name != u.program_name
            || k.section_name != u.section_name
            || k.pe_section_name != u.pe_section_name
        {
            return Err(mismatch(format!(
                "program order/names differ: kernel `{}` ({}, {}) vs user `{}` ({}, {}) — the program array must be sorted by name",
                k.program_name, k.section_name, k.pe_section_name, u.program_name, u.section_name, u.pe_section_name
            )));
        }
        if k.program_type.to_bytes() != u.program_type || k.expected_attach_type.to_bytes() != u.expected_attach_type {
            return Err(mismatch(format!("program `{}`: GUIDs differ between kernel and user mode", k.program_name)));
        }
    }
    if metadata.maps.len() != user.maps.len() {
        return Err(mismatch(format!("kernel has {} maps, user mode found {}", metadata.maps.len(), user.maps.len())));
    }
    for (k, u) in metadata.maps.iter().zip(&user.maps) {
        if k.name != u.name || k.map_type != u.map_type || k.key_size != u.key_size || k.value_size != u.value_size {
            return Err(mismatch(format!("map `{}` differs from user mode's `{}`", k.name, u.name)));
        }
    }
    Ok(())
}

/// The program-info hash stream the runtime builds (`_ebpf_program_compute_program_information_hash`, §3.2).
pub fn runtime_program_info_hash(
    program_type: &Guid,
    helper_ids: &[u32],
    btf_functions: &[(String, Guid)],
) -> Result<Vec<u8>, String> {
    use sha2::{Digest, Sha256};
    let pt = WINDOWS
        .program_types
        .iter()
        .find(|t| t.guid == *program_type)
        .ok_or_else(|| format!("no extension provides program type {program_type}"))?;
    let mut s = Vec::new();
    s.extend_from_slice(pt.name.as_bytes());
    for v in [pt.context.size, pt.context.data, pt.context.end, pt.context.meta] {
        s.extend_from_slice(&v.to_le_bytes());
    }
    s.extend_from_slice(&pt.guid.to_bytes());
    s.extend_from_slice(&pt.bpf_prog_type.to_le_bytes());
    s.push(pt.is_privileged as u8);
    let mut ids: Vec<u32> = helper_ids.iter().copied().filter(|i| *i != 0).collect();
    ids.sort_unstable();
    s.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        let h = WINDOWS
            .helper(pt, id)
            .ok_or_else(|| format!("helper {id} is not provided for program type `{}`", pt.name))?;
        s.extend_from_slice(&id.to_le_bytes());
        s.extend_from_slice(h.name.as_bytes());
        s.extend_from_slice(&(h.ret as u32).to_le_bytes());
        for a in h.args {
            s.extend_from_slice(&(a as u32).to_le_bytes());
        }
        if h.reallocate_packet {
            s.push(1);
        }
    }
    // Step 8: the used BTF-resolved functions, in table order, with the provider's prototype.
    let used: Vec<&(String, Guid)> = btf_functions.iter().filter(|(n, _)| !n.is_empty()).collect();
    if !used.is_empty() {
        s.extend_from_slice(&(used.len() as u64).to_le_bytes());
        for (name, guid) in used {
            let k =
                WINDOWS.kfunc(*guid, name).ok_or_else(|| format!("no provider exports kfunc `{name}` of {guid}"))?;
            s.extend_from_slice(&guid.to_bytes());
            s.extend_from_slice(name.as_bytes());
            s.extend_from_slice(&(k.proto.ret as u32).to_le_bytes());
            for a in k.proto.args {
                s.extend_from_slice(&(a as u32).to_le_bytes());
            }
            s.extend_from_slice(&0u32.to_le_bytes());
        }
    }
    Ok(Sha256::digest(&s).to_vec())
}

/// `_ebpf_native_load_programs` (contract §3.3 step 2).
fn load_programs(module: &mut LoadedModule) -> Result<(), EmulatorError> {
    let version = module.metadata.version;
    // `_ebpf_native_get_map_data_element_size`: SIZE_INCLUDING(array_data) from 1.4.0, else SIZE_INCLUDING(address).
    let stride =
        if version >= MAP_DATA_V2 { std::mem::size_of::<MapData>() } else { std::mem::offset_of!(MapData, array_data) };
    for info in module.metadata.programs.clone() {
        let err = |m: String| EmulatorError::Program { program: info.program_name.clone(), message: m };
        // Helpers: resolve every non-zero id; sentinels keep their slot.
        let mut helper_data = vec![HelperFunctionData::default(); info.helper_ids.len()];
        for (slot, &id) in info.helper_ids.iter().enumerate() {
            if id == 0 {
                continue;
            }
            let pt = WINDOWS
                .program_types
                .iter()
                .find(|t| t.guid == info.program_type)
                .ok_or_else(|| err(format!("no extension provides program type {}", info.program_type)))?;
            if WINDOWS.helper(pt, id).is_none() {
                return Err(err(format!("helper {id} has no prototype for program type `{}`", pt.name)));
            }
            let address = helpers::host_helper(pt.name, id)
                .ok_or_else(|| err(format!("the emulator does not implement helper {id} for `{}`", pt.name)))?;
            let address = module.machine.bind(address)?;
            helper_data[slot] =
                HelperFunctionData { address: address as u64, tail_call: id == 5, ..Default::default() };
        }
        // The program-info hash (§3.2): a supplied hash must match what the runtime computes.
        // BTF-resolved functions: the runtime binds each used slot to the provider registered for its module
        // GUID and matches the name (`strcmp`); an unknown one fails the load.
        let mut btf_data = vec![BtfResolvedFunctionData::default(); info.btf_functions.len()];
        for (slot, (name, guid)) in info.btf_functions.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let address = helpers::host_kfunc(*guid, name)
                .ok_or_else(|| err(format!("no provider module {guid} exports BTF-resolved function `{name}`")))?;
            // Reached through the machine as helpers are (an ARM64 image calls a trap address bound to it).
            let address = module.machine.bind(address)?;
            btf_data[slot] = BtfResolvedFunctionData { address: address as u64, ..Default::default() };
        }
        let computed =
            runtime_program_info_hash(&info.program_type, &info.helper_ids, &info.btf_functions).map_err(err)?;
        if let Some(h) = &info.program_info_hash {
            if info.hash_type.as_deref().unwrap_or("SHA256") != "SHA256" {
                return Err(err(format!("hash type {:?} is not SHA256", info.hash_type)));
            }
            if *h != computed {
                return Err(err(
                    "program-info hash mismatch: the module was built against a different program type / helper ABI"
                        .into(),
                ));
            }
        }
        // Map data over all maps; only referenced indices are filled.
        let mut map_data = vec![0u64; (stride * module.maps.len()).div_ceil(8).max(1)];
        for &m in &info.referenced_maps {
            let map = &module.maps[m as usize];
            let base = m as usize * stride;
            let word = |offset: usize| (base + offset) / 8;
            map_data[word(std::mem::offset_of!(MapData, address))] = Rc::as_ptr(map) as u64;
            if stride == std::mem::size_of::<MapData>() && map.definition.map_type == maps::MAP_ARRAY {
                map_data[word(std::mem::offset_of!(MapData, array_data))] = map.array_data() as u64;
            }
        }
        // Global sections: map by name, value address, initial data copied in.
        let mut global_data = Vec::new();
        for (name, initial) in &module.metadata.global_sections {
            let map = module
                .maps
                .iter()
                .find(|m| m.name == *name)
                .ok_or_else(|| err(format!("global section map `{name}` does not exist")))?;
            if map.definition.map_type != maps::MAP_ARRAY || map.definition.value_size as usize != initial.len() {
                return Err(err(format!("global section `{name}` does not match its map's value size")));
            }
            let value = map.array_data();
            // SAFETY: the array map's single value has `value_size` bytes.
            unsafe { std::ptr::copy_nonoverlapping(initial.as_ptr(), value, initial.len()) };
            global_data.push(GlobalVariableSectionData { address_of_map_value: value as u64, ..Default::default() });
        }
        let runtime_context = Box::new(ProgramRuntimeContext {
            header: Default::default(),
            helper_data: if helper_data.is_empty() { std::ptr::null() } else { helper_data.as_ptr() },
            map_data: if module.maps.is_empty() { std::ptr::null() } else { map_data.as_ptr() as *const u8 },
            global_variable_section_data: if global_data.is_empty() { std::ptr::null() } else { global_data.as_ptr() },
            btf_resolved_function_data: if btf_data.is_empty() { std::ptr::null() } else { btf_data.as_ptr() },
        });
        module.programs.push(LoadedProgram {
            info,
            runtime_context,
            _helper_data: helper_data,
            _btf_data: btf_data,
            _map_data: map_data,
            _global_data: global_data,
        });
    }
    Ok(())
}

/// `_ebpf_native_set_initial_map_values` (contract §3.3 step 3).
fn apply_initial_values(module: &LoadedModule) -> Result<(), EmulatorError> {
    for (name, values) in &module.metadata.initial_values {
        let map =
            module.map(name).ok_or_else(|| EmulatorError::Maps(format!("initial values for unknown map `{name}`")))?;
        // A map reused from a pin keeps its contents (contract §3.3 step 3).
        if module.reused_pins.contains(name) {
            continue;
        }
        for (j, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let result = match map.definition.map_type {
                maps::MAP_PROG_ARRAY => {
                    let index = module
                        .programs
                        .iter()
                        .position(|p| p.info.program_name == *v)
                        .ok_or_else(|| EmulatorError::Maps(format!("`{name}`[{j}]: no program `{v}`")))?;
                    map.set_program(j as u32, index)
                }
                maps::MAP_HASH_OF_MAPS | maps::MAP_ARRAY_OF_MAPS => {
                    let inner =
                        module.map(v).ok_or_else(|| EmulatorError::Maps(format!("`{name}`[{j}]: no map `{v}`")))?;
                    map.set_inner_map(j as u32, Rc::as_ptr(&inner) as usize)
                }
                t => Err(format!("map type {t} cannot hold initial values")),
            };
            result.map_err(EmulatorError::Maps)?;
        }
    }
    Ok(())
}

impl LoadedModule {
    /// The map named `name`.
    pub fn map(&self, name: &str) -> Option<Rc<EmulatedMap>> {
        self.maps.iter().find(|m| m.name == name).cloned()
    }

    /// Index of the program named `name`.
    pub fn program_index(&self, name: &str) -> Option<usize> {
        self.programs.iter().position(|p| p.info.program_name == name)
    }

    /// Calls `ClientAttachProvider` again: the driver must refuse a second provider.
    pub fn attach_again(&self) -> Result<i32, EmulatorError> {
        let registration = kernel::with_kernel(|k| k.client).expect("registered during load");
        let attach: usize =
            read(&self.image, registration.characteristics + 8, "ClientAttachProvider").expect("validated during load");
        let provider_registration = [0u8; 40];
        // SAFETY: validated during load to be the driver's attach function.
        unsafe {
            self.machine
                .call(attach, &[0xB1_4D1E, registration.client_context as u64, provider_registration.as_ptr() as u64])
        }
        .map(ntstatus)
        .map_err(EmulatorError::Nmr)
    }

    /// Invokes program `name` on `context` (the bytes of its context structure; updated in place) and returns
    /// the 32-bit result, following tail calls (§3.4). Also returns the execution trace.
    pub fn invoke(&self, name: &str, context: &mut [u8]) -> Result<(u32, ExecutionState), EmulatorError> {
        let mut index = self
            .program_index(name)
            .ok_or_else(|| EmulatorError::Program { program: name.into(), message: "no such program".into() })?;
        // 64-byte context header, then the context (8-byte aligned).
        let mut buffer = vec![0u64; 8 + context.len().div_ceil(8)];
        let mut state = ExecutionState { module: self, next_program: None, tail_calls: 0, trace: Vec::new() };
        buffer[0] = &mut state as *mut ExecutionState as u64;
        let ctx = unsafe { (buffer.as_mut_ptr() as *mut u8).add(64) };
        // SAFETY: `ctx` has room for `context.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(context.as_ptr(), ctx, context.len()) };
        let result = loop {
            let program = &self.programs[index];
            // SAFETY: validated to be the program's code; the runtime context lives as long as the module.
            let runtime_context = &*program.runtime_context as *const ProgramRuntimeContext as u64;
            let r = unsafe { self.machine.call(program.info.function, &[ctx as u64, runtime_context]) }
                .map_err(|message| EmulatorError::Program { program: program.info.program_name.clone(), message })?
                as u32;
            let state = unsafe { &mut *(buffer[0] as *mut ExecutionState) };
            match state.next_program.take() {
                Some(next) if state.tail_calls <= MAX_TAIL_CALL_CNT => index = next,
                _ => break r,
            }
        };
        unsafe { std::ptr::copy_nonoverlapping(ctx, context.as_mut_ptr(), context.len()) };
        drop(buffer);
        Ok((result, state))
    }

    /// Runs an XDP program on `packet` (an `xdp_md_t` over the buffer); returns the action and the packet as
    /// the program left it.
    pub fn invoke_xdp(&self, name: &str, packet: &[u8], ingress_ifindex: u32) -> Result<(u32, Vec<u8>), EmulatorError> {
        let mut data = packet.to_vec();
        let mut ctx = [0u8; 32];
        let start = data.as_mut_ptr() as u64;
        ctx[0..8].copy_from_slice(&start.to_le_bytes());
        ctx[8..16].copy_from_slice(&(start + data.len() as u64).to_le_bytes());
        ctx[24..28].copy_from_slice(&ingress_ifindex.to_le_bytes());
        let (r, _) = self.invoke(name, &mut ctx)?;
        Ok((r, data))
    }

    /// Calls `DriverUnload` and checks the NMR deregistration (wait when pending, contract §1.3).
    pub fn unload(mut self, emulator: &mut Emulator) -> Result<(), EmulatorError> {
        self.unloaded = true;
        let unload = self.driver_object[DRIVER_UNLOAD_SLOT] as usize;
        // SAFETY: validated during load to be code in the image.
        unsafe { self.machine.call(unload, &[self.driver_object.as_mut_ptr() as u64]) }
            .map_err(EmulatorError::Unload)?;
        let (deregistered, waits, pending) =
            kernel::with_kernel(|k| (k.deregister_calls, k.wait_calls, k.deregister_pending));
        if deregistered != 1 {
            return Err(EmulatorError::Unload(format!("NmrDeregisterClient called {deregistered} times")));
        }
        if pending && waits != 1 {
            return Err(EmulatorError::Unload("deregistration was pending but the driver did not wait".into()));
        }
        // Maps pinned by this module stay pinned (as in the kernel) until unpinned.
        let _ = emulator;
        Ok(())
    }
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        if !self.unloaded {
            let unload = self.driver_object[DRIVER_UNLOAD_SLOT] as usize;
            if self.image.section_of(unload).is_some() {
                // SAFETY: validated during load.
                let _ = unsafe { self.machine.call(unload, &[self.driver_object.as_mut_ptr() as u64]) };
            }
        }
    }
}
