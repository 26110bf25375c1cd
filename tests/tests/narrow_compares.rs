//! A conditional jump that compares a zero-extended value with a constant is lowered as a compare at the narrow
//! width (`lower::narrow_compare`: `r &= 0xff; if r > 9` → `cmpb $9`), and an if-converted jump's selects keep the
//! variable's old value in the `cmov`'s destination (`translate_speculated_path`). Both must give RFC 9669's answer
//! (§4.3: the full 64- or 32-bit register, unsigned or signed) for every condition, width and constant, including
//! constants just outside the narrow range and negative ones: native x64 and ARM64 code must agree with the
//! reference interpreter on r0 and the buffer. A masked value the IR bounds (a loaded byte or half plus a constant)
//! is compared whole when its bounds make that exact; its own test walks those bounds' edges. A 64-bit value the IR
//! bounds to 32 bits signed (a loaded byte or a shifted word moved by `add`/`sub`/`or`/`xor` with constants) is
//! compared at 32 bits; its test walks the bounds that allow it, the constants that do (module documentation of
//! `narrow_compare`: signed 32-bit constants, and for unsigned orders `2^31 <= c < 2^32 + lo`) and those just past
//! them, with the constant on either side.

use bpf2sys::compiled::Target;
use bpf2sys::isa::{AluOp, Imm64Kind, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::verifier::Verified;
use bpf2sys_tests::arm64::run_conformance_arm64;
use bpf2sys_tests::native::{interpreter_and_native, module_from_instructions};
use bpf2sys_tests::support::lowered;
use proptest::prelude::*;

fn alu(width: Width, op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width, op, dst, src }
}

/// The ways a register becomes a zero-extension of a narrower value (`add` is an `Add` of `addend` first, as
/// `branchy`'s `(u8)(c - '0')`; shapes 8–10 add it to a loaded byte or half, whose bounds the IR knows).
fn zero_extension(shape: usize, addend: i32) -> Vec<I> {
    let (w32, w64) = (Width::W32, Width::W64);
    match shape {
        0 => vec![alu(w64, AluOp::And, Reg::R5, Operand::Imm(0xff))],
        1 => vec![alu(w64, AluOp::And, Reg::R5, Operand::Imm(0xffff))],
        2 => {
            vec![alu(w64, AluOp::Add, Reg::R5, Operand::Imm(addend)), alu(w64, AluOp::And, Reg::R5, Operand::Imm(0xff))]
        }
        3 => vec![alu(w32, AluOp::And, Reg::R5, Operand::Imm(0xff))],
        4 => vec![alu(w32, AluOp::Mov, Reg::R5, Operand::Reg(Reg::R5))],
        5 => vec![alu(w32, AluOp::Add, Reg::R5, Operand::Imm(addend))],
        6 => vec![alu(w64, AluOp::Lsh, Reg::R5, Operand::Imm(32)), alu(w64, AluOp::Rsh, Reg::R5, Operand::Imm(32))],
        7 => vec![I::Load { size: MemSize::H, sign_extend: false, dst: Reg::R5, src: Reg::R1, offset: 0 }],
        // A loaded byte or half moved by the addend and masked: the IR bounds the value before the mask
        // (`narrow_compare`'s whole compare when the bounds allow it).
        8 | 9 => {
            let (size, mask) = if shape == 8 { (MemSize::B, 0xff) } else { (MemSize::H, 0xffff) };
            vec![
                I::Load { size, sign_extend: false, dst: Reg::R5, src: Reg::R1, offset: 0 },
                alu(w64, AluOp::Add, Reg::R5, Operand::Imm(addend)),
                alu(w64, AluOp::And, Reg::R5, Operand::Imm(mask)),
            ]
        }
        _ => vec![
            I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R5, src: Reg::R1, offset: 0 },
            alu(w32, AluOp::Add, Reg::R5, Operand::Imm(addend)),
            alu(w32, AluOp::And, Reg::R5, Operand::Imm(0xff)),
        ],
    }
}

const SHAPES: usize = 11;

/// `r5 = buf[0..8]; <zero extension of r5>; r3 = imm; r0 = buf[8..16];` then, when `branch`, `if r5 <cond> imm
/// goto +2; buf[16] = r5 (a store: the jump stays a branch); r0 = 1;` — else `if r5 <cond> imm goto +2; r0 += 1;
/// r0 ^= r5` (if-converted into selects). The comparison's constant is the immediate or, when `in_register`, r3.
fn program(
    shape: usize,
    addend: i32,
    width: Width,
    cond: JumpCond,
    imm: i32,
    in_register: bool,
    branch: bool,
) -> Vec<I> {
    let mut program = vec![I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R5, src: Reg::R1, offset: 0 }];
    program.extend(zero_extension(shape, addend));
    program.push(alu(Width::W64, AluOp::Mov, Reg::R3, Operand::Imm(imm)));
    program.push(I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R0, src: Reg::R1, offset: 8 });
    let src = if in_register { Operand::Reg(Reg::R3) } else { Operand::Imm(imm) };
    program.push(I::JumpIf { width, cond, dst: Reg::R5, src, offset: 2 });
    if branch {
        program.push(I::Store { size: MemSize::DW, dst: Reg::R1, offset: 16, src: Operand::Reg(Reg::R5) });
        program.push(alu(Width::W64, AluOp::Mov, Reg::R0, Operand::Imm(1)));
    } else {
        program.push(alu(Width::W64, AluOp::Add, Reg::R0, Operand::Imm(1)));
        program.push(alu(Width::W64, AluOp::Xor, Reg::R0, Operand::Reg(Reg::R5)));
    }
    program.push(alu(Width::W64, AluOp::Xor, Reg::R0, Operand::Reg(Reg::R5)));
    program.push(I::Exit);
    program
}

/// [`program`] with a zero extension the IR bounds (shapes 8–10) whose value nothing reads after the comparison, so
/// `narrow_compare` rewrites it: `r5 = <bounded masked value>; r0 = buf[8..16]; if r5 <cond> imm goto +2;` then a
/// store of r0 and `r0 = 1`, or `r0 += 1; r0 ^= 3`; `exit`.
fn compared_once_program(shape: usize, addend: i32, width: Width, cond: JumpCond, imm: i32, branch: bool) -> Vec<I> {
    let mut program = zero_extension(shape, addend);
    program.push(I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R0, src: Reg::R1, offset: 8 });
    program.push(I::JumpIf { width, cond, dst: Reg::R5, src: Operand::Imm(imm), offset: 2 });
    push_two_way_tail(&mut program, branch);
    program
}

/// The two instructions a compare skips or runs, then `exit`: a store of r0 and `r0 = 1` when `branch`, else
/// `r0 += 1; r0 ^= 3` (no memory effect, so the compare may become a select).
fn push_two_way_tail(program: &mut Vec<I>, branch: bool) {
    if branch {
        program.push(I::Store { size: MemSize::DW, dst: Reg::R1, offset: 16, src: Operand::Reg(Reg::R0) });
        program.push(alu(Width::W64, AluOp::Mov, Reg::R0, Operand::Imm(1)));
    } else {
        program.push(alu(Width::W64, AluOp::Add, Reg::R0, Operand::Imm(1)));
        program.push(alu(Width::W64, AluOp::Xor, Reg::R0, Operand::Imm(3)));
    }
    program.push(I::Exit);
}

#[test]
fn a_loaded_byte_minus_48_masked_is_compared_whole_and_plus_one_as_a_byte() {
    let clif = |addend| {
        let program = compared_once_program(8, addend, Width::W64, JumpCond::Gt, 9, true);
        let module = module_from_instructions("bounded", program);
        lowered(&Verified::unchecked_for_testing(&module, 0).unwrap(), Target::X64).clif.concat()
    };
    // (byte - 48) & 0xff > 9 is byte - 48 > 9 unsigned: no byte compare (the whole value fits 32 bits, its compare
    // is a 32-bit one).
    let text = clif(-48);
    assert!(text.contains("icmp ugt") && !text.contains("ireduce.i8") && text.contains("ireduce.i32"), "{text}");
    // (byte + 1) & 0xff wraps 255 to 0: compared as a byte.
    let text = clif(1);
    assert!(text.contains("ireduce.i8"), "{text}");
}

fn lddw(dst: Reg, value: i64) -> [I; 2] {
    let (imm, next_imm) = (value as u32 as i32, (value >> 32) as u32 as i32);
    [I::LoadImm64 { dst, kind: Imm64Kind::Imm, imm, next_imm }, I::LoadImm64Continuation]
}

/// The lowest value of [`bounded`]'s shape before its addend, and the span above it.
fn bounded_span(shape: usize) -> (i64, i64) {
    match shape {
        0 => (0, 255),
        1 => (0x20, 0xff - 0x20),
        2 => (0, (1 << 31) - 1),
        _ => (0, 255),
    }
}

/// `r5` = a value the IR bounds, read only by the compare that follows: a loaded byte plus `addend` (shape 0), the
/// byte `| 0x20` plus `addend` (1), the buffer's first double word `>> 33` plus `addend` (2), the byte `^ 0x5a` minus
/// `-addend` (3). The addend is a 64-bit register constant (`lddw r4`).
fn bounded(shape: usize, addend: i64) -> Vec<I> {
    let w64 = Width::W64;
    let size = if shape == 2 { MemSize::DW } else { MemSize::B };
    let mut program = vec![I::Load { size, sign_extend: false, dst: Reg::R5, src: Reg::R1, offset: 0 }];
    match shape {
        1 => program.push(alu(w64, AluOp::Or, Reg::R5, Operand::Imm(0x20))),
        2 => program.push(alu(w64, AluOp::Rsh, Reg::R5, Operand::Imm(33))),
        3 => program.push(alu(w64, AluOp::Xor, Reg::R5, Operand::Imm(0x5a))),
        _ => {}
    }
    let (op, k) = if shape == 3 { (AluOp::Sub, addend.wrapping_neg()) } else { (AluOp::Add, addend) };
    program.extend(lddw(Reg::R4, k));
    program.push(alu(w64, op, Reg::R5, Operand::Reg(Reg::R4)));
    program
}

/// [`bounded`], then `r3 = c` (`lddw`), `r0 = buf[8..16]` and `if r5 <cond> c` — the constant an immediate when
/// `order` is 0 (it must fit one), r3 when 1, or `if r3 <cond> r5` when 2 — `goto +2`; then a store of r0 and
/// `r0 = 1`, or `r0 += 1; r0 ^= 3` (if-converted); `exit`.
fn word_compare_program(shape: usize, addend: i64, width: Width, cond: JumpCond, c: i64, order: usize) -> Vec<I> {
    let mut program = bounded(shape, addend);
    program.extend(lddw(Reg::R3, c));
    program.push(I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R0, src: Reg::R1, offset: 8 });
    let (dst, src) = match order {
        0 => (Reg::R5, Operand::Imm(c as i32)),
        1 => (Reg::R5, Operand::Reg(Reg::R3)),
        _ => (Reg::R3, Operand::Reg(Reg::R5)),
    };
    program.push(I::JumpIf { width, cond, dst, src, offset: 2 });
    push_two_way_tail(&mut program, c & 1 == 0);
    program
}

#[test]
fn a_byte_moved_by_or_and_add_is_compared_at_32_bits_and_a_shared_value_at_64() {
    let clif = |program| {
        let module = module_from_instructions("word", program);
        lowered(&Verified::unchecked_for_testing(&module, 0).unwrap(), Target::X64).clif.concat()
    };
    // `(c | 0x20) - 'a' > 25`, as branchy's letter test.
    let text = clif(word_compare_program(1, -97, Width::W64, JumpCond::Gt, 25, 0));
    assert!(
        text.contains("ireduce.i32") && text.contains("iconst.i32 -97") && text.contains("iconst.i32 25"),
        "{text}"
    );
    // The same value also stored: compared at 64 bits.
    let mut program = word_compare_program(1, -97, Width::W64, JumpCond::Gt, 25, 0);
    let exit = program.pop().unwrap();
    program.extend([I::Store { size: MemSize::DW, dst: Reg::R1, offset: 16, src: Operand::Reg(Reg::R5) }, exit]);
    assert!(!clif(program).contains("ireduce.i32"));
}

/// Constants around the ends of what the 32-bit compare allows: the range's ends, 0 and -1, ±2^31, 2^32 - 1, 2^32,
/// `2^32 + lo` (the unsigned orders' bound), each with its neighbours, or any.
fn word_constant(lo: i64, hi: i64, kind: usize, near: i64, any: i64) -> i64 {
    let base = [lo, hi, 0, -1, 1 << 31, -(1 << 31), (1 << 32) - 1, 1 << 32, (1 << 32) + lo];
    base.get(kind).map_or(any, |b| b.wrapping_add(near))
}

/// Constants around every narrow range's ends, negative ones and any.
fn constant() -> impl Strategy<Value = i32> {
    prop_oneof![
        0i32..=0x101,
        0xfff0i32..=0x1_0001,
        -3i32..=0,
        Just(i32::MAX),
        Just(i32::MIN),
        Just(0x7f),
        Just(0x80),
        Just(0x7fff),
        Just(0x8000),
        any::<i32>(),
    ]
}

/// The buffer: 24 bytes, the first 8 often the constant itself (or its neighbours) so equality and the ends of
/// ordered conditions are hit, before or after the addend (so a loaded value plus the addend lands on the constant,
/// its neighbours, or either side of 0, where the mask wraps).
fn buffer(imm: i32, addend: i32, first: u8, near: i8, random: &[u8]) -> Vec<u8> {
    let mut data = random.to_vec();
    let near = i64::from(near);
    let value = match first % 5 {
        0 => i64::from(imm).wrapping_add(near),
        1 => i64::from(imm as u32).wrapping_add(near),
        2 => i64::from(imm).wrapping_sub(i64::from(addend)).wrapping_add(near),
        3 => near.wrapping_sub(i64::from(addend)),
        _ => return data,
    };
    data[..8].copy_from_slice(&value.to_le_bytes());
    data
}

/// Runs `program` on `data` in the interpreter, as x64 native code and as ARM64 code under the emulator, and fails
/// the case unless r0 and the buffer agree on all three.
fn native_and_arm64_match_the_interpreter(program: &[I], data: &[u8]) -> Result<(), TestCaseError> {
    let (interpreted, native) = interpreter_and_native(program, data).unwrap();
    prop_assert_eq!(&native, &interpreted);
    let mut arm64_buffer = data.to_vec();
    let arm64 = run_conformance_arm64(program, &mut arm64_buffer).unwrap();
    prop_assert_eq!(arm64, interpreted.r0);
    prop_assert_eq!(arm64_buffer, interpreted.buffer);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn narrow_compares_match_the_interpreter_on_x64_and_arm64(
        shape in 0usize..SHAPES,
        addend in prop_oneof![-64i32..=64, any::<i32>()],
        wide in any::<bool>(),
        cond in 0usize..JumpCond::ALL.len(),
        imm in constant(),
        in_register in any::<bool>(),
        branch in any::<bool>(),
        first in any::<u8>(),
        near in -2i8..=2,
        random in proptest::collection::vec(any::<u8>(), 24),
    ) {
        let width = if wide { Width::W64 } else { Width::W32 };
        let program = program(shape, addend, width, JumpCond::ALL[cond], imm, in_register, branch);
        let data = buffer(imm, addend, first, near, &random);
        native_and_arm64_match_the_interpreter(&program, &data)?;
    }

    /// The whole-value compare (`(byte + addend) & 0xff <= c` as `byte + addend <= c` when the bounds allow it) at
    /// its edges: the addend on the lowest bound that allows it (`c + 1 - 2^K`) and around it, or one that keeps the
    /// value below the mask's range or pushes it past; constants in, at the end of and past the narrow range; the
    /// loaded value chosen so that the sum lands on the constant, around 0 or around `2^K` (where the mask wraps).
    #[test]
    fn compares_of_bounded_masked_values_match_the_interpreter_on_x64_and_arm64(
        shape in 8usize..SHAPES,
        addend_kind in 0usize..4,
        delta in -2i64..=2,
        addend_raw in any::<i32>(),
        wide in any::<bool>(),
        cond in 0usize..JumpCond::ALL.len(),
        imm in prop_oneof![0i32..=0x101, 0xfff0i32..=0x1_0001, -3i32..=0],
        branch in any::<bool>(),
        value_kind in 0usize..4,
        near in -2i64..=2,
        random in proptest::collection::vec(any::<u8>(), 24),
    ) {
        let span: i64 = if shape == 9 { 0x1_0000 } else { 0x100 };
        let addend = match addend_kind {
            0 => i64::from(imm) + 1 - span + delta,
            1 => i64::from(addend_raw.rem_euclid(303)) - 300,
            2 => -span + delta,
            _ => i64::from(addend_raw),
        } as i32; // in i32 range by construction, or `addend_raw` itself
        let sum = match value_kind {
            0 => i64::from(imm) + near,
            1 => near,
            2 => span + near,
            _ => i64::from(random[0]),
        };
        let loaded = (sum - i64::from(addend)).rem_euclid(span) as u16;
        let mut data = random.clone();
        data[..2].copy_from_slice(&loaded.to_le_bytes());
        let width = if wide { Width::W64 } else { Width::W32 };
        let program = compared_once_program(shape, addend, width, JumpCond::ALL[cond], imm, branch);
        native_and_arm64_match_the_interpreter(&program, &data)?;
    }

    /// 32-bit compares of bounded 64-bit values: every condition and width, the constant as an immediate, in a
    /// register or first, the addend on the bounds that fit 32 bits signed (`lo = -2^31`, `hi = 2^31 - 1`) or just
    /// past them, and the loaded value chosen so that the compared value lands on the range's ends, on the constant
    /// or next to it, or on 0 or -1.
    #[test]
    fn word_compares_match_the_interpreter_on_x64_and_arm64(
        shape in 0usize..4,
        addend_kind in 0usize..5,
        addend_near in -1i64..=1,
        addend_any in any::<i32>(),
        wide in prop_oneof![4 => Just(true), 1 => Just(false)],
        cond in 0usize..JumpCond::ALL.len(),
        constant_kind in 0usize..10,
        near in -1i64..=1,
        constant_any in any::<i64>(),
        order in 0usize..3,
        value_kind in 0usize..5,
        value_near in -1i64..=1,
        random in proptest::collection::vec(any::<u8>(), 24),
    ) {
        let (low, span) = bounded_span(shape);
        // The lowest value is `low + addend`: on -2^31, at 2^31 - 1 - span (the highest that fits), or past either.
        let addend = match addend_kind {
            0 => -(1 << 31) - low + addend_near,
            1 => (1 << 31) - 1 - span - low + addend_near,
            2 => -48 + addend_near,
            3 => -97 + addend_near,
            _ => i64::from(addend_any),
        };
        let (lo, hi) = (low + addend, low + span + addend);
        let c = word_constant(lo, hi, constant_kind, near, constant_any);
        let order = if c as i32 as i64 == c { order } else { order.max(1) };
        let x = match value_kind {
            0 => lo,
            1 => hi,
            2 => c.wrapping_add(value_near),
            3 => value_near.min(0),
            _ => lo + i64::from(random[0]) * span / 255,
        }
        .clamp(lo, hi);
        // The loaded value that gives x (shape 1's `| 0x20` keeps bit 5: a value without it is one above).
        let loaded = (x - addend) as u64;
        let mut data = random.clone();
        match shape {
            2 => data[..8].copy_from_slice(&(loaded << 33 | u64::from(random[1])).to_le_bytes()),
            3 => data[0] = (loaded as u8) ^ 0x5a,
            _ => data[0] = loaded as u8,
        }
        let width = if wide { Width::W64 } else { Width::W32 };
        let program = word_compare_program(shape, addend, width, JumpCond::ALL[cond], c, order);
        native_and_arm64_match_the_interpreter(&program, &data)?;
    }
}
