//! Byte loads assembled into wider values (`lower::load_combine`) are replaced by one load: native code must still
//! agree with the reference interpreter on random programs built from the shapes clang emits for `be16`/`be32`
//! and little-endian reads — byte and half-word loads, shifts by whole bytes, `or`s, byte masks and moves, in 32-
//! and 64-bit forms — interleaved with stores that overwrite bytes already loaded, which must stop a combination.

use bpf2sys::isa::{AluOp, Instruction, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys_tests::native::interpreter_and_native;
use proptest::prelude::*;

const BUFFER: usize = 64;

#[derive(Clone, Debug)]
enum Step {
    /// clang's sequence for an `n`-byte big- or little-endian read at `offset`, into `dst` using `tmp`.
    Assemble {
        bytes: u8,
        big_endian: bool,
        wide: bool,
        dst: u8,
        tmp: u8,
        offset: u8,
    },
    Load {
        half: bool,
        dst: u8,
        offset: u8,
    },
    Shift {
        wide: bool,
        left: bool,
        dst: u8,
        bytes: u8,
    },
    Or {
        wide: bool,
        dst: u8,
        src: u8,
    },
    Mask {
        wide: bool,
        dst: u8,
        mask: u8,
    },
    Mov {
        wide: bool,
        dst: u8,
        src: u8,
    },
    Store {
        size: u8,
        offset: u8,
        src: u8,
    },
    Skip {
        dst: u8,
        over: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let reg = || 0u8..6;
    prop_oneof![
        4 => (prop_oneof![Just(2u8), Just(4), Just(8)], any::<bool>(), any::<bool>(), reg(), reg(), 0u8..56)
            .prop_map(|(bytes, big_endian, wide, dst, tmp, offset)| Step::Assemble { bytes, big_endian, wide, dst, tmp, offset }),
        3 => (any::<bool>(), reg(), 0u8..62).prop_map(|(half, dst, offset)| Step::Load { half, dst, offset }),
        3 => (any::<bool>(), any::<bool>(), reg(), 0u8..9).prop_map(|(wide, left, dst, bytes)| Step::Shift { wide, left, dst, bytes }),
        3 => (any::<bool>(), reg(), reg()).prop_map(|(wide, dst, src)| Step::Or { wide, dst, src }),
        1 => (any::<bool>(), reg(), any::<u8>()).prop_map(|(wide, dst, mask)| Step::Mask { wide, dst, mask }),
        1 => (any::<bool>(), reg(), reg()).prop_map(|(wide, dst, src)| Step::Mov { wide, dst, src }),
        1 => (0u8..4, 0u8..56, reg()).prop_map(|(size, offset, src)| Step::Store { size, offset, src }),
        1 => (reg(), 1u8..4).prop_map(|(dst, over)| Step::Skip { dst, over }),
    ]
}

fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

fn alu(wide: bool, op: AluOp, dst: u8, src: Operand) -> Instruction {
    Instruction::Alu { width: if wide { Width::W64 } else { Width::W32 }, op, dst: r(dst), src }
}

fn load(size: MemSize, dst: u8, offset: u8) -> Instruction {
    Instruction::Load { size, sign_extend: false, dst: r(dst), src: Reg::R9, offset: i16::from(offset) }
}

/// The instructions of one step.
fn lower_step(step: &Step) -> Vec<Instruction> {
    match *step {
        Step::Assemble { bytes, big_endian, wide, dst, tmp, offset } => {
            // 32-bit forms only hold 4 bytes.
            let bytes = if wide { bytes } else { bytes.min(4) };
            let mut out = Vec::new();
            for i in 0..bytes {
                let shift = if big_endian { 8 * (bytes - 1 - i) } else { 8 * i };
                let target = if i == 0 { dst } else { tmp };
                out.push(load(MemSize::B, target, offset + i));
                if shift > 0 {
                    out.push(alu(wide, AluOp::Lsh, target, Operand::Imm(i32::from(shift))));
                }
                if i > 0 {
                    out.push(alu(wide, AluOp::Or, dst, Operand::Reg(r(tmp))));
                }
            }
            out
        }
        Step::Load { half, dst, offset } => vec![load(if half { MemSize::H } else { MemSize::B }, dst, offset)],
        Step::Shift { wide, left, dst, bytes } => {
            vec![alu(wide, if left { AluOp::Lsh } else { AluOp::Rsh }, dst, Operand::Imm(8 * i32::from(bytes)))]
        }
        Step::Or { wide, dst, src } => vec![alu(wide, AluOp::Or, dst, Operand::Reg(r(src)))],
        Step::Mask { wide, dst, mask } => {
            // Each bit of `mask` keeps or clears one byte; bit 7 also tries a mask that is not byte-granular.
            let mut m = 0u64;
            for i in 0..8 {
                if mask & (1 << i) != 0 {
                    m |= 0xff << (8 * i);
                }
            }
            let imm = if mask & 0x80 != 0 { 0x0f0f } else { m as u32 as i32 };
            vec![alu(wide, AluOp::And, dst, Operand::Imm(imm))]
        }
        Step::Mov { wide, dst, src } => vec![alu(wide, AluOp::Mov, dst, Operand::Reg(r(src)))],
        Step::Store { size, offset, src } => vec![Instruction::Store {
            size: [MemSize::B, MemSize::H, MemSize::W, MemSize::DW][size as usize],
            dst: Reg::R9,
            offset: i16::from(offset),
            src: Operand::Reg(r(src)),
        }],
        Step::Skip { dst, over } => {
            // `over` counts steps here; `program` turns it into a slot offset.
            vec![Instruction::JumpIf {
                width: Width::W64,
                cond: JumpCond::Set,
                dst: r(dst),
                src: Operand::Imm(1),
                offset: i16::from(over),
            }]
        }
    }
}

/// r9 = the buffer; r0..r5 start at small constants; the steps; r0 = the xor of r0..r5; exit.
fn program(steps: &[Step]) -> Vec<Instruction> {
    let mut p = vec![Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R9, src: Operand::Reg(Reg::R1) }];
    for n in 0..6u8 {
        p.push(alu(true, AluOp::Mov, n, Operand::Imm(i32::from(n) * 7 + 1)));
    }
    let bodies: Vec<Vec<Instruction>> = steps.iter().map(lower_step).collect();
    for (i, body) in bodies.iter().enumerate() {
        if let [Instruction::JumpIf { width, cond, dst, src, offset }] = body[..] {
            // Jump over `offset` whole steps (or to the epilogue): the target is always a step boundary.
            let over: usize = bodies[i + 1..].iter().take(offset as usize).map(Vec::len).sum();
            p.push(Instruction::JumpIf { width, cond, dst, src, offset: over as i16 });
        } else {
            p.extend_from_slice(body);
        }
    }
    for n in 1..6u8 {
        p.push(alu(true, AluOp::Xor, 0, Operand::Reg(r(n))));
    }
    p.push(Instruction::Exit);
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn native_code_with_combined_byte_loads_matches_the_interpreter(
        steps in proptest::collection::vec(step(), 1..40),
        data in proptest::collection::vec(any::<u8>(), BUFFER),
    ) {
        // r2 (the buffer length the native run sets) is never read by a step.
        let (interpreted, native) = interpreter_and_native(&program(&steps), &data).unwrap();
        prop_assert_eq!(native, interpreted);
    }
}

/// The sequence from `parse` (`be32(q + 12) ^ be32(q + 16)`, then the `& 0xffff` clang puts after a `be16`) gives
/// the interpreter's result.
#[test]
fn parses_be32_fields_like_the_interpreter() {
    let steps = [
        Step::Assemble { bytes: 4, big_endian: true, wide: true, dst: 5, tmp: 1, offset: 12 },
        Step::Assemble { bytes: 4, big_endian: true, wide: true, dst: 1, tmp: 0, offset: 16 },
        Step::Or { wide: true, dst: 1, src: 5 },
        Step::Assemble { bytes: 2, big_endian: true, wide: true, dst: 3, tmp: 4, offset: 0 },
        Step::Mask { wide: true, dst: 3, mask: 0b11 },
    ];
    let data: Vec<u8> = (0..BUFFER as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let (interpreted, native) = interpreter_and_native(&program(&steps), &data).unwrap();
    assert_eq!(native, interpreted);
}
