//! Short branches, compact loop cycles and aligned loops for Cranelift's x64 machine code.
//!
//! In: the bytes of one x64 function exactly as Cranelift emitted them — instructions, then zero padding and the
//! constant pool that RIP-relative operands refer to — its relocations, and the end of its prologue. Out: the same
//! instructions with the blocks each loop's fall-through cycle branches out to written right after that cycle
//! ([`hot_cycles`]), every loop back edge, every branch from such a cycle to such a block and every branch inside
//! such a block that can reach its target in a signed byte re-encoded in its 2-byte form (`jmp rel8`, `jcc rel8`)
//! instead of Cranelift's fixed 5/6-byte `rel32` form, every loop head (the target of a backward branch) moved to a
//! [`LOOP_ALIGNMENT`] boundary with NOPs, every branch and RIP-relative displacement re-aimed at the moved target,
//! the constant pool moved with its alignment kept, and the relocation offsets updated.
//!
//! Why: Cranelift's x64 backend has no short branch form, so a loop spans more bytes, fetch blocks and cache lines
//! than a native compiler's: on an AMD EPYC bench machine that made `sieve` 20% slower, and on the Intel Xeon one
//! `branchy`'s tokenizer loop runs at clang's speed only when its hot cycle fits one 64-byte line ([`hot_cycles`]).
//! Other forward branches keep their 6 bytes: shortening every forward branch packs more branches into each line,
//! which made `branchy` 30% slower on the AMD machine and `sieve` slower on the Intel one (1.09x → 1.13–1.18x
//! of clang, same instructions). The layout is the relaxation every assembler does: start with every candidate
//! short, lengthen the ones whose displacement does not fit, repeat until nothing changes (a branch is only ever
//! lengthened, so it terminates).
//!
//! Loop heads are aligned to the 64-byte cache line, as native compilers align loops (`.p2align`): Cranelift has no
//! block alignment of its own, so where a loop starts inside its line depended on unrelated code before it. On the
//! benchmark machine that placement alone moved `sieve` between 454 and 563 ns and `branchy` between 4.8 and 5.8 µs
//! with identical instructions; with every loop starting a line the body occupies the fewest lines and fetch
//! blocks, and the timing no longer depends on what precedes the loop. The padding costs at most 63 bytes per loop
//! and a few NOPs each time a loop is entered from above.
//!
//! The prologue is never changed: the Windows unwind data records prologue offsets, so only branches after
//! `prologue_end` are shortened and every earlier byte keeps its offset. Anything the pass does not fully
//! understand — an undecodable byte inside the code, a relative operand other than a plain jump or a RIP-relative
//! memory operand, an indirect jump (its table of code offsets is invisible to the pass), a target that is not an
//! instruction start — leaves the function as Cranelift emitted it. The pass was validated against one Cranelift
//! release ([`VALIDATED_CRANELIFT`]); a test fails when the lock file moves to another, forcing re-validation.
//! [`disassemble`] prints the bytes that ship, for `compile --emit asm`.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction, Mnemonic};

use crate::compiled::CodeRelocation;

mod check;
mod hot_cycles;

/// The Cranelift release this pass was validated against (decoding of every function it emits for the samples,
/// the bench programs and the conformance suite, `check_same_program` on each). A Cranelift upgrade may emit
/// forms the pass has not seen; the test `the_pass_was_validated_against_the_cranelift_in_the_lock_file` fails
/// until the pass is re-validated and this is updated.
pub const VALIDATED_CRANELIFT: &str = "0.135.8";

/// Alignment the constant pool keeps relative to the function start (the largest Cranelift uses on x64).
const POOL_ALIGNMENT: usize = 16;

/// Alignment of loop heads relative to the function start (one cache line); the function itself is aligned at
/// least this much.
pub const LOOP_ALIGNMENT: usize = 64;

/// The recommended multi-byte NOPs (Intel SDM Vol. 2B, NOP), indexed by length − 1.
const NOPS: [&[u8]; 9] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Appends `len` bytes of NOPs, as few instructions as possible.
fn push_nops(out: &mut Vec<u8>, mut len: usize) {
    while len > 0 {
        let n = len.min(NOPS.len());
        out.extend_from_slice(NOPS[n - 1]);
        len -= n;
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Copied as is (a `call rel32` here is always relocated by the linker, so its bytes are position-free).
    Plain,
    /// A NOP: copied as is, and ignored when comparing programs (the pass adds some for alignment).
    Nop,
    /// An instruction after which execution never reaches the next one (`ret`, `ud2`): copied as is.
    Stop,
    /// `jmp` to the instruction at `target` (an old offset).
    Jump { target: usize },
    /// `jcc` with condition nibble `cc` to `target`.
    CondJump { cc: u8, target: usize },
    /// A RIP-relative memory operand whose 4-byte displacement is at `disp_at` within the instruction and refers
    /// to old offset `target` (in the constant pool).
    RipRelative { disp_at: usize, target: usize },
}

#[derive(Clone, Copy, Debug)]
struct Decoded {
    offset: usize,
    len: usize,
    kind: Kind,
}

/// Decodes the instruction part of `code`; `None` if it contains anything the pass does not handle.
fn decode(code: &[u8]) -> Option<(Vec<Decoded>, usize)> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut instructions = Vec::new();
    // The constant pool starts at the lowest RIP-relative target: all code precedes it, so by the time decoding
    // reaches the pool every reference to it has been seen.
    let mut limit = code.len();
    let mut insn = Instruction::default();
    while decoder.can_decode() && (decoder.position()) < limit {
        decoder.decode_out(&mut insn);
        let offset = insn.ip() as usize;
        if insn.is_invalid() || offset + insn.len() > limit {
            // Only the zero padding before the pool may fail to decode; it is never executed.
            if code[offset..limit].iter().all(|&b| b == 0) {
                break;
            }
            return None;
        }
        let bytes = &code[offset..offset + insn.len()];
        let kind = if insn.is_ip_rel_memory_operand() {
            let target = usize::try_from(insn.ip_rel_memory_address()).ok()?;
            // Cranelift's RIP-relative operands refer to its constant pool, after all code.
            if target < offset + insn.len() || target >= code.len() {
                return None;
            }
            limit = limit.min(target);
            let constants = decoder.get_constant_offsets(&insn);
            if constants.displacement_size() != 4 {
                return None;
            }
            Kind::RipRelative { disp_at: constants.displacement_offset(), target }
        } else {
            match insn.flow_control() {
                FlowControl::UnconditionalBranch if insn.is_jmp_short_or_near() => {
                    let target = insn.near_branch_target() as usize;
                    if !(bytes.len() == 5 && bytes[0] == 0xe9 || bytes.len() == 2 && bytes[0] == 0xeb) {
                        return None;
                    }
                    Kind::Jump { target }
                }
                FlowControl::ConditionalBranch if insn.is_jcc_short_or_near() => {
                    let target = insn.near_branch_target() as usize;
                    let cc = match bytes {
                        [0x0f, op @ 0x80..=0x8f, _, _, _, _] => op - 0x80,
                        [op @ 0x70..=0x7f, _] => op - 0x70,
                        _ => return None,
                    };
                    Kind::CondJump { cc, target }
                }
                // Relocated calls carry their displacement in a relocation; any other relative form is unknown.
                FlowControl::Call if insn.is_call_near() && bytes.len() == 5 && bytes[0] == 0xe8 => Kind::Plain,
                // An indirect jump goes through a table of code offsets (a `br_table`) that moving code would
                // invalidate, and the pass cannot see the table: fail closed. (Indirect *calls* leave the function
                // and come back to the next instruction, so they are position-free; every helper call is one.)
                FlowControl::UnconditionalBranch
                | FlowControl::ConditionalBranch
                | FlowControl::IndirectBranch
                | FlowControl::Call
                | FlowControl::XbeginXabortXend => return None,
                FlowControl::Return | FlowControl::Exception => Kind::Stop,
                _ if insn.mnemonic() == Mnemonic::Nop => Kind::Nop,
                _ => Kind::Plain,
            }
        };
        instructions.push(Decoded { offset, len: insn.len(), kind });
    }
    Some((instructions, limit))
}

/// A function's code after [`shorten_and_align_loops`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaidCode {
    pub code: Vec<u8>,
    /// Some loop head was aligned to [`LOOP_ALIGNMENT`]: the function must start on such a boundary.
    pub aligned_loops: bool,
}

/// Re-lays out one function's code with short branches and aligned loop heads (see the module documentation) and
/// returns the new bytes; `relocations` are updated in place. Returns `None`, leaving everything untouched, when the
/// code is not understood or nothing changes.
///
/// The steps: decode, plan the branch forms and loop heads ([`Layout::plan`]), relax the branch lengths to a fixed
/// point ([`Layout::relax`]), then write the code and constant pool at their new offsets ([`Layout::emit`]) and move
/// the relocations with them ([`Layout::move_relocations`]).
pub fn shorten_and_align_loops(
    code: &[u8],
    relocations: &mut [CodeRelocation],
    prologue_end: usize,
) -> Option<RelaidCode> {
    let (instructions, pool_start) = decode(code)?;
    let mut layout = Layout::plan(instructions, prologue_end)?;
    layout.relax();
    if layout.unchanged() {
        return None;
    }
    // Prologue bytes must not move (unwind data); with no short branch before `prologue_end` they cannot.
    debug_assert!(layout
        .instructions
        .iter()
        .zip(&layout.starts)
        .all(|(d, &s)| d.offset >= prologue_end || d.offset == s));
    let pool = layout.place_pool(pool_start, code.len())?;
    let out = layout.emit(code, &pool)?;
    layout.move_relocations(relocations, &pool)?;
    Some(RelaidCode { code: out, aligned_loops: layout.loop_head.contains(&true) })
}

/// Where the instructions of one function go: each branch's form, the loop heads and their padding, and (after
/// [`Layout::relax`]) every instruction's new offset.
struct Layout {
    instructions: Vec<Decoded>,
    /// Old offset of an instruction → its index.
    index_of: std::collections::HashMap<usize, usize>,
    /// Old offset just past the last instruction.
    code_end: usize,
    /// The instructions' indices in the order they are written ([`hot_cycles::write_order`]).
    order: Vec<usize>,
    /// Per instruction: a branch kept in (or lengthened to) its rel32 form.
    long: Vec<bool>,
    /// Per instruction: the target of a backward branch after the prologue, aligned to [`LOOP_ALIGNMENT`].
    loop_head: Vec<bool>,
    /// Per instruction: NOP bytes before it.
    padding: Vec<usize>,
    /// Per instruction (by index, not order), then the end: new offsets.
    starts: Vec<usize>,
}

/// Where the constant pool moves.
struct PoolMove {
    old_start: usize,
    new_start: usize,
}

impl Layout {
    /// Checks every branch target is an instruction start (or the end of the code) and marks the candidate short
    /// branches and the loop heads. `None` if a branch target is not understood.
    fn plan(instructions: Vec<Decoded>, prologue_end: usize) -> Option<Layout> {
        let index_of: std::collections::HashMap<usize, usize> =
            instructions.iter().enumerate().map(|(i, d)| (d.offset, i)).collect();
        let code_end = instructions.last().map_or(0, |d| d.offset + d.len);
        for d in &instructions {
            if let Kind::Jump { target } | Kind::CondJump { target, .. } = d.kind {
                if !index_of.contains_key(&target) && target != code_end {
                    return None;
                }
            }
        }
        // Loop heads: targets of backward branches after the prologue.
        let mut loop_head = vec![false; instructions.len()];
        for d in &instructions {
            if let Kind::Jump { target } | Kind::CondJump { target, .. } = d.kind {
                if target <= d.offset && target >= prologue_end {
                    loop_head[index_of[&target]] = true;
                }
            }
        }
        let hot_cycles::HotOrder { order, starts_short } =
            hot_cycles::write_order(&instructions, &index_of, &loop_head);
        // Branch lengths: short (2 bytes) unless inside the prologue, forward and not one `write_order` marks (a hot
        // cycle's branch to a block moved after it, a branch inside such a block; module documentation), or proven
        // too far.
        let long: Vec<bool> = (instructions.iter().zip(&starts_short))
            .map(|(d, &short)| match d.kind {
                Kind::Jump { target } | Kind::CondJump { target, .. } => {
                    d.offset < prologue_end || target > d.offset && !short
                }
                _ => false,
            })
            .collect();
        let n = instructions.len();
        Some(Layout {
            instructions,
            index_of,
            code_end,
            order,
            long,
            loop_head,
            padding: vec![0; n],
            starts: vec![0; n + 1],
        })
    }

    /// The encoded length of instruction `i` in its planned form.
    fn length(&self, i: usize) -> usize {
        let d = &self.instructions[i];
        match d.kind {
            Kind::Jump { .. } if self.long[i] => 5,
            Kind::CondJump { .. } if self.long[i] => 6,
            Kind::Jump { .. } | Kind::CondJump { .. } => 2,
            _ => d.len,
        }
    }

    /// Lays the instructions out, lengthening every short branch whose displacement does not fit a signed byte,
    /// until nothing changes (branches only ever lengthen, so this terminates).
    fn relax(&mut self) {
        let n = self.instructions.len();
        loop {
            let mut at = 0usize;
            for &i in &self.order {
                if self.loop_head[i] {
                    self.padding[i] = at.next_multiple_of(LOOP_ALIGNMENT) - at;
                    at += self.padding[i];
                }
                self.starts[i] = at;
                at += self.length(i);
            }
            self.starts[n] = at;
            let new_offset = |old: usize| if old == self.code_end { at } else { self.starts[self.index_of[&old]] };
            let mut too_far = Vec::new();
            for (i, d) in self.instructions.iter().enumerate() {
                if let Kind::Jump { target } | Kind::CondJump { target, .. } = d.kind {
                    if !self.long[i] {
                        let displacement = new_offset(target) as i64 - (self.starts[i] + 2) as i64;
                        if i8::try_from(displacement).is_err() {
                            too_far.push(i);
                        }
                    }
                }
            }
            if too_far.is_empty() {
                break;
            }
            for i in too_far {
                self.long[i] = true;
            }
        }
    }

    /// Nothing moved: every instruction keeps its offset and the code its end.
    fn unchanged(&self) -> bool {
        let n = self.instructions.len();
        self.order.iter().enumerate().all(|(k, &i)| k == i)
            && self.instructions.iter().zip(&self.starts).all(|(d, &s)| d.offset == s)
            && self.starts[n] == self.code_end
    }

    /// Where the constant pool (old start `pool_start`, in a function of `code_len` bytes) goes: the first offset
    /// after the new code with the old start's remainder modulo [`POOL_ALIGNMENT`], so every constant keeps its
    /// alignment (Cranelift aligns the pool only as much as its largest constant needs: 8 bytes for 64-bit
    /// constants, so the pool may start 8 bytes past a 16-byte boundary).
    fn place_pool(&self, pool_start: usize, code_len: usize) -> Option<PoolMove> {
        let new_code_end = self.starts[self.instructions.len()];
        let old_start = pool_start.max(self.code_end);
        let new_start = if old_start < code_len {
            let shift = (old_start % POOL_ALIGNMENT + POOL_ALIGNMENT - new_code_end % POOL_ALIGNMENT) % POOL_ALIGNMENT;
            new_code_end + shift
        } else {
            new_code_end
        };
        Some(PoolMove { old_start, new_start })
    }

    /// The new offset of old offset `old` (an instruction start, the end of the code, or inside the pool).
    fn new_offset(&self, old: usize, pool: &PoolMove) -> usize {
        if old >= pool.old_start {
            old - pool.old_start + pool.new_start
        } else if old == self.code_end {
            self.starts[self.instructions.len()]
        } else {
            self.starts[self.index_of[&old]]
        }
    }

    /// Writes the re-laid code: padding, instructions with re-aimed branches and RIP-relative displacements, then
    /// the constant pool. `None` if a displacement does not fit its field.
    fn emit(&self, code: &[u8], pool: &PoolMove) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(pool.new_start + code.len() - pool.old_start);
        for &i in &self.order {
            let d = &self.instructions[i];
            let bytes = &code[d.offset..d.offset + d.len];
            let here = self.starts[i];
            push_nops(&mut out, self.padding[i]);
            debug_assert_eq!(out.len(), here);
            match d.kind {
                Kind::Plain | Kind::Nop | Kind::Stop => out.extend_from_slice(bytes),
                Kind::Jump { target } | Kind::CondJump { target, .. } => {
                    let next = here + self.length(i);
                    let displacement = self.new_offset(target, pool) as i64 - next as i64;
                    match (d.kind, self.long[i]) {
                        (Kind::Jump { .. }, false) => out.extend_from_slice(&[0xeb, displacement as i8 as u8]),
                        (Kind::Jump { .. }, true) => {
                            out.push(0xe9);
                            out.extend_from_slice(&i32::try_from(displacement).ok()?.to_le_bytes());
                        }
                        (Kind::CondJump { cc, .. }, false) => {
                            out.extend_from_slice(&[0x70 + cc, displacement as i8 as u8])
                        }
                        (Kind::CondJump { cc, .. }, true) => {
                            out.extend_from_slice(&[0x0f, 0x80 + cc]);
                            out.extend_from_slice(&i32::try_from(displacement).ok()?.to_le_bytes());
                        }
                        _ => unreachable!("branch kinds only"),
                    }
                }
                Kind::RipRelative { disp_at, target } => {
                    let mut bytes = bytes.to_vec();
                    let displacement = self.new_offset(target, pool) as i64 - (here + d.len) as i64;
                    bytes[disp_at..disp_at + 4].copy_from_slice(&i32::try_from(displacement).ok()?.to_le_bytes());
                    out.extend_from_slice(&bytes);
                }
            }
        }
        out.resize(pool.new_start, 0);
        out.extend_from_slice(&code[pool.old_start.min(code.len())..]);
        Some(out)
    }

    /// Moves each relocation with the instruction (or pool entry) it sits in. Relocations sit inside plain
    /// instructions (relocated calls, absolute constants); `None`, changing nothing, if one sits anywhere else.
    fn move_relocations(&self, relocations: &mut [CodeRelocation], pool: &PoolMove) -> Option<()> {
        let mut moved = Vec::with_capacity(relocations.len());
        for reloc in relocations.iter() {
            let at = reloc.offset as usize;
            let new_at = if at >= pool.old_start {
                self.new_offset(at, pool)
            } else {
                let i = self.instructions.partition_point(|d| d.offset <= at).checked_sub(1)?;
                let d = &self.instructions[i];
                if !matches!(d.kind, Kind::Plain | Kind::Nop | Kind::Stop) || at >= d.offset + d.len {
                    return None;
                }
                self.starts[i] + (at - d.offset)
            };
            moved.push(u32::try_from(new_at).ok()?);
        }
        for (reloc, at) in relocations.iter_mut().zip(moved) {
            reloc.offset = at;
        }
        Some(())
    }
}

/// The machine instructions of `code` in GNU assembler syntax, one per line with its offset and bytes: the
/// bytes that ship (after this pass), for `compile --emit asm`. Decoding stops at the zero padding before the
/// constant pool; the pool is shown as data.
pub fn disassemble(code: &[u8]) -> String {
    use std::fmt::Write;
    let limit = decode(code).map_or(code.len(), |(_, limit)| limit);
    let mut decoder = Decoder::with_ip(64, &code[..limit], 0, DecoderOptions::NONE);
    let mut formatter = GasFormatter::new();
    let (mut insn, mut text, mut out) = (Instruction::default(), String::new(), String::new());
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        let (offset, len) = (insn.ip() as usize, insn.len());
        text.clear();
        formatter.format(&insn, &mut text);
        let bytes: String = code[offset..offset + len].iter().map(|b| format!("{b:02x}")).collect();
        writeln!(out, "  {offset:4x}:  {bytes:<24} {text}").expect("writing to a String");
    }
    if limit < code.len() {
        let pool: String = code[limit..].iter().map(|b| format!("{b:02x}")).collect();
        writeln!(out, "  {limit:4x}:  .byte 0x{pool} (padding and constant pool)").expect("writing to a String");
    }
    out
}

pub use check::check_same_program;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiled::{RelocKind, RelocTarget};

    #[test]
    fn loop_back_edges_become_short_and_targets_follow() {
        // push rbp; L: jne M; jmp rel32 back to L; M: imul rax, [rip+X]; call rel32 (relocated); ret;
        // pad; pool: 8 bytes.
        let mut code = vec![0x55];
        code.extend_from_slice(&[0x0f, 0x85, 5, 0, 0, 0]); // jne M (M = 1 + 6 + 5)
        code.extend_from_slice(&[0xe9]);
        code.extend_from_slice(&(-11i32).to_le_bytes()); // jmp L (L = 1)
                                                         // M at 12: imul rax, [rip + d] (48 0f af 05 d32), 8 bytes, ends at 20
        code.extend_from_slice(&[0x48, 0x0f, 0xaf, 0x05]);
        code.extend_from_slice(&(32i32 - 20).to_le_bytes());
        code.extend_from_slice(&[0xe8, 0, 0, 0, 0]); // call (relocated at 21)
        code.push(0xc3); // ret at 25
        code.resize(32, 0);
        code.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let mut relocs = vec![CodeRelocation {
            offset: 21,
            kind: RelocKind::X64PcRel32,
            target: RelocTarget::Function("callee".into()),
            addend: -4,
        }];
        let relaid = shorten_and_align_loops(&code, &mut relocs, 1).expect("shrinks");
        assert!(relaid.aligned_loops);
        let out = relaid.code;
        check_same_program(&code, &out).unwrap();
        // The loop head L moves to the next line, after NOPs; the forward `jne` keeps its rel32 form; the back edge
        // becomes `jmp rel8`.
        let l = LOOP_ALIGNMENT;
        assert_eq!(out[0], 0x55);
        assert_eq!(&out[1..10], NOPS[8]);
        assert_eq!(&out[l..l + 8], &[0x0f, 0x85, 2, 0, 0, 0, 0xeb, 0xf8]);
        assert_eq!(relocs[0].offset as usize, l + 17);
        assert_eq!(out.len(), (l + 22).next_multiple_of(16) + 8, "the pool keeps its 16-byte alignment");
        // The check sees through the padding but not through a changed instruction.
        let mut broken = out.clone();
        broken[l + 8] = 0x4c; // imul rax, [rip + d] -> imul r8, [rip + d]
        assert!(check_same_program(&code, &broken).is_err());
    }

    #[test]
    fn a_pool_8_bytes_past_a_16_byte_boundary_keeps_that_offset() {
        // push rbp; L: imul rax, [rip + d]; jne L (rel32); ret; pad to 24; pool: 8 bytes at 24 (= 8 mod 16), as
        // Cranelift aligns a pool of 64-bit constants.
        let mut code = vec![0x55, 0x48, 0x0f, 0xaf, 0x05];
        code.extend_from_slice(&(24i32 - 9).to_le_bytes()); // imul ends at 9
        code.extend_from_slice(&[0x0f, 0x85]);
        code.extend_from_slice(&(1i32 - 15).to_le_bytes()); // jne L, ends at 15
        code.push(0xc3);
        code.resize(24, 0);
        code.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let relaid = shorten_and_align_loops(&code, &mut [], 1).expect("re-laid");
        check_same_program(&code, &relaid.code).unwrap();
        let pool = relaid.code.len() - 8;
        assert_eq!(pool % POOL_ALIGNMENT, 8);
        assert_eq!(&relaid.code[pool..], &0x1122_3344_5566_7788u64.to_le_bytes());
        let (l, d) = (LOOP_ALIGNMENT, pool as i64 - (LOOP_ALIGNMENT as i64 + 8));
        assert_eq!(&relaid.code[l + 4..l + 8], &i32::try_from(d).unwrap().to_le_bytes(), "the imul still reads it");
    }

    #[test]
    fn branches_in_the_prologue_keep_their_offsets() {
        // A stack-probe style loop inside the prologue: `L: jne L` must stay 6 bytes.
        let mut code = vec![0x0f, 0x85];
        code.extend_from_slice(&(-6i32).to_le_bytes());
        code.push(0xc3);
        assert!(shorten_and_align_loops(&code, &mut [], 6).is_none());
    }

    #[test]
    fn a_rip_relative_operand_into_the_code_is_left_alone() {
        // push rbp; L: jne L; lea rax, [rip - 2] (refers into its own bytes, not to a constant pool).
        let code = [0x55, 0x0f, 0x85, 0xfa, 0xff, 0xff, 0xff, 0x48, 0x8d, 0x05, 0xfe, 0xff, 0xff, 0xff];
        assert!(shorten_and_align_loops(&code, &mut [], 1).is_none());
    }

    #[test]
    fn an_indirect_jump_leaves_the_function_as_cranelift_emitted_it() {
        // push rbp; L: jmp [rax] ... a jump-table dispatch the pass cannot see into; then a loop back edge to L.
        let code = [0x55, 0xff, 0x20, 0x0f, 0x85, 0xf8, 0xff, 0xff, 0xff, 0xc3];
        assert_eq!(shorten_and_align_loops(&code, &mut [], 1), None);
    }

    #[test]
    fn disassembly_shows_the_bytes_that_ship() {
        let text = disassemble(&[0x55, 0x48, 0x89, 0xe5, 0xc3]);
        assert!(text.contains("push") && text.contains("%rbp") && text.contains("ret"), "{text}");
        assert!(text.contains("4889e5"), "{text}");
    }

    #[test]
    fn the_pass_was_validated_against_the_cranelift_in_the_lock_file() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        // The newest cranelift-codegen in the lock file is ours (the rbpf benchmark peer brings an older copy).
        let parse = |v: &str| v.split('.').map(|n| n.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
        let version = lock
            .split("[[package]]")
            .filter(|p| p.contains("name = \"cranelift-codegen\"\n"))
            .filter_map(|p| {
                p.lines().find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"').map(str::to_string))
            })
            .max_by_key(|v| parse(v))
            .expect("cranelift-codegen is in Cargo.lock");
        assert_eq!(
            version, VALIDATED_CRANELIFT,
            "Cranelift changed: re-validate x64_layout against its output (see the module docs), then update \
             VALIDATED_CRANELIFT"
        );
    }

    #[test]
    fn undecodable_code_is_left_alone() {
        let code = [0xe9, 0, 0, 0, 0, 0x0f, 0x0b, 0x06, 0xc3];
        // 0x06 (push es) is invalid in 64-bit mode.
        assert!(shorten_and_align_loops(&code, &mut [], 0).is_none());
    }
}
