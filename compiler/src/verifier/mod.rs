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
//! computed with a worklist over block heads, joins at merge points and widening with thresholds at loop
//! heads. Every safety check is monotone in the state, so a check that fails on any intermediate state also
//! fails on the fixpoint; checks are therefore performed during the iteration, and the last processing of
//! every block uses its final state.

pub mod diagnostic;
mod functions;
pub mod num;
pub mod state;
pub mod transfer;
pub mod verified;

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::isa::{Instruction, Reg};
use crate::platform::{Platform, ProgramType};
use crate::program::{GlobalSection, LineInfo, MapDefinition, Module};

use num::{Num, Thresholds};
use state::{ty, State, Value};
use transfer::Edge;

pub use verified::{AnalysisFacts, CallxTarget, ControlFlow, Invariant, Verified};

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
    /// Record the invariant at every instruction (`--show-state`).
    pub record_invariants: bool,
    /// Joins at a loop head before widening starts.
    pub widening_delay: u32,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            allow_division_by_zero: true,
            check_termination: true,
            max_loop_iterations: 1 << 24,
            ctx_pointer_size: 8,
            record_invariants: false,
            widening_delay: 2,
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
    Recursion,
    CallDepth,
    ControlFlow,
    InvalidInstruction,
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
            Property::Recursion => "recursion",
            Property::CallDepth => "call stack too deep",
            Property::ControlFlow => "invalid control flow",
            Property::InvalidInstruction => "unsupported instruction",
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
        options,
        assumptions: &[],
    };
    functions::check_function_boundaries(&program.instructions, &program.functions)
        .map_err(|f| reject(&program.name, &program.instructions, &program.line_info, f))?;
    let mut report = analyze(&env, entry_state(), &program.name)
        .map_err(|f| reject(&program.name, &program.instructions, &program.line_info, f))?;
    let facts = std::mem::take(&mut report.facts);
    Verified::from_analysis(module, index, report, facts)
}

/// Attaches a failure to its program and source location.
pub fn reject(name: &str, program: &[Instruction], line_info: &[LineInfo], f: Failure) -> Rejection {
    // The line-info record that covers the slot: the last one at or before it.
    let li = line_info.iter().filter(|l| l.slot <= f.pc).max_by_key(|l| l.slot);
    Rejection {
        program: name.to_string(),
        pc: f.pc,
        instruction: program.get(f.pc).map(diagnostic::disassemble).unwrap_or_default(),
        property: f.property,
        message: f.message,
        values: f.values,
        file: li.map(|l| l.file.clone()),
        line: li.map(|l| l.line),
        column: li.map(|l| l.column),
        source_line: li.map(|l| l.source_line.clone()),
    }
}

/// Call contexts: each is (parent, call-site slot, callee entry slot).
struct Contexts {
    list: Vec<(Option<usize>, usize, usize)>,
    index: HashMap<(usize, usize), usize>,
}

impl Contexts {
    fn path(&self, mut c: usize) -> Vec<usize> {
        let mut p = Vec::new();
        while let (Some(parent), call, _) = self.list[c] {
            p.push(call);
            c = parent;
        }
        p.reverse();
        p
    }
    fn depth(&self, c: usize) -> usize {
        self.path(c).len() + 1
    }
    fn entries(&self, mut c: usize) -> Vec<usize> {
        let mut v = vec![self.list[c].2];
        while let (Some(parent), _, _) = self.list[c] {
            c = parent;
            v.push(self.list[c].2);
        }
        v
    }
}

/// Static control-flow facts per function: block heads, back edges, natural loops.
struct Cfg {
    is_head: Vec<bool>,
    /// (source, head) of every back edge.
    back_edges: HashSet<(usize, usize)>,
    loop_heads: HashSet<usize>,
    /// Loop head -> slots of its natural loop body.
    bodies: HashMap<usize, HashSet<usize>>,
    /// Irreducible retreating edge, if any: (source, target).
    irreducible: Option<(usize, usize)>,
}

fn local_successors(program: &[Instruction], pc: usize) -> Vec<usize> {
    let insn = &program[pc];
    let mut v = Vec::new();
    match insn {
        Instruction::Jump { .. } => v.extend(insn.jump_target(pc).map(|t| t as usize)),
        Instruction::JumpIf { .. } => {
            v.push(pc + 1);
            v.extend(insn.jump_target(pc).map(|t| t as usize));
        }
        Instruction::Exit => {}
        Instruction::LoadImm64 { .. } => v.push(pc + 2),
        _ => v.push(pc + 1),
    }
    v
}

fn build_cfg(program: &[Instruction]) -> Result<Cfg, Failure> {
    let n = program.len();
    let cf = |pc: usize, m: String| Failure { pc, property: Property::ControlFlow, message: m, values: vec![] };
    let mut entries = vec![0usize];
    for (pc, insn) in program.iter().enumerate() {
        match insn {
            Instruction::Jump { .. } | Instruction::JumpIf { .. } | Instruction::CallLocal { .. } => {
                let t = insn.jump_target(pc).expect("jump");
                if t < 0 || t as usize >= n {
                    return Err(cf(pc, format!("jump or call target {t} is outside the program (0..{n})")));
                }
                if matches!(program[t as usize], Instruction::LoadImm64Continuation) {
                    return Err(cf(pc, format!("jump target {t} is the second slot of a lddw")));
                }
                if matches!(insn, Instruction::CallLocal { .. }) {
                    entries.push(t as usize);
                }
            }
            _ => {}
        }
        if insn.falls_through() && !matches!(insn, Instruction::LoadImm64Continuation) && pc + insn.slots().max(1) >= n
        {
            return Err(cf(pc, "control falls off the end of the program".into()));
        }
    }
    let mut is_head = vec![false; n + 2];
    for &e in &entries {
        is_head[e] = true;
    }
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n + 2];
    for (pc, insn) in program.iter().enumerate() {
        if matches!(insn, Instruction::LoadImm64Continuation) {
            continue;
        }
        let succ = local_successors(program, pc);
        if matches!(insn, Instruction::JumpIf { .. } | Instruction::Jump { .. } | Instruction::CallLocal { .. }) {
            for &s in &succ {
                is_head[s] = true;
            }
        }
        if let Instruction::CallLocal { .. } = insn {
            is_head[pc + 1] = true;
        }
        for s in succ {
            preds[s].push(pc);
        }
    }
    for (pc, p) in preds.iter().enumerate() {
        if p.len() > 1 {
            is_head[pc] = true;
        }
    }
    // DFS per function for retreating edges; dominators (Cooper–Harvey–Kennedy) to check they are back edges.
    let mut back_edges = HashSet::new();
    let mut irreducible = None;
    let mut bodies: HashMap<usize, HashSet<usize>> = HashMap::new();
    let mut seen_entry = HashSet::new();
    for &entry in &entries {
        if !seen_entry.insert(entry) {
            continue;
        }
        let mut order = Vec::new(); // postorder
        let mut color: HashMap<usize, u8> = HashMap::new();
        let mut stack = vec![(entry, 0usize)];
        color.insert(entry, 1);
        let mut retreating = Vec::new();
        while let Some((v, i)) = stack.pop() {
            let succ = local_successors(program, v);
            if i < succ.len() {
                stack.push((v, i + 1));
                let w = succ[i];
                match color.get(&w) {
                    None => {
                        color.insert(w, 1);
                        stack.push((w, 0));
                    }
                    Some(1) => retreating.push((v, w)),
                    _ => {}
                }
            } else {
                color.insert(v, 2);
                order.push(v);
            }
        }
        let rpo: Vec<usize> = order.iter().rev().copied().collect();
        let pos: HashMap<usize, usize> = rpo.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let mut idom: Vec<Option<usize>> = vec![None; rpo.len()];
        idom[0] = Some(0);
        let mut changed = true;
        while changed {
            changed = false;
            for i in 1..rpo.len() {
                let mut new: Option<usize> = None;
                for p in &preds[rpo[i]] {
                    let Some(&pi) = pos.get(p) else { continue };
                    if idom[pi].is_none() {
                        continue;
                    }
                    new = Some(match new {
                        None => pi,
                        Some(mut a) => {
                            let mut b = pi;
                            while a != b {
                                while a > b {
                                    a = idom[a].expect("processed");
                                }
                                while b > a {
                                    b = idom[b].expect("processed");
                                }
                            }
                            a
                        }
                    });
                }
                if new.is_some() && idom[i] != new {
                    idom[i] = new;
                    changed = true;
                }
            }
        }
        let dominates = |h: usize, mut v: usize| loop {
            if v == h {
                return true;
            }
            if v == 0 {
                return false;
            }
            v = idom[v].expect("reachable");
        };
        for (s, h) in retreating {
            back_edges.insert((s, h));
            if !dominates(pos[&h], pos[&s]) {
                irreducible.get_or_insert((s, h));
                continue;
            }
            let body = bodies.entry(h).or_default();
            body.insert(h);
            let mut work = vec![s];
            while let Some(v) = work.pop() {
                if body.insert(v) {
                    work.extend(preds[v].iter().copied().filter(|p| pos.contains_key(p)));
                }
            }
        }
    }
    let loop_heads = back_edges.iter().map(|(_, h)| *h).collect();
    Ok(Cfg { is_head, back_edges, loop_heads, bodies, irreducible })
}

fn node_key(ctx: usize, pc: usize) -> u64 {
    ((ctx as u64) << 32) | pc as u64
}

/// Per back edge: for each register, (direction, |minimum step|, bound at the source) when it moved
/// monotonically by a non-wrapping constant since the head was last visited.
type EdgeCounters = [Option<(bool, u64, u64)>; 11];

/// Runs the analysis from `entry`.
pub fn analyze(env: &Env, entry: State, name: &str) -> Result<VerificationReport, Failure> {
    let program = env.program;
    if program.is_empty() {
        return Err(Failure {
            pc: 0,
            property: Property::ControlFlow,
            message: "the program is empty".into(),
            values: vec![],
        });
    }
    let cfg = build_cfg(program)?;
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
    // Widening thresholds: the constants programs compare with (loop bounds, length checks). ALU immediates are
    // left out: with them the number of thresholds, and so of widening steps per loop, would grow with the
    // program.
    let thresholds = Thresholds::new(program.iter().filter_map(|i| match *i {
        Instruction::JumpIf { src: crate::isa::Operand::Imm(c), .. } => Some(c as i64),
        _ => None,
    }));
    let mut ctxs = Contexts { list: vec![(None, 0, 0)], index: HashMap::new() };
    let mut states: HashMap<(usize, usize), (State, u32)> = HashMap::new();
    let mut worklist: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut counters: HashMap<(usize, usize, usize), EdgeCounters> = HashMap::new();
    let mut invariants: HashMap<(usize, usize), State> = HashMap::new();
    let mut facts = AnalysisFacts { loop_heads: cfg.loop_heads.iter().copied().collect(), ..Default::default() };
    let mut visited: HashSet<(usize, usize)> = HashSet::new();
    states.insert((0, 0), (entry, 0));
    worklist.insert((0, 0));
    let mut max_depth = 1;

    // Merges `st` into the stored state of a head node; re-queues it if it grew.
    let propagate = |states: &mut HashMap<(usize, usize), (State, u32)>,
                     worklist: &mut BTreeSet<(usize, usize)>,
                     counters: &mut HashMap<(usize, usize, usize), EdgeCounters>,
                     ctx: usize,
                     from: usize,
                     to: usize,
                     mut st: State| {
        // Deltas matter only inside their loop, and packet ranges only while some pointer carries their id:
        // dropping the rest keeps states small, so the analysis stays linear in the program size.
        st.deltas.retain(|key, _| {
            let h = (*key & 0xffff_ffff) as usize;
            (*key >> 32) as usize != ctx || cfg.bodies.get(&h).is_some_and(|b| b.contains(&to))
        });
        if st.packet_ranges.len() > 4 {
            st.gc_packet_ranges();
        }
        if cfg.loop_heads.contains(&to) {
            let key = node_key(ctx, to);
            if cfg.back_edges.contains(&(from, to)) {
                let mut c: EdgeCounters = [None; 11];
                if let Some(d) = st.deltas.get(&key) {
                    for r in 0..11 {
                        let v = &st.regs[r];
                        if let (Some((lo, hi)), true) = (d[r], v.is_number()) {
                            if lo >= 1 {
                                c[r] = Some((true, lo as u64, v.num.umax));
                            } else if hi <= -1 {
                                c[r] = Some((false, hi.unsigned_abs(), v.num.umin));
                            }
                        }
                    }
                }
                counters.insert((ctx, from, to), c);
            }
            st.deltas.insert(key, [Some((0, 0)); 11]);
        }
        match states.get_mut(&(ctx, to)) {
            None => {
                states.insert((ctx, to), (st, 1));
                worklist.insert((ctx, to));
            }
            Some((old, visits)) => {
                let new = if cfg.loop_heads.contains(&to) && *visits >= env.options.widening_delay {
                    old.widen(&st, &thresholds)
                } else {
                    old.join(&st)
                };
                *visits += 1;
                if new != *old {
                    *old = new;
                    worklist.insert((ctx, to));
                }
            }
        }
    };

    while let Some((ctx, head)) = worklist.pop_first() {
        let mut st = states[&(ctx, head)].0.clone();
        let mut pc = head;
        loop {
            visited.insert((ctx, pc));
            if env.options.record_invariants {
                invariants.insert((ctx, pc), st.clone());
            }
            let out = transfer::step(env, pc, &st)?;
            if let Instruction::CallReg { reg } = program[pc] {
                // `step` accepted the call only with a constant, known helper id in `reg`.
                let id = st.regs[reg.index()].num.singleton().and_then(|id| u32::try_from(id).ok());
                facts.callx_helpers.entry(pc).or_default().extend(id);
            }
            let mut inline: Option<(usize, State)> = None;
            let single = out.len() == 1;
            for (edge, s) in out {
                match edge {
                    Edge::Local(t) => {
                        if single && !cfg.is_head[t] {
                            inline = Some((t, s));
                        } else {
                            propagate(&mut states, &mut worklist, &mut counters, ctx, pc, t, s);
                        }
                    }
                    Edge::Call { target } => {
                        if ctxs.entries(ctx).contains(&target) {
                            return Err(Failure {
                                pc,
                                property: Property::Recursion,
                                message: format!("illegal recursion: the function at {target} is already active"),
                                values: vec![],
                            });
                        }
                        if ctxs.depth(ctx) + 1 > MAX_CALL_DEPTH {
                            return Err(Failure {
                                pc,
                                property: Property::CallDepth,
                                message: format!("too many call stack frames (more than {MAX_CALL_DEPTH})"),
                                values: vec![],
                            });
                        }
                        let c = *ctxs.index.entry((ctx, pc)).or_insert_with(|| {
                            ctxs.list.push((Some(ctx), pc, target));
                            ctxs.list.len() - 1
                        });
                        max_depth = max_depth.max(ctxs.depth(c));
                        let callee = transfer::enter_call(&s);
                        propagate(&mut states, &mut worklist, &mut counters, c, usize::MAX, target, callee);
                    }
                    Edge::Return => match ctxs.list[ctx] {
                        (Some(parent), call_pc, _) => {
                            let back = transfer::leave_call(&s, pc)?;
                            propagate(&mut states, &mut worklist, &mut counters, parent, call_pc, call_pc + 1, back);
                        }
                        (None, _, _) => {
                            let r0 = &s.regs[0];
                            if r0.may_be(ty::UNINIT) {
                                return Err(Failure {
                                    pc,
                                    property: Property::Uninitialized,
                                    message: "r0 may be uninitialised at program exit".into(),
                                    values: vec![("r0".into(), r0.to_string())],
                                });
                            }
                            if r0.may_be(ty::POINTERS) {
                                return Err(Failure {
                                    pc,
                                    property: Property::PointerLeak,
                                    message: "the program returns a pointer".into(),
                                    values: vec![("r0".into(), r0.to_string())],
                                });
                            }
                        }
                    },
                }
            }
            match inline {
                Some((t, s)) => {
                    pc = t;
                    st = s;
                }
                None => break,
            }
        }
    }

    // Loop bounds from the final states (module doc of docs/verifier.md §Termination).
    let mut loop_bounds = Vec::new();
    let mut bound_of: HashMap<(usize, usize), u64> = HashMap::new();
    if env.options.check_termination {
        let mut heads: Vec<(usize, usize)> =
            states.keys().filter(|(_, pc)| cfg.loop_heads.contains(pc)).copied().collect();
        heads.sort_unstable();
        let mut by_head: HashMap<(usize, usize), Vec<&EdgeCounters>> = HashMap::new();
        for ((c, _, t), v) in &counters {
            by_head.entry((*c, *t)).or_default().push(v);
        }
        for (ctx, h) in heads {
            let edges: Vec<&EdgeCounters> = by_head.remove(&(ctx, h)).unwrap_or_default();
            if edges.is_empty() {
                continue; // no back edge was ever feasible: not a loop in this activation
            }
            let head_state = &states[&(ctx, h)].0;
            let mut best: Option<(usize, u64)> = None;
            for r in 0..11 {
                let hv = &head_state.regs[r];
                if !hv.is_number() {
                    continue;
                }
                let all: Option<Vec<(bool, u64, u64)>> = edges.iter().map(|e| e[r]).collect();
                let Some(all) = all else { continue };
                let up = all[0].0;
                if all.iter().any(|e| e.0 != up) {
                    continue;
                }
                let step = all.iter().map(|e| e.1).min().expect("non-empty");
                let bound = if up {
                    let u = all.iter().map(|e| e.2).max().expect("non-empty");
                    u.saturating_sub(hv.num.umin) / step + 1
                } else {
                    let l = all.iter().map(|e| e.2).min().expect("non-empty");
                    hv.num.umax.saturating_sub(l) / step + 1
                };
                if best.is_none_or(|(_, b)| bound < b) {
                    best = Some((r, bound));
                }
            }
            match best {
                Some((r, b)) if b <= env.options.max_loop_iterations => {
                    bound_of.insert((ctx, h), b);
                    loop_bounds.push(LoopBound {
                        head: h,
                        call_path: ctxs.path(ctx),
                        counter: Reg::new(r as u8).expect("reg").to_string(),
                        max_iterations: b,
                    });
                }
                Some((r, b)) => {
                    return Err(Failure {
                        pc: h,
                        property: Property::Termination,
                        message: format!(
                            "loop counter is too large: the loop at {h} may iterate {b} times (limit {})",
                            env.options.max_loop_iterations
                        ),
                        values: vec![(format!("r{r}"), states[&(ctx, h)].0.regs[r].to_string())],
                    });
                }
                None => {
                    return Err(Failure {
                        pc: h,
                        property: Property::Termination,
                        message: format!("cannot prove that the loop at {h} terminates: no register moves monotonically towards a bound on every iteration"),
                        values: vec![],
                    });
                }
            }
        }
    }
    let max_instructions_executed = env.options.check_termination.then(|| {
        // Executions of (ctx, pc) ≤ executions of the context's call site × Π (bound + 1) of loops containing pc.
        let mut total: u64 = 0;
        let mut mult: HashMap<usize, u64> = HashMap::new();
        mult.insert(0, 1);
        let mut nodes: Vec<&(usize, usize)> = visited.iter().collect();
        nodes.sort_unstable();
        // Loop heads whose natural loop contains each slot (linear in the total size of the loop bodies).
        let mut containing: Vec<Vec<usize>> = vec![Vec::new(); program.len()];
        for (h, body) in &cfg.bodies {
            for &pc in body {
                containing[pc].push(*h);
            }
        }
        let exec = |ctx: usize, pc: usize, mult: &HashMap<usize, u64>| -> u64 {
            let mut e = mult.get(&ctx).copied().unwrap_or(u64::MAX);
            for h in &containing[pc] {
                let b = bound_of.get(&(ctx, *h)).copied().unwrap_or(0);
                e = e.saturating_mul(b.saturating_add(1));
            }
            e
        };
        for c in 1..ctxs.list.len() {
            let (parent, call, _) = ctxs.list[c];
            let m = exec(parent.expect("callee"), call, &mult);
            mult.insert(c, m);
        }
        for (ctx, pc) in nodes {
            total = total.saturating_add(exec(*ctx, *pc, &mult));
        }
        total
    });
    let mut inv: Vec<Invariant> =
        invariants.into_iter().map(|((c, pc), state)| Invariant { call_path: ctxs.path(c), pc, state }).collect();
    inv.sort_by(|a, b| (&a.call_path, a.pc).cmp(&(&b.call_path, b.pc)));
    Ok(VerificationReport {
        program: name.to_string(),
        nodes: visited.len(),
        max_call_depth: max_depth,
        stack_bytes: max_depth * state::STACK_FRAME_SIZE as usize,
        loop_bounds,
        max_instructions_executed,
        invariants: inv,
        facts,
    })
}

#[cfg(test)]
mod tests;
