//! Byte loads assembled into wider values (`lower::load_combine`) are replaced by one load: native code must still
//! agree with the reference interpreter on random programs built from the shapes clang emits for `be16`/`be32`
//! and little-endian reads — byte and half-word loads, shifts by whole bytes, `or`s, byte masks and moves, in 32-
//! and 64-bit forms — interleaved with stores that overwrite bytes already loaded, which must stop a combination.
//! Accesses go to a buffer (through r9) or to the stack (through r10), whose bytes the prologue initialises with
//! constant stores, and constant stack stores in the steps take the translation's buffered-store path too.

use bpf2sys::isa::{AluOp, Instruction, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys_tests::native::interpreter_and_native;
use proptest::prelude::*;

const BUFFER: usize = 64;
/// Bytes of stack the programs use: `r10 - STACK .. r10`.
const STACK: i16 = 64;

#[derive(Clone, Debug)]
enum Step {
    /// clang's sequence for an `n`-byte big- or little-endian read at `offset`, into `dst` using `tmp`.
    Assemble {
        bytes: u8,
        big_endian: bool,
        wide: bool,
        dst: u8,
        tmp: u8,
        stack: bool,
        offset: u8,
        /// A one-byte store in the middle of the sequence: after loading byte `after`, byte `target` (both modulo
        /// the length) is overwritten with the constant, or with r`src` when there is none.
        store: Option<(u8, u8, Option<i8>)>,
    },
    Load {
        half: bool,
        dst: u8,
        stack: bool,
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
    /// A store of `src`, or of a constant when `constant` is set.
    Store {
        size: u8,
        stack: bool,
        offset: u8,
        src: u8,
        constant: Option<i32>,
    },
    Skip {
        dst: u8,
        over: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let reg = || 0u8..6;
    prop_oneof![
        4 => (
            (prop_oneof![Just(2u8), Just(4), Just(8)], any::<bool>(), any::<bool>(), reg(), reg(), any::<bool>(), 0u8..56),
            proptest::option::weighted(0.3, (any::<u8>(), any::<u8>(), proptest::option::of(any::<i8>()))),
        )
            .prop_map(|((bytes, big_endian, wide, dst, tmp, stack, offset), store)| Step::Assemble {
                bytes, big_endian, wide, dst, tmp, stack, offset, store,
            }),
        3 => (any::<bool>(), reg(), any::<bool>(), 0u8..62).prop_map(|(half, dst, stack, offset)| Step::Load { half, dst, stack, offset }),
        3 => (any::<bool>(), any::<bool>(), reg(), 0u8..9).prop_map(|(wide, left, dst, bytes)| Step::Shift { wide, left, dst, bytes }),
        3 => (any::<bool>(), reg(), reg()).prop_map(|(wide, dst, src)| Step::Or { wide, dst, src }),
        1 => (any::<bool>(), reg(), any::<u8>()).prop_map(|(wide, dst, mask)| Step::Mask { wide, dst, mask }),
        1 => (any::<bool>(), reg(), reg()).prop_map(|(wide, dst, src)| Step::Mov { wide, dst, src }),
        2 => (0u8..4, any::<bool>(), 0u8..56, reg(), proptest::option::of(any::<i32>()))
            .prop_map(|(size, stack, offset, src, constant)| Step::Store { size, stack, offset, src, constant }),
        1 => (reg(), 1u8..4).prop_map(|(dst, over)| Step::Skip { dst, over }),
    ]
}

fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

fn alu(wide: bool, op: AluOp, dst: u8, src: Operand) -> Instruction {
    Instruction::Alu { width: if wide { Width::W64 } else { Width::W32 }, op, dst: r(dst), src }
}

/// The base register and offset of byte `offset` of the buffer or of the stack area.
fn address(stack: bool, offset: u8) -> (Reg, i16) {
    if stack {
        (Reg::FP, i16::from(offset) - STACK)
    } else {
        (Reg::R9, i16::from(offset))
    }
}

fn load(size: MemSize, dst: u8, stack: bool, offset: u8) -> Instruction {
    let (src, offset) = address(stack, offset);
    Instruction::Load { size, sign_extend: false, dst: r(dst), src, offset }
}

/// The instructions of one step.
fn lower_step(step: &Step) -> Vec<Instruction> {
    match *step {
        Step::Assemble { bytes, big_endian, wide, dst, tmp, stack, offset, store } => {
            // 32-bit forms only hold 4 bytes.
            let bytes = if wide { bytes } else { bytes.min(4) };
            let mut out = Vec::new();
            for i in 0..bytes {
                let shift = if big_endian { 8 * (bytes - 1 - i) } else { 8 * i };
                let target = if i == 0 { dst } else { tmp };
                out.push(load(MemSize::B, target, stack, offset + i));
                if shift > 0 {
                    out.push(alu(wide, AluOp::Lsh, target, Operand::Imm(i32::from(shift))));
                }
                if i > 0 {
                    out.push(alu(wide, AluOp::Or, dst, Operand::Reg(r(tmp))));
                }
                if let Some((_, target, constant)) = store.filter(|&(after, ..)| after % bytes == i) {
                    let (base, at) = address(stack, offset + target % bytes);
                    let src = constant.map_or(Operand::Reg(Reg::R5), |c| Operand::Imm(i32::from(c)));
                    out.push(Instruction::Store { size: MemSize::B, dst: base, offset: at, src });
                }
            }
            out
        }
        Step::Load { half, dst, stack, offset } => {
            vec![load(if half { MemSize::H } else { MemSize::B }, dst, stack, offset)]
        }
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
        Step::Store { size, stack, offset, src, constant } => {
            let (dst, offset) = address(stack, offset);
            vec![Instruction::Store {
                size: [MemSize::B, MemSize::H, MemSize::W, MemSize::DW][size as usize],
                dst,
                offset,
                src: constant.map_or(Operand::Reg(r(src)), Operand::Imm),
            }]
        }
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

/// r9 = the buffer; the stack area gets distinct bytes; r0..r5 start at small constants; the steps; r0 = the xor of
/// r0..r5 and of the stack area's words; exit.
fn program(steps: &[Step]) -> Vec<Instruction> {
    let mut p = vec![Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R9, src: Operand::Reg(Reg::R1) }];
    for word in 0..STACK / 4 {
        let value = (0x0101_0101 * (i32::from(word) + 1)) ^ 0x1234_5678;
        p.push(Instruction::Store {
            size: MemSize::W,
            dst: Reg::FP,
            offset: -STACK + 4 * word,
            src: Operand::Imm(value),
        });
    }
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
    for word in 0..STACK / 8 {
        p.push(Instruction::Load {
            size: MemSize::DW,
            sign_extend: false,
            dst: Reg::R1,
            src: Reg::FP,
            offset: -STACK + 8 * word,
        });
        p.push(alu(true, AluOp::Xor, 0, Operand::Reg(Reg::R1)));
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
        Step::Assemble {
            bytes: 4,
            big_endian: true,
            wide: true,
            dst: 5,
            tmp: 1,
            stack: false,
            store: None,
            offset: 12,
        },
        Step::Assemble {
            bytes: 4,
            big_endian: true,
            wide: true,
            dst: 1,
            tmp: 0,
            stack: false,
            store: None,
            offset: 16,
        },
        Step::Or { wide: true, dst: 1, src: 5 },
        Step::Assemble { bytes: 2, big_endian: true, wide: true, dst: 3, tmp: 4, stack: false, store: None, offset: 0 },
        Step::Mask { wide: true, dst: 3, mask: 0b11 },
    ];
    let data: Vec<u8> = (0..BUFFER as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let (interpreted, native) = interpreter_and_native(&program(&steps), &data).unwrap();
    assert_eq!(native, interpreted);
}
