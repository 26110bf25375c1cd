//! ARM64 `.xdata` from the machine code (Microsoft, "ARM64 exception handling").
//!
//! In: a function's A64 code and where its prologue ends. Out: [`UnwindFragment`]s, each one `.pdata`/`.xdata`
//! pair, that unwind exactly at every instruction offset.
//!
//! Every prologue and epilogue instruction is decoded and given the unwind code(s) that undo it; the unwinder maps
//! codes to instructions one to one (prologue codes in reverse order, epilogue codes in execution order, an
//! epilogue's `ret` being its `end`). Where that mapping cannot hold, the function is split into fragments:
//! - `stp` of two registers that are not consecutive (`stp x19, x24`) needs two codes (`save_reg x24, #8` and
//!   `save_reg_x x19, #-16`): `save_regp` always means x(N) and x(N+1). The prologue fragment ends after such an
//!   instruction (its own code there is a `nop` the unwinder never reaches), and the next fragment describes the
//!   instructions before it after an `end_c` — the "phantom prologue" that the count ignores but the unwinder
//!   executes. In an epilogue, a new fragment begins after such an `ldp`, with an epilogue scope at its start.
//! - Functions over 1 MiB (the 18-bit FunctionLength) are split in the body, never inside an epilogue.
//!
//! The stack probe that Cranelift puts between `mov x29, sp` and the register saves (an unrolled `sub sp` /
//! `stur wzr, [sp]` / `add sp` sequence or a loop on x16/x17 that leaves sp alone) gets a `nop` per instruction:
//! the `set_fp` that follows them in unwind order restores sp from x29 wherever the probe left it.

use super::UnwindFragment;

/// One decoded frame instruction: the unwind codes that undo it (most instructions need exactly one).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Undo(Vec<Vec<u8>>);

impl Undo {
    fn one(code: Vec<u8>) -> Undo {
        Undo(vec![code])
    }
    fn is_single(&self) -> bool {
        self.0.len() == 1
    }
    fn flat(&self) -> impl Iterator<Item = &u8> {
        self.0.iter().flatten()
    }
}

const NOP: u8 = 0xe3;
const END: u8 = 0xe4;
const END_C: u8 = 0xe5;
const SET_FP: u8 = 0xe1;
const RET: u32 = 0xd65f_03c0;
/// FunctionLength is 18 bits of 4-byte units.
const MAX_FRAGMENT_WORDS: usize = (1 << 18) - 1;

fn rt(w: u32) -> u32 {
    w & 31
}
fn rn(w: u32) -> u32 {
    (w >> 5) & 31
}
fn rt2(w: u32) -> u32 {
    (w >> 10) & 31
}
/// The scaled 7-bit offset of a 64-bit pair access, in bytes.
fn imm7(w: u32) -> i64 {
    ((((w >> 15) & 0x7f) as i32) << 25 >> 25) as i64 * 8
}
/// The 9-bit unscaled offset of a pre/post-indexed single access.
fn imm9(w: u32) -> i64 {
    ((((w >> 12) & 0x1ff) as i32) << 23 >> 23) as i64
}

fn alloc(size: u64) -> Option<Vec<u8>> {
    if !size.is_multiple_of(16) {
        return None;
    }
    let units = size / 16;
    Some(if units < 32 {
        vec![units as u8]
    } else if units < 2048 {
        vec![0xc0 | (units >> 8) as u8, units as u8]
    } else if units < 1 << 24 {
        vec![0xe0, (units >> 16) as u8, (units >> 8) as u8, units as u8]
    } else {
        return None;
    })
}

/// `save_reg_x`/`save_freg_x` (pre-indexed by `-16`) of x`reg` or d`reg`.
fn save_single_x(reg: u32, fp: bool) -> Option<Vec<u8>> {
    // Z encodes the pre-index as -(Z+1)*8: 16 bytes is Z = 1.
    if fp {
        let x = reg.checked_sub(8).filter(|x| *x < 8)?;
        Some(vec![0xde, ((x << 5) | 1) as u8]) // save_freg_x
    } else {
        let x = reg.checked_sub(19).filter(|x| *x < 11)?;
        Some(vec![0xd4 | (x >> 3) as u8, (((x & 7) << 5) | 1) as u8]) // save_reg_x
    }
}

/// `save_reg`/`save_freg` of x`reg` or d`reg` at `[sp + offset]` (no write-back).
fn save_single(reg: u32, offset: i64, fp: bool) -> Option<Vec<u8>> {
    let z = u32::try_from(offset / 8).ok().filter(|z| *z < 64 && offset % 8 == 0)?;
    if fp {
        let x = reg.checked_sub(8).filter(|x| *x < 8)?;
        Some(vec![0xdc | (x >> 2) as u8, (((x & 3) << 6) | z) as u8]) // save_freg
    } else {
        let x = reg.checked_sub(19).filter(|x| *x < 11)?;
        Some(vec![0xd0 | (x >> 2) as u8, (((x & 3) << 6) | z) as u8]) // save_reg
    }
}

/// The codes that undo `stp a, b, [sp, #-16]!` (prologue) or `ldp a, b, [sp], #16` (epilogue).
fn pair_x(a: u32, b: u32, fp: bool) -> Option<Undo> {
    if !fp && a == 29 && b == 30 {
        return Some(Undo::one(vec![0x81])); // save_fplr_x, pre-index -16
    }
    if b == a + 1 {
        let code = if fp {
            let x = a.checked_sub(8).filter(|x| *x < 7)?;
            vec![0xda | (x >> 2) as u8, (((x & 3) << 6) | 1) as u8] // save_fregp_x
        } else {
            let x = a.checked_sub(19).filter(|x| *x < 10)?;
            vec![0xcc | (x >> 2) as u8, (((x & 3) << 6) | 1) as u8] // save_regp_x
        };
        return Some(Undo::one(code));
    }
    // Not a consecutive pair: b from [sp + 8], then a from [sp] with the write-back.
    Some(Undo(vec![save_single(b, 8, fp)?, save_single_x(a, fp)?]))
}

/// A prologue instruction's undo codes, tracking the constants Cranelift loads into x16/x17 for large
/// allocations; `fp_set` says whether `mov x29, sp` has executed (the probe may then move sp freely).
fn prologue_undo(w: u32, next: Option<u32>, scratch: &mut [u64; 2], fp_set: bool) -> Option<Undo> {
    let nop = || Some(Undo::one(vec![NOP]));
    match w {
        // stp (x or d), pre-indexed by -16, base sp.
        _ if w & 0xffc0_0000 == 0xa980_0000 && rn(w) == 31 && imm7(w) == -16 => pair_x(rt(w), rt2(w), false),
        _ if w & 0xffc0_0000 == 0x6d80_0000 && rn(w) == 31 && imm7(w) == -16 => pair_x(rt(w), rt2(w), true),
        // str x / str d, pre-indexed by -16, base sp.
        _ if w & 0xffe0_0c00 == 0xf800_0c00 && rn(w) == 31 && imm9(w) == -16 => {
            Some(Undo::one(save_single_x(rt(w), false)?))
        }
        _ if w & 0xffe0_0c00 == 0xfc00_0c00 && rn(w) == 31 && imm9(w) == -16 => {
            Some(Undo::one(save_single_x(rt(w), true)?))
        }
        // mov x29, sp (add x29, sp, #0) / add x29, sp, #imm.
        _ if w & 0xffc0_0000 == 0x9100_0000 && rn(w) == 31 && rt(w) == 29 => {
            let imm = u64::from((w >> 10) & 0xfff);
            if imm == 0 {
                Some(Undo::one(vec![SET_FP]))
            } else if imm % 8 == 0 && imm / 8 < 256 {
                Some(Undo::one(vec![0xe2, (imm / 8) as u8]))
            } else {
                None
            }
        }
        // sub sp, sp, #imm{, lsl #12}: an unrolled probe step (followed by its touch of the new page) once fp holds
        // the frame, else the allocation.
        _ if w & 0xff80_0000 == 0xd100_0000 && rn(w) == 31 && rt(w) == 31 => {
            let imm = u64::from((w >> 10) & 0xfff) << if w & (1 << 22) != 0 { 12 } else { 0 };
            if fp_set && next.is_some_and(is_probe_touch) {
                nop()
            } else {
                Some(Undo::one(alloc(imm)?))
            }
        }
        // add sp, sp, #imm: the end of an unrolled probe (sp back to x29).
        _ if w & 0xff80_0000 == 0x9100_0000 && rn(w) == 31 && rt(w) == 31 && fp_set => nop(),
        // sub sp, sp, x16|x17, uxtx: a large allocation.
        _ if w & 0xffe0_fc00 == 0xcb20_6000 && rn(w) == 31 && rt(w) == 31 => {
            let m = (w >> 16) & 31;
            let value = *scratch.get(m.checked_sub(16)? as usize)?;
            Some(Undo::one(alloc(value)?))
        }
        // movz/movk/movn x16|x17 (or w16|w17): the size of a large allocation or the probe loop's bounds.
        _ if is_move_wide(w) && (16..=17).contains(&rt(w)) => {
            let slot = &mut scratch[(rt(w) - 16) as usize];
            let shift = ((w >> 21) & 3) * 16;
            let imm = u64::from((w >> 5) & 0xffff) << shift;
            let value = match (w >> 29) & 3 {
                2 => imm,                                // movz
                3 => (*slot & !(0xffff << shift)) | imm, // movk
                _ => !imm,                               // movn
            };
            // A 32-bit move writes the W register and zeroes the upper half.
            *slot = if w >> 31 == 0 { value & 0xffff_ffff } else { value };
            nop()
        }
        // The probe loop: sub x16, x16, #step; str wzr, [sp, x16]; cmn x16, x17; b.gt loop. It leaves sp alone.
        _ if fp_set && is_probe_loop_instruction(w) => nop(),
        _ if fp_set && is_probe_touch(w) => nop(),
        _ => None,
    }
}

/// MOVN/MOVZ/MOVK, 32- or 64-bit.
fn is_move_wide(w: u32) -> bool {
    w & 0x1f80_0000 == 0x1280_0000 && (w >> 29) & 3 != 1
}

/// `stur wzr, [sp]` / `str wzr, [sp]`: an unrolled probe's touch of the page sp just moved to.
fn is_probe_touch(w: u32) -> bool {
    w == 0xb800_03ff || w == 0xb900_03ff
}

fn is_probe_loop_instruction(w: u32) -> bool {
    let scratch = |r: u32| r == 16 || r == 17;
    (w & 0xff80_0000 == 0xd100_0000 && scratch(rt(w)) && scratch(rn(w))) // sub x16, x16, #imm
        || (w & 0xffe0_0c00 == 0xb820_0800 && rn(w) == 31 && rt(w) == 31) // str wzr, [sp, xM]
        || (w & 0xff20_001f == 0xab00_001f && scratch(rn(w))) // cmn x16, x17 (adds xzr, ...)
        || (w & 0xff00_0010 == 0x5400_0000 && (w >> 23) & 1 == 1) // b.cond backwards
}

/// An epilogue instruction's undo codes (what remains to be done when it has not executed yet).
fn epilogue_undo(w: u32, scratch: &mut [u64; 2]) -> Option<Undo> {
    match w {
        // ldp (x or d), post-indexed by 16, base sp.
        _ if w & 0xffc0_0000 == 0xa8c0_0000 && rn(w) == 31 && imm7(w) == 16 => pair_x(rt(w), rt2(w), false),
        _ if w & 0xffc0_0000 == 0x6cc0_0000 && rn(w) == 31 && imm7(w) == 16 => pair_x(rt(w), rt2(w), true),
        // ldr x / ldr d, post-indexed by 16.
        _ if w & 0xffe0_0c00 == 0xf840_0400 && rn(w) == 31 && imm9(w) == 16 => {
            Some(Undo::one(save_single_x(rt(w), false)?))
        }
        _ if w & 0xffe0_0c00 == 0xfc40_0400 && rn(w) == 31 && imm9(w) == 16 => {
            Some(Undo::one(save_single_x(rt(w), true)?))
        }
        // add sp, sp, #imm{, lsl #12}.
        _ if w & 0xff80_0000 == 0x9100_0000 && rn(w) == 31 && rt(w) == 31 => {
            let imm = u64::from((w >> 10) & 0xfff) << if w & (1 << 22) != 0 { 12 } else { 0 };
            Some(Undo::one(alloc(imm)?))
        }
        // add sp, sp, x16|x17, uxtx.
        _ if w & 0xffe0_fc00 == 0x8b20_6000 && rn(w) == 31 && rt(w) == 31 => {
            let m = (w >> 16) & 31;
            Some(Undo::one(alloc(*scratch.get(m.checked_sub(16)? as usize)?)?))
        }
        _ if is_move_wide(w) && (16..=17).contains(&rt(w)) => prologue_undo(w, None, scratch, false),
        _ => None,
    }
}

/// An epilogue: instruction index of its first instruction and of its `ret`, and each instruction's undo.
struct Epilogue {
    start: usize,
    ret: usize,
    undo: Vec<Undo>,
}

fn find_epilogues(words: &[u32], prologue: usize) -> Vec<Epilogue> {
    let mut out = Vec::new();
    for (ret, &w) in words.iter().enumerate().skip(prologue) {
        if w != RET {
            continue;
        }
        // Walk back over epilogue forms, then decode forward (x16/x17 constants precede their use).
        let mut start = ret;
        while start > prologue && epilogue_undo(words[start - 1], &mut [0; 2]).is_some() {
            start -= 1;
        }
        let mut scratch = [0u64; 2];
        let undo: Vec<Undo> =
            words[start..ret].iter().map(|&w| epilogue_undo(w, &mut scratch).expect("checked above")).collect();
        out.push(Epilogue { start, ret, undo });
    }
    out
}

/// Why a function's unwind data cannot be written.
pub type Error = String;

/// Builds the unwind fragments of a function whose prologue is its first `prologue_bytes` bytes.
pub fn fragments(code: &[u8], prologue_bytes: usize) -> Result<Vec<UnwindFragment>, Error> {
    if !code.len().is_multiple_of(4) || !prologue_bytes.is_multiple_of(4) || prologue_bytes > code.len() {
        return Err(format!("code length {} / prologue {prologue_bytes} not whole instructions", code.len()));
    }
    let words: Vec<u32> = code.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let prologue = prologue_bytes / 4;
    let mut scratch = [0u64; 2];
    let mut fp_set = false;
    let mut undo = Vec::with_capacity(prologue);
    for (i, &w) in words[..prologue].iter().enumerate() {
        let u = prologue_undo(w, words[..prologue].get(i + 1).copied(), &mut scratch, fp_set)
            .ok_or_else(|| format!("prologue instruction {w:#010x} at {:#x} has no unwind code", 4 * i))?;
        fp_set |= u.0 == [vec![SET_FP]];
        undo.push(u);
    }
    let epilogues = find_epilogues(&words, prologue);
    let mut plan = Plan { words: words.len(), prologue_undo: undo, fragments: Vec::new() };
    plan.build(&epilogues)?;
    plan.fragments.into_iter().map(|f| f.encode()).collect()
}

/// A fragment under construction.
struct Fragment {
    start: usize,
    end: usize,
    /// Codes counted as this fragment's prologue (reverse order), then — after `end_c` when `phantom` is set —
    /// the codes of everything the function did before the fragment.
    counted: Vec<u8>,
    phantom: Option<Vec<u8>>,
    /// (start instruction relative to the fragment, codes ending with `end`).
    scopes: Vec<(usize, Vec<u8>)>,
}

struct Plan {
    words: usize,
    prologue_undo: Vec<Undo>,
    fragments: Vec<Fragment>,
}

impl Plan {
    /// The full body unwind: every prologue instruction undone, last first.
    fn body_codes(&self) -> Vec<u8> {
        self.prologue_undo.iter().rev().flat_map(|u| u.flat().copied()).collect()
    }

    fn build(&mut self, epilogues: &[Epilogue]) -> Result<(), Error> {
        // Prologue fragments: end one after every instruction that needs more than one code.
        let mut start = 0;
        for (i, u) in self.prologue_undo.iter().enumerate() {
            if !u.is_single() {
                let counted: Vec<u8> = self.prologue_undo[start..=i]
                    .iter()
                    .rev()
                    .flat_map(|u| if u.is_single() { u.0[0].clone() } else { vec![NOP] })
                    .collect();
                let phantom = (start > 0).then(|| self.undo_before(start));
                self.fragments.push(Fragment { start, end: i + 1, counted, phantom, scopes: Vec::new() });
                start = i + 1;
            }
        }
        let prologue = self.prologue_undo.len();
        let counted: Vec<u8> = self.prologue_undo[start..].iter().rev().flat_map(|u| u.0[0].clone()).collect();
        let phantom = (start > 0).then(|| self.undo_before(start));
        self.fragments.push(Fragment { start, end: self.words, counted, phantom, scopes: Vec::new() });
        // Epilogues: a scope in the current fragment; a new fragment after each multi-code instruction.
        let body = self.body_codes();
        for e in epilogues {
            let mut from = e.start;
            loop {
                let rest = &e.undo[from - e.start..];
                let split = rest.iter().position(|u| !u.is_single());
                let mut codes: Vec<u8> = rest.iter().flat_map(|u| u.flat().copied()).collect();
                codes.push(END);
                let current = self.fragments.last_mut().expect("at least one fragment");
                current.scopes.push((from - current.start, codes));
                match split {
                    Some(k) if from + k < e.ret => {
                        let at = from + k + 1;
                        self.split_at(at, &body);
                        from = at;
                    }
                    _ => break,
                }
            }
        }
        // Fragments over 1 MiB: split in the body, outside the prologue and every epilogue.
        let mut i = 0;
        while i < self.fragments.len() {
            let f = &self.fragments[i];
            if f.end - f.start > MAX_FRAGMENT_WORDS {
                let mut at = f.start + MAX_FRAGMENT_WORDS;
                while at > f.start && (at < prologue || epilogues.iter().any(|e| e.start < at && at <= e.ret)) {
                    at -= 1;
                }
                if at <= f.start {
                    return Err("no place to split a function over 1 MiB".into());
                }
                self.split_fragment(i, at, &body);
            }
            i += 1;
        }
        Ok(())
    }

    /// The codes that undo prologue instructions `0..count`, last first.
    fn undo_before(&self, count: usize) -> Vec<u8> {
        self.prologue_undo[..count].iter().rev().flat_map(|u| u.flat().copied()).collect()
    }

    /// Ends the last fragment at instruction `at` and starts a body fragment there.
    fn split_at(&mut self, at: usize, body: &[u8]) {
        let last = self.fragments.len() - 1;
        self.split_fragment(last, at, body);
    }

    /// Splits fragment `i` at instruction `at`; scopes at or after `at` move to the new fragment.
    fn split_fragment(&mut self, i: usize, at: usize, body: &[u8]) {
        let f = &mut self.fragments[i];
        let end = f.end;
        f.end = at;
        let start = f.start;
        let (keep, moved): (Vec<_>, Vec<_>) = f.scopes.drain(..).partition(|(s, _)| start + s < at);
        f.scopes = keep;
        let scopes = moved.into_iter().map(|(s, c)| (start + s - at, c)).collect();
        let next = Fragment { start: at, end, counted: Vec::new(), phantom: Some(body.to_vec()), scopes };
        self.fragments.insert(i + 1, next);
    }
}

impl Fragment {
    fn encode(self) -> Result<UnwindFragment, Error> {
        let mut codes = self.counted;
        if let Some(phantom) = &self.phantom {
            codes.push(END_C);
            codes.extend_from_slice(phantom);
        }
        codes.push(END);
        // Epilogue code sequences follow the prologue's; identical ones are stored once.
        let mut scopes = Vec::new();
        let mut sequences: Vec<(Vec<u8>, usize)> = Vec::new();
        for (start, seq) in &self.scopes {
            let index = match sequences.iter().find(|(s, _)| s == seq) {
                Some((_, index)) => *index,
                None => {
                    let index = codes.len();
                    codes.extend_from_slice(seq);
                    sequences.push((seq.clone(), index));
                    index
                }
            };
            if index >= 1 << 10 {
                return Err("epilogue codes beyond the 10-bit start index".into());
            }
            scopes.push((*start as u32) | ((index as u32) << 22));
        }
        while !codes.len().is_multiple_of(4) {
            codes.push(END);
        }
        let words = self.end - self.start;
        let code_words = codes.len() / 4;
        if words > MAX_FRAGMENT_WORDS || code_words > 255 || scopes.len() > 0xffff {
            return Err(format!(
                "fragment of {words} instructions, {code_words} code words, {} epilogues",
                scopes.len()
            ));
        }
        let mut record = Vec::with_capacity(8 + 4 * scopes.len() + codes.len());
        if scopes.len() < 32 && code_words < 32 && !(scopes.is_empty() && code_words == 0) {
            let header = (words as u32) | ((scopes.len() as u32) << 22) | ((code_words as u32) << 27);
            record.extend_from_slice(&header.to_le_bytes());
        } else {
            record.extend_from_slice(&(words as u32).to_le_bytes());
            record.extend_from_slice(&((scopes.len() as u32) | ((code_words as u32) << 16)).to_le_bytes());
        }
        for s in scopes {
            record.extend_from_slice(&s.to_le_bytes());
        }
        record.extend_from_slice(&codes);
        Ok(UnwindFragment { start: 4 * self.start as u32, end: 4 * self.end as u32, record })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn a_consecutive_pair_is_one_fragment_with_a_mirrored_epilogue_scope() {
        // stp x29,x30,[sp,#-16]! ; mov x29,sp ; stp x19,x20,[sp,#-16]! ; nop ; ldp x19,x20,[sp],#16 ;
        // ldp x29,x30,[sp],#16 ; ret
        let f =
            fragments(&code(&[0xa9bf7bfd, 0x910003fd, 0xa9bf53f3, 0xd503201f, 0xa8c153f3, 0xa8c17bfd, 0xd65f03c0]), 12)
                .unwrap();
        assert_eq!(f.len(), 1);
        let r = &f[0].record;
        let header = u32::from_le_bytes(r[..4].try_into().unwrap());
        assert_eq!(header & 0x3ffff, 7);
        assert_eq!((header >> 22) & 0x1f, 1, "one epilogue scope");
        let scope = u32::from_le_bytes(r[4..8].try_into().unwrap());
        assert_eq!(scope & 0x3ffff, 4);
        // Prologue codes: save_regp_x x19 (-16), set_fp, save_fplr_x 16, end; then the epilogue's.
        assert_eq!(&r[8..13], &[0xcc, 0x01, 0xe1, 0x81, 0xe4]);
        assert_eq!(&r[8 + (scope >> 22) as usize..][..4], &[0xcc, 0x01, 0x81, 0xe4]);
    }

    #[test]
    fn a_non_consecutive_pair_splits_the_prologue_and_the_epilogue() {
        // stp x29,x30 ; mov x29,sp ; stp x19,x24,[sp,#-16]! ; nop ; ldp x19,x24,[sp],#16 ; ldp x29,x30 ; ret
        let f =
            fragments(&code(&[0xa9bf7bfd, 0x910003fd, 0xa9bf63f3, 0xd503201f, 0xa8c163f3, 0xa8c17bfd, 0xd65f03c0]), 12)
                .unwrap();
        let bounds: Vec<_> = f.iter().map(|f| (f.start, f.end)).collect();
        assert_eq!(bounds, vec![(0, 12), (12, 20), (20, 28)]);
        // The second fragment: no counted prologue; end_c, then save_reg x24 #8 (D1 41), save_reg_x x19 -16
        // (D4 01), set_fp, save_fplr_x 16, end; its epilogue scope at 0 starts with the same pair codes.
        let r = &f[1].record;
        let header = u32::from_le_bytes(r[..4].try_into().unwrap());
        let scopes = ((header >> 22) & 0x1f) as usize;
        assert_eq!(scopes, 1);
        assert_eq!(&r[4 + 4 * scopes..][..8], &[0xe5, 0xd1, 0x41, 0xd4, 0x01, 0xe1, 0x81, 0xe4]);
    }
}
