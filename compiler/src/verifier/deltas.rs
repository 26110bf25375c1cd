//! Loop deltas for the termination proof (docs/verifier.md §4): per loop head, how each register and stack
//! slot changed since the last visit of the head, when it changed only by copies and non-wrapping constant
//! additions. Part of the [`State`]; re-exported by [`super::state`].

use std::collections::BTreeMap;
use std::fmt;

use super::num::Num;
use super::state::{SortedMap, State};

/// A location whose change since the last visit of a loop head is tracked: a register, or the stack slot
/// (8-byte spill or 4-byte number slot) starting at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Loc {
    Reg(u8),
    Slot(i64),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Reg(r) => write!(f, "r{r}"),
            Loc::Slot(k) => write!(f, "stack[{k}]"),
        }
    }
}

/// `now = (value of origin at the last visit of the loop head) + δ` for some `δ ∈ [lo, hi]`, with no wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta {
    pub origin: Loc,
    pub lo: i64,
    pub hi: i64,
}

/// How a write changed a location, for the loop deltas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Anything else: the delta becomes unknown.
    Unknown,
    /// The location's own value plus a constant, and the addition cannot wrap.
    Add(i64),
    /// A copy of another location's current value (mov, spill, reload).
    CopyOf(Loc),
}

/// The deltas of every location for one loop head. A slot's entry is meaningful only while the slot holds a
/// value ([`Stack::slot`]): every store that creates a slot value sets or clears its entry.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopDeltas {
    pub regs: [Option<Delta>; 11],
    pub slots: BTreeMap<i64, Delta>,
}

impl LoopDeltas {
    /// At the loop head every location equals itself.
    pub fn at_head(st: &State) -> LoopDeltas {
        let me = |origin| Some(Delta { origin, lo: 0, hi: 0 });
        LoopDeltas {
            regs: std::array::from_fn(|r| me(Loc::Reg(r as u8))),
            slots: st
                .stack
                .spills
                .keys()
                .chain(st.stack.narrow.keys())
                .map(|k| (*k, Delta { origin: Loc::Slot(*k), lo: 0, hi: 0 }))
                .collect::<SortedMap<_, _>>()
                .0,
        }
    }

    pub fn get(&self, l: Loc) -> Option<Delta> {
        match l {
            Loc::Reg(r) => self.regs[r as usize],
            Loc::Slot(k) => self.slots.get(&k).copied(),
        }
    }

    pub(super) fn apply(&mut self, target: Loc, change: Change) {
        let new = match change {
            Change::Unknown => None,
            Change::Add(c) => self
                .get(target)
                .and_then(|d| Some(Delta { origin: d.origin, lo: d.lo.checked_add(c)?, hi: d.hi.checked_add(c)? })),
            Change::CopyOf(l) => self.get(l),
        };
        match target {
            Loc::Reg(r) => self.regs[r as usize] = new,
            Loc::Slot(k) => {
                match new {
                    Some(d) => self.slots.insert(k, d),
                    None => self.slots.remove(&k),
                };
            }
        }
    }

    pub(super) fn combine(&self, o: &LoopDeltas, g: &impl Fn(&Num, &Num) -> Num) -> LoopDeltas {
        LoopDeltas {
            regs: std::array::from_fn(|i| combine_delta(self.regs[i], o.regs[i], g)),
            slots: self
                .slots
                .iter()
                .filter_map(|(k, a)| Some((*k, combine_delta(Some(*a), o.slots.get(k).copied(), g)?)))
                .collect::<SortedMap<_, _>>()
                .0,
        }
    }
}

/// The join (or widening, `g`) of two deltas with the same origin.
pub fn combine_delta(a: Option<Delta>, b: Option<Delta>, g: &impl Fn(&Num, &Num) -> Num) -> Option<Delta> {
    let (a, b) = (a?, b?);
    if a.origin != b.origin {
        return None;
    }
    let n = g(&Num::signed(a.lo, a.hi)?, &Num::signed(b.lo, b.hi)?);
    Some(Delta { origin: a.origin, lo: n.smin, hi: n.smax })
}
