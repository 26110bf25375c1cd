//! Random well-defined eBPF programs, for differential testing of an [`Engine`]
//! (the native code) against the reference interpreter, and for fuzzing.
//!
//! In: a list of abstract [`Op`]s (from the proptest strategy [`program`], so failures shrink to a few ops).
//! Out: a [`GeneratedProgram`] that runs under the conformance convention (r1 = a [`MEMORY_SIZE`]-byte buffer,
//! r2 = its length) and whose result is fully defined by RFC 9669: every register is written before it is read,
//! every memory access is inside the buffer or the initialised part of the stack, jumps go forward except the
//! back edges of counted loops (so it terminates), and no pointer value ever reaches r0. Its r0 folds every
//! register, the stack and the buffer, so any difference in any of them between two engines shows in r0.
//!
//! The program covers every ALU operation in both widths (including division by zero, signed overflow and
//! out-of-range shifts), byte swaps, 64-bit immediates, zero- and sign-extending loads, stores from registers
//! and immediates, all atomic operations, conditional jumps of both widths with register and immediate
//! operands, `ja` and `ja32`, bounded loops, helper 5 (`unwind`, which ends the program when its argument is 0)
//! and a local call to a subprogram with its own stack.

use bpf2sys::isa::{AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, Reg, Width};
use proptest::prelude::*;

use crate::conformance::{Engine, EngineError, InterpreterEngine};

/// Size of the buffer r1 points to.
pub const MEMORY_SIZE: usize = 64;
/// Bytes below r10 that the prologue initialises and ops access.
const STACK_AREA: i16 = 64;
/// Where each frame keeps its copy of r1 (the buffer pointer) across calls; ops never touch it.
const SAVED_R1: i16 = -72;
/// Each frame's loop counter. Entering a loop body by a forward jump that skips the loop's set-up finds the
/// counter at 0 (or at the end of an earlier loop), so every loop ends.
const LOOP_COUNTER: i16 = -80;
/// The register a loop's latch uses for its counter.
const LOOP_REGISTER: Reg = Reg::R5;
/// Registers ops compute with: r1 (the buffer) and r10 (the stack) only ever serve as bases, so no address
/// reaches a value register.
const GENERAL: [u8; 9] = [0, 2, 3, 4, 5, 6, 7, 8, 9];
/// The unwind helper of the conformance convention.
const UNWIND: i32 = crate::conformance::UNWIND_HELPER;

/// A generated program and the initial contents of its buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedProgram {
    pub program: Vec<Instruction>,
    pub memory: Vec<u8>,
}

/// A second operand: a register (index into the general registers) or an immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Reg(u8),
    Imm(i32),
}

/// The buffer (through r1) or the stack (through r10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    Memory,
    Stack,
}

/// One abstract operation; [`build`] lowers it to one or more instructions, fixing operands up so that the
/// result is well defined. Register numbers index the general registers (r0, r2..r9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Alu {
        width: Width,
        op: AluOp,
        dst: u8,
        src: Src,
    },
    Endian {
        order: ByteOrder,
        bits: u32,
        dst: u8,
    },
    LoadImm64 {
        dst: u8,
        value: u64,
    },
    Load {
        size: MemSize,
        sign_extend: bool,
        base: Base,
        dst: u8,
        offset: u8,
    },
    Store {
        size: MemSize,
        base: Base,
        src: Src,
        offset: u8,
    },
    Atomic {
        size: MemSize,
        op: AtomicOp,
        fetch: bool,
        src: u8,
        slot: u8,
    },
    /// Conditional jump over the next `skip` ops.
    Branch {
        width: Width,
        cond: JumpCond,
        dst: u8,
        src: Src,
        skip: u8,
    },
    /// `ja` (or `ja32` when `long`) over the next `skip` ops.
    Jump {
        long: bool,
        skip: u8,
    },
    /// `call 5` with r1 = `arg`: returns `arg`, or ends the program with r0 = 0 when `arg` is 0. In the
    /// subprogram `arg` 0 becomes 1: ending the whole program from a nested frame is a corner of the conformance
    /// convention (uBPF's unwind) that no production helper has, and that the native conformance engine does
    /// not implement; the interpreter's own tests cover it.
    CallUnwind {
        arg: i32,
    },
    /// `call local` to the subprogram (ignored inside the subprogram and when there is none).
    CallSubprogram,
    /// Runs the preceding `len` ops `count` more times: a bounded loop whose counter lives on the stack.
    /// Ignored when it would overlap an earlier loop (loops do not nest).
    Loop {
        count: u8,
        len: u8,
    },
}

fn reg(index: u8) -> Reg {
    Reg::new(GENERAL[index as usize % GENERAL.len()]).expect("general registers are r0..r9")
}

/// Lowers ops to instructions while tracking which registers hold defined values.
struct Builder {
    out: Vec<Instruction>,
    defined: [bool; Reg::COUNT],
    /// Jumps to patch: (slot of the jump, index of the op it lands on; `ops.len()` = the epilogue).
    fixups: Vec<(usize, usize)>,
    /// Local calls to patch with the subprogram's first slot.
    calls: Vec<usize>,
    /// Registers defined on every path that jumps to op `i`, intersected as jumps are lowered.
    defined_at: Vec<Option<[bool; Reg::COUNT]>>,
    /// A value source for registers that need one.
    counter: i32,
}

impl Builder {
    fn emit(&mut self, insn: Instruction) {
        self.out.push(insn);
        if matches!(insn, Instruction::LoadImm64 { .. }) {
            self.out.push(Instruction::LoadImm64Continuation);
        }
    }

    fn define(&mut self, r: Reg) {
        self.defined[r.index()] = true;
    }

    fn mov_imm(&mut self, dst: Reg, value: i32) {
        self.emit(Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(value) });
        self.define(dst);
    }

    /// Gives `r` a value if it has none.
    fn ensure(&mut self, r: Reg) {
        if !self.defined[r.index()] {
            self.counter = self.counter.wrapping_mul(31).wrapping_add(17);
            self.mov_imm(r, self.counter);
        }
    }

    fn operand(&self, src: Src) -> Operand {
        match src {
            Src::Reg(i) if self.defined[reg(i).index()] => Operand::Reg(reg(i)),
            Src::Reg(i) => Operand::Imm(i as i32 * 0x1111_1111),
            Src::Imm(v) => Operand::Imm(v),
        }
    }

    /// Frame set-up: every general register gets a value, the stack area is written, r1 is saved.
    fn prologue(&mut self, init: &[u64; 9]) {
        for (i, &value) in init.iter().enumerate() {
            let dst = reg(i as u8);
            self.emit(Instruction::LoadImm64 {
                dst,
                kind: Imm64Kind::Imm,
                imm: value as i32,
                next_imm: (value >> 32) as i32,
            });
            self.define(dst);
        }
        for i in 0..(STACK_AREA / 8) {
            let src = reg(i as u8 + 1);
            self.emit(Instruction::Store {
                size: MemSize::DW,
                dst: Reg::FP,
                offset: -STACK_AREA + 8 * i,
                src: Operand::Reg(src),
            });
        }
        self.emit(Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset: SAVED_R1, src: Operand::Reg(Reg::R1) });
        self.emit(Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset: LOOP_COUNTER, src: Operand::Imm(0) });
    }

    /// Folds every defined general register, the stack area and the buffer into r0, then exits.
    fn epilogue(&mut self) {
        self.ensure(Reg::R0);
        let mix = |b: &mut Builder, r: Reg| {
            b.emit(Instruction::Alu {
                width: Width::W64,
                op: AluOp::Mul,
                dst: Reg::R0,
                src: Operand::Imm(0x2545_f491),
            });
            b.emit(Instruction::Alu { width: Width::W64, op: AluOp::Xor, dst: Reg::R0, src: Operand::Reg(r) });
        };
        for &r in &GENERAL[1..] {
            let r = Reg::new(r).expect("general register");
            if self.defined[r.index()] {
                mix(self, r);
            }
        }
        for i in 0..(STACK_AREA / 8) {
            self.emit(Instruction::Load {
                size: MemSize::DW,
                sign_extend: false,
                dst: Reg::R2,
                src: Reg::FP,
                offset: -STACK_AREA + 8 * i,
            });
            mix(self, Reg::R2);
        }
        for i in 0..(MEMORY_SIZE as i16 / 8) {
            self.emit(Instruction::Load {
                size: MemSize::DW,
                sign_extend: false,
                dst: Reg::R2,
                src: Reg::R1,
                offset: 8 * i,
            });
            mix(self, Reg::R2);
        }
        self.emit(Instruction::Exit);
    }

    /// After any call r1..r5 are undefined; r1 comes back from the frame's saved copy.
    fn after_call(&mut self) {
        for r in 1..=5 {
            self.defined[r] = false;
        }
        self.emit(Instruction::Load {
            size: MemSize::DW,
            sign_extend: false,
            dst: Reg::R1,
            src: Reg::FP,
            offset: SAVED_R1,
        });
        self.define(Reg::R1);
        self.define(Reg::R0);
    }

    fn jump_to(&mut self, target_op: usize) {
        self.fixups.push((self.out.len() - 1, target_op));
        let entry = &mut self.defined_at[target_op];
        *entry = Some(match entry {
            Some(d) => std::array::from_fn(|i| d[i] && self.defined[i]),
            None => self.defined,
        });
    }

    /// A memory operand for an access of `size` bytes: inside the buffer or the stack area.
    fn address(base: Base, size: MemSize, offset: u8) -> (Reg, i16) {
        let size = size.bytes() as i16;
        match base {
            Base::Memory => (Reg::R1, offset as i16 % (MEMORY_SIZE as i16 - size + 1)),
            Base::Stack => (Reg::FP, -STACK_AREA + offset as i16 % (STACK_AREA - size + 1)),
        }
    }

    fn lower(&mut self, op: Op, index: usize, op_count: usize, in_subprogram: bool) {
        match op {
            Op::Alu { width, op, dst, src } => {
                let dst = reg(dst);
                let operand = self.operand(src);
                let (op, operand) = match (op, operand) {
                    (AluOp::Neg, _) => (AluOp::Neg, Operand::Imm(0)),
                    // movsx has only a register form, and 32-bit movsx only from 8 or 16 bits (RFC 9669 §4.1).
                    (AluOp::MovSx(_), Operand::Imm(_)) => (AluOp::Mov, operand),
                    (AluOp::MovSx(32), _) if width == Width::W32 => (AluOp::MovSx(16), operand),
                    (op, operand) => (op, operand),
                };
                if !matches!(op, AluOp::Mov | AluOp::MovSx(_)) {
                    self.ensure(dst);
                }
                self.emit(Instruction::Alu { width, op, dst, src: operand });
                self.define(dst);
            }
            Op::Endian { order, bits, dst } => {
                let dst = reg(dst);
                self.ensure(dst);
                self.emit(Instruction::Endian { order, bits, dst });
            }
            Op::LoadImm64 { dst, value } => {
                let dst = reg(dst);
                self.emit(Instruction::LoadImm64 {
                    dst,
                    kind: Imm64Kind::Imm,
                    imm: value as i32,
                    next_imm: (value >> 32) as i32,
                });
                self.define(dst);
            }
            Op::Load { size, sign_extend, base, dst, offset } => {
                let size = if sign_extend && size == MemSize::DW { MemSize::W } else { size };
                let (src, offset) = Self::address(base, size, offset);
                let dst = reg(dst);
                self.emit(Instruction::Load { size, sign_extend, dst, src, offset });
                self.define(dst);
            }
            Op::Store { size, base, src, offset } => {
                let (dst, offset) = Self::address(base, size, offset);
                let src = self.operand(src);
                self.emit(Instruction::Store { size, dst, offset, src });
            }
            Op::Atomic { size, op, fetch, src, slot } => {
                let size = if size == MemSize::DW { MemSize::DW } else { MemSize::W };
                let bytes = size.bytes() as i16;
                // Atomics stay naturally aligned (a misaligned locked access is not portable).
                let offset = -STACK_AREA + (slot as i16 % (STACK_AREA / bytes)) * bytes;
                let src = reg(src);
                self.ensure(src);
                if op == AtomicOp::CmpXchg {
                    self.ensure(Reg::R0);
                }
                let fetch = fetch || matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg);
                self.emit(Instruction::Atomic { size, op, fetch, dst: Reg::FP, src, offset });
            }
            Op::Branch { width, cond, dst, src, skip } => {
                let dst = reg(dst);
                self.ensure(dst);
                let src = self.operand(src);
                self.emit(Instruction::JumpIf { width, cond, dst, src, offset: 0 });
                self.jump_to((index + 1 + skip as usize).min(op_count));
            }
            Op::Jump { long, skip } => {
                self.emit(Instruction::Jump { offset: 0, long });
                self.jump_to((index + 1 + skip as usize).min(op_count));
            }
            Op::CallUnwind { arg } => {
                let arg = if in_subprogram && arg == 0 { 1 } else { arg };
                self.mov_imm(Reg::R1, arg);
                self.emit(Instruction::CallHelper { id: UNWIND });
                self.after_call();
            }
            // Loops are lowered by `function`, which knows where they start.
            Op::Loop { .. } => {}
            Op::CallSubprogram => {
                if in_subprogram {
                    return;
                }
                self.emit(Instruction::CallLocal { offset: 0 });
                self.calls.push(self.out.len() - 1);
                self.after_call();
            }
        }
    }

    /// Lowers one function (prologue, ops, epilogue) starting at the current slot.
    fn function(&mut self, ops: &[Op], init: &[u64; 9], in_subprogram: bool) {
        self.defined = [false; Reg::COUNT];
        self.defined[1] = true; // r1: the buffer (an argument in the subprogram too)
        self.defined[10] = true;
        self.fixups.clear();
        self.defined_at = vec![None; ops.len() + 1];
        self.prologue(init);
        let loops = loops(ops);
        let mut head: Option<(usize, [bool; Reg::COUNT])> = None;
        let mut op_slots = Vec::with_capacity(ops.len() + 1);
        for (i, &op) in ops.iter().enumerate() {
            // Only what every incoming path defines is defined here.
            if let Some(d) = self.defined_at[i] {
                self.defined = std::array::from_fn(|r| d[r] && self.defined[r]);
            }
            op_slots.push(self.out.len());
            if let Some(&(_, count)) = loops.iter().find(|(range, _)| range.start == i) {
                self.emit(Instruction::Store {
                    size: MemSize::DW,
                    dst: Reg::FP,
                    offset: LOOP_COUNTER,
                    src: Operand::Imm(count as i32),
                });
                head = Some((self.out.len(), self.defined));
            }
            match loops.iter().find(|(range, _)| range.end == i) {
                Some(_) => self.latch(head.take().expect("a loop's head comes before its latch"), i, ops.len()),
                None => self.lower(op, i, ops.len(), in_subprogram),
            }
        }
        if let Some(d) = self.defined_at[ops.len()] {
            self.defined = std::array::from_fn(|r| d[r] && self.defined[r]);
        }
        op_slots.push(self.out.len());
        self.epilogue();
        for &(slot, target_op) in &self.fixups {
            let offset = op_slots[target_op] as i64 - slot as i64 - 1;
            match &mut self.out[slot] {
                Instruction::JumpIf { offset: o, .. } => *o = i16::try_from(offset).expect("programs are small"),
                Instruction::Jump { offset: o, .. } => *o = offset as i32,
                other => unreachable!("fixup on {other:?}"),
            }
        }
    }
}

impl Builder {
    /// The end of a loop body: count down and jump back to the head, or leave to the next op.
    fn latch(&mut self, (head_slot, head_defined): (usize, [bool; Reg::COUNT]), index: usize, op_count: usize) {
        self.emit(Instruction::Load {
            size: MemSize::DW,
            sign_extend: false,
            dst: LOOP_REGISTER,
            src: Reg::FP,
            offset: LOOP_COUNTER,
        });
        self.define(LOOP_REGISTER);
        self.emit(Instruction::JumpIf {
            width: Width::W64,
            cond: JumpCond::Eq,
            dst: LOOP_REGISTER,
            src: Operand::Imm(0),
            offset: 0,
        });
        self.jump_to(index + 1);
        let leaving = self.defined;
        self.emit(Instruction::Alu { width: Width::W64, op: AluOp::Sub, dst: LOOP_REGISTER, src: Operand::Imm(1) });
        self.emit(Instruction::Store {
            size: MemSize::DW,
            dst: Reg::FP,
            offset: LOOP_COUNTER,
            src: Operand::Reg(LOOP_REGISTER),
        });
        // The body was lowered for the registers defined at its head: define again any a call undefined.
        for (r, &was_defined) in head_defined.iter().enumerate() {
            if was_defined {
                self.ensure(Reg::new(r as u8).expect("register number"));
            }
        }
        let back = head_slot as i64 - self.out.len() as i64 - 1;
        self.emit(Instruction::Jump { offset: back as i32, long: false });
        // The only way on is the exit jump (and forward jumps from before, intersected at the next op).
        self.defined = leaving;
        debug_assert!(index < op_count);
    }
}

/// The loops of a function: each `Op::Loop` at index `end` whose body `start..end` does not overlap an earlier
/// loop, with its count.
fn loops(ops: &[Op]) -> Vec<(std::ops::Range<usize>, u8)> {
    let mut loops: Vec<(std::ops::Range<usize>, u8)> = Vec::new();
    for (end, op) in ops.iter().enumerate() {
        if let Op::Loop { count, len } = *op {
            let start = end.saturating_sub(len.max(1) as usize);
            let free = loops.last().is_none_or(|(last, _)| last.end < start);
            if start < end && free {
                loops.push((start..end, count));
            }
        }
    }
    loops
}

/// Lowers the main function's ops, and a subprogram's if given, into a well-defined program.
pub fn build(
    main: &[Op],
    main_init: &[u64; 9],
    subprogram: Option<(&[Op], &[u64; 9])>,
    memory: Vec<u8>,
) -> GeneratedProgram {
    assert_eq!(memory.len(), MEMORY_SIZE, "the buffer is MEMORY_SIZE bytes");
    let mut b = Builder {
        out: Vec::new(),
        defined: [false; Reg::COUNT],
        fixups: Vec::new(),
        calls: Vec::new(),
        defined_at: Vec::new(),
        counter: 1,
    };
    let main = if subprogram.is_none() {
        main.iter().copied().filter(|op| *op != Op::CallSubprogram).collect()
    } else {
        main.to_vec()
    };
    b.function(&main, main_init, false);
    if let Some((ops, init)) = subprogram {
        let start = b.out.len();
        b.function(ops, init, true);
        for &slot in &b.calls {
            b.out[slot] = Instruction::CallLocal { offset: (start - slot - 1) as i32 };
        }
    }
    GeneratedProgram { program: b.out, memory }
}

fn width() -> impl Strategy<Value = Width> {
    prop_oneof![Just(Width::W32), Just(Width::W64)]
}

fn size() -> impl Strategy<Value = MemSize> {
    prop_oneof![Just(MemSize::B), Just(MemSize::H), Just(MemSize::W), Just(MemSize::DW)]
}

/// Values that exercise edge cases more often than uniform sampling would.
fn imm32() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => -4i32..64,
        2 => prop_oneof![Just(0), Just(-1), Just(1), Just(31), Just(32), Just(63), Just(64)],
        1 => prop_oneof![Just(i32::MIN), Just(i32::MAX)],
        2 => any::<i32>(),
    ]
}

fn imm64() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => any::<u64>(),
        1 => prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(i64::MIN as u64),
            Just(i64::MAX as u64),
            Just(0x8000_0000),
            Just(0xffff_ffff),
            Just(0x1_0000_0000)
        ],
        1 => 0u64..16,
    ]
}

fn src() -> impl Strategy<Value = Src> {
    prop_oneof![(0u8..9).prop_map(Src::Reg), imm32().prop_map(Src::Imm)]
}

fn alu_op() -> impl Strategy<Value = AluOp> {
    use AluOp::*;
    prop_oneof![
        Just(Add),
        Just(Sub),
        Just(Mul),
        Just(Div),
        Just(SDiv),
        Just(Or),
        Just(And),
        Just(Lsh),
        Just(Rsh),
        Just(Neg),
        Just(Mod),
        Just(SMod),
        Just(Xor),
        Just(Mov),
        prop_oneof![Just(MovSx(8)), Just(MovSx(16)), Just(MovSx(32))],
        Just(Arsh),
    ]
}

fn cond() -> impl Strategy<Value = JumpCond> {
    use JumpCond::*;
    prop_oneof![
        Just(Eq),
        Just(Gt),
        Just(Ge),
        Just(Set),
        Just(Ne),
        Just(Sgt),
        Just(Sge),
        Just(Lt),
        Just(Le),
        Just(Slt),
        Just(Sle)
    ]
}

/// One abstract op, weighted towards arithmetic.
pub fn op() -> impl Strategy<Value = Op> {
    let base = prop_oneof![Just(Base::Memory), Just(Base::Stack)];
    let atomic = prop_oneof![
        Just(AtomicOp::Add),
        Just(AtomicOp::Or),
        Just(AtomicOp::And),
        Just(AtomicOp::Xor),
        Just(AtomicOp::Xchg),
        Just(AtomicOp::CmpXchg)
    ];
    let order = prop_oneof![Just(ByteOrder::ToLe), Just(ByteOrder::ToBe), Just(ByteOrder::Swap)];
    prop_oneof![
        8 => (width(), alu_op(), 0u8..9, src()).prop_map(|(width, op, dst, src)| Op::Alu { width, op, dst, src }),
        1 => (order, prop_oneof![Just(16u32), Just(32), Just(64)], 0u8..9)
            .prop_map(|(order, bits, dst)| Op::Endian { order, bits, dst }),
        1 => (0u8..9, imm64()).prop_map(|(dst, value)| Op::LoadImm64 { dst, value }),
        2 => (size(), any::<bool>(), base.clone(), 0u8..9, any::<u8>())
            .prop_map(|(size, sign_extend, base, dst, offset)| Op::Load { size, sign_extend, base, dst, offset }),
        2 => (size(), base, src(), any::<u8>())
            .prop_map(|(size, base, src, offset)| Op::Store { size, base, src, offset }),
        1 => (size(), atomic, any::<bool>(), 0u8..9, any::<u8>())
            .prop_map(|(size, op, fetch, src, slot)| Op::Atomic { size, op, fetch, src, slot }),
        2 => (width(), cond(), 0u8..9, src(), 0u8..6)
            .prop_map(|(width, cond, dst, src, skip)| Op::Branch { width, cond, dst, src, skip }),
        1 => (any::<bool>(), 0u8..4).prop_map(|(long, skip)| Op::Jump { long, skip }),
        1 => prop_oneof![9 => imm32().prop_filter("non-zero", |v| *v != 0), 1 => Just(0)]
            .prop_map(|arg| Op::CallUnwind { arg }),
        1 => Just(Op::CallSubprogram),
        1 => (1u8..4, 1u8..8).prop_map(|(count, len)| Op::Loop { count, len }),
    ]
}

/// Whole programs: a main function of up to `max_ops` ops, usually a subprogram, and a random buffer.
pub fn program(max_ops: usize) -> impl Strategy<Value = GeneratedProgram> {
    let ops = proptest::collection::vec(op(), 0..=max_ops);
    let init = proptest::array::uniform9(imm64());
    let sub_init = proptest::array::uniform9(imm64());
    let subprogram = proptest::option::weighted(0.7, (proptest::collection::vec(op(), 0..=max_ops / 2), sub_init));
    let memory = proptest::collection::vec(any::<u8>(), MEMORY_SIZE);
    (ops, init, subprogram, memory).prop_map(
        |(ops, init, subprogram, memory): (Vec<Op>, _, Option<(Vec<Op>, _)>, _)| {
            build(&ops, &init, subprogram.as_ref().map(|(o, i)| (o.as_slice(), i)), memory)
        },
    )
}

/// Runs `p` on the reference engine and on `candidate`; `Err` describes the difference, with the program's
/// disassembly and buffer so that the failing case can be replayed (e.g. as a `.data` file).
pub fn compare(reference: &mut dyn Engine, candidate: &mut dyn Engine, p: &GeneratedProgram) -> Result<(), String> {
    let want = reference.run(&p.program, &p.memory);
    let got = candidate.run(&p.program, &p.memory);
    if want == got {
        return Ok(());
    }
    let memory: Vec<String> = p.memory.iter().map(|b| format!("{b:02x}")).collect();
    Err(format!(
        "{} gave {}, {} gave {}\n-- asm\n{}-- mem\n{}\n",
        reference.name(),
        describe(&want),
        candidate.name(),
        describe(&got),
        bpf2sys::isa::disasm::disassemble(&p.program),
        memory.join(" ")
    ))
}

/// Checks `cases` generated programs of up to `max_ops` ops on `candidate` against the interpreter. `Ok` gives
/// the number of programs checked; `Err` the smallest program (after shrinking) whose result differs.
pub fn check_against_interpreter(candidate: &mut dyn Engine, cases: u32, max_ops: usize) -> Result<u32, String> {
    use proptest::test_runner::{Config, TestError, TestRunner};
    let candidate = std::cell::RefCell::new(candidate);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&program(max_ops), |p| {
        let mut candidate = candidate.borrow_mut();
        compare(&mut InterpreterEngine, &mut **candidate, &p).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(cases),
        Err(TestError::Fail(why, _)) => Err(why.to_string()),
        Err(TestError::Abort(why)) => Err(format!("aborted: {why}")),
    }
}

fn describe(result: &Result<u64, EngineError>) -> String {
    match result {
        Ok(r0) => format!("r0 = {r0:#x}"),
        Err(e) => format!("an error ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpf2sys::isa::{decode, encode_bytes};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The generator's promise: the reference interpreter, which refuses undefined registers, uninitialised
        /// stack, out-of-bounds accesses and non-termination, runs every generated program to a value.
        #[test]
        fn generated_programs_are_well_defined(p in program(40)) {
            let encoded = encode_bytes(&p.program);
            prop_assert_eq!(decode(&encoded).unwrap(), p.program.clone(), "the program encodes and decodes");
            let result = InterpreterEngine.run(&p.program, &p.memory);
            prop_assert!(result.is_ok(), "{:?}\n{}", result, bpf2sys::isa::disasm::disassemble(&p.program));
        }
    }

    #[test]
    fn generated_programs_use_every_instruction_group() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = program(40).new_tree(&mut runner).unwrap().current();
            for insn in &p.program {
                let group = match insn {
                    Instruction::Alu { width: Width::W32, .. } => "alu32",
                    Instruction::Alu { width: Width::W64, .. } => "alu64",
                    Instruction::Endian { .. } => "endian",
                    Instruction::LoadImm64 { .. } => "lddw",
                    Instruction::Load { sign_extend: true, .. } => "ldxs",
                    Instruction::Load { .. } => "ldx",
                    Instruction::Store { src: Operand::Imm(_), .. } => "st",
                    Instruction::Store { .. } => "stx",
                    Instruction::Atomic { op: AtomicOp::CmpXchg, .. } => "cmpxchg",
                    Instruction::Atomic { .. } => "atomic",
                    Instruction::JumpIf { width: Width::W32, .. } => "jmp32",
                    Instruction::JumpIf { .. } => "jmp",
                    Instruction::Jump { offset, .. } if *offset < 0 => "loop",
                    Instruction::Jump { long: true, .. } => "ja32",
                    Instruction::Jump { .. } => "ja",
                    Instruction::CallHelper { .. } => "call",
                    Instruction::CallLocal { .. } => "call local",
                    _ => continue,
                };
                seen.insert(group);
            }
        }
        assert_eq!(seen.len(), 17, "{seen:?}");
    }

    /// An engine that gets signed division wrong, to show that [`compare`] catches a semantic difference.
    struct WrongSdiv;

    impl Engine for WrongSdiv {
        fn name(&self) -> &str {
            "wrong-sdiv"
        }
        fn run(&mut self, program: &[Instruction], memory: &[u8]) -> Result<u64, EngineError> {
            let patched: Vec<Instruction> = program
                .iter()
                .map(|insn| match *insn {
                    Instruction::Alu { width, op: AluOp::SDiv, dst, src } => {
                        Instruction::Alu { width, op: AluOp::Div, dst, src }
                    }
                    other => other,
                })
                .collect();
            InterpreterEngine.run(&patched, memory)
        }
    }

    #[test]
    fn compare_reports_a_semantic_difference_with_a_replayable_case() {
        let main = [Op::Alu { width: Width::W64, op: AluOp::SDiv, dst: 0, src: Src::Imm(-3) }];
        let p = build(&main, &[7; 9], None, vec![0; MEMORY_SIZE]);
        assert_eq!(compare(&mut InterpreterEngine, &mut InterpreterEngine, &p), Ok(()));
        let report = compare(&mut InterpreterEngine, &mut WrongSdiv, &p).unwrap_err();
        assert!(report.starts_with("interp gave r0 = 0x"), "{report}");
        assert!(report.contains("wrong-sdiv gave r0 = 0x"), "{report}");
        assert!(report.contains("sdiv %r0, -3"), "{report}");
        // The report is itself a test file (its result line aside).
        let file = crate::conformance::parse(&report[report.find("-- asm").unwrap()..]).unwrap();
        assert_eq!(file.memory.len(), MEMORY_SIZE);
        assert!(
            bpf2sys::isa::asm::assemble_lines(file.asm.iter().map(|(n, l)| (*n, l.as_str()))).unwrap() == p.program
        );
    }

    #[test]
    fn a_campaign_finds_and_shrinks_a_difference() {
        assert_eq!(check_against_interpreter(&mut InterpreterEngine, 50, 20), Ok(50));
        let report = check_against_interpreter(&mut WrongSdiv, 2000, 20).unwrap_err();
        // Shrinking leaves the signed division that differs, in a program of a few ops.
        assert!(report.contains("sdiv"), "{report}");
        assert!(report.lines().filter(|l| l.starts_with("sdiv")).count() <= 2, "{report}");
    }
}
