//! Static control flow of a program: block heads, DFS back edges, dominators and natural loops, per function
//! (the entry and every local-call target). In: the instructions. Out: a [`Cfg`], or a control-flow failure
//! (a jump outside the program or into a `lddw`'s second slot, or falling off the end).

use std::collections::{HashMap, HashSet};

use crate::isa::Instruction;

use super::{Failure, Property};

/// Static control-flow facts per function: block heads, back edges, natural loops.
pub(super) struct Cfg {
    /// Slots whose state the fixpoint stores and joins: function entries, call return sites, slots with more
    /// than one predecessor and loop heads. Every other slot has one predecessor and is analysed right after it.
    pub needs_state: Vec<bool>,
    /// (source, head) of every back edge.
    pub back_edges: HashSet<(usize, usize)>,
    pub loop_heads: HashSet<usize>,
    /// Per slot: whether it is a loop head (the fixpoint asks on every propagation; a vector, not a hash).
    pub is_loop_head: Vec<bool>,
    /// The slots with `needs_state`, ascending; the fixpoint stores head states densely by position here.
    pub heads: Vec<usize>,
    /// Per slot: its position in `heads`, or `u32::MAX` for a slot without a stored state.
    pub head_index: Vec<u32>,
    /// Loop head -> slots of its natural loop body.
    pub bodies: HashMap<usize, HashSet<usize>>,
    /// Irreducible retreating edge, if any: (source, target).
    pub irreducible: Option<(usize, usize)>,
}

/// The local successors of `pc` (at most two; no allocation, the CFG walks ask for them per visit).
pub(super) fn local_successors(program: &[Instruction], pc: usize) -> impl Iterator<Item = usize> {
    let insn = &program[pc];
    let target = insn.jump_target(pc).map(|t| t as usize);
    let (a, b) = match insn {
        Instruction::Jump { .. } => (target, None),
        Instruction::JumpIf { .. } => (Some(pc + 1), target),
        Instruction::Exit => (None, None),
        Instruction::LoadImm64 { .. } => (Some(pc + 2), None),
        _ => (Some(pc + 1), None),
    };
    a.into_iter().chain(b)
}

pub(super) fn build_cfg(program: &[Instruction]) -> Result<Cfg, Failure> {
    let entries = function_entries(program)?;
    let (needs_state, preds) = merge_points_and_predecessors(program, &entries);
    let mut cfg = Cfg {
        needs_state,
        back_edges: HashSet::new(),
        loop_heads: HashSet::new(),
        is_loop_head: Vec::new(),
        heads: Vec::new(),
        head_index: Vec::new(),
        bodies: HashMap::new(),
        irreducible: None,
    };
    let mut seen_entry = HashSet::new();
    for &entry in &entries {
        if seen_entry.insert(entry) {
            add_loops(program, entry, &preds, &mut cfg);
        }
    }
    cfg.loop_heads = cfg.back_edges.iter().map(|(_, h)| *h).collect();
    cfg.is_loop_head = vec![false; cfg.needs_state.len()];
    for &h in &cfg.loop_heads {
        cfg.needs_state[h] = true;
        cfg.is_loop_head[h] = true;
    }
    cfg.heads = (0..cfg.needs_state.len()).filter(|&pc| cfg.needs_state[pc]).collect();
    cfg.head_index = vec![u32::MAX; cfg.needs_state.len()];
    for (i, &pc) in cfg.heads.iter().enumerate() {
        cfg.head_index[pc] = i as u32;
    }
    Ok(cfg)
}

/// Checks every jump and call target and that control cannot fall off the end; returns the function entries
/// (the program start and every local-call target).
fn function_entries(program: &[Instruction]) -> Result<Vec<usize>, Failure> {
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
    Ok(entries)
}

/// Slots that need a stored state (entries, call return sites, merge points; loop heads are added later) and the
/// local predecessors of every slot.
fn merge_points_and_predecessors(program: &[Instruction], entries: &[usize]) -> (Vec<bool>, Predecessors) {
    let n = program.len();
    let mut needs_state = vec![false; n + 2];
    for &e in entries {
        needs_state[e] = true;
    }
    let edges = || {
        program
            .iter()
            .enumerate()
            .filter(|(_, i)| !matches!(i, Instruction::LoadImm64Continuation))
            .flat_map(|(pc, _)| local_successors(program, pc).map(move |s| (pc, s)))
    };
    // Compressed rows: count each slot's predecessors, then place them (two passes, three allocations in all).
    let mut start = vec![0u32; n + 3];
    for (_, s) in edges() {
        start[s + 1] += 1;
    }
    for i in 1..start.len() {
        start[i] += start[i - 1];
    }
    let mut list = vec![0usize; start[n + 2] as usize];
    let mut next = start.clone();
    for (pc, s) in edges() {
        list[next[s] as usize] = pc;
        next[s] += 1;
    }
    let preds = Predecessors { start, list };
    for (pc, insn) in program.iter().enumerate() {
        if let Instruction::CallLocal { .. } = insn {
            needs_state[pc + 1] = true;
        }
    }
    for (pc, state) in needs_state.iter_mut().enumerate() {
        if preds.of(pc).len() > 1 {
            *state = true;
        }
    }
    (needs_state, preds)
}

/// The local predecessors of every slot (and of the two slots past the end), in ascending order, stored as
/// compressed rows: one list and one start index per slot, not one vector per slot.
struct Predecessors {
    start: Vec<u32>,
    list: Vec<usize>,
}

impl Predecessors {
    /// Number of slots covered.
    fn len(&self) -> usize {
        self.start.len() - 1
    }

    fn of(&self, pc: usize) -> &[usize] {
        &self.list[self.start[pc] as usize..self.start[pc + 1] as usize]
    }
}

/// Marks a slot outside the function being analysed in a reverse-postorder position table.
const UNREACHED: usize = usize::MAX;

/// Depth-first search of one function: its slots in reverse postorder and its retreating edges.
fn dfs(program: &[Instruction], entry: usize) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut order = Vec::new(); // postorder
                                // 0 = unseen, 1 = on the DFS stack, 2 = finished.
    let mut color = vec![0u8; program.len() + 2];
    let mut stack = vec![(entry, 0usize)];
    color[entry] = 1;
    let mut retreating = Vec::new();
    while let Some((v, i)) = stack.pop() {
        if let Some(w) = local_successors(program, v).nth(i) {
            stack.push((v, i + 1));
            match color[w] {
                0 => {
                    color[w] = 1;
                    stack.push((w, 0));
                }
                1 => retreating.push((v, w)),
                _ => {}
            }
        } else {
            color[v] = 2;
            order.push(v);
        }
    }
    order.reverse();
    (order, retreating)
}

/// Immediate dominators (Cooper–Harvey–Kennedy) by reverse-postorder position; `pos` maps slots to positions.
fn immediate_dominators(rpo: &[usize], pos: &[usize], preds: &Predecessors) -> Vec<Option<usize>> {
    let mut idom: Vec<Option<usize>> = vec![None; rpo.len()];
    idom[0] = Some(0);
    let mut changed = true;
    while changed {
        changed = false;
        for i in 1..rpo.len() {
            let mut new: Option<usize> = None;
            for p in preds.of(rpo[i]) {
                let pi = pos[*p];
                if pi == UNREACHED {
                    continue;
                }
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
    idom
}

/// Adds the back edges and natural loops of the function at `entry`; a retreating edge whose target does not
/// dominate its source makes the CFG irreducible.
fn add_loops(program: &[Instruction], entry: usize, preds: &Predecessors, cfg: &mut Cfg) {
    let (rpo, retreating) = dfs(program, entry);
    // Slot -> reverse-postorder position in this function (`UNREACHED` for slots of other functions).
    let mut pos = vec![UNREACHED; preds.len()];
    for (i, v) in rpo.iter().enumerate() {
        pos[*v] = i;
    }
    let idom = immediate_dominators(&rpo, &pos, preds);
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
        cfg.back_edges.insert((s, h));
        if !dominates(pos[h], pos[s]) {
            cfg.irreducible.get_or_insert((s, h));
            continue;
        }
        let body = cfg.bodies.entry(h).or_default();
        body.insert(h);
        let mut work = vec![s];
        while let Some(v) = work.pop() {
            if body.insert(v) {
                work.extend(preds.of(v).iter().copied().filter(|p| pos[*p] != UNREACHED));
            }
        }
    }
}
