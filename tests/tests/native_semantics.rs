//! Native execution of hand-written programs covering each instruction group's edge semantics (RFC 9669). Every
//! program runs as x64 code and as ARM64 code (emulated); the two must agree on r0 and on memory.

use bpf2sys::isa::{AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys_tests::arm64::run_conformance_arm64;
use bpf2sys_tests::native::run_conformance;

fn mov64(dst: Reg, imm: i32) -> I {
    I::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(imm) }
}
fn lddw(dst: Reg, v: u64) -> [I; 2] {
    [
        I::LoadImm64 { dst, kind: Imm64Kind::Imm, imm: v as u32 as i32, next_imm: (v >> 32) as u32 as i32 },
        I::LoadImm64Continuation,
    ]
}
fn alu(width: Width, op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width, op, dst, src }
}
fn run(p: &[I]) -> u64 {
    run_native(p, &mut [])
}
/// Runs `p` on `memory` as x64 code, and as ARM64 code on a copy; returns the x64 r0 after checking ARM64 agrees.
fn run_native(p: &[I], memory: &mut [u8]) -> u64 {
    let mut arm64_memory = memory.to_vec();
    let arm64 = run_conformance_arm64(p, &mut arm64_memory).expect("ARM64 code compiles and runs");
    let x64 = run_conformance(p, memory).expect("x64 code compiles and runs");
    assert_eq!((arm64, &arm64_memory[..]), (x64, &memory[..]), "ARM64 (left) and x64 (right) disagree");
    x64
}
fn binop(width: Width, op: AluOp, a: u64, b: u64) -> u64 {
    let mut p = Vec::new();
    p.extend(lddw(Reg::R0, a));
    p.extend(lddw(Reg::R1, b));
    p.push(alu(width, op, Reg::R0, Operand::Reg(Reg::R1)));
    p.push(I::Exit);
    run(&p)
}

#[test]
fn division_and_modulo_follow_rfc9669_edge_cases() {
    use AluOp::*;
    use Width::*;
    assert_eq!(binop(W64, Div, 7, 0), 0);
    assert_eq!(binop(W64, Mod, 7, 0), 7);
    assert_eq!(binop(W32, Mod, 0xffff_ffff_0000_0007, 0), 7);
    assert_eq!(binop(W64, SDiv, i64::MIN as u64, u64::MAX), i64::MIN as u64);
    assert_eq!(binop(W64, SMod, i64::MIN as u64, u64::MAX), 0);
    assert_eq!(binop(W32, SDiv, i32::MIN as u32 as u64, u32::MAX as u64), i32::MIN as u32 as u64);
    assert_eq!(binop(W32, SMod, i32::MIN as u32 as u64, u32::MAX as u64), 0);
    assert_eq!(binop(W64, SDiv, (-7i64) as u64, 2), (-3i64) as u64);
    assert_eq!(binop(W64, SMod, (-7i64) as u64, 2), (-1i64) as u64);
    assert_eq!(binop(W64, SDiv, 5, 0), 0);
    assert_eq!(binop(W64, SMod, 5, 0), 5);
    assert_eq!(binop(W64, Div, u64::MAX, 3), u64::MAX / 3);
    assert_eq!(binop(W32, Div, 0x1_0000_0010, 3), 5);
}

#[test]
fn shifts_mask_their_count_and_alu32_zero_extends() {
    use AluOp::*;
    use Width::*;
    assert_eq!(binop(W32, Lsh, 1, 60), 1 << (60 & 31));
    assert_eq!(binop(W64, Lsh, 1, 65), 2);
    assert_eq!(binop(W32, Rsh, 0xffff_ffff_8000_0000, 4), 0x0800_0000);
    assert_eq!(binop(W32, Arsh, 0x8000_0000, 4), 0xf800_0000);
    assert_eq!(binop(W64, Arsh, 0x8000_0000_0000_0000, 63), u64::MAX);
    assert_eq!(binop(W32, Add, 0xffff_ffff, 1), 0);
    assert_eq!(binop(W32, Mul, i32::MIN as u32 as u64, u32::MAX as u64), 0x8000_0000);
}

#[test]
fn movsx_neg_and_byte_swaps() {
    let mut p = Vec::new();
    p.extend(lddw(Reg::R1, 0x1234_5678_9abc_def0));
    p.push(alu(Width::W64, AluOp::MovSx(8), Reg::R0, Operand::Reg(Reg::R1)));
    p.push(I::Exit);
    assert_eq!(run(&p), 0xffff_ffff_ffff_fff0);
    p[2] = alu(Width::W32, AluOp::MovSx(16), Reg::R0, Operand::Reg(Reg::R1));
    assert_eq!(run(&p), 0xffff_def0);
    p[2] = I::Endian { order: ByteOrder::ToBe, bits: 16, dst: Reg::R1 };
    p.insert(3, alu(Width::W64, AluOp::Mov, Reg::R0, Operand::Reg(Reg::R1)));
    assert_eq!(run(&p), 0xf0de);
    p[2] = I::Endian { order: ByteOrder::ToLe, bits: 32, dst: Reg::R1 };
    assert_eq!(run(&p), 0x9abc_def0);
    p[2] = I::Endian { order: ByteOrder::Swap, bits: 64, dst: Reg::R1 };
    assert_eq!(run(&p), 0xf0de_bc9a_7856_3412);
    p[2] = alu(Width::W32, AluOp::Neg, Reg::R1, Operand::Imm(0));
    assert_eq!(run(&p), 0x6543_2110);
}

#[test]
fn memory_stack_and_atomics() {
    let mut mem = [0u8; 16];
    mem[0] = 0x80;
    let p = vec![
        I::Load { size: MemSize::B, sign_extend: true, dst: Reg::R0, src: Reg::R1, offset: 0 },
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8, src: Operand::Imm(-2) },
        mov64(Reg::R3, 5),
        I::Atomic { size: MemSize::DW, op: AtomicOp::Add, fetch: true, dst: Reg::FP, src: Reg::R3, offset: -8 },
        I::Load { size: MemSize::DW, dst: Reg::R4, src: Reg::FP, offset: -8, sign_extend: false },
        I::Store { size: MemSize::DW, dst: Reg::R1, offset: 8, src: Operand::Reg(Reg::R4) },
        // r0 = old value compared: cmpxchg32 on mem[8] with r0 = 3 (current low word) -> store 9
        mov64(Reg::R0, 3),
        mov64(Reg::R5, 9),
        I::Atomic { size: MemSize::W, op: AtomicOp::CmpXchg, fetch: true, dst: Reg::R1, src: Reg::R5, offset: 8 },
        alu(Width::W64, AluOp::Add, Reg::R0, Operand::Reg(Reg::R3)),
        I::Exit,
    ];
    let r0 = run_native(&p, &mut mem);
    // fetch-add returned the old value -2 into r3; the stored sum is 3; cmpxchg saw 3 and returned it.
    assert_eq!(r0, 3u64.wrapping_add((-2i64) as u64));
    assert_eq!(u64::from_le_bytes(mem[8..16].try_into().unwrap()), 9);
}

#[test]
fn bounded_loop_and_jump32_compare_low_halves() {
    // r0 = sum 0..10 via a back edge; then jlt32 on values that differ only in the upper half.
    let mut p = vec![mov64(Reg::R0, 0), mov64(Reg::R1, 0)];
    p.push(alu(Width::W64, AluOp::Add, Reg::R0, Operand::Reg(Reg::R1)));
    p.push(alu(Width::W64, AluOp::Add, Reg::R1, Operand::Imm(1)));
    p.push(I::JumpIf { width: Width::W64, cond: JumpCond::Lt, dst: Reg::R1, src: Operand::Imm(10), offset: -3 });
    p.extend(lddw(Reg::R2, 0x1_0000_0001));
    p.push(I::JumpIf { width: Width::W32, cond: JumpCond::Eq, dst: Reg::R2, src: Operand::Imm(1), offset: 1 });
    p.push(mov64(Reg::R0, -1));
    p.push(I::Exit);
    assert_eq!(run(&p), 45);
}

#[test]
fn local_calls_get_their_own_frame_and_preserve_r6_to_r9() {
    let p = vec![
        mov64(Reg::R6, 6),
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8, src: Operand::Imm(100) },
        mov64(Reg::R1, 1),
        I::CallLocal { offset: 4 },
        alu(Width::W64, AluOp::Add, Reg::R0, Operand::Reg(Reg::R6)),
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R2, src: Reg::FP, offset: -8 },
        alu(Width::W64, AluOp::Add, Reg::R0, Operand::Reg(Reg::R2)),
        I::Exit,
        // callee: clobbers r6 and its own stack slot, returns r1 + 10
        mov64(Reg::R6, 0),
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8, src: Operand::Imm(7) },
        alu(Width::W64, AluOp::Mov, Reg::R0, Operand::Reg(Reg::R1)),
        alu(Width::W64, AluOp::Add, Reg::R0, Operand::Imm(10)),
        I::Exit,
    ];
    assert_eq!(run(&p), 11 + 6 + 100);
}

#[test]
fn helper_calls_pass_r1_and_unwind_on_zero() {
    // Helper 5 returns r1; with r1 = 0 the program ends at once with r0 = 0 (tail-call/unwind rule).
    let p = vec![
        mov64(Reg::R1, -1),
        I::CallHelper { id: 5 },
        mov64(Reg::R1, 0),
        I::CallHelper { id: 5 },
        mov64(Reg::R0, 42),
        I::Exit,
    ];
    assert_eq!(run(&p), 0);
    let p = vec![mov64(Reg::R1, 7), mov64(Reg::R2, 5), I::CallReg { reg: Reg::R2 }, I::Exit];
    assert_eq!(run(&p), 7);
}

#[test]
fn r2_holds_the_memory_length() {
    let p = vec![alu(Width::W64, AluOp::Mov, Reg::R0, Operand::Reg(Reg::R2)), I::Exit];
    assert_eq!(run_native(&p, &mut [0u8; 8]), 8);
}

/// Regression (ARM64): a 32-bit `cmpxchg` compares only r0's low half (RFC 9669 §5.3). Cranelift's AArch64 CAS
/// loop compared all 64 bits of the comparand register, so the exchange failed whenever r0's upper half was set.
/// r0 comes from memory so that no constant folding hides the upper half.
#[test]
fn cmpxchg32_compares_only_the_low_half_of_r0() {
    let p = vec![
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R0, src: Reg::R1, offset: 8 },
        mov64(Reg::R5, 9),
        I::Atomic { size: MemSize::W, op: AtomicOp::CmpXchg, fetch: true, dst: Reg::R1, src: Reg::R5, offset: 0 },
        I::Exit,
    ];
    let comparand = 0xffff_ffff_0000_0003u64.to_le_bytes();
    let mut mem = [[3u8, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd], comparand].concat();
    // The word matched: 9 is stored, the bytes after it are untouched, and r0 is the old word zero-extended.
    assert_eq!(run_native(&p, &mut mem), 3);
    assert_eq!(mem[..8], [9, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
    // A word that differs from r0's low half is left alone, whatever r0's upper half holds.
    let mut mem = [[4u8, 0, 0, 0, 0, 0, 0, 0], comparand].concat();
    assert_eq!(run_native(&p, &mut mem), 4);
    assert_eq!(mem[0], 4);
}
