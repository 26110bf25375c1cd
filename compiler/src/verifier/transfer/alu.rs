//! Arithmetic (RFC 9669 §4.1, §4.2) on numbers and pointers: pointer ± number, same-region differences (with
//! their packet length bounds), and the loop-delta effect of constant additions.

use crate::isa::{AluOp, Operand, Reg, Width};

use crate::verifier::num::Num;
use crate::verifier::relations::shared_kinds;
use crate::verifier::state::{
    ty, Change, CopyHolder, Loc, State, Value, COPY_ID_LINKS, FRAME_STRIDE, STACK_FRAME_SIZE,
};
use crate::verifier::{Env, Failure, Property};

use super::{fail, operand, read, set_reg, show};

/// Pointer ± number, number + pointer, pointer − pointer (RFC 9669 §4.1 on addresses; anything else on a
/// pointer would expose or forge an address).
#[allow(clippy::too_many_arguments)] // one call per memory check; the arguments are the check
pub(super) fn pointer_arith(
    st: &mut State,
    pc: usize,
    op: AluOp,
    width: Width,
    dst: Reg,
    a: &Value,
    b: &Value,
    src_is_imm: bool,
    max_packet_len: i64,
) -> Result<Value, Failure> {
    let vals = || vec![show(format!("{dst} (dst)"), a), show("src", b)];
    let arith_types = ty::CTX | ty::STACK | ty::PACKET | ty::SHARED;
    let same_region_sub = op == AluOp::Sub
        && a.types == b.types
        && (a.types == ty::STACK || a.types == ty::PACKET || a.types == ty::CTX || a.types == ty::PACKET_END);
    let packet_distance =
        op == AluOp::Sub && (a.types | b.types) == (ty::PACKET | ty::PACKET_END) && a.types != b.types;
    if width == Width::W32 && (same_region_sub || packet_distance) {
        // The truncated distance between two pointers into one region reveals no address.
        let d = pointer_arith(st, pc, op, Width::W64, dst, a, b, src_is_imm, max_packet_len)?;
        if d.num.smin >= 0 && d.num.umax <= u32::MAX as u64 {
            // The distance is below 2^32 (a packet is shorter than that): truncating leaves it, and its length
            // bound, unchanged (`u32 n = data_end - data`).
            return Ok(d);
        }
        return Ok(Value::number(d.num.low32()));
    }
    if width == Width::W32 || !matches!(op, AluOp::Add | AluOp::Sub) {
        return Err(fail(
            pc,
            Property::PointerArithmetic,
            format!("{op:?} ({}-bit) on a pointer is not allowed (only 64-bit pointer ± number)", width.bits()),
            vals(),
        ));
    }
    let pure_ptr = |v: &Value| v.types & !arith_types == 0 && v.types != 0;
    if a.may_be(ty::POINTERS) && b.is_number() || (op == AluOp::Add && a.is_number() && b.may_be(ty::POINTERS)) {
        let (p, n) = if a.is_number() { (b, a) } else { (a, b) };
        if !pure_ptr(p) {
            return Err(fail(
                pc,
                Property::PointerArithmetic,
                "arithmetic on a value that may be a null pointer, a map or data_end",
                vals(),
            ));
        }
        // Each memory kind's offset moves by the same amount; the packet fact follows the packet offset.
        let mut r = Value { copy_id: None, ..p.map_offsets(|o| Num::alu(op, Width::W64, o, &n.num)) };
        let off = r.off_of(ty::PACKET);
        if p.may_be(ty::PACKET) {
            r.pkt = match (p.pkt, n.num.singleton().filter(|_| src_is_imm)) {
                (Some((id, d)), Some(c)) => {
                    let c = c as i64;
                    (if op == AluOp::Add { d.checked_add(c) } else { d.checked_sub(c) }).map(|d| (id, d))
                }
                _ if off.smin == off.smax && src_is_imm => Some((0, off.smin)),
                _ => {
                    // A register operand gets a base id tied to this instruction even when its value is known in
                    // this iteration, so that the relation survives the join with later loop iterations.
                    // A new variable base: every packet pointer derived from this one by constants shares it.
                    let id = pc as u32 + 1;
                    st.forget_packet_id(id);
                    if let Some(r) = (op == AluOp::Add).then(|| range_of_sum(p, n)).flatten() {
                        st.packet_ranges.insert(id, r);
                    }
                    Some((id, 0))
                }
            };
        }
        return Ok(r);
    }
    if op == AluOp::Sub && a.may_be(ty::POINTERS) && b.may_be(ty::POINTERS) {
        let same = a.types == b.types
            && (a.types == ty::STACK
                || a.types == ty::PACKET
                || a.types == ty::CTX
                || (a.types == ty::SHARED && a.maps.single().is_some() && a.maps == b.maps));
        if same {
            // Two stack pointers in different frames (a caller's pointer passed to a callee): the abstract numbering
            // puts frames `FRAME_STRIDE` apart, the shipped code does not, so their distance is unknown.
            if a.types == ty::STACK && (stack_frame(&a.off).is_none() || stack_frame(&a.off) != stack_frame(&b.off)) {
                return Ok(Value::number(Num::TOP));
            }
            return Ok(Value::number(Num::alu(AluOp::Sub, Width::W64, &a.off, &b.off)));
        }
        let size_lo = st.packet_range(0);
        if a.is(ty::PACKET_END) && b.is(ty::PACKET) {
            let lo = (size_lo as i128 - b.off.smax as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            let len_bound = len_bound_of_distance(b);
            // `packet_len - o` with `o ≥ lo(off)` and `packet_len ≤ max_packet_len < 2^32` (docs/verifier.md §3).
            let hi = if len_bound.is_some() { max_packet_len - b.off.smin } else { i64::MAX };
            let mut v = Value::number(Num::signed(lo, hi).unwrap_or(Num::TOP));
            v.len_bound = len_bound;
            return Ok(v);
        }
        if a.is(ty::PACKET) && b.is(ty::PACKET_END) {
            let hi = (b_off_neg(size_lo, a.off.smax)).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            return Ok(Value::number(Num::signed(i64::MIN, hi).unwrap_or(Num::TOP)));
        }
        if a.is(ty::PACKET_END) && b.is(ty::PACKET_END) {
            return Ok(Value::number(Num::constant(0)));
        }
    }
    Err(fail(
        pc,
        Property::PointerArithmetic,
        "arithmetic between pointers to different regions (or on a map) is not allowed",
        vals(),
    ))
}

/// The length bound of `data_end - p` (docs/verifier.md §3): with `p = data + base_id + d` the difference is
/// exactly `packet_len - base_id - d`; without a relational fact `p = data + o` with `o ≥ lo(off)`, so the
/// difference is at most `packet_len - lo(off)`. Only for offsets within ±2^32, where the 64-bit difference
/// cannot wrap (packets are shorter than 2^32 bytes), so the signed result is the true distance.
pub(super) fn len_bound_of_distance(p: &Value) -> Option<(u32, i64)> {
    const LIMIT: i64 = 1 << 32;
    if p.off.smin < -LIMIT || p.off.smax > LIMIT {
        return None;
    }
    Some(p.pkt.unwrap_or((0, p.off.smin)))
}

/// A length bound `(id, d)`: `v ≤ packet_len - base_id - d` (docs/verifier.md §3).
type LenBound = (u32, i64);

/// `x &= 2^k - 1` where every possible `x` is below `2^k` (clang's zero-extension of a narrow counter, `r2 = r0
/// & 255`): a no-op on every concrete state, in either width (a 32-bit `and` of a value below `2^k ≤ 2^32`
/// also leaves the upper half zero).
fn is_identity_mask(op: AluOp, a: &Value, b: &Value) -> bool {
    let mask = b.num.singleton().filter(|m| m.wrapping_add(1).is_power_of_two() && *m <= u32::MAX as u64);
    op == AluOp::And && a.is_number() && b.is_number() && mask.is_some_and(|m| a.num.umax <= m)
}

/// `dst -= src` (64-bit) of a same-kind pair whose type sets are not single (docs/verifier.md §3): the
/// difference of the numbers or of the offsets, whichever kind they are.
fn same_kind_sub(st: &State, op: AluOp, width: Width, dst: Reg, src: Operand, a: &Value, b: &Value) -> Option<Value> {
    let Operand::Reg(sr) = src else { return None };
    if op != AluOp::Sub || width != Width::W64 {
        return None;
    }
    let kinds = shared_kinds(st, dst.index(), sr.index())?;
    Some(Value::number(same_kind_difference(kinds, a, b)))
}

/// The frame k whose bytes `[-1024k - 512, -1024k]` (its top included) hold every offset of `o`, if one does.
fn stack_frame(o: &Num) -> Option<i64> {
    let k = o.smin.checked_neg()?.div_euclid(FRAME_STRIDE);
    let top = FRAME_STRIDE.checked_mul(k)?.checked_neg()?;
    (o.smin >= top - STACK_FRAME_SIZE && o.smax <= top).then_some(k)
}

/// `a - b` for two values of one kind among `kinds`: the join over those kinds of the numbers' or the offsets'
/// difference. Stack offsets give a difference only when both lie in one frame (frames need not be laid out
/// as the abstract numbering has them).
fn same_kind_difference(kinds: u16, a: &Value, b: &Value) -> Num {
    let frame = stack_frame;
    let mut out: Option<Num> = None;
    for k in [ty::NUMBER, ty::CTX, ty::STACK, ty::PACKET] {
        if kinds & k == 0 {
            continue;
        }
        let (x, y) = (a.off_of(k), b.off_of(k));
        let d = match k {
            ty::NUMBER => Num::alu(AluOp::Sub, Width::W64, &a.num, &b.num),
            ty::STACK if frame(&x).is_none() || frame(&x) != frame(&y) => Num::TOP,
            _ => Num::alu(AluOp::Sub, Width::W64, &x, &y),
        };
        out = Some(out.map_or(d, |o| o.join(&d)));
    }
    out.unwrap_or(Num::TOP)
}

/// The largest packet length ([`crate::verifier::VerifierOptions::max_packet_len`]), never above `2^32 - 1`:
/// the no-wrap arguments of the length bounds rely on packets being shorter than 2^32 bytes.
pub(super) fn max_packet_len(env: &Env) -> i64 {
    env.options.max_packet_len.min(u32::MAX as u64) as i64
}

/// The packet range of `p + i` under a fresh base id, when the number `i` carries a length bound `(id, d)`
/// (`i ≤ packet_len - base_id - d`): with `p = data + base_id + d'` the sum is `data + base_id + d' + i`, so
/// `base_new + (d - d') ≤ packet_len`; without a fact `p = data + o` with `o ≤ hi(off)` and `id = 0`, so
/// `base_new + (d - hi(off)) ≤ packet_len`. Only within ±2^32 (no wrap in the 64-bit sum).
fn range_of_sum(p: &Value, i: &Value) -> Option<i64> {
    const LIMIT: i64 = 1 << 32;
    let (id, d) = i.len_bound?;
    let off = p.off_of(ty::PACKET);
    if !p.is(ty::PACKET) || i.num.smin < -LIMIT || i.num.smax > LIMIT || off.smin < -LIMIT || off.smax > LIMIT {
        return None;
    }
    let r = match p.pkt {
        Some((pid, dp)) if pid == id => d.checked_sub(dp)?,
        _ if id == 0 => d.checked_sub(off.smax)?,
        _ => return None,
    };
    (r > 0).then_some(r)
}

/// The length bounds of `a op b` on numbers (docs/verifier.md §3): adding or subtracting a constant moves the
/// bound when the operation provably does not wrap; subtracting a non-negative number keeps it (less its
/// lower bound); `<<= 32` of a value below 2^32 keeps it for the high half, and `>>= 32` brings it back — the
/// zero-extension `r <<= 32; r >>= 32` of a length. Returns `(len_bound, len_bound_shl32)`.
fn derived_len_bounds(op: AluOp, width: Width, a: &Value, b: &Value) -> (Option<LenBound>, Option<LenBound>) {
    let plus = |v: &Value, c: i64| -> Option<(u32, i64)> {
        let (id, d) = v.len_bound?;
        let (lo, hi) = (v.num.smin as i128 + c as i128, v.num.smax as i128 + c as i128);
        let fits = match width {
            Width::W64 => lo >= i64::MIN as i128 && hi <= i64::MAX as i128,
            // The 32-bit result equals the sum only when the operand and the sum stay in [0, 2^32).
            Width::W32 => v.num.umax <= u32::MAX as u64 && lo >= 0 && hi <= u32::MAX as i128,
        };
        fits.then(|| Some((id, d.checked_sub(c)?))).flatten()
    };
    let constant =
        |v: &Value| v.num.singleton().map(|c| if width == Width::W32 { c as u32 as i32 as i64 } else { c as i64 });
    let shift32 = width == Width::W64 && b.num.singleton() == Some(32);
    match op {
        AluOp::Add => match (constant(b), constant(a)) {
            (Some(c), _) => (plus(a, c), None),
            (None, Some(c)) => (plus(b, c), None),
            _ => (None, None),
        },
        AluOp::Sub => match constant(b) {
            Some(c) => (c.checked_neg().and_then(|c| plus(a, c)), None),
            None if width == Width::W64 && b.num.smin >= 0 => {
                let lo = a.num.smin as i128 - b.num.smax as i128;
                let bound = a.len_bound.filter(|_| lo >= i64::MIN as i128);
                (bound.and_then(|(id, d)| Some((id, d.checked_add(b.num.smin)?))), None)
            }
            None => (None, None),
        },
        AluOp::Lsh if shift32 && a.num.umax <= u32::MAX as u64 => (None, a.len_bound),
        AluOp::Rsh if shift32 => (a.len_bound_shl32, None),
        _ => (None, None),
    }
}

pub(super) fn b_off_neg(size_lo: i64, off_max: i64) -> i128 {
    off_max as i128 - size_lo as i128
}

pub(super) fn alu(
    env: &Env,
    st: &mut State,
    pc: usize,
    width: Width,
    op: AluOp,
    dst: Reg,
    src: Operand,
) -> Result<(), Failure> {
    if dst == Reg::FP {
        return Err(fail(pc, Property::InvalidInstruction, "r10 (the frame pointer) is read-only", vec![]));
    }
    if let (AluOp::Mov, Operand::Reg(r)) = (op, src) {
        if st.regs[r.index()].may_be(ty::UNINIT) {
            // A copy is not a use (PREVAIL): the undefined value (with a released reference's mark) moves on and is
            // rejected where it is used (docs/verifier.md §2, "Initialisation"), whatever the width.
            set_reg(st, dst, Value { ref_id: st.regs[r.index()].ref_id, ..Value::uninit() }, Change::Unknown);
            return Ok(());
        }
    }
    let b = operand(st, src, width, pc)?;
    if matches!(op, AluOp::Mov) {
        if width == Width::W32 && b.may_be(ty::POINTERS) {
            return Err(fail(
                pc,
                Property::PointerLeak,
                "32-bit move of a pointer exposes part of an address",
                vec![show("src", &b)],
            ));
        }
        let same_value = width == Width::W64 || (b.is_number() && b.num.umax <= u32::MAX as u64);
        let mut v = if width == Width::W32 {
            // A 32-bit copy of a value below 2^32 is the same number, so its length bound still holds.
            let len_bound = b.len_bound.filter(|_| same_value);
            Value { len_bound, ..Value::number(b.num.low32()) }
        } else {
            b
        };
        let mut change = Change::Unknown;
        if let (Operand::Reg(r), true) = (src, same_value) {
            // The copy and the source are equal: a branch on either refines both (e.g. a loop exit tested on a
            // 32-bit copy of the counter).
            v.copy_id = Some(st.link_copy(CopyHolder::Reg(r.index()), COPY_ID_LINKS | pc as u32));
            change = Change::CopyOf(Loc::Reg(r.index() as u8));
        }
        set_reg(st, dst, v, change);
        return Ok(());
    }
    if let AluOp::MovSx(_) = op {
        if b.may_be(ty::POINTERS) {
            return Err(fail(pc, Property::PointerLeak, "sign-extending move of a pointer", vec![show("src", &b)]));
        }
        set_reg(st, dst, Value::number(Num::alu(op, width, &Num::TOP, &b.num)), Change::Unknown);
        return Ok(());
    }
    let a = if op == AluOp::Neg { st.regs[dst.index()].clone() } else { read(st, dst, pc)? };
    if op == AluOp::Neg && a.may_be(ty::UNINIT) {
        return Err(fail(
            pc,
            Property::Uninitialized,
            format!("{dst} may be read before it is written"),
            vec![show(dst.to_string(), &a)],
        ));
    }
    if matches!(op, AluOp::Div | AluOp::Mod | AluOp::SDiv | AluOp::SMod) && !env.options.allow_division_by_zero {
        let divisor = if width == Width::W32 { b.num.low32() } else { b.num };
        if b.is_number() && divisor.contains(0) {
            return Err(fail(pc, Property::DivisionByZero, "possible division by zero", vec![show("divisor", &b)]));
        }
    }
    let arith_ptrs = ty::CTX | ty::STACK | ty::PACKET | ty::SHARED;
    let mixed = a.may_be(ty::NUMBER) && a.may_be(arith_ptrs) && a.types & !(ty::NUMBER | arith_ptrs) == 0;
    if mixed && b.is_number() && width == Width::W64 && matches!(op, AluOp::Add | AluOp::Sub) {
        // Either a number or a pointer: each part moves by the same amount (a null pointer stays a number).
        let v = Value {
            num: Num::alu(op, width, &a.num, &b.num),
            pkt: None,
            copy_id: None,
            len_bound: None,
            len_bound_shl32: None,
            ..a.map_offsets(|o| Num::alu(op, width, o, &b.num))
        };
        set_reg(st, dst, v, Change::Unknown);
        return Ok(());
    }
    if let Some(v) = same_kind_sub(st, op, width, dst, src, &a, &b) {
        set_reg(st, dst, v, Change::Unknown);
        return Ok(());
    }
    if a.may_be(ty::POINTERS) || b.may_be(ty::POINTERS) {
        let v = pointer_arith(st, pc, op, width, dst, &a, &b, matches!(src, Operand::Imm(_)), max_packet_len(env))?;
        set_reg(st, dst, v, Change::Unknown);
        return Ok(());
    }
    if is_identity_mask(op, &a, &b) {
        return Ok(()); // every possible value is unchanged: copy identity, length bound and loop delta stay
    }
    let result = Num::alu(op, width, &a.num, &b.num);
    // Loop delta: dst += c (or -= c) that cannot wrap in the operation width.
    let added = match (op, b.num.singleton()) {
        (AluOp::Add | AluOp::Sub, Some(c)) => {
            let c = if width == Width::W32 { c as u32 as i32 as i64 } else { c as i64 };
            let c = if op == AluOp::Sub { c.checked_neg() } else { Some(c) };
            c.filter(|&c| {
                let max = if width == Width::W32 { u32::MAX as u64 } else { u64::MAX };
                a.num.umax <= max
                    && if c >= 0 {
                        a.num.umax.checked_add(c as u64).is_some_and(|v| v <= max)
                    } else {
                        a.num.umin >= c.unsigned_abs()
                    }
            })
        }
        _ => None,
    };
    let (len_bound, len_bound_shl32) = derived_len_bounds(op, width, &a, &b);
    let v = Value { len_bound, len_bound_shl32, ..Value::number(result) };
    set_reg(st, dst, v, added.map_or(Change::Unknown, Change::Add));
    Ok(())
}
