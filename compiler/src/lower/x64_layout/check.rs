//! The proof obligation of the re-layout: the new bytes are the same program as Cranelift's.
//!
//! In: the bytes before and after [`super::shorten_and_align_loops`]. Out: `Ok` or what differs.
//!
//! The re-layout pads, shortens branches and moves whole blocks ([`super::hot_cycles`]), so the two byte strings
//! are compared as control-flow graphs of instructions: starting from each entry, every instruction that does
//! something (all but NOPs and unconditional jumps, which only say where execution goes next) must have the same
//! bytes — or, for a conditional branch, the same condition; for a RIP-relative operand, the same bytes apart from
//! the displacement and the same constant — and its successors (the instruction execution falls into, the branch
//! target) must correspond again. The correspondence must be one-to-one, and both programs must hold the same
//! number of such instructions, so none is dropped or duplicated.

use std::collections::HashMap;

use super::{decode, Decoded, Kind, POOL_ALIGNMENT};

/// Where execution goes next, once NOPs and unconditional jumps are followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// The instruction with this index.
    At(usize),
    /// Past the last instruction.
    End,
    /// A chain of unconditional jumps that never leaves itself (`loop {}`).
    Spin,
}

/// One side of the comparison: its instructions (without the zero padding before the pool) and where its pool starts.
struct Program<'a> {
    code: &'a [u8],
    list: Vec<Decoded>,
    index: HashMap<usize, usize>,
    end: usize,
    pool: usize,
}

impl<'a> Program<'a> {
    fn decode(code: &'a [u8], what: &str) -> Result<Self, String> {
        let (mut list, pool) = decode(code).ok_or(format!("the {what} does not decode"))?;
        // Zero padding before the pool decodes as `add [rax], al`; it is never executed and its length may differ.
        while list.last().is_some_and(|d| code[d.offset..d.offset + d.len].iter().all(|&b| b == 0)) {
            list.pop();
        }
        let index = list.iter().enumerate().map(|(i, d)| (d.offset, i)).collect();
        let end = list.last().map_or(0, |d| d.offset + d.len);
        Ok(Program { code, list, index, end, pool })
    }

    fn bytes(&self, d: &Decoded) -> &[u8] {
        &self.code[d.offset..d.offset + d.len]
    }

    /// Where execution continues at old offset `offset`, following NOPs and unconditional jumps.
    fn resolve(&self, offset: usize) -> Result<Next, String> {
        let mut at = offset;
        for _ in 0..=self.list.len() {
            if at == self.end {
                return Ok(Next::End);
            }
            let &i = self.index.get(&at).ok_or(format!("a branch to {at:#x}, inside an instruction"))?;
            match self.list[i].kind {
                Kind::Nop => at = self.list[i].offset + self.list[i].len,
                Kind::Jump { target } => at = target,
                _ => return Ok(Next::At(i)),
            }
        }
        Ok(Next::Spin)
    }

    /// The instruction after `d` when it falls through.
    fn fall_through(&self, d: &Decoded) -> Result<Next, String> {
        self.resolve(d.offset + d.len)
    }

    /// Instructions that do something (not NOPs, not unconditional jumps).
    fn working_instructions(&self) -> usize {
        self.list.iter().filter(|d| !matches!(d.kind, Kind::Nop | Kind::Jump { .. })).count()
    }
}

/// Checks that `new` is `old` re-laid out (module documentation). Debug builds run it on every function the pass
/// changes; release builds too, in `codegen`, where a failure keeps Cranelift's bytes.
pub fn check_same_program(old: &[u8], new: &[u8]) -> Result<(), String> {
    let (a, b) = (Program::decode(old, "original")?, Program::decode(new, "re-laid-out code")?);
    let (x_count, y_count) = (a.working_instructions(), b.working_instructions());
    if x_count != y_count {
        return Err(format!("{x_count} instructions became {y_count}"));
    }
    let mut forward: HashMap<usize, usize> = HashMap::new();
    let mut backward: HashMap<usize, usize> = HashMap::new();
    let mut work = vec![(a.resolve(0)?, b.resolve(0)?)];
    while let Some(pair) = work.pop() {
        let (x, y) = match pair {
            (Next::At(x), Next::At(y)) => (x, y),
            (Next::End, Next::End) | (Next::Spin, Next::Spin) => continue,
            _ => return Err(format!("control flow differs: {:?} became {:?}", pair.0, pair.1)),
        };
        let (dx, dy) = (a.list[x], b.list[y]);
        match (forward.get(&x), backward.get(&y)) {
            (Some(&seen), _) if seen == y => continue,
            (None, None) => {
                forward.insert(x, y);
                backward.insert(y, x);
            }
            _ => {
                return Err(format!(
                    "old offset {:#x} and new {:#x} correspond to different instructions",
                    dx.offset, dy.offset
                ))
            }
        }
        let same = match (dx.kind, dy.kind) {
            (Kind::Plain, Kind::Plain) | (Kind::Stop, Kind::Stop) => a.bytes(&dx) == b.bytes(&dy),
            (Kind::CondJump { cc, target: t }, Kind::CondJump { cc: c2, target: u }) => {
                work.push((a.resolve(t)?, b.resolve(u)?));
                cc == c2
            }
            (Kind::RipRelative { disp_at, target: t }, Kind::RipRelative { disp_at: e, target: u }) => {
                // The same instruction bytes apart from the displacement, and the same constant.
                let without_displacement = |bytes: &[u8], at: usize| [&bytes[..at], &bytes[at + 4..]].concat();
                disp_at == e
                    && without_displacement(a.bytes(&dx), disp_at) == without_displacement(b.bytes(&dy), e)
                    && t >= a.pool
                    && u >= b.pool
                    && t - a.pool == u - b.pool
            }
            _ => false,
        };
        if !same {
            return Err(format!("instruction at old offset {:#x} (new {:#x}) differs", dx.offset, dy.offset));
        }
        if !matches!(dx.kind, Kind::Stop) {
            work.push((a.fall_through(&dx)?, b.fall_through(&dy)?));
        }
    }
    let (a_data, b_data) = (a.pool.max(a.end), b.pool.max(b.end));
    let has_pool = a.pool < old.len();
    if old[a_data..] != new[b_data..] || has_pool && a.pool % POOL_ALIGNMENT != b.pool % POOL_ALIGNMENT {
        return Err("the constant pool differs or lost its alignment".into());
    }
    Ok(())
}
