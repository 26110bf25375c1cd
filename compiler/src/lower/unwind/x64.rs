//! x64 `UNWIND_INFO` from Cranelift's prologue record and the code (Microsoft, "x64 exception handling").
//!
//! Cranelift 0.135's own `UNWIND_INFO` stores `SAVE_NONVOL` offsets scaled by 16 and relative to the clobber area,
//! and truncates the frame-register offset (toolchain-notes §1.5), so we write it ourselves. The prologue is
//! `push rbp` (`UWOP_PUSH_NONVOL`), `mov rbp, rsp` (RBP is a saved register, not the frame register), an optional
//! stack probe, `sub rsp, N` (`UWOP_ALLOC_*`) and one `mov [rsp + k], reg` per callee-saved register
//! (`UWOP_SAVE_NONVOL`, offset `k / 8` from the post-allocation RSP, which `RtlVirtualUnwind` uses when no frame
//! register is set). RSP is constant in the body.
//!
//! The stack probe, which moves RSP down a page at a time and back, gets a record (a `.pdata` entry) of its own:
//! RBP still equals RSP after `push rbp` there, so a record with RBP as the frame register (`UWOP_SET_FPREG`, then
//! `UWOP_PUSH_NONVOL rbp`) unwinds exactly. The record after the probe describes the instructions before it with
//! code offset 0 (always executed), so a function's first record is the only one whose `push rbp` has a non-zero
//! code offset. No jump crosses these records (the probe has only its loop's `jne`), so the unwinder's test for a
//! tail-call `jmp` out of the function never mistakes a body jump for one.
//!
//! Epilogues: Cranelift ends each with `add rsp, N; mov rsp, rbp; pop rbp; ret`. After `add rsp, N` the unwinder's
//! epilogue test does not recognise `mov rsp, rbp`, so it would apply the whole prologue description to a frame
//! already freed. The `add` is redundant (`mov rsp, rbp` sets RSP, and the flags it writes are dead at a return),
//! so [`drop_redundant_epilogue_adds`] replaces it with a NOP of the same length: RSP then keeps the body's value
//! until `mov rsp, rbp`, and from `pop rbp` on the epilogue test applies.

use std::ops::Range;

use cranelift_codegen::isa::unwind::UnwindInst;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

use super::UnwindFragment;

// UNWIND_CODE operations (struct UNWIND_CODE).
pub const UWOP_PUSH_NONVOL: u8 = 0;
pub const UWOP_ALLOC_LARGE: u8 = 1;
pub const UWOP_ALLOC_SMALL: u8 = 2;
pub const UWOP_SET_FPREG: u8 = 3;
pub const UWOP_SAVE_NONVOL: u8 = 4;
pub const UWOP_SAVE_NONVOL_FAR: u8 = 5;
const RBP: u8 = 5;

/// Why a function's unwind data cannot be written.
pub type Error = String;

/// One prologue operation: the code offset just after its instruction, and its unwind code slots.
#[derive(Clone, Debug)]
struct Operation {
    end: u32,
    nodes: Vec<u16>,
}

/// Decodes `sub rsp, imm8` (48 83 EC ib) or `sub rsp, imm32` (48 81 EC id) at the start of `code`.
fn decode_sub_rsp(code: &[u8]) -> Option<(u32, usize)> {
    match code {
        [0x48, 0x83, 0xec, imm, ..] => Some((*imm as i8 as i32 as u32, 4)),
        [0x48, 0x81, 0xec, a, b, c, d, ..] => Some((u32::from_le_bytes([*a, *b, *c, *d]), 7)),
        _ => None,
    }
}

/// The prologue as Cranelift records it, checked against the code.
struct Prologue {
    /// In execution order: push rbp, the allocation, the saves.
    operations: Vec<Operation>,
    /// End of `mov rbp, rsp` (where a probe may start) and start of the allocation (where it ends).
    frame_set: u32,
    alloc_start: Option<u32>,
    end: u32,
}

fn prologue(code: &[u8], insts: &[(u32, UnwindInst)]) -> Result<Prologue, Error> {
    let mut operations = Vec::new();
    let mut clobber_size = None;
    let mut alloc = 0u32;
    let mut alloc_start = None;
    let mut end = 0u32;
    let mut frame_set = 0u32;
    for (offset, inst) in insts {
        match inst {
            UnwindInst::PushFrameRegs { .. } => {
                operations.push(Operation { end: *offset, nodes: vec![u16::from(RBP << 4 | UWOP_PUSH_NONVOL) << 8] });
                end = *offset;
                // `mov rbp, rsp` (48 89 E5) follows.
                if code.get(*offset as usize..*offset as usize + 3) != Some(&[0x48, 0x89, 0xe5]) {
                    return Err("`push rbp` is not followed by `mov rbp, rsp`".into());
                }
                frame_set = offset + 3;
            }
            UnwindInst::DefineNewFrame { offset_downward_to_clobbers, .. } => {
                clobber_size = Some(*offset_downward_to_clobbers);
                // The fixed-frame allocation follows immediately (x64 `gen_clobber_save`).
                if let Some((size, len)) = code.get(*offset as usize..).and_then(decode_sub_rsp) {
                    if size == 0 || size % 8 != 0 {
                        return Err(format!("stack allocation of {size} bytes is not a positive multiple of 8"));
                    }
                    alloc = size;
                    alloc_start = Some(*offset);
                    let nodes = if size <= 128 {
                        vec![u16::from((((size - 8) / 8) as u8) << 4 | UWOP_ALLOC_SMALL) << 8]
                    } else if size <= 524_280 {
                        vec![u16::from(UWOP_ALLOC_LARGE) << 8, (size / 8) as u16]
                    } else {
                        vec![u16::from(1 << 4 | UWOP_ALLOC_LARGE) << 8, size as u16, (size >> 16) as u16]
                    };
                    end = offset + len as u32;
                    operations.push(Operation { end, nodes });
                }
            }
            UnwindInst::SaveReg { clobber_offset, reg } => {
                let clobbers = clobber_size.ok_or("register save before the frame is defined")?;
                if reg.class() != cranelift_codegen::RegClass::Int {
                    return Err("saving vector registers is not supported in unwind info".into());
                }
                // Saves are at RSP + fixed frame + outgoing args + clobber_offset = RSP + (alloc - clobbers) + off.
                let stack_offset = alloc
                    .checked_sub(clobbers)
                    .map(|base| base + clobber_offset)
                    .ok_or_else(|| format!("clobber area {clobbers} larger than allocation {alloc}"))?;
                let reg_code = reg.hw_enc() << 4;
                let nodes = if stack_offset / 8 <= u16::MAX as u32 {
                    vec![u16::from(reg_code | UWOP_SAVE_NONVOL) << 8, (stack_offset / 8) as u16]
                } else {
                    vec![
                        u16::from(reg_code | UWOP_SAVE_NONVOL_FAR) << 8,
                        stack_offset as u16,
                        (stack_offset >> 16) as u16,
                    ]
                };
                operations.push(Operation { end: *offset, nodes });
                end = *offset;
            }
            other => return Err(format!("unexpected x64 unwind instruction {other:?}")),
        }
    }
    Ok(Prologue { operations, frame_set, alloc_start, end })
}

/// An `UNWIND_INFO` record: `operations` (code offsets relative to the record's fragment; an operation before
/// the fragment gets offset 0), and RBP as frame register if `rbp_frame`.
fn record(prolog_size: u32, operations: &[(u32, &[u16])], rbp_frame: bool) -> Result<Vec<u8>, Error> {
    let offset8 = |off: u32| u8::try_from(off).map_err(|_| format!("prologue longer than 255 bytes (offset {off})"));
    let node_count: usize = operations.iter().map(|(_, n)| n.len()).sum();
    let mut out = Vec::with_capacity(4 + 2 * node_count + 2);
    out.push(1); // Version 1, no flags (no handler, not chained).
    out.push(offset8(prolog_size)?);
    out.push(u8::try_from(node_count).map_err(|_| "more than 255 unwind code slots")?);
    out.push(if rbp_frame { RBP } else { 0 }); // Frame register, frame offset 0.
                                               // Codes are stored in descending code-offset order: the last prologue instruction first.
    for (op, nodes) in operations.iter().rev() {
        out.push(offset8(*op)?);
        out.push((nodes[0] >> 8) as u8);
        for extra in &nodes[1..] {
            out.extend_from_slice(&extra.to_le_bytes());
        }
    }
    if node_count % 2 == 1 {
        out.extend_from_slice(&[0, 0]);
    }
    Ok(out)
}

/// The RBP-based record of the stack probe: RSP = RBP, then pop RBP.
fn rbp_record() -> Result<Vec<u8>, Error> {
    let push = [u16::from(RBP << 4 | UWOP_PUSH_NONVOL) << 8];
    let set_fp = [u16::from(UWOP_SET_FPREG) << 8];
    record(0, &[(0, &push[..]), (0, &set_fp[..])], true)
}

/// Replaces every `add rsp, imm` that directly precedes `mov rsp, rbp; pop rbp; ret` with a NOP of the same
/// length (see the module doc); returns how many it replaced. Offsets, branches and relocations are unchanged.
///
/// Only the byte ranges in `epilogues` are decoded: each must start at an instruction boundary and hold the
/// instructions Cranelift emitted for one `return` (its epilogue comes last). `codegen` takes them from the source
/// locations it gives the returns, so a function is not decoded as a whole (with its one-time decoder table setup,
/// that was 8.4 M of 453 M instructions of ten lowerings of `samples/bench/unrolled_xdp.o` under callgrind).
pub fn drop_redundant_epilogue_adds(code: &mut [u8], epilogues: &[Range<usize>]) -> usize {
    let mut replaced = 0;
    for range in epilogues {
        let Some(bytes) = code.get(range.clone()) else { continue };
        let insts: Vec<_> = Decoder::with_ip(64, bytes, range.start as u64, DecoderOptions::NONE).iter().collect();
        for w in insts.windows(4) {
            if let Some(at) = redundant_epilogue_add(w) {
                let nop: &[u8] = match w[0].len() {
                    4 => &[0x0f, 0x1f, 0x40, 0x00],                   // nop dword [rax + 0]
                    7 => &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00], // nop dword [rax + 0] (disp32)
                    _ => continue,
                };
                code[at..at + nop.len()].copy_from_slice(nop);
                replaced += 1;
            }
        }
    }
    replaced
}

/// The offset of `w[0]` when `w` is `add rsp, imm; mov rsp, rbp; pop rbp; ret`.
fn redundant_epilogue_add(w: &[iced_x86::Instruction]) -> Option<usize> {
    let is_add_rsp = w[0].mnemonic() == Mnemonic::Add
        && w[0].op0_kind() == OpKind::Register
        && w[0].op0_register() == Register::RSP
        && matches!(w[0].op1_kind(), OpKind::Immediate8to64 | OpKind::Immediate32to64);
    let is_mov_rsp_rbp = w[1].mnemonic() == Mnemonic::Mov
        && w[1].op0_kind() == OpKind::Register
        && w[1].op1_kind() == OpKind::Register
        && w[1].op0_register() == Register::RSP
        && w[1].op1_register() == Register::RBP;
    let is_pop_rbp = w[2].mnemonic() == Mnemonic::Pop && w[2].op0_register() == Register::RBP;
    (is_add_rsp && is_mov_rsp_rbp && is_pop_rbp && w[3].mnemonic() == Mnemonic::Ret).then_some(w[0].ip() as usize)
}

/// Builds the unwind fragments of a function (see the module doc).
pub fn fragments(code: &[u8], insts: &[(u32, UnwindInst)]) -> Result<Vec<UnwindFragment>, Error> {
    let p = prologue(code, insts)?;
    let len = code.len() as u32;
    let all: Vec<(u32, &[u16])> = p.operations.iter().map(|o| (o.end, &o.nodes[..])).collect();
    let mut out = Vec::new();
    // Anything between `mov rbp, rsp` and the allocation is Cranelift's inline stack probe.
    let probe = p.alloc_start.filter(|s| *s > p.frame_set).map(|s| (p.frame_set, s));
    let mut start = 0;
    if let Some((probe_start, probe_end)) = probe {
        let before: Vec<_> = all.iter().filter(|(e, _)| *e <= probe_start).copied().collect();
        out.push(UnwindFragment { start: 0, end: probe_start, record: record(probe_start, &before, false)? });
        out.push(UnwindFragment { start: probe_start, end: probe_end, record: rbp_record()? });
        start = probe_end;
    }
    // The (rest of the) prologue and the body.
    let relative: Vec<(u32, &[u16])> = all.iter().map(|(e, n)| (if *e <= start { 0 } else { e - start }, *n)).collect();
    out.push(UnwindFragment { start, end: len, record: record(p.end.saturating_sub(start), &relative, false)? });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_add_before_mov_rsp_rbp_becomes_a_nop_of_the_same_length() {
        // add rsp, 0x20 ; mov rsp, rbp ; pop rbp ; ret ; add rsp, 0x1000 ; mov rsp, rbp ; pop rbp ; ret
        let mut code = vec![0x48, 0x83, 0xc4, 0x20, 0x48, 0x89, 0xec, 0x5d, 0xc3];
        code.extend_from_slice(&[0x48, 0x81, 0xc4, 0x00, 0x10, 0x00, 0x00, 0x48, 0x89, 0xec, 0x5d, 0xc3]);
        let all = 0..code.len();
        assert_eq!(drop_redundant_epilogue_adds(&mut code, &[all]), 2);
        assert_eq!(&code[..4], &[0x0f, 0x1f, 0x40, 0x00]);
        assert_eq!(&code[9..16], &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(&code[4..9], &[0x48, 0x89, 0xec, 0x5d, 0xc3]);
    }

    #[test]
    fn only_the_given_return_ranges_are_rewritten() {
        // mov eax, 1 ; add rsp, 0x20 ; mov rsp, rbp ; pop rbp ; ret, twice; only the second return is given.
        let one = [0xb8, 0x01, 0x00, 0x00, 0x00, 0x48, 0x83, 0xc4, 0x20, 0x48, 0x89, 0xec, 0x5d, 0xc3];
        let mut code = [one, one].concat();
        let second = one.len()..2 * one.len();
        assert_eq!(drop_redundant_epilogue_adds(&mut code, std::slice::from_ref(&second)), 1);
        assert_eq!(&code[..one.len()], &one);
        assert_eq!(&code[one.len() + 5..one.len() + 9], &[0x0f, 0x1f, 0x40, 0x00]);
    }

    #[test]
    fn an_add_rsp_not_followed_by_the_frame_teardown_stays() {
        // add rsp, 0x20 ; ret
        let mut code = vec![0x48, 0x83, 0xc4, 0x20, 0xc3];
        let all = 0..code.len();
        assert_eq!(drop_redundant_epilogue_adds(&mut code, &[all]), 0);
        assert_eq!(code, [0x48, 0x83, 0xc4, 0x20, 0xc3]);
    }
}
