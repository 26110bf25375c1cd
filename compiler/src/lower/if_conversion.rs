//! If-conversion: short conditional paths become computed values and selects instead of branches.
//!
//! A conditional jump whose fall-through path only computes a few register values and then reaches the jump's own
//! target — `if (st != 1) { st = 1; words++; }` in `branchy` compiles to `if r9 == 1 goto L; r2 = [r10 - 8];
//! r2 += 1; [r10 - 8] = r2; goto L` — costs a misprediction whenever the data make the condition hard to predict.
//! Native compilers compute the path unconditionally and pick the results with conditional moves (`setne`, `cmov`);
//! the translation does the same when [`fall_through_path`] finds such a path.
//!
//! Running the path when the program would have jumped over it is safe only because every instruction on it is
//! free of effects: ALU operations (eBPF division never traps, RFC 9669 §4.1, but costs too much to run on both
//! paths, so it is excluded), byte swaps, 64-bit immediates, and accesses to stack slots the lowering keeps in SSA
//! variables (`stack_slots`), which are not memory. Nothing on the path loads or stores real memory, calls or
//! exits; an unconditional `goto` on the way is followed. Registers the path reads may hold anything on the jumping
//! path (even values the verifier would call uninitialised); the results computed from them are discarded by the
//! selects, so they cannot matter.

use crate::isa::{AluOp, Imm64Kind, Instruction, MemSize, Reg};

/// At most this many instructions are run speculatively for one jump: a mispredicted branch costs about as much
/// as a handful of simple instructions.
pub const MAX_SPECULATED_INSTRUCTIONS: usize = 4;

/// At most this many slots (including `goto`s) are followed looking for the target.
const MAX_PATH_SLOTS: usize = 8;

/// The slots, in execution order, of the fall-through path of the conditional jump at `pc` up to its own target,
/// when that path is short and every instruction on it may run speculatively (see the module documentation).
/// `instructions` is one function, `pc` an index into it, and `is_promoted_slot(offset)` says whether the stack slot
/// at `r10 + offset` lives in an SSA variable.
pub fn fall_through_path(
    instructions: &[Instruction],
    pc: usize,
    is_promoted_slot: impl Fn(i16) -> bool,
) -> Option<Vec<usize>> {
    let Instruction::JumpIf { .. } = instructions.get(pc)? else { return None };
    let target = usize::try_from(instructions[pc].jump_target(pc)?).ok()?;
    let mut path = Vec::new();
    let mut at = pc + 1;
    for _ in 0..MAX_PATH_SLOTS {
        if at == target {
            return (!path.is_empty()).then_some(path);
        }
        let insn = instructions.get(at)?;
        match *insn {
            Instruction::Jump { .. } => at = usize::try_from(insn.jump_target(at)?).ok()?,
            _ if is_speculatable(insn, &is_promoted_slot) => {
                path.push(at);
                if path.len() > MAX_SPECULATED_INSTRUCTIONS {
                    return None;
                }
                at += if matches!(insn, Instruction::LoadImm64 { .. }) { 2 } else { 1 };
            }
            _ => return None,
        }
    }
    None
}

fn is_speculatable(insn: &Instruction, is_promoted_slot: impl Fn(i16) -> bool) -> bool {
    match *insn {
        Instruction::Alu { op, .. } => !matches!(op, AluOp::Div | AluOp::Mod | AluOp::SDiv | AluOp::SMod),
        Instruction::Endian { .. } => true,
        Instruction::LoadImm64 { kind, .. } => kind == Imm64Kind::Imm,
        Instruction::Load { size: MemSize::DW, src: Reg::FP, offset, .. }
        | Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset, .. } => is_promoted_slot(offset),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{JumpCond, Operand, Width};

    fn jump_if(offset: i16) -> Instruction {
        Instruction::JumpIf { width: Width::W64, cond: JumpCond::Eq, dst: Reg::R9, src: Operand::Imm(1), offset }
    }
    fn add(dst: Reg, imm: i32) -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(imm) }
    }

    #[test]
    fn branchys_word_count_path_is_found_through_a_goto() {
        // 0: if r9 == 1 goto 5; 1: goto 2; 2: r2 = [r10 - 8]; 3: r2 += 1; 4: [r10 - 8] = r2; (5: target)
        let program = [
            jump_if(4),
            Instruction::Jump { offset: 0, long: false },
            Instruction::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R2, src: Reg::FP, offset: -8 },
            add(Reg::R2, 1),
            Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset: -8, src: Operand::Reg(Reg::R2) },
            Instruction::Exit,
        ];
        assert_eq!(fall_through_path(&program, 0, |o| o == -8), Some(vec![2, 3, 4]));
        // The same slot in memory (not promoted) is a real store: no speculation.
        assert_eq!(fall_through_path(&program, 0, |_| false), None);
    }

    #[test]
    fn paths_with_memory_division_calls_or_too_many_instructions_are_kept_as_branches() {
        let load = Instruction::Load { size: MemSize::B, sign_extend: false, dst: Reg::R1, src: Reg::R2, offset: 0 };
        let div = Instruction::Alu { width: Width::W64, op: AluOp::Div, dst: Reg::R1, src: Operand::Imm(3) };
        for body in [load, div, Instruction::CallHelper { id: 1 }, jump_if(0)] {
            let program = [jump_if(1), body, Instruction::Exit];
            assert_eq!(fall_through_path(&program, 0, |_| true), None, "{body:?}");
        }
        let long: Vec<Instruction> =
            std::iter::once(jump_if(5)).chain((0..5).map(|i| add(Reg::R1, i))).chain([Instruction::Exit]).collect();
        assert_eq!(fall_through_path(&long, 0, |_| true), None);
        let short = [jump_if(1), add(Reg::R1, 1), Instruction::Exit];
        assert_eq!(fall_through_path(&short, 0, |_| true), Some(vec![1]));
        // A path that never reaches the target (it exits) and a backward jump that loops are not converted.
        let exits = [jump_if(2), add(Reg::R1, 1), Instruction::Exit, Instruction::Exit];
        assert_eq!(fall_through_path(&exits, 0, |_| true), None);
        let loops = [jump_if(2), add(Reg::R1, 1), Instruction::Jump { offset: -2, long: false }, Instruction::Exit];
        assert_eq!(fall_through_path(&loops, 0, |_| true), None);
    }
}
