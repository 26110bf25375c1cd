//! Compiled eBPF programs run as ARM64 code: the ARM64 counterpart of [`crate::native::NativeProgram`].
//!
//! In: a [`CompiledProgram`] for [`Target::Arm64`] and a [`HostRuntime`]. Out: the program's r0, computed by the
//! emulated core calling the entry function as `(context, runtime_context)` (contract §5.1), with the helpers of
//! the runtime context bound to trap addresses.

use std::ffi::c_void;

use bpf2sys::compiled::{CompiledProgram, Target};
use bpf2sys::isa::Instruction;
use bpf2sys::lower::{self, MapDataLayout};

use super::{Arm64Code, Arm64Error, Arm64Machine};
use crate::conformance::{Engine, EngineError};
use crate::native::{compile_with_length_prologue_for, conformance_helper, HostRuntime};

/// A compiled program loaded into an emulated ARM64 core together with its host runtime.
pub struct Arm64Program {
    machine: Arm64Machine,
    _code: Arm64Code,
    entry: u64,
    runtime: HostRuntime,
}

impl Arm64Program {
    /// Loads the ARM64 code of `program` and binds it to `runtime`.
    pub fn load(program: &CompiledProgram, mut runtime: HostRuntime) -> Result<Arm64Program, Arm64Error> {
        let entry_name = &program.functions.first().ok_or(Arm64Error::Empty)?.name;
        let mut machine = Arm64Machine::new()?;
        runtime.bind_helpers(|f| machine.bind_helper(f))?;
        let code = machine.load(&program.functions, &|_| None)?;
        let entry = code.address(entry_name).ok_or(Arm64Error::Empty)?;
        Ok(Arm64Program { machine, _code: code, entry, runtime })
    }

    /// Runs the program with `context` as r1.
    ///
    /// Unlike native x64 code, a wrong access cannot corrupt this process: the guest reaches only mapped host
    /// pages and faults are reported. A program that writes through a bad pointer into mapped host memory can
    /// still corrupt it, so the verifier's guarantee is still required for `context`.
    pub fn run(&mut self, context: *mut c_void) -> Result<u64, Arm64Error> {
        let runtime_context = self.runtime.context() as u64;
        self.machine.call(self.entry, &[context as u64, runtime_context])
    }

    pub fn runtime(&self) -> &HostRuntime {
        &self.runtime
    }
}

/// Runs bytecode as ARM64 code on `memory` the way the conformance suite specifies, returning r0.
pub fn run_conformance_arm64(instructions: &[Instruction], memory: &mut [u8]) -> Result<u64, Arm64Error> {
    let compiled =
        compile_with_length_prologue_for(Target::Arm64, instructions, memory.len()).map_err(|e| match e {
            crate::native::NativeError::Lower(e) => Arm64Error::Lower(e),
            other => Arm64Error::Emulator(other.to_string()),
        })?;
    if let Some(&id) = compiled.helper_ids.iter().find(|&&id| id != 0 && conformance_helper(id).is_none()) {
        return Err(Arm64Error::Emulator(format!("the program calls helper {id}, which the host does not provide")));
    }
    let runtime =
        HostRuntime::new(&compiled.helper_ids, &conformance_helper, &[], MapDataLayout::default(), Vec::new());
    let mut program = Arm64Program::load(&compiled, runtime)?;
    let context = if memory.is_empty() { std::ptr::null_mut() } else { memory.as_mut_ptr() as *mut c_void };
    program.run(context)
}

/// The conformance engine that runs bpf2sys's ARM64 code (`cargo xtask conformance --engine native-arm64`).
#[derive(Default)]
pub struct Arm64Engine;

impl Engine for Arm64Engine {
    fn name(&self) -> &str {
        "native-arm64"
    }

    fn run(&mut self, program: &[Instruction], memory: &[u8]) -> Result<u64, EngineError> {
        let mut memory = memory.to_vec();
        run_conformance_arm64(program, &mut memory).map_err(|e| match e {
            Arm64Error::Lower(lower::LowerError::Unsupported { .. }) => EngineError::Unsupported(e.to_string()),
            other => EngineError::Failed(other.to_string()),
        })
    }
}
