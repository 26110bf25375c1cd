//! The static verifier: proves a program memory-safe, leak-free and terminating before it is compiled.
//!
//! In: a [`Module`] program (typed instructions, maps, global sections, line info), the [`Platform`] and
//! [`ProgramType`] it runs as. Out: a [`Verified`] program — the only input lowering accepts — carrying the
//! [`VerificationReport`] (loop bounds, a bound on instructions executed per invocation, optionally the invariant
//! at every instruction) and the facts lowering relies on ([`verified`]), or a [`Rejection`] naming the
//! instruction, the source line, the property that failed and the abstract values involved.
//!
//! Design (docs/verifier.md): abstract interpretation in the style of PREVAIL. The abstract domain
//! ([`num`], [`state`]) is separate from the eBPF semantics ([`transfer`]). Local calls are analysed by
//! inlining: a node is (call string, slot), so each activation has its own frame and `r10`. The fixpoint is
//! computed with a worklist over merge points (a slot with one predecessor is analysed right after it), joins,
//! and widening with thresholds at loop heads. Every safety check is monotone in the state, so a check that fails on any intermediate state also
//! fails on the fixpoint; checks are therefore performed during the iteration, and the last processing of
//! every block uses its final state.

mod cfg;
mod deltas;
pub mod diagnostic;
mod fixpoint;
mod functions;
pub mod num;
mod refs;
mod relations;
pub mod state;
mod termination;
pub mod transfer;
pub mod verified;

use crate::isa::Instruction;
use crate::platform::{Platform, ProgramType};
use crate::program::{GlobalSection, Kfunc, LineInfo, MapDefinition, Module};

use num::Num;
use state::{ty, State, Value};

pub use verified::{AnalysisFacts, BranchDecision, BranchDirections, CallxTarget, ControlFlow, Invariant, Verified};

/// Maximum number of active frames (PREVAIL `max_call_stack_frames`, contract §5.7).
pub const MAX_CALL_DEPTH: usize = 8;

#[derive(Clone, Debug)]
pub struct VerifierOptions {
    /// RFC 9669 defines x / 0 = 0 and x % 0 = x; when false, a possibly-zero divisor is rejected.
    pub allow_division_by_zero: bool,
    /// Prove that every loop has a bound (off only for PREVAIL suite cases that do not ask for it).
    pub check_termination: bool,
    /// Largest accepted loop iteration bound.
    pub max_loop_iterations: u64,
    /// Width of the context's packet pointer fields (8 on 64-bit platforms).
    pub ctx_pointer_size: u32,
    /// The largest packet length in bytes (capped at 2^32 - 1): an XDP frame on Windows is one NET_BUFFER, whose
    /// length is a 32-bit `ULONG`, so the default is `u32::MAX`. It bounds `data_end - data`, and through it loops
    /// counted up to a packet length. Test suites whose model states a smaller packet (PREVAIL's `packet_size`
    /// precondition) set it from there.
    pub max_packet_len: u64,
    /// Record the invariant at every instruction (`--show-state`).
    pub record_invariants: bool,
    /// Joins at a loop head before widening starts.
    pub widening_delay: u32,
    /// Budget for the proven bound on instructions executed per invocation (`--max-instructions`): the kernel
    /// has no instruction limit of its own, so a program whose nested loop bounds multiply past it is rejected.
    pub max_instructions: u64,
    /// Reject a program that may end (exit, tail call, legacy packet load) while holding a reference (Linux's
    /// "Unreleased reference"). Off only for PREVAIL's suite, whose model tracks no references.
    pub check_reference_leaks: bool,
}

/// Default per-invocation instruction budget.
pub const DEFAULT_MAX_INSTRUCTIONS: u64 = 1_000_000;

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            allow_division_by_zero: true,
            check_termination: true,
            max_loop_iterations: 1 << 24,
            ctx_pointer_size: 8,
            max_packet_len: u32::MAX as u64,
            record_invariants: false,
            widening_delay: 2,
            max_instructions: DEFAULT_MAX_INSTRUCTIONS,
            check_reference_leaks: true,
        }
    }
}

/// The safety property an instruction violates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Property {
    Uninitialized,
    OutOfBounds,
    NullDereference,
    ReadOnly,
    PointerLeak,
    PointerArithmetic,
    TypeMismatch,
    HelperArgument,
    UnknownHelper,
    DivisionByZero,
    Termination,
    Alignment,
    Recursion,
    CallDepth,
    ControlFlow,
    InvalidInstruction,
    ReferenceLeak,
    ReleasedReference,
}

impl Property {
    pub fn description(self) -> &'static str {
        match self {
            Property::Uninitialized => "read of uninitialised data",
            Property::OutOfBounds => "memory access out of bounds",
            Property::NullDereference => "possible null dereference",
            Property::ReadOnly => "write to read-only memory",
            Property::PointerLeak => "pointer leak",
            Property::PointerArithmetic => "invalid pointer arithmetic",
            Property::TypeMismatch => "invalid type",
            Property::HelperArgument => "helper argument does not match the prototype",
            Property::UnknownHelper => "unknown helper",
            Property::DivisionByZero => "possible division by zero",
            Property::Termination => "termination not proven",
            Property::Alignment => "misaligned atomic access",
            Property::Recursion => "recursion",
            Property::CallDepth => "call stack too deep",
            Property::ControlFlow => "invalid control flow",
            Property::InvalidInstruction => "unsupported instruction",
            Property::ReferenceLeak => "reference not released",
            Property::ReleasedReference => "use of a released reference",
        }
    }
}

/// A failed check, before it is attached to a program and a source location.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub pc: usize,
    pub property: Property,
    pub message: String,
    /// (name, abstract value) pairs involved.
    pub values: Vec<(String, String)>,
}

/// Why a program was rejected.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rejection {
    pub program: String,
    /// Slot of the failing instruction.
    pub pc: usize,
    /// The instruction, disassembled.
    pub instruction: String,
    pub property: Property,
    pub message: String,
    pub values: Vec<(String, String)>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub source_line: Option<String>,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "program {}: instruction {}: {}: {}",
            self.program,
            self.pc,
            self.property.description(),
            self.message
        )?;
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            write!(f, " ({file}:{line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// A proven loop bound.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LoopBound {
    /// Slot of the loop head.
    pub head: usize,
    /// Call string (call-site slots) of the activation.
    pub call_path: Vec<usize>,
    /// The register whose monotone change bounds the loop.
    pub counter: String,
    /// Maximum number of back-edge traversals per entry into the loop.
    pub max_iterations: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VerificationReport {
    pub program: String,
    /// Analysed (call string, slot) nodes.
    pub nodes: usize,
    /// Deepest call chain (1 = no local calls).
    pub max_call_depth: usize,
    /// Stack bytes needed: 512 per frame of the deepest chain.
    pub stack_bytes: usize,
    pub loop_bounds: Vec<LoopBound>,
    /// Upper bound on instructions executed per invocation (saturating; `None` without termination check).
    pub max_instructions_executed: Option<u64>,
    /// Per (call path, slot): the invariant before the instruction (only with `record_invariants`).
    pub invariants: Vec<Invariant>,
    /// Per-slot facts for lowering (not part of the printed report).
    #[serde(skip)]
    pub facts: AnalysisFacts,
}

/// What the analysis needs besides the state.
pub struct Env<'a> {
    pub program: &'a [Instruction],
    pub platform: &'a Platform,
    pub program_type: &'a ProgramType,
    pub maps: &'a [MapDefinition],
    pub globals: &'a [GlobalSection],
    /// The module's kfunc table: a `CallBtf` names an entry by its id.
    pub kfuncs: &'a [Kfunc],
    pub options: &'a VerifierOptions,
    /// Sorted slots of conditional jumps that are assumptions rather than branches (PREVAIL's `assume`, used
    /// only by test suites): the taken edge is discarded. Empty for real programs.
    pub assumptions: &'a [usize],
}

/// The entry state of a program (contract §5.1): r1 = context, r10 = top of the 512-byte frame.
pub fn entry_state() -> State {
    let mut s = State::empty();
    s.regs[1] = Value::pointer(ty::CTX, Num::constant(0));
    s.regs[10] = Value::pointer(ty::STACK, Num::constant(0));
    s
}

/// Verifies program `index` of `module` as `program_type`.
#[allow(clippy::result_large_err)] // a rejection is the main output, built once per program
pub fn verify_program<'m>(
    module: &'m Module,
    index: usize,
    platform: &Platform,
    program_type: &ProgramType,
    options: &VerifierOptions,
) -> Result<Verified<'m>, Rejection> {
    let program = &module.programs[index];
    let env = Env {
        program: &program.instructions,
        platform,
        program_type,
        maps: &module.maps,
        globals: &module.global_sections,
        kfuncs: &module.kfuncs,
        options,
        assumptions: &[],
    };
    functions::check_function_boundaries(&program.instructions, &program.functions)
        .map_err(|f| reject(&program.name, &program.instructions, &program.line_info, f))?;
    let mut report = analyze(&env, entry_state(), &program.name)
        .map_err(|f| reject(&program.name, &program.instructions, &program.line_info, f))?;
    let facts = std::mem::take(&mut report.facts);
    Verified::from_analysis(module, index, report, facts, transfer::packet_fields(&env))
}

/// Attaches a failure to its program and source location.
pub fn reject(name: &str, program: &[Instruction], line_info: &[LineInfo], f: Failure) -> Rejection {
    // The line-info record that covers the slot: the last one at or before it.
    let line_of = |pc: usize| line_info.iter().filter(|l| l.slot <= pc).max_by_key(|l| l.slot);
    let li = line_of(f.pc);
    // A reference failure names the acquiring call; show its source line too.
    let mut values = f.values;
    for (name, v) in values.iter_mut().filter(|(n, _)| n == refs::ACQUIRED_AT) {
        if let Ok(pc) = v.parse::<usize>() {
            *name = "reference acquired at".into();
            *v = match line_of(pc) {
                Some(l) => format!("instruction {pc} ({}:{}: {})", l.file, l.line, l.source_line.trim()),
                None => format!("instruction {pc}"),
            };
        }
    }
    Rejection {
        program: name.to_string(),
        pc: f.pc,
        instruction: program.get(f.pc).map(diagnostic::disassemble).unwrap_or_default(),
        property: f.property,
        message: f.message,
        values,
        file: li.map(|l| l.file.clone()),
        line: li.map(|l| l.line),
        column: li.map(|l| l.column),
        source_line: li.map(|l| l.source_line.clone()),
    }
}

/// Runs the analysis from `entry`.
pub fn analyze(env: &Env, entry: State, name: &str) -> Result<VerificationReport, Failure> {
    if env.program.is_empty() {
        return Err(Failure {
            pc: 0,
            property: Property::ControlFlow,
            message: "the program is empty".into(),
            values: vec![],
        });
    }
    let cfg = cfg::build_cfg(env.program)?;
    if env.options.check_termination {
        if let Some((s, h)) = cfg.irreducible {
            return Err(Failure {
                pc: s,
                property: Property::Termination,
                message: format!("irreducible loop (jump from {s} into {h}): termination cannot be proven"),
                values: vec![],
            });
        }
    }
    let mut fx = fixpoint::Fixpoint::new(env, &cfg);
    fx.run(entry)?;
    let (loop_bounds, max_instructions_executed) = if env.options.check_termination {
        let (bounds, bound_of) = termination::loop_bounds(env, &cfg, &fx)?;
        let total = termination::instruction_bound(env, &cfg, &fx, &bounds, &bound_of)?;
        (bounds, Some(total))
    } else {
        (Vec::new(), None)
    };
    let mut invariants: Vec<Invariant> = std::mem::take(&mut fx.invariants)
        .into_iter()
        .map(|((c, pc), state)| Invariant { call_path: fx.ctxs.path(c), pc, state })
        .collect();
    invariants.sort_by(|a, b| (&a.call_path, a.pc).cmp(&(&b.call_path, b.pc)));
    let facts = AnalysisFacts {
        loop_heads: cfg.loop_heads.iter().copied().collect(),
        callx_helpers: std::mem::take(&mut fx.callx_helpers),
        branch_directions: std::mem::take(&mut fx.branch_directions),
        stack_atomics: fx.stack_atomics()?,
        redundant_zero_extensions: fx.redundant_zero_extensions(),
        array_map_lookups: fx.array_map_lookups(),
    };
    Ok(VerificationReport {
        program: name.to_string(),
        nodes: fx.visited_count(),
        max_call_depth: fx.max_depth,
        stack_bytes: fx.max_depth * state::STACK_FRAME_SIZE as usize,
        loop_bounds,
        max_instructions_executed,
        invariants,
        facts,
    })
}

#[cfg(test)]
mod tests;
