//! Coalescing of constant stores to the stack frame.
//!
//! clang's BPF backend cannot emit `memset`, and without unaligned access it initialises stack arrays with long runs
//! of byte stores (`*(u8 *)(r10 - 10) = r4`, … — `sieve` has 480 of them). Native code writes the same bytes with
//! a few wide stores. Within a basic block, a store of a compile-time constant to `r10 + offset` is recorded in a
//! byte map instead of being emitted; the map is written out as naturally aligned 8/4/2/1-byte stores just before
//! the next instruction that touches memory or control flow (any load, any other store, an atomic, a call, a jump,
//! an exit) and at the end of the block. Register-only instructions (ALU, `lddw`, byte swaps) between the stores
//! are emitted in place; they cannot observe memory, so moving the stores past them does not change the program
//! (RFC 9669 gives eBPF no concurrency on the stack: the frame is private to the running program).
//!
//! Register constants are tracked through the block ([`RegisterConstants`]) so that `r4 = 0x0101010101010101 >> 32;
//! *(u8 *)(r10 - 10) = r4` is recognised as storing the byte 0x01.

use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

use crate::isa::{AluOp, Imm64Kind, Instruction, MemSize, Operand, Reg, Width};

/// Bytes of one stack frame (RFC 9669 / contract §5.1); stores outside `[r10 - 512, r10)` are not buffered.
const FRAME: i32 = 512;

/// Compile-time values of registers within the current basic block.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterConstants([Option<u64>; Reg::COUNT]);

impl RegisterConstants {
    /// Forgets everything (at a block start: values may arrive from several predecessors).
    pub fn clear(&mut self) {
        self.0 = [None; Reg::COUNT];
    }

    /// The value `src` has, if known.
    pub fn operand(&self, src: Operand) -> Option<u64> {
        match src {
            Operand::Imm(i) => Some(i as i64 as u64),
            Operand::Reg(r) => self.0[r.index()],
        }
    }

    /// Updates the map after `insn` has executed.
    pub fn update(&mut self, insn: &Instruction) {
        match *insn {
            Instruction::Alu { width, op, dst, src } => {
                let d = self.0[dst.index()];
                let s = self.operand(src);
                self.0[dst.index()] = fold(width, op, d, s);
            }
            Instruction::LoadImm64 { dst, kind: Imm64Kind::Imm, imm, next_imm } => {
                self.0[dst.index()] = Some(Instruction::imm64(imm, next_imm));
            }
            Instruction::LoadImm64 { dst, .. } | Instruction::Load { dst, .. } | Instruction::Endian { dst, .. } => {
                self.0[dst.index()] = None;
            }
            Instruction::Atomic { .. } => {
                // The fetching forms write r0 or their source register.
                self.clear();
            }
            Instruction::CallHelper { .. }
            | Instruction::CallLocal { .. }
            | Instruction::CallBtf { .. }
            | Instruction::CallReg { .. } => {
                // r0 is the result; r1..r5 are clobbered by the calling convention.
                for r in 0..=5 {
                    self.0[r] = None;
                }
            }
            _ => {}
        }
    }
}

/// Evaluates an ALU instruction on known operands (RFC 9669 §4.1); `None` when an input is unknown or the operation
/// is not one this pass needs.
fn fold(width: Width, op: AluOp, d: Option<u64>, s: Option<u64>) -> Option<u64> {
    let s = s?;
    if op == AluOp::Mov {
        return Some(match width {
            Width::W64 => s,
            Width::W32 => s as u32 as u64,
        });
    }
    let d = d?;
    match width {
        Width::W64 => Some(match op {
            AluOp::Add => d.wrapping_add(s),
            AluOp::Sub => d.wrapping_sub(s),
            AluOp::Mul => d.wrapping_mul(s),
            AluOp::Or => d | s,
            AluOp::And => d & s,
            AluOp::Xor => d ^ s,
            AluOp::Lsh => d << (s & 63),
            AluOp::Rsh => d >> (s & 63),
            AluOp::Arsh => ((d as i64) >> (s & 63)) as u64,
            _ => return None,
        }),
        Width::W32 => {
            let (d, s) = (d as u32, s as u32);
            Some(u64::from(match op {
                AluOp::Add => d.wrapping_add(s),
                AluOp::Sub => d.wrapping_sub(s),
                AluOp::Mul => d.wrapping_mul(s),
                AluOp::Or => d | s,
                AluOp::And => d & s,
                AluOp::Xor => d ^ s,
                AluOp::Lsh => d << (s & 31),
                AluOp::Rsh => d >> (s & 31),
                AluOp::Arsh => ((d as i32) >> (s & 31)) as u32,
                _ => return None,
            }))
        }
    }
}

/// Whether an instruction only reads and writes registers, so buffered stack stores may be emitted after it.
pub fn is_register_only(insn: &Instruction) -> bool {
    // `lddw` of a map or global address reads the runtime context's tables, never the program's stack.
    matches!(
        insn,
        Instruction::Alu { .. }
            | Instruction::LoadImm64 { .. }
            | Instruction::LoadImm64Continuation
            | Instruction::Endian { .. }
    )
}

/// Buffered constant bytes of the current frame, indexed by `offset + 512`.
pub struct StackStoreBuffer {
    bytes: [Option<u8>; FRAME as usize],
    pending: bool,
}

impl Default for StackStoreBuffer {
    fn default() -> Self {
        StackStoreBuffer { bytes: [None; FRAME as usize], pending: false }
    }
}

impl StackStoreBuffer {
    /// Buffers `*(size *)(r10 + offset) = value` if it lies in the frame; returns whether it did.
    pub fn record(&mut self, offset: i16, size: MemSize, value: u64) -> bool {
        let start = i32::from(offset) + FRAME;
        let len = size.bytes() as i32;
        if start < 0 || start + len > FRAME {
            return false;
        }
        for (i, byte) in value.to_le_bytes().iter().take(len as usize).enumerate() {
            self.bytes[start as usize + i] = Some(*byte);
        }
        self.pending = true;
        true
    }

    /// Emits every buffered byte relative to `r10` with the widest naturally aligned stores that cover only
    /// buffered bytes, and empties the buffer.
    pub fn flush(&mut self, b: &mut FunctionBuilder, r10: Value, flags: MemFlagsData) {
        if !self.pending {
            return;
        }
        let mut at = 0usize;
        while at < FRAME as usize {
            // The widest store that starts here, is aligned to its size and covers only known bytes.
            let width = [8usize, 4, 2, 1].into_iter().find(|&w| {
                at.is_multiple_of(w) && at + w <= FRAME as usize && self.bytes[at..at + w].iter().all(Option::is_some)
            });
            let Some(width) = width.filter(|_| self.bytes[at].is_some()) else {
                at += 1;
                continue;
            };
            let mut le = [0u8; 8];
            for (i, byte) in self.bytes[at..at + width].iter().enumerate() {
                le[i] = byte.expect("checked above");
            }
            let value = u64::from_le_bytes(le);
            let offset = at as i32 - FRAME;
            match width {
                8 => {
                    let v = b.ins().iconst(types::I64, value as i64);
                    b.ins().store(flags, v, r10, offset);
                }
                4 => {
                    let v = b.ins().iconst(types::I32, value as u32 as i64);
                    b.ins().store(flags, v, r10, offset);
                }
                2 => {
                    let v = b.ins().iconst(types::I16, value as u16 as i64);
                    b.ins().store(flags, v, r10, offset);
                }
                _ => {
                    let v = b.ins().iconst(types::I8, value as u8 as i64);
                    b.ins().store(flags, v, r10, offset);
                }
            }
            at += width;
        }
        self.bytes = [None; FRAME as usize];
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_folded_through_the_block_as_rfc_9669_defines() {
        let mut c = RegisterConstants::default();
        c.update(&Instruction::LoadImm64 {
            dst: Reg::R4,
            kind: Imm64Kind::Imm,
            imm: 0x0101_0101,
            next_imm: 0x0101_0101,
        });
        c.update(&Instruction::Alu { width: Width::W64, op: AluOp::Rsh, dst: Reg::R4, src: Operand::Imm(32) });
        assert_eq!(c.operand(Operand::Reg(Reg::R4)), Some(0x0101_0101));
        // 32-bit operations zero-extend.
        c.update(&Instruction::Alu { width: Width::W32, op: AluOp::Sub, dst: Reg::R4, src: Operand::Imm(0x0101_0102) });
        assert_eq!(c.operand(Operand::Reg(Reg::R4)), Some(0xffff_ffff));
        // A load makes the register unknown; a call clobbers r0..r5.
        c.update(&Instruction::Load { size: MemSize::B, sign_extend: false, dst: Reg::R4, src: Reg::R1, offset: 0 });
        assert_eq!(c.operand(Operand::Reg(Reg::R4)), None);
        c.update(&Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R3, src: Operand::Imm(-1) });
        assert_eq!(c.operand(Operand::Reg(Reg::R3)), Some(u64::MAX));
        c.update(&Instruction::CallHelper { id: 1 });
        assert_eq!(c.operand(Operand::Reg(Reg::R3)), None);
        // Division is not folded (the pass does not need it).
        c.update(&Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R6, src: Operand::Imm(8) });
        c.update(&Instruction::Alu { width: Width::W64, op: AluOp::Div, dst: Reg::R6, src: Operand::Imm(2) });
        assert_eq!(c.operand(Operand::Reg(Reg::R6)), None);
    }

    #[test]
    fn stores_outside_the_frame_are_not_buffered() {
        let mut buf = StackStoreBuffer::default();
        assert!(!buf.record(0, MemSize::B, 1));
        assert!(!buf.record(-513, MemSize::B, 1));
        assert!(!buf.record(-4, MemSize::DW, 1));
        assert!(buf.record(-512, MemSize::DW, 1));
        assert!(buf.record(-1, MemSize::B, 1));
    }
}

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
