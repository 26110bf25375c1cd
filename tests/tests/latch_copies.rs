//! The jumps into a short loop latch run copies of it (`lower::latch_copy`): a conditional skip enters its own copy,
//! with the comparison inverted so that the copy follows the jump; a `goto` or fall-through into it is replaced by
//! the latch's instructions; a loop header's jump whose straight way runs into the latch is negated. The scan loops
//! have `sieve`'s shape — latch before header, entered at the header — and the tokenizer loops `branchy`'s — latch
//! after the body, entered by a `goto`, a fall-through and a rotated header jump — with every jump condition, both
//! widths and random immediates, and bodies that write the buffer; native code must agree with the reference
//! interpreter on r0 and the buffer. The state-machine loops (`branchy`'s `if (st != K) st = K;` before each copied
//! latch) pass constants on their back edges, which `lower::edge_constants` defines on edge blocks of their own.

use bpf2sys::compiled::Target;
use bpf2sys::isa::{AluOp, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::lower::plan::{FunctionPlan, JumpLowering};
use bpf2sys::lower::MapDataLayout;
use bpf2sys::verifier::Verified;
use bpf2sys_tests::native::{interpreter_and_native, module_from_instructions};
use bpf2sys_tests::support::lowered;
use proptest::prelude::*;

const BUFFER: usize = 64;

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

/// `do { c = buf[i]; if (!(c <cond> imm)) { count++; } else if (c > 200) { state ^= c; sum += state; state++; }
/// else { buf[i] = count; sum += c; } } while (++i < n);` with r0 = sum ^ state ^ (count << 32): the latch (17–18)
/// after the body, entered by the straight way's `goto` (10), the other ways' `goto` (13) and fall-through (16).
fn tokenizer_loop(n: i32, width: Width, cond: JumpCond, imm: i32) -> Vec<I> {
    let jump_if = |width, cond, dst, src, offset| I::JumpIf { width, cond, dst, src, offset };
    vec![
        alu(AluOp::Mov, Reg::R2, Operand::Imm(n)),       // 0: r2 = n
        alu(AluOp::Mov, Reg::R4, Operand::Imm(0)),       // 1: i = 0
        alu(AluOp::Mov, Reg::R3, Operand::Imm(0)),       // 2: count = 0
        alu(AluOp::Mov, Reg::R0, Operand::Imm(0)),       // 3: sum = 0
        alu(AluOp::Mov, Reg::R7, Operand::Imm(0)),       // 4: state = 0
        alu(AluOp::Mov, Reg::R6, Operand::Reg(Reg::R1)), // 5: header: r6 = buf + i
        alu(AluOp::Add, Reg::R6, Operand::Reg(Reg::R4)), // 6
        I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R5, src: Reg::R6, offset: 0 }, // 7
        jump_if(width, cond, Reg::R5, Operand::Imm(imm), 2), // 8: if c <cond> imm goto 11
        alu(AluOp::Add, Reg::R3, Operand::Imm(1)),       // 9: straight way: count += 1
        goto(6),                                         // 10: goto 17 (latch)
        jump_if(Width::W64, JumpCond::Gt, Reg::R5, Operand::Imm(200), 2), // 11: if c > 200 goto 14
        I::Store { size: MemSize::B, dst: Reg::R6, offset: 0, src: Operand::Reg(Reg::R3) }, // 12: buf[i] = count
        goto(3),                                         // 13: goto 17 (latch)
        alu(AluOp::Xor, Reg::R7, Operand::Reg(Reg::R5)), // 14: state ^= c
        alu(AluOp::Add, Reg::R0, Operand::Reg(Reg::R7)), // 15: sum += state
        alu(AluOp::Add, Reg::R7, Operand::Imm(1)),       // 16: state += 1, falls into the latch
        alu(AluOp::Add, Reg::R4, Operand::Imm(1)),       // 17: latch: i += 1
        jump_if(Width::W64, JumpCond::Gt, Reg::R2, Operand::Reg(Reg::R4), -14), // 18: if n > i goto 5
        alu(AluOp::Lsh, Reg::R3, Operand::Imm(32)),      // 19: exit block
        alu(AluOp::Xor, Reg::R0, Operand::Reg(Reg::R3)), // 20
        alu(AluOp::Xor, Reg::R0, Operand::Reg(Reg::R7)), // 21
        I::Exit,                                         // 22
    ]
}

#[test]
fn the_latch_after_a_tokenizer_body_is_copied_and_its_header_rotated() {
    let module = module_from_instructions("tokenizer", tokenizer_loop(64, Width::W64, JumpCond::Eq, 0));
    let verified = Verified::unchecked_for_testing(&module, 0).unwrap();
    let plan = FunctionPlan::new(&verified, 0, MapDataLayout::default());
    assert_eq!(plan.latch_at(17), Some(18));
    assert_eq!(plan.latch_copies().count(), 0, "no conditional jump skips to the latch");
    assert_eq!(plan.jump(8), &JumpLowering::BranchTargetNext);
    assert_eq!(plan.jump(11), &JumpLowering::Branch);
}

/// `do { old = state; c = buf[i]; if (c <cond> imm) { state = b; sum += c; if (old != b) words++; } else { state = a;
/// if (old != a) words++; } } while (++i < n);` with r0 = sum ^ state ^ (words << 32), in the order clang emits
/// `branchy`'s state machine: the new state is set before the old one is compared. Both ways end in the latch (a
/// skip, a `goto` and a fall-through into it), so each way's last block passes its constant state back to the
/// header, whose `state` it compared: the edges `lower::edge_constants` splits to define the constant there.
fn state_machine_loop(n: i32, width: Width, cond: JumpCond, imm: i32, a: i32, b: i32) -> Vec<I> {
    let jump_if = |width, cond, dst, src, offset| I::JumpIf { width, cond, dst, src, offset };
    vec![
        alu(AluOp::Mov, Reg::R2, Operand::Imm(n)),       // 0: r2 = n
        alu(AluOp::Mov, Reg::R4, Operand::Imm(0)),       // 1: i = 0
        alu(AluOp::Mov, Reg::R3, Operand::Imm(0)),       // 2: words = 0
        alu(AluOp::Mov, Reg::R0, Operand::Imm(0)),       // 3: sum = 0
        alu(AluOp::Mov, Reg::R7, Operand::Imm(0)),       // 4: state = 0
        alu(AluOp::Mov, Reg::R9, Operand::Reg(Reg::R7)), // 5: header: old = state
        alu(AluOp::Mov, Reg::R6, Operand::Reg(Reg::R1)), // 6: r6 = buf + i
        alu(AluOp::Add, Reg::R6, Operand::Reg(Reg::R4)), // 7
        I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R5, src: Reg::R6, offset: 0 }, // 8
        jump_if(width, cond, Reg::R5, Operand::Imm(imm), 4), // 9: if c <cond> imm goto 14
        alu(AluOp::Mov, Reg::R7, Operand::Imm(a)),       // 10: state = a
        jump_if(Width::W64, JumpCond::Eq, Reg::R9, Operand::Imm(a), 6), // 11: if old == a goto 18 (latch)
        alu(AluOp::Add, Reg::R3, Operand::Imm(1)),       // 12: words += 1
        goto(4),                                         // 13: goto 18 (latch)
        alu(AluOp::Mov, Reg::R7, Operand::Imm(b)),       // 14: state = b
        alu(AluOp::Add, Reg::R0, Operand::Reg(Reg::R5)), // 15: sum += c
        jump_if(Width::W64, JumpCond::Eq, Reg::R9, Operand::Imm(b), 1), // 16: if old == b goto 18 (latch)
        alu(AluOp::Add, Reg::R3, Operand::Imm(1)),       // 17: words += 1, falls into the latch
        alu(AluOp::Add, Reg::R4, Operand::Imm(1)),       // 18: latch: i += 1
        jump_if(Width::W64, JumpCond::Gt, Reg::R2, Operand::Reg(Reg::R4), -15), // 19: if n > i goto 5
        alu(AluOp::Lsh, Reg::R3, Operand::Imm(32)),      // 20: exit block
        alu(AluOp::Xor, Reg::R0, Operand::Reg(Reg::R3)), // 21
        alu(AluOp::Xor, Reg::R0, Operand::Reg(Reg::R7)), // 22
        I::Exit,                                         // 23
    ]
}

#[test]
fn the_state_machine_s_back_edges_define_their_constants_on_the_edge() {
    let module = module_from_instructions("states", state_machine_loop(64, Width::W64, JumpCond::Gt, 9, 1, 2));
    let verified = Verified::unchecked_for_testing(&module, 0).unwrap();
    let clif = lowered(&verified, Target::X64).clif.concat();
    // A block of its own that only defines the constant and jumps back to the header with it, for each way.
    for constant in [1, 2] {
        let edge = format!(" = iconst.i64 {constant}\n    jump block");
        assert!(clif.contains(&edge), "no edge block defines {constant}:\n{clif}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn native_code_with_latch_copies_matches_the_interpreter(
        n in 0i32..=BUFFER as i32,
        wide in any::<bool>(),
        cond in 0usize..JumpCond::ALL.len(),
        imm in prop_oneof![any::<i8>().prop_map(i32::from), any::<i32>()],
        data in proptest::collection::vec(any::<u8>(), BUFFER),
    ) {
        let width = if wide { Width::W64 } else { Width::W32 };
        let (interpreted, native) = interpreter_and_native(&scan_loop(n, width, JumpCond::ALL[cond], imm), &data).unwrap();
        prop_assert_eq!(native, interpreted);
    }

    #[test]
    fn native_code_with_copied_latches_and_a_rotated_header_matches_the_interpreter(
        n in 0i32..=BUFFER as i32,
        wide in any::<bool>(),
        cond in 0usize..JumpCond::ALL.len(),
        imm in prop_oneof![any::<i8>().prop_map(i32::from), any::<i32>()],
        data in proptest::collection::vec(any::<u8>(), BUFFER),
    ) {
        let width = if wide { Width::W64 } else { Width::W32 };
        let program = tokenizer_loop(n, width, JumpCond::ALL[cond], imm);
        let (interpreted, native) = interpreter_and_native(&program, &data).unwrap();
        prop_assert_eq!(native, interpreted);
    }

    #[test]
    fn native_code_with_constants_on_back_edges_matches_the_interpreter(
        n in 0i32..=BUFFER as i32,
        wide in any::<bool>(),
        cond in 0usize..JumpCond::ALL.len(),
        imm in prop_oneof![any::<i8>().prop_map(i32::from), any::<i32>()],
        states in prop_oneof![(0i32..4, 0i32..4), (any::<i32>(), any::<i32>())],
        data in proptest::collection::vec(any::<u8>(), BUFFER),
    ) {
        let width = if wide { Width::W64 } else { Width::W32 };
        let program = state_machine_loop(n, width, JumpCond::ALL[cond], imm, states.0, states.1);
        let (interpreted, native) = interpreter_and_native(&program, &data).unwrap();
        prop_assert_eq!(native, interpreted);
    }
}
