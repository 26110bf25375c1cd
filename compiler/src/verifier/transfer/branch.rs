//! Conditional jumps (RFC 9669 §4.3): numeric refinement of both operands and their copies, null checks on
//! pointers-or-null (refining every copy), packet bounds from comparisons with `data_end` and from lengths.

use crate::isa::{JumpCond, Operand, Reg, Width};

use crate::verifier::num::Num;
use crate::verifier::refs::End;
use crate::verifier::relations::{shared_kinds, META_BASE};
use crate::verifier::state::{ty, State, Value};
use crate::verifier::{Failure, Property};

use super::{fail, operand, read, show};

/// Refines `s` (spent: the caller passes a copy for all but the last branch) for the branch where `dst cond src` holds (`taken`) or fails; `None` if infeasible.
pub(super) fn branch(
    s: State,
    pc: usize,
    width: Width,
    cond: JumpCond,
    dst: Reg,
    src: Operand,
    taken: bool,
) -> Result<Option<State>, Failure> {
    let a = read(&s, dst, pc)?;
    let b = operand(&s, src, width, pc)?;
    if a.is_number() && b.is_number() {
        return Ok(compare_numbers(s, width, cond, dst, src, &a, &b, taken));
    }
    let vals = || vec![show(dst.to_string(), &a), show("src", &b)];
    if width == Width::W32 {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "32-bit comparison of a pointer (it would compare part of an address)",
            vals(),
        ));
    }
    if let Operand::Reg(sr) = src {
        if shared_kinds(&s, dst.index(), sr.index()).is_some() {
            // Two values of one kind in one region (docs/verifier.md §3, same-kind pairs): their order reveals
            // no address. Neither side is refined (either may be a pointer).
            return Ok(Some(s));
        }
    }
    // Null checks: a pointer-or-null compared with 0.
    let zero = b.is_number() && b.num.singleton() == Some(0);
    if zero && a.may_be(ty::POINTERS) {
        return null_check(s, pc, cond, dst, &a, &b, taken);
    }
    compare_pointers(s, pc, cond, src, &a, &b, taken)
}

/// Two numbers: both operands (and every copy of them) are refined, and a length bound that grew proves packet
/// bytes; `None` if the branch is infeasible.
#[allow(clippy::too_many_arguments)] // the comparison's operands and their values
fn compare_numbers(
    mut s: State,
    width: Width,
    cond: JumpCond,
    dst: Reg,
    src: Operand,
    a: &Value,
    b: &Value,
    taken: bool,
) -> Option<State> {
    let r = if taken { Num::assume(cond, width, &a.num, &b.num) } else { Num::assume_not(cond, width, &a.num, &b.num) };
    let (na, nb) = r?;
    s.regs[dst.index()].num = na;
    learn_packet_range(&mut s, a.len_bound, &na);
    if a.copy_id.is_some_and(|id| !s.refine_copies_num(id, &na)) {
        return None;
    }
    if let Operand::Reg(r) = src {
        s.regs[r.index()].num = nb;
        learn_packet_range(&mut s, b.len_bound, &nb);
        if b.copy_id.is_some_and(|id| !s.refine_copies_num(id, &nb)) {
            return None;
        }
        let holds = if taken { Some(cond) } else { (cond != JumpCond::Set).then(|| cond.negate()) };
        if let Some(c) = holds {
            relate_len_bounds(&mut s, width, c, dst, r, &na, &nb);
            // A bound just learnt on a value known to be positive proves packet bytes too.
            for (reg, n) in [(dst, na), (r, nb)] {
                let bound = s.regs[reg.index()].len_bound;
                learn_packet_range(&mut s, bound, &n);
            }
        }
    }
    Some(s)
}

/// `x c y` holds for the numbers in `dst` and `src` (refined to `na`, `nb`): a length bound of the larger side
/// bounds the smaller one (`i < n` with `n ≤ packet_len - base - d` gives `i ≤ packet_len - base - (d + 1)`).
/// Sound when the predicate orders the values as signed 64-bit integers: signed 64-bit predicates always;
/// unsigned ones when both values are non-negative; 32-bit ones when both are zero-extended and below 2^31
/// (signed) or 2^32 (unsigned), so that the 32-bit comparison is the 64-bit one (docs/verifier.md §3).
fn relate_len_bounds(s: &mut State, width: Width, c: JumpCond, dst: Reg, src: Reg, na: &Num, nb: &Num) {
    let lim = match (width, c.is_signed()) {
        (Width::W64, true) => u64::MAX,
        (Width::W64, false) => i64::MAX as u64,
        (Width::W32, true) => i32::MAX as u64,
        (Width::W32, false) => u32::MAX as u64,
    };
    let ordered = (width == Width::W64 && c.is_signed()) || (na.umax <= lim && nb.umax <= lim);
    if !ordered {
        return;
    }
    let (a, b) = (s.regs[dst.index()].len_bound, s.regs[src.index()].len_bound);
    // (smaller holder, bound it learns)
    type Learnt = (Reg, Option<(u32, i64)>, i64);
    let learnt: Vec<Learnt> = match c {
        JumpCond::Lt | JumpCond::Slt => vec![(dst, b, 1)],
        JumpCond::Le | JumpCond::Sle => vec![(dst, b, 0)],
        JumpCond::Gt | JumpCond::Sgt => vec![(src, a, 1)],
        JumpCond::Ge | JumpCond::Sge => vec![(src, a, 0)],
        JumpCond::Eq => vec![(dst, b, 0), (src, a, 0)],
        _ => vec![],
    };
    for (r, bound, extra) in learnt {
        let Some((id, d)) = bound else { continue };
        let Some(d) = d.checked_add(extra) else { continue };
        s.tighten_len_bound(r.index(), (id, d));
    }
}

/// A pointer-or-null compared with 0: the branch decides null or not, for the register and all its copies.
#[allow(clippy::too_many_arguments)] // the comparison's operands and their values
fn null_check(
    mut s: State,
    pc: usize,
    cond: JumpCond,
    dst: Reg,
    a: &Value,
    b: &Value,
    taken: bool,
) -> Result<Option<State>, Failure> {
    let vals = || vec![show(dst.to_string(), a), show("src", b)];
    let holds_eq = match (cond, taken) {
        (JumpCond::Eq, t) | (JumpCond::Ne, t) if (cond == JumpCond::Eq) == t => Some(true),
        (JumpCond::Eq | JumpCond::Ne, _) => Some(false),
        (JumpCond::Le, true) | (JumpCond::Gt, false) => Some(true),
        (JumpCond::Gt, true) | (JumpCond::Le, false) => Some(false),
        // Unsigned `< 0` never holds and `>= 0` always does: no information about the address.
        (JumpCond::Lt, true) | (JumpCond::Ge, false) => return Ok(None),
        (JumpCond::Lt, false) | (JumpCond::Ge, true) => return Ok(Some(s)),
        _ => None,
    };
    let Some(is_null) = holds_eq else {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "comparison of a pointer with a number reveals its address (only == 0 / != 0 null checks are allowed)",
            vals(),
        ));
    };
    let v = &mut s.regs[dst.index()];
    if is_null {
        if !v.may_be(ty::NUMBER) {
            return Ok(None);
        }
        v.types = ty::NUMBER;
        match v.num.meet(&Num::constant(0)) {
            Some(n) => v.num = n,
            None => return Ok(None),
        }
    } else {
        v.types &= !ty::NUMBER;
        if a.may_be(ty::NUMBER) {
            if let Some(n) = Num::assume(JumpCond::Ne, Width::W64, &a.num, &Num::constant(0)).map(|p| p.0) {
                v.types |= ty::NUMBER;
                v.num = n;
            }
        }
        if v.types == 0 {
            return Ok(None);
        }
    }
    if let Some(id) = a.copy_id {
        let refined = s.regs[dst.index()].clone();
        s.refine_copies(id, &refined);
    }
    if let (Some(k), true) = (a.ref_id, is_null) {
        // The acquiring call returned null on this path: no reference was taken (docs/verifier.md §2).
        s.end_reference(k, End::NotHeld);
    }
    Ok(Some(s))
}

/// Two pointers (same region, or packet against `data_end`; map identity): comparisons with `data_end` prove
/// packet bytes.
fn compare_pointers(
    mut s: State,
    pc: usize,
    cond: JumpCond,
    src: Operand,
    a: &Value,
    b: &Value,
    taken: bool,
) -> Result<Option<State>, Failure> {
    let vals = || vec![show("dst", a), show("src", b)];
    let Operand::Reg(sr) = src else {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "comparison of a pointer with a non-zero constant reveals its address",
            vals(),
        ));
    };
    if a.may_be(ty::NUMBER) || b.may_be(ty::NUMBER) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "comparison between a pointer and a number (or a 32-bit pointer comparison) reveals an address",
            vals(),
        ));
    }
    let maps = ty::MAP_FD | ty::MAP_FD_PROGRAMS;
    if matches!(cond, JumpCond::Eq | JumpCond::Ne) && (a.types | b.types) & !maps == 0 {
        // Map identity: equality reveals which map, not an address.
        return Ok(Some(s));
    }
    let packetish = ty::PACKET | ty::PACKET_END;
    let same_region = a.types == b.types
        && (a.types & (ty::STACK | ty::PACKET | ty::CTX) != 0 && a.types.count_ones() == 1
            || a.types == ty::SHARED && a.maps.single().is_some() && a.maps == b.maps);
    if !(same_region || (a.types | b.types) & !packetish == 0) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "comparison between pointers to different regions reveals addresses",
            vals(),
        ));
    }
    // Packet bounds: `p <= data_end` (or `p < data_end`) proves the bytes before p are in the packet.
    let (p, cmp) = if a.is(ty::PACKET) && b.is(ty::PACKET_END) {
        (
            a,
            Some(if taken {
                cond
            } else if cond == JumpCond::Set {
                return Ok(Some(s));
            } else {
                cond.negate()
            }),
        )
    } else if a.is(ty::PACKET_END) && b.is(ty::PACKET) {
        let c = if taken {
            cond
        } else if cond == JumpCond::Set {
            return Ok(Some(s));
        } else {
            cond.negate()
        };
        // end OP p  <=>  p OP' end
        let swapped = match c {
            JumpCond::Gt => JumpCond::Lt,
            JumpCond::Ge => JumpCond::Le,
            JumpCond::Lt => JumpCond::Gt,
            JumpCond::Le => JumpCond::Ge,
            JumpCond::Sgt => JumpCond::Slt,
            JumpCond::Sge => JumpCond::Sle,
            JumpCond::Slt => JumpCond::Sgt,
            JumpCond::Sle => JumpCond::Sge,
            other => other,
        };
        (b, Some(swapped))
    } else {
        (a, None)
    };
    let _ = sr;
    learn_meta_room(&mut s, cond, a, b, taken);
    if let Some(c) = cmp {
        // `p > data_end` (`p >= data_end`) cannot hold when the proven packet range already reaches p's largest
        // offset (passes it): data + off ≤ data + range ≤ data_end. Pruning the edge records the re-check as decided
        // for lowering (`AnalysisFacts::branch_directions`). Unsigned only: signed order of kernel addresses says
        // nothing.
        let proven = s.packet_range(0);
        let beyond_end = match c {
            JumpCond::Gt => p.off.smax <= proven,
            JumpCond::Ge => p.off.smax < proven,
            _ => false,
        };
        if beyond_end {
            return Ok(None);
        }
        let extra = match c {
            JumpCond::Le | JumpCond::Sle | JumpCond::Eq => Some(0),
            JumpCond::Lt | JumpCond::Slt => Some(1),
            // `p != data_end` where p is one known offset already proven `≤ data_end` (offset 0 always is:
            // data ≤ data_end): then `p < data_end`. Covers `if (data_end == data) return;`.
            JumpCond::Ne if p.off.smin == p.off.smax && p.off.smax <= proven => Some(1),
            _ => None,
        };
        if let Some(e) = extra {
            let lo = p.off.smin.saturating_add(e);
            let r0 = s.packet_range(0).max(lo);
            s.packet_ranges.insert(0, r0);
            if let Some((id, d)) = p.pkt {
                let r = s.packet_range(id).max(d.saturating_add(e));
                s.packet_ranges.insert(id, r);
            }
        }
    }
    Ok(Some(s))
}

/// `data_meta + d <= data + e` (or `<`) proves `data - data_meta >= d - e` (`+ 1`): metadata room. Only pointers
/// carrying the `data_meta` base (platforms whose `data_meta` is the start of the metadata) and exact `data`
/// offsets take part; unsigned comparisons only (signed order of addresses says nothing).
fn learn_meta_room(s: &mut State, cond: JumpCond, a: &Value, b: &Value, taken: bool) {
    let holds = if taken { Some(cond) } else { (cond != JumpCond::Set).then(|| cond.negate()) };
    let (lhs, rhs, strict) = match holds {
        Some(JumpCond::Le) => (a, b, 0),
        Some(JumpCond::Lt) => (a, b, 1),
        Some(JumpCond::Ge) => (b, a, 0),
        Some(JumpCond::Gt) => (b, a, 1),
        _ => return,
    };
    if let (Some((META_BASE, d)), Some((0, e))) = (lhs.pkt, rhs.pkt) {
        if let Some(m) = d.checked_sub(e).and_then(|m| m.checked_add(strict)) {
            s.learn_meta_room(m);
        }
    }
}

/// A number `v ≤ packet_len - base_id - d` now known to be at least `lo(v)` proves
/// `base_id + d + lo(v) ≤ packet_len`, i.e. `ranges[id] ≥ d + lo(v)`.
pub(super) fn learn_packet_range(s: &mut State, len_bound: Option<(u32, i64)>, v: &Num) {
    let Some((id, d)) = len_bound else { return };
    if v.smin <= 0 {
        return;
    }
    if let Some(r) = d.checked_add(v.smin) {
        let old = s.packet_range(id);
        s.packet_ranges.insert(id, old.max(r));
    }
}
