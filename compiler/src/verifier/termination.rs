//! Termination and the run-time bound (docs/verifier.md §4). In: the fixpoint's final states and the counters
//! recorded on every back edge. Out: a bound per loop (per call context), the bound on instructions executed per
//! invocation, checked against the budget — or a termination failure naming the loop.

use std::collections::{BTreeMap, HashMap};

use super::cfg::Cfg;
use super::fixpoint::Fixpoint;
use super::state::{Loc, State, Value};
use super::{Env, Failure, LoopBound, Property};

/// A location that moved monotonically by a non-wrapping constant since the loop head was last visited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counter {
    /// Increasing (true) or decreasing.
    up: bool,
    /// Smallest step per iteration (≥ 1).
    step: u64,
    /// Largest (increasing) or smallest (decreasing) value at the back-edge source.
    limit: u64,
}

/// The counters on one back edge, by location.
pub(super) type EdgeCounters = BTreeMap<Loc, Counter>;

/// The value a location holds in `st`, if it is a number (a slot must hold a value to have a delta).
fn number_at(st: &State, l: Loc) -> Option<&Value> {
    let v = match l {
        Loc::Reg(r) => &st.regs[r as usize],
        Loc::Slot(k) => st.stack.slot(k)?,
    };
    v.is_number().then_some(v)
}

/// Counter candidates on a back edge into the loop head `key`: locations whose delta since the head is a
/// non-wrapping change of their own value by at least 1 in one direction.
pub(super) fn edge_counters(st: &State, key: u64) -> EdgeCounters {
    let Some(deltas) = st.deltas.get(&key) else { return EdgeCounters::new() };
    let regs = (0..11u8).map(Loc::Reg);
    let slots = deltas.slots.keys().map(|k| Loc::Slot(*k));
    let mut out = EdgeCounters::new();
    for l in regs.chain(slots) {
        let (Some(d), Some(v)) = (deltas.get(l), number_at(st, l)) else { continue };
        if d.origin != l {
            continue;
        }
        if d.lo >= 1 {
            out.insert(l, Counter { up: true, step: d.lo as u64, limit: v.num.umax });
        } else if d.hi <= -1 {
            out.insert(l, Counter { up: false, step: d.hi.unsigned_abs(), limit: v.num.umin });
        }
    }
    out
}

/// The best bound of the loop at `head_state` from the counters on all its back edges: a location that is a
/// counter in the same direction on every edge bounds the loop by `(U - L_h) / step + 1` iterations.
fn best_counter(head_state: &State, edges: &[&EdgeCounters]) -> Option<(Loc, u64)> {
    let mut best: Option<(Loc, u64)> = None;
    for (l, first) in edges[0] {
        let Some(hv) = number_at(head_state, *l) else { continue };
        let all: Option<Vec<&Counter>> = edges.iter().map(|e| e.get(l)).collect();
        let Some(all) = all else { continue };
        if all.iter().any(|c| c.up != first.up) {
            continue;
        }
        let step = all.iter().map(|c| c.step).min().expect("non-empty");
        let bound = if first.up {
            let u = all.iter().map(|c| c.limit).max().expect("non-empty");
            u.saturating_sub(hv.num.umin) / step + 1
        } else {
            let l = all.iter().map(|c| c.limit).min().expect("non-empty");
            hv.num.umax.saturating_sub(l) / step + 1
        };
        if best.is_none_or(|(_, b)| bound < b) {
            best = Some((*l, bound));
        }
    }
    best
}

/// Proves a bound for every loop of every analysed activation; returns the bounds and a map
/// (context, head) -> bound.
type Bounds = (Vec<LoopBound>, HashMap<(usize, usize), u64>);

pub(super) fn loop_bounds(env: &Env, cfg: &Cfg, fx: &Fixpoint) -> Result<Bounds, Failure> {
    let heads: Vec<(usize, usize)> = fx.stored_heads().filter(|(_, pc)| cfg.is_loop_head[*pc]).collect();
    let mut by_head: HashMap<(usize, usize), Vec<&EdgeCounters>> = HashMap::new();
    for ((c, _, t), v) in &fx.counters {
        by_head.entry((*c, *t)).or_default().push(v);
    }
    let mut bounds = Vec::new();
    let mut bound_of = HashMap::new();
    for (ctx, h) in heads {
        let edges = by_head.remove(&(ctx, h)).unwrap_or_default();
        if edges.is_empty() {
            continue; // no back edge was ever feasible: not a loop in this activation
        }
        let head_state = fx.state(ctx, h).expect("a stored head");
        match best_counter(head_state, &edges) {
            Some((l, b)) if b <= env.options.max_loop_iterations => {
                bound_of.insert((ctx, h), b);
                bounds.push(LoopBound {
                    head: h,
                    call_path: fx.ctxs.path(ctx),
                    counter: l.to_string(),
                    max_iterations: b,
                });
            }
            Some((l, b)) => {
                let shown = number_at(head_state, l).map(|v| v.to_string()).unwrap_or_default();
                return Err(Failure {
                    pc: h,
                    property: Property::Termination,
                    message: format!(
                        "loop counter is too large: the loop at {h} may iterate {b} times (limit {})",
                        env.options.max_loop_iterations
                    ),
                    values: vec![(l.to_string(), shown)],
                });
            }
            None => {
                return Err(Failure {
                    pc: h,
                    property: Property::Termination,
                    message: format!("cannot prove that the loop at {h} terminates: no register or stack slot moves monotonically towards a bound on every iteration"),
                    values: vec![],
                });
            }
        }
    }
    Ok((bounds, bound_of))
}

/// The bound on instructions executed per invocation: executions of (ctx, pc) ≤ executions of the context's
/// call site × Π (bound + 1) over the loops containing pc; checked against `max_instructions`.
pub(super) fn instruction_bound(
    env: &Env,
    cfg: &Cfg,
    fx: &Fixpoint,
    bounds: &[LoopBound],
    bound_of: &HashMap<(usize, usize), u64>,
) -> Result<u64, Failure> {
    let mut mult: HashMap<usize, u64> = HashMap::new();
    mult.insert(0, 1);
    // Loop heads whose natural loop contains each slot (linear in the total size of the loop bodies).
    let mut containing: Vec<Vec<usize>> = vec![Vec::new(); env.program.len()];
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
    for c in 1..fx.ctxs.list.len() {
        let (parent, call, _) = fx.ctxs.list[c];
        let m = exec(parent.expect("callee"), call, &mult);
        mult.insert(c, m);
    }
    let mut total: u64 = 0;
    // The node executed most often names the loop to blame when the budget is exceeded.
    let mut hottest: Option<(u64, usize)> = None;
    for (ctx, pc) in fx.visited_nodes() {
        let e = exec(ctx, pc, &mult);
        if hottest.is_none_or(|(h, _)| e > h) {
            hottest = Some((e, pc));
        }
        total = total.saturating_add(e);
    }
    if total <= env.options.max_instructions {
        return Ok(total);
    }
    let pc = hottest.map_or(0, |(_, p)| p);
    // Blame the outermost loop around the hottest instruction (its bound multiplies every inner one).
    let head = cfg
        .bodies
        .iter()
        .filter(|(_, body)| body.contains(&pc))
        .max_by_key(|(_, body)| body.len())
        .map_or(pc, |(h, _)| *h);
    let loops: Vec<String> = bounds
        .iter()
        .filter(|b| cfg.bodies.get(&b.head).is_some_and(|body| body.contains(&pc)))
        .map(|b| format!("{} iterations at {} ({})", b.max_iterations, b.head, b.counter))
        .collect();
    Err(Failure {
        pc: head,
        property: Property::Termination,
        message: format!(
            "the program may execute up to {total} instructions per run, more than the budget of {} (--max-instructions); loop bounds multiply: {}",
            env.options.max_instructions,
            if loops.is_empty() { "none".to_string() } else { loops.join(" × ") }
        ),
        values: vec![],
    })
}
