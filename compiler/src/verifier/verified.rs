//! The verifier's output type: a program proven safe, with the facts the proof established.
//!
//! In: a program [`super::analyze`] accepted and the [`AnalysisFacts`] it recorded. Out: [`Verified`], the only
//! input [`crate::lower`] accepts. The kernel never re-checks native code (contract §8), so "only verified code is
//! lowered" is a type, not call-site discipline, and lowering relies on what the verifier proved instead of
//! re-deriving it: the helper each `callx` calls, the call depth (stack frames), the control-flow graph (block
//! leaders, loop heads), the directions each conditional jump can take.
//!
//! Harnesses that run *unverified* programs on purpose (bpf_conformance, differential tests against the
//! interpreter) use [`Verified::unchecked_for_testing`], which derives the same facts syntactically and is hidden
//! from the documentation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::isa::semantics::PacketFields;
use crate::isa::{AluOp, Imm64Kind, Instruction, Operand, Reg, Width};
use crate::program::{Module, Program};

use super::state::State;
use super::{reject, Failure, Property, Rejection, VerificationReport};

/// What the analysis established about particular slots, beyond the [`VerificationReport`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnalysisFacts {
    /// `callx` slot → the helper ids its register holds there. The register is a known constant in every calling
    /// context (or the program is rejected); a function called from several sites may see one id per site.
    /// Slots the analysis never reached are absent.
    pub callx_helpers: BTreeMap<usize, BTreeSet<u32>>,
    /// Heads of the natural loops the analysis found (targets of back edges).
    pub loop_heads: BTreeSet<usize>,
    /// Conditional-jump slot → the directions the analysis followed from it, over every calling context and every
    /// state the fixpoint stepped (each a subset of the final one, so the union is the final state's). A direction
    /// missing here is one no execution takes: the abstract state before the jump covers every concrete state, and
    /// the refinement found that direction's condition unsatisfiable in it. Slots the analysis never reached are
    /// absent.
    pub branch_directions: BTreeMap<usize, BranchDirections>,
    /// Atomic slots whose address is in the invocation's own stack in every calling context. The frame is
    /// private to one invocation, so lowering may implement these as a plain load, operation and store (the same
    /// RFC 9669 §5.3 result, and no alignment fault); the verifier did not require them to be aligned.
    pub stack_atomics: BTreeSet<usize>,
    /// Slots of zero-extension idioms ([`crate::isa::semantics::zero_extension_at`]: `r <<= 32; r >>= 32` or
    /// `w = w`) whose register is a number below 2^32 in every analysed state in every calling context, so the
    /// idiom leaves it unchanged (issue 16: lowering leaves these out). Slots the analysis never reached are absent.
    pub redundant_zero_extensions: BTreeSet<usize>,
    /// `bpf_map_lookup_elem` call slots whose `r1` is the same map in every analysed state in every calling
    /// context, that map being a plain `ARRAY` map with 4-byte keys and no map-in-map's inner template: slot ->
    /// module map index. Lowering may inline these lookups (contract §5.2; issue 16 item 2). Slots the analysis
    /// never reached are absent.
    pub array_map_lookups: BTreeMap<usize, u32>,
}

/// The directions the analysis found feasible for one conditional jump (RFC 9669 §4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BranchDirections {
    /// The condition held in some analysed state: the jump goes to its target.
    pub taken: bool,
    /// The condition failed in some analysed state: execution falls through.
    pub not_taken: bool,
}

/// What lowering may do with a conditional jump, by the verifier's proof ([`Verified::branch_decision`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchDecision {
    /// Both directions are possible (or nothing was proven): compare and branch.
    Compare,
    /// Every execution that reaches the jump takes it: an unconditional jump to the target.
    AlwaysTaken,
    /// No execution takes it: fall through.
    NeverTaken,
}

/// The abstract state before one instruction in one calling context (`verify --show-state`).
#[derive(Clone, Debug, PartialEq)]
pub struct Invariant {
    /// Call-site slots of the activation (empty for the entry function).
    pub call_path: Vec<usize>,
    pub pc: usize,
    pub state: State,
}

impl serde::Serialize for Invariant {
    /// As `[call_path, pc, "state"]`, the shape `verify --format json` has always printed.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = serializer.serialize_tuple(3)?;
        t.serialize_element(&self.call_path)?;
        t.serialize_element(&self.pc)?;
        t.serialize_element(&self.state.to_string())?;
        t.end()
    }
}

/// The control-flow facts lowering builds on, checked once for the whole program.
///
/// Functions are separate machine functions (contract §5.1), so every jump must stay inside its function, every
/// local call must target a function's first slot, and control must not fall from one function into the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlFlow {
    /// Per slot: whether a basic block starts there (a function's first slot, a jump target, the slot after a
    /// jump or `exit` inside the same function).
    block_leaders: Vec<bool>,
    loop_heads: BTreeSet<usize>,
    /// Per local-call slot: the index of the called function.
    callees: BTreeMap<usize, usize>,
}

impl ControlFlow {
    /// Checks the structure of `program` and records its block leaders and callees.
    fn new(program: &Program, loop_heads: BTreeSet<usize>) -> Result<ControlFlow, Failure> {
        let insns = &program.instructions;
        let cf = |pc: usize, message: String| Failure { pc, property: Property::ControlFlow, message, values: vec![] };
        if program.functions.first().is_none_or(|f| f.start != 0) {
            return Err(cf(0, "the program has no entry function at slot 0".into()));
        }
        let mut block_leaders = vec![false; insns.len()];
        let mut callees = BTreeMap::new();
        for f in &program.functions {
            if f.start >= f.end || f.end > insns.len() {
                return Err(cf(f.start, format!("function `{}` has no instructions", f.name)));
            }
            block_leaders[f.start] = true;
            for pc in f.start..f.end {
                let insn = &insns[pc];
                let inside = |slot: i64| slot >= f.start as i64 && slot < f.end as i64;
                match insn {
                    Instruction::Jump { .. } | Instruction::JumpIf { .. } => {
                        let target = insn.jump_target(pc).expect("a jump has a target");
                        if !inside(target) {
                            return Err(cf(pc, format!("jump target slot {target} leaves the function")));
                        }
                        if matches!(insns[target as usize], Instruction::LoadImm64Continuation) {
                            return Err(cf(pc, format!("jump target {target} is the second slot of a lddw")));
                        }
                        block_leaders[target as usize] = true;
                    }
                    Instruction::CallLocal { .. } => {
                        let target = insn.jump_target(pc).expect("a call has a target");
                        let callee = program.functions.iter().position(|g| g.start as i64 == target);
                        let Some(callee) = callee else {
                            return Err(cf(
                                pc,
                                format!("local call target slot {target} is not the start of a function"),
                            ));
                        };
                        callees.insert(pc, callee);
                    }
                    _ => {}
                }
                if matches!(insn, Instruction::Jump { .. } | Instruction::JumpIf { .. } | Instruction::Exit)
                    && pc + 1 < f.end
                {
                    block_leaders[pc + 1] = true;
                }
            }
            let last = (f.start..f.end).rev().find(|&pc| !matches!(insns[pc], Instruction::LoadImm64Continuation));
            if let Some(last) = last.filter(|&pc| insns[pc].falls_through()) {
                return Err(cf(last, format!("control falls off the end of function `{}`", f.name)));
            }
        }
        Ok(ControlFlow { block_leaders, loop_heads, callees })
    }

    /// Whether a basic block starts at `slot`.
    pub fn is_block_leader(&self, slot: usize) -> bool {
        self.block_leaders.get(slot).copied().unwrap_or(false)
    }

    /// Heads of the program's loops.
    pub fn loop_heads(&self) -> &BTreeSet<usize> {
        &self.loop_heads
    }

    /// The function index the local call at `slot` calls (`None` if `slot` is not a local call).
    pub fn callee(&self, slot: usize) -> Option<usize> {
        self.callees.get(&slot).copied()
    }
}

/// The helper a `callx` calls, as far as the proof goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallxTarget {
    /// One helper in every calling context.
    Helper(u32),
    /// Different helpers in different calling contexts (a function called from several sites).
    PerCallingContext,
    /// The verifier proved the instruction unreachable.
    Unreachable,
}

/// Program `index` of a module, proven safe by [`super::verify_program`] (or, for test harnesses only, assumed
/// safe by [`Verified::unchecked_for_testing`]).
#[derive(Clone, Debug)]
pub struct Verified<'m> {
    module: &'m Module,
    index: usize,
    report: VerificationReport,
    control_flow: ControlFlow,
    callx_helpers: BTreeMap<usize, BTreeSet<u32>>,
    /// The analysis's [`AnalysisFacts::branch_directions`]; `None` when nothing was proven
    /// ([`Verified::unchecked_for_testing`]).
    branch_directions: Option<BTreeMap<usize, BranchDirections>>,
    /// See [`AnalysisFacts::stack_atomics`].
    stack_atomics: BTreeSet<usize>,
    /// See [`AnalysisFacts::redundant_zero_extensions`]; empty when nothing was proven.
    redundant_zero_extensions: BTreeSet<usize>,
    /// See [`AnalysisFacts::array_map_lookups`]; empty when nothing was proven.
    array_map_lookups: BTreeMap<usize, u32>,
    /// Frames of the deepest chain of local calls (1 without calls).
    call_depth: u32,
    /// Where the program type's context keeps the packet (`None` without packet fields): legacy packet loads
    /// read `data`/`data_end` there through r6, which the verifier proved is this context.
    packet_fields: Option<PacketFields>,
}

impl<'m> Verified<'m> {
    /// Builds the gate's value from an accepted analysis (called by [`super::verify_program`] only).
    #[allow(clippy::result_large_err)] // the same error type as `verify_program`
    pub(super) fn from_analysis(
        module: &'m Module,
        index: usize,
        report: VerificationReport,
        facts: AnalysisFacts,
        packet_fields: Option<PacketFields>,
    ) -> Result<Verified<'m>, Rejection> {
        let program = &module.programs[index];
        let control_flow = ControlFlow::new(program, facts.loop_heads)
            .map_err(|f| reject(&program.name, &program.instructions, &program.line_info, f))?;
        let call_depth = report.max_call_depth as u32;
        Ok(Verified {
            module,
            index,
            report,
            control_flow,
            callx_helpers: facts.callx_helpers,
            branch_directions: Some(facts.branch_directions),
            stack_atomics: facts.stack_atomics,
            redundant_zero_extensions: facts.redundant_zero_extensions,
            array_map_lookups: facts.array_map_lookups,
            call_depth,
            packet_fields,
        })
    }

    /// **Not a safety gate.** Derives the facts lowering needs from the program text alone, without running the
    /// verifier: for harnesses that compile programs the verifier would reject on purpose (bpf_conformance, the
    /// interpreter-vs-native differential tests) and never ship the result. `callx` targets must be constants
    /// loaded in the same straight-line sequence; local calls must not recurse. Atomics addressed through `r10`
    /// (always the frame) count as stack atomics.
    #[doc(hidden)]
    #[allow(clippy::result_large_err)] // the same error type as `verify_program`
    pub fn unchecked_for_testing(module: &'m Module, index: usize) -> Result<Verified<'m>, Rejection> {
        let program = module.programs.get(index).ok_or_else(|| Rejection {
            program: String::new(),
            pc: 0,
            instruction: String::new(),
            property: Property::ControlFlow,
            message: format!("the module has no program {index}"),
            values: vec![],
            file: None,
            line: None,
            column: None,
            source_line: None,
        })?;
        let facts = (|| {
            let loop_heads = program
                .instructions
                .iter()
                .enumerate()
                .filter(|(_, i)| matches!(i, Instruction::Jump { .. } | Instruction::JumpIf { .. }))
                .filter_map(|(pc, i)| i.jump_target(pc).filter(|&t| t <= pc as i64))
                .map(|t| t as usize)
                .collect();
            let control_flow = ControlFlow::new(program, loop_heads)?;
            let call_depth = syntactic_call_depth(program, &control_flow)?;
            let mut callx_helpers = BTreeMap::new();
            for (pc, insn) in program.instructions.iter().enumerate() {
                if let Instruction::CallReg { reg } = *insn {
                    callx_helpers.insert(pc, BTreeSet::from([straight_line_constant(program, pc, reg)?]));
                }
            }
            Ok((control_flow, call_depth, callx_helpers))
        })();
        let (control_flow, call_depth, callx_helpers) =
            facts.map_err(|f| reject(&program.name, &program.instructions, &program.line_info, f))?;
        let report = VerificationReport {
            program: program.name.clone(),
            nodes: 0,
            max_call_depth: call_depth as usize,
            stack_bytes: call_depth as usize * crate::isa::STACK_FRAME_SIZE as usize,
            loop_bounds: vec![],
            max_instructions_executed: None,
            invariants: vec![],
            facts: AnalysisFacts::default(),
        };
        let stack_atomics = program
            .instructions
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i, Instruction::Atomic { dst: Reg::FP, .. }))
            .map(|(pc, _)| pc)
            .collect();
        Ok(Verified {
            module,
            index,
            report,
            control_flow,
            callx_helpers,
            branch_directions: None,
            stack_atomics,
            redundant_zero_extensions: BTreeSet::new(),
            array_map_lookups: BTreeMap::new(),
            call_depth,
            packet_fields: None,
        })
    }

    /// **Not a safety gate.** Gives an [`Verified::unchecked_for_testing`] program a context layout for its legacy
    /// packet loads (harnesses that run them on a hand-made context).
    #[doc(hidden)]
    pub fn with_packet_fields_for_testing(mut self, fields: PacketFields) -> Verified<'m> {
        self.packet_fields = Some(fields);
        self
    }

    /// Where the context keeps `data` and `data_end`, for lowering legacy packet loads (RFC 9669 §5.5); `None`
    /// when the program type's context has no packet (the verifier then rejects every legacy load).
    pub fn packet_fields(&self) -> Option<PacketFields> {
        self.packet_fields
    }

    pub fn module(&self) -> &'m Module {
        self.module
    }

    /// The program's index in [`Verified::module`].
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn program(&self) -> &'m Program {
        &self.module.programs[self.index]
    }

    /// Loop bounds, instruction bound, stack size and (on request) the invariants, for reporting.
    pub fn report(&self) -> &VerificationReport {
        &self.report
    }

    pub fn into_report(self) -> VerificationReport {
        self.report
    }

    pub fn control_flow(&self) -> &ControlFlow {
        &self.control_flow
    }

    /// Frames of the deepest chain of local calls (1 without calls); each frame is
    /// [`crate::isa::STACK_FRAME_SIZE`] bytes (contract §5.7).
    pub fn call_depth(&self) -> u32 {
        self.call_depth
    }

    /// The helper the `callx` at `slot` calls.
    pub fn callx_target(&self, slot: usize) -> CallxTarget {
        match self.callx_helpers.get(&slot) {
            None => CallxTarget::Unreachable,
            Some(ids) if ids.len() == 1 => CallxTarget::Helper(*ids.first().expect("one id")),
            Some(_) => CallxTarget::PerCallingContext,
        }
    }

    /// The directions the analysis found feasible for the conditional jump at `slot`: `None` if the analysis never
    /// reached it or nothing was proven ([`Verified::unchecked_for_testing`]).
    pub fn branch_directions(&self, slot: usize) -> Option<BranchDirections> {
        self.branch_directions.as_ref()?.get(&slot).copied()
    }

    /// How the conditional jump at `slot` may be lowered: unconditionally when the proof leaves one direction (a
    /// re-check of a proven packet bound, a null check of a proven non-null pointer, a comparison with a proven
    /// range). Unreached slots and unverified programs keep the comparison.
    pub fn branch_decision(&self, slot: usize) -> BranchDecision {
        match self.branch_directions(slot) {
            Some(BranchDirections { taken: true, not_taken: false }) => BranchDecision::AlwaysTaken,
            Some(BranchDirections { taken: false, not_taken: true }) => BranchDecision::NeverTaken,
            _ => BranchDecision::Compare,
        }
    }

    /// Whether the atomic at `slot` addresses the invocation's own stack in every execution (see
    /// [`AnalysisFacts::stack_atomics`]): lowering may then use a plain load-op-store.
    pub fn is_stack_atomic(&self, slot: usize) -> bool {
        self.stack_atomics.contains(&slot)
    }

    /// Whether the zero-extension idiom at `slot` leaves its register unchanged in every execution (see
    /// [`AnalysisFacts::redundant_zero_extensions`]): lowering may then leave it out.
    pub fn is_redundant_zero_extension(&self, slot: usize) -> bool {
        self.redundant_zero_extensions.contains(&slot)
    }

    /// The module map the `bpf_map_lookup_elem` call at `slot` looks up in every execution, when the proof shows it
    /// is one plain `ARRAY` map of the module (see [`AnalysisFacts::array_map_lookups`]): lowering may then index
    /// the map's values directly instead of calling the helper.
    pub fn array_map_lookup(&self, slot: usize) -> Option<usize> {
        self.array_map_lookups.get(&slot).map(|&m| m as usize)
    }

    /// Helper ids the program calls (`call imm` and `callx`), in first-appearance order.
    pub fn helper_ids(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        for (pc, insn) in self.program().instructions.iter().enumerate() {
            let called: Vec<u32> = match *insn {
                Instruction::CallHelper { id } => vec![id as u32],
                Instruction::CallReg { .. } => self.callx_helpers.get(&pc).into_iter().flatten().copied().collect(),
                _ => continue,
            };
            for id in called {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }
}

impl fmt::Display for CallxTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallxTarget::Helper(id) => write!(f, "helper {id}"),
            CallxTarget::PerCallingContext => f.write_str("a different helper per calling context"),
            CallxTarget::Unreachable => f.write_str("unreachable"),
        }
    }
}

/// Frames the deepest chain of local calls needs (1 without calls), from the call graph; recursion fails.
fn syntactic_call_depth(program: &Program, cfg: &ControlFlow) -> Result<u32, Failure> {
    fn depth(
        program: &Program,
        cfg: &ControlFlow,
        f: usize,
        visiting: &mut Vec<bool>,
        memo: &mut Vec<Option<u32>>,
    ) -> Result<u32, Failure> {
        if let Some(d) = memo[f] {
            return Ok(d);
        }
        let func = &program.functions[f];
        if visiting[f] {
            return Err(Failure {
                pc: func.start,
                property: Property::Recursion,
                message: "recursive local calls".into(),
                values: vec![],
            });
        }
        visiting[f] = true;
        let mut deepest = 0;
        for pc in func.start..func.end {
            if let Some(callee) = cfg.callee(pc) {
                deepest = deepest.max(depth(program, cfg, callee, visiting, memo)?);
            }
        }
        visiting[f] = false;
        memo[f] = Some(deepest + 1);
        Ok(deepest + 1)
    }
    let n = program.functions.len();
    depth(program, cfg, 0, &mut vec![false; n], &mut vec![None; n])
}

/// The helper id a `callx` at `pc` calls, when an earlier instruction of the same straight-line sequence loaded
/// `reg` with a constant.
fn straight_line_constant(program: &Program, pc: usize, reg: Reg) -> Result<u32, Failure> {
    let unknown = |message: String| Failure { pc, property: Property::UnknownHelper, message, values: vec![] };
    let jump_targets: BTreeSet<usize> = program
        .instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i, Instruction::Jump { .. } | Instruction::JumpIf { .. }))
        .filter_map(|(p, i)| i.jump_target(p))
        .filter_map(|t| usize::try_from(t).ok())
        .collect();
    let mut at = pc;
    while at > 0 && !jump_targets.contains(&at) {
        at -= 1;
        match program.instructions[at] {
            Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(id) } if dst == reg => {
                return u32::try_from(id).map_err(|_| unknown(format!("callx target {reg} holds {id}")));
            }
            Instruction::LoadImm64 { dst, kind: Imm64Kind::Imm, imm, next_imm } if dst == reg => {
                return u32::try_from(Instruction::imm64(imm, next_imm))
                    .map_err(|_| unknown(format!("callx target {reg} is not a helper id")));
            }
            Instruction::Jump { .. } | Instruction::JumpIf { .. } | Instruction::Exit => break,
            Instruction::CallHelper { .. } | Instruction::CallLocal { .. } | Instruction::CallReg { .. }
                if reg.index() <= 5 =>
            {
                break
            }
            ref other if other.written_register() == Some(reg) => break,
            _ => {}
        }
    }
    Err(unknown(format!("callx through {reg}: the helper id is not a compile-time constant")))
}
