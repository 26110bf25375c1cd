//! Opaque-constants mode for the conformance harness: the same tests, with every immediate the program moves into
//! a register loaded from memory instead, so no engine can fold a test to `return <constant>` at compile time.
//!
//! In: a conformance program and its memory (test-corpora.md §1.4 convention). Out: an equivalent program and
//! memory for any [`Engine`], through [`OpaqueConstants`].
//!
//! The transformation keeps every slot of the test where it was, so jump and call offsets do not change:
//! - in the entry function, `mov dst, imm` becomes `ldxdw dst, [r10 + pool]`, `mov32 dst, imm` becomes
//!   `ldxw dst, [r10 + pool]` (zero-extending, as `mov32`), and `lddw dst, imm64` becomes
//!   `ldxdw dst, [r10 + pool]` followed by `ja +0` in its second slot; `lddw` forms that name maps, variables or
//!   functions stay as they are;
//! - the constants (deduplicated) are appended to the test memory, and a prologue in front of the program copies
//!   them into the bottom of the entry function's stack frame, then restores the convention's r1 (the memory, or 0
//!   when the test has none) and r2 (the test memory's length). The values reach the stack through loads from
//!   memory the program gets at run time, so a compiler cannot know them.
//!
//! Limits, each checked: the pool and the stack bytes the program addresses through r10 must not overlap (a test
//! that does is reported as an error naming the offsets); the prologue uses r0 as scratch, so a program that reads
//! r0 before writing it sees the last pooled constant instead of an error; subprograms keep their immediates (their
//! r10 is a different frame, which the prologue cannot reach in every engine's memory model); and a register a
//! `callx` calls through keeps its immediates, because native code resolves `callx` helper ids at compile time
//! (as bpf2c does), so an id loaded from memory is refused by design.

use std::collections::BTreeMap;

use bpf2sys::isa::{AluOp, Imm64Kind, Instruction, MemSize, Operand, Reg, Width};

use crate::conformance::{Engine, EngineError};

/// Size of the entry function's stack frame (contract §5.7, test-corpora.md §1.4).
const FRAME: i32 = 512;

/// A program whose constants come from memory, and the memory to run it with.
#[derive(Clone, Debug, PartialEq)]
pub struct OpaqueProgram {
    pub program: Vec<Instruction>,
    pub memory: Vec<u8>,
    /// How many immediates were replaced by loads.
    pub replaced: usize,
}

/// Rewrites `program` (run on `memory`) into its opaque-constants form; `Err` says why it cannot be.
pub fn make_opaque(program: &[Instruction], memory: &[u8]) -> Result<OpaqueProgram, String> {
    let entry_end = bpf2sys::program::functions_from_calls(program).get(1).map_or(program.len(), |f| f.start);
    let callx_targets: Vec<Reg> =
        program.iter().filter_map(|i| if let Instruction::CallReg { reg } = *i { Some(reg) } else { None }).collect();
    let mut pool: BTreeMap<u64, usize> = BTreeMap::new();
    let slot_of = |value: u64, pool: &mut BTreeMap<u64, usize>| {
        let next = pool.len();
        *pool.entry(value).or_insert(next)
    };
    // First pass: pool slots, in order of first use.
    let mut body = program.to_vec();
    let mut replaced = 0;
    let mut pc = 0;
    while pc < entry_end {
        match program[pc] {
            Instruction::Alu { width, op: AluOp::Mov, dst, src: Operand::Imm(imm) }
                if !callx_targets.contains(&dst) =>
            {
                let (value, size) = match width {
                    Width::W64 => (imm as i64 as u64, MemSize::DW),
                    Width::W32 => (imm as u32 as u64, MemSize::W),
                };
                let offset = pool_offset(slot_of(value, &mut pool));
                body[pc] = Instruction::Load { size, sign_extend: false, dst, src: Reg::FP, offset };
                replaced += 1;
            }
            Instruction::LoadImm64 { dst, kind: Imm64Kind::Imm, imm, next_imm }
                if pc + 1 < program.len() && !callx_targets.contains(&dst) =>
            {
                let value = (imm as u32 as u64) | ((next_imm as u32 as u64) << 32);
                let offset = pool_offset(slot_of(value, &mut pool));
                body[pc] = Instruction::Load { size: MemSize::DW, sign_extend: false, dst, src: Reg::FP, offset };
                body[pc + 1] = Instruction::Jump { offset: 0, long: false };
                replaced += 1;
                pc += 1;
            }
            _ => {}
        }
        pc += 1;
    }
    let pool_bytes = 8 * pool.len() as i32;
    if pool_bytes > FRAME {
        return Err(format!("{} distinct constants do not fit the {FRAME}-byte stack frame", pool.len()));
    }
    if let Some(lowest) = lowest_stack_offset(&program[..entry_end]) {
        if lowest < -FRAME + pool_bytes {
            return Err(format!(
                "the program addresses r10{lowest}, inside the constant pool at r10-{FRAME}..r10-{}",
                FRAME - pool_bytes
            ));
        }
    }
    let mut values = vec![0u64; pool.len()];
    for (&value, &slot) in &pool {
        values[slot] = value;
    }
    let mut out = prologue(&values, memory.len());
    out.extend(body);
    let mut memory = memory.to_vec();
    memory.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    Ok(OpaqueProgram { program: out, memory, replaced })
}

fn pool_offset(slot: usize) -> i16 {
    (-FRAME + 8 * slot as i32) as i16
}

/// The lowest `r10` offset any load, store or atomic of `function` addresses directly (`None`: it uses none).
fn lowest_stack_offset(function: &[Instruction]) -> Option<i32> {
    function
        .iter()
        .filter_map(|insn| match *insn {
            Instruction::Load { src: Reg::FP, offset, .. } => Some(offset as i32),
            Instruction::Store { dst: Reg::FP, offset, .. } | Instruction::Atomic { dst: Reg::FP, offset, .. } => {
                Some(offset as i32)
            }
            _ => None,
        })
        .min()
}

/// Copies the pool from the end of the memory (r1 + `len`) into the stack, then re-establishes r1 and r2.
fn prologue(values: &[u64], len: usize) -> Vec<Instruction> {
    let mut out = Vec::with_capacity(2 * values.len() + 2);
    for slot in 0..values.len() {
        let from = (len + 8 * slot) as i16;
        out.push(Instruction::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R0, src: Reg::R1, offset: from });
        out.push(Instruction::Store {
            size: MemSize::DW,
            dst: Reg::FP,
            offset: pool_offset(slot),
            src: Operand::Reg(Reg::R0),
        });
    }
    let mov = |dst, imm| Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(imm) };
    if len == 0 {
        // The convention's r1 for a test without memory.
        out.push(mov(Reg::R1, 0));
    }
    out.push(mov(Reg::R2, len as i32));
    out
}

/// Runs every test on `E` in opaque-constants form.
pub struct OpaqueConstants<E> {
    inner: E,
    name: String,
}

impl<E: Engine> OpaqueConstants<E> {
    pub fn new(inner: E) -> OpaqueConstants<E> {
        let name = format!("{}+opaque", inner.name());
        OpaqueConstants { inner, name }
    }
}

impl<E: Engine> Engine for OpaqueConstants<E> {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&mut self, program: &[Instruction], memory: &[u8]) -> Result<u64, EngineError> {
        if memory.len() > i16::MAX as usize - 8 * (FRAME as usize / 8) {
            return Err(EngineError::Failed(format!("{} bytes of memory: the pool is out of reach", memory.len())));
        }
        let opaque =
            make_opaque(program, memory).map_err(|why| EngineError::Failed(format!("opaque constants: {why}")))?;
        self.inner.run(&opaque.program, &opaque.memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::InterpreterEngine;
    use bpf2sys::isa::asm::assemble;

    #[test]
    fn every_immediate_move_becomes_a_load_in_the_same_slot() {
        let program = assemble("mov %r0, -1\nmov32 %r1, -1\nlddw %r2, 0x123456789\nja +0\nexit").unwrap();
        let opaque = make_opaque(&program, &[7]).unwrap();
        assert_eq!(opaque.replaced, 3);
        // Three distinct constants: 3 × (load + store), then r2 = len (r1 is the memory, so it stays).
        let body = &opaque.program[7..];
        assert_eq!(body.len(), program.len());
        assert!(matches!(body[0], Instruction::Load { size: MemSize::DW, src: Reg::FP, offset: -512, .. }));
        assert!(matches!(body[1], Instruction::Load { size: MemSize::W, src: Reg::FP, offset: -504, .. }));
        assert!(matches!(body[2], Instruction::Load { size: MemSize::DW, src: Reg::FP, offset: -496, .. }));
        assert_eq!(body[3], Instruction::Jump { offset: 0, long: false });
        assert_eq!(opaque.memory.len(), 1 + 3 * 8);
        assert_eq!(opaque.memory[1..9], u64::MAX.to_le_bytes());
        assert_eq!(opaque.memory[9..17], 0xffff_ffffu64.to_le_bytes());
    }

    #[test]
    fn results_are_unchanged_in_the_interpreter() {
        let cases = [
            ("mov %r0, -2\nmov32 %r1, -1\nadd %r0, %r1\nexit", vec![], 0xffff_fffdu64),
            ("lddw %r0, 0x8000000000000000\nmov %r3, 1\nrsh %r0, %r3\nexit", vec![], 0x4000_0000_0000_0000),
            ("ldxb %r0, [%r1+1]\nadd %r0, %r2\nmov %r3, 5\nstxdw [%r10-8], %r3\nldxdw %r3, [%r10-8]\nadd %r0, %r3\nexit", vec![1, 2], 9),
            ("mov %r0, %r1\nexit", vec![], 0),
        ];
        for (text, memory, want) in cases {
            let program = assemble(text).unwrap();
            let mut engine = OpaqueConstants::new(InterpreterEngine);
            assert_eq!(engine.run(&program, &memory), Ok(want), "{text}");
        }
    }

    #[test]
    fn a_program_reaching_into_the_pool_is_refused() {
        let program = assemble("mov %r0, 1\nstxdw [%r10-512], %r0\nexit").unwrap();
        let err = make_opaque(&program, &[]).unwrap_err();
        assert!(err.contains("r10-512"), "{err}");
    }
}
