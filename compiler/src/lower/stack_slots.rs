//! Stack slots kept in SSA variables instead of memory.
//!
//! clang spills to the eBPF stack when a program needs more than eBPF's ten registers (`branchy` keeps three counters
//! at `r10 - 8`, `- 16`, `- 24`). When no pointer can reach such a slot, the lowering gives it a Cranelift variable,
//! so it is register-allocated as a native compiler would allocate the C variable.
//!
//! A program that calls map helpers passes them pointers into its frame (`r2 = r10; r2 += -4; call
//! bpf_map_lookup_elem`). Such a pointer, handed straight to a helper, reaches only the bytes between it and the
//! top of the frame: the verifier proved every memory argument of a helper lies inside the frame, `[r10 - 512,
//! r10)` (docs/verifier.md §2), and no helper keeps or returns a pointer to the stack. The slots below the lowest
//! such pointer stay promotable (`tailchain`'s `chain_l3` spills 32 packet bytes there next to a 4-byte map key).

use crate::isa::{AluOp, Instruction, MemSize, Operand, Reg, Width};

/// Stack slots that can live in SSA variables instead of memory: the 8-byte slots at `r10 + offset` that the
/// function only ever reads and writes whole (64-bit `ldx`/`stx`/`st` at exactly that offset), in a function whose
/// `r10` does not escape — it is used only as the base of loads and stores and to make pointers that go straight
/// to a helper ([`helper_argument`]), never otherwise copied, compared, passed or used in an atomic — and that no
/// helper argument can reach, so no pointer reaches the slot. clang spills to such slots when a program needs more
/// than eBPF's ten registers; Cranelift then allocates them like registers, as a native compiler would.
pub fn promotable_slots(instructions: &[Instruction]) -> std::collections::BTreeSet<i16> {
    use std::collections::{BTreeMap, BTreeSet};
    let fp = Reg::FP;
    let is_fp = |o: Operand| o == Operand::Reg(fp);
    // Every access through r10: offset and size.
    let mut accesses: Vec<(i16, MemSize)> = Vec::new();
    // The lowest offset a helper can reach through a pointer it was given: it may access `[lowest, 0)`.
    let mut lowest_helper_reach: i32 = 0;
    for (pc, insn) in instructions.iter().enumerate() {
        match *insn {
            Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst, src } if dst != fp && is_fp(src) => {
                match helper_argument(instructions, pc) {
                    Some(offset) => lowest_helper_reach = lowest_helper_reach.min(offset),
                    None => return BTreeSet::new(),
                }
            }
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
        let below_helper_reach = i32::from(offset) + 8 <= lowest_helper_reach;
        if size == MemSize::DW && offset % 8 == 0 && (-512..=-8).contains(&offset) && below_helper_reach {
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

/// For the `rX = r10` at `pc`: the offset `c` when it starts `rX = r10; [rX += c;] … call helper` with `rX` one of
/// r1–r5 (the arguments, which the call clobbers) and nothing in between reading or writing `rX`, jumping or
/// exiting, so the pointer `r10 + c` goes to that helper and nowhere else. The helper can then reach only
/// `[r10 + c, r10)`: the verifier proved its memory arguments lie inside the frame, and no helper keeps a stack
/// pointer or returns one. Calls to local functions and kfuncs do not qualify (they may address below their
/// argument).
fn helper_argument(instructions: &[Instruction], pc: usize) -> Option<i32> {
    let Instruction::Alu { dst: x, .. } = instructions[pc] else { return None };
    if !(1..=5).contains(&x.index()) {
        return None;
    }
    let mut at = pc + 1;
    let mut offset = 0i32;
    if let Some(&Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(c) }) =
        instructions.get(at)
    {
        if dst == x {
            offset = c;
            at += 1;
        }
    }
    if !(-512..=0).contains(&offset) {
        return None;
    }
    for insn in &instructions[at..] {
        match insn {
            Instruction::CallHelper { .. } => return Some(offset),
            Instruction::Jump { .. }
            | Instruction::JumpIf { .. }
            | Instruction::Exit
            | Instruction::CallReg { .. }
            | Instruction::CallLocal { .. }
            | Instruction::CallBtf { .. } => return None,
            _ if insn.uses().contains(x) || insn.defs().contains(x) => return None,
            _ => {}
        }
    }
    None
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

    fn mov_fp(dst: Reg) -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Reg(Reg::FP) }
    }
    fn add(dst: Reg, imm: i32) -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(imm) }
    }
    fn ldx(offset: i16) -> Instruction {
        Instruction::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R0, src: Reg::FP, offset }
    }

    #[test]
    fn slots_below_a_pointer_passed_straight_to_a_helper_are_promoted() {
        // A map key at r10 - 12 (4 bytes) next to spills at -8, -16 and -24: the helper may read [-12, 0), so -8 and
        // -16 (which holds byte -12) stay in memory.
        let program = [
            stx(-8, Reg::R6),
            stx(-16, Reg::R7),
            stx(-24, Reg::R8),
            Instruction::Store { size: MemSize::W, dst: Reg::FP, offset: -12, src: Operand::Imm(0) },
            mov_fp(Reg::R2),
            add(Reg::R2, -12),
            Instruction::LoadImm64 { dst: Reg::R1, kind: crate::isa::Imm64Kind::MapIndex, imm: 0, next_imm: 0 },
            Instruction::LoadImm64Continuation,
            Instruction::CallHelper { id: 1 },
            ldx(-8),
            ldx(-16),
            ldx(-24),
            Instruction::Exit,
        ];
        assert_eq!(promotable_slots(&program).into_iter().collect::<Vec<_>>(), vec![-24]);
    }

    #[test]
    fn a_stack_pointer_that_goes_anywhere_but_straight_to_a_helper_promotes_nothing() {
        let call = Instruction::CallHelper { id: 1 };
        let local = Instruction::CallLocal { offset: 2 };
        let jump = Instruction::JumpIf {
            width: Width::W64,
            cond: crate::isa::JumpCond::Eq,
            dst: Reg::R3,
            src: Operand::Imm(0),
            offset: 0,
        };
        let escapes: [&[Instruction]; 6] = [
            // Kept past the call in a callee-saved register.
            &[mov_fp(Reg::R6), add(Reg::R6, -8), call],
            // Moved further down before the call.
            &[mov_fp(Reg::R2), add(Reg::R2, -8), add(Reg::R2, -8), call],
            // Copied before the call.
            &[
                mov_fp(Reg::R2),
                add(Reg::R2, -8),
                Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R3, src: Operand::Reg(Reg::R2) },
                call,
            ],
            // A local function may address below its argument.
            &[mov_fp(Reg::R1), add(Reg::R1, -8), local],
            // A branch between the pointer and the call.
            &[mov_fp(Reg::R2), add(Reg::R2, -8), jump, call],
            // Never called with it.
            &[mov_fp(Reg::R2), add(Reg::R2, -8), Instruction::Exit],
        ];
        for prefix in escapes {
            let mut program = vec![stx(-16, Reg::R7)];
            program.extend_from_slice(prefix);
            program.extend([ldx(-16), Instruction::Exit]);
            assert!(promotable_slots(&program).is_empty(), "{prefix:?}");
        }
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
