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

use cranelift_codegen::cursor::{Cursor, FuncCursor};
use cranelift_codegen::ir::{
    types, DataFlowGraph, Function, InstBuilder, InstructionData, Opcode, Type, Value, ValueDef,
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

/// Rewrites every `icmp` of `func` whose first operand is used only there and is a zero-extension, and whose second
/// is a constant that makes it exact (module documentation), into an unsigned `icmp` of the narrow value; returns
/// how many it rewrote. The `icmp` keeps its result value, so its users are unchanged.
pub fn narrow_compares(func: &mut Function) -> usize {
    // Candidates first: most functions (straight-line code, `unrolled`) have few or no compares with a constant, and
    // counting the uses of every value of a large function cost more than the rest of the pass.
    let mut candidates = Vec::new();
    for block in func.layout.blocks() {
        for inst in func.layout.block_insts(block) {
            if let InstructionData::IntCompare { opcode: Opcode::Icmp, cond, args: [d, s] } = func.dfg.insts[inst] {
                let (d, s) = (func.dfg.resolve_aliases(d), func.dfg.resolve_aliases(s));
                if let Some(narrowing) = narrowing(&func.dfg, d, s) {
                    candidates.push((inst, cond, d, narrowing));
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
    for (inst, cond, d, (source, narrow, c)) in candidates {
        if uses[d] != 1 {
            continue;
        }
        // The new operands are defined right before the compare, which is where they must dominate.
        cursor.goto_inst(inst);
        let (y, ty) = match source {
            Source::LowBitsOf(x) if compares_as_low_bits(&cursor.func.dfg, x, narrow, c) => {
                (x, cursor.func.dfg.value_type(x))
            }
            Source::Narrow(y) => (y, narrow),
            Source::LowBitsOf(x) => (cursor.ins().ireduce(narrow, x), narrow),
        };
        let c = cursor.ins().iconst(ty, c as i64);
        // Same opcode and result type (`i8`): only the condition and operands change.
        cursor.func.dfg.insts[inst] =
            InstructionData::IntCompare { opcode: Opcode::Icmp, cond: cond.unsigned(), args: [y, c] };
        rewritten += 1;
    }
    rewritten
}

/// The narrow source, its type and the constant, when `d cc s` may be compared at the narrow width.
fn narrowing(dfg: &DataFlowGraph, d: Value, s: Value) -> Option<(Source, Type, u64)> {
    let width = dfg.value_type(d);
    let c = constant(dfg, s)?;
    let (source, narrow) = narrowest_source(dfg, d, MAX_DEPTH)?;
    let fits = c < 1u64 << narrow.bits();
    // `cmpw` only with an immediate that is a sign-extended byte (no length-changing prefix).
    let no_imm16 = narrow != types::I16 || !(0x80..0xff80).contains(&c);
    (narrow.bits() < width.bits() && fits && no_imm16).then_some((source, narrow, c))
}

/// Whether the unsigned compare of `x` with `c` at `x`'s width gives the same answer as that of `x`'s low bits
/// (`narrow`) with `c`, for every value the IR allows `x` (module documentation: `hi < 2^K`, `lo ≥ c + 1 − 2^K`).
fn compares_as_low_bits(dfg: &DataFlowGraph, x: Value, narrow: Type, c: u64) -> bool {
    let span = 1i128 << narrow.bits();
    signed_range(dfg, x, MAX_RANGE_DEPTH).is_some_and(|(lo, hi)| hi < span && lo > i128::from(c) - span)
}

/// Bounds `[lo, hi]` of `v` read as a signed number of its width, from its definition: a zero-extension (`uextend`,
/// `uload8`/`16`/`32`), a `band` with a non-negative constant, a logical right shift by a constant, a constant, or
/// one of these plus or minus a constant when the sum cannot wrap. `None` when unknown.
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
        fold_with(shape, cc, c, false)
    }

    /// [`fold`], and with `second_use` the wide value is also compared with `x` (a second use).
    fn fold_with(
        shape: impl Fn(&mut FunctionBuilder, Value) -> Value,
        cc: IntCC,
        c: i64,
        second_use: bool,
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
        let mut result = b.ins().icmp(cc, d, s);
        if second_use {
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
        assert!(!fold(masked(0x7f), IntCC::Equal, 1).1);
        assert!(!fold(masked(0x1ff), IntCC::Equal, 1).1);
        assert!(!fold(|_, x| x, IntCC::Equal, 1).1);
        // A 16-bit constant that needs a 16-bit immediate (`cmpw $imm16`: a length-changing prefix).
        assert!(!fold(masked(0xffff), IntCC::Equal, 0x86dd).1);
        assert!(fold(masked(0xffff), IntCC::Equal, 0x7f).1);
    }

    #[test]
    fn a_wide_value_that_is_used_again_is_compared_at_full_width() {
        assert!(fold_with(masked(0xff), IntCC::UnsignedLessThan, 9, false).1);
        assert!(!fold_with(masked(0xff), IntCC::UnsignedLessThan, 9, true).1);
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
        assert!(folded && !text.contains("ireduce") && text.contains("icmp ule"), "{text}");
        // The lowest value may be c + 1 - 256 (-246 & 0xff = 10 > 9), not c - 256 (-247 & 0xff = 9).
        assert!(!fold(loaded_byte_plus(-246, 0xff), IntCC::Equal, 9).0.contains("ireduce"));
        let (text, folded) = fold(loaded_byte_plus(-247, 0xff), IntCC::Equal, 9);
        assert!(folded && text.contains("ireduce.i8"), "{text}");
        // Values at or above 256 wrap to small masked values: narrowed.
        assert!(fold(loaded_byte_plus(1, 0xff), IntCC::UnsignedLessThan, 3).0.contains("ireduce.i8"));
        assert!(!fold(loaded_byte_plus(1, 0xffff), IntCC::UnsignedLessThan, 3).0.contains("ireduce"));
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
