//! bpf2sys's own engines for the speed table: the shipped x64 machine code (lowered, loaded into executable memory
//! and called as `extern "win64"`, exactly as [`crate::native`] runs it in the tests).
//!
//! The benchmark programs take their buffer through the context pointer, so r1 = the input buffer; helper #1 is
//! [`super::input::lookup_helper`] in the `helper_function_t` shape (contract §5.1).

use std::ffi::c_void;

use bpf2sys::compiled::{CompiledProgram, Target};
use bpf2sys::isa::{self, Instruction};
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

/// Helper #1 (`u64 *lookup(void *map, const u32 *key)`) in the Windows x64 helper shape.
extern "win64" fn lookup_win64(_map: u64, key: u64, _r3: u64, _r4: u64, _r5: u64, _context: *mut c_void) -> u64 {
    // SAFETY: the benchmark programs pass a pointer to a 4-byte key on their stack.
    unsafe { input::lookup_helper(key) }
}

/// The benchmark host's helpers: only helper 1.
pub fn bench_helper(id: u32) -> Option<HelperFunction> {
    (id == 1).then_some(lookup_win64 as HelperFunction)
}

/// Decodes raw bytecode and lowers it for x64 as the single program of a module.
pub fn lower_bytecode(name: &str, bytecode: &[u8]) -> Result<CompiledProgram, EngineError> {
    let instructions: Vec<Instruction> = isa::decode(bytecode)?;
    let module = crate::native::module_from_instructions(name, instructions);
    Ok(lower::lower_program(&module, 0, &LowerOptions::new(Target::X64))?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::programs;
    use std::path::Path;

    #[test]
    fn native_code_returns_the_expected_result_for_every_benchmark_program() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for p in programs::load_all(root).unwrap() {
            let code = programs::function_bytecode(&p.object_path, "entry").unwrap();
            let compiled = lower_bytecode(&p.name, &code).unwrap();
            let bench = NativeBench::load(&compiled).unwrap();
            let mut buffer = input::make_input(&p.name).unwrap();
            // SAFETY: the benchmark programs stay within their input (see NativeBench::run).
            let r0 = unsafe { bench.run(buffer.as_mut_ptr()) };
            assert_eq!(r0, p.expected_r0, "{}", p.name);
        }
    }
}
