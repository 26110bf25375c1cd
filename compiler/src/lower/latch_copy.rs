//! Latch copies: the jumps into a short loop latch enter copies of it, and a loop header's jump may be laid out with
//! its target next, so that an iteration runs one taken branch where a shared latch costs two.
//!
//! A latch here is one thing ([`latch_copies`]): a block of at most [`MAX_LATCH_INSTRUCTIONS`] ALU operations ending
//! in a planned-as-branch conditional jump with a back edge (`i++; if i < n goto head`). Three kinds of entry copy it:
//!
//! - **Conditional skips** (`sieve`). clang compiles `for (i = 0; i < n; i++) if (s[i]) { ... }` to eBPF in rotated
//!   order — the latch first, the head (`if s[i] == 0 goto latch`) after it, and a `goto head` into the loop — so
//!   that on x64 an iteration takes one branch: the skip jumps back to the latch, which falls into the head.
//!   Cranelift lays blocks out in reverse post-order, where a block never precedes a block that dominates it, so the
//!   latch lands after the head and the body, and an iteration that skips the body takes two branches (`je latch`,
//!   `ja head`). A planned-as-branch conditional jump from another block to the latch gets a copy of the latch
//!   placed right after it (`translate`), once per latch (the latest such jump), so code grows by one short latch
//!   per loop. That was most of `sieve`'s gap to clang -O2 (1.29x; 1.14x with it, median of 60 interleaved runs
//!   each of `bench_run sieve 2000` and the clang -O2 build).
//! - **`goto`s, fall-throughs and if-converted jumps** (`branchy`). A loop whose body branches several ways ends
//!   every way with a jump to the one latch; each way gets the latch's instructions in place of that jump
//!   (`FunctionTranslator::jump_to`), at most [`MAX_LATCH_INSTRUCTIONS`] + 1 slots per entry. Taken branches are
//!   what the branch predictor's history is made of (recent x86 cores fold only taken branches into it), so each
//!   extra one shortens the stretch of the data the predictor can tell apart: `branchy` ran 1.8x of clang -O2 with
//!   the shared latch and 1.5x with a copy at the end of each way (the same code otherwise, hand-assembled, Intel
//!   Xeon).
//! - **Loop header rotation** ([`rotated_header_jumps`]): the jump closing a loop header whose fall-through way runs
//!   straight into a latch, while its target way branches again, is negated ([`JumpLowering::BranchTargetNext`]) so
//!   that the branching way is laid out next and the straight way, ending in its own latch copy, goes out of line:
//!   clang's x86 layout of `branchy`'s tokenizer loop.
//!
//! Every copy runs exactly the latch's instructions on the path that would have jumped to them and ends in the
//! latch's own conditional jump to the latch's own successors; a negated comparison branches to the slot the
//! original falls to. So every execution computes the same values in the same order (RFC 9669 §4.3: a jump only
//! transfers control; the semantics are per instruction, only where the code lies changes). The latch loads,
//! stores and calls nothing, so no memory effect is duplicated or moved.

use std::collections::BTreeMap;

use crate::isa::Instruction;

use super::plan::JumpLowering;

/// Latches with more ALU operations than this before their jump are not copied: a copy is code paid per entry (once
/// per loop for a conditional skip), worth it for an increment and a test, not for a body.
pub const MAX_LATCH_INSTRUCTIONS: usize = 4;

/// A loop latch block (absolute slots) copied at the taken side of a conditional jump to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatchCopy {
    /// The latch's first slot (the jump's target).
    pub first: usize,
    /// The latch's conditional jump (a back edge), its last slot.
    pub jump: usize,
}

/// The short loop latches of one function and the conditional skips that enter a copy of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latches {
    /// Every latch: its first slot → the slot of its conditional jump (absolute). Any `goto`, fall-through or
    /// if-converted jump into one of these runs a copy of it.
    pub blocks: BTreeMap<usize, usize>,
    /// The conditional jumps whose taken side is lowered to a copy of the loop latch they jump to, by the jump's
    /// absolute slot.
    pub skips: BTreeMap<usize, LatchCopy>,
}

/// The latches of one function (`instructions`, first slot `start`) and its conditional skips to them.
/// `is_leader(pc)` says which absolute slots start blocks; `is_branch(pc)` which conditional jumps are lowered as a
/// compare and branch (not a proven direction or if-conversion, `plan`). A latch is a block of at most
/// [`MAX_LATCH_INSTRUCTIONS`] ALU operations ending in a planned-as-branch conditional jump with a back edge — an
/// edge a depth-first walk of the function's blocks from its start finds going back to a block still on its path
/// (for the reducible flow graphs compilers emit, an edge to a block that dominates its source). A skip is a
/// planned-as-branch conditional jump from another block whose target is the latch and whose fall-through is not.
/// Each latch is copied for one skip, the one at the latest slot.
pub fn latch_copies(
    instructions: &[Instruction],
    start: usize,
    is_leader: impl Fn(usize) -> bool,
    is_branch: impl Fn(usize) -> bool,
) -> Latches {
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
    Latches {
        skips: copies
            .into_iter()
            .map(|(first, at)| (start + at, LatchCopy { first: start + first, jump: start + latches[&first] }))
            .collect(),
        blocks: latches.into_iter().map(|(first, jump)| (start + first, start + jump)).collect(),
    }
}

/// At most this many slots are followed looking for the latch at the end of a loop header's fall-through way.
const MAX_WAY_SLOTS: usize = 64;

/// The conditional jumps (absolute slots) of one function to lay out with their target next
/// ([`JumpLowering::BranchTargetNext`]): the jump that closes a loop's header block (its leader is a loop head,
/// `is_loop_head`) when its fall-through way runs straight into a latch (`is_latch`, by first slot) and its target
/// way branches again first. `lowering(pc)` is how the conditional jump at absolute `pc` is lowered, `None` for a
/// plain branch.
///
/// This is the layout clang gives such a loop on x86 (loop rotation puts the straight way before the header, where
/// it falls into the latch), in the form Cranelift can express: its block order follows each block's second branch
/// successor, so the branching way follows the header and the straight way, ending in its own copy of the latch,
/// goes out of line. The way that tests further then runs no taken branch before its own latch copy; with the
/// straight way inline it would take one to get out of line. Only the layout changes: the negated comparison
/// branches to the slot the original falls to (RFC 9669 §4.3), so every execution goes where it went before.
pub fn rotated_header_jumps(
    instructions: &[Instruction],
    start: usize,
    is_leader: impl Fn(usize) -> bool,
    is_loop_head: impl Fn(usize) -> bool,
    is_latch: impl Fn(usize) -> bool,
    lowering: impl Fn(usize) -> Option<JumpLowering>,
) -> Vec<usize> {
    let mut rotated = Vec::new();
    let mut leader = 0;
    for (at, insn) in instructions.iter().enumerate() {
        if is_leader(start + at) {
            leader = at;
        }
        let Instruction::JumpIf { .. } = insn else { continue };
        let Some(target) = insn.jump_target(at).and_then(|t| usize::try_from(t).ok()).filter(|&t| t > at + 1) else {
            continue;
        };
        let straight = |from| runs_into_latch(instructions, start, from, &is_latch, &lowering);
        if is_loop_head(start + leader) && lowering(start + at).is_none() && straight(at + 1) && !straight(target) {
            rotated.push(start + at);
        }
    }
    rotated
}

/// Whether execution from slot `from` (relative) reaches a latch without a conditional branch on the way: `goto`s
/// are followed, a proven direction is followed, an if-converted jump continues at its target.
fn runs_into_latch(
    instructions: &[Instruction],
    start: usize,
    from: usize,
    is_latch: impl Fn(usize) -> bool,
    lowering: impl Fn(usize) -> Option<JumpLowering>,
) -> bool {
    let mut at = from;
    for _ in 0..MAX_WAY_SLOTS {
        if is_latch(start + at) {
            return true;
        }
        let Some(insn) = instructions.get(at) else { return false };
        let target = || insn.jump_target(at).and_then(|t| usize::try_from(t).ok());
        let next = match insn {
            Instruction::Exit => None,
            Instruction::Jump { .. } => target(),
            Instruction::JumpIf { .. } => match lowering(start + at) {
                Some(JumpLowering::Goto { taken: false }) => Some(at + 1),
                Some(JumpLowering::Goto { taken: true } | JumpLowering::Select { .. }) => target(),
                _ => None,
            },
            _ => Some(at + insn.slots().max(1)),
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    false
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
        latch_copies(program, start, |pc| leaders.contains(&(pc - start)), is_branch).skips
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

    /// `branchy`'s shape, the latch after the body (function at slot 40): 0: r1 += 1 (head); 1: if r3 > r8 goto 4;
    /// 2: r2 += 1; 3: goto 4; 4: r8 += 1 (latch); 5: if r3 > r8 goto 0; 6: exit
    fn latch_after_body() -> Vec<Instruction> {
        let test = |offset| jump_if(JumpCond::Gt, Reg::R3, Operand::Reg(Reg::R8), offset);
        vec![add(Reg::R1, 1), test(2), add(Reg::R2, 1), goto(0), add(Reg::R8, 1), test(-6), Instruction::Exit]
    }

    #[test]
    fn a_latch_after_the_body_is_one_for_every_entry_and_the_conditional_one_gets_the_placed_copy() {
        let leaders = [40, 42, 44, 46];
        let latches = latch_copies(&latch_after_body(), 40, |pc| leaders.contains(&pc), |_| true);
        // The goto at 43 enters the latch's blocks entry (translated in place), the skip at 41 its placed copy.
        assert_eq!(latches.blocks, BTreeMap::from([(44, 45)]));
        assert_eq!(latches.skips, BTreeMap::from([(41, LatchCopy { first: 44, jump: 45 })]));
        // A jump to the closing jump splits the block: the jump alone (45) is still a latch, the part before it is
        // not (it ends without a back edge).
        let split = latch_copies(&latch_after_body(), 40, |pc| [40, 42, 44, 45, 46].contains(&pc), |_| true);
        assert_eq!(split.blocks, BTreeMap::from([(45, 45)]));
        // A back edge with a proven direction or if-converted is no latch; neither is a forward-only loop-free block.
        assert_eq!(
            latch_copies(&latch_after_body(), 40, |pc| leaders.contains(&pc), |pc| pc != 45),
            Latches::default()
        );
        let forward =
            [add(Reg::R1, 1), add(Reg::R8, 1), jump_if(JumpCond::Gt, Reg::R3, Operand::Imm(0), 0), Instruction::Exit];
        assert!(latch_copies(&forward, 0, |pc| pc < 2 || pc == 3, |_| true).blocks.is_empty());
    }

    #[test]
    fn a_loop_headers_straight_way_to_the_latch_goes_out_of_line_when_the_other_way_branches_again() {
        // 0: r1 += 1 (loop head); 1: if r3 > r8 goto 4; 2: r2 += 1 (straight way); 3: goto 7;
        // 4: if r3 > r8 goto 6 (branches again); 5: goto 7; 6: r4 += 1;
        // 7: r8 += 1 (latch); 8: if r3 > r8 goto 0; 9: exit  (function at slot 20)
        let test = |offset| jump_if(JumpCond::Gt, Reg::R3, Operand::Reg(Reg::R8), offset);
        let program = [
            add(Reg::R1, 1),
            test(2),
            add(Reg::R2, 1),
            goto(3),
            test(1),
            goto(1),
            add(Reg::R4, 1),
            add(Reg::R8, 1),
            test(-9),
            Instruction::Exit,
        ];
        let leaders = [20, 22, 24, 25, 26, 27, 29];
        let is_leader = |pc| leaders.contains(&pc);
        let latches = latch_copies(&program, 20, is_leader, |_| true).blocks;
        assert_eq!(latches, BTreeMap::from([(27, 28)]));
        let is_latch = |pc| latches.contains_key(&pc);
        let rotated = |head: usize, lowering: &dyn Fn(usize) -> Option<JumpLowering>| {
            rotated_header_jumps(&program, 20, is_leader, |pc| pc == head, is_latch, lowering)
        };
        assert_eq!(rotated(20, &|_| None), vec![21]);
        // Not in a loop header, or the other way goes straight to the latch too (its jump is if-converted): as written.
        assert!(rotated(22, &|_| None).is_empty());
        let if_converted = |pc| (pc == 24).then_some(JumpLowering::Select { path: vec![5] });
        assert!(rotated(20, &if_converted).is_empty());
        // A straight way that exits, or a header jump lowered otherwise, is left alone.
        let proven = |pc| (pc == 21).then_some(JumpLowering::Goto { taken: true });
        assert!(rotated(20, &proven).is_empty());
        let mut exits = program;
        exits[3] = Instruction::Exit;
        assert!(rotated_header_jumps(&exits, 20, is_leader, |pc| pc == 20, is_latch, |_| None).is_empty());
    }
}
