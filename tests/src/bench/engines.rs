//! bpf2sys's own engines for the speed table: the shipped x64 machine code (lowered, loaded into executable memory
//! and called as `extern "win64"`, exactly as [`crate::native`] runs it in the tests), and the reference
//! interpreter ([`bpf2sys::interp`]) as the floor.
//!
//! The benchmark programs take their buffer through the context pointer, so r1 = the input buffer; helper #1 is
//! [`super::input::machine_code`]'s helper in the `helper_function_t` shape (contract §5.1).

use std::ffi::c_void;

use bpf2sys::compiled::{CompiledProgram, Target};
use bpf2sys::interp::memory::{Access, Memory, RegionId};
use bpf2sys::interp::{HelperArgs, HelperOutcome, Host, HostError, Interpreter};
use bpf2sys::isa::{self, Instruction, MemSize};
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};

use super::input;
use crate::native::{HelperFunction, HostRuntime, NativeProgram};

/// Why an engine could not be set up for a program.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("decoding the bytecode: {0}")]
    Decode(#[from] isa::DecodeError),
    #[error("lowering: {0}")]
    Lower(#[from] lower::LowerError),
    #[error("loading the machine code: {0}")]
    Native(#[from] crate::native::NativeError),
    #[error("the program calls helper {0}, which the benchmark host does not provide")]
    UnknownHelper(u32),
}

/// The benchmark host's helpers: only helper 1 (`u64 *lookup(void *map, const u32 *key)`), as fixed machine code
/// (see [`input::machine_code`]).
pub fn bench_helper(id: u32) -> Option<HelperFunction> {
    (id == 1).then_some(input::machine_code::bpf2sys_bench_lookup_win64 as HelperFunction)
}

/// Decodes raw bytecode and lowers it for x64 as the single program of a module.
pub fn lower_bytecode(name: &str, bytecode: &[u8]) -> Result<CompiledProgram, EngineError> {
    let instructions: Vec<Instruction> = isa::decode(bytecode)?;
    let module = crate::native::module_from_instructions(name, instructions);
    Ok(lower::lower_unverified_for_testing(&module, 0, &LowerOptions::new(Target::X64))?)
}

/// A benchmark program as bpf2sys-generated x64 code, ready to call.
pub struct NativeBench {
    program: NativeProgram,
}

impl NativeBench {
    /// Loads a lowered program with the benchmark host runtime (helper 1, no maps, no globals).
    pub fn load(compiled: &CompiledProgram) -> Result<NativeBench, EngineError> {
        if let Some(&id) = compiled.helper_ids.iter().find(|&&id| id != 0 && bench_helper(id).is_none()) {
            return Err(EngineError::UnknownHelper(id));
        }
        let runtime = HostRuntime::new(&compiled.helper_ids, &bench_helper, &[], MapDataLayout::default(), Vec::new());
        Ok(NativeBench { program: NativeProgram::load(compiled, runtime)? })
    }

    /// Runs the program on `buffer` (r1 = its address).
    ///
    /// # Safety
    /// The program must only access `buffer` within its length, its own stack and the helper's values — which holds
    /// for the benchmark programs on their own inputs (each clamps its lengths to the buffer header).
    pub unsafe fn run(&self, buffer: *mut u8) -> u64 {
        // SAFETY: guaranteed by the caller.
        unsafe { self.program.run(buffer as *mut c_void) }
    }
}

/// The benchmark host for the reference interpreter: helper 1 answers from [`input::helper_table`], returning the
/// address of the value inside a read-only region that mirrors the table's value slots.
pub struct InterpBench {
    instructions: Vec<Instruction>,
    memory: Memory,
    input: RegionId,
    host: InterpHost,
}

struct InterpHost {
    values: RegionId,
}

impl Host for InterpHost {
    fn call_helper(&mut self, id: i32, args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError> {
        if id != 1 {
            return Err(HostError::UnknownHelper { id });
        }
        let key = memory.read_uint(args.arg(2)?, MemSize::W)? as u32;
        Ok(HelperOutcome::Return(
            input::helper_table().lookup_slot(key).map_or(0, |slot| self.values.base() + 8 * slot as u64),
        ))
    }
}

impl InterpBench {
    /// Decodes `bytecode` and maps `buffer` as the program's read-write context region.
    pub fn new(bytecode: &[u8], buffer: Vec<u8>) -> Result<InterpBench, EngineError> {
        let instructions = isa::decode(bytecode)?;
        let mut memory = Memory::new();
        let values: Vec<u8> = input::helper_table().values().iter().flat_map(|v| v.to_le_bytes()).collect();
        let values = memory.add_region("helper 1 values", values, Access::ReadOnly);
        let input = memory.add_region("input buffer", buffer, Access::ReadWrite);
        Ok(InterpBench { instructions, memory, input, host: InterpHost { values } })
    }

    /// Runs the program once with r1 = the input buffer.
    pub fn run(&mut self) -> Result<u64, String> {
        Interpreter::new(&self.instructions)
            .run(&[self.input.base()], &mut self.memory, &mut self.host)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::programs;
    use crate::bench::runtime_programs::{runtime_program, InterpRuntimeBench, NativeRuntimeBench};
    use std::path::Path;

    #[test]
    fn native_code_returns_the_expected_result_for_every_benchmark_program() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for p in programs::load_all(root).unwrap() {
            if let Some(spec) = runtime_program(&p.name) {
                let mut buffer = input::make_input(&p.name).unwrap();
                let mut bench = NativeRuntimeBench::load(spec, &p.object_path, &mut buffer).unwrap();
                // SAFETY: `buffer` outlives the runs; the programs were verified.
                let (first, second) = unsafe { (bench.run(), bench.run()) };
                assert_eq!((first, second), (p.expected_r0, p.expected_r0), "{}", p.name);
                continue;
            }
            let code = programs::function_bytecode(&p.object_path, "entry").unwrap();
            let compiled = lower_bytecode(&p.name, &code).unwrap();
            let bench = NativeBench::load(&compiled).unwrap();
            let mut buffer = input::make_input(&p.name).unwrap();
            // SAFETY: the benchmark programs stay within their input (see NativeBench::run).
            let r0 = unsafe { bench.run(buffer.as_mut_ptr()) };
            assert_eq!(r0, p.expected_r0, "{}", p.name);
        }
    }

    #[test]
    fn interpreter_returns_the_expected_result_for_every_benchmark_program() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for p in programs::load_all(root).unwrap() {
            if let Some(spec) = runtime_program(&p.name) {
                let buffer = input::make_input(&p.name).unwrap();
                let mut bench = InterpRuntimeBench::load(spec, &p.object_path, &buffer).unwrap();
                assert_eq!(bench.run(), Ok(p.expected_r0), "{}", p.name);
                assert_eq!(bench.run(), Ok(p.expected_r0), "{}", p.name);
                continue;
            }
            let code = programs::function_bytecode(&p.object_path, "entry").unwrap();
            let mut bench = InterpBench::new(&code, input::make_input(&p.name).unwrap()).unwrap();
            assert_eq!(bench.run(), Ok(p.expected_r0), "{}", p.name);
            // A second run on the same memory gives the same result (the bench calls it many times).
            assert_eq!(bench.run(), Ok(p.expected_r0), "{}", p.name);
        }
    }
}
