//! The pre-passes of lowering and the plan they produce for one function.
//!
//! Every optimisation that decides *how* an eBPF instruction is lowered runs before translation, over the
//! function's instructions and the verifier's facts ([`Verified`]), and records its decision in a
//! [`FunctionPlan`]; the translation (`translate`) then follows the plan instead of deciding on the way. Each
//! pre-pass is a pure function of the instructions (and facts), so it is unit-tested without Cranelift:
//!
//! | pre-pass | decides | from |
//! |---|---|---|
//! | [`function_shape`] | whether loads may move to their uses ([`FunctionPlan::movable_loads`]) | the instructions |
//! | [`function_shape`] | whether the blocks that return go after the function's other code ([`FunctionPlan::cold_returns`]) | the instructions |
//! | [`super::stack_slots::promotable_slots`] | which stack slots live in SSA variables | the instructions |
//! | [`Verified::branch_decision`] | conditional jumps whose direction the verifier proved ([`JumpLowering::Goto`]) | the verifier's facts |
//! | [`super::if_conversion::fall_through_path`] | conditional jumps over short effect-free paths ([`JumpLowering::Select`]) | the instructions, the promoted slots |
//! | [`Verified::is_redundant_zero_extension`] | zero-extension idioms left out ([`FunctionPlan::is_omitted`]) | the verifier's facts, the block leaders |
//! | [`block_entry_constants`] | the registers holding one constant on every path into a block ([`FunctionPlan::constants_at`]) | the instructions, the block leaders |
//! | [`super::latch_copy::latch_copies`] | short loop latches ([`FunctionPlan::latch_at`]) and the conditional skips to them that enter a placed copy ([`FunctionPlan::latch_copy`]) | the instructions, the block leaders, the jump plan |
//! | [`super::latch_copy::rotated_header_jumps`] | loop header jumps laid out with their target next ([`JumpLowering::BranchTargetNext`]) | the instructions, the loop heads, the latches, the other jump lowerings |
//! | [`Verified::array_map_lookup`] | `bpf_map_lookup_elem` calls indexed inline ([`FunctionPlan::array_lookup`]) | the verifier's facts, the map definitions, the runtime version's `map_data` layout |
//!
//! Two improvements work inside one block while translating, because their input is the SSA value each register
//! holds there: [`super::load_combine`] (byte loads assembling one wider value) and [`super::stack_stores`]
//! (merging constant stores to the stack); both only ever replace instructions with equivalent ones on the same
//! path, so there is nothing for a whole-function plan to decide.

use std::collections::{BTreeMap, BTreeSet};

use crate::isa::semantics::zero_extension_at;
use crate::isa::Instruction;
use crate::program::MapDefinition;
use crate::verifier::{BranchDecision, Verified};

use super::if_conversion::fall_through_path;
use super::latch_copy::{latch_copies, rotated_header_jumps, LatchCopy};
use super::runtime_env::MapDataLayout;
use super::stack_slots::promotable_slots;
use super::stack_stores::ConstantRegisters;
use super::translate::function_shape;

/// How one conditional jump is lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JumpLowering {
    /// Compare and branch.
    Branch,
    /// The verifier proved that every execution reaching the jump goes one way (`taken`: to the target, else to
    /// the next slot): an unconditional jump, no comparison. Sound because the verifier's state before the jump
    /// covers every concrete state in every calling context (see [`crate::verifier::AnalysisFacts`]).
    Goto { taken: bool },
    /// Run the fall-through path (slots relative to the function start) unconditionally and keep its results
    /// only when the jump is not taken ([`super::if_conversion`]).
    Select { path: Vec<usize> },
    /// Compare and branch with the jump's target laid out next: the comparison is negated and branches to the
    /// fall-through slot ([`super::latch_copy::rotated_header_jumps`]).
    BranchTargetNext,
}

/// A `bpf_map_lookup_elem` lowered without the helper (contract §5.2): `key = *(u32 *)r2;
/// r0 = key < max_entries ? map_data[map].array_data + key * value_size : 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayLookup {
    /// Module map index (`runtime_context->map_data[map]`).
    pub map: usize,
    pub max_entries: u32,
    pub value_size: u32,
}

/// What the pre-passes decided for one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionPlan {
    /// The function never writes memory, calls or loops, so its loads may be placed at their uses.
    pub movable_loads: bool,
    /// The function loops, so its returning blocks (`exit`) are laid out after all its other code (Cranelift's cold
    /// blocks). A return runs once per call and a loop once per iteration: with the return block in its reverse
    /// post-order place, the edges into it — which carry the move of `r0` into `rax` whenever `r0` lives elsewhere
    /// in the loop — sat right after each loop exit branch, so every iteration jumped over them (one taken branch
    /// per loop exit test). As cold code those edges go out of line and each exit test falls through while looping.
    pub cold_returns: bool,
    /// Offsets from `r10` of the stack slots kept in SSA variables.
    pub promoted_slots: BTreeSet<i16>,
    /// Conditional jumps (absolute slot) not lowered as a plain [`JumpLowering::Branch`].
    jumps: BTreeMap<usize, JumpLowering>,
    /// Slots (absolute) of zero-extension idioms the verifier proved leave their register unchanged.
    omitted: BTreeSet<usize>,
    /// The constants registers hold on entry to each block (absolute leader slot) that some path reaches.
    block_constants: BTreeMap<usize, ConstantRegisters>,
    /// Helper-call slots (absolute) lowered as inline array lookups.
    array_lookups: BTreeMap<usize, ArrayLookup>,
    /// Conditional jumps (absolute slot) whose taken side enters a copy of the loop latch they jump to.
    latch_copies: BTreeMap<usize, LatchCopy>,
    /// Short loop latches that a `goto`, fall-through or if-converted jump into them copies: first slot → slot of the
    /// closing conditional jump (absolute).
    latches: BTreeMap<usize, usize>,
}

impl FunctionPlan {
    /// Runs the pre-passes over function `index` of the verified program, for a runtime that lays `map_data` out as
    /// `map_data` says.
    pub fn new(verified: &Verified, index: usize, map_data: MapDataLayout) -> FunctionPlan {
        let function = &verified.program().functions[index];
        let instructions = &verified.program().instructions[function.start..function.end];
        let shape = function_shape(instructions);
        let promoted_slots = promotable_slots(instructions);
        let decide = |pc: usize| verified.branch_decision(pc);
        let mut jumps = plan_jumps(instructions, function.start, &promoted_slots, decide);
        let omitted = omitted_zero_extensions(instructions, function.start, |pc| {
            (verified.is_redundant_zero_extension(pc), verified.control_flow().is_block_leader(pc))
        });
        let is_leader = |pc| verified.control_flow().is_block_leader(pc);
        let block_constants = block_entry_constants(instructions, function.start, is_leader);
        let latches = latch_copies(instructions, function.start, is_leader, |pc| !jumps.contains_key(&pc));
        let loop_heads = verified.control_flow().loop_heads();
        let rotated = rotated_header_jumps(
            instructions,
            function.start,
            is_leader,
            |pc| loop_heads.contains(&pc),
            |pc| latches.blocks.contains_key(&pc),
            |pc| jumps.get(&pc).cloned(),
        );
        jumps.extend(rotated.into_iter().map(|pc| (pc, JumpLowering::BranchTargetNext)));
        let array_lookups = if map_data.has_array_data() {
            array_lookups(function.start..function.end, &verified.module().maps, |pc| verified.array_map_lookup(pc))
        } else {
            BTreeMap::new()
        };
        FunctionPlan {
            movable_loads: !shape.writes_or_calls && !shape.loops,
            cold_returns: shape.loops,
            promoted_slots,
            jumps,
            omitted,
            block_constants,
            array_lookups,
            latch_copies: latches.skips,
            latches: latches.blocks,
        }
    }

    /// The loop latch copy that the taken side of the conditional jump at (absolute) `slot` enters, if any.
    pub fn latch_copy(&self, slot: usize) -> Option<LatchCopy> {
        self.latch_copies.get(&slot).copied()
    }

    /// When the block starting at (absolute) `leader` is a short loop latch, the slot of its closing conditional jump:
    /// a `goto`, fall-through or if-converted jump into it runs a copy of it instead ([`super::latch_copy`]).
    pub fn latch_at(&self, leader: usize) -> Option<usize> {
        self.latches.get(&leader).copied()
    }

    /// The latch copies, by the absolute slot of the conditional jump whose taken side enters them.
    pub fn latch_copies(&self) -> impl Iterator<Item = (usize, LatchCopy)> + '_ {
        self.latch_copies.iter().map(|(&slot, &copy)| (slot, copy))
    }

    /// The registers known to hold one constant whenever the block starting at (absolute) `leader` is entered.
    pub fn constants_at(&self, leader: usize) -> ConstantRegisters {
        self.block_constants.get(&leader).cloned().unwrap_or_default()
    }

    /// The inline lookup that replaces the helper call at (absolute) `slot`, if any.
    pub fn array_lookup(&self, slot: usize) -> Option<ArrayLookup> {
        self.array_lookups.get(&slot).copied()
    }

    /// Whether the instruction at (absolute) `slot` is left out: it is part of a zero-extension idiom that leaves
    /// its register unchanged in every execution.
    pub fn is_omitted(&self, slot: usize) -> bool {
        self.omitted.contains(&slot)
    }

    /// How the conditional jump at (absolute) `slot` is lowered.
    pub fn jump(&self, slot: usize) -> &JumpLowering {
        self.jumps.get(&slot).unwrap_or(&JumpLowering::Branch)
    }
}

/// The lowering of every conditional jump of one function (`instructions`, whose first slot is `start`) that is
/// not a plain branch: proven directions first, then if-conversion.
fn plan_jumps(
    instructions: &[Instruction],
    start: usize,
    promoted_slots: &BTreeSet<i16>,
    decide: impl Fn(usize) -> BranchDecision,
) -> BTreeMap<usize, JumpLowering> {
    let mut jumps = BTreeMap::new();
    for (at, insn) in instructions.iter().enumerate() {
        if !matches!(insn, Instruction::JumpIf { .. }) {
            continue;
        }
        let lowering = match decide(start + at) {
            BranchDecision::AlwaysTaken => JumpLowering::Goto { taken: true },
            BranchDecision::NeverTaken => JumpLowering::Goto { taken: false },
            BranchDecision::Compare => match fall_through_path(instructions, at, |o| promoted_slots.contains(&o)) {
                Some(path) => JumpLowering::Select { path },
                None => continue,
            },
        };
        jumps.insert(start + at, lowering);
    }
    jumps
}

/// The slots of the zero-extension idioms of one function (`instructions`, first slot `start`) to leave out:
/// those the verifier proved leave their register unchanged (`fact(pc).0`, [`Verified::is_redundant_zero_extension`],
/// issue 16), as long as no jump enters the idiom after its first slot (`fact(pc).1`, a block leader): a path
/// entering at the right shift alone would need it.
fn omitted_zero_extensions(
    instructions: &[Instruction],
    start: usize,
    fact: impl Fn(usize) -> (bool, bool),
) -> BTreeSet<usize> {
    let mut omitted = BTreeSet::new();
    for at in 0..instructions.len() {
        let Some(idiom) = zero_extension_at(instructions, at) else { continue };
        let (redundant, _) = fact(start + at);
        if redundant && (1..idiom.slots).all(|k| !fact(start + at + k).1) {
            omitted.extend((0..idiom.slots).map(|k| start + at + k));
        }
    }
    omitted
}

/// The registers that hold the same constant on every path into each block of one function (`instructions`, first
/// slot `start`; `is_leader` says which absolute slots start blocks), keyed by absolute leader slot: forward constant
/// propagation over the function's control flow, with the transfer function the translation itself applies inside a
/// block ([`ConstantRegisters::update`], the interpreter's RFC 9669 §4.1 semantics). Where paths join, a register
/// keeps its constant only if every path brings the same one ([`ConstantRegisters::meet`]). The function start
/// knows no register (arguments, and a caller's registers for a subprogram), calls forget r0–r5 (RFC 9669 §2.4),
/// and every conditional jump counts both ways, so a fact holds in every execution. Blocks no path reaches get no
/// entry (and so know nothing). clang keeps a constant it reuses in a register set once before a loop (`sieve`'s
/// `r3 = 0` stored in its marking loop): inside the loop only this pass knows it is a constant.
pub fn block_entry_constants(
    instructions: &[Instruction],
    start: usize,
    is_leader: impl Fn(usize) -> bool,
) -> BTreeMap<usize, ConstantRegisters> {
    let n = instructions.len();
    let mut entry: BTreeMap<usize, ConstantRegisters> = BTreeMap::new();
    if n == 0 {
        return entry;
    }
    entry.insert(0, ConstantRegisters::default());
    let mut work = vec![0usize];
    let in_function = |slot: Option<i64>| slot.and_then(|s| usize::try_from(s).ok()).filter(|&s| s < n);
    while let Some(leader) = work.pop() {
        let mut state = entry[&leader].clone();
        let mut at = leader;
        let successors: Vec<usize> = loop {
            let insn = &instructions[at];
            state.update(insn);
            let next = at + 1;
            match insn {
                Instruction::Exit => break Vec::new(),
                Instruction::Jump { .. } => break in_function(insn.jump_target(at)).into_iter().collect(),
                Instruction::JumpIf { .. } => {
                    break in_function(insn.jump_target(at)).into_iter().chain(in_function(Some(next as i64))).collect()
                }
                _ if next >= n => break Vec::new(),
                _ if is_leader(start + next) => break vec![next],
                _ => at = next,
            }
        };
        for successor in successors {
            match entry.get_mut(&successor) {
                Some(known) => {
                    let before = known.clone();
                    known.meet(&state);
                    if *known != before {
                        work.push(successor);
                    }
                }
                None => {
                    entry.insert(successor, state.clone());
                    work.push(successor);
                }
            }
        }
    }
    entry.into_iter().map(|(slot, constants)| (start + slot, constants)).collect()
}

/// The `bpf_map_lookup_elem` calls in `slots` to lower inline: those whose map the verifier proved (`proven(pc)`,
/// [`Verified::array_map_lookup`]: one plain `ARRAY` map in every execution). Only for runtimes that fill
/// `map_data[m].array_data` (module version 1.4.0 or later, contract §2.2); the caller checks that.
fn array_lookups(
    slots: std::ops::Range<usize>,
    maps: &[MapDefinition],
    proven: impl Fn(usize) -> Option<usize>,
) -> BTreeMap<usize, ArrayLookup> {
    slots
        .filter_map(|pc| {
            let map = proven(pc)?;
            let d = maps.get(map)?;
            Some((pc, ArrayLookup { map, max_entries: d.max_entries, value_size: d.value_size }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{AluOp, JumpCond, MemSize, Operand, Reg, Width};

    fn jump_if(offset: i16) -> Instruction {
        Instruction::JumpIf { width: Width::W64, cond: JumpCond::Eq, dst: Reg::R1, src: Operand::Imm(0), offset }
    }
    fn add(dst: Reg, imm: i32) -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(imm) }
    }

    #[test]
    fn a_proven_direction_wins_over_if_conversion_and_unproven_jumps_stay_branches() {
        // 0: if r1 == 0 goto 2; 1: r0 += 1; 2: if r1 == 0 goto 4; 3: r0 += 1; 4: exit  (function at slot 10)
        let program = [jump_if(1), add(Reg::R0, 1), jump_if(1), add(Reg::R0, 1), Instruction::Exit];
        let decide = |pc| if pc == 10 { BranchDecision::NeverTaken } else { BranchDecision::Compare };
        let jumps = plan_jumps(&program, 10, &BTreeSet::new(), decide);
        assert_eq!(jumps.get(&10), Some(&JumpLowering::Goto { taken: false }));
        assert_eq!(jumps.get(&12), Some(&JumpLowering::Select { path: vec![3] }));

        let unproven = plan_jumps(&program, 10, &BTreeSet::new(), |_| BranchDecision::Compare);
        assert_eq!(unproven.get(&10), Some(&JumpLowering::Select { path: vec![1] }));
        let call = [jump_if(1), Instruction::CallHelper { id: 1 }, Instruction::Exit];
        assert!(plan_jumps(&call, 0, &BTreeSet::new(), |_| BranchDecision::Compare).is_empty());
    }

    #[test]
    fn a_constant_reaches_a_block_only_when_every_path_into_it_brings_the_same_one() {
        let mov = |dst, imm| Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(imm) };
        let loop_back = Instruction::JumpIf {
            width: Width::W64,
            cond: JumpCond::Ne,
            dst: Reg::R2,
            src: Operand::Reg(Reg::R5),
            offset: -3,
        };
        // 0: r3 = 0; 1: r4 = 7; 2: if r1 == 0 goto 4; 3: r4 = 8;
        // 4: *(u8 *)(r2 + 0) = r3; 5: r2 += 1; 6: if r2 != r5 goto 4; 7: r3 += 1; 8: exit  (function at slot 30)
        let program = [
            mov(Reg::R3, 0),
            mov(Reg::R4, 7),
            jump_if(1),
            mov(Reg::R4, 8),
            Instruction::Store { size: MemSize::B, dst: Reg::R2, offset: 0, src: Operand::Reg(Reg::R3) },
            add(Reg::R2, 1),
            loop_back,
            add(Reg::R3, 1),
            Instruction::Exit,
        ];
        let leaders = [30, 33, 34, 37];
        let constants = block_entry_constants(&program, 30, |pc| leaders.contains(&pc));
        let known = |slot: usize, reg: Reg| constants[&slot].operand(Operand::Reg(reg));
        // The loop head: r3 is 0 on entry and around the back edge; r4 is 7 on one path and 8 on the other; r2
        // changes in the loop; r1 and r5 are never known.
        assert_eq!(known(34, Reg::R3), Some(0));
        assert_eq!(known(34, Reg::R4), None);
        assert_eq!(known(34, Reg::R2), None);
        assert_eq!(known(33, Reg::R4), Some(7));
        assert_eq!(known(37, Reg::R3), Some(0));
        for reg in [Reg::R1, Reg::R5] {
            assert!(leaders.iter().all(|&l| known(l, reg).is_none()), "{reg:?}");
        }
        // Nothing is known at the function start, nor in a block no path reaches.
        assert_eq!(constants[&30], ConstantRegisters::default());
        let dead = [Instruction::Exit, mov(Reg::R3, 1), Instruction::Exit];
        let constants = block_entry_constants(&dead, 0, |pc| pc < 2);
        assert!(!constants.contains_key(&1));
    }

    #[test]
    fn proven_array_lookups_are_planned_with_their_maps_bounds_and_value_size() {
        let map = |max_entries, value_size| MapDefinition {
            name: "m".into(),
            map_type: crate::program::MapType::ARRAY,
            key_size: 4,
            value_size,
            max_entries,
            inner_map_index: None,
            pinning: crate::program::Pinning::None,
            id: 0,
            inner_id: 0,
        };
        let maps = [map(4, 8), map(7, 12)];
        let planned = array_lookups(10..20, &maps, |pc| match pc {
            12 => Some(1),
            15 => Some(0),
            _ => None,
        });
        let lookup = |map, max_entries, value_size| ArrayLookup { map, max_entries, value_size };
        assert_eq!(planned, BTreeMap::from([(12, lookup(1, 7, 12)), (15, lookup(0, 4, 8))]));
        assert!(array_lookups(10..20, &maps, |_| None).is_empty(), "nothing proven, nothing inlined");
    }

    #[test]
    fn proven_zero_extensions_are_omitted_unless_a_jump_enters_them_halfway() {
        let shift = |op| Instruction::Alu { width: Width::W64, op, dst: Reg::R2, src: Operand::Imm(32) };
        let mov32 = Instruction::Alu { width: Width::W32, op: AluOp::Mov, dst: Reg::R3, src: Operand::Reg(Reg::R3) };
        // 20: r2 <<= 32; 21: r2 >>= 32; 22: w3 = w3; 23: r2 <<= 32; 24: r2 >>= 32; 25: exit  (function at slot 20)
        let program =
            [shift(AluOp::Lsh), shift(AluOp::Rsh), mov32, shift(AluOp::Lsh), shift(AluOp::Rsh), Instruction::Exit];
        let proven = [20, 22, 23];
        let omitted = omitted_zero_extensions(&program, 20, |pc| (proven.contains(&pc), pc == 24));
        // 23-24 is proven but a jump lands on 24; nothing unproven is omitted.
        assert_eq!(omitted, BTreeSet::from([20, 21, 22]));
        assert!(omitted_zero_extensions(&program, 20, |_| (false, false)).is_empty());
    }
}
