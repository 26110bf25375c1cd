//! Runs the exact ARM64 machine code bpf2sys ships, inside this Linux x86-64 process, in the Unicorn instruction
//! emulator (QEMU's AArch64 translator as a library).
//!
//! In: ARM64 code — [`CompiledFunction`]s for [`Target::Arm64`](bpf2sys::compiled::Target::Arm64) loaded by
//! [`Arm64Code::load`] with their relocations applied, or a driver image mapped by the emulated loader — and host
//! functions (helpers, mock kernel exports) to bind to. Out: the results of calls made with the Windows ARM64
//! calling convention (x0..x7 in, x0 out, x30 the return address), or an [`Arm64Error`] naming the fault.
//!
//! The guest shares this process's address space. A guest access to an address nothing is mapped at maps the host
//! page at the same address with the host's read/write permissions (never executable), so pointers pass between
//! host and guest unchanged: the program context, the runtime context, map values a helper returns, a key on the
//! guest stack that a host helper reads. Only code loaded with [`Arm64Machine::map_code`] is executable.
//!
//! A host function is bound to a trap address ([`Arm64Machine::bind`]); when the guest branches there, the
//! emulator calls it with x0..x7 and returns to x30 with its result in x0. A host function may call back into
//! guest code ([`call`]), as the kernel calls a driver's callbacks.
//!
//! Every call checks the Windows ARM64 convention (Microsoft, "Overview of ARM64 ABI conventions", integer and
//! floating-point registers): x19..x28, x29 (fp), d8..d15 and sp come back as the caller had them, and x18 (the
//! platform register, the KPCR in kernel mode) is never changed. The emulated core is a Cortex-A72 (ARMv8.0-A
//! without the LSE atomics), the baseline Windows on ARM64 runs on: an instruction from a later architecture
//! version is an undefined-instruction fault here, as it would be on such a machine.

pub mod program;

use std::ffi::c_void;
use std::rc::Rc;

use bpf2sys::compiled::{CompiledFunction, RelocKind, RelocTarget};
use unicorn_engine::unicorn_const::{uc_error, Arch, HookType, MemType, Mode, Prot};
use unicorn_engine::{Arm64CpuModel, RegisterARM64, Unicorn};

pub use program::{run_conformance_arm64, Arm64Engine, Arm64Program};

/// The emulated CPU with the machine's state (hooks see it with a shorter lifetime than the machine's).
pub type Cpu<'a> = Unicorn<'a, MachineState>;

/// A host function callable from the guest: gets x0..x7, returns x0 (or why the call cannot be completed).
pub type HostFunction = Rc<dyn Fn(&mut Cpu<'_>, [u64; 8]) -> Result<u64, String>>;

const PAGE: usize = 4096;
/// Trap slots are 16 bytes apart; the last slot is the return address of every call the host makes.
const TRAP_SLOT: u64 = 16;
const TRAP_REGION: usize = 64 * 1024;
const STACK_SIZE: usize = 1 << 20;
/// Unmapped pages below the stack: a stack overflow faults instead of running into other memory.
const STACK_GUARD: usize = 64 * 1024;
/// A guest call that runs this long is reported as a hang (microseconds).
const CALL_TIMEOUT_US: u64 = 30 * 1_000_000;

/// Why ARM64 code could not be loaded or a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Arm64Error {
    #[error("lowering failed: {0}")]
    Lower(#[from] bpf2sys::lower::LowerError),
    #[error("relocation at {function}+{offset:#x} against {target:?} cannot be resolved")]
    UnresolvedTarget { function: String, offset: u32, target: RelocTarget },
    #[error("relocation at {function}+{offset:#x}: target out of range for {kind:?}")]
    OutOfRange { function: String, offset: u32, kind: RelocKind },
    #[error("relocation kind {kind:?} in {function} is not an ARM64 relocation")]
    WrongArchitecture { function: String, kind: RelocKind },
    #[error("mmap/mprotect failed: {0}")]
    Memory(std::io::Error),
    #[error("the program has no functions")]
    Empty,
    #[error("emulator: {0}")]
    Emulator(String),
    #[error("guest fault at pc {pc:#x}: {what}")]
    Fault { pc: u64, what: String },
    #[error("Windows ARM64 calling convention broken by the call to {function:#x}: {what}")]
    Convention { function: u64, what: String },
}

fn emulator_error(what: &str, e: uc_error) -> Arm64Error {
    Arm64Error::Emulator(format!("{what}: {e:?}"))
}

/// The emulator's state: host functions by trap slot, and the fault that stopped the current call.
pub struct MachineState {
    traps: u64,
    host_functions: Vec<HostFunction>,
    fault: Option<String>,
    stack_top: u64,
    depth: u32,
}

impl MachineState {
    fn return_trap(&self) -> u64 {
        self.traps + TRAP_REGION as u64 - TRAP_SLOT
    }
}

/// Host memory reserved with `mmap` and released on drop.
struct HostMapping {
    base: *mut u8,
    len: usize,
}

impl HostMapping {
    fn new(len: usize, prot: i32) -> Result<HostMapping, Arm64Error> {
        let len = len.max(1).div_ceil(PAGE) * PAGE;
        // SAFETY: a fresh anonymous private mapping.
        let base =
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(Arm64Error::Memory(std::io::Error::last_os_error()));
        }
        Ok(HostMapping { base: base as *mut u8, len })
    }

    fn protect(&self, offset: usize, len: usize, prot: i32) -> Result<(), Arm64Error> {
        // SAFETY: a page-aligned range inside this mapping.
        if unsafe { libc::mprotect(self.base.add(offset) as *mut c_void, len, prot) } != 0 {
            return Err(Arm64Error::Memory(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn address(&self) -> u64 {
        self.base as u64
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in `new`; the guest that could see it is dropped first.
        unsafe { libc::munmap(self.base as *mut c_void, self.len) };
    }
}

/// The host's read/write permissions for the page at `address`, from `/proc/self/maps`; `None` if nothing
/// readable is mapped there.
fn host_page_protection(address: u64) -> Option<Prot> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next()?, fields.next()?);
        let (start, end) = range.split_once('-')?;
        let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
        if (start..end).contains(&address) {
            let perms = perms.as_bytes();
            return match (perms.first(), perms.get(1)) {
                (Some(b'r'), Some(b'w')) => Some(Prot::READ | Prot::WRITE),
                (Some(b'r'), _) => Some(Prot::READ),
                _ => None,
            };
        }
    }
    None
}

/// An emulated ARM64 core sharing this process's memory, with a stack and a trap region for host functions.
pub struct Arm64Machine {
    // Dropped before the host memory it maps.
    cpu: Cpu<'static>,
    _stack: HostMapping,
    _traps: HostMapping,
    _code: Vec<HostMapping>,
}

impl Arm64Machine {
    pub fn new() -> Result<Arm64Machine, Arm64Error> {
        // The trap region is reserved in the host too, so no host object can ever share its addresses.
        let traps = HostMapping::new(TRAP_REGION, libc::PROT_NONE)?;
        let stack = HostMapping::new(STACK_GUARD + STACK_SIZE, libc::PROT_NONE)?;
        stack.protect(STACK_GUARD, STACK_SIZE, libc::PROT_READ | libc::PROT_WRITE)?;
        let state = MachineState {
            traps: traps.address(),
            host_functions: Vec::new(),
            fault: None,
            stack_top: stack.address() + stack.len as u64,
            depth: 0,
        };
        let mut cpu = Unicorn::new_with_data(Arch::ARM64, Mode::LITTLE_ENDIAN, state)
            .map_err(|e| emulator_error("creating the AArch64 emulator", e))?;
        cpu.ctl_set_cpu_model(Arm64CpuModel::A72 as i32).map_err(|e| emulator_error("selecting Cortex-A72", e))?;
        // SAFETY: the stack mapping outlives `cpu` (field order).
        unsafe {
            let base = stack.address() + STACK_GUARD as u64;
            cpu.mem_map_ptr(base, STACK_SIZE as u64, Prot::READ | Prot::WRITE, base as *mut c_void)
        }
        .map_err(|e| emulator_error("mapping the stack", e))?;
        // Trap slots hold `udf #0`: executing one (never happens: the hook redirects) would fault.
        cpu.mem_map(traps.address(), TRAP_REGION as u64, Prot::READ | Prot::EXEC)
            .map_err(|e| emulator_error("mapping the trap region", e))?;
        let (first, last) = (traps.address(), traps.address() + TRAP_REGION as u64 - 1);
        cpu.add_code_hook(first, last, trap_hook).map_err(|e| emulator_error("hooking the trap region", e))?;
        cpu.add_mem_hook(HookType::MEM_UNMAPPED, 1, 0, map_host_page)
            .map_err(|e| emulator_error("hooking unmapped accesses", e))?;
        Ok(Arm64Machine { cpu, _stack: stack, _traps: traps, _code: Vec::new() })
    }

    /// Binds `f` to a fresh trap address and returns that address.
    pub fn bind(&mut self, f: HostFunction) -> Result<u64, Arm64Error> {
        let state = self.cpu.get_data_mut();
        let slot = state.host_functions.len() as u64;
        if (slot + 1) * TRAP_SLOT >= TRAP_REGION as u64 {
            return Err(Arm64Error::Emulator(format!("more than {slot} host functions")));
        }
        state.host_functions.push(f);
        Ok(state.traps + slot * TRAP_SLOT)
    }

    /// Binds a `helper_function_t` implemented on the host (`(r1, r2, r3, r4, r5, context) -> r0`).
    pub fn bind_helper(&mut self, helper: crate::native::HelperFunction) -> Result<u64, Arm64Error> {
        self.bind(Rc::new(move |_, a| Ok(helper(a[0], a[1], a[2], a[3], a[4], a[5] as *mut c_void))))
    }

    /// Makes `len` bytes of host memory at `address` (page-aligned) executable guest code, read-only to the guest.
    ///
    /// # Safety
    /// The memory must stay mapped while this machine exists.
    pub unsafe fn map_code(&mut self, address: u64, len: usize) -> Result<(), Arm64Error> {
        let len = len.max(1).div_ceil(PAGE) as u64 * PAGE as u64;
        // SAFETY: guaranteed by the caller.
        unsafe { self.cpu.mem_map_ptr(address, len, Prot::READ | Prot::EXEC, address as *mut c_void) }
            .map_err(|e| emulator_error(&format!("mapping code at {address:#x}"), e))
    }

    /// Loads `functions` (relocated against each other and `external`) and maps them as guest code.
    pub fn load(
        &mut self,
        functions: &[CompiledFunction],
        external: &dyn Fn(&RelocTarget) -> Option<u64>,
    ) -> Result<Arm64Code, Arm64Error> {
        let (mapping, code) = Arm64Code::place(functions, external)?;
        // SAFETY: the mapping is kept in `self._code` for the machine's lifetime.
        unsafe { self.map_code(mapping.address(), mapping.len)? };
        self._code.push(mapping);
        Ok(code)
    }

    /// Calls guest code at `function` with `args` in x0.. and returns x0.
    pub fn call(&mut self, function: u64, args: &[u64]) -> Result<u64, Arm64Error> {
        call(&mut self.cpu, function, args)
    }

    pub fn cpu(&mut self) -> &mut Cpu<'static> {
        &mut self.cpu
    }
}

/// Runs the host function bound to the trap slot the guest branched to, then returns to x30.
fn trap_hook(cpu: &mut Cpu<'_>, address: u64, _size: u32) {
    let state = cpu.get_data();
    if address == state.return_trap() {
        return;
    }
    let slot = ((address - state.traps) / TRAP_SLOT) as usize;
    let function = match state.host_functions.get(slot) {
        Some(f) if (address - state.traps).is_multiple_of(TRAP_SLOT) => f.clone(),
        _ => return stop(cpu, format!("branch to {address:#x}, which is no bound host function")),
    };
    let mut args = [0u64; 8];
    for (n, arg) in args.iter_mut().enumerate() {
        *arg = read(cpu, x(n));
    }
    match function(cpu, args) {
        Ok(value) => {
            let lr = read(cpu, RegisterARM64::X30);
            let ok = cpu.reg_write(RegisterARM64::X0, value).and_then(|_| cpu.set_pc(lr));
            if let Err(e) = ok {
                stop(cpu, format!("returning from host function {slot}: {e:?}"));
            }
        }
        Err(why) => stop(cpu, why),
    }
}

fn stop(cpu: &mut Cpu<'_>, why: String) {
    cpu.get_data_mut().fault.get_or_insert(why);
    let _ = cpu.emu_stop();
}

/// Maps the host page under an unmapped guest data access, with the host's permissions.
fn map_host_page(cpu: &mut Cpu<'_>, kind: MemType, address: u64, _size: usize, _value: i64) -> bool {
    if kind == MemType::FETCH_UNMAPPED {
        return false;
    }
    let page = address & !(PAGE as u64 - 1);
    let Some(prot) = host_page_protection(page) else { return false };
    // SAFETY: the host page is mapped (checked above) and stays so while the call runs: the host is inside the
    // emulator and only frees memory the guest no longer uses.
    unsafe { cpu.mem_map_ptr(page, PAGE as u64, prot, page as *mut c_void) }.is_ok()
}

/// The general-purpose registers X0–X30 by number (AAPCS64), for the emulator's register file.
pub(crate) const X_REGISTERS: [RegisterARM64; 31] = [
    RegisterARM64::X0,
    RegisterARM64::X1,
    RegisterARM64::X2,
    RegisterARM64::X3,
    RegisterARM64::X4,
    RegisterARM64::X5,
    RegisterARM64::X6,
    RegisterARM64::X7,
    RegisterARM64::X8,
    RegisterARM64::X9,
    RegisterARM64::X10,
    RegisterARM64::X11,
    RegisterARM64::X12,
    RegisterARM64::X13,
    RegisterARM64::X14,
    RegisterARM64::X15,
    RegisterARM64::X16,
    RegisterARM64::X17,
    RegisterARM64::X18,
    RegisterARM64::X19,
    RegisterARM64::X20,
    RegisterARM64::X21,
    RegisterARM64::X22,
    RegisterARM64::X23,
    RegisterARM64::X24,
    RegisterARM64::X25,
    RegisterARM64::X26,
    RegisterARM64::X27,
    RegisterARM64::X28,
    RegisterARM64::X29,
    RegisterARM64::X30,
];

fn x(n: usize) -> RegisterARM64 {
    X_REGISTERS[n]
}

const PRESERVED_D: [RegisterARM64; 8] = [
    RegisterARM64::D8,
    RegisterARM64::D9,
    RegisterARM64::D10,
    RegisterARM64::D11,
    RegisterARM64::D12,
    RegisterARM64::D13,
    RegisterARM64::D14,
    RegisterARM64::D15,
];

fn read(cpu: &Cpu<'_>, reg: RegisterARM64) -> u64 {
    cpu.reg_read(reg).expect("AArch64 registers are readable")
}

/// A value no correct callee leaves in a register it had to preserve, distinct per register and call depth.
fn sentinel(register: u64, depth: u32) -> u64 {
    0x5a5a_0000_0000_0000 ^ (register << 40) ^ ((depth as u64) << 32) ^ 0x1234_5678
}

/// Calls guest code at `function` with `args` (at most 8) in x0.. and returns x0. Usable from a host function
/// (a nested call): the caller's registers are saved and restored around it.
pub fn call(cpu: &mut Cpu<'_>, function: u64, args: &[u64]) -> Result<u64, Arm64Error> {
    assert!(args.len() <= 8, "at most 8 register arguments");
    let saved = cpu.context_init().map_err(|e| emulator_error("saving registers", e))?;
    let state = cpu.get_data_mut();
    let depth = state.depth;
    let (return_trap, stack_top) = (state.return_trap(), state.stack_top);
    state.depth += 1;
    let sp = if depth == 0 { stack_top } else { (read(cpu, RegisterARM64::SP) & !15) - 64 };
    let result = run(cpu, function, args, sp, depth, return_trap);
    cpu.get_data_mut().depth = depth;
    let fault = cpu.get_data_mut().fault.take();
    cpu.context_restore(&saved).map_err(|e| emulator_error("restoring registers", e))?;
    match (result, fault) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(what)) => Err(Arm64Error::Fault { pc: function, what }),
        (Ok(value), None) => Ok(value),
    }
}

fn run(
    cpu: &mut Cpu<'_>,
    function: u64,
    args: &[u64],
    sp: u64,
    depth: u32,
    return_trap: u64,
) -> Result<u64, Arm64Error> {
    let set = |cpu: &mut Cpu<'_>, reg: RegisterARM64, value: u64| {
        cpu.reg_write(reg, value).map_err(|e| emulator_error(&format!("writing {reg:?}"), e))
    };
    for n in 0..=28 {
        // Arguments in x0..; every other register holds a marker, so reading one uninitialised shows.
        set(cpu, x(n), args.get(n).copied().unwrap_or_else(|| sentinel(n as u64, depth)))?;
    }
    set(cpu, RegisterARM64::X29, sentinel(29, depth))?;
    for (k, &d) in PRESERVED_D.iter().enumerate() {
        set(cpu, d, sentinel(40 + k as u64, depth))?;
    }
    set(cpu, RegisterARM64::X30, return_trap)?;
    set(cpu, RegisterARM64::SP, sp)?;
    // Unicorn's timeout runs a watchdog thread per emulation and cannot nest: the outermost call bounds them all.
    let timeout = if depth == 0 { CALL_TIMEOUT_US } else { 0 };
    let outcome = cpu.emu_start(function, return_trap, timeout, 0);
    let pc = cpu.pc_read().unwrap_or(0);
    if let Some(what) = cpu.get_data_mut().fault.take() {
        return Err(Arm64Error::Fault { pc, what });
    }
    if let Err(e) = outcome {
        return Err(Arm64Error::Fault { pc, what: format!("{e:?}") });
    }
    if pc != return_trap {
        return Err(Arm64Error::Fault { pc, what: format!("did not return within {} s", CALL_TIMEOUT_US / 1_000_000) });
    }
    let mut broken = Vec::new();
    for n in 18..=29 {
        let value = read(cpu, x(n));
        if value != sentinel(n as u64, depth) {
            broken.push(format!("x{n} = {value:#x}"));
        }
    }
    for (k, &d) in PRESERVED_D.iter().enumerate() {
        let value = read(cpu, d);
        if value != sentinel(40 + k as u64, depth) {
            broken.push(format!("d{} = {value:#x}", 8 + k));
        }
    }
    let after = read(cpu, RegisterARM64::SP);
    if after != sp {
        broken.push(format!("sp = {after:#x}, was {sp:#x}"));
    }
    if !broken.is_empty() {
        return Err(Arm64Error::Convention { function, what: broken.join(", ") });
    }
    Ok(read(cpu, RegisterARM64::X0))
}

/// ARM64 functions placed in host memory with their relocations applied (read-only to the host).
pub struct Arm64Code {
    functions: std::collections::HashMap<String, u64>,
}

impl Arm64Code {
    fn place(
        functions: &[CompiledFunction],
        external: &dyn Fn(&RelocTarget) -> Option<u64>,
    ) -> Result<(HostMapping, Arm64Code), Arm64Error> {
        let mut offsets = Vec::with_capacity(functions.len());
        let mut size = 0usize;
        for f in functions {
            let align = f.alignment.max(4) as usize;
            size = size.div_ceil(align) * align;
            offsets.push(size);
            size += f.code.len();
        }
        let mapping = HostMapping::new(size, libc::PROT_READ | libc::PROT_WRITE)?;
        let base = mapping.address();
        let code = Arm64Code {
            functions: functions.iter().zip(&offsets).map(|(f, &o)| (f.name.clone(), base + o as u64)).collect(),
        };
        // SAFETY: the mapping is `mapping.len` writable bytes owned here.
        let bytes = unsafe { std::slice::from_raw_parts_mut(mapping.base, mapping.len) };
        for (f, &off) in functions.iter().zip(&offsets) {
            bytes[off..off + f.code.len()].copy_from_slice(&f.code);
            for reloc in &f.relocations {
                let target = match &reloc.target {
                    RelocTarget::Function(name) => code.functions.get(name).copied(),
                    other => external(other),
                }
                .ok_or_else(|| Arm64Error::UnresolvedTarget {
                    function: f.name.clone(),
                    offset: reloc.offset,
                    target: reloc.target.clone(),
                })?;
                let at = off + reloc.offset as usize;
                let place = base + at as u64;
                let value = target.wrapping_add(reloc.addend as u64);
                let out_of_range =
                    || Arm64Error::OutOfRange { function: f.name.clone(), offset: reloc.offset, kind: reloc.kind };
                patch(&mut bytes[at..], reloc.kind, value, place, out_of_range)
                    .ok_or_else(|| Arm64Error::WrongArchitecture { function: f.name.clone(), kind: reloc.kind })??;
            }
        }
        mapping.protect(0, mapping.len, libc::PROT_READ)?;
        Ok((mapping, code))
    }

    /// The address of function `name`.
    pub fn address(&self, name: &str) -> Option<u64> {
        self.functions.get(name).copied()
    }
}

/// Applies one ARM64 relocation (formulas as the driver linker's, toolchain-notes §1.4); `None` for a kind that
/// is not ARM64's.
fn patch(
    bytes: &mut [u8],
    kind: RelocKind,
    value: u64,
    place: u64,
    out_of_range: impl Fn() -> Arm64Error,
) -> Option<Result<(), Arm64Error>> {
    let word = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let insn = match kind {
        RelocKind::Arm64Call26 => {
            let delta = value.wrapping_sub(place) as i64;
            if delta % 4 != 0 || !(-(1 << 27)..(1 << 27)).contains(&delta) {
                return Some(Err(out_of_range()));
            }
            (word & !0x03ff_ffff) | (((delta >> 2) as u32) & 0x03ff_ffff)
        }
        RelocKind::Arm64AdrPrelPgHi21 => {
            let delta = ((value & !0xfff) as i64).wrapping_sub((place & !0xfff) as i64) >> 12;
            if !(-(1 << 20)..(1 << 20)).contains(&delta) {
                return Some(Err(out_of_range()));
            }
            let (immlo, immhi) = ((delta as u32) & 0x3, ((delta >> 2) as u32) & 0x7ffff);
            (word & !((0x3 << 29) | (0x7ffff << 5))) | (immlo << 29) | (immhi << 5)
        }
        RelocKind::Arm64AddAbsLo12Nc => (word & !(0xfff << 10)) | (((value as u32) & 0xfff) << 10),
        RelocKind::Abs64 => {
            bytes[..8].copy_from_slice(&value.to_le_bytes());
            return Some(Ok(()));
        }
        RelocKind::X64PcRel32 => return None,
    };
    bytes[..4].copy_from_slice(&insn.to_le_bytes());
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles A64 words.
    fn words(code: &[u32]) -> Vec<u8> {
        code.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn function(name: &str, code: &[u32]) -> CompiledFunction {
        CompiledFunction {
            name: name.into(),
            code: words(code),
            alignment: 4,
            relocations: Vec::new(),
            unwind: bpf2sys::compiled::UnwindData::Arm64 { fragments: Vec::new() },
        }
    }

    #[test]
    fn calls_guest_code_that_reads_host_memory_and_calls_the_host() {
        let mut machine = Arm64Machine::new().unwrap();
        // f(p, h): ldr x0, [x0] ; stp x29, x30, [sp, #-16]! ; blr x1 ; ldp x29, x30, [sp], #16 ; add x0, x0, #1 ; ret
        let f = function("f", &[0xf9400000, 0xa9bf7bfd, 0xd63f0020, 0xa8c17bfd, 0x91000400, 0xd65f03c0]);
        let code = machine.load(&[f], &|_| None).unwrap();
        let h = machine.bind(Rc::new(|_, a| Ok(a[0] * 10))).unwrap();
        let value = Box::new(4u64);
        let r = machine.call(code.address("f").unwrap(), &[&*value as *const u64 as u64, h]).unwrap();
        assert_eq!(r, 41);
    }

    #[test]
    fn a_host_function_can_call_back_into_the_guest() {
        let mut machine = Arm64Machine::new().unwrap();
        // outer(h): stp x29, x30, [sp, #-16]! ; blr x0 ; ldp x29, x30, [sp], #16 ; ret
        // inner(v): add x0, x0, #5 ; ret
        let outer = function("outer", &[0xa9bf7bfd, 0xd63f0000, 0xa8c17bfd, 0xd65f03c0]);
        let inner = function("inner", &[0x91001400, 0xd65f03c0]);
        let code = machine.load(&[outer, inner], &|_| None).unwrap();
        let inner = code.address("inner").unwrap();
        let h = machine.bind(Rc::new(move |cpu, _| call(cpu, inner, &[100]).map_err(|e| e.to_string()))).unwrap();
        assert_eq!(machine.call(code.address("outer").unwrap(), &[h]).unwrap(), 105);
    }

    #[test]
    fn a_clobbered_callee_saved_register_breaks_the_convention() {
        let mut machine = Arm64Machine::new().unwrap();
        // mov x19, #1 ; ret
        let code = machine.load(&[function("f", &[0xd2800033, 0xd65f03c0])], &|_| None).unwrap();
        let err = machine.call(code.address("f").unwrap(), &[]).unwrap_err();
        assert!(matches!(&err, Arm64Error::Convention { what, .. } if what.contains("x19 = 0x1")), "{err}");
        // mov x18, #0 ; ret: the platform register is never written.
        let code = machine.load(&[function("g", &[0xd2800012, 0xd65f03c0])], &|_| None).unwrap();
        let err = machine.call(code.address("g").unwrap(), &[]).unwrap_err();
        assert!(matches!(&err, Arm64Error::Convention { what, .. } if what.contains("x18")), "{err}");
    }

    #[test]
    fn faults_name_the_access_and_lse_atomics_are_undefined() {
        let mut machine = Arm64Machine::new().unwrap();
        // ldr x0, [x0] ; ret — from address 8, where nothing is mapped.
        let code = machine.load(&[function("f", &[0xf9400000, 0xd65f03c0])], &|_| None).unwrap();
        let err = machine.call(code.address("f").unwrap(), &[8]).unwrap_err();
        assert!(matches!(&err, Arm64Error::Fault { what, .. } if what.contains("READ_UNMAPPED")), "{err}");
        // casal w0, w2, [x1] (ARMv8.1 LSE) ; ret
        let code = machine.load(&[function("g", &[0x88e0fc22, 0xd65f03c0])], &|_| None).unwrap();
        let value = Box::new(0u64);
        let err = machine.call(code.address("g").unwrap(), &[0, &*value as *const u64 as u64, 1]).unwrap_err();
        assert!(matches!(err, Arm64Error::Fault { .. }), "{err}");
        // Guest code cannot execute host memory.
        let host = Box::new(0xd65f03c0u32);
        let err = machine.call(&*host as *const u32 as u64, &[]).unwrap_err();
        assert!(matches!(&err, Arm64Error::Fault { what, .. } if what.contains("FETCH")), "{err}");
    }
}
