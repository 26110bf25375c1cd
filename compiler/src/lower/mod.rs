//! Cranelift lowering: verified eBPF programs to Windows x64 / ARM64 machine code.
//!
//! In: a [`crate::program::Program`] (already accepted by the verifier) and its [`crate::program::Module`].
//! Out: a [`crate::compiled::CompiledProgram`] — per function machine code, relocations and Windows unwind data —
//! for the driver linker.
//!
//! - [`translate`] turns eBPF instructions into Cranelift IR (the translation itself is documented there), with the
//!   eBPF-level improvements it applies on the way: [`load_combine`], [`if_conversion`], [`stack_stores`],
//!   [`stack_slots`];
//! - [`codegen`] compiles any Cranelift IR function (eBPF functions and the runtime shim's functions alike) into a
//!   [`crate::compiled::CompiledFunction`] and writes correct Windows unwind data; on x64 it re-lays the code out
//!   with short loop branches and aligned loop heads ([`x64_layout`]).

pub mod codegen;
pub mod if_conversion;
pub mod load_combine;
pub mod object;
pub mod stack_slots;
pub mod stack_stores;
pub mod translate;
pub mod x64_layout;

/// Why lowering failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error("cannot configure Cranelift: {0}")]
    Isa(String),
    #[error("code generation for function `{function}` failed: {message}")]
    Codegen { function: String, message: String },
    #[error("program `{program}`, slot {slot}: {message}")]
    Unsupported { program: String, slot: usize, message: String },
}

pub use codegen::{build_isa, compile_ir_function, CompileOptions, SymbolTable};
pub use translate::{functions_from_calls, translate_program, MapDataLayout, RuntimeEnvironment};

use crate::compiled::{CompiledProgram, Target};
use crate::program::Module;

/// How to lower a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    pub target: Target,
    /// The `map_data_t` stride the runtime will use for this module (by its reported version).
    pub map_data: MapDataLayout,
}

impl LowerOptions {
    pub fn new(target: Target) -> LowerOptions {
        LowerOptions { target, map_data: MapDataLayout::default() }
    }
}

/// A lowered program plus, on request, Cranelift's text for each function (same order as `functions`).
#[derive(Clone, Debug)]
pub struct LoweredProgram {
    pub program: CompiledProgram,
    /// Cranelift IR per function (`--emit clif`), when requested.
    pub clif: Vec<String>,
    /// Machine instructions per function (`--emit asm`), when requested.
    pub disassembly: Vec<String>,
}

/// Lowers program `program_index` of `module` to machine code for `options.target`.
pub fn lower_program(
    module: &Module,
    program_index: usize,
    options: &LowerOptions,
) -> Result<CompiledProgram, LowerError> {
    let isa = build_isa(options.target)?;
    lower_program_with(&*isa, module, program_index, options, false).map(|l| l.program)
}

/// [`lower_program`] with an ISA built once by the caller, optionally keeping IR and machine-code text.
pub fn lower_program_with(
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    module: &Module,
    program_index: usize,
    options: &LowerOptions,
    keep_text: bool,
) -> Result<LoweredProgram, LowerError> {
    let program = module.programs.get(program_index).ok_or_else(|| LowerError::Unsupported {
        program: String::new(),
        slot: 0,
        message: format!("no program with index {program_index}"),
    })?;
    let translated = translate_program(module, program_index, options.map_data, isa.frontend_config())?;
    let mut functions = Vec::with_capacity(translated.functions.len());
    let mut clif = Vec::new();
    let mut disassembly = Vec::new();
    for (index, (name, func)) in translated.functions.into_iter().enumerate() {
        let f = &program.functions[index];
        let optimize = benefits_from_optimizer(&program.instructions[f.start..f.end]);
        if keep_text {
            clif.push(format!("; function {name}\n{}", func.display()));
        }
        let compiled = codegen::compile_ir_function_with(
            isa,
            &name,
            func,
            &translated.symbols,
            CompileOptions { disassembly: keep_text, optimize },
        )?;
        if let Some(text) = compiled.disassembly {
            disassembly.push(format!("; function {name}\n{text}"));
        }
        functions.push(compiled.function);
    }
    Ok(LoweredProgram {
        program: CompiledProgram {
            program_name: program.name.clone(),
            functions,
            helper_ids: translated.helper_ids,
            referenced_maps: translated.referenced_maps,
        },
        clif,
        disassembly,
    })
}

/// Whether a function is compiled with Cranelift's mid-end optimizer (e-graph rewrites, GVN, LICM) or as written.
///
/// clang has already optimised the eBPF, so the optimizer mostly shares constants and runtime-table loads and
/// places pure arithmetic at its uses. In a loop that only reads memory that last part backfires: the loads must
/// stay where they are (Cranelift cannot prove them safe to move inside a loop, see `translate`), while the
/// arithmetic on the loaded bytes is sunk into the blocks that use it, so every loaded byte stays live across the
/// branches in between. On `parse` (header parsing: byte loads, shifts and ors, bounds checks in a loop) that
/// turned 6 stack accesses into 71 spills and reloads and cost 20%. Such functions — a backward jump, no store,
/// atomic or call — are compiled as written; every other function is optimized.
pub fn benefits_from_optimizer(instructions: &[crate::isa::Instruction]) -> bool {
    let shape = translate::function_shape(instructions);
    shape.writes_or_calls || !shape.loops
}
