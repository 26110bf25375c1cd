//! Comparisons of zero-extended values at their narrow width.
//!
//! clang compiles `u8 c; if ((u8)(c - '0') <= 9)` to one byte compare (`cmpb $9, %bpl`); its eBPF translation is
//! `r4 = r6; r4 &= 255; if r4 > 9 goto …`, which a literal lowering turns into `and $0xff, %rax; cmp $9, %rax`. When
//! an `icmp` compares a value that is the zero-extension of a narrower value — `x & 0xff`, `x & 0xffff`,
//! `x & 0xffff_ffff`, or a `uextend` such as every 32-bit ALU result gets — with a constant, and nothing else uses
//! the wide value, [`narrow_compares`] makes the comparison on the narrow value instead, so Cranelift's x64 backend
//! emits the `cmpb` / `cmpl` forms and the mask disappears. A wide value that other instructions still read is left
//! alone: both it and its source would then be live, which costs a register move (`parse`'s EtherType, compared
//! twice). A 16-bit compare is made only when its constant fits a sign-extended byte: `cmpw $imm16` carries a
//! length-changing operand-size prefix, which stalls Intel's decoders.
//!
//! Why it is exact (RFC 9669 §4.3: jump conditions compare the full 64- or 32-bit register values, unsigned or
//! signed). Let `v = zext(y)` with `y` of `K` bits, `K` less than the comparison width `W`, so `0 ≤ v < 2^K`, and
//! let the constant be `c`, read as a `W`-bit unsigned number `c_u`. The fold is made only when `c_u < 2^K`:
//! - unsigned conditions (and equality): both operands are below `2^K`, so comparing their low `K` bits unsigned
//!   gives the same answer as comparing the `W`-bit values;
//! - signed conditions: `v` is non-negative as a `W`-bit signed number, and `c_u < 2^K ≤ 2^(W-1)` means the signed
//!   reading of `c` is `c_u`, also non-negative; two non-negative numbers compare the same signed and unsigned, so
//!   the signed condition becomes its unsigned form at `K` bits.
//!
//! When `c_u ≥ 2^K` the comparison's answer does not depend on `v` at all (or, for signed conditions with a
//! negative `c`, still does not); those are left as they are, compared at full width.
//!
//! **No narrowing when the range allows it.** The masked value is often a small number moved by a constant:
//! `branchy`'s `(u8)(c - '0') <= 9` is `x = zext(load8) - 48; (x & 0xff) <= 9`. Compared as a byte, Cranelift's
//! e-graph narrows the subtraction too (`ireduce (iadd x k)` → `iadd.i8`), and x64 has no three-operand byte add:
//! `mov %rbx,%rax; add $0xd0,%al; cmp $9,%al` where clang writes `lea -0x30(%rcx),%ebp; cmp $9,%bpl`. When the
//! IR bounds `x` (a signed `N`-bit value in `[lo, hi]`, [`signed_range`]) with `hi < 2^K` and `lo ≥ c_u + 1 − 2^K`,
//! the unsigned compare of `x` itself with `c_u` at `N` bits is the same condition, and needs no narrowing at all
//! (`lea; cmp`): for `0 ≤ x < 2^K` the masked value is `x`; for `lo ≤ x < 0`, `x` read unsigned is at least
//! `2^(N−1) ≥ 2^K > c_u` and the masked value `x + 2^K ≥ lo + 2^K > c_u`, so both operands are above `c_u` and
//! every unsigned condition (equality included) gives the same answer; the signed conditions were already their
//! unsigned forms by the argument above.
//!
//! **32-bit compares of 64-bit values that fit.** The compare chains of `branchy` are 64-bit values that are small
//! numbers (`c - '0'`, `(c | 0x20) - 'a'` of a loaded byte), and every 64-bit instruction costs x64 a REX.W byte:
//! `lea -0x30(%rbx),%rax; cmp $9,%rax` where clang writes `lea -0x30(%rbx),%eax; cmp $9,%eax`. When the IR bounds an
//! `i64` value `x` to `[lo, hi]` with `−2^31 ≤ lo ≤ hi < 2^31` ([`signed_range`]), its compare with a constant `c`
//! is made on `x`'s low 32 bits (`ireduce.i32 x`, written as the 32-bit form of the arithmetic that computes `x`, so
//! that x64 emits the 32-bit instructions; see below) with the low 32 bits of `c` and the same condition (the
//! constant may be either operand; on the left the condition is swapped first). Let `r = ireduce.i32 x`; as every `x` in the range lies in `[−2^31, 2^31)`, `r` read as a signed 32-bit number is
//! `x`. The rewrite is made when
//! - (A) `c` read as a signed 64-bit number lies in `[−2^31, 2^31)` (then its low 32 bits read signed are `c`), for
//!   every condition: the signed conditions compare the same two numbers at both widths; for equality the low 32
//!   bits are one-to-one on `[−2^31, 2^31)`; for the unsigned ones, a number `a` of that interval reads unsigned as
//!   `a` when `a ≥ 0` and `a + 2^W` when `a < 0`, at either width `W` ∈ {32, 64}, so both readings order the interval
//!   the same way — non-negative numbers ascending, below negative numbers ascending — and `x` and `c` compare the
//!   same at 32 and at 64 bits;
//! - (B) or the condition is an unsigned order, `lo < 0` and `2^31 ≤ c_u < 2^32 + lo` (`c_u`: `c` read unsigned; the
//!   constant of a 32-bit `mov` into a register): for `x ≥ 0` both readings of `x` are below `2^31 ≤ c_u`, and the
//!   32-bit constant is `c_u` itself; for `x < 0`, `x` reads `x + 2^64 ≥ 2^63 > c_u` at 64 bits and `x + 2^32 ≥ lo +
//!   2^32 > c_u` at 32, above `c` at both widths. (With `lo ≥ 0` every `x` is below such a `c`; equality with such a
//!   `c` never holds at either width. Both answers are constant and left alone, as are other constants.)
//!
//! Which compares: those of an `iadd`, `isub`, `bor` or `bxor` with a constant, whose 32-bit form drops a REX.W byte
//! from that operation too, when the rewrite duplicates nothing ([`word_chain`]): the pass writes the operations
//! down to the value's source at 32 bits itself, each read only by the next, and the source is one whose low half
//! costs nothing (a block parameter, a load, a right shift: x64 and ARM64 read the register's low half) or a
//! zero-extension. A bare value or a mask test (`test $1,%rsi`) would only lose the compare's REX byte, and
//! narrowing those moved registers around: measured over the ten bench programs, pktwalk ran 0.5 % and bindpolicy
//! 2 % more instructions per run; `(c | 0x20) - 'a' > 25` is the case that pays. A value that other instructions
//! also read stays 64-bit (`branchy`'s `c - '0'`, which the digit block reads too: its 32-bit form, shared, took a
//! REX register for the loop's hottest path, and a second copy costs an instruction).

use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::entity::SecondaryMap;
use cranelift_codegen::ir::condcodes::{CondCode, IntCC};
use cranelift_codegen::ir::{
    types, DataFlowGraph, Function, Inst, InstBuilder, InstructionData, Opcode, Type, Value, ValueDef,
};

use super::load_combine::value_use_counts;

/// How many definitions ([`narrowest_source`]) are looked through: `uextend` / `ireduce` over a mask at most.
const MAX_DEPTH: usize = 3;

/// How many definitions [`signed_range`] looks through: a constant added to a zero-extension, and its mask.
const MAX_RANGE_DEPTH: usize = 3;

/// Where the narrow value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// A value that already has the narrow type (the operand of a `uextend`).
    Narrow(Value),
    /// The low bits of this wider value (the operand of a `band` with a low-bit mask).
    LowBitsOf(Value),
}

/// Rewrites every `icmp` of `func` that compares a value with a constant and that the module documentation proves
/// exact at a narrower width: a zero-extension used only there, on its narrow value with the unsigned condition; a
/// 64-bit value whose bounds fit 32 bits, on its `ireduce.i32`. Returns how many it rewrote. The `icmp` keeps its
/// result value, so its users are unchanged.
pub fn narrow_compares(func: &mut Function) -> usize {
    // Candidates first: most functions (straight-line code, `unrolled`) have few or no compares with a constant, and
    // counting the uses of every value of a large function cost more than the rest of the pass.
    let mut candidates = Vec::new();
    for block in func.layout.blocks() {
        for inst in func.layout.block_insts(block) {
            if let InstructionData::IntCompare { opcode: Opcode::Icmp, cond, args: [a, b] } = func.dfg.insts[inst] {
                let (a, b) = (func.dfg.resolve_aliases(a), func.dfg.resolve_aliases(b));
                // The constant second: `c cc x` is `x (cc swapped) c`.
                let (cond, d, c) = match (constant(&func.dfg, b), constant(&func.dfg, a)) {
                    (Some(c), _) => (cond, a, c),
                    (None, Some(c)) => (cond.swap_args(), b, c),
                    (None, None) => continue,
                };
                // The zero-extension rules keep to the constant on the right, the form they were measured on.
                let narrow = if d == a { narrowing(&func.dfg, d, c) } else { None };
                if narrow.is_some() || word_constant(&func.dfg, cond, d, c).is_some() {
                    candidates.push((inst, cond, d, c, narrow));
                }
            }
        }
    }
    if candidates.is_empty() {
        return 0;
    }
    let uses = value_use_counts(func);
    let mut rewritten = 0;
    let mut cursor = FuncCursor::new(func);
    for (inst, cond, d, c, narrow) in candidates {
        // The new operands are defined right before the compare, which is where they must dominate.
        cursor.goto_inst(inst);
        // What is compared at full width, unless it can be narrowed to 32 bits below.
        let (cond, x) = match narrow {
            Some((source, narrow)) if uses[d] == 1 => match source {
                Source::LowBitsOf(x) if compares_as_low_bits(&cursor.func.dfg, x, narrow, c) => (cond.unsigned(), x),
                Source::Narrow(y) => {
                    set_compare(&mut cursor, inst, cond.unsigned(), y, c);
                    rewritten += 1;
                    continue;
                }
                Source::LowBitsOf(x) => {
                    let y = cursor.ins().ireduce(narrow, x);
                    set_compare(&mut cursor, inst, cond.unsigned(), y, c);
                    rewritten += 1;
                    continue;
                }
            },
            _ => (cond, d),
        };
        let word = word_constant(&cursor.func.dfg, cond, x, c)
            .and_then(|c32| Some((c32, word_chain(&cursor.func.dfg, &uses, x)?)));
        match word {
            Some((c32, chain)) => {
                let r = chain.build(&mut cursor);
                set_compare(&mut cursor, inst, cond, r, c32);
            }
            None if x != d => set_compare(&mut cursor, inst, cond, x, c),
            None => continue,
        }
        rewritten += 1;
    }
    rewritten
}

/// Makes `inst` the `icmp cond y, c` with `c` an `iconst` of `y`'s type defined at the cursor (before `inst`).
fn set_compare(cursor: &mut FuncCursor, inst: Inst, cond: IntCC, y: Value, c: u64) {
    let ty = cursor.func.dfg.value_type(y);
    let c = cursor.ins().iconst(ty, c as i64);
    // Same opcode and result type (`i8`): only the condition and operands change.
    cursor.func.dfg.insts[inst] = InstructionData::IntCompare { opcode: Opcode::Icmp, cond, args: [y, c] };
}

/// The constant (the low 32 bits of `c`) with which `x cond c` is compared as `ireduce.i32 x cond c32`, when `x` is an
/// `i64` value whose bounds fit 32 bits and the module documentation's case (A) or (B) makes that exact.
fn word_constant(dfg: &DataFlowGraph, cond: IntCC, x: Value, c: u64) -> Option<u64> {
    if dfg.value_type(x) != types::I64 || constant(dfg, x).is_some() {
        return None;
    }
    let (lo, hi) = signed_range(dfg, x, MAX_RANGE_DEPTH)?;
    let half = 1i128 << 31;
    if lo < -half || hi >= half {
        return None;
    }
    let signed_fits = (-half..half).contains(&i128::from(c as i64));
    let unsigned_order = matches!(
        cond,
        IntCC::UnsignedLessThan
            | IntCC::UnsignedLessThanOrEqual
            | IntCC::UnsignedGreaterThan
            | IntCC::UnsignedGreaterThanOrEqual
    );
    let above_every_non_negative = unsigned_order && lo < 0 && (half..(1i128 << 32) + lo).contains(&i128::from(c));
    (signed_fits || above_every_non_negative).then_some(c & 0xffff_ffff)
}

/// Whether the compared value's definition is an `iadd`, `isub`, `bor` or `bxor` (with a constant, [`word_chain`]
/// checks): its 32-bit form drops a REX.W byte from the operation as well as from the compare.
fn worth_narrowing(def: &InstructionData) -> bool {
    matches!(def, InstructionData::Binary { opcode: Opcode::Iadd | Opcode::Isub | Opcode::Bor | Opcode::Bxor, .. })
}

/// How many operations [`word_chain`] follows: as many as [`signed_range`] looks through.
const MAX_CHAIN: usize = MAX_RANGE_DEPTH;

/// The 32-bit computation of a 64-bit value's low half: a source and the operations with constants on it.
struct WordChain {
    /// The source's low 32 bits: a 32-bit value, or one to take the low half of (`ireduce`) or to zero-extend.
    source: WordSource,
    /// The operations from the source up, each with its constant's low 32 bits (`op.i32 (low x) (low k)` is the low
    /// half of `op.i64 x k` for `iadd`, `isub`, `band`, `bor` and `bxor`: arithmetic modulo 2^32 and bitwise ops).
    ops: Vec<(Opcode, u64)>,
}

enum WordSource {
    /// An `i64` value whose `ireduce.i32` is free: x64 and ARM64 read the register's low half, and no e-graph rule
    /// rewrites the `ireduce` of a block parameter, a load or a right shift into a computation of its own.
    Low(Value),
    /// A value of at most 32 bits that the 64-bit one zero-extends.
    Extend(Value),
}

impl WordChain {
    /// Builds the 32-bit value before the cursor.
    fn build(self, cursor: &mut FuncCursor) -> Value {
        let mut v = match self.source {
            WordSource::Low(v) => cursor.ins().ireduce(types::I32, v),
            WordSource::Extend(y) if cursor.func.dfg.value_type(y) == types::I32 => y,
            WordSource::Extend(y) => cursor.ins().uextend(types::I32, y),
        };
        for (opcode, k) in self.ops.into_iter().rev() {
            let k = cursor.ins().iconst(types::I32, k as i64);
            let (inst, dfg) = cursor.ins().Binary(opcode, types::I32, v, k);
            v = dfg.first_result(inst);
        }
        v
    }
}

/// The 32-bit computation of `x`'s low half, when it duplicates nothing: every operation on the way is read only by
/// the next (its 64-bit form then goes away), and the source costs nothing to read at 32 bits. Built as 32-bit IR
/// rather than left to the e-graph's `ireduce` rules, whose cost model ties the two forms and may keep the 64-bit
/// one (`ireduce (band x 1)` then hides `test $1` from x64's pattern); an `ireduce` of a value with other readers
/// would be rewritten into a second computation of it (`movzwl` next to `movzwq`). `None` unless `x` itself is an
/// `iadd`, `isub`, `bor` or `bxor` ([`worth_narrowing`]).
fn word_chain(dfg: &DataFlowGraph, uses: &SecondaryMap<Value, u32>, x: Value) -> Option<WordChain> {
    // The compared value must be arithmetic that narrowing shortens (module documentation).
    let ValueDef::Result(top, 0) = dfg.value_def(x) else { return None };
    if !worth_narrowing(&dfg.insts[top]) {
        return None;
    }
    let mut ops = Vec::new();
    let mut v = x;
    for _ in 0..=MAX_CHAIN {
        let single = uses[v] == 1;
        let ValueDef::Result(inst, 0) = dfg.value_def(v) else {
            return Some(WordChain { source: WordSource::Low(v), ops });
        };
        match dfg.insts[inst] {
            InstructionData::Binary {
                opcode: op @ (Opcode::Iadd | Opcode::Isub | Opcode::Band | Opcode::Bor | Opcode::Bxor),
                args: [a, b],
            } if single && ops.len() < MAX_CHAIN => {
                let (next, k) = match (constant(dfg, b), constant(dfg, a)) {
                    (Some(k), _) => (a, k),
                    (None, Some(k)) if op != Opcode::Isub => (b, k),
                    _ => return None,
                };
                ops.push((op, k & 0xffff_ffff));
                v = next;
            }
            InstructionData::Unary { opcode: Opcode::Uextend, arg } if single || dfg.value_type(arg) == types::I32 => {
                return Some(WordChain { source: WordSource::Extend(arg), ops });
            }
            InstructionData::Load { .. } | InstructionData::Binary { opcode: Opcode::Ushr | Opcode::Sshr, .. } => {
                return Some(WordChain { source: WordSource::Low(v), ops });
            }
            _ => return None,
        }
    }
    None
}

/// The narrow source and its type, when `d cc c` may be compared at the narrow width.
fn narrowing(dfg: &DataFlowGraph, d: Value, c: u64) -> Option<(Source, Type)> {
    let width = dfg.value_type(d);
    let (source, narrow) = narrowest_source(dfg, d, MAX_DEPTH)?;
    let fits = c < 1u64 << narrow.bits();
    // `cmpw` only with an immediate that is a sign-extended byte (no length-changing prefix).
    let no_imm16 = narrow != types::I16 || !(0x80..0xff80).contains(&c);
    (narrow.bits() < width.bits() && fits && no_imm16).then_some((source, narrow))
}

/// Whether the unsigned compare of `x` with `c` at `x`'s width gives the same answer as that of `x`'s low bits
/// (`narrow`) with `c`, for every value the IR allows `x` (module documentation: `hi < 2^K`, `lo ≥ c + 1 − 2^K`).
fn compares_as_low_bits(dfg: &DataFlowGraph, x: Value, narrow: Type, c: u64) -> bool {
    let span = 1i128 << narrow.bits();
    signed_range(dfg, x, MAX_RANGE_DEPTH).is_some_and(|(lo, hi)| hi < span && lo > i128::from(c) - span)
}

/// Bounds `[lo, hi]` of `v` read as a signed number of its width, from its definition: a zero-extension (`uextend`,
/// `uload8`/`16`/`32`), a `band` with a non-negative constant, a logical right shift by a constant, a constant, one of
/// these plus or minus a constant when the sum cannot wrap, or `bor` / `bxor` of a non-negative one with a
/// non-negative constant. `None` when unknown.
fn signed_range(dfg: &DataFlowGraph, v: Value, depth: usize) -> Option<(i128, i128)> {
    let ty = dfg.value_type(v);
    let bits = ty.bits();
    if depth == 0 || !ty.is_int() || bits > 64 {
        return None;
    }
    let ValueDef::Result(inst, 0) = dfg.value_def(v) else { return None };
    let below = |k: u32| Some((0, (1i128 << k) - 1));
    let range = match dfg.insts[inst] {
        InstructionData::UnaryImm { opcode: Opcode::Iconst, .. } => {
            let c = signed_constant(dfg, v)?;
            Some((c, c))
        }
        InstructionData::Unary { opcode: Opcode::Uextend, arg } => below(dfg.value_type(arg).bits()),
        InstructionData::Load { opcode: Opcode::Uload8, .. } => below(8),
        InstructionData::Load { opcode: Opcode::Uload16, .. } => below(16),
        InstructionData::Load { opcode: Opcode::Uload32, .. } => below(32),
        InstructionData::Binary { opcode: Opcode::Band, args: [a, b] } => {
            let mask = signed_constant(dfg, b).or_else(|| signed_constant(dfg, a))?;
            (mask >= 0).then_some((0, mask))
        }
        InstructionData::Binary { opcode: Opcode::Ushr, args: [_, s] } => {
            let s = constant(dfg, s)? & u64::from(bits - 1); // CLIF shifts by the amount modulo the width
            if s == 0 {
                None
            } else {
                below(bits - s as u32)
            }
        }
        InstructionData::Binary { opcode: op @ (Opcode::Bor | Opcode::Bxor), args: [a, b] } => {
            let (x, k) = match (signed_constant(dfg, b), signed_constant(dfg, a)) {
                (Some(k), _) => (a, k),
                (None, Some(k)) => (b, k),
                _ => return None,
            };
            let (lo, hi) = signed_range(dfg, x, depth - 1)?;
            if lo < 0 || k < 0 {
                return None;
            }
            // Both operands are non-negative and below 2^m, the power of two above the larger of `hi` and `k`, and
            // so are their bits' union and difference; the union also holds every bit of each (≥ both, ≤ their sum).
            let below_power = (1i128 << (128 - hi.max(k).leading_zeros())) - 1;
            Some(if op == Opcode::Bor { (lo.max(k), below_power.min(hi + k)) } else { (0, below_power) })
        }
        InstructionData::Binary { opcode: op @ (Opcode::Iadd | Opcode::Isub), args: [a, b] } => {
            let (x, k) = match (signed_constant(dfg, b), signed_constant(dfg, a)) {
                (Some(k), _) => (a, if op == Opcode::Isub { -k } else { k }),
                (None, Some(k)) if op == Opcode::Iadd => (b, k),
                _ => return None,
            };
            let (lo, hi) = signed_range(dfg, x, depth - 1)?;
            Some((lo + k, hi + k))
        }
        _ => None,
    }?;
    // A sum outside the type's signed range wrapped, and then the bounds say nothing.
    let half = 1i128 << (bits - 1);
    (range.0 >= -half && range.1 < half).then_some(range)
}

/// The value of `v` if it is an `iconst`, read as a signed number of `v`'s width.
fn signed_constant(dfg: &DataFlowGraph, v: Value) -> Option<i128> {
    let bits = dfg.value_type(v).bits();
    let raw = constant(dfg, v)?;
    Some(if bits < 64 { i128::from(((raw << (64 - bits)) as i64) >> (64 - bits)) } else { i128::from(raw as i64) })
}

/// The value of `v` if it is an `iconst`, as an unsigned number of `v`'s width.
pub fn constant(dfg: &DataFlowGraph, v: Value) -> Option<u64> {
    let ValueDef::Result(inst, 0) = dfg.value_def(v) else { return None };
    let InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } = dfg.insts[inst] else { return None };
    let bits = dfg.value_type(v).bits();
    let raw = imm.bits() as u64;
    Some(if bits >= 64 { raw } else { raw & ((1u64 << bits) - 1) })
}

/// The narrow integer type a `band` with `mask` zero-extends from.
fn mask_type(mask: u64) -> Option<Type> {
    match mask {
        0xff => Some(types::I8),
        0xffff => Some(types::I16),
        0xffff_ffff => Some(types::I32),
        _ => None,
    }
}

/// The narrowest value `v` is the zero-extension of, with its type (which is narrower than `v`'s), looking through
/// at most `depth` definitions.
fn narrowest_source(dfg: &DataFlowGraph, v: Value, depth: usize) -> Option<(Source, Type)> {
    if depth == 0 {
        return None;
    }
    let ValueDef::Result(inst, 0) = dfg.value_def(v) else { return None };
    let width = dfg.value_type(v);
    let found = match dfg.insts[inst] {
        // `uextend` of `y`: `y` itself, or what `y` is in turn zero-extended from.
        InstructionData::Unary { opcode: Opcode::Uextend, arg } => {
            narrowest_source(dfg, arg, depth - 1).or_else(|| Some((Source::Narrow(arg), dfg.value_type(arg))))
        }
        // The low half of a value zero-extended from fewer bits than the half keeps is zero-extended too.
        InstructionData::Unary { opcode: Opcode::Ireduce, arg } => narrowest_source(dfg, arg, depth - 1),
        InstructionData::Binary { opcode: Opcode::Band, args: [a, m] } => {
            let (x, mask) = match (constant(dfg, m), constant(dfg, a)) {
                (Some(mask), _) => (a, mask),
                (None, Some(mask)) => (m, mask),
                (None, None) => return None,
            };
            mask_type(mask).map(|narrow| (Source::LowBitsOf(x), narrow))
        }
        _ => None,
    }?;
    (found.1.bits() < width.bits()).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::condcodes::IntCC;
    use cranelift_codegen::ir::{AbiParam, Signature, UserFuncName};
    use cranelift_codegen::isa::CallConv;
    use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

    /// Builds `fn(x: i64) -> i8 { icmp cc (shape x) c }`, runs the pass, and returns the IR text and whether it
    /// rewrote the compare.
    fn fold(shape: impl Fn(&mut FunctionBuilder, Value) -> Value, cc: IntCC, c: i64) -> (String, bool) {
        fold_with(shape, cc, c, Form::Once)
    }

    /// How [`fold_with`] uses the shaped value.
    #[derive(Clone, Copy, PartialEq)]
    enum Form {
        /// `icmp cc d, c`, its only use.
        Once,
        /// Also compared with `x` (a second use).
        Twice,
        /// `icmp cc c, d`: the constant first.
        ConstantFirst,
    }

    /// [`fold`] in the given [`Form`].
    fn fold_with(
        shape: impl Fn(&mut FunctionBuilder, Value) -> Value,
        cc: IntCC,
        c: i64,
        form: Form,
    ) -> (String, bool) {
        let mut signature = Signature::new(CallConv::SystemV);
        signature.params.push(AbiParam::new(types::I64));
        signature.returns.push(AbiParam::new(types::I8));
        let mut func = Function::with_name_signature(UserFuncName::testcase("t"), signature);
        let mut context = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut context);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let x = b.block_params(block)[0];
        let d = shape(&mut b, x);
        let ty = b.func.dfg.value_type(d);
        let s = b.ins().iconst(ty, c);
        let mut result = if form == Form::ConstantFirst { b.ins().icmp(cc, s, d) } else { b.ins().icmp(cc, d, s) };
        if form == Form::Twice {
            let x = if ty == types::I64 { x } else { b.ins().ireduce(ty, x) };
            let other = b.ins().icmp(IntCC::Equal, d, x);
            result = b.ins().bor(result, other);
        }
        b.ins().return_(&[result]);
        b.seal_all_blocks();
        b.finalize(crate::lower::build_isa(crate::compiled::Target::X64).unwrap().frontend_config());
        let folded = narrow_compares(&mut func) == 1;
        (func.display().to_string(), folded)
    }

    fn masked(mask: i64) -> impl Fn(&mut FunctionBuilder, Value) -> Value {
        move |b, x| {
            let m = b.ins().iconst(types::I64, mask);
            b.ins().band(x, m)
        }
    }

    #[test]
    fn a_byte_mask_compared_with_a_byte_constant_becomes_an_unsigned_byte_compare() {
        let (text, folded) = fold(masked(0xff), IntCC::UnsignedGreaterThan, 9);
        assert!(folded);
        assert!(text.contains("ireduce.i8") && text.contains("icmp ugt"), "{text}");
        // A signed condition on the non-negative masked value is its unsigned form.
        let (text, folded) = fold(masked(0xff), IntCC::SignedLessThan, 0x7f);
        assert!(folded && text.contains("icmp ult"), "{text}");
        let (text, folded) = fold(masked(0xffff), IntCC::Equal, 0xffff);
        assert!(folded && text.contains("ireduce.i16"), "{text}");
        let (text, folded) = fold(masked(0xffff_ffff), IntCC::SignedGreaterThanOrEqual, 1);
        assert!(folded && text.contains("ireduce.i32") && text.contains("icmp uge"), "{text}");
    }

    #[test]
    fn constants_outside_the_narrow_range_and_other_masks_are_compared_at_full_width() {
        assert!(!fold(masked(0xff), IntCC::UnsignedLessThan, 0x100).1);
        // -1 as a signed 64-bit constant: every masked value is greater; not folded.
        assert!(!fold(masked(0xff), IntCC::SignedGreaterThan, -1).1);
        // Masks fit 32 bits, but a 32-bit mask test only saves the compare's REX byte (module documentation).
        assert!(!fold(masked(0x7f), IntCC::Equal, 1).1);
        assert!(!fold(masked(0x1ff), IntCC::Equal, 1).1);
        assert!(!fold(|_, x| x, IntCC::Equal, 1).1);
        // A 16-bit constant that needs a 16-bit immediate (`cmpw $imm16`: a length-changing prefix).
        assert!(!fold(masked(0xffff), IntCC::Equal, 0x86dd).1);
        assert!(fold(masked(0xffff), IntCC::Equal, 0x7f).1);
    }

    #[test]
    fn a_wide_value_that_is_used_again_is_compared_at_full_width() {
        assert!(fold_with(masked(0xff), IntCC::UnsignedLessThan, 9, Form::Once).1);
        assert!(!fold_with(masked(0xff), IntCC::UnsignedLessThan, 9, Form::Twice).1);
        assert!(!fold_with(byte_plus(-48), IntCC::UnsignedLessThan, 9, Form::Twice).1);
    }

    /// `(zext(load8 x) + addend) & mask`.
    fn loaded_byte_plus(addend: i64, mask: i64) -> impl Fn(&mut FunctionBuilder, Value) -> Value {
        move |b, x| {
            let byte = b.ins().uload8(types::I64, cranelift_codegen::ir::MemFlagsData::new(), x, 0);
            let k = b.ins().iconst(types::I64, addend);
            let moved = b.ins().iadd(byte, k);
            masked(mask)(b, moved)
        }
    }

    #[test]
    fn a_masked_value_the_ir_bounds_is_compared_whole_when_that_is_exact() {
        // (byte - 48) & 0xff <= 9: [-48, 207] — the masked values of -48..-1 (208..255) are above 9, as the
        // unsigned 64-bit values are.
        let (text, folded) = fold(loaded_byte_plus(-48, 0xff), IntCC::SignedLessThanOrEqual, 9);
        // (Compared whole, that value then fits 32 bits.)
        assert!(folded && !text.contains("ireduce.i8") && text.contains("icmp ule"), "{text}");
        assert!(text.contains("ireduce.i32"), "{text}");
        // The lowest value may be c + 1 - 256 (-246 & 0xff = 10 > 9), not c - 256 (-247 & 0xff = 9).
        assert!(!fold(loaded_byte_plus(-246, 0xff), IntCC::Equal, 9).0.contains("ireduce.i8"));
        let (text, folded) = fold(loaded_byte_plus(-247, 0xff), IntCC::Equal, 9);
        assert!(folded && text.contains("ireduce.i8"), "{text}");
        // Values at or above 256 wrap to small masked values: narrowed.
        assert!(fold(loaded_byte_plus(1, 0xff), IntCC::UnsignedLessThan, 3).0.contains("ireduce.i8"));
        assert!(!fold(loaded_byte_plus(1, 0xffff), IntCC::UnsignedLessThan, 3).0.contains("ireduce.i16"));
    }

    /// `zext(load8 x) + addend`.
    fn byte_plus(addend: i64) -> impl Fn(&mut FunctionBuilder, Value) -> Value {
        move |b, x| {
            let byte = b.ins().uload8(types::I64, cranelift_codegen::ir::MemFlagsData::new(), x, 0);
            let k = b.ins().iconst(types::I64, addend);
            b.ins().iadd(byte, k)
        }
    }

    /// `(x >> 33) + addend`: `[addend, addend + 2^31 - 1]`.
    fn high_bits_plus(addend: i64) -> impl Fn(&mut FunctionBuilder, Value) -> Value {
        move |b, x| {
            let s = b.ins().iconst(types::I64, 33);
            let high = b.ins().ushr(x, s);
            let k = b.ins().iconst(types::I64, addend);
            b.ins().iadd(high, k)
        }
    }

    #[test]
    fn a_value_that_fits_32_bits_is_compared_at_32_bits() {
        let (text, folded) = fold(byte_plus(-48), IntCC::UnsignedLessThanOrEqual, 9);
        assert!(folded && text.contains("ireduce.i32") && text.contains("icmp ule"), "{text}");
        assert!(text.contains("iconst.i32 -48") || text.contains("iconst.i32 0xffff_ffd0"), "{text}");
        // The constant first: the condition swapped.
        let (text, folded) = fold_with(byte_plus(-48), IntCC::UnsignedGreaterThan, 9, Form::ConstantFirst);
        assert!(folded && text.contains("ireduce.i32") && text.contains("icmp ult"), "{text}");
        // `(c | 0x20) - 'a'`: bor's range.
        let lower_case = |b: &mut FunctionBuilder, x| {
            let byte = b.ins().uload8(types::I64, cranelift_codegen::ir::MemFlagsData::new(), x, 0);
            let k = b.ins().iconst(types::I64, 0x20);
            let lower = b.ins().bor(byte, k);
            let a = b.ins().iconst(types::I64, -97);
            b.ins().iadd(lower, a)
        };
        let (text, folded) = fold(lower_case, IntCC::UnsignedGreaterThan, 25);
        assert!(folded && text.contains("bor") && text.contains("ireduce.i32"), "{text}");
        // A bare load (x64 compares it in memory) and a shift are not narrowed; an `isub` and a `bxor` are.
        let byte =
            |b: &mut FunctionBuilder, x| b.ins().uload8(types::I64, cranelift_codegen::ir::MemFlagsData::new(), x, 0);
        assert!(!fold(byte, IntCC::Equal, 7).1);
        let high = |b: &mut FunctionBuilder, x| {
            let s = b.ins().iconst(types::I64, 40);
            b.ins().ushr(x, s)
        };
        assert!(!fold(high, IntCC::Equal, 7).1);
        let flipped_minus_one = |b: &mut FunctionBuilder, x| {
            let high = high(b, x);
            let k = b.ins().iconst(types::I64, 1);
            let flipped = b.ins().bxor(high, k);
            b.ins().isub(flipped, k)
        };
        let (text, folded) = fold(flipped_minus_one, IntCC::SignedLessThan, 7);
        assert!(folded && text.contains("iconst.i32 1"), "{text}");
        assert!(text.contains("icmp slt") && text.contains("ireduce.i32"), "{text}");
    }

    #[test]
    fn the_range_must_fit_32_bits_signed() {
        assert!(fold(high_bits_plus(0), IntCC::Equal, 5).1);
        assert!(!fold(high_bits_plus(1), IntCC::Equal, 5).1);
        assert!(fold(high_bits_plus(-(1 << 31)), IntCC::Equal, 5).1);
        assert!(!fold(high_bits_plus(-(1 << 31) - 1), IntCC::Equal, 5).1);
    }

    #[test]
    fn constants_that_fit_32_bits_signed_work_for_every_condition() {
        for cc in [IntCC::SignedLessThan, IntCC::UnsignedLessThan, IntCC::Equal, IntCC::NotEqual] {
            assert!(fold(byte_plus(-48), cc, (1 << 31) - 1).1, "{cc}");
            assert!(fold(byte_plus(-48), cc, -(1 << 31)).1, "{cc}");
            assert!(fold(byte_plus(-48), cc, -1).1, "{cc}");
            // 2^31 reads as -2^31 at 32 bits, and -2^31 - 1 as 2^31 - 1.
            assert!(!fold(byte_plus(-48), cc, -(1 << 31) - 1).1, "{cc}");
        }
        for cc in [IntCC::SignedLessThan, IntCC::SignedGreaterThanOrEqual, IntCC::Equal, IntCC::NotEqual] {
            assert!(!fold(byte_plus(-48), cc, 1 << 31).1, "{cc}");
        }
    }

    #[test]
    fn unsigned_orders_also_take_constants_above_every_non_negative_value_below_the_negative_ones() {
        // [-48, 207]: 2^31 <= c < 2^32 - 48.
        for cc in [IntCC::UnsignedLessThan, IntCC::UnsignedGreaterThanOrEqual] {
            assert!(fold(byte_plus(-48), cc, 1 << 31).1, "{cc}");
            assert!(fold(byte_plus(-48), cc, (1 << 32) - 49).1, "{cc}");
            assert!(!fold(byte_plus(-48), cc, (1 << 32) - 48).1, "{cc}");
            assert!(!fold(byte_plus(-48), cc, 1 << 32).1, "{cc}");
        }
        // With no negative value every such constant is above them all: constant answer, left alone.
        assert!(!fold(byte_plus(48), IntCC::UnsignedLessThan, 1 << 31).1);
        assert!(!fold(byte_plus(-48), IntCC::Equal, (1 << 32) - 49).1);
    }

    #[test]
    fn signed_ranges_follow_constants_zero_extensions_masks_and_shifts() {
        let range = |shape: &dyn Fn(&mut FunctionBuilder, Value) -> Value| {
            let mut func = Function::new();
            let mut context = FunctionBuilderContext::new();
            let mut b = FunctionBuilder::new(&mut func, &mut context);
            let block = b.create_block();
            b.switch_to_block(block);
            let x = b.append_block_param(block, types::I64);
            let v = shape(&mut b, x);
            signed_range(&b.func.dfg, v, MAX_RANGE_DEPTH)
        };
        assert_eq!(range(&|_, x| x), None);
        // `op x, iconst k`, as translation writes it (the `_imm` forms are not looked through).
        let with = |b: &mut FunctionBuilder, op: Opcode, x: Value, k: i64| {
            let k = b.ins().iconst(types::I64, k);
            let (inst, dfg) = b.ins().Binary(op, types::I64, x, k);
            dfg.first_result(inst)
        };
        assert_eq!(range(&|b, x| with(b, Opcode::Ushr, x, 60)), Some((0, 15)));
        assert_eq!(range(&|b, x| with(b, Opcode::Ushr, x, 64)), None);
        assert_eq!(range(&|b, x| with(b, Opcode::Band, x, 0x1234)), Some((0, 0x1234)));
        assert_eq!(range(&|b, x| with(b, Opcode::Band, x, -2)), None);
        // bor / bxor of a non-negative value with a non-negative constant: below the next power of two.
        // (shift giving the value's range, operation, constant, expected range)
        let cases = [
            (56, Opcode::Bor, 0x20, Some((0x20, 0xff))),
            (60, Opcode::Bor, 0x100, Some((0x100, 0x10f))),
            (56, Opcode::Bxor, 0x100, Some((0, 0x1ff))),
            (56, Opcode::Bor, -1, None),
        ];
        for (shift, op, k, expected) in cases {
            let shape = |b: &mut FunctionBuilder, x| {
                let t = with(b, Opcode::Ushr, x, shift);
                with(b, op, t, k)
            };
            assert_eq!(range(&shape), expected, "(x >> {shift}) {op} {k:#x}");
        }
        assert_eq!(range(&|b, x| with(b, Opcode::Bxor, x, 1)), None);
        assert_eq!(range(&|b, x| b.ins().ireduce(types::I16, x)), None);
        let low = |b: &mut FunctionBuilder, x| {
            let half = b.ins().ireduce(types::I32, x);
            b.ins().uextend(types::I64, half)
        };
        assert_eq!(range(&|b, x| low(b, x)), Some((0, 0xffff_ffff)));
        assert_eq!(
            range(&|b, x| {
                let l = low(b, x);
                with(b, Opcode::Iadd, l, -5)
            }),
            Some((-5, 0xffff_fffa))
        );
        // isub x, k is x + (-k); an i64::MIN subtrahend or a sum past the signed range wraps: unknown.
        assert_eq!(
            range(&|b, x| {
                let l = low(b, x);
                with(b, Opcode::Isub, l, 7)
            }),
            Some((-7, 0xffff_fff8))
        );
        assert_eq!(
            range(&|b, x| {
                let l = low(b, x);
                with(b, Opcode::Iadd, l, i64::MAX)
            }),
            None
        );
        assert_eq!(
            range(&|b, x| {
                let l = low(b, x);
                with(b, Opcode::Isub, l, i64::MIN)
            }),
            None
        );
    }

    #[test]
    fn zero_extensions_are_looked_through_to_the_narrowest_source() {
        // uextend.i64 (band.i32 (ireduce.i32 x) 0xff): compared as a byte.
        let (text, folded) = fold(
            |b, x| {
                let low = b.ins().ireduce(types::I32, x);
                let m = b.ins().iconst(types::I32, 0xff);
                let byte = b.ins().band(low, m);
                b.ins().uextend(types::I64, byte)
            },
            IntCC::SignedLessThanOrEqual,
            200,
        );
        assert!(folded && text.contains("ireduce.i8") && text.contains("icmp ule"), "{text}");
        // ireduce.i32 (band.i64 x 0xffff): the 32-bit compare of a 16-bit value.
        let (text, folded) = fold(
            |b, x| {
                let m = b.ins().iconst(types::I64, 0xffff);
                let half = b.ins().band(x, m);
                b.ins().ireduce(types::I32, half)
            },
            IntCC::UnsignedGreaterThanOrEqual,
            0x7f,
        );
        assert!(folded && text.contains("ireduce.i16"), "{text}");
        // ireduce.i32 (band.i64 x 0xffff_ffff) is not narrower than the 32-bit compare.
        let (_, folded) = fold(
            |b, x| {
                let m = b.ins().iconst(types::I64, 0xffff_ffff);
                let low = b.ins().band(x, m);
                b.ins().ireduce(types::I32, low)
            },
            IntCC::Equal,
            1,
        );
        assert!(!folded);
    }
}
