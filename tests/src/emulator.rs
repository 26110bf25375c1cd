//! The emulated eBPF for Windows runtime ([`bpf2sys_emulator`]) as the tests use it: the Windows platform's
//! extensions, and ARM64 images run on the AArch64 emulator of [`crate::arm64`] through the emulator's
//! [`GuestMachine`] trait (unicorn-engine is GPL-2.0, so the backend lives here, never in the product crates).

use std::cell::Cell;
use std::rc::Rc;

use bpf2sys::platform::emulated::PlatformExtensions;
use bpf2sys::platform::windows::WINDOWS;
pub use bpf2sys_emulator::*;

use crate::arm64::{self, Arm64Machine, Cpu};

/// An emulated runtime with the Windows platform's extensions that runs x64 images on this host and ARM64 images
/// on the AArch64 emulator.
pub fn emulator() -> Emulator {
    Emulator::new(Rc::new(PlatformExtensions(&WINDOWS))).with_arm64(Rc::new(|| {
        Arm64Machine::new().map(|m| Box::new(UnicornArm64(m)) as Box<dyn GuestMachine>).map_err(|e| e.to_string())
    }))
}

/// [`runtime_program_info_hash`] with the Windows platform's extensions.
pub fn windows_program_info_hash(
    program_type: &Guid,
    helper_ids: &[u32],
    btf_functions: &[(String, Guid)],
) -> Result<Vec<u8>, String> {
    runtime_program_info_hash(&PlatformExtensions(&WINDOWS), program_type, helper_ids, btf_functions)
}

/// Eight-argument `extern "win64"` shape of every host function the emulator binds.
type Win64Fn8 = unsafe extern "win64" fn(u64, u64, u64, u64, u64, u64, u64, u64) -> u64;

thread_local! {
    /// The emulated core running the innermost host function on this thread, for call-backs into the driver.
    static ACTIVE_CPU: Cell<*mut Cpu<'static>> = const { Cell::new(std::ptr::null_mut()) };
}

/// The unicorn-engine AArch64 core as the emulator's ARM64 machine.
struct UnicornArm64(Arm64Machine);

impl GuestMachine for UnicornArm64 {
    fn bind(&mut self, host: usize) -> Result<usize, String> {
        let f: arm64::HostFunction = Rc::new(move |cpu, a| {
            let previous = ACTIVE_CPU.replace(cpu as *mut Cpu<'_> as *mut Cpu<'static>);
            // SAFETY: `host` is an `extern "win64"` host function taking at most eight u64-sized arguments.
            let value =
                unsafe { std::mem::transmute::<usize, Win64Fn8>(host)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]) };
            ACTIVE_CPU.set(previous);
            Ok(value)
        });
        self.0.bind(f).map(|address| address as usize).map_err(|e| e.to_string())
    }

    unsafe fn map_code(&mut self, address: usize, len: usize) -> Result<(), String> {
        // SAFETY: guaranteed by the caller.
        unsafe { self.0.map_code(address as u64, len) }.map_err(|e| e.to_string())
    }

    unsafe fn call(&mut self, f: usize, args: &[u64]) -> Result<u64, String> {
        self.0.call(f as u64, args).map_err(|e| e.to_string())
    }

    fn call_back_hook(&self) -> machine::CallBackHook {
        call_back_on_active_cpu
    }
}

/// Calls `f` on the core running the current host function, if one is running.
///
/// # Safety
/// As [`machine::call_back`].
unsafe fn call_back_on_active_cpu(f: usize, args: &[u64]) -> Option<Result<u64, String>> {
    let cpu = ACTIVE_CPU.get();
    if cpu.is_null() {
        return None;
    }
    // SAFETY: the pointer was set by the trap of the host function running now, whose `&mut Cpu` it is; the
    // emulator does not touch the core while the host function runs.
    let result = arm64::call(unsafe { &mut *cpu }, f as u64, args).map_err(|e| e.to_string());
    ACTIVE_CPU.set(cpu);
    Some(result)
}
