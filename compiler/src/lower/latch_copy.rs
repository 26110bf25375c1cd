//! Latch copies: a conditional jump that skips the rest of a loop body enters a copy of the loop's latch.
//!
//! clang compiles `for (i = 0; i < n; i++) if (s[i]) { ... }` to eBPF in rotated order — the latch
//! (`i++; if i < n goto head`) first, the head (`if s[i] == 0 goto latch`) after it, and a `goto head` into the loop
//! — so that on x64 an iteration takes one branch: the skip jumps back to the latch, which falls into the head.
//! Cranelift lays blocks out in reverse post-order, where a block never precedes a block that dominates it, so the
//! latch lands after the head and the body, and an iteration that skips the body takes two branches (`je latch`,
//! `ja head`). That was most of `sieve`'s gap to clang -O2 (1.29x; 1.14x with this pass, median of 60 interleaved
//! runs each of `bench_run sieve 2000` and the clang -O2 build).
//!
//! [`latch_copies`] finds the loop latches that are a short test (a few ALU operations ending in the conditional
//! back edge, like `i++; if i < n goto head`) and a conditional jump inside the loop that skips the rest of the
//! body straight to that latch (`if s[i] == 0 goto latch`); the translation lowers that jump's taken side to a copy
//! of the latch, placed right after the jump (`translate`). An iteration that skips the body then runs test, latch
//! copy and back edge with one taken branch, as clang's layout does, at the price of one more taken branch on the
//! iteration that runs the body (which jumps to it). Loops whose conditional skip is the common path gain: those
//! that scan for the few elements that need work — `sieve` counts 92 primes in 480 bytes. The copy runs exactly
//! the latch's instructions and branches to the latch's own successors, so every execution computes the same values
//! in the same order (RFC 9669 semantics are per instruction; only where the code lies changes). The latch loads,
//! stores and calls nothing, so no memory effect is duplicated or moved.

use std::collections::BTreeMap;

use crate::isa::Instruction;

/// Latches with more ALU operations than this before their jump are not copied: the copy is code paid once per loop,
/// worth it for an increment and a test, not for a body.
pub const MAX_LATCH_INSTRUCTIONS: usize = 4;

/// A loop latch block (absolute slots) copied at the taken side of a conditional jump to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatchCopy {
    /// The latch's first slot (the jump's target).
    pub first: usize,
    /// The latch's conditional jump (a back edge), its last slot.
    pub jump: usize,
}

/// The conditional jumps of one function (`instructions`, first slot `start`) whose taken side is lowered to a copy
/// of the loop latch they jump to, keyed by the jump's absolute slot. `is_leader(pc)` says which absolute slots
/// start blocks; `is_branch(pc)` which conditional jumps are lowered as a compare and branch (not a proven direction
/// or if-conversion, `plan`). A latch is a block of at most [`MAX_LATCH_INSTRUCTIONS`] ALU operations ending in a
/// planned-as-branch conditional jump with a back edge — an edge a depth-first walk of the function's blocks from
/// its start finds going back to a block still on its path (for the reducible flow graphs compilers emit, an edge
/// to a block that dominates its source). The copied jump is a planned-as-branch conditional jump from another
/// block whose target is the latch and whose fall-through is not. Each latch is copied once, for the jump at the
/// latest slot, so code grows by at most one short latch per loop.
pub fn latch_copies(
    instructions: &[Instruction],
    start: usize,
    is_leader: impl Fn(usize) -> bool,
    is_branch: impl Fn(usize) -> bool,
) -> BTreeMap<usize, LatchCopy> {
    let blocks = Blocks::new(instructions, |at| is_leader(start + at));
    let latches: BTreeMap<usize, usize> = blocks
        .back_edges()
        .into_iter()
        .filter_map(|(from, _)| {
            let jump = short_test(instructions, &blocks, from)?;
            is_branch(start + jump).then_some((blocks.first[from], jump))
        })
        .collect();
    let mut copies: BTreeMap<usize, usize> = BTreeMap::new(); // latch first slot -> jump copying it
    for (at, insn) in instructions.iter().enumerate() {
        if !matches!(insn, Instruction::JumpIf { .. }) || !is_branch(start + at) {
            continue;
        }
        let Some(target) = insn.jump_target(at).and_then(|t| usize::try_from(t).ok()) else { continue };
        let from_another_block =
            blocks.index_of(target).is_some_and(|b| !(blocks.first[b]..=blocks.last[b]).contains(&at));
        if latches.contains_key(&target) && target != at + 1 && from_another_block {
            copies.insert(target, at); // slots ascend: the latest jump wins
        }
    }
    copies
        .into_iter()
        .map(|(first, at)| (start + at, LatchCopy { first: start + first, jump: start + latches[&first] }))
        .collect()
}

/// The slot of the conditional jump ending block `block` when the block is a short test: at most
/// [`MAX_LATCH_INSTRUCTIONS`] ALU operations before it.
fn short_test(instructions: &[Instruction], blocks: &Blocks, block: usize) -> Option<usize> {
    let (first, last) = (blocks.first[block], blocks.last[block]);
    let short = instructions[first..last].iter().all(|insn| matches!(insn, Instruction::Alu { .. }))
        && last - first <= MAX_LATCH_INSTRUCTIONS;
    (short && matches!(instructions[last], Instruction::JumpIf { .. })).then_some(last)
}

/// The basic blocks of one function: first and last slot (relative) and successor blocks.
struct Blocks {
    first: Vec<usize>,
    last: Vec<usize>,
    successors: Vec<Vec<usize>>,
}

impl Blocks {
    fn new(instructions: &[Instruction], is_leader: impl Fn(usize) -> bool) -> Blocks {
        let n = instructions.len();
        let mut first = Vec::new();
        let mut last = Vec::new();
        let mut at = 0;
        while at < n {
            first.push(at);
            let mut end = at;
            loop {
                let next = end + instructions[end].slots().max(1);
                let ends = matches!(instructions[end], Instruction::Jump { .. } | Instruction::JumpIf { .. })
                    || matches!(instructions[end], Instruction::Exit);
                if ends || next >= n || is_leader(next) {
                    break;
                }
                end = next;
            }
            last.push(end);
            at = end + instructions[end].slots().max(1);
        }
        let mut blocks = Blocks { first, last, successors: Vec::new() };
        blocks.successors = (0..blocks.first.len())
            .map(|b| {
                let end = blocks.last[b];
                let insn = &instructions[end];
                let next = end + insn.slots().max(1);
                let target = insn.jump_target(end).and_then(|t| usize::try_from(t).ok());
                let slots: Vec<usize> = match insn {
                    Instruction::Exit => vec![],
                    Instruction::Jump { .. } => target.into_iter().collect(),
                    Instruction::JumpIf { .. } => target.into_iter().chain([next]).collect(),
                    _ => vec![next],
                };
                slots.into_iter().filter_map(|s| blocks.index_of(s)).collect()
            })
            .collect();
        blocks
    }

    /// The block starting at relative slot `slot`.
    fn index_of(&self, slot: usize) -> Option<usize> {
        self.first.binary_search(&slot).ok()
    }

    /// The (source, target) block pairs of the edges a depth-first walk from the first block finds going back to a
    /// block still on its path.
    fn back_edges(&self) -> Vec<(usize, usize)> {
        const NEW: u8 = 0;
        const ON_PATH: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![NEW; self.first.len()];
        let mut edges = Vec::new();
        if self.first.is_empty() {
            return edges;
        }
        let mut stack = vec![(0usize, 0usize)];
        state[0] = ON_PATH;
        while let Some(&mut (block, ref mut next)) = stack.last_mut() {
            if let Some(&successor) = self.successors[block].get(*next) {
                *next += 1;
                match state[successor] {
                    NEW => {
                        state[successor] = ON_PATH;
                        stack.push((successor, 0));
                    }
                    ON_PATH => edges.push((block, successor)),
                    _ => {}
                }
            } else {
                state[block] = DONE;
                stack.pop();
            }
        }
        edges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{AluOp, JumpCond, MemSize, Operand, Reg, Width};

    fn add(dst: Reg, imm: i32) -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(imm) }
    }
    fn jump_if(cond: JumpCond, dst: Reg, src: Operand, offset: i16) -> Instruction {
        Instruction::JumpIf { width: Width::W64, cond, dst, src, offset }
    }
    fn goto(offset: i16) -> Instruction {
        Instruction::Jump { offset: i32::from(offset), long: false }
    }
    fn load(dst: Reg, src: Reg) -> Instruction {
        Instruction::Load { size: MemSize::B, sign_extend: false, dst, src, offset: 0 }
    }
    fn copies(program: &[Instruction], start: usize, is_branch: impl Fn(usize) -> bool) -> BTreeMap<usize, LatchCopy> {
        let mut leaders = vec![0];
        for (at, insn) in program.iter().enumerate() {
            if let Some(t) = insn.jump_target(at) {
                leaders.extend([t as usize, at + 1]);
            }
        }
        latch_copies(program, start, |pc| leaders.contains(&(pc - start)), is_branch)
    }

    /// `sieve`'s counting loop as clang emits it, the latch before the header (function at slot 100):
    /// 0: goto 4; 1: r4 += 1; 2: if r2 > r4 goto 4; 3: goto 9 (exit);
    /// 4: r5 = r4; 5: r5 = *(u8 *)(r5 + 0); 6: if r5 == 0 goto 1; 7: r3 += 1; 8: goto 1; 9: exit
    fn counting_loop() -> Vec<Instruction> {
        let mov = Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R5, src: Operand::Reg(Reg::R4) };
        vec![
            goto(3),
            add(Reg::R4, 1),
            jump_if(JumpCond::Gt, Reg::R2, Operand::Reg(Reg::R4), 1),
            goto(5),
            mov,
            load(Reg::R5, Reg::R5),
            jump_if(JumpCond::Eq, Reg::R5, Operand::Imm(0), -6),
            add(Reg::R3, 1),
            goto(-8),
            Instruction::Exit,
        ]
    }

    #[test]
    fn a_conditional_skip_to_a_short_latch_gets_a_copy_of_the_latch() {
        // The latch at 1-2 ends in the back edge to the header at 4; the header's `if r5 == 0 goto 1` skips the body.
        let planned = copies(&counting_loop(), 100, |_| true);
        assert_eq!(planned, BTreeMap::from([(106, LatchCopy { first: 101, jump: 102 })]));
        // Not when either jump keeps a proven direction or is if-converted.
        assert!(copies(&counting_loop(), 100, |pc| pc != 102).is_empty());
        assert!(copies(&counting_loop(), 100, |pc| pc != 106).is_empty());
    }

    #[test]
    fn a_latch_whose_back_edge_falls_through_is_copied_once_for_the_latest_skip() {
        // The marking loop's shape: the latch falls through into the header, two skips jump to it.
        // 0: goto 3; 1: r4 += 1; 2: if r4 == 22 goto 8; 3: r6 = *(u8 *)(r4 + 0); 4: if r6 == 0 goto 1;
        // 5: if r6 == 7 goto 1; 6: r3 += 1; 7: goto 1; 8: exit
        let program = [
            goto(2),
            add(Reg::R4, 1),
            jump_if(JumpCond::Eq, Reg::R4, Operand::Imm(22), 5),
            load(Reg::R6, Reg::R4),
            jump_if(JumpCond::Eq, Reg::R6, Operand::Imm(0), -4),
            jump_if(JumpCond::Eq, Reg::R6, Operand::Imm(7), -5),
            add(Reg::R3, 1),
            goto(-7),
            Instruction::Exit,
        ];
        assert_eq!(copies(&program, 0, |_| true), BTreeMap::from([(5, LatchCopy { first: 1, jump: 2 })]));
    }

    #[test]
    fn latches_that_load_store_call_or_run_long_are_not_copied() {
        let store = Instruction::Store { size: MemSize::B, dst: Reg::R1, offset: 0, src: Operand::Imm(0) };
        let short = vec![add(Reg::R4, 1)];
        let long = vec![add(Reg::R4, 1); MAX_LATCH_INSTRUCTIONS + 1];
        let call = Instruction::CallHelper { id: 1 };
        for (latch, copied) in [
            (short, true),
            (long, false),
            (vec![store], false),
            (vec![load(Reg::R4, Reg::R1)], false),
            (vec![call], false),
        ] {
            // 0: goto header; 1..=n: latch; n+1: if r2 > r4 goto header; n+2: exit;
            // n+3 header: if r5 == 0 goto 1; n+4: r3 += 1; n+5: goto 1
            let n = latch.len() as i16;
            let mut program = vec![goto(n + 2)];
            program.extend(latch);
            program.extend([
                jump_if(JumpCond::Gt, Reg::R2, Operand::Reg(Reg::R4), 1),
                Instruction::Exit,
                jump_if(JumpCond::Eq, Reg::R5, Operand::Imm(0), -n - 3),
                add(Reg::R3, 1),
                goto(-n - 5),
            ]);
            assert_eq!(!copies(&program, 0, |_| true).is_empty(), copied, "{program:?}");
        }
    }
}
