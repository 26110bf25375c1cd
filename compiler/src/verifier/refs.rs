//! Reference tracking (docs/verifier.md §2, "References"): the Linux platform's socket lookups and
//! `bpf_ringbuf_reserve` return an object the program must give back (`bpf_sk_release`,
//! `bpf_ringbuf_submit`/`discard`), as the Linux verifier's `acquire_reference_state` / `release_reference`
//! require. A reference is named by the slot of the call that acquired it; `State::refs` holds the references
//! the program *may* hold, and `Value::ref_id` marks every copy of an acquired pointer (arithmetic on it keeps
//! the mark, so a derived `p + 8` dies with `p`).
//!
//! Invariants, over every concrete state an abstract state represents:
//! - (held) a reference not in `refs` is not held;
//! - (pointer) a defined value marked `k` that is a pointer is a pointer into the live object of reference `k`
//!   (so `k` is held), at the value's offset;
//! - (null) a defined value marked `k` that is a number means reference `k` is not held (the acquiring call
//!   returned null; `0 ⟹ not held` is what lets a null check end the reference).
//!
//! Acquire (slot `k`): `k` must not be in `refs` (a second acquisition at the same slot while the first may be
//! held would give two objects one name); stale marks of `k` are cleared as for a null check, then `r0` gets
//! the mark (pointer: held; null: not held). Release: the argument must be defined, of the reference's pointer
//! kind only (not null), at offset 0 (the kernel demands the pointer it returned) and marked with a `k` in
//! `refs` (by (pointer), `k` is held and the pointer is its object); every holder of `k` — registers, saved
//! caller registers, spills, in all frames — becomes undefined, so nothing can reach the object again, and `k`
//! leaves `refs`. Null branch of a null check on a value marked `k`: it is a number there, so by (null) `k` is
//! not held; `k` leaves `refs`, number holders drop the mark, any other holder becomes undefined. Joins take the
//! union of `refs`; a holder keeps a mark both sides agree on, keeps `k` when the other side holds a number and
//! not `k` (both invariants hold on each side), drops it when both sides are numbers, and otherwise becomes
//! undefined (a pointer whose reference is in doubt must not be usable). At program exit, at a tail call and at
//! a legacy packet load (which may end the program) `refs` must be empty: a leak names the acquiring slot.

use std::collections::BTreeSet;

use crate::isa::Instruction;

use super::state::{ty, Change, Loc, State, Value};
use super::{Env, Failure, Property};

/// The name of the failure value that holds the acquiring slot; `reject` adds its source line.
pub const ACQUIRED_AT: &str = "acquired at";

/// How a reference ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Given back by a releasing helper: every holder becomes undefined (marked, for the diagnostic).
    Released,
    /// Never held on this path (a null result, or a stale mark before a new acquisition at the same slot):
    /// number holders are plain numbers, anything else becomes undefined.
    NotHeld,
}

impl State {
    /// Ends reference `k`: it leaves `refs` and its holders become numbers or undefined (module doc).
    pub fn end_reference(&mut self, k: u32, how: End) {
        self.refs.remove(&k);
        let poisoned = |v: &Value| v.ref_id == Some(k) && (how == End::Released || !v.is_number());
        for i in 0..self.regs.len() {
            let v = &mut self.regs[i];
            if poisoned(v) {
                *v = Value { ref_id: (how == End::Released).then_some(k), ..Value::uninit() };
                self.record_change(Loc::Reg(i as u8), Change::Unknown);
                self.same_kind.written(i, None);
            } else if v.ref_id == Some(k) {
                v.ref_id = None;
            }
        }
        for v in self.frames.iter_mut().flat_map(|f| f.regs.iter_mut()) {
            if poisoned(v) {
                *v = Value { ref_id: (how == End::Released).then_some(k), ..Value::uninit() };
            } else if v.ref_id == Some(k) {
                v.ref_id = None;
            }
        }
        // Stack slots never hold undefined values: a poisoned slot's bytes become uninitialised instead.
        let slots: Vec<(i64, i64)> = (self.stack.spills.iter().map(|(o, v)| (*o, v, 8)))
            .chain(self.stack.narrow.iter().map(|(o, v)| (*o, v, 4)))
            .filter(|(_, v, _)| poisoned(v))
            .map(|(o, _, n)| (o, n))
            .collect();
        for (o, n) in slots {
            self.stack.clobber(o, o + n);
            for b in o..o + n {
                self.stack.set_init(b, false);
            }
            self.forget_init_extents(o, o + n);
        }
        if self.stack.spills.values().chain(self.stack.narrow.values()).any(|v| v.ref_id == Some(k)) {
            let strip = |v: &mut Value| {
                if v.ref_id == Some(k) {
                    v.ref_id = None;
                }
            };
            self.stack.spills_mut().values_mut().for_each(strip);
            self.stack.narrow.values_mut().for_each(strip);
        }
    }

    /// `r0` of an acquiring call at `pc` becomes reference `pc`; `false` if the program may still hold the
    /// reference the same call acquired before (a loop, or a function called twice).
    pub fn acquire_reference(&mut self, pc: usize, r0: &mut Value) -> bool {
        let k = pc as u32;
        let fresh = !self.refs.contains(&k);
        self.end_reference(k, End::NotHeld);
        self.refs.insert(k);
        r0.ref_id = Some(k);
        fresh
    }
}

/// The join of one holder, `a` in a state holding `a_refs` and `b` in one holding `b_refs`, already joined
/// without regard to references into `joined` (module doc).
pub fn join_holder(a: &Value, b: &Value, a_refs: &BTreeSet<u32>, b_refs: &BTreeSet<u32>, joined: Value) -> Value {
    if a.ref_id == b.ref_id {
        return joined;
    }
    if joined.is_number() {
        // Two numbers: marks only say "not held" there, which nothing needs.
        return Value { ref_id: None, ..joined };
    }
    for (x, y, y_refs) in [(a, b, b_refs), (b, a, a_refs)] {
        if let Some(k) = x.ref_id {
            if y.is_number() && !y_refs.contains(&k) {
                return Value { ref_id: Some(k), ..joined };
            }
        }
    }
    Value::uninit()
}

/// The helper that acquired reference `k`, for messages.
fn acquirer(env: &Env, k: u32) -> String {
    match env.program.get(k as usize) {
        Some(Instruction::CallHelper { id }) => {
            env.platform.helper(env.program_type, *id as u32).map_or("a helper".into(), |p| p.name.to_string())
        }
        _ => "a helper".into(),
    }
}

/// Rejects when the program may hold a reference where it may end (`at`: program exit, a tail call, a legacy
/// packet load), unless the options turn leak checking off.
pub fn check_no_references(env: &Env, st: &State, pc: usize, at: &str) -> Result<(), Failure> {
    let Some(&k) = st.refs.first().filter(|_| env.options.check_reference_leaks) else {
        return Ok(());
    };
    Err(Failure {
        pc,
        property: Property::ReferenceLeak,
        message: format!(
            "the reference {} returned at instruction {k} may still be held at {at}: release it on every path \
             (bpf_sk_release, bpf_ringbuf_submit or bpf_ringbuf_discard)",
            acquirer(env, k)
        ),
        values: vec![(ACQUIRED_AT.into(), k.to_string())],
    })
}

/// The failure for using a value whose reference was released (`what` names the use).
pub fn released(pc: usize, what: String, v: &Value) -> Option<Failure> {
    let k = v.ref_id.filter(|_| v.may_be(ty::UNINIT))?;
    Some(Failure {
        pc,
        property: Property::ReleasedReference,
        message: format!("{what} held a pointer whose reference (acquired at instruction {k}) was released"),
        values: vec![(ACQUIRED_AT.into(), k.to_string())],
    })
}
