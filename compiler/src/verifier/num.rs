//! The numeric abstract domain: a 64-bit register value as the reduced product of a signed and an unsigned
//! interval. This module knows nothing about eBPF beyond RFC 9669's arithmetic (wrapping, x/0 = 0, x%0 = x);
//! the eBPF semantics live in `transfer`.
//!
//! Every operation is an over-approximation: the result contains every concrete result of every pair of
//! concrete operands. Arithmetic is computed exactly in `i128` and then wrapped to the operation width
//! (a wrapped interval that straddles a 2^w boundary becomes the full range), so no overflow is missed.

use crate::isa::{AluOp, ByteOrder, JumpCond, Width};

/// A set of 64-bit values: `{ v | smin <= v as i64 <= smax && umin <= v <= umax }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Num {
    pub smin: i64,
    pub smax: i64,
    pub umin: u64,
    pub umax: u64,
}

fn width_mask(bits: u32) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Wraps the mathematical interval `[lo, hi]` to `bits`-bit unsigned values.
fn wrap_unsigned(lo: i128, hi: i128, bits: u32) -> (u64, u64) {
    let m: i128 = 1i128 << bits;
    if hi - lo >= m || lo.div_euclid(m) != hi.div_euclid(m) {
        return (0, width_mask(bits));
    }
    (lo.rem_euclid(m) as u64, hi.rem_euclid(m) as u64)
}

/// Wraps the mathematical interval `[lo, hi]` to `bits`-bit two's-complement values.
fn wrap_signed(lo: i128, hi: i128, bits: u32) -> (i64, i64) {
    let half: i128 = 1i128 << (bits - 1);
    let (a, b) = wrap_unsigned(lo + half, hi + half, bits);
    ((a as i128 - half) as i64, (b as i128 - half) as i64)
}

/// Operand views of a value for an operation of some width, as mathematical intervals.
#[derive(Clone, Copy, Debug)]
struct View {
    ulo: i128,
    uhi: i128,
    slo: i128,
    shi: i128,
}

impl Num {
    pub const TOP: Num = Num { smin: i64::MIN, smax: i64::MAX, umin: 0, umax: u64::MAX };

    pub fn constant(v: u64) -> Num {
        Num { smin: v as i64, smax: v as i64, umin: v, umax: v }
    }

    /// The values `lo..=hi` (unsigned), or `None` if empty.
    pub fn unsigned(lo: u64, hi: u64) -> Option<Num> {
        Num { umin: lo, umax: hi, ..Num::TOP }.reduce()
    }

    /// The values `lo..=hi` (signed), or `None` if empty.
    pub fn signed(lo: i64, hi: i64) -> Option<Num> {
        Num { smin: lo, smax: hi, ..Num::TOP }.reduce()
    }

    /// All values representable in `bits` bits, zero-extended.
    pub fn full_width(bits: u32) -> Num {
        Num::unsigned(0, width_mask(bits)).expect("non-empty")
    }

    /// Tightens each interval with the other's information; `None` if the set is empty.
    pub fn reduce(self) -> Option<Num> {
        let mut n = self;
        for _ in 0..2 {
            if n.umin > n.umax || n.smin > n.smax {
                return None;
            }
            // Signed -> unsigned: a signed interval that does not cross zero is one unsigned interval.
            if n.smin >= 0 || n.smax < 0 {
                n.umin = n.umin.max(n.smin as u64);
                n.umax = n.umax.min(n.smax as u64);
            } else if n.umax <= i64::MAX as u64 {
                n.umax = n.umax.min(n.smax as u64);
            } else if n.umin > i64::MAX as u64 {
                n.umin = n.umin.max(n.smin as u64);
            }
            if n.umin > n.umax {
                return None;
            }
            // Unsigned -> signed: an unsigned interval within one half is one signed interval.
            if n.umax <= i64::MAX as u64 || n.umin > i64::MAX as u64 {
                n.smin = n.smin.max(n.umin as i64);
                n.smax = n.smax.min(n.umax as i64);
            }
        }
        if n.umin > n.umax || n.smin > n.smax {
            return None;
        }
        Some(n)
    }

    pub fn singleton(&self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    pub fn contains(&self, v: u64) -> bool {
        self.umin <= v && v <= self.umax && self.smin <= v as i64 && v as i64 <= self.smax
    }

    pub fn is_top(&self) -> bool {
        *self == Num::TOP
    }

    pub fn join(&self, o: &Num) -> Num {
        Num {
            smin: self.smin.min(o.smin),
            smax: self.smax.max(o.smax),
            umin: self.umin.min(o.umin),
            umax: self.umax.max(o.umax),
        }
    }

    pub fn meet(&self, o: &Num) -> Option<Num> {
        Num {
            smin: self.smin.max(o.smin),
            smax: self.smax.min(o.smax),
            umin: self.umin.max(o.umin),
            umax: self.umax.min(o.umax),
        }
        .reduce()
    }

    /// Widening with thresholds: a bound that grew jumps to the next threshold (PREVAIL's widening with
    /// thresholds; the thresholds are the program's constants, so loop bounds survive widening).
    pub fn widen(&self, newer: &Num, t: &Thresholds) -> Num {
        let joined = self.join(newer);
        let smin = if joined.smin < self.smin { t.signed_below(joined.smin) } else { self.smin };
        let smax = if joined.smax > self.smax { t.signed_above(joined.smax) } else { self.smax };
        let umin = if joined.umin < self.umin { t.unsigned_below(joined.umin) } else { self.umin };
        let umax = if joined.umax > self.umax { t.unsigned_above(joined.umax) } else { self.umax };
        // Widening must not be reduced (that could re-tighten and break termination of the iteration).
        Num { smin, smax, umin, umax }
    }

    fn view(&self, bits: u32) -> View {
        if bits == 64 {
            return View {
                ulo: self.umin as i128,
                uhi: self.umax as i128,
                slo: self.smin as i128,
                shi: self.smax as i128,
            };
        }
        // The low 32 bits: both intervals over-approximate them; intersect the two wrapped images.
        let (a, b) = wrap_unsigned(self.umin as i128, self.umax as i128, 32);
        let (c, d) = wrap_unsigned(self.smin as i128, self.smax as i128, 32);
        let (ulo, uhi) = if a.max(c) <= b.min(d) { (a.max(c), b.min(d)) } else { (a, b) };
        let (e, f) = wrap_signed(self.umin as i128, self.umax as i128, 32);
        let (g, h) = wrap_signed(self.smin as i128, self.smax as i128, 32);
        let (slo, shi) = if e.max(g) <= f.min(h) { (e.max(g), f.min(h)) } else { (g, h) };
        View { ulo: ulo as i128, uhi: uhi as i128, slo: slo as i128, shi: shi as i128 }
    }

    /// The low 32 bits of the value, zero-extended.
    pub fn low32(&self) -> Num {
        let v = self.view(32);
        Num::from_results(Some((v.ulo, v.uhi)), Some((v.slo, v.shi)), 32)
    }

    /// Builds the (zero-extended, for 32 bits) result of an operation from mathematical result intervals.
    fn from_results(u: Option<(i128, i128)>, s: Option<(i128, i128)>, bits: u32) -> Num {
        let (umin, umax) = u.map_or((0, width_mask(bits)), |(lo, hi)| wrap_unsigned(lo, hi, bits));
        let (smin, smax) = s.map_or_else(
            || if bits == 64 { (i64::MIN, i64::MAX) } else { (i32::MIN as i64, i32::MAX as i64) },
            |(lo, hi)| wrap_signed(lo, hi, bits),
        );
        if bits == 64 {
            return Num { smin, smax, umin, umax }.reduce().unwrap_or(Num { smin, smax: smin, umin, umax: umin });
        }
        // 32-bit results are zero-extended: the signed 32-bit view maps to one unsigned interval if it does
        // not cross zero.
        let mut n = Num::unsigned(umin, umax).expect("non-empty");
        let s_as_u = if smin >= 0 {
            Some((smin as u64, smax as u64))
        } else if smax < 0 {
            Some(((smin + (1i64 << 32)) as u64, (smax + (1i64 << 32)) as u64))
        } else {
            None
        };
        if let Some((lo, hi)) = s_as_u {
            if let Some(m) = n.meet(&Num::unsigned(lo, hi).expect("non-empty")) {
                n = m;
            }
        }
        n
    }

    /// `dst op src` for an ALU operation of the given width (RFC 9669 §4.1), over-approximated.
    pub fn alu(op: AluOp, width: Width, a: &Num, b: &Num) -> Num {
        let bits = width.bits();
        if let (Some(x), Some(y)) = (a.singleton(), b.singleton()) {
            return Num::constant(eval_alu(op, width, x, y));
        }
        let x = a.view(bits);
        let y = b.view(bits);
        let res = |u: Option<(i128, i128)>, s: Option<(i128, i128)>| Num::from_results(u, s, bits);
        let mask = width_mask(bits) as i128;
        match op {
            AluOp::Mov => res(Some((y.ulo, y.uhi)), Some((y.slo, y.shi))),
            AluOp::Add => res(Some((x.ulo + y.ulo, x.uhi + y.uhi)), Some((x.slo + y.slo, x.shi + y.shi))),
            AluOp::Sub => res(Some((x.ulo - y.uhi, x.uhi - y.ulo)), Some((x.slo - y.shi, x.shi - y.slo))),
            AluOp::Mul => {
                let corners = |a0: i128, a1: i128, b0: i128, b1: i128| -> Option<(i128, i128)> {
                    let p = [a0.checked_mul(b0)?, a0.checked_mul(b1)?, a1.checked_mul(b0)?, a1.checked_mul(b1)?];
                    Some((*p.iter().min()?, *p.iter().max()?))
                };
                res(corners(x.ulo, x.uhi, y.ulo, y.uhi), corners(x.slo, x.shi, y.slo, y.shi))
            }
            AluOp::Div => {
                if y.ulo >= 1 {
                    res(Some((x.ulo / y.uhi, x.uhi / y.ulo)), None)
                } else {
                    // x / 0 = 0 and x / d <= x.
                    res(Some((0, x.uhi)), None)
                }
            }
            AluOp::Mod => {
                if y.ulo >= 1 && x.uhi < y.ulo {
                    res(Some((x.ulo, x.uhi)), None)
                } else if y.ulo >= 1 {
                    res(Some((0, x.uhi.min(y.uhi - 1))), None)
                } else {
                    // x % 0 = x.
                    res(Some((0, x.uhi)), None)
                }
            }
            AluOp::SDiv | AluOp::SMod => {
                if x.slo >= 0 && y.slo >= 0 {
                    let unsigned = if op == AluOp::SDiv { AluOp::Div } else { AluOp::Mod };
                    Num::alu(unsigned, width, a, b)
                } else if op == AluOp::SMod && y.slo > 0 {
                    // |x % y| < y, sign of x; and x % y is between x and 0 when |x| < y.
                    let lim = y.shi - 1;
                    res(None, Some((x.slo.max(-lim).min(0), x.shi.min(lim).max(0))))
                } else {
                    res(None, None)
                }
            }
            AluOp::And => {
                let hi = x.uhi.min(y.uhi);
                res(Some((0, hi)), if x.slo >= 0 || y.slo >= 0 { Some((0, hi)) } else { None })
            }
            AluOp::Or => {
                let m = x.uhi.max(y.uhi);
                let ceil = if m == 0 { 0 } else { (1i128 << (128 - m.leading_zeros())) - 1 };
                res(Some((x.ulo.max(y.ulo), ceil.min(mask))), None)
            }
            AluOp::Xor => {
                let m = x.uhi.max(y.uhi);
                let ceil = if m == 0 { 0 } else { (1i128 << (128 - m.leading_zeros())) - 1 };
                res(Some((0, ceil.min(mask))), None)
            }
            AluOp::Lsh => match b.singleton() {
                Some(k) => {
                    let k = (k as u32) & (bits - 1);
                    let fits = |v: i128| v == 0 || (128 - v.unsigned_abs().leading_zeros()) + k < 126;
                    let u = (fits(x.uhi) && fits(x.ulo)).then(|| (x.ulo << k, x.uhi << k));
                    let s = (fits(x.slo) && fits(x.shi)).then(|| (x.slo << k, x.shi << k));
                    res(u, s)
                }
                None => res(None, None),
            },
            AluOp::Rsh => match b.singleton() {
                Some(k) => {
                    let k = (k as u32) & (bits - 1);
                    res(Some((x.ulo >> k, x.uhi >> k)), None)
                }
                None => res(Some((0, x.uhi)), None),
            },
            AluOp::Arsh => match b.singleton() {
                Some(k) => {
                    let k = (k as u32) & (bits - 1);
                    res(None, Some((x.slo >> k, x.shi >> k)))
                }
                None => {
                    // x >> k lies between x and 0 (or -1 for negative x).
                    let hi = if x.shi >= 0 { x.shi } else { -1 };
                    res(None, Some((x.slo.min(0), hi)))
                }
            },
            AluOp::Neg => res(Some((-x.uhi, -x.ulo)), Some((-x.shi, -x.slo))),
            AluOp::MovSx(n) => {
                let n = n as u32;
                let half = 1i128 << (n - 1);
                let (lo, hi) = if y.slo >= -half && y.shi < half { (y.slo, y.shi) } else { (-half, half - 1) };
                res(None, Some((lo, hi)))
            }
        }
    }

    /// Byte-order conversion (RFC 9669 §4.2) on a little-endian machine.
    pub fn endian(order: ByteOrder, bits: u32, a: &Num) -> Num {
        if let Some(x) = a.singleton() {
            return Num::constant(eval_endian(order, bits, x));
        }
        match order {
            ByteOrder::ToLe if bits == 64 => *a,
            ByteOrder::ToLe if a.umax <= width_mask(bits) => *a,
            _ => Num::full_width(bits),
        }
    }

    /// Refines `(a, b)` under the assumption that `a cond b` holds with the given width. `None` if it cannot
    /// hold for any values in the sets.
    pub fn assume(cond: JumpCond, width: Width, a: &Num, b: &Num) -> Option<(Num, Num)> {
        if let (Some(x), Some(y)) = (a.singleton(), b.singleton()) {
            return eval_cond(cond, width, x, y).then_some((*a, *b));
        }
        if width == Width::W32 {
            // A 32-bit comparison equals the 64-bit one when both values are zero-extended 31-bit numbers
            // (unsigned predicates need only 32 bits).
            let lim = if cond.is_signed() { i32::MAX as u64 } else { u32::MAX as u64 };
            if a.umax > lim || b.umax > lim || a.smin < 0 || b.smin < 0 {
                return Some((*a, *b));
            }
        }
        use JumpCond::*;
        match cond {
            Eq => {
                let m = a.meet(b)?;
                Some((m, m))
            }
            Ne => {
                let trim = |x: &Num, c: u64| -> Option<Num> {
                    let mut n = *x;
                    if n.umin == c {
                        n.umin = c.checked_add(1)?;
                    }
                    if n.umax == c {
                        n.umax = c.checked_sub(1)?;
                    }
                    if n.smin == c as i64 {
                        n.smin = (c as i64).checked_add(1)?;
                    }
                    if n.smax == c as i64 {
                        n.smax = (c as i64).checked_sub(1)?;
                    }
                    n.reduce()
                };
                match (a.singleton(), b.singleton()) {
                    (_, Some(c)) => Some((trim(a, c)?, *b)),
                    (Some(c), _) => Some((*a, trim(b, c)?)),
                    _ => Some((*a, *b)),
                }
            }
            Gt => {
                let na = Num { umin: a.umin.max(b.umin.checked_add(1)?), ..*a }.reduce()?;
                let nb = Num { umax: b.umax.min(a.umax.checked_sub(1)?), ..*b }.reduce()?;
                Some((na, nb))
            }
            Ge => {
                let na = Num { umin: a.umin.max(b.umin), ..*a }.reduce()?;
                let nb = Num { umax: b.umax.min(a.umax), ..*b }.reduce()?;
                Some((na, nb))
            }
            Lt => Num::assume(Gt, Width::W64, b, a).map(|(nb, na)| (na, nb)),
            Le => Num::assume(Ge, Width::W64, b, a).map(|(nb, na)| (na, nb)),
            Sgt => {
                let na = Num { smin: a.smin.max(b.smin.checked_add(1)?), ..*a }.reduce()?;
                let nb = Num { smax: b.smax.min(a.smax.checked_sub(1)?), ..*b }.reduce()?;
                Some((na, nb))
            }
            Sge => {
                let na = Num { smin: a.smin.max(b.smin), ..*a }.reduce()?;
                let nb = Num { smax: b.smax.min(a.smax), ..*b }.reduce()?;
                Some((na, nb))
            }
            Slt => Num::assume(Sgt, Width::W64, b, a).map(|(nb, na)| (na, nb)),
            Sle => Num::assume(Sge, Width::W64, b, a).map(|(nb, na)| (na, nb)),
            Set => {
                if a.umax == 0 || b.umax == 0 {
                    return None;
                }
                let na = Num { umin: a.umin.max(1), ..*a }.reduce()?;
                Some((na, *b))
            }
        }
    }

    /// Refines under the negation of `cond` (the fall-through edge of a conditional jump).
    pub fn assume_not(cond: JumpCond, width: Width, a: &Num, b: &Num) -> Option<(Num, Num)> {
        if cond != JumpCond::Set {
            return Num::assume(cond.negate(), width, a, b);
        }
        if let (Some(x), Some(y)) = (a.singleton(), b.singleton()) {
            return (!eval_cond(cond, width, x, y)).then_some((*a, *b));
        }
        Some((*a, *b))
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(v) = self.singleton() {
            return write!(f, "{}", v as i64);
        }
        if self.is_top() {
            return write!(f, "any");
        }
        write!(f, "s[{}, {}] u[{}, {}]", self.smin, self.smax, self.umin, self.umax)
    }
}

/// Widening thresholds: the program's constants (and their neighbours) plus the type limits.
#[derive(Clone, Debug, Default)]
pub struct Thresholds {
    signed: Vec<i64>,
    unsigned: Vec<u64>,
}

impl Thresholds {
    pub fn new(constants: impl IntoIterator<Item = i64>) -> Thresholds {
        let mut signed = vec![i64::MIN, i64::MAX, 0, -1, 1, i32::MAX as i64, i32::MIN as i64, u32::MAX as i64];
        for c in constants {
            signed.extend([c, c.saturating_sub(1), c.saturating_add(1)]);
        }
        for k in [8u32, 16, 32] {
            signed.push((1i64 << k) - 1);
        }
        signed.sort_unstable();
        signed.dedup();
        let mut unsigned: Vec<u64> = signed.iter().map(|&v| v as u64).chain([0, u64::MAX]).collect();
        unsigned.sort_unstable();
        unsigned.dedup();
        Thresholds { signed, unsigned }
    }
    fn signed_below(&self, v: i64) -> i64 {
        let i = self.signed.partition_point(|&t| t <= v);
        if i == 0 {
            i64::MIN
        } else {
            self.signed[i - 1]
        }
    }
    fn signed_above(&self, v: i64) -> i64 {
        let i = self.signed.partition_point(|&t| t < v);
        self.signed.get(i).copied().unwrap_or(i64::MAX)
    }
    fn unsigned_below(&self, v: u64) -> u64 {
        let i = self.unsigned.partition_point(|&t| t <= v);
        if i == 0 {
            0
        } else {
            self.unsigned[i - 1]
        }
    }
    fn unsigned_above(&self, v: u64) -> u64 {
        let i = self.unsigned.partition_point(|&t| t < v);
        self.unsigned.get(i).copied().unwrap_or(u64::MAX)
    }
}

// Concrete semantics (RFC 9669 §4.1–4.3) for constant folding: the one definition in `isa`, which the reference
// interpreter runs too.
pub use crate::isa::semantics::{eval_alu, eval_byte_order as eval_endian, eval_jump_condition as eval_cond};
