//! Merging runs of constant stores to the eBPF stack into wide stores.
//!
//! clang initialises stack arrays one byte at a time when it cannot prove a wider store aligned: `sieve`'s
//! `u8 s[480]` becomes 480 `stxb [r10 - k], r4` with a constant `r4`, which costs one store per byte where a native
//! compiler writes the array with `memset`. Within one straight-line window — a stretch of a block where nothing
//! reads memory, calls or branches, only ALU instructions, `lddw` constants and stores of known constants through
//! `r10` — no instruction can observe the order or width of those stores. The translation therefore buffers them
//! ([`PendingStackStores`]) and, when the window ends, writes the final contents of the touched bytes with the
//! widest naturally aligned stores ([`PendingStackStores::chunks`]). The bytes written and their values are exactly
//! those the original stores leave behind (the last store to a byte wins), so the memory any later instruction sees
//! is unchanged.
//!
//! [`ConstantRegisters`] supplies the "known constant" part: it follows the registers through one block with the
//! interpreter's own ALU semantics ([`crate::isa::semantics::eval_alu`]), so there is one definition of RFC 9669 §4.1.

use std::collections::BTreeMap;

use crate::isa::semantics::{eval_alu, eval_byte_order};
use crate::isa::{AluOp, Imm64Kind, Instruction, MemSize, Operand, Reg, Width};

/// Registers whose value is a known constant at the current instruction of a block, and registers known to hold
/// `r10 + k` (a stack address: the key pointer of a map lookup, `r2 = r10; r2 += -4`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstantRegisters {
    values: [Option<u64>; Reg::COUNT],
    frame_offsets: [Option<i64>; Reg::COUNT],
}

impl Default for ConstantRegisters {
    fn default() -> Self {
        let mut frame_offsets = [None; Reg::COUNT];
        frame_offsets[Reg::FP.index()] = Some(0);
        ConstantRegisters { values: [None; Reg::COUNT], frame_offsets }
    }
}

impl ConstantRegisters {
    /// Forgets everything: at a block start, where other paths may join.
    pub fn clear(&mut self) {
        *self = ConstantRegisters::default();
    }

    /// `k` when `reg` holds `r10 + k` at the current instruction.
    pub fn frame_offset(&self, reg: Reg) -> Option<i64> {
        self.frame_offsets[reg.index()]
    }

    /// Updates the known `r10 + k` registers for `insn`: a 64-bit copy of one, or one plus or minus an immediate, is
    /// one; every other write forgets its register (`r10` itself is never written: the verifier refuses it).
    ///
    /// Runs twice per slot (the plan's block-entry constants, then the translation), so the instructions that write
    /// exactly their `dst` (ALU, byte swaps, loads, `lddw`: `defs()` is `{dst}`) set it directly; only the others
    /// walk `defs()` (a call's r0–r5, an atomic's source, none for stores and jumps), which cost most of this update.
    fn update_frame_offsets(&mut self, insn: &Instruction) {
        let (dst, offset) = match *insn {
            Instruction::Alu { width: Width::W64, op, dst, src } => match (op, src) {
                (AluOp::Mov, Operand::Reg(s)) => (dst, self.frame_offsets[s.index()]),
                (AluOp::Add, Operand::Imm(i)) => (dst, self.frame_offsets[dst.index()].map(|o| o + i64::from(i))),
                (AluOp::Sub, Operand::Imm(i)) => (dst, self.frame_offsets[dst.index()].map(|o| o - i64::from(i))),
                _ => (dst, None),
            },
            Instruction::Alu { dst, .. }
            | Instruction::Endian { dst, .. }
            | Instruction::LoadImm64 { dst, .. }
            | Instruction::Load { dst, .. } => (dst, None),
            _ => {
                for r in insn.defs().iter() {
                    self.frame_offsets[r.index()] = None;
                }
                return;
            }
        };
        self.frame_offsets[dst.index()] = offset;
    }

    /// Keeps only the constants `other` agrees on: the registers known where two paths join.
    pub fn meet(&mut self, other: &ConstantRegisters) {
        for (mine, theirs) in self.values.iter_mut().zip(other.values) {
            if *mine != theirs {
                *mine = None;
            }
        }
        for (mine, theirs) in self.frame_offsets.iter_mut().zip(other.frame_offsets) {
            if *mine != theirs {
                *mine = None;
            }
        }
    }

    /// The value of `operand` if it is known. Immediates are sign-extended as for 64-bit operations; a 32-bit
    /// operation or a narrow store only uses the low bytes, which sign extension does not change.
    pub fn operand(&self, operand: Operand) -> Option<u64> {
        match operand {
            Operand::Imm(imm) => Some(imm as i64 as u64),
            Operand::Reg(reg) => self.values[reg.index()],
        }
    }

    /// Updates the known values for the effect of `insn`.
    pub fn update(&mut self, insn: &Instruction) {
        self.update_frame_offsets(insn);
        match *insn {
            Instruction::Alu { width, op, dst, src } => {
                let source = self.operand(src);
                let destination =
                    if matches!(op, AluOp::Mov | AluOp::MovSx(_)) { Some(0) } else { self.values[dst.index()] };
                self.values[dst.index()] = match (destination, source) {
                    (Some(d), Some(s)) => Some(eval_alu(op, width, d, s)),
                    _ => None,
                };
            }
            Instruction::Endian { order, bits, dst } => {
                self.values[dst.index()] = self.values[dst.index()].map(|v| eval_byte_order(order, bits, v));
            }
            Instruction::LoadImm64 { dst, kind, imm, next_imm } => {
                self.values[dst.index()] = (kind == Imm64Kind::Imm).then(|| Instruction::imm64(imm, next_imm));
            }
            Instruction::LoadImm64Continuation | Instruction::Store { .. } => {}
            Instruction::Load { dst, .. } => self.values[dst.index()] = None,
            Instruction::Atomic { .. } => {
                // An atomic may write r0 (cmpxchg) or its source register (fetch forms).
                self.values[Reg::R0.index()] = None;
                if let Instruction::Atomic { src, .. } = *insn {
                    self.values[src.index()] = None;
                }
            }
            Instruction::CallHelper { .. }
            | Instruction::CallLocal { .. }
            | Instruction::CallBtf { .. }
            | Instruction::CallReg { .. } => {
                for r in 0..=5 {
                    self.values[r] = None;
                }
            }
            Instruction::LegacyPacketLoad { .. } => self.clear(),
            Instruction::Jump { .. } | Instruction::JumpIf { .. } | Instruction::Exit => {}
        }
    }
}

/// Whether `insn` may sit inside a window of buffered stack stores: it neither reads nor writes memory, calls or
/// transfers control, so it cannot observe the buffered stores or their order.
pub fn keeps_window_open(insn: &Instruction) -> bool {
    match insn {
        Instruction::Alu { .. } | Instruction::Endian { .. } | Instruction::LoadImm64Continuation => true,
        // Map and global-variable `lddw`s only read the runtime's own tables, which the program cannot write.
        Instruction::LoadImm64 { .. } => true,
        _ => false,
    }
}

/// One store of the merged output: `size` bytes of `value` (little-endian) at `r10 + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackStore {
    pub offset: i32,
    pub size: MemSize,
    pub value: u64,
}

/// Constant stores to `r10 + offset` buffered in the current window.
#[derive(Clone, Debug, Default)]
pub struct PendingStackStores {
    /// Final byte contents by offset from `r10`: the last buffered store to a byte wins.
    bytes: BTreeMap<i32, u8>,
}

impl PendingStackStores {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The 4-byte little-endian word at `r10 + offset` if every one of its bytes is buffered: what memory holds
    /// there now (each buffered byte is the last store to it, and the window holds no other write).
    pub fn word(&self, offset: i64) -> Option<u32> {
        let mut bytes = [0u8; 4];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = *self.bytes.get(&i32::try_from(offset + i as i64).ok()?)?;
        }
        Some(u32::from_le_bytes(bytes))
    }

    /// Buffers a store of the low `size` bytes of `value` at `r10 + offset`.
    pub fn push(&mut self, offset: i16, size: MemSize, value: u64) {
        for (i, byte) in value.to_le_bytes().into_iter().take(size.bytes() as usize).enumerate() {
            self.bytes.insert(i32::from(offset) + i as i32, byte);
        }
    }

    /// The buffered bytes as the fewest naturally aligned stores: every maximal run of written bytes is covered
    /// with 8-, 4-, 2- and 1-byte stores, each aligned to its size relative to `r10` (which is 16-byte aligned,
    /// so relative alignment is real alignment). Clears the buffer.
    pub fn chunks(&mut self) -> Vec<StackStore> {
        let bytes = std::mem::take(&mut self.bytes);
        let mut stores = Vec::new();
        let mut iter = bytes.iter().peekable();
        while let Some((&start, &first)) = iter.next() {
            let mut run = vec![first];
            while let Some((&next, &byte)) = iter.peek() {
                if next != start + run.len() as i32 {
                    break;
                }
                run.push(byte);
                iter.next();
            }
            let mut at = 0usize;
            while at < run.len() {
                let offset = start + at as i32;
                let remaining = run.len() - at;
                let size = [MemSize::DW, MemSize::W, MemSize::H, MemSize::B]
                    .into_iter()
                    .find(|s| {
                        let n = s.bytes() as usize;
                        n <= remaining && offset.rem_euclid(n as i32) == 0
                    })
                    .expect("a 1-byte store always fits");
                let n = size.bytes() as usize;
                let mut value = [0u8; 8];
                value[..n].copy_from_slice(&run[at..at + n]);
                stores.push(StackStore { offset, size, value: u64::from_le_bytes(value) });
                at += n;
            }
        }
        stores
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(memory: &mut BTreeMap<i32, u8>, offset: i32, size: MemSize, value: u64) {
        for (i, byte) in value.to_le_bytes().into_iter().take(size.bytes() as usize).enumerate() {
            memory.insert(offset + i as i32, byte);
        }
    }

    #[test]
    fn a_byte_by_byte_array_initialisation_becomes_aligned_eight_byte_stores() {
        let mut pending = PendingStackStores::default();
        // sieve's pattern: every eighth byte first, then the rest, in descending order.
        for k in (0..480).rev() {
            pending.push(-480 + k, MemSize::B, 0x0101_0101);
        }
        let stores = pending.chunks();
        assert_eq!(stores.len(), 60);
        assert!(stores.iter().all(|s| s.size == MemSize::DW && s.value == 0x0101_0101_0101_0101 && s.offset % 8 == 0));
        assert!(pending.is_empty());
    }

    #[test]
    fn a_lookup_key_stored_as_a_constant_is_read_back_through_its_stack_address() {
        let alu = |op, dst, src| Instruction::Alu { width: Width::W64, op, dst, src };
        let mut regs = ConstantRegisters::default();
        // r2 = r10; r2 += -8; r3 = r2; r3 -= 4; r4 = r3; w4 += 0 (a 32-bit write is no stack address)
        for insn in [
            alu(AluOp::Mov, Reg::R2, Operand::Reg(Reg::FP)),
            alu(AluOp::Add, Reg::R2, Operand::Imm(-8)),
            alu(AluOp::Mov, Reg::R3, Operand::Reg(Reg::R2)),
            alu(AluOp::Sub, Reg::R3, Operand::Imm(4)),
            alu(AluOp::Mov, Reg::R4, Operand::Reg(Reg::R3)),
            Instruction::Alu { width: Width::W32, op: AluOp::Add, dst: Reg::R4, src: Operand::Imm(0) },
        ] {
            regs.update(&insn);
        }
        assert_eq!([Reg::R2, Reg::R3, Reg::R4].map(|r| regs.frame_offset(r)), [Some(-8), Some(-12), None]);
        regs.update(&Instruction::CallHelper { id: 1 });
        assert_eq!(regs.frame_offset(Reg::R2), None, "a call clobbers r1-r5");
        regs.clear();
        assert_eq!(regs.frame_offset(Reg::FP), Some(0));

        let mut pending = PendingStackStores::default();
        pending.push(-8, MemSize::H, 0x0201);
        assert_eq!(pending.word(-8), None, "two of the four bytes are not buffered");
        pending.push(-6, MemSize::B, 0x03);
        pending.push(-5, MemSize::B, 0x04);
        assert_eq!(pending.word(-8), Some(0x0403_0201));
    }

    #[test]
    fn every_register_an_instruction_writes_forgets_its_stack_address() {
        use crate::isa::{AtomicOp, ByteOrder};
        let alu = |width, op, dst, src| Instruction::Alu { width, op, dst, src };
        let atomic =
            |op, fetch| Instruction::Atomic { size: MemSize::DW, op, fetch, dst: Reg::R1, src: Reg::R2, offset: 0 };
        let program = [
            alu(Width::W64, AluOp::Mul, Reg::R3, Operand::Imm(2)),
            alu(Width::W32, AluOp::Mov, Reg::R3, Operand::Reg(Reg::R4)),
            alu(Width::W64, AluOp::Add, Reg::R3, Operand::Reg(Reg::R4)),
            alu(Width::W64, AluOp::Mov, Reg::R3, Operand::Imm(0)),
            Instruction::Endian { order: ByteOrder::ToBe, bits: 16, dst: Reg::R3 },
            Instruction::LoadImm64 { dst: Reg::R3, kind: Imm64Kind::Imm, imm: 1, next_imm: 0 },
            Instruction::Load { size: MemSize::W, sign_extend: false, dst: Reg::R3, src: Reg::R4, offset: 0 },
            Instruction::Store { size: MemSize::W, dst: Reg::R3, offset: 0, src: Operand::Reg(Reg::R4) },
            atomic(AtomicOp::Add, false),
            atomic(AtomicOp::Add, true),
            atomic(AtomicOp::Xchg, false),
            atomic(AtomicOp::CmpXchg, true),
            Instruction::CallHelper { id: 1 },
            Instruction::CallLocal { offset: 1 },
            Instruction::Jump { offset: 1, long: false },
            Instruction::Exit,
        ];
        for insn in program {
            // r0-r9 = r10 - 8 * (index + 1), then the instruction: exactly the registers in `defs()` are forgotten.
            let mut regs = ConstantRegisters::default();
            for r in (0..10).filter_map(Reg::new) {
                regs.update(&alu(Width::W64, AluOp::Mov, r, Operand::Reg(Reg::FP)));
                regs.update(&alu(Width::W64, AluOp::Sub, r, Operand::Imm(8 * (r.index() as i32 + 1))));
            }
            regs.update(&insn);
            for r in (0..=10).filter_map(Reg::new) {
                let before = if r == Reg::FP { 0 } else { -8 * (r.index() as i64 + 1) };
                let expected = (!insn.defs().contains(r)).then_some(before);
                assert_eq!(regs.frame_offset(r), expected, "{insn:?}, {r:?}");
            }
        }
    }

    #[test]
    fn later_stores_win_and_gaps_split_runs() {
        let mut pending = PendingStackStores::default();
        pending.push(-16, MemSize::DW, 0x1111_1111_1111_1111);
        pending.push(-12, MemSize::B, 0xab);
        pending.push(-4, MemSize::H, 0xbeef);
        assert_eq!(
            pending.chunks(),
            vec![
                StackStore { offset: -16, size: MemSize::DW, value: 0x1111_11ab_1111_1111 },
                StackStore { offset: -4, size: MemSize::H, value: 0xbeef },
            ]
        );
    }

    #[test]
    fn constants_follow_the_interpreter_semantics() {
        let mut consts = ConstantRegisters::default();
        consts.update(&Instruction::LoadImm64 {
            dst: Reg::R4,
            kind: Imm64Kind::Imm,
            imm: 0x0101_0101,
            next_imm: 0x0101_0101,
        });
        consts.update(&Instruction::Alu { width: Width::W64, op: AluOp::Rsh, dst: Reg::R4, src: Operand::Imm(32) });
        assert_eq!(consts.operand(Operand::Reg(Reg::R4)), Some(0x0101_0101));
        consts.update(&Instruction::Alu { width: Width::W32, op: AluOp::Mov, dst: Reg::R3, src: Operand::Imm(-1) });
        assert_eq!(consts.operand(Operand::Reg(Reg::R3)), Some(0xffff_ffff));
        consts.update(&Instruction::Load {
            size: MemSize::B,
            sign_extend: false,
            dst: Reg::R4,
            src: Reg::R1,
            offset: 0,
        });
        assert_eq!(consts.operand(Operand::Reg(Reg::R4)), None);
        consts.update(&Instruction::CallHelper { id: 1 });
        assert_eq!(consts.operand(Operand::Reg(Reg::R3)), None);
    }

    proptest! {
        /// Whatever the buffered stores, the merged stores leave exactly the same bytes behind, and each merged
        /// store is naturally aligned.
        #[test]
        fn merged_stores_write_exactly_the_bytes_of_the_original_stores(
            stores in proptest::collection::vec((-64i16..0, 0usize..4, any::<u64>()), 0..40)
        ) {
            let sizes = [MemSize::B, MemSize::H, MemSize::W, MemSize::DW];
            let mut expected = BTreeMap::new();
            let mut pending = PendingStackStores::default();
            for &(offset, size, value) in &stores {
                let size = sizes[size];
                apply(&mut expected, i32::from(offset), size, value);
                pending.push(offset, size, value);
            }
            let mut merged = BTreeMap::new();
            for s in pending.chunks() {
                prop_assert_eq!(s.offset.rem_euclid(s.size.bytes() as i32), 0);
                for i in 0..s.size.bytes() as i32 {
                    prop_assert!(merged.insert(s.offset + i, 0).is_none(), "bytes are written once");
                }
                apply(&mut merged, s.offset, s.size, s.value);
            }
            prop_assert_eq!(merged, expected);
        }
    }
}
