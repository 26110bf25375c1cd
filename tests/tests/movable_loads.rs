//! Load-only functions (no stores, calls or loops) are lowered with movable loads (`lower::translate`): native code
//! must still agree with the reference interpreter on random such programs — loads of every size and signedness at
//! random offsets, ALU operations, forward branches that skip loads.

use bpf2sys::isa::{AluOp, Instruction, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys_tests::native::interpreter_and_native;
use proptest::prelude::*;

const BUFFER: usize = 64;

#[derive(Clone, Debug)]
enum Step {
    Load { size: u8, sign: bool, dst: u8, offset: u8 },
    Alu { op: u8, dst: u8, src: u8 },
    Skip { cond: u8, dst: u8, imm: i8, over: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, any::<bool>(), 0u8..6, 0u8..56).prop_map(|(size, sign, dst, offset)| Step::Load { size, sign, dst, offset }),
        3 => (0u8..6, 0u8..6, 0u8..6).prop_map(|(op, dst, src)| Step::Alu { op, dst, src }),
        1 => (0u8..4, 0u8..6, any::<i8>(), 1u8..4).prop_map(|(cond, dst, imm, over)| Step::Skip { cond, dst, imm, over }),
    ]
}

/// r9 = the buffer; r0..r5 start at small constants; the steps; exit with r0.
fn program(steps: &[Step]) -> Vec<Instruction> {
    let mut p = vec![Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R9, src: Operand::Reg(Reg::R1) }];
    for r in 0..6u8 {
        p.push(Instruction::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst: Reg::new(r).unwrap(),
            src: Operand::Imm(i32::from(r) * 7 + 1),
        });
    }
    for (i, s) in steps.iter().enumerate() {
        match *s {
            Step::Load { size, sign, dst, offset } => {
                let size = [MemSize::B, MemSize::H, MemSize::W, MemSize::DW][size as usize];
                p.push(Instruction::Load {
                    size,
                    sign_extend: sign && size != MemSize::DW,
                    dst: Reg::new(dst).unwrap(),
                    src: Reg::R9,
                    offset: i16::from(offset),
                });
            }
            Step::Alu { op, dst, src } => {
                let op = [AluOp::Add, AluOp::Xor, AluOp::Mul, AluOp::Sub, AluOp::Or, AluOp::Rsh][op as usize];
                p.push(Instruction::Alu {
                    width: Width::W64,
                    op,
                    dst: Reg::new(dst).unwrap(),
                    src: Operand::Reg(Reg::new(src).unwrap()),
                });
            }
            Step::Skip { cond, dst, imm, over } => {
                // Only skip over steps that exist: the target stays inside the program.
                let remaining = steps.len() - i - 1;
                let over = (over as usize).min(remaining) as i16;
                let cond = [JumpCond::Gt, JumpCond::Eq, JumpCond::Sle, JumpCond::Set][cond as usize];
                p.push(Instruction::JumpIf {
                    width: Width::W64,
                    cond,
                    dst: Reg::new(dst).unwrap(),
                    src: Operand::Imm(i32::from(imm)),
                    offset: over,
                });
            }
        }
    }
    p.push(Instruction::Exit);
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn native_code_with_movable_loads_matches_the_interpreter(
        steps in proptest::collection::vec(step(), 1..60),
        data in proptest::collection::vec(any::<u8>(), BUFFER),
    ) {
        // Skips must land on whole steps: every step is one slot, so `over` steps = `over` slots.
        // r2 (the buffer length the native run sets) is never read by a step.
        let (interpreted, native) = interpreter_and_native(&program(&steps), &data).unwrap();
        prop_assert_eq!(native, interpreted);
    }
}
