//! Runs the exact machine code bpf2sys ships, inside this Linux process.
//!
//! In: [`CompiledProgram`]s from [`bpf2sys::lower`] for [`Target::X64`](bpf2sys::compiled::Target::X64). Out: the
//! program's r0, computed by calling the generated code with the Windows x64 calling convention
//! (`extern "win64"`), against a host [`HostRuntime`] laid out exactly like the eBPF for Windows runtime's
//! `program_runtime_context_t` (contract §2.2): helper table, map data and global-variable sections.
//!
//! Code is placed in anonymous memory that is writable while relocations are applied and then made
//! read+execute (W^X): no page is ever writable and executable at once.

use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

use bpf2sys::compiled::{CompiledFunction, CompiledProgram, RelocKind, RelocTarget};
use bpf2sys::isa::{AluOp, Instruction, Operand, Reg, Width};
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};
use bpf2sys::program::{Module, Program};
use bpf2sys_runtime_shim::abi::{GlobalVariableSectionData, HelperFunctionData, MapData, ProgramRuntimeContext};

/// `helper_function_t` in the Windows x64 convention: `(r1, r2, r3, r4, r5, context) -> r0`.
pub type HelperFunction = extern "win64" fn(u64, u64, u64, u64, u64, *mut c_void) -> u64;

/// The entry shape of a compiled program: `(context, runtime_context) -> r0`.
pub type EntryFunction = unsafe extern "win64" fn(*mut c_void, *const ProgramRuntimeContext) -> u64;

/// Why native execution could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("lowering failed: {0}")]
    Lower(#[from] lower::LowerError),
    #[error("relocation at {function}+{offset:#x} against {target:?} cannot be resolved")]
    UnresolvedTarget { function: String, offset: u32, target: RelocTarget },
    #[error("relocation at {function}+{offset:#x}: target out of range for {kind:?}")]
    OutOfRange { function: String, offset: u32, kind: RelocKind },
    #[error("relocation kind {kind:?} in {function} is not an x64 relocation")]
    WrongArchitecture { function: String, kind: RelocKind },
    #[error("mmap/mprotect failed: {0}")]
    Memory(std::io::Error),
    #[error("the program has no functions")]
    Empty,
    #[error("the program calls helper {0}, which the host does not provide")]
    MissingHelper(u32),
}

/// Machine code mapped executable, with its functions' addresses.
pub struct ExecutableCode {
    base: *mut u8,
    len: usize,
    functions: HashMap<String, usize>,
}

impl ExecutableCode {
    /// Lays out `functions`, applies their relocations (functions resolve among themselves, anything else through
    /// `external`) and maps the result read+execute.
    pub fn load(
        functions: &[CompiledFunction],
        external: &dyn Fn(&RelocTarget) -> Option<u64>,
    ) -> Result<ExecutableCode, NativeError> {
        Self::load_pages(&[functions], external)
    }

    /// [`ExecutableCode::load`] for the programs of one module, laid out as a driver image lays them out: each
    /// group of functions (a program) starts a page of its own (its PE section, contract §4.1; sections are
    /// page-aligned), the pages one after another in one mapping.
    pub fn load_pages(
        groups: &[&[CompiledFunction]],
        external: &dyn Fn(&RelocTarget) -> Option<u64>,
    ) -> Result<ExecutableCode, NativeError> {
        const PAGE: usize = 4096;
        let functions: Vec<&CompiledFunction> = groups.iter().flat_map(|fs| fs.iter()).collect();
        let mut offsets = Vec::with_capacity(functions.len());
        let mut size = 0usize;
        for group in groups {
            size = size.div_ceil(PAGE) * PAGE;
            for f in group.iter() {
                let align = f.alignment.max(1) as usize;
                size = size.div_ceil(align) * align;
                offsets.push(size);
                size += f.code.len();
            }
        }
        let len = size.max(1).div_ceil(PAGE) * PAGE;
        let base = map_near_host_code(len)?;
        let code = ExecutableCode {
            base: base as *mut u8,
            len,
            functions: functions.iter().zip(&offsets).map(|(f, &o)| (f.name.clone(), o)).collect(),
        };
        // SAFETY: the mapping is `len` bytes, writable, and owned by `code`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(code.base, len) };
        bytes.fill(0xcc);
        for (f, &off) in functions.iter().zip(&offsets) {
            bytes[off..off + f.code.len()].copy_from_slice(&f.code);
        }
        for (f, &off) in functions.iter().zip(&offsets) {
            for reloc in &f.relocations {
                let target = match &reloc.target {
                    RelocTarget::Function(name) => code.functions.get(name).map(|&o| code.base as u64 + o as u64),
                    other => external(other),
                }
                .ok_or_else(|| NativeError::UnresolvedTarget {
                    function: f.name.clone(),
                    offset: reloc.offset,
                    target: reloc.target.clone(),
                })?;
                let at = off + reloc.offset as usize;
                let place = code.base as u64 + at as u64;
                let value = target.wrapping_add(reloc.addend as u64);
                match reloc.kind {
                    RelocKind::X64PcRel32 => {
                        let delta = value.wrapping_sub(place) as i64;
                        let delta = i32::try_from(delta).map_err(|_| NativeError::OutOfRange {
                            function: f.name.clone(),
                            offset: reloc.offset,
                            kind: reloc.kind,
                        })?;
                        bytes[at..at + 4].copy_from_slice(&delta.to_le_bytes());
                    }
                    RelocKind::Abs64 => bytes[at..at + 8].copy_from_slice(&value.to_le_bytes()),
                    kind => return Err(NativeError::WrongArchitecture { function: f.name.clone(), kind }),
                }
            }
        }
        // SAFETY: same mapping; from now on read+execute only.
        if unsafe { libc::mprotect(base, len, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            return Err(NativeError::Memory(std::io::Error::last_os_error()));
        }
        Ok(code)
    }

    /// The address of function `name`.
    pub fn address(&self, name: &str) -> Option<*const u8> {
        // SAFETY: offsets lie inside the mapping.
        self.functions.get(name).map(|&o| unsafe { self.base.add(o) } as *const u8)
    }
}

/// Maps `len` writable bytes within a few hundred MiB of this binary's code, falling back to anywhere.
///
/// In the kernel a driver and EbpfCore (which implements the helpers) are both loaded in the system image area,
/// and JITs such as rbpf allocate their code on the heap next to the host binary: helper calls are indirect calls
/// to a nearby address. A mapping wherever `mmap` puts it lands more than 4 GiB away from the host's helpers, and
/// on some cores (AMD Zen) indirect calls and returns across that distance are predicted far worse; measured on
/// the benchmark machine, that alone made `maplookup` 20% slower. Running the code where it would run keeps the
/// measurements and the tests honest.
fn map_near_host_code(len: usize) -> Result<*mut c_void, NativeError> {
    const STEP: usize = 64 << 20;
    let anchor = (map_near_host_code as *const () as usize) & !(STEP - 1);
    let map = |hint: usize, flags: i32| {
        // SAFETY: an anonymous private mapping; MAP_FIXED_NOREPLACE never replaces an existing mapping.
        unsafe {
            libc::mmap(
                hint as *mut c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        }
    };
    // Below the binary first: the heap grows upwards from its end.
    for k in 1..=8usize {
        let Some(hint) = anchor.checked_sub(k * STEP) else { break };
        let base = map(hint, libc::MAP_FIXED_NOREPLACE);
        if base == hint as *mut c_void {
            return Ok(base);
        }
        if base != libc::MAP_FAILED {
            // A kernel without MAP_FIXED_NOREPLACE treats it as a hint and may map elsewhere: try the next one.
            // SAFETY: unmapping the mapping just created.
            unsafe { libc::munmap(base, len) };
        }
    }
    let base = map(0, 0);
    if base == libc::MAP_FAILED {
        return Err(NativeError::Memory(std::io::Error::last_os_error()));
    }
    Ok(base)
}

impl Drop for ExecutableCode {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in `load`; nothing refers to it after drop.
        unsafe {
            libc::munmap(self.base as *mut c_void, self.len);
        }
    }
}

/// The host side of the runtime: what eBPF for Windows' EbpfCore provides to a loaded native program.
pub struct HostRuntime {
    helpers: Vec<HelperFunctionData>,
    /// The host functions behind `helpers`, slot by slot.
    helper_functions: Vec<Option<HelperFunction>>,
    map_data: Vec<u64>,
    layout: MapDataLayout,
    globals: Vec<GlobalVariableSectionData>,
    global_storage: Vec<Vec<u8>>,
    context: Box<ProgramRuntimeContext>,
}

impl HostRuntime {
    /// A runtime for a program whose helper table is `helper_ids` (0 = sentinel), resolving each id through
    /// `helper`. `maps` are the `map_data[m].address` values (opaque to the code), `globals` the initial
    /// contents of the global-variable sections.
    pub fn new(
        helper_ids: &[u32],
        helper: &dyn Fn(u32) -> Option<HelperFunction>,
        maps: &[u64],
        layout: MapDataLayout,
        globals: Vec<Vec<u8>>,
    ) -> HostRuntime {
        let helper_functions: Vec<Option<HelperFunction>> =
            helper_ids.iter().map(|&id| if id == 0 { None } else { helper(id) }).collect();
        let helpers: Vec<HelperFunctionData> = helper_functions
            .iter()
            .map(|f| HelperFunctionData { address: f.map_or(0, |f| f as usize as u64), ..Default::default() })
            .collect();
        let stride = layout.stride() as usize;
        let mut map_data = vec![0u64; (maps.len() * stride).div_ceil(8)];
        for (m, &address) in maps.iter().enumerate() {
            map_data[(m * stride + std::mem::offset_of!(MapData, address)) / 8] = address;
        }
        let mut global_storage = globals;
        let globals: Vec<GlobalVariableSectionData> = global_storage
            .iter_mut()
            .map(|g| GlobalVariableSectionData { address_of_map_value: g.as_mut_ptr() as u64, ..Default::default() })
            .collect();
        let context = Box::new(ProgramRuntimeContext {
            header: Default::default(),
            helper_data: if helpers.is_empty() { std::ptr::null() } else { helpers.as_ptr() },
            map_data: if map_data.is_empty() { std::ptr::null() } else { map_data.as_ptr() as *const u8 },
            global_variable_section_data: if globals.is_empty() { std::ptr::null() } else { globals.as_ptr() },
            btf_resolved_function_data: std::ptr::null(),
        });
        HostRuntime { helpers, helper_functions, map_data, layout, globals, global_storage, context }
    }

    /// Sets `map_data[map].array_data` to `values`, as the runtime does for an `ARRAY` map of a module reporting
    /// 1.4.0 or later (contract §3.3); nothing for the 32-byte layout, which has no such field. The vector is
    /// written in place, so the runtime context keeps pointing at it.
    pub fn set_array_data(&mut self, map: usize, values: *mut u8) {
        if self.layout.has_array_data() {
            let at = map * self.layout.stride() as usize + std::mem::offset_of!(MapData, array_data);
            self.map_data[at / 8] = values as u64;
        }
    }

    /// Points each helper slot at the address `bind` gives for its host function (for code that cannot call host
    /// functions directly: emulated ARM64 code calls trap addresses).
    pub fn bind_helpers<E>(&mut self, mut bind: impl FnMut(HelperFunction) -> Result<u64, E>) -> Result<(), E> {
        for (slot, f) in self.helpers.iter_mut().zip(&self.helper_functions) {
            if let Some(f) = f {
                slot.address = bind(*f)?;
            }
        }
        Ok(())
    }

    /// The current contents of global-variable section `g`.
    pub fn global_section(&self, g: usize) -> &[u8] {
        &self.global_storage[g]
    }

    pub fn context(&self) -> *const ProgramRuntimeContext {
        let _ = (&self.helpers, &self.map_data, &self.globals);
        &*self.context
    }
}

/// A compiled program loaded into executable memory together with its host runtime.
pub struct NativeProgram {
    /// Shared by the programs of a module loaded together ([`NativeProgram::load_module`]).
    code: Rc<ExecutableCode>,
    entry: EntryFunction,
    runtime: HostRuntime,
}

impl NativeProgram {
    /// Loads the x64 code of `program` and binds it to `runtime`.
    pub fn load(program: &CompiledProgram, runtime: HostRuntime) -> Result<NativeProgram, NativeError> {
        let code = Rc::new(ExecutableCode::load(&program.functions, &|_| None)?);
        Self::bind(program, code, runtime)
    }

    /// Loads the programs of one module into one mapping laid out as the driver image lays them out (each program on
    /// a page of its own, the pages one after another; [`ExecutableCode::load_pages`]) and binds program `i` to
    /// `runtimes[i]`.
    ///
    /// A tail-call chain needs this to be measured as it runs: with each program in a mapping of its own (64 MiB
    /// apart, [`map_near_host_code`]), the programs' code has identical low 26 address bits, and the core's
    /// instruction-side structures confuse them. `tailchain` (three programs, two tail calls) ran in 40 ns that way
    /// and in 24 ns laid out as in the driver (clang -O2: 21 ns; `bench_run tailchain`, best of 6, same machine).
    pub fn load_module(
        programs: &[CompiledProgram],
        runtimes: Vec<HostRuntime>,
    ) -> Result<Vec<NativeProgram>, NativeError> {
        let groups: Vec<&[CompiledFunction]> = programs.iter().map(|p| p.functions.as_slice()).collect();
        let code = Rc::new(ExecutableCode::load_pages(&groups, &|_| None)?);
        programs.iter().zip(runtimes).map(|(p, runtime)| Self::bind(p, Rc::clone(&code), runtime)).collect()
    }

    fn bind(program: &CompiledProgram, code: Rc<ExecutableCode>, runtime: HostRuntime) -> Result<Self, NativeError> {
        let entry_name = &program.functions.first().ok_or(NativeError::Empty)?.name;
        let address = code.address(entry_name).ok_or(NativeError::Empty)?;
        // SAFETY: the entry function was compiled with exactly this signature (contract §5.1).
        let entry = unsafe { std::mem::transmute::<*const u8, EntryFunction>(address) };
        Ok(NativeProgram { code, entry, runtime })
    }

    /// Runs the program with `context` as r1.
    ///
    /// # Safety
    /// The program must have been accepted by the verifier for a context that `context` satisfies: the generated
    /// code performs no checks of its own.
    pub unsafe fn run(&self, context: *mut c_void) -> u64 {
        let _ = &self.code;
        // SAFETY: guaranteed by the caller.
        unsafe { (self.entry)(context, self.runtime.context()) }
    }

    pub fn runtime(&self) -> &HostRuntime {
        &self.runtime
    }

    /// The entry function, for a harness that calls it itself with [`NativeProgram::runtime`]'s context (the
    /// bench's tail-call loop); the code lives as long as this program.
    pub fn entry(&self) -> EntryFunction {
        self.entry
    }
}

/// Wraps raw bytecode as a one-program module, splitting functions at local-call targets.
pub fn module_from_instructions(name: &str, instructions: Vec<Instruction>) -> Module {
    let functions = bpf2sys::program::functions_from_calls(&instructions);
    Module {
        name: name.to_string(),
        programs: vec![Program {
            name: name.to_string(),
            section_name: "xdp".to_string(),
            instructions,
            functions,
            line_info: Vec::new(),
        }],
        ..Module::default()
    }
}

/// Compiles bytecode with the conformance-suite convention (r1 = memory, r2 = its length, test-corpora §1.4):
/// like eBPF for Windows' bpf2c plugin, a `mov r2, len` is prepended (jump offsets are relative, so the program is
/// unchanged otherwise).
pub fn compile_with_length_prologue(instructions: &[Instruction], len: usize) -> Result<CompiledProgram, NativeError> {
    compile_with_length_prologue_for(bpf2sys::compiled::Target::X64, instructions, len)
}

/// [`compile_with_length_prologue`] for any target (ARM64 output is checked structurally, not run).
pub fn compile_with_length_prologue_for(
    target: bpf2sys::compiled::Target,
    instructions: &[Instruction],
    len: usize,
) -> Result<CompiledProgram, NativeError> {
    let mut program = Vec::with_capacity(instructions.len() + 1);
    program.push(Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R2, src: Operand::Imm(len as i32) });
    program.extend_from_slice(instructions);
    let module = module_from_instructions("conformance", program);
    Ok(lower::lower_unverified_for_testing(&module, 0, &LowerOptions::new(target))?)
}

/// The uBPF test helper table of the conformance suite: helper 5 ("unwind") returns its r1 (test-corpora §1.4).
pub fn conformance_helper(id: u32) -> Option<HelperFunction> {
    extern "win64" fn unwind(r1: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
        r1
    }
    (id == 5).then_some(unwind as HelperFunction)
}

/// Runs bytecode natively on `memory` the way the conformance suite specifies, returning r0.
pub fn run_conformance(instructions: &[Instruction], memory: &mut [u8]) -> Result<u64, NativeError> {
    let compiled = compile_with_length_prologue(instructions, memory.len())?;
    // Native code would call through a null slot: refuse instead.
    if let Some(&id) = compiled.helper_ids.iter().find(|&&id| id != 0 && conformance_helper(id).is_none()) {
        return Err(NativeError::MissingHelper(id));
    }
    let runtime =
        HostRuntime::new(&compiled.helper_ids, &conformance_helper, &[], MapDataLayout::default(), Vec::new());
    let program = NativeProgram::load(&compiled, runtime)?;
    let context = if memory.is_empty() { std::ptr::null_mut() } else { memory.as_mut_ptr() as *mut c_void };
    // SAFETY: conformance programs only access `memory` through r1 within its length, and their stack.
    Ok(unsafe { program.run(context) })
}

/// The result of running a program on a buffer: r0 and the buffer's final bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferRun {
    pub r0: u64,
    pub buffer: Vec<u8>,
}

/// Runs `instructions` with r1 pointing at a copy of `data`, once in the reference interpreter (with the
/// conformance helpers) and once as native x64 code (after `run_conformance`'s `mov r2, len`), for differential
/// tests. The interpreter's error means the program itself is wrong (a generator bug), not a codegen divergence.
pub fn interpreter_and_native(instructions: &[Instruction], data: &[u8]) -> Result<(BufferRun, BufferRun), String> {
    use bpf2sys::interp::{Access, Interpreter, Memory};
    let mut memory = Memory::new();
    let region = memory.add_region("buffer", data.to_vec(), Access::ReadWrite);
    let r0 = Interpreter::new(instructions)
        .run(&[region.base()], &mut memory, &mut crate::conformance::ConformanceHost)
        .map_err(|e| format!("interpreter: {e}"))?;
    let buffer = memory.read(region.base(), data.len()).map_err(|e| e.to_string())?.to_vec();
    let interpreted = BufferRun { r0, buffer };
    let mut buffer = data.to_vec();
    let r0 = run_conformance(instructions, &mut buffer).map_err(|e| format!("native: {e}"))?;
    Ok((interpreted, BufferRun { r0, buffer }))
}

/// The conformance engine that runs bpf2sys's native x64 code (`cargo xtask conformance --engine native`).
#[derive(Default)]
pub struct NativeEngine;

impl crate::conformance::Engine for NativeEngine {
    fn name(&self) -> &str {
        "native"
    }

    fn run(&mut self, program: &[Instruction], memory: &[u8]) -> Result<u64, crate::conformance::EngineError> {
        use crate::conformance::EngineError;
        let mut memory = memory.to_vec();
        run_conformance(program, &mut memory).map_err(|e| match e {
            NativeError::Lower(lower::LowerError::Unsupported { .. }) => EngineError::Unsupported(e.to_string()),
            other => EngineError::Failed(other.to_string()),
        })
    }
}
