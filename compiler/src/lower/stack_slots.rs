//! Stack slots kept in SSA variables instead of memory.
//!
//! clang spills to the eBPF stack when a program needs more than eBPF's ten registers (`branchy` keeps three counters
//! at `r10 - 8`, `- 16`, `- 24`). When no pointer can reach such a slot, the lowering gives it a Cranelift variable,
//! so it is register-allocated as a native compiler would allocate the C variable.

use crate::isa::{Instruction, MemSize, Operand, Reg};

/// Stack slots that can live in SSA variables instead of memory: the 8-byte slots at `r10 + offset` that the
/// function only ever reads and writes whole (64-bit `ldx`/`stx`/`st` at exactly that offset), in a function whose
/// `r10` never escapes — it is used only as the base of loads and stores, never copied, compared, passed or used in
/// an atomic — so no pointer can reach the slot. clang spills to such slots when a program needs more than eBPF's
/// ten registers; Cranelift then allocates them like registers, as a native compiler would.
pub fn promotable_slots(instructions: &[Instruction]) -> std::collections::BTreeSet<i16> {
    use std::collections::{BTreeMap, BTreeSet};
    let fp = Reg::FP;
    let is_fp = |o: Operand| o == Operand::Reg(fp);
    // Every access through r10: offset and size.
    let mut accesses: Vec<(i16, MemSize)> = Vec::new();
    for insn in instructions {
        match *insn {
            Instruction::Load { src, offset, size, .. } if src == fp => accesses.push((offset, size)),
            Instruction::Store { dst, offset, size, src } if dst == fp => {
                if is_fp(src) {
                    return BTreeSet::new();
                }
                accesses.push((offset, size));
            }
            Instruction::Store { src, .. } if is_fp(src) => return BTreeSet::new(),
            Instruction::Alu { dst, src, .. } if dst == fp || is_fp(src) => return BTreeSet::new(),
            Instruction::Endian { dst, .. } if dst == fp => return BTreeSet::new(),
            Instruction::JumpIf { dst, src, .. } if dst == fp || is_fp(src) => return BTreeSet::new(),
            Instruction::Atomic { dst, src, .. } if dst == fp || src == fp => return BTreeSet::new(),
            Instruction::CallReg { reg } if reg == fp => return BTreeSet::new(),
            _ => {}
        }
    }
    // A slot qualifies when every access overlapping its 8 bytes is a whole 64-bit access at its offset.
    let mut slots: BTreeMap<i16, bool> = BTreeMap::new();
    for &(offset, size) in &accesses {
        if size == MemSize::DW && offset % 8 == 0 && (-512..=-8).contains(&offset) {
            slots.entry(offset).or_insert(true);
        }
    }
    for &(offset, size) in &accesses {
        let (start, end) = (i32::from(offset), i32::from(offset) + size.bytes() as i32);
        for (&slot, ok) in slots.iter_mut() {
            let (s, e) = (i32::from(slot), i32::from(slot) + 8);
            let overlaps = start < e && s < end;
            if overlaps && !(start == s && size == MemSize::DW) {
                *ok = false;
            }
        }
    }
    slots.into_iter().filter(|&(_, ok)| ok).map(|(slot, _)| slot).collect()
}

#[cfg(test)]
mod promotion_tests {
    use super::*;
    use crate::isa::{AluOp, Width};

    fn stx(offset: i16, src: Reg) -> Instruction {
        Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset, src: Operand::Reg(src) }
    }

    #[test]
    fn whole_64_bit_slots_of_a_non_escaping_frame_are_promoted() {
        let program = [
            stx(-8, Reg::R1),
            stx(-16, Reg::R1),
            Instruction::Store { size: MemSize::B, dst: Reg::FP, offset: -12, src: Operand::Imm(0) },
            Instruction::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R2, src: Reg::FP, offset: -8 },
            Instruction::Exit,
        ];
        // -16 is also written byte-wise (at -12), so only -8 qualifies.
        assert_eq!(promotable_slots(&program).into_iter().collect::<Vec<_>>(), vec![-8]);
    }

    #[test]
    fn nothing_is_promoted_when_the_frame_pointer_escapes() {
        let program = [
            stx(-8, Reg::R1),
            Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R2, src: Operand::Reg(Reg::FP) },
            Instruction::Exit,
        ];
        assert!(promotable_slots(&program).is_empty());
    }
}
