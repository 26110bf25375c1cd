//! The processor a driver image runs on: this host (x64 images, called directly with the Windows x64 ABI) or a
//! [`GuestMachine`] the emulator's user supplies (ARM64 images, called with the Windows ARM64 ABI).
//!
//! In: addresses of driver code and of host functions (kernel exports, helpers). Out: calls into driver code, and
//! addresses the driver can call for each host function. Host functions are written once, as `extern "win64"`
//! functions; a guest machine binds each to an address its code can call. A host function that calls back into
//! the driver (a registry query routine, NMR's detach) uses [`call_back`], which reaches the guest core that is
//! running the host function.
//!
//! Guest machines are a trait rather than a dependency so that this crate links no instruction emulator: the
//! test crate's AArch64 backend is built on unicorn-engine (GPL-2.0), which must not reach the CLI.

use std::cell::{Cell, RefCell};

use object::pe;

use crate::runtime::GuestFactory;
use crate::EmulatorError;

/// A processor that runs driver code this host cannot run directly.
pub trait GuestMachine {
    /// The address guest code calls to reach `host`, the address of an `extern "win64"` function taking at most
    /// eight `u64`-sized arguments. The guest passes its argument registers and takes the result register.
    fn bind(&mut self, host: usize) -> Result<usize, String>;

    /// Makes `[address, address + len)` of this process (an executable section of a mapped image) runnable.
    ///
    /// # Safety
    /// The range must stay mapped for as long as the machine lives.
    unsafe fn map_code(&mut self, address: usize, len: usize) -> Result<(), String>;

    /// Calls guest code at `f` with `args` (at most 8) and returns its result register.
    ///
    /// # Safety
    /// `f` must be guest code whose signature takes `args`, and every pointer in `args` must be valid for it.
    unsafe fn call(&mut self, f: usize, args: &[u64]) -> Result<u64, String>;

    /// The function [`call_back`] uses while this machine runs code: it calls `f` on the core that is running
    /// the current host function, or returns `None` when no host function of this machine is running.
    fn call_back_hook(&self) -> CallBackHook;
}

/// See [`GuestMachine::call_back_hook`].
pub type CallBackHook = unsafe fn(f: usize, args: &[u64]) -> Option<Result<u64, String>>;

/// The processor of one loaded image.
pub enum Machine {
    X64,
    Guest(RefCell<Box<dyn GuestMachine>>),
}

/// Eight-argument `extern "win64"` shape: a callee with fewer parameters ignores the rest (the caller owns the
/// argument area in the Windows x64 convention).
type Win64Fn8 = unsafe extern "win64" fn(u64, u64, u64, u64, u64, u64, u64, u64) -> u64;

thread_local! {
    /// The call-back hook of the guest machine running code on this thread, for [`call_back`].
    static ACTIVE_GUEST: Cell<Option<CallBackHook>> = const { Cell::new(None) };
}

impl Machine {
    /// The processor for an image with PE `machine` type; ARM64 images need `arm64`.
    pub fn for_image(machine: u16, arm64: Option<&GuestFactory>) -> Result<Machine, EmulatorError> {
        match machine {
            pe::IMAGE_FILE_MACHINE_AMD64 => Ok(Machine::X64),
            pe::IMAGE_FILE_MACHINE_ARM64 => {
                let factory = arm64.ok_or_else(|| {
                    EmulatorError::Image(
                        "an ARM64 image needs an AArch64 machine, and this emulator was created without one".into(),
                    )
                })?;
                factory()
                    .map(|m| Machine::Guest(RefCell::new(m)))
                    .map_err(|e| EmulatorError::Image(format!("starting the AArch64 machine: {e}")))
            }
            other => Err(EmulatorError::Image(format!("machine {other:#x}: only x64 and ARM64 images run here"))),
        }
    }

    /// The address driver code calls for the host function at `host` (an `extern "win64"` function).
    pub fn bind(&self, host: usize) -> Result<usize, EmulatorError> {
        match self {
            Machine::X64 => Ok(host),
            Machine::Guest(m) => m.borrow_mut().bind(host).map_err(EmulatorError::Image),
        }
    }

    /// Makes the image's executable section at `[address, address + len)` runnable.
    pub fn map_code(&self, address: usize, len: usize) -> Result<(), EmulatorError> {
        match self {
            Machine::X64 => Ok(()),
            // SAFETY: the image outlives the machine (LoadedModule drops the machine first).
            Machine::Guest(m) => unsafe { m.borrow_mut().map_code(address, len) }.map_err(EmulatorError::Image),
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
            Machine::Guest(m) => {
                let mut m = m.borrow_mut();
                let previous = ACTIVE_GUEST.replace(Some(m.call_back_hook()));
                // SAFETY: guaranteed by the caller.
                let result = unsafe { m.call(f, args) };
                ACTIVE_GUEST.set(previous);
                result
            }
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

/// Calls driver code at `f` from inside a host function the driver called: directly on x64, on the guest core
/// that is running the host function otherwise.
///
/// # Safety
/// As [`Machine::call`]; only from a host function bound with [`Machine::bind`] (or called directly by x64 code).
pub unsafe fn call_back(f: usize, args: &[u64]) -> Result<u64, String> {
    if let Some(hook) = ACTIVE_GUEST.get() {
        // SAFETY: guaranteed by the caller.
        if let Some(result) = unsafe { hook(f, args) } {
            return result;
        }
    }
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { call_x64(f, args) })
}
