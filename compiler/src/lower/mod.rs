//! Cranelift lowering: verified eBPF programs to Windows x64 / ARM64 machine code.
//!
//! In: [`Verified`] programs — the verifier's output type, so only proven programs are lowered — with the facts
//! the proof established (callx targets, call depth, block leaders), which lowering uses instead of re-deriving.
//! Out: a [`crate::compiled::CompiledProgram`] — per function machine code, relocations and Windows unwind data —
//! for the driver linker.
//!
//! - [`translate`] turns eBPF instructions into Cranelift IR (the translation itself is documented there), with the
//!   eBPF-level improvements it applies on the way: [`load_combine`], [`if_conversion`], [`stack_stores`],
//!   [`stack_slots`]; and the passes over each translated function's IR: [`narrow_compare`], [`edge_constants`];
//! - [`codegen`] compiles any Cranelift IR function (eBPF functions and the runtime shim's functions alike) into a
//!   [`crate::compiled::CompiledFunction`], with Windows unwind data that is exact at every instruction
//!   ([`unwind`]); on x64 it re-lays the code out with short loop branches and aligned loop heads ([`x64_layout`]).

pub mod codegen;
pub mod edge_constants;
pub mod if_conversion;
pub mod latch_copy;
pub mod load_combine;
pub mod narrow_compare;
pub mod object;
pub mod plan;
pub mod runtime_env;
pub mod stack_slots;
pub mod stack_stores;
pub mod translate;
pub mod unwind;
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
pub use runtime_env::{MapDataLayout, RuntimeEnvironment};
pub use translate::translate_program;

use crate::compiled::{CompiledProgram, Target};
use crate::program::Module;
use crate::verifier::Verified;

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

/// Lowers program `program_index` of a module to machine code for `options.target`, optionally keeping IR and
/// machine-code text.
///
/// `programs` holds verified programs of that module, including program `program_index`; when the module has
/// subprograms it must hold every program, because the helper table is then module-wide (contract §5.2).
pub fn lower_program(
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    programs: &[Verified],
    program_index: usize,
    options: &LowerOptions,
    keep_text: bool,
) -> Result<LoweredProgram, LowerError> {
    let verified = select(programs, program_index)?;
    let program = verified.program();
    let translated =
        translate_program(verified, programs, options.map_data, isa.frontend_config(), codegen::isa_target(isa)?)?;
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

/// Lowers every program in `programs`, verified programs of one module (see [`lower_program`]).
pub fn lower_module(
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    programs: &[Verified],
    options: &LowerOptions,
    keep_text: bool,
) -> Result<Vec<LoweredProgram>, LowerError> {
    programs.iter().map(|v| lower_program(isa, programs, v.index(), options, keep_text)).collect()
}

/// **Not for shipping code.** Lowers program `program_index` of `module` without verifying it, with the facts
/// lowering needs derived from the program text ([`Verified::unchecked_for_testing`]): for the conformance and
/// differential harnesses, which compile programs the verifier rejects on purpose and run them in a sandbox.
#[doc(hidden)]
pub fn lower_unverified_for_testing(
    module: &Module,
    program_index: usize,
    options: &LowerOptions,
) -> Result<CompiledProgram, LowerError> {
    lower_unchecked(module, program_index, options, None)
}

/// [`lower_unverified_for_testing`] for programs with legacy packet loads, which read the packet through a
/// context laid out as `packet` says (the harness builds that context).
#[doc(hidden)]
pub fn lower_unverified_with_packet_for_testing(
    module: &Module,
    program_index: usize,
    options: &LowerOptions,
    packet: crate::isa::semantics::PacketFields,
) -> Result<CompiledProgram, LowerError> {
    lower_unchecked(module, program_index, options, Some(packet))
}

fn lower_unchecked(
    module: &Module,
    program_index: usize,
    options: &LowerOptions,
    packet: Option<crate::isa::semantics::PacketFields>,
) -> Result<CompiledProgram, LowerError> {
    let programs = (0..module.programs.len())
        .map(|i| {
            let verified = Verified::unchecked_for_testing(module, i).map_err(|r| LowerError::Unsupported {
                program: r.program,
                slot: r.pc,
                message: r.message,
            })?;
            Ok(match packet {
                Some(fields) => verified.with_packet_fields_for_testing(fields),
                None => verified,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let isa = build_isa(options.target)?;
    lower_program(&*isa, &programs, program_index, options, false).map(|l| l.program)
}

/// Program `program_index` from `programs`, after checking that `programs` is what [`lower_program`] needs.
fn select<'a, 'm>(programs: &'a [Verified<'m>], program_index: usize) -> Result<&'a Verified<'m>, LowerError> {
    let problem = |message: String| LowerError::Unsupported { program: String::new(), slot: 0, message };
    let verified = programs
        .iter()
        .find(|v| v.index() == program_index)
        .ok_or_else(|| problem(format!("program {program_index} is not among the verified programs")))?;
    let module = verified.module();
    if programs.iter().any(|v| !std::ptr::eq(v.module(), module)) {
        return Err(problem("the verified programs come from different modules".into()));
    }
    let module_has_subprograms = module.programs.iter().any(|p| p.functions.len() > 1);
    let complete = (0..module.programs.len()).all(|i| programs.iter().any(|v| v.index() == i));
    if module_has_subprograms && !complete {
        return Err(problem(format!(
            "program `{}`: the module has subprograms, so its helper table is module-wide (contract §5.2) and \
             lowering needs every program of the module verified",
            verified.program().name
        )));
    }
    Ok(verified)
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
