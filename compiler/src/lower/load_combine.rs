//! Combining byte loads that assemble one wider value into a single load.
//!
//! eBPF has no unaligned loads, so clang builds a big-endian field of a packet (`be16(p)`, `be32(p)`) from byte
//! loads, shifts and ors: `r1 = *(u8 *)(r6 + 12); r1 <<= 24; r5 = *(u8 *)(r6 + 13); r5 <<= 16; r5 |= r1; …`.
//! x64 and ARM64 load unaligned data natively, and a native compiler turns the same C into one load and a byte
//! swap. This module recognises the pattern so the translation can do the same.
//!
//! [`ByteAssemblies`] follows, through one block, what each register is known to hold: for each of its eight byte
//! lanes, either zero or the byte of memory at `base + offset`, where `base` is one value of an address register
//! (the SSA value it had at the load, so a later change of the register does not matter). Unsigned loads start
//! such a description; shifts by whole bytes, `or` of two descriptions with the same base and disjoint lanes, `and`
//! with a byte mask and moves keep it; every other write of the register forgets it. Anything that may write
//! memory (a store, an atomic, a call) forgets everything, so every byte a description names still holds, when the
//! `or` completes it, the value the original byte load read.
//!
//! When an `or` leaves a register holding `n` ∈ {2, 4, 8} consecutive bytes of memory in its low lanes, in
//! ascending (little-endian) or descending (big-endian) order, the register equals one `n`-byte load (byte-swapped
//! for big-endian) zero-extended to 64 bits: [`Combination::Load`]. Each of those bytes was loaded by the program
//! on the same path, so the verifier proved each one accessible, and the wide access touches exactly those bytes.
//! An `and` whose mask only clears lanes known to be zero changes nothing: [`Combination::Redundant`].
//!
//! The wide load is unaligned in general. That is only valid for ordinary, cacheable memory — the context, packets,
//! map values and the stack, which is all an eBPF program can reach — not for device memory, where an unaligned or
//! wider access may fault (ARM64) or have side effects.
//!
//! The translation still emits the original byte loads; those whose values end up unused are removed afterwards
//! by [`remove_unused_loads`] (Cranelift keeps every load to the end, because in general a load may fault).
//!
//! The tracker is generic over the base so that it can be tested without Cranelift values.

use cranelift_codegen::entity::SecondaryMap;
use cranelift_codegen::ir::{DataFlowGraph, Function, Inst, InstructionData, Value, ValueDef};

use crate::isa::{AluOp, Instruction, MemSize, Operand, Reg, Width};

/// What a register holds, as bytes of memory: lane `i` (bits `8i..8i + 8`) is the byte at `base + lanes[i]`, or zero
/// when `lanes[i]` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AssembledBytes<B> {
    base: B,
    lanes: [Option<i16>; 8],
}

impl<B: Copy + Eq> AssembledBytes<B> {
    /// The value of an unsigned `bytes`-byte load from `base + offset`.
    fn load(base: B, offset: i16, bytes: usize) -> Option<Self> {
        let mut lanes = [None; 8];
        for (i, lane) in lanes.iter_mut().enumerate().take(bytes) {
            *lane = Some(offset.checked_add(i as i16)?);
        }
        Some(AssembledBytes { base, lanes })
    }

    /// The value truncated to 32 bits and zero-extended, as every ALU32 result is (RFC 9669 §4.1).
    fn low_half(mut self) -> Self {
        self.lanes[4..].fill(None);
        self
    }

    fn shifted_left(self, bytes: usize) -> Self {
        let mut lanes = [None; 8];
        for (i, lane) in lanes.iter_mut().enumerate().skip(bytes) {
            *lane = self.lanes[i - bytes];
        }
        AssembledBytes { lanes, ..self }
    }

    fn shifted_right(self, bytes: usize) -> Self {
        let mut lanes = [None; 8];
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = self.lanes.get(i + bytes).copied().flatten();
        }
        AssembledBytes { lanes, ..self }
    }

    /// `self | other`, when both read the same base and no lane is set in both (then `or` only places bytes).
    fn union(self, other: Self) -> Option<Self> {
        if self.base != other.base {
            return None;
        }
        let mut lanes = self.lanes;
        for (lane, theirs) in lanes.iter_mut().zip(other.lanes) {
            match (*lane, theirs) {
                (Some(_), Some(_)) => return None,
                (None, theirs) => *lane = theirs,
                (Some(_), None) => {}
            }
        }
        Some(AssembledBytes { lanes, ..self })
    }

    /// `self & mask` when every byte of the mask is 0x00 or 0xff.
    fn masked(self, mask: u64) -> Option<Self> {
        let mut lanes = self.lanes;
        for (lane, byte) in lanes.iter_mut().zip(mask.to_le_bytes()) {
            match byte {
                0x00 => *lane = None,
                0xff => {}
                _ => return None,
            }
        }
        Some(AssembledBytes { lanes, ..self })
    }

    /// The single load this value equals, if any.
    fn as_load(&self) -> Option<CombinedLoad<B>> {
        let n = self.lanes.iter().take_while(|l| l.is_some()).count();
        let size = match n {
            2 => MemSize::H,
            4 => MemSize::W,
            8 => MemSize::DW,
            _ => return None,
        };
        if self.lanes[n..].iter().any(Option::is_some) {
            return None;
        }
        let offsets: Vec<i32> = self.lanes[..n].iter().map(|l| i32::from(l.expect("counted"))).collect();
        let ascending = offsets.windows(2).all(|w| w[1] == w[0] + 1);
        let descending = offsets.windows(2).all(|w| w[1] == w[0] - 1);
        let (offset, byte_swapped) = match (ascending, descending) {
            (true, _) => (offsets[0], false),
            (_, true) => (offsets[n - 1], true),
            _ => return None,
        };
        Some(CombinedLoad { base: self.base, offset: offset as i16, size, byte_swapped })
    }
}

/// One load that replaces a register assembled from narrower loads: `size` bytes at `base + offset`, byte-swapped
/// when the bytes were assembled in big-endian order, zero-extended to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CombinedLoad<B> {
    pub base: B,
    pub offset: i16,
    pub size: MemSize,
    pub byte_swapped: bool,
}

/// What the translation should do about one instruction, besides translating it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combination<B> {
    /// Nothing special.
    None,
    /// The instruction leaves its destination unchanged; it need not be translated.
    Redundant,
    /// After the instruction, `dst` equals `load`.
    Load { dst: Reg, load: CombinedLoad<B> },
}

/// The byte-level contents of every register, as far as known at the current instruction of a block.
#[derive(Clone, Debug)]
pub struct ByteAssemblies<B> {
    registers: [Option<AssembledBytes<B>>; Reg::COUNT],
}

impl<B: Copy> Default for ByteAssemblies<B> {
    fn default() -> Self {
        ByteAssemblies { registers: [None; Reg::COUNT] }
    }
}

impl<B: Copy + Eq> ByteAssemblies<B> {
    /// Forgets everything: at a block start, where other paths may join.
    pub fn clear(&mut self) {
        self.registers = [None; Reg::COUNT];
    }

    /// Updates the descriptions for the effect of `insn`. `value_of` gives a register's value before `insn` (the
    /// base of a load).
    pub fn update(&mut self, insn: &Instruction, value_of: impl FnOnce(Reg) -> B) -> Combination<B> {
        if insn.may_write_memory() {
            // These also write registers: r0–r5 after a call, r0 or `src` after an atomic.
            self.clear();
            return Combination::None;
        }
        match *insn {
            Instruction::Load { size, sign_extend: false, dst, src, offset } if size != MemSize::DW => {
                self.registers[dst.index()] = AssembledBytes::load(value_of(src), offset, size.bytes() as usize);
                Combination::None
            }
            Instruction::Alu { width, op, dst, src } => self.alu(width, op, dst, src),
            Instruction::Load { dst, .. } | Instruction::Endian { dst, .. } | Instruction::LoadImm64 { dst, .. } => {
                self.registers[dst.index()] = None;
                Combination::None
            }
            Instruction::LoadImm64Continuation
            | Instruction::Jump { .. }
            | Instruction::JumpIf { .. }
            | Instruction::Exit => Combination::None,
            Instruction::Store { .. }
            | Instruction::Atomic { .. }
            | Instruction::CallHelper { .. }
            | Instruction::CallLocal { .. }
            | Instruction::CallBtf { .. }
            | Instruction::CallReg { .. }
            | Instruction::LegacyPacketLoad { .. } => {
                unreachable!("instructions that may write memory are handled above")
            }
        }
    }

    fn alu(&mut self, width: Width, op: AluOp, dst: Reg, src: Operand) -> Combination<B> {
        let narrow = |a: AssembledBytes<B>| if width == Width::W32 { a.low_half() } else { a };
        let before = self.registers[dst.index()];
        let count_mask = if width == Width::W32 { 31 } else { 63 };
        let after = match (op, src) {
            (AluOp::Mov, Operand::Reg(s)) => self.registers[s.index()].map(narrow),
            (AluOp::Lsh, Operand::Imm(k)) if (k & count_mask) % 8 == 0 => {
                before.map(|a| narrow(narrow(a).shifted_left((k & count_mask) as usize / 8)))
            }
            (AluOp::Rsh, Operand::Imm(k)) if (k & count_mask) % 8 == 0 => {
                before.map(|a| narrow(a).shifted_right((k & count_mask) as usize / 8))
            }
            (AluOp::Or, Operand::Reg(s)) => match (before, self.registers[s.index()]) {
                (Some(d), Some(s)) => narrow(d).union(narrow(s)),
                _ => None,
            },
            (AluOp::And, Operand::Imm(m)) => {
                // 64-bit operations sign-extend the immediate; 32-bit ones use it as is and zero-extend the result.
                let mask = if width == Width::W32 { u64::from(m as u32) } else { m as i64 as u64 };
                before.and_then(|a| a.masked(mask))
            }
            _ => None,
        };
        self.registers[dst.index()] = after;
        match (op, after) {
            (AluOp::And, Some(a)) if Some(a) == before => Combination::Redundant,
            (AluOp::Or, Some(a)) => a.as_load().map_or(Combination::None, |load| Combination::Load { dst, load }),
            _ => Combination::None,
        }
    }
}

/// Calls `f` with every value `inst` uses, as [`cranelift_codegen::ir::DataFlowGraph::inst_values`] lists them
/// (arguments, block-call arguments, exception-table contexts), each resolved to the value an alias stands for.
/// Spelled out over the slices rather than through `inst_values`' chained iterators: counting the uses of a large
/// function was most of [`remove_unused_loads`]' cost.
fn for_each_use(dfg: &DataFlowGraph, inst: Inst, mut f: impl FnMut(Value)) {
    let data = &dfg.insts[inst];
    if data.exception_table().is_some() {
        // A `try_call` (the translation emits none): only `inst_values` can see its exception-table contexts.
        dfg.inst_values(inst).for_each(|v| f(dfg.resolve_aliases(v)));
        return;
    }
    for &v in dfg.inst_args(inst) {
        f(dfg.resolve_aliases(v));
    }
    for call in data.branch_destination(&dfg.jump_tables, &dfg.exception_tables) {
        for v in call.args(&dfg.value_lists).filter_map(|arg| arg.as_value()) {
            f(dfg.resolve_aliases(v));
        }
    }
}

/// How many times each value is used by the instructions in `func`'s layout (block-call arguments included), counted
/// on the value an alias stands for.
pub fn value_use_counts(func: &Function) -> SecondaryMap<Value, u32> {
    let mut uses = SecondaryMap::<Value, u32>::with_capacity(func.dfg.num_values());
    // Sized once, so that counting never grows the map.
    uses.resize(func.dfg.num_values());
    for block in func.layout.blocks() {
        for inst in func.layout.block_insts(block) {
            for_each_use(&func.dfg, inst, |v| uses[v] += 1);
        }
    }
    uses
}

/// Removes loads whose results nothing uses, and the pure instructions that only fed unused values.
///
/// Only loads marked `notrap` are removed: every program load is (the verifier proved them safe), so this removes any
/// dead program load, among them the byte loads a [`CombinedLoad`] replaced. Cranelift never drops a load on its own
/// (a load may fault, and at `opt_level=none` nothing removes dead code before lowering).
pub fn remove_unused_loads(func: &mut Function) {
    // Uses are counted and followed on the values aliases stand for (`for_each_use`), so the aliases
    // cranelift-frontend may have left behind need no rewriting here (Cranelift resolves them itself before it
    // optimizes or lowers).
    let mut uses = value_use_counts(func);
    // An instruction goes when it is removable, still in the layout, and nothing uses its results.
    let dead = |func: &Function, uses: &SecondaryMap<Value, u32>, inst: Inst| {
        let results = func.dfg.inst_results(inst);
        !results.is_empty()
            && results.iter().all(|&r| uses[r] == 0)
            && func.layout.inst_block(inst).is_some()
            && removable(func, inst)
    };
    // Walk the layout backwards so that an unused value's operands are counted down before their definitions are
    // visited; a definition already passed (a chain that crosses blocks in layout order) is removed as soon as its
    // last use goes. SSA values form no cycle outside block parameters, which are never removed, so the instructions
    // removed are exactly those whose results only feed removed instructions, whatever the order.
    let (mut now_dead, mut freed) = (Vec::new(), Vec::new());
    let mut block = func.layout.last_block();
    while let Some(b) = block {
        block = func.layout.prev_block(b);
        let mut next = func.layout.last_inst(b);
        while let Some(inst) = next {
            next = func.layout.prev_inst(inst);
            if !dead(func, &uses, inst) {
                continue;
            }
            now_dead.push(inst);
            while let Some(inst) = now_dead.pop() {
                if !dead(func, &uses, inst) {
                    continue; // Removed already (named by two of its uses' removals).
                }
                for_each_use(&func.dfg, inst, |v| {
                    uses[v] -= 1;
                    if uses[v] == 0 {
                        freed.push(v);
                    }
                });
                for v in freed.drain(..) {
                    if let ValueDef::Result(def, _) = func.dfg.value_def(v) {
                        now_dead.push(def);
                    }
                }
                // The walk goes on from the instruction before this one, so never from one removed here.
                if next == Some(inst) {
                    next = func.layout.prev_inst(inst);
                }
                func.layout.remove_inst(inst);
            }
        }
    }
}

/// Whether `inst` may be removed when its results are unused: a `notrap` load, or an instruction without effects.
fn removable(func: &Function, inst: Inst) -> bool {
    match func.dfg.insts[inst] {
        InstructionData::Load { flags, .. } => func.dfg.mem_flags[flags].notrap(),
        ref data => {
            let op = data.opcode();
            !(op.is_call()
                || op.is_branch()
                || op.is_terminator()
                || op.is_return()
                || op.can_trap()
                || op.other_side_effects()
                || op.can_store()
                || op.can_load())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load8(dst: Reg, src: Reg, offset: i16) -> Instruction {
        Instruction::Load { size: MemSize::B, sign_extend: false, dst, src, offset }
    }
    fn alu(width: Width, op: AluOp, dst: Reg, src: Operand) -> Instruction {
        Instruction::Alu { width, op, dst, src }
    }

    /// Runs `insns` with every register's value being its own number, and returns the combinations.
    fn run(insns: &[Instruction]) -> Vec<Combination<u8>> {
        let mut assemblies = ByteAssemblies::default();
        insns.iter().map(|i| assemblies.update(i, |r| r.index() as u8)).collect()
    }

    #[test]
    fn clangs_be32_sequence_becomes_one_byte_swapped_load() {
        // From `parse`: key = be32(q + 12).
        let (r1, r5, r6) = (Reg::R1, Reg::R5, Reg::R6);
        let insns = [
            load8(r1, r6, 12),
            alu(Width::W64, AluOp::Lsh, r1, Operand::Imm(24)),
            load8(r5, r6, 13),
            alu(Width::W64, AluOp::Lsh, r5, Operand::Imm(16)),
            alu(Width::W64, AluOp::Or, r5, Operand::Reg(r1)),
            load8(r1, r6, 14),
            alu(Width::W64, AluOp::Lsh, r1, Operand::Imm(8)),
            alu(Width::W64, AluOp::Or, r5, Operand::Reg(r1)),
            load8(r1, r6, 15),
            alu(Width::W64, AluOp::Or, r5, Operand::Reg(r1)),
        ];
        let out = run(&insns);
        assert!(out[..9].iter().all(|c| *c == Combination::None));
        assert_eq!(
            out[9],
            Combination::Load {
                dst: r5,
                load: CombinedLoad { base: 6, offset: 12, size: MemSize::W, byte_swapped: true }
            }
        );
    }

    #[test]
    fn little_endian_assembly_becomes_a_plain_load_and_a_redundant_mask_is_reported() {
        let (r2, r3, r4) = (Reg::R2, Reg::R3, Reg::R4);
        let insns = [
            load8(r2, r4, 7),
            load8(r3, r4, 8),
            alu(Width::W32, AluOp::Lsh, r3, Operand::Imm(8)),
            alu(Width::W32, AluOp::Or, r3, Operand::Reg(r2)),
            alu(Width::W64, AluOp::And, r3, Operand::Imm(0xffff)),
        ];
        let out = run(&insns);
        assert_eq!(
            out[3],
            Combination::Load {
                dst: r3,
                load: CombinedLoad { base: 4, offset: 7, size: MemSize::H, byte_swapped: false }
            }
        );
        assert_eq!(out[4], Combination::Redundant);
    }

    #[test]
    fn a_store_or_a_changed_base_prevents_combining() {
        let (r1, r2, r6) = (Reg::R1, Reg::R2, Reg::R6);
        let store = Instruction::Store { size: MemSize::B, dst: r6, offset: 1, src: Operand::Imm(0) };
        let with_store = [
            load8(r1, r6, 0),
            alu(Width::W64, AluOp::Lsh, r1, Operand::Imm(8)),
            store,
            load8(r2, r6, 1),
            alu(Width::W64, AluOp::Or, r1, Operand::Reg(r2)),
        ];
        assert_eq!(run(&with_store)[4], Combination::None);

        let mut assemblies = ByteAssemblies::default();
        assemblies.update(&load8(r1, r6, 0), |_| 1u8);
        assemblies.update(&alu(Width::W64, AluOp::Lsh, r1, Operand::Imm(8)), |_| 1);
        assemblies.update(&load8(r2, r6, 1), |_| 2); // r6 changed in between: another base value.
        let or = assemblies.update(&alu(Width::W64, AluOp::Or, r1, Operand::Reg(r2)), |_| 0);
        assert_eq!(or, Combination::None);
    }

    #[test]
    fn overlapping_shuffled_or_truncated_bytes_are_not_combined() {
        let (r1, r2, r6) = (Reg::R1, Reg::R2, Reg::R6);
        // The same byte twice: `or` of overlapping lanes is not a placement.
        let overlapping = [load8(r1, r6, 0), load8(r2, r6, 1), alu(Width::W64, AluOp::Or, r1, Operand::Reg(r2))];
        assert_eq!(run(&overlapping)[2], Combination::None);
        // Bytes 0 and 2: not consecutive.
        let gap = [
            load8(r1, r6, 0),
            load8(r2, r6, 2),
            alu(Width::W64, AluOp::Lsh, r2, Operand::Imm(8)),
            alu(Width::W64, AluOp::Or, r1, Operand::Reg(r2)),
        ];
        assert_eq!(run(&gap)[3], Combination::None);
        // A 32-bit shift by 32 is a shift by 0 (RFC 9669 masks the count); by 24 pushes the byte into lane 3.
        let masked_count = [
            load8(r1, r6, 1),
            alu(Width::W32, AluOp::Lsh, r1, Operand::Imm(40)),
            load8(r2, r6, 0),
            alu(Width::W64, AluOp::Or, r1, Operand::Reg(r2)),
        ];
        assert_eq!(
            run(&masked_count)[3],
            Combination::Load {
                dst: r1,
                load: CombinedLoad { base: 6, offset: 0, size: MemSize::H, byte_swapped: false }
            }
        );
        let out_of_range = [
            load8(r1, r6, 1),
            alu(Width::W64, AluOp::Lsh, r1, Operand::Imm(32)),
            alu(Width::W32, AluOp::Mov, r1, Operand::Reg(r1)),
            load8(r2, r6, 0),
            alu(Width::W64, AluOp::Or, r1, Operand::Reg(r2)),
        ];
        assert_eq!(run(&out_of_range)[4], Combination::None);
    }
}
