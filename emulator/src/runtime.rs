//! The emulated runtime: [`Emulator::load`] and [`LoadedModule`] (see the crate documentation for the steps).

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::abi::{
    BtfResolvedFunctionData, GlobalVariableSectionData, HelperFunctionData, MapData, ProgramRuntimeContext,
};
use crate::platform::{Extensions, Guid};
use crate::validate::{compare_views, read, validate_metadata, MetadataSource};
use crate::{helpers, kernel, loader, machine, maps, parse_native_file};
use crate::{EmulatedMap, EmulatorError, MapDefinition, MapEntry, ModuleMetadata, ProgramInfo, UserModeView};

/// The NPI ids of contract §1.3, in memory order.
const NATIVE_NPI_ID: [u8; 16] =
    [0xc8, 0xaa, 0x47, 0xc8, 0xf2, 0xa6, 0x53, 0x4b, 0xae, 0xa3, 0xf4, 0xa9, 0x4b, 0x9a, 0x80, 0xcb];

/// `_ebpf_minimum_version` (contract §2.3).
/// `_ebpf_version_map_data_v2`.
const MAP_DATA_V2: [u32; 3] = [1, 4, 0];
/// `MAX_TAIL_CALL_CNT`: the runtime stops following tail calls after this many (contract §3.4).
pub(crate) const MAX_TAIL_CALL_CNT: u32 = 33;

/// A loaded program with its runtime context.
pub struct LoadedProgram {
    pub info: ProgramInfo,
    /// The context descriptor of the program's type.
    context_descriptor: [i32; 4],
    runtime_context: Box<ProgramRuntimeContext>,
    _helper_data: Vec<HelperFunctionData>,
    _btf_data: Vec<BtfResolvedFunctionData>,
    _map_data: Vec<u64>,
    _global_data: Vec<GlobalVariableSectionData>,
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

/// Creates the processor for images of a machine type the host cannot run directly.
pub type GuestFactory = Rc<dyn Fn() -> Result<Box<dyn machine::GuestMachine>, String>>;

/// The emulated runtime: owns pinned maps across module loads.
///
/// The mock kernel is per thread: load one module at a time per thread (unload before loading the next).
pub struct Emulator {
    extensions: Rc<dyn Extensions>,
    /// The processor for ARM64 images, if the caller provides one (this crate runs x64 images on the host only).
    arm64: Option<GuestFactory>,
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
    /// Messages from `bpf_trace_printk*` and other helper side effects a user would see in the kernel's trace.
    pub trace: Vec<String>,
    /// Values `bpf_map_lookup_and_delete_elem` handed out; they stay valid until the invocation ends.
    pub retained: Vec<Box<[u64]>>,
    /// `ebpf_context_descriptor_t {size, data, end, meta}` of the running program's type (-1 = none).
    pub context_descriptor: [i32; 4],
    /// Where the packet started when the invocation began (`bpf_xdp_adjust_head` may not move before it).
    pub packet_start: u64,
}

/// `DRIVER_OBJECT.DriverUnload`.
const DRIVER_UNLOAD_SLOT: usize = 0x68 / 8;

/// An NTSTATUS from a driver function's 64-bit result register (only the low 32 bits are defined).
fn ntstatus(value: u64) -> i32 {
    value as u32 as i32
}

impl Emulator {
    /// A runtime whose program types, helpers and BTF-resolved functions are the ones `extensions` provide.
    pub fn new(extensions: Rc<dyn Extensions>) -> Emulator {
        Emulator {
            extensions,
            arm64: None,
            pinned: BTreeMap::new(),
            next_module: 0,
            npi_module_id: NpiModuleIdValue::default(),
        }
    }

    /// Runs ARM64 images on the processors `factory` creates.
    pub fn with_arm64(mut self, factory: GuestFactory) -> Emulator {
        self.arm64 = Some(factory);
        self
    }

    /// The extensions this runtime was created with.
    pub fn extensions(&self) -> &dyn Extensions {
        &*self.extensions
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
        self.write_service_key(&service, module_id);
        let machine = machine::Machine::for_image(loader::image_machine(bytes)?, self.arm64.as_ref())?;
        let image = loader::load_image(bytes, &|dll, name| {
            kernel::kernel_export(dll, name).and_then(|f| machine.bind(f).ok())
        })?;
        for (_, va, vs, flags) in &image.sections {
            if flags & 0x2000_0000 != 0 {
                machine.map_code(image.base() + *va as usize, *vs as usize)?;
            }
        }
        let running = Running { machine: &machine, image: &image };
        let driver_object = call_driver_entry(&running, &service)?;
        let registration = check_client_registration(&running, module_id)?;
        let table = attach_as_provider(&running, &registration)?;

        let metadata = validate_metadata(&running, table)?;
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
        load_programs(&*self.extensions, &mut module)?;
        apply_initial_values(&module)?;
        Ok(module)
    }

    /// The service's registry key and its `Parameters\NpiModuleId` value as ebpfapi writes them (contract §3.1
    /// step 3), or the value this emulator was told to provide instead.
    fn write_service_key(&self, service: &str, module_id: [u8; 16]) {
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
            if let Some(reason) = maps::creation_error(&definition) {
                return Err(EmulatorError::Maps(format!("map `{}`: {reason}", e.name)));
            }
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
fn inner_template(entries: &[MapEntry], e: &MapEntry) -> Option<usize> {
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

/// Calls `DriverEntry(DRIVER_OBJECT*, UNICODE_STRING* registry_path)` and checks it succeeded and set a
/// `DriverUnload` inside the image's code. Returns the driver object.
fn call_driver_entry(running: &Running, service: &str) -> Result<Box<[u64; 48]>, EmulatorError> {
    let (machine, image) = (running.machine, running.image);
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
        Some((_, _, _, flags)) if flags & 0x2000_0000 != 0 => Ok(driver_object),
        _ => Err(EmulatorError::DriverEntry(format!("DriverUnload {unload:#x} is not code in the image"))),
    }
}

/// Checks the NMR client registration `DriverEntry` made (contract §1.3): characteristics and registration
/// sizes, the native-module NPI id, and a module id carrying the registry's `NpiModuleId`.
fn check_client_registration(
    running: &Running,
    module_id: [u8; 16],
) -> Result<kernel::ClientRegistration, EmulatorError> {
    let registration = kernel::with_kernel(|k| k.client)
        .ok_or_else(|| EmulatorError::Nmr("DriverEntry did not register an NMR client".into()))?;
    let chars = registration.characteristics;
    let length: u16 = read(running, chars.wrapping_add(2), "NPI_CLIENT_CHARACTERISTICS")?;
    let reg_size: u16 = read(running, chars.wrapping_add(34), "NPI_REGISTRATION_INSTANCE")?;
    if length != 72 || reg_size != 40 {
        return Err(EmulatorError::Nmr(format!(
            "characteristics length {length} / registration size {reg_size}, expected 72 / 40"
        )));
    }
    let npi_id: [u8; 16] = read(running, read::<usize>(running, chars.wrapping_add(40), "NpiId")?, "NpiId")?;
    if npi_id != NATIVE_NPI_ID {
        return Err(EmulatorError::Nmr(format!("NPI id {} is not the native-module NPI", Guid::from_bytes(&npi_id))));
    }
    let module_id_ptr: usize = read(running, chars.wrapping_add(48), "ModuleId")?;
    let mid_len: u16 = read(running, module_id_ptr, "NPI_MODULEID")?;
    let mid_type: u32 = read(running, module_id_ptr.wrapping_add(4), "NPI_MODULEID")?;
    let mid_guid: [u8; 16] = read(running, module_id_ptr.wrapping_add(8), "NPI_MODULEID")?;
    if mid_len != 24 || mid_type != 1 || mid_guid != module_id {
        return Err(EmulatorError::Nmr(format!(
            "module id {{Length {mid_len}, Type {mid_type}, Guid {}}} does not carry the registry's NpiModuleId {}",
            Guid::from_bytes(&mid_guid),
            Guid::from_bytes(&module_id)
        )));
    }
    Ok(registration)
}

/// Acts as EbpfCore's NMR provider: calls the driver's `ClientAttachProvider` and returns the metadata table it
/// hands over as client dispatch (contract §1.3).
fn attach_as_provider(running: &Running, registration: &kernel::ClientRegistration) -> Result<usize, EmulatorError> {
    let attach: usize = read(running, registration.characteristics.wrapping_add(8), "ClientAttachProvider")?;
    let binding = 0xB1_4D1Eu64;
    kernel::with_kernel(|k| k.binding_handle = binding);
    let mut provider_registration = [0u8; 40];
    provider_registration[2..4].copy_from_slice(&40u16.to_le_bytes());
    if running.image.section_of(attach).is_none_or(|s| s.3 & 0x2000_0000 == 0) {
        return Err(EmulatorError::Nmr("ClientAttachProvider is not code in the image".into()));
    }
    // SAFETY: a driver function with the ClientAttachProvider signature (checked above to be code in the image).
    let status = unsafe {
        running
            .machine
            .call(attach, &[binding, registration.client_context as u64, provider_registration.as_ptr() as u64])
    }
    .map(ntstatus)
    .map_err(EmulatorError::Nmr)?;
    if status != 0 {
        return Err(EmulatorError::Nmr(format!("ClientAttachProvider returned {:#010x}", status as u32)));
    }
    kernel::with_kernel(|k| k.client_dispatch)
        .ok_or_else(|| EmulatorError::Nmr("no client dispatch was attached".into()))
}

/// The program-info hash stream the runtime builds (`_ebpf_program_compute_program_information_hash`, §3.2).
pub fn runtime_program_info_hash(
    extensions: &dyn Extensions,
    program_type: &Guid,
    helper_ids: &[u32],
    btf_functions: &[(String, Guid)],
) -> Result<Vec<u8>, String> {
    use sha2::{Digest, Sha256};
    let pt = extensions
        .program_type(program_type)
        .ok_or_else(|| format!("no extension provides program type {program_type}"))?;
    let mut s = Vec::new();
    s.extend_from_slice(pt.name.as_bytes());
    for v in pt.context {
        s.extend_from_slice(&v.to_le_bytes());
    }
    s.extend_from_slice(&pt.guid.to_bytes());
    s.extend_from_slice(&pt.bpf_prog_type.to_le_bytes());
    s.push(pt.is_privileged as u8);
    let mut ids: Vec<u32> = helper_ids.iter().copied().filter(|i| *i != 0).collect();
    ids.sort_unstable();
    s.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        let h = extensions
            .helper(program_type, id)
            .ok_or_else(|| format!("helper {id} is not provided for program type `{}`", pt.name))?;
        s.extend_from_slice(&id.to_le_bytes());
        s.extend_from_slice(h.name.as_bytes());
        s.extend_from_slice(&h.ret.to_le_bytes());
        for a in h.args {
            s.extend_from_slice(&a.to_le_bytes());
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
                extensions.kfunc(guid, name).ok_or_else(|| format!("no provider exports kfunc `{name}` of {guid}"))?;
            s.extend_from_slice(&guid.to_bytes());
            s.extend_from_slice(name.as_bytes());
            s.extend_from_slice(&k.ret.to_le_bytes());
            for a in k.args {
                s.extend_from_slice(&a.to_le_bytes());
            }
            s.extend_from_slice(&0u32.to_le_bytes());
        }
    }
    Ok(Sha256::digest(&s).to_vec())
}

/// `_ebpf_native_load_programs` (contract §3.3 step 2).
fn load_programs(extensions: &dyn Extensions, module: &mut LoadedModule) -> Result<(), EmulatorError> {
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
            let pt = extensions
                .program_type(&info.program_type)
                .ok_or_else(|| err(format!("no extension provides program type {}", info.program_type)))?;
            if extensions.helper(&info.program_type, id).is_none() {
                return Err(err(format!("helper {id} has no prototype for program type `{}`", pt.name)));
            }
            let address =
                helpers::host_helper(&pt.name, id).ok_or_else(|| err(helpers::why_unimplemented(&pt.name, id)))?;
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
        let computed = runtime_program_info_hash(extensions, &info.program_type, &info.helper_ids, &info.btf_functions)
            .map_err(err)?;
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
        // A custom map associates only with its provider's program type (coverage §1:
        // `associate_program` refuses every type but the sample one), so the program fails to load.
        let program_type_name = extensions.program_type(&info.program_type).map(|pt| pt.name).unwrap_or_default();
        for &m in &info.referenced_maps {
            let map = &module.maps[m as usize];
            if map.definition.map_type == maps::MAP_SAMPLE_HASH && program_type_name != "sample" {
                return Err(err(format!(
                    "map `{}` (sample_hash_map) associates only with sample programs, not `{program_type_name}`",
                    map.name
                )));
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
        let context_descriptor = extensions.program_type(&info.program_type).map_or([-1; 4], |pt| pt.context);
        module.programs.push(LoadedProgram {
            info,
            context_descriptor,
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
        let attach: usize = read(
            &Running { machine: &self.machine, image: &self.image },
            registration.characteristics.wrapping_add(8),
            "ClientAttachProvider",
        )
        .expect("validated during load");
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
        let context_descriptor = self.programs[index].context_descriptor;
        let packet_start = match usize::try_from(context_descriptor[1]) {
            Ok(data) if data + 8 <= context.len() => u64::from_le_bytes(context[data..data + 8].try_into().expect("8")),
            _ => 0,
        };
        let mut state = ExecutionState {
            module: self,
            next_program: None,
            tail_calls: 0,
            trace: Vec::new(),
            retained: Vec::new(),
            context_descriptor,
            packet_start,
        };
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

/// A loaded image and the processor it runs on, as the address space the metadata is read from: pointers are
/// addresses in this process, and callbacks run.
struct Running<'a> {
    machine: &'a machine::Machine,
    image: &'a loader::LoadedImage,
}

impl MetadataSource for Running<'_> {
    fn read_bytes(&self, addr: usize, out: &mut [u8]) -> bool {
        if !self.image.contains(addr, out.len()) {
            return false;
        }
        // SAFETY: inside the image mapping (checked above), which is readable.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
        true
    }

    fn is_code(&self, addr: usize) -> bool {
        self.image.section_of(addr).is_some_and(|s| s.3 & object::pe::IMAGE_SCN_MEM_EXECUTE != 0)
    }

    fn array_callback(&self, f: usize) -> Result<(usize, u64), String> {
        let (mut ptr, mut count) = (usize::MAX, u64::MAX);
        // SAFETY: `f` is code in the image (the caller checked); a metadata callback `void f(T**, size_t*)`.
        unsafe { self.machine.call(f, &[&mut ptr as *mut usize as u64, &mut count as *mut u64 as u64]) }?;
        Ok((ptr, count))
    }

    fn version_callback(&self, f: usize) -> Result<[u32; 3], String> {
        let mut version = [0u32; 3];
        // SAFETY: `f` is code in the image (the caller checked); `void version(bpf2c_version_t*)`.
        unsafe { self.machine.call(f, &[version.as_mut_ptr() as u64]) }?;
        Ok(version)
    }
}
