//! A conditional jump that skips the rest of a loop body to a short latch enters its own copy of the latch, with the
//! comparison inverted so that the copy follows the jump (`lower::latch_copy`). The scan loops here have `sieve`'s
//! shape — latch before header, entered at the header — with every jump condition, both widths and random
//! immediates on the skip, and a body that writes the buffer; native code must agree with the reference interpreter
//! on r0 and the buffer.

use bpf2sys::isa::{AluOp, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::lower::plan::FunctionPlan;
use bpf2sys::lower::MapDataLayout;
use bpf2sys::verifier::Verified;
use bpf2sys_tests::native::{interpreter_and_native, module_from_instructions};
use proptest::prelude::*;

const BUFFER: usize = 64;

const CONDITIONS: [JumpCond; 11] = [
    JumpCond::Eq,
    JumpCond::Ne,
    JumpCond::Gt,
    JumpCond::Ge,
    JumpCond::Lt,
    JumpCond::Le,
    JumpCond::Sgt,
    JumpCond::Sge,
    JumpCond::Slt,
    JumpCond::Sle,
    JumpCond::Set,
];

fn alu(op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width: Width::W64, op, dst, src }
}

fn goto(offset: i32) -> I {
    I::Jump { offset, long: false }
}

/// `for (i = 0; i < n; i++) { if (!(buf[i] <cond> imm)) { count++; sum += buf[i] * i; buf[i] = count; } }`,
/// r0 = sum ^ (count << 32), in the order clang emits it: the latch (slots 5–6) before the header (8–11).
fn scan_loop(n: i32, width: Width, cond: JumpCond, imm: i32) -> Vec<I> {
    vec![
        alu(AluOp::Mov, Reg::R2, Operand::Imm(n)), // 0: r2 = n
        alu(AluOp::Mov, Reg::R4, Operand::Imm(0)), // 1: i = 0
        alu(AluOp::Mov, Reg::R3, Operand::Imm(0)), // 2: count = 0
        alu(AluOp::Mov, Reg::R0, Operand::Imm(0)), // 3: sum = 0
        goto(3),                                   // 4: goto 8 (header)
        alu(AluOp::Add, Reg::R4, Operand::Imm(1)), // 5: latch: i += 1
        I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R2, src: Operand::Reg(Reg::R4), offset: 1 }, // 6: if n > i goto 8
        goto(9),                                         // 7: goto 17 (exit)
        alu(AluOp::Mov, Reg::R6, Operand::Reg(Reg::R1)), // 8: header: r6 = buf + i
        alu(AluOp::Add, Reg::R6, Operand::Reg(Reg::R4)), // 9
        I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R5, src: Reg::R6, offset: 0 }, // 10
        I::JumpIf { width, cond, dst: Reg::R5, src: Operand::Imm(imm), offset: -7 }, // 11: skip: goto 5 (latch)
        alu(AluOp::Add, Reg::R3, Operand::Imm(1)),       // 12: count += 1
        I::Store { size: MemSize::B, dst: Reg::R6, offset: 0, src: Operand::Reg(Reg::R3) }, // 13: buf[i] = count
        alu(AluOp::Mul, Reg::R5, Operand::Reg(Reg::R4)), // 14
        alu(AluOp::Add, Reg::R0, Operand::Reg(Reg::R5)), // 15: sum += buf[i] * i
        goto(-12),                                       // 16: goto 5 (latch)
        alu(AluOp::Lsh, Reg::R3, Operand::Imm(32)),      // 17: exit block
        alu(AluOp::Xor, Reg::R0, Operand::Reg(Reg::R3)), // 18
        I::Exit,                                         // 19
    ]
}

#[test]
fn the_skip_of_a_scan_loop_gets_a_latch_copy() {
    let module = module_from_instructions("scan", scan_loop(64, Width::W64, JumpCond::Eq, 0));
    let verified = Verified::unchecked_for_testing(&module, 0).unwrap();
    let plan = FunctionPlan::new(&verified, 0, MapDataLayout::default());
    let copies: Vec<_> = plan.latch_copies().map(|(skip, copy)| (skip, copy.first, copy.jump)).collect();
    assert_eq!(copies, vec![(11, 5, 6)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn native_code_with_latch_copies_matches_the_interpreter(
        n in 0i32..=BUFFER as i32,
        wide in any::<bool>(),
        cond in 0usize..CONDITIONS.len(),
        imm in prop_oneof![any::<i8>().prop_map(i32::from), any::<i32>()],
        data in proptest::collection::vec(any::<u8>(), BUFFER),
    ) {
        let width = if wide { Width::W64 } else { Width::W32 };
        let (interpreted, native) = interpreter_and_native(&scan_loop(n, width, CONDITIONS[cond], imm), &data).unwrap();
        prop_assert_eq!(native, interpreted);
    }
}
