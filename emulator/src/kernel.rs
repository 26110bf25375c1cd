//! Mock kernel and NMR exports the driver imports (`ntoskrnl.exe`, `NETIO.SYS`), with the Windows x64 ABI (an
//! ARM64 driver reaches them through [`crate::machine`]); calls back into the driver go through
//! [`crate::machine::call_back`].
//!
//! The functions behave as the WDK documents them for the calls the runtime shim makes; the state they act on
//! (a registry, the NMR client registration, the captured client dispatch table) is per thread, so tests running
//! in parallel each own an independent kernel.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;

pub const STATUS_SUCCESS: i32 = 0;
pub const STATUS_PENDING: i32 = 0x103;
pub const STATUS_INVALID_PARAMETER: i32 = 0xC000_000Du32 as i32;
pub const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034u32 as i32;

const RTL_QUERY_REGISTRY_SUBKEY: u32 = 0x1;
const RTL_QUERY_REGISTRY_REQUIRED: u32 = 0x4;

/// An NMR client registration, as `NmrRegisterClient` received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRegistration {
    /// Address of the driver's `NPI_CLIENT_CHARACTERISTICS`.
    pub characteristics: usize,
    pub client_context: usize,
    pub handle: u64,
}

/// The mock kernel's state.
#[derive(Debug, Default)]
pub struct KernelState {
    /// Key path (lower case, `\`-separated) → value name → `(type, data)`.
    pub registry: BTreeMap<String, BTreeMap<String, (u32, Vec<u8>)>>,
    pub client: Option<ClientRegistration>,
    /// The binding handle the provider passed to `ClientAttachProvider`.
    pub binding_handle: u64,
    /// The client dispatch handed to `NmrClientAttachProvider` (the metadata table).
    pub client_dispatch: Option<usize>,
    /// Whether `NmrDeregisterClient` answers `STATUS_PENDING` (so the driver must wait).
    pub deregister_pending: bool,
    pub deregister_calls: u32,
    /// What `ClientDetachProvider` returned when deregistration detached the client.
    pub detach_status: Option<i32>,
    pub wait_calls: u32,
    /// Every import call, in order, for assertions.
    pub calls: Vec<String>,
}

thread_local! {
    static NEXT_HANDLE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static KERNEL: RefCell<KernelState> = RefCell::new(KernelState::default());
}

/// Runs `f` on this thread's kernel state.
pub fn with_kernel<R>(f: impl FnOnce(&mut KernelState) -> R) -> R {
    KERNEL.with(|k| f(&mut k.borrow_mut()))
}

/// Resets this thread's kernel state.
pub fn reset_kernel() {
    with_kernel(|k| *k = KernelState { deregister_pending: true, ..KernelState::default() });
}

fn log(call: String) {
    with_kernel(|k| k.calls.push(call));
}

/// Reads a NUL-terminated UTF-16 string.
///
/// # Safety
/// `p` must point to a NUL-terminated UTF-16 string.
pub unsafe fn read_wide(p: *const u16) -> String {
    let mut units = Vec::new();
    let mut i = 0;
    while *p.add(i) != 0 && i < 32768 {
        units.push(*p.add(i));
        i += 1;
    }
    String::from_utf16_lossy(&units)
}

/// `RtlQueryRegistryValues` for `RTL_REGISTRY_ABSOLUTE` tables with `SUBKEY` and query-routine entries.
unsafe extern "win64" fn rtl_query_registry_values(
    relative_to: u32,
    path: *const u16,
    table: *const u8,
    context: *mut c_void,
    _environment: *mut c_void,
) -> i32 {
    if relative_to != 0 || path.is_null() || table.is_null() {
        log(format!("RtlQueryRegistryValues(relative_to={relative_to}) refused"));
        return STATUS_INVALID_PARAMETER;
    }
    let mut key = read_wide(path).to_ascii_lowercase();
    log(format!("RtlQueryRegistryValues({key})"));
    for i in 0.. {
        let e = table.add(56 * i);
        let routine = (e as *const usize).read_unaligned();
        let flags = (e.add(8) as *const u32).read_unaligned();
        let name_ptr = (e.add(16) as *const *const u16).read_unaligned();
        let entry_context = (e.add(24) as *const *mut c_void).read_unaligned();
        if routine == 0 && name_ptr.is_null() {
            break;
        }
        let name = if name_ptr.is_null() { String::new() } else { read_wide(name_ptr) };
        if flags & RTL_QUERY_REGISTRY_SUBKEY != 0 {
            key = format!("{key}\\{}", name.to_ascii_lowercase());
            if !with_kernel(|k| k.registry.contains_key(&key)) {
                return STATUS_OBJECT_NAME_NOT_FOUND;
            }
            if routine == 0 {
                continue;
            }
        }
        if routine == 0 {
            continue;
        }
        let value = with_kernel(|k| k.registry.get(&key).and_then(|v| v.get(&name.to_ascii_lowercase())).cloned());
        let Some((ty, data)) = value else {
            if flags & RTL_QUERY_REGISTRY_REQUIRED != 0 {
                return STATUS_OBJECT_NAME_NOT_FOUND;
            }
            continue;
        };
        // QueryRoutine(ValueName, ValueType, ValueData, ValueLength, Context, EntryContext) -> NTSTATUS.
        let args =
            [name_ptr as u64, ty as u64, data.as_ptr() as u64, data.len() as u64, context as u64, entry_context as u64];
        let status = match crate::machine::call_back(routine, &args) {
            Ok(value) => value as u32 as i32,
            Err(e) => {
                log(format!("QueryRoutine failed: {e}"));
                return STATUS_INVALID_PARAMETER;
            }
        };
        if status < 0 {
            return status;
        }
    }
    STATUS_SUCCESS
}

unsafe extern "win64" fn nmr_register_client(
    characteristics: *const u8,
    client_context: *mut c_void,
    handle: *mut u64,
) -> i32 {
    log("NmrRegisterClient".into());
    if characteristics.is_null() || handle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let registration = ClientRegistration {
        characteristics: characteristics as *const () as usize,
        client_context: client_context as *const () as usize,
        // Unique per registration on this thread, so a stale module's DriverUnload cannot act on a newer
        // module's registration.
        handle: NEXT_HANDLE.with(|h| {
            h.set(h.get() + 1);
            0x4e4d_5243_0000_0000 | h.get()
        }),
    };
    *handle = registration.handle;
    with_kernel(|k| k.client = Some(registration));
    STATUS_SUCCESS
}

unsafe extern "win64" fn nmr_client_attach_provider(
    binding: u64,
    _client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut usize,
    provider_dispatch: *mut usize,
) -> i32 {
    log("NmrClientAttachProvider".into());
    let expected = with_kernel(|k| k.binding_handle);
    if binding != expected || provider_binding_context.is_null() || provider_dispatch.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // EbpfCore returns no provider dispatch (contract §1.3).
    *provider_binding_context = 0x5052_4f56; // "PROV"
    *provider_dispatch = 0;
    with_kernel(|k| k.client_dispatch = Some(client_dispatch as usize));
    STATUS_SUCCESS
}

/// Deregistration detaches the client from its provider first (NMR calls `ClientDetachProvider`).
unsafe extern "win64" fn nmr_deregister_client(handle: u64) -> i32 {
    log("NmrDeregisterClient".into());
    let Some(client) = with_kernel(|k| k.client.filter(|c| c.handle == handle)) else {
        return STATUS_INVALID_PARAMETER;
    };
    if with_kernel(|k| k.client_dispatch.is_some()) {
        let detach = *((client.characteristics + 16) as *const usize);
        let status = match crate::machine::call_back(detach, &[client.client_context as u64]) {
            Ok(value) => value as u32 as i32,
            Err(e) => {
                log(format!("ClientDetachProvider failed: {e}"));
                STATUS_INVALID_PARAMETER
            }
        };
        with_kernel(|k| {
            k.detach_status = Some(status);
            k.client_dispatch = None;
        });
    }
    with_kernel(|k| {
        k.deregister_calls += 1;
        if k.deregister_pending {
            STATUS_PENDING
        } else {
            STATUS_SUCCESS
        }
    })
}

unsafe extern "win64" fn nmr_wait_for_client_deregister_complete(handle: u64) -> i32 {
    log("NmrWaitForClientDeregisterComplete".into());
    with_kernel(|k| {
        if k.client.map(|c| c.handle) != Some(handle) {
            return STATUS_INVALID_PARAMETER;
        }
        k.wait_calls += 1;
        k.client = None;
        STATUS_SUCCESS
    })
}

unsafe extern "win64" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    std::ptr::copy_nonoverlapping(src, dst, n);
    dst
}

/// The host address of `dll!name`, for the import resolver.
pub fn kernel_export(dll: &str, name: &str) -> Option<usize> {
    let dll = dll.to_ascii_lowercase();
    let f: usize = match (dll.as_str(), name) {
        ("ntoskrnl.exe", "RtlQueryRegistryValues") => rtl_query_registry_values as *const () as usize,
        ("ntoskrnl.exe", "memcpy") => memcpy as *const () as usize,
        ("netio.sys", "NmrRegisterClient") => nmr_register_client as *const () as usize,
        ("netio.sys", "NmrClientAttachProvider") => nmr_client_attach_provider as *const () as usize,
        ("netio.sys", "NmrDeregisterClient") => nmr_deregister_client as *const () as usize,
        ("netio.sys", "NmrWaitForClientDeregisterComplete") => {
            nmr_wait_for_client_deregister_complete as *const () as usize
        }
        _ => return None,
    };
    Some(f)
}
