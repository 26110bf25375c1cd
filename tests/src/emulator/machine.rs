//! The processor a driver image runs on: this host (x64 images, called directly with the Windows x64 ABI) or the
//! AArch64 emulator of [`crate::arm64`] (ARM64 images, called with the Windows ARM64 ABI).
//!
//! In: addresses of driver code and of host functions (kernel exports, helpers). Out: calls into driver code, and
//! addresses the driver can call for each host function. Host functions are written once, as `extern "win64"`
//! functions; on ARM64 each is bound to a trap address that calls it with the guest's x0..x7. A host function
//! that calls back into the driver (a registry query routine, NMR's detach) uses [`call_back`], which reaches the
//! emulated core that is running the host function.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use object::pe;

use super::EmulatorError;
use crate::arm64::{self, Arm64Machine, Cpu};

/// The processor of one loaded image.
pub enum Machine {
    X64,
    Arm64(RefCell<Arm64Machine>),
}

/// Eight-argument `extern "win64"` shape: a callee with fewer parameters ignores the rest (the caller owns the
/// argument area in the Windows x64 convention).
type Win64Fn8 = unsafe extern "win64" fn(u64, u64, u64, u64, u64, u64, u64, u64) -> u64;

thread_local! {
    /// The emulated core running the innermost host function on this thread, for [`call_back`].
    static ACTIVE_CPU: Cell<*mut Cpu<'static>> = const { Cell::new(std::ptr::null_mut()) };
}

impl Machine {
    /// The processor for an image with PE `machine` type.
    pub fn for_image(machine: u16) -> Result<Machine, EmulatorError> {
        match machine {
            pe::IMAGE_FILE_MACHINE_AMD64 => Ok(Machine::X64),
            pe::IMAGE_FILE_MACHINE_ARM64 => Arm64Machine::new()
                .map(|m| Machine::Arm64(RefCell::new(m)))
                .map_err(|e| EmulatorError::Image(format!("starting the AArch64 emulator: {e}"))),
            other => Err(EmulatorError::Image(format!("machine {other:#x}: only x64 and ARM64 images run here"))),
        }
    }

    /// The address driver code calls for the host function at `host` (an `extern "win64"` function).
    pub fn bind(&self, host: usize) -> Result<usize, EmulatorError> {
        match self {
            Machine::X64 => Ok(host),
            Machine::Arm64(m) => {
                let f: arm64::HostFunction = Rc::new(move |cpu, a| {
                    let previous = ACTIVE_CPU.replace(cpu as *mut Cpu<'_> as *mut Cpu<'static>);
                    // SAFETY: `host` is an `extern "win64"` host function taking at most eight u64-sized arguments.
                    let value = unsafe {
                        std::mem::transmute::<usize, Win64Fn8>(host)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7])
                    };
                    ACTIVE_CPU.set(previous);
                    Ok(value)
                });
                let address = m.borrow_mut().bind(f).map_err(|e| EmulatorError::Image(e.to_string()))?;
                Ok(address as usize)
            }
        }
    }

    /// Makes the image's executable section at `[address, address + len)` runnable.
    pub fn map_code(&self, address: usize, len: usize) -> Result<(), EmulatorError> {
        match self {
            Machine::X64 => Ok(()),
            // SAFETY: the image outlives the machine (LoadedModule drops the machine first).
            Machine::Arm64(m) => {
                unsafe { m.borrow_mut().map_code(address as u64, len) }.map_err(|e| EmulatorError::Image(e.to_string()))
            }
        }
    }

    /// Calls driver code at `f` with `args` (at most 8) and returns its result register.
    ///
    /// # Safety
    /// `f` must be driver code whose signature takes `args`, and every pointer in `args` must be valid for it.
    pub unsafe fn call(&self, f: usize, args: &[u64]) -> Result<u64, String> {
        match self {
            // SAFETY: guaranteed by the caller.
            Machine::X64 => Ok(unsafe { call_x64(f, args) }),
            Machine::Arm64(m) => m.borrow_mut().call(f as u64, args).map_err(|e| e.to_string()),
        }
    }
}

/// # Safety
/// As [`Machine::call`], for host x64 code.
unsafe fn call_x64(f: usize, args: &[u64]) -> u64 {
    let mut a = [0u64; 8];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: guaranteed by the caller; extra arguments are ignored by the callee.
    unsafe { std::mem::transmute::<usize, Win64Fn8>(f)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]) }
}

/// Calls driver code at `f` from inside a host function the driver called: directly on x64, on the emulated core
/// that is running the host function on ARM64.
///
/// # Safety
/// As [`Machine::call`]; only from a host function bound with [`Machine::bind`] (or called directly by x64 code).
pub unsafe fn call_back(f: usize, args: &[u64]) -> Result<u64, String> {
    let cpu = ACTIVE_CPU.get();
    if cpu.is_null() {
        // SAFETY: guaranteed by the caller.
        return Ok(unsafe { call_x64(f, args) });
    }
    // SAFETY: the pointer was set by the trap of the host function running now, whose `&mut Cpu` it is; the
    // emulator does not touch the core while the host function runs.
    let result = arm64::call(unsafe { &mut *cpu }, f as u64, args).map_err(|e| e.to_string());
    ACTIVE_CPU.set(cpu);
    result
}
