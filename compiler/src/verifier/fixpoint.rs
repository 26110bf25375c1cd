//! The worklist fixpoint over block heads. In: the [`Env`], the entry [`State`] and the [`Cfg`]. Out: the final
//! state at every (call context, block head), the per-back-edge counters for the termination proof, the analysed
//! nodes and (optionally) the invariant before every instruction — or the first failed check.
//!
//! States are kept only where paths merge (and at entries, call return sites and loop heads); every other slot
//! has one predecessor and is processed right after it. Local calls are inlined: a node
//! is (call context, slot). At loop heads the first `widening_delay` merges are joins, later ones widen.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::isa::semantics::zero_extension_at;
use crate::isa::{Instruction, MemSize, Reg};
use crate::platform::windows::HELPER_MAP_LOOKUP_ELEM;
use crate::program::MapType;

use super::cfg::Cfg;
use super::num::Thresholds;
use super::state::{ty, LoopDeltas, State, Value};
use super::termination::{edge_counters, EdgeCounters};
use super::transfer::{self, Edge, Successors};
use super::verified::BranchDirections;
use super::{Env, Failure, Property, MAX_CALL_DEPTH};

/// Call contexts: each is (parent, call-site slot, callee entry slot).
pub(super) struct Contexts {
    pub list: Vec<(Option<usize>, usize, usize)>,
    index: HashMap<(usize, usize), usize>,
}

impl Contexts {
    pub fn path(&self, mut c: usize) -> Vec<usize> {
        let mut p = Vec::new();
        while let (Some(parent), call, _) = self.list[c] {
            p.push(call);
            c = parent;
        }
        p.reverse();
        p
    }

    pub fn depth(&self, c: usize) -> usize {
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

/// A node key for the loop-delta maps: (call context, slot of the loop head).
pub(super) fn node_key(ctx: usize, pc: usize) -> u64 {
    ((ctx as u64) << 32) | pc as u64
}

/// The stored states of one call context, by dense head index: (state, number of merges).
type HeadStates = Vec<Option<Box<(State, u32)>>>;

/// The fixpoint and what it found.
pub(super) struct Fixpoint<'a> {
    env: &'a Env<'a>,
    cfg: &'a Cfg,
    thresholds: Thresholds,
    pub ctxs: Contexts,
    /// Per context, per head (dense index [`Cfg::head_index`]): the final state and the number of merges.
    /// Boxed so that an absent head costs one word and a stored state is never moved once made.
    states: Vec<HeadStates>,
    worklist: BTreeSet<(usize, usize)>,
    /// (context, back-edge source, loop head) -> counters on that edge.
    pub counters: HashMap<(usize, usize, usize), EdgeCounters>,
    pub invariants: HashMap<(usize, usize), State>,
    /// `callx` slot -> the helper ids its register held (one per calling context), for lowering.
    pub callx_helpers: BTreeMap<usize, BTreeSet<u32>>,
    /// Conditional-jump slot -> the directions followed from it in any context, for lowering.
    pub branch_directions: BTreeMap<usize, BranchDirections>,
    /// Zero-extension idioms ([`crate::isa::semantics::zero_extension_at`]) -> whether the register was a number
    /// below 2^32 in every visit so far.
    zero_extension_visits: BTreeMap<usize, bool>,
    /// `bpf_map_lookup_elem` call slots -> the one map `r1` was in every visit so far (`None` once a visit had no
    /// single known map or another one).
    map_lookup_visits: BTreeMap<usize, Option<u32>>,
    /// Atomic slots visited with an address that is stack only, and the first alignment failure of such a visit.
    stack_atomic_visits: BTreeMap<usize, Option<Failure>>,
    /// Atomic slots visited with an address that may be a map value.
    shared_atomic_visits: BTreeSet<usize>,
    /// Per context, a bitset over slots: the analysed nodes.
    visited: Vec<Vec<u64>>,
    /// Per slot: a head whose stored state is final when the worklist pops it, so the state is moved out
    /// instead of copied and freed once its block is analysed ([`final_when_popped`]).
    final_when_popped: Vec<bool>,
    /// Per slot: the stored state was moved out by `run` (no edge may reach the head any more).
    moved_out: Vec<bool>,
    pub max_depth: usize,
}

impl<'a> Fixpoint<'a> {
    pub fn new(env: &'a Env<'a>, cfg: &'a Cfg) -> Fixpoint<'a> {
        // Widening thresholds: the constants programs compare with (loop bounds, length checks). ALU immediates
        // are left out: with them the number of thresholds, and so of widening steps per loop, would grow with
        // the program.
        let thresholds = Thresholds::new(env.program.iter().filter_map(|i| match *i {
            Instruction::JumpIf { src: crate::isa::Operand::Imm(c), .. } => Some(c as i64),
            _ => None,
        }));
        Fixpoint {
            env,
            cfg,
            thresholds,
            ctxs: Contexts { list: vec![(None, 0, 0)], index: HashMap::new() },
            states: Vec::new(),
            worklist: BTreeSet::new(),
            counters: HashMap::new(),
            invariants: HashMap::new(),
            callx_helpers: BTreeMap::new(),
            branch_directions: BTreeMap::new(),
            zero_extension_visits: BTreeMap::new(),
            map_lookup_visits: BTreeMap::new(),
            stack_atomic_visits: BTreeMap::new(),
            shared_atomic_visits: BTreeSet::new(),
            visited: Vec::new(),
            final_when_popped: final_when_popped(env.program, cfg),
            moved_out: vec![false; env.program.len()],
            max_depth: 1,
        }
    }

    /// Runs the worklist from `entry` until no head state grows.
    pub fn run(&mut self, entry: State) -> Result<(), Failure> {
        self.ensure_context(0);
        self.states[0][self.cfg.head_index[0] as usize] = Some(Box::new((entry, 0)));
        self.worklist.insert((0, 0));
        while let Some((ctx, head)) = self.worklist.pop_first() {
            let st = if self.final_when_popped[head] {
                self.moved_out[head] = true;
                let i = self.cfg.head_index[head] as usize;
                self.states[ctx][i].take().expect("a queued head has a state").0
            } else {
                self.state(ctx, head).expect("a queued head has a state").clone()
            };
            self.run_block(ctx, head, st)?;
        }
        Ok(())
    }

    /// The stored state of head `pc` in context `ctx` (after `run`: its final state).
    pub fn state(&self, ctx: usize, pc: usize) -> Option<&State> {
        let i = *self.cfg.head_index.get(pc)?;
        self.states.get(ctx)?.get(i as usize)?.as_ref().map(|b| &b.0)
    }

    /// Every (context, head) with a stored state, in (context, slot) order.
    pub fn stored_heads(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.states.iter().enumerate().flat_map(move |(c, heads)| {
            heads.iter().enumerate().filter(|(_, s)| s.is_some()).map(move |(i, _)| (c, self.cfg.heads[i]))
        })
    }

    /// Every analysed (context, slot) node, in (context, slot) order.
    pub fn visited_nodes(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.visited.iter().enumerate().flat_map(|(c, bits)| {
            bits.iter()
                .enumerate()
                .flat_map(move |(w, word)| (0..64).filter(move |b| word >> b & 1 == 1).map(move |b| (c, w * 64 + b)))
        })
    }

    /// Number of analysed nodes.
    pub fn visited_count(&self) -> usize {
        self.visited.iter().flatten().map(|w| w.count_ones() as usize).sum()
    }

    fn mark_visited(&mut self, ctx: usize, pc: usize) {
        if self.visited.len() <= ctx {
            let words = self.env.program.len().div_ceil(64);
            self.visited.resize_with(ctx + 1, || vec![0; words]);
        }
        self.visited[ctx][pc / 64] |= 1 << (pc % 64);
    }

    /// Makes the (empty) head storage of every context up to `ctx`.
    fn ensure_context(&mut self, ctx: usize) {
        if self.states.len() <= ctx {
            let heads = self.cfg.heads.len();
            self.states.resize_with(ctx + 1, || std::iter::repeat_with(|| None).take(heads).collect());
        }
    }

    /// Analyses from a stored head through every slot that has no stored state of its own (one predecessor),
    /// depth first, handing states for merge points and loop heads to `follow`. Straight-line code updates one
    /// state in place; only a conditional jump makes a second.
    fn run_block(&mut self, ctx: usize, head: usize, st: State) -> Result<(), Failure> {
        let mut pending = vec![(head, st)];
        while let Some((mut pc, mut st)) = pending.pop() {
            loop {
                self.mark_visited(ctx, pc);
                if self.env.options.record_invariants {
                    self.invariants.insert((ctx, pc), st.clone());
                }
                let callx = match self.env.program[pc] {
                    Instruction::CallReg { reg } => {
                        Some(st.regs[reg.index()].num.singleton().and_then(|id| u32::try_from(id).ok()))
                    }
                    _ => None,
                };
                // The atomic's address register before `step` updates the state (a fetch may overwrite it).
                let atomic = match self.env.program[pc] {
                    Instruction::Atomic { size, dst, offset, .. } => {
                        Some((size, dst, offset, st.regs[dst.index()].clone()))
                    }
                    _ => None,
                };
                self.record_zero_extension(pc, &st);
                self.record_map_lookup(pc, &st);
                let out = transfer::step(self.env, pc, &mut st)?;
                if let Some(id) = callx {
                    // `step` accepted the call only with a constant, known helper id in `reg`.
                    self.callx_helpers.entry(pc).or_default().extend(id);
                }
                if let Some((size, dst, offset, base)) = atomic {
                    self.record_atomic(pc, size, dst, offset, &base);
                }
                match out {
                    Successors::One(Edge::Local(t)) if !self.cfg.needs_state[t] => pc = t,
                    Successors::One(edge) => {
                        self.follow(ctx, pc, edge, st)?;
                        break;
                    }
                    Successors::Split(out) => {
                        if let Some(target) =
                            self.env.program[pc].jump_target(pc).filter(|_| self.is_conditional_jump(pc))
                        {
                            self.record_directions(pc, target, &out);
                        }
                        for (edge, s) in out {
                            match edge {
                                Edge::Local(t) if !self.cfg.needs_state[t] => pending.push((t, s)),
                                _ => self.follow(ctx, pc, edge, s)?,
                            }
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn is_conditional_jump(&self, pc: usize) -> bool {
        matches!(self.env.program[pc], Instruction::JumpIf { .. })
    }

    /// Records which successors of the conditional jump at `pc` the step produced. An assumption (test suites
    /// only) drops its taken edge without proving it infeasible, so both directions count as possible there.
    fn record_directions(&mut self, pc: usize, target: i64, out: &[(Edge, State)]) {
        let d = self.branch_directions.entry(pc).or_default();
        if self.env.assumptions.binary_search(&pc).is_ok() {
            *d = BranchDirections { taken: true, not_taken: true };
            return;
        }
        for (edge, _) in out {
            if let Edge::Local(t) = *edge {
                d.taken |= t as i64 == target;
                d.not_taken |= t == pc + 1;
            }
        }
    }

    /// Records whether the register of a zero-extension idiom at `pc` is, in the state `st` before it, a number
    /// below 2^32, which the idiom leaves unchanged. Every visit's state is contained in the final state of its
    /// calling context and the last visit from each head uses the final state, so "in every visit" is "in the final
    /// state of every context": the fact covers every concrete execution reaching `pc`. Programs with assumptions
    /// (PREVAIL's `assume`, test suites only) narrow states without proof, so they get no fact.
    fn record_zero_extension(&mut self, pc: usize, st: &State) {
        let Some(idiom) = zero_extension_at(self.env.program, pc) else { return };
        let v = &st.regs[idiom.reg.index()];
        let fits = self.env.assumptions.is_empty() && v.types == ty::NUMBER && v.num.umax <= u32::MAX as u64;
        *self.zero_extension_visits.entry(pc).or_insert(true) &= fits;
    }

    /// The zero-extension idioms whose register was below 2^32 in every analysed visit (see
    /// [`Fixpoint::record_zero_extension`]): lowering may leave them out.
    pub fn redundant_zero_extensions(&self) -> BTreeSet<usize> {
        self.zero_extension_visits.iter().filter(|(_, &fits)| fits).map(|(&pc, _)| pc).collect()
    }

    /// Records the map handle in `r1` before a `bpf_map_lookup_elem` call at `pc`: one map, the same in every visit,
    /// or no fact. As for [`Fixpoint::record_zero_extension`], "every visit" covers every concrete execution
    /// reaching `pc` in every calling context; programs with assumptions get no fact.
    fn record_map_lookup(&mut self, pc: usize, st: &State) {
        if !matches!(self.env.program[pc], Instruction::CallHelper { id } if id as u32 == HELPER_MAP_LOOKUP_ELEM) {
            return;
        }
        let r1 = &st.regs[1];
        let map = r1.maps.single().filter(|_| self.env.assumptions.is_empty() && r1.types == ty::MAP_FD);
        let fact = self.map_lookup_visits.entry(pc).or_insert(map);
        if *fact != map {
            *fact = None;
        }
    }

    /// The `bpf_map_lookup_elem` calls lowering may inline (contract §5.2): slot -> map index, where `r1` was the
    /// same single map in every analysed visit and that map is a plain `ARRAY` map of the module with 4-byte keys
    /// that is no map-in-map's inner template. The template condition is what makes "one map" mean "this map":
    /// the handle a map-in-map lookup returns is an inner map the runtime made from the template, which the
    /// analysis names by the template's index ([`super::transfer`]'s `lookup_result`), so a handle naming a
    /// template may be another map at run time. Every other handle comes from a `lddw` of that map. `PERCPU_ARRAY`
    /// and every other type go through the helper: the runtime's `array_data` is only the value storage of
    /// `ARRAY` maps (contract §2.2, §3.3).
    pub fn array_map_lookups(&self) -> BTreeMap<usize, u32> {
        let maps = self.env.maps;
        let is_template = |m: usize| {
            maps.iter().any(|d| d.inner_map_index == Some(m) || (d.inner_id != 0 && d.inner_id == maps[m].id))
        };
        let inlinable = |m: u32| {
            let m = m as usize;
            maps.get(m).is_some_and(|d| d.map_type == MapType::ARRAY && d.key_size == 4) && !is_template(m)
        };
        self.map_lookup_visits.iter().filter_map(|(&pc, &map)| map.filter(|&m| inlinable(m)).map(|m| (pc, m))).collect()
    }

    /// The atomic slots whose address is on the stack in every analysed visit (every calling context), which
    /// lowering may implement as plain load-op-store (docs/verifier.md §2). A slot that is stack-only in one
    /// context but may be a map value in another is lowered as a real atomic everywhere, so there its stack-only
    /// visits must be naturally aligned too: the first one that is not is the failure.
    pub fn stack_atomics(&self) -> Result<BTreeSet<usize>, Failure> {
        let mut stack_only = BTreeSet::new();
        for (pc, misaligned) in &self.stack_atomic_visits {
            match (self.shared_atomic_visits.contains(pc), misaligned) {
                (true, Some(f)) => return Err(f.clone()),
                (true, None) => {}
                (false, _) => {
                    stack_only.insert(*pc);
                }
            }
        }
        Ok(stack_only)
    }

    /// Records an accepted atomic's address kind: stack only (with its first alignment failure) or maybe a map value.
    fn record_atomic(&mut self, pc: usize, size: MemSize, dst: Reg, offset: i16, base: &Value) {
        // `step` accepted it, so the address is stack and/or a map value.
        if base.types == ty::STACK {
            let n = size.bytes() as i64;
            let aligned = transfer::check_atomic_alignment(pc, dst, base, offset as i64, n);
            let first = self.stack_atomic_visits.entry(pc).or_default();
            if first.is_none() {
                *first = aligned.err();
            }
        } else {
            self.shared_atomic_visits.insert(pc);
        }
    }

    /// Hands the state leaving `pc` along `edge` to a stored head: a merge point or loop head, a callee's
    /// entry, or the caller's return site.
    fn follow(&mut self, ctx: usize, pc: usize, edge: Edge, s: State) -> Result<(), Failure> {
        match edge {
            Edge::Local(t) => self.propagate(ctx, pc, t, s),
            Edge::Call { target } => self.call(ctx, pc, target, &s),
            Edge::Return => self.ret(ctx, pc, &s),
        }
    }

    fn call(&mut self, ctx: usize, pc: usize, target: usize, s: &State) -> Result<(), Failure> {
        if self.ctxs.entries(ctx).contains(&target) {
            return Err(Failure {
                pc,
                property: Property::Recursion,
                message: format!("illegal recursion: the function at {target} is already active"),
                values: vec![],
            });
        }
        if self.ctxs.depth(ctx) + 1 > MAX_CALL_DEPTH {
            return Err(Failure {
                pc,
                property: Property::CallDepth,
                message: format!("too many call stack frames (more than {MAX_CALL_DEPTH})"),
                values: vec![],
            });
        }
        let ctxs = &mut self.ctxs;
        let c = *ctxs.index.entry((ctx, pc)).or_insert_with(|| {
            ctxs.list.push((Some(ctx), pc, target));
            ctxs.list.len() - 1
        });
        self.max_depth = self.max_depth.max(self.ctxs.depth(c));
        self.propagate(c, usize::MAX, target, transfer::enter_call(s))
    }

    fn ret(&mut self, ctx: usize, pc: usize, s: &State) -> Result<(), Failure> {
        if let (Some(parent), call_pc, _) = self.ctxs.list[ctx] {
            let back = transfer::leave_call(s, pc)?;
            return self.propagate(parent, call_pc, call_pc + 1, back);
        }
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
        super::refs::check_no_references(self.env, s, pc, "program exit")
    }

    /// Merges `st` into the stored state of head node (ctx, to); re-queues it if it grew.
    fn propagate(&mut self, ctx: usize, from: usize, to: usize, mut st: State) -> Result<(), Failure> {
        if self.moved_out[to] {
            // `final_when_popped` proved that no edge reaches the head after it was popped; reaching it would
            // join with a state that no longer exists, so refuse rather than analyse from this state alone.
            return Err(Failure {
                pc: from,
                property: Property::ControlFlow,
                message: format!("internal verifier error: the edge from {from} reaches the finished head {to}"),
                values: vec![],
            });
        }
        let cfg = self.cfg;
        // Deltas matter only inside their loop, and packet ranges only while some pointer carries their id:
        // dropping the rest keeps states small, so the analysis stays linear in the program size.
        st.deltas.retain(|key, _| {
            let h = (*key & 0xffff_ffff) as usize;
            (*key >> 32) as usize != ctx || cfg.bodies.get(&h).is_some_and(|b| b.contains(&to))
        });
        if st.packet_ranges.len() > 4 {
            st.gc_packet_ranges();
        }
        let loop_head = cfg.is_loop_head[to];
        if loop_head {
            let key = node_key(ctx, to);
            if cfg.back_edges.contains(&(from, to)) {
                self.counters.insert((ctx, from, to), edge_counters(&st, key));
            }
            let at_head = LoopDeltas::at_head(&st);
            st.deltas.insert(key, at_head);
        }
        let i = cfg.head_index[to] as usize;
        self.ensure_context(ctx);
        let Some((old, visits)) = self.states[ctx][i].as_deref_mut() else {
            self.states[ctx][i] = Some(Box::new((st, 1)));
            self.worklist.insert((ctx, to));
            return Ok(());
        };
        let new = if loop_head && *visits >= self.env.options.widening_delay {
            old.widen(&st, &self.thresholds)
        } else {
            old.join(&st)
        };
        *visits += 1;
        if new != *old {
            *old = new;
            self.worklist.insert((ctx, to));
        }
        Ok(())
    }
}

/// The heads whose state is final when the worklist first pops them. The worklist pops (context, slot) in
/// ascending order, so with a single context (no local calls: a callee's return would reach its return site
/// only after the caller's later heads were popped) every state flowing into a head `h` comes from a slot
/// below `h` that is analysed before `h` is popped — unless some backward jump `s -> t` with `t <= h <= s`
/// can send control from at or above `h` back to or below it, i.e. `h` is inside a loop or a retreating
/// region. Such heads, and every head of a program with local calls, keep their stored state (loop heads are
/// also read by the termination proof).
fn final_when_popped(program: &[Instruction], cfg: &Cfg) -> Vec<bool> {
    let mut fin = vec![false; program.len()];
    if program.iter().any(|i| matches!(i, Instruction::CallLocal { .. })) {
        return fin;
    }
    // +1 where a backward jump's span [t, s] starts, -1 after it ends: a running sum > 0 means spanned.
    let mut span = vec![0i64; program.len() + 1];
    for (s, insn) in program.iter().enumerate() {
        if let Some(t) = insn.jump_target(s).and_then(|t| usize::try_from(t).ok()).filter(|&t| t <= s) {
            span[t] += 1;
            span[s + 1] -= 1;
        }
    }
    let mut open = 0;
    for (pc, f) in fin.iter_mut().enumerate() {
        open += span[pc];
        *f = open == 0 && cfg.needs_state[pc] && !cfg.is_loop_head[pc];
    }
    fin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{AluOp, JumpCond, Operand, Width};

    fn mov_add(op: AluOp, dst: Reg, imm: i32) -> Instruction {
        Instruction::Alu { width: Width::W64, op, dst, src: Operand::Imm(imm) }
    }

    fn jump_if(cond: JumpCond, dst: Reg, imm: i32, offset: i16) -> Instruction {
        Instruction::JumpIf { width: Width::W64, cond, dst, src: Operand::Imm(imm), offset }
    }

    /// A diamond, a loop with a diamond inside, a diamond after the loop.
    fn program() -> Vec<Instruction> {
        vec![
            mov_add(AluOp::Mov, Reg::R0, 0),
            jump_if(JumpCond::Gt, Reg::R0, 1, 1),
            mov_add(AluOp::Add, Reg::R0, 1),
            mov_add(AluOp::Mov, Reg::R1, 0), // 3: merge before the loop
            mov_add(AluOp::Add, Reg::R1, 1), // 4: loop head
            jump_if(JumpCond::Gt, Reg::R1, 2, 1),
            mov_add(AluOp::Add, Reg::R0, 1),
            jump_if(JumpCond::Lt, Reg::R1, 4, -4), // 7: merge inside the loop, back edge to 4
            jump_if(JumpCond::Gt, Reg::R0, 1, 1),
            mov_add(AluOp::Add, Reg::R0, 1),
            Instruction::Exit, // 10: merge after the loop
        ]
    }

    #[test]
    fn only_merge_points_outside_every_backward_jump_are_final_when_popped() {
        let p = program();
        let cfg = super::super::cfg::build_cfg(&p).expect("valid control flow");
        let fin = final_when_popped(&p, &cfg);
        let finals: Vec<usize> = (0..p.len()).filter(|&pc| fin[pc]).collect();
        // 0 is the entry (no predecessor can reach it again: no backward jump spans it), 4 a loop head, 7 inside
        // the loop.
        assert_eq!(finals, vec![0, 3, 10]);
    }

    #[test]
    fn no_head_is_final_when_popped_in_a_program_with_local_calls() {
        let mut p = program();
        p.insert(0, Instruction::CallLocal { offset: 0 }); // calls the slot after it: a second context
        let fin = final_when_popped(&p, &super::super::cfg::build_cfg(&p).expect("valid control flow"));
        assert!(fin.iter().all(|f| !f));
    }
}
