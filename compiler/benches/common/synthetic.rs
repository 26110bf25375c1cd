//! The synthetic XDP programs of the `verify` bench, shared with the test that the largest one verifies
//! (`compiler/tests/verify_synthetic.rs`), so the bench measures a program the tests know is accepted.

use bpf2sys::isa::{AluOp, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::program::{Function, Module, Program};

/// A synthetic XDP program of about `n` instructions: repeated blocks of a bounds check, packet loads, ALU work,
/// forward branches and a small counted loop.
pub fn synthetic(n: usize) -> Vec<I> {
    let alu = |op, dst, src| I::Alu { width: Width::W64, op, dst, src };
    let mut p = vec![
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R2, src: Reg::R1, offset: 0 },
        I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R3, src: Reg::R1, offset: 8 },
        alu(AluOp::Mov, Reg::R0, Operand::Imm(0)),
        alu(AluOp::Mov, Reg::R4, Operand::Reg(Reg::R2)),
        alu(AluOp::Add, Reg::R4, Operand::Imm(64)),
    ];
    // `if r4 > r3 goto exit` is patched at the end.
    let check = p.len();
    p.push(I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R4, src: Operand::Reg(Reg::R3), offset: 0 });
    let mut k = 0i32;
    while p.len() + 16 < n {
        let off = (k % 60) as i16;
        p.extend([
            I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R5, src: Reg::R2, offset: off },
            alu(AluOp::Add, Reg::R0, Operand::Reg(Reg::R5)),
            alu(AluOp::Xor, Reg::R0, Operand::Imm(k)),
            I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R5, src: Operand::Imm(100), offset: 2 },
            alu(AluOp::Add, Reg::R0, Operand::Imm(1)),
            alu(AluOp::And, Reg::R0, Operand::Imm(0xffff)),
            I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8 - 8 * (k % 8) as i16, src: Operand::Reg(Reg::R0) },
        ]);
        if k % 8 == 7 {
            // r7 = 0; loop: r0 += r7; r7 += 1; if r7 < 4 goto loop
            p.extend([
                alu(AluOp::Mov, Reg::R7, Operand::Imm(0)),
                alu(AluOp::Add, Reg::R0, Operand::Reg(Reg::R7)),
                alu(AluOp::Add, Reg::R7, Operand::Imm(1)),
                I::JumpIf { width: Width::W64, cond: JumpCond::Lt, dst: Reg::R7, src: Operand::Imm(4), offset: -3 },
            ]);
        }
        k += 1;
    }
    let exit = p.len();
    p.extend([alu(AluOp::And, Reg::R0, Operand::Imm(3)), I::Exit]);
    p[check] = I::JumpIf {
        width: Width::W64,
        cond: JumpCond::Gt,
        dst: Reg::R4,
        src: Operand::Reg(Reg::R3),
        offset: (exit - check - 1) as i16,
    };
    // Long programs exceed the 16-bit jump range; hop through intermediate jumps instead.
    if exit - check - 1 > i16::MAX as usize {
        p[check] =
            I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R4, src: Operand::Reg(Reg::R3), offset: 0 };
        p.insert(check + 1, I::Jump { offset: 1, long: false });
        let exit = p.len() - 2;
        p.insert(check + 2, I::Jump { offset: (exit - check - 3) as i32, long: true });
        p[check] =
            I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R4, src: Operand::Reg(Reg::R3), offset: 1 };
        p[check + 1] = I::Jump { offset: 1, long: false };
    }
    p
}

/// A module holding `synthetic(n)` as its one XDP program.
pub fn module(n: usize) -> Module {
    let instructions = synthetic(n);
    let len = instructions.len();
    Module {
        name: "synthetic".into(),
        programs: vec![Program {
            name: format!("synthetic_{n}"),
            section_name: "xdp".into(),
            instructions,
            functions: vec![Function { name: "synthetic".into(), start: 0, end: len }],
            line_info: vec![],
        }],
        ..Module::default()
    }
}
