//! A value loaded from memory and compared is compared in memory on x64 when nothing else reads it (the patched
//! cranelift-codegen, `vendor/cranelift-codegen/BPF2SYS-PATCH.md` change 2): a zero-extended byte or half against a
//! constant inside its range is `cmp $c, mem` at the load's width with the unsigned condition (`cmpb $0x0,(mem)`
//! for `if (s[i])`, as clang's), and a load the block's branch consumes may sink into that branch's compare
//! (`cmp reg, mem`). Each must give RFC 9669's answer (§4.3: the full 64- or 32-bit register, unsigned or signed) for
//! every condition and width, with constants at and just past the narrow range's ends (0, 0x7f/0x80, 0xff/0x100,
//! 0xffff/0x10000, negative ones) and loaded values around them: native x64 and ARM64 code must agree with the
//! reference interpreter on r0 and the buffer, in a branch and in an if-converted select.

use bpf2sys::compiled::Target;
use bpf2sys::isa::{AluOp, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::verifier::Verified;
use bpf2sys_tests::arm64::run_conformance_arm64;
use bpf2sys_tests::native::{interpreter_and_native, module_from_instructions};
use bpf2sys_tests::support::lowered;
use proptest::prelude::*;

const SIZES: [MemSize; 4] = [MemSize::B, MemSize::H, MemSize::W, MemSize::DW];

fn alu(op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width: Width::W64, op, dst, src }
}

/// How the loaded value is compared: with an immediate, with a register loaded from the buffer (load on the left),
/// or with that register on the left and the load on the right.
#[derive(Clone, Copy, Debug)]
enum Operands {
    Immediate,
    Register,
    Swapped,
}

/// `r3 = buf[16..24]; r0 = buf[8..16]; r5 = *(size *)(buf + 2)` (the load right before the compare, so it may sink) then,
/// when `branch`, `if <compare> goto +2; buf[16] = r0 (a store: the jump stays a branch); r0 = 1;` — else
/// `if <compare> goto +2; r0 += 1; r0 ^= 3` (if-converted into selects) and `buf[16] = r0`; `exit`. Nothing else
/// reads r5.
fn program(size: MemSize, width: Width, cond: JumpCond, imm: i32, operands: Operands, branch: bool) -> Vec<I> {
    let mut program = vec![
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R3, src: Reg::R1, offset: 16 },
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R0, src: Reg::R1, offset: 8 },
        I::Load { size, sign_extend: false, dst: Reg::R5, src: Reg::R1, offset: 2 },
    ];
    program.push(match operands {
        Operands::Immediate => I::JumpIf { width, cond, dst: Reg::R5, src: Operand::Imm(imm), offset: 2 },
        Operands::Register => I::JumpIf { width, cond, dst: Reg::R5, src: Operand::Reg(Reg::R3), offset: 2 },
        Operands::Swapped => I::JumpIf { width, cond, dst: Reg::R3, src: Operand::Reg(Reg::R5), offset: 2 },
    });
    if branch {
        program.push(I::Store { size: MemSize::DW, dst: Reg::R1, offset: 16, src: Operand::Reg(Reg::R0) });
        program.push(alu(AluOp::Mov, Reg::R0, Operand::Imm(1)));
    } else {
        program.push(alu(AluOp::Add, Reg::R0, Operand::Imm(1)));
        program.push(alu(AluOp::Xor, Reg::R0, Operand::Imm(3)));
        // A store, so the loads stay in program order (a function that writes no memory may move its loads).
        program.push(I::Store { size: MemSize::DW, dst: Reg::R1, offset: 16, src: Operand::Reg(Reg::R0) });
    }
    program.push(I::Exit);
    program
}

fn x64_code(program: Vec<I>) -> String {
    let module = module_from_instructions("memory_compare", program);
    lowered(&Verified::unchecked_for_testing(&module, 0).unwrap(), Target::X64).disassembly.concat()
}

#[test]
fn byte_and_half_tests_against_constants_are_compares_in_memory() {
    for (size, compare) in [(MemSize::B, "cmpb $0,"), (MemSize::H, "cmpw $0,")] {
        // `if (r5 != 0)`: the mid-end turns it into a test of the loaded value itself (`is_nonzero`).
        let text = x64_code(program(size, Width::W64, JumpCond::Ne, 0, Operands::Immediate, true));
        assert!(text.contains(compare) && !text.contains("movz"), "{size:?}:\n{text}");
    }
    let text = x64_code(program(MemSize::B, Width::W64, JumpCond::Sgt, 0x7f, Operands::Immediate, true));
    assert!(text.contains("cmpb $0x7F,") && !text.contains("movz"), "{text}");
    // Past the byte's range the compare's answer is fixed, and the rule must not fire.
    let text = x64_code(program(MemSize::B, Width::W64, JumpCond::Gt, 0x100, Operands::Immediate, true));
    assert!(!text.contains("cmpb"), "{text}");
}

#[test]
fn a_load_the_branch_compares_sinks_into_the_branch() {
    let text = x64_code(program(MemSize::DW, Width::W64, JumpCond::Gt, 5, Operands::Swapped, true));
    assert!(text.lines().any(|line| line.contains("cmp") && line.contains("(%")), "{text}");
}

/// Constants around every narrow range's ends, negative ones and any.
fn constant() -> impl Strategy<Value = i32> {
    prop_oneof![
        0i32..=0x101,
        0xfff0i32..=0x1_0001,
        -3i32..=0,
        Just(0x7f),
        Just(0x80),
        Just(0x7fff),
        Just(0x8000),
        Just(i32::MAX),
        Just(i32::MIN),
        any::<i32>(),
    ]
}

/// The buffer: 24 bytes, the loaded bytes (from offset 2) often the constant or its neighbours, so equality and the
/// ends of ordered conditions are hit, or values around 0 and the sign bits of a byte and a half; the constant
/// (sign-extended, as an immediate is) at 16..24 for the register operand.
fn buffer(imm: i32, kind: u8, near: i8, random: &[u8]) -> Vec<u8> {
    let mut data = random.to_vec();
    data[16..24].copy_from_slice(&i64::from(imm).to_le_bytes());
    let near = i64::from(near);
    let value = match kind % 5 {
        0 => i64::from(imm).wrapping_add(near),
        1 => near,
        2 => 0x80 + near,
        3 => 0x8000 + near,
        _ => return data,
    };
    data[2..10].copy_from_slice(&value.to_le_bytes());
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn memory_compares_match_the_interpreter_on_x64_and_arm64(
        size in 0usize..SIZES.len(),
        wide in any::<bool>(),
        cond in 0usize..JumpCond::ALL.len(),
        imm in constant(),
        operands in prop_oneof![Just(Operands::Immediate), Just(Operands::Register), Just(Operands::Swapped)],
        branch in any::<bool>(),
        kind in any::<u8>(),
        near in -2i8..=2,
        random in proptest::collection::vec(any::<u8>(), 24),
    ) {
        let width = if wide { Width::W64 } else { Width::W32 };
        let program = program(SIZES[size], width, JumpCond::ALL[cond], imm, operands, branch);
        let data = buffer(imm, kind, near, &random);
        let (interpreted, native) = interpreter_and_native(&program, &data).unwrap();
        prop_assert_eq!(&native, &interpreted);
        let mut arm64_buffer = data.clone();
        let arm64 = run_conformance_arm64(&program, &mut arm64_buffer).unwrap();
        prop_assert_eq!(arm64, interpreted.r0);
        prop_assert_eq!(arm64_buffer, interpreted.buffer);
    }
}
