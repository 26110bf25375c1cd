//! The eBPF instruction set (RFC 9669), decoded into typed instructions.
//!
//! In: raw bytecode (little-endian 8-byte slots). Out: [`Instruction`]s indexed by **slot**, the unit every
//! jump offset, line-info record and diagnostic counts in. A 64-bit immediate load (`lddw`, RFC 9669 §5.4)
//! takes two slots; its second slot is represented by [`Instruction::LoadImm64Continuation`] so that
//! `program[pc]` is always the instruction at slot `pc` and a jump into the middle of an `lddw` is visible as
//! a jump to a continuation slot.
//!
//! Decoding is strict: every field that RFC 9669 says must be zero (the "unused" fields of §3 and §4) is
//! checked, and a violation names the field and the slot. Later stages never see a malformed encoding.
//!
//! [`encode`] is the exact inverse of [`decode`] on well-formed programs (tested by round trip).
//!
//! The parts: `instruction` (the typed model: [`Instruction`], [`Reg`], [`AluOp`], ...), `encoding` (raw slots,
//! [`decode`], [`encode`]), [`asm`] and [`disasm`] (text forms), [`semantics`] (the concrete meaning of ALU,
//! byte-order and jump operations) and [`dataflow`] (registers each instruction reads and writes).

pub mod asm;
pub mod dataflow;
pub mod disasm;
mod encoding;
mod instruction;
pub mod semantics;

pub use encoding::{decode, decode_slots, encode, encode_bytes, encode_instruction, DecodeError, RawSlot};
pub use instruction::{
    AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width,
};

/// Size of one instruction slot in bytes (RFC 9669 §3).
pub const SLOT_SIZE: usize = 8;

/// Bytes of stack per call frame. RFC 9669 §2.4 leaves the size to the platform; Linux and eBPF for Windows use
/// 512 (UBPF_STACK_SIZE in bpf2c, contract §5.1), and every local call gets a frame of its own (contract §5.7).
/// The interpreter, the verifier and lowering all take the frame size from here.
pub const STACK_FRAME_SIZE: u32 = 512;

#[cfg(test)]
mod tests;
