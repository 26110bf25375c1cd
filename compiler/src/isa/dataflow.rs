//! Which registers each instruction reads and writes (RFC 9669 semantics, contract §5.1 for calls): one
//! exhaustive `match` per direction, with no catch-all arm, so a new instruction forces a decision here and in
//! every analysis built on it (lowering's pre-passes, the verifier's syntactic fallbacks).

use super::{AluOp, AtomicOp, Instruction, Operand, Reg};

/// A set of registers `r0`..`r10`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegSet(u16);

impl RegSet {
    pub const EMPTY: RegSet = RegSet(0);
    /// `r1`..`r5`: the argument registers a call clobbers (contract §5.1).
    pub const CALLER_SAVED: RegSet = RegSet(0b11_1110);

    pub fn of(regs: &[Reg]) -> RegSet {
        regs.iter().fold(RegSet::EMPTY, |s, &r| s.with(r))
    }

    pub fn with(self, r: Reg) -> RegSet {
        RegSet(self.0 | 1 << r.index())
    }

    fn with_operand(self, o: Operand) -> RegSet {
        match o {
            Operand::Reg(r) => self.with(r),
            Operand::Imm(_) => self,
        }
    }

    pub fn union(self, other: RegSet) -> RegSet {
        RegSet(self.0 | other.0)
    }

    pub fn contains(self, r: Reg) -> bool {
        self.0 & (1 << r.index()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The registers in ascending order. Walks the set bits only (lowest first): most sets hold one register, and
    /// lowering asks for every instruction's definitions (`ConstantRegisters::update`), where testing all eleven
    /// registers was ~1.5 % of lowering `unrolled_xdp`.
    pub fn iter(self) -> impl Iterator<Item = Reg> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let index = bits.trailing_zeros();
            // Only `with` sets bits, each that of a valid register, so `Reg::new` fails only past the last one.
            bits &= bits.wrapping_sub(1);
            Reg::new(u8::try_from(index).ok()?)
        })
    }
}

impl Instruction {
    /// Registers whose value the instruction reads. A helper call reads `r1`..`r5` (the prototype decides how many
    /// matter; all five are passed), a local call `r1`..`r5` and `r10`, `exit` reads `r0`.
    pub fn uses(&self) -> RegSet {
        match *self {
            // `mov`/`movsx` and `neg` read only one operand (RFC 9669 §4.1).
            Instruction::Alu { op: AluOp::Mov | AluOp::MovSx(_), src, .. } => RegSet::EMPTY.with_operand(src),
            Instruction::Alu { op: AluOp::Neg, dst, .. } => RegSet::of(&[dst]),
            Instruction::Alu { dst, src, .. } => RegSet::of(&[dst]).with_operand(src),
            Instruction::Endian { dst, .. } => RegSet::of(&[dst]),
            Instruction::LoadImm64 { .. } | Instruction::LoadImm64Continuation => RegSet::EMPTY,
            Instruction::Load { src, .. } => RegSet::of(&[src]),
            Instruction::Store { dst, src, .. } => RegSet::of(&[dst]).with_operand(src),
            Instruction::Atomic { op: AtomicOp::CmpXchg, dst, src, .. } => RegSet::of(&[dst, src, Reg::R0]),
            Instruction::Atomic { dst, src, .. } => RegSet::of(&[dst, src]),
            // The implicit packet context is r6 (RFC 9669 §5.5).
            Instruction::LegacyPacketLoad { mode: super::PacketLoadMode::Ind, src, .. } => RegSet::of(&[Reg::R6, src]),
            Instruction::LegacyPacketLoad { mode: super::PacketLoadMode::Abs, .. } => RegSet::of(&[Reg::R6]),
            Instruction::Jump { .. } => RegSet::EMPTY,
            Instruction::JumpIf { dst, src, .. } => RegSet::of(&[dst]).with_operand(src),
            Instruction::CallHelper { .. } | Instruction::CallBtf { .. } => RegSet::CALLER_SAVED,
            Instruction::CallReg { reg } => RegSet::CALLER_SAVED.with(reg),
            Instruction::CallLocal { .. } => RegSet::CALLER_SAVED.with(Reg::FP),
            Instruction::Exit => RegSet::of(&[Reg::R0]),
        }
    }

    /// Registers the instruction writes. A call writes `r0` and leaves `r1`..`r5` undefined (contract §5.1), and
    /// so does a legacy packet load (RFC 9669 §5.5).
    pub fn defs(&self) -> RegSet {
        match *self {
            Instruction::Alu { dst, .. } | Instruction::Endian { dst, .. } | Instruction::LoadImm64 { dst, .. } => {
                RegSet::of(&[dst])
            }
            Instruction::Load { dst, .. } => RegSet::of(&[dst]),
            Instruction::LoadImm64Continuation | Instruction::Store { .. } => RegSet::EMPTY,
            Instruction::Atomic { op: AtomicOp::CmpXchg, .. } => RegSet::of(&[Reg::R0]),
            Instruction::Atomic { op: AtomicOp::Xchg, src, .. } => RegSet::of(&[src]),
            Instruction::Atomic { fetch: true, src, .. } => RegSet::of(&[src]),
            Instruction::Atomic { fetch: false, .. } => RegSet::EMPTY,
            Instruction::Jump { .. } | Instruction::JumpIf { .. } | Instruction::Exit => RegSet::EMPTY,
            Instruction::LegacyPacketLoad { .. }
            | Instruction::CallHelper { .. }
            | Instruction::CallLocal { .. }
            | Instruction::CallBtf { .. }
            | Instruction::CallReg { .. } => RegSet::CALLER_SAVED.with(Reg::R0),
        }
    }

    /// The one register an instruction computes a value into: `None` for instructions writing no register and
    /// for calls and legacy packet loads, which write `r0` and clobber `r1`..`r5`.
    pub fn written_register(&self) -> Option<Reg> {
        let defs = self.defs();
        let mut regs = defs.iter();
        match (regs.next(), regs.next()) {
            (Some(r), None) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{MemSize, Width};

    #[test]
    fn a_call_writes_r0_and_clobbers_the_argument_registers() {
        let call = Instruction::CallHelper { id: 1 };
        assert_eq!(call.defs().iter().map(|r| r.index()).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(call.written_register(), None);
    }

    #[test]
    fn fetching_atomics_write_their_source_and_cmpxchg_r0() {
        let atomic =
            |op, fetch| Instruction::Atomic { size: MemSize::DW, op, fetch, dst: Reg::R1, src: Reg::R2, offset: 0 };
        assert_eq!(atomic(AtomicOp::Add, false).written_register(), None);
        assert_eq!(atomic(AtomicOp::Add, true).written_register(), Some(Reg::R2));
        assert_eq!(atomic(AtomicOp::Xchg, false).written_register(), Some(Reg::R2));
        assert_eq!(atomic(AtomicOp::CmpXchg, true).written_register(), Some(Reg::R0));
        assert!(atomic(AtomicOp::CmpXchg, true).uses().contains(Reg::R0));
    }

    #[test]
    fn mov_reads_only_its_source() {
        let mov = Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R1, src: Operand::Reg(Reg::R2) };
        assert_eq!(mov.uses(), RegSet::of(&[Reg::R2]));
        let add = Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R1, src: Operand::Imm(1) };
        assert_eq!(add.uses(), RegSet::of(&[Reg::R1]));
    }
}
