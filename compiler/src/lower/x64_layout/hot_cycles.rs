//! The order the re-layout writes a function's instructions in: each loop's fall-through cycle followed by the
//! blocks its branches leave it for.
//!
//! In: the decoded instructions in Cranelift's order, and which of them are loop heads. Out: a permutation of their
//! indices. Everything but the blocks named below keeps its order.
//!
//! Why: Cranelift lays blocks out in reverse postorder, so a loop head's fall-through successors come right after
//! it, but a block that a branch in that path leaves for — the `then` side of a test at the head, the return block
//! of an exit test — goes after every block the fall-through side dominates. The branch to it then needs a rel32
//! displacement, and the loop's cycle of fall-through instructions (head → untaken tests → `jmp head`) grows by 4
//! bytes for each one. On the benchmark machine (Intel Xeon, KVM) `branchy`'s tokenizer loop runs at clang's speed
//! only when that cycle fits in one 64-byte line, as clang lays it out (2.77 µs per run against 3.3–3.9 µs for the
//! same instructions over two lines, measured by mapping the code at every alignment; samples/bench/README.md).
//! Placing those blocks right after the cycle's closing `jmp` makes every branch out of the cycle short, as a
//! native compiler's block placement does, and keeps them out of the cycle's line. Those branches, and the branches
//! inside the moved blocks (the loop's other paths, now packed after the cycle), start in their 2-byte form; other
//! forward branches keep rel32 (`x64_layout` module documentation). Packing the moved blocks too measured 1.06x of
//! clang for `branchy` against 1.11x with them long (same instructions, code mapped at the same offset).
//!
//! Which blocks move: a *cycle* is the run of instructions from a loop head to the first unconditional `jmp`, when
//! that `jmp` goes back to the head and no other loop head or stop (`ret`, `ud2`) comes first. A *block* leaving it
//! is the target `t` of one of its conditional branches, later in the code than the cycle, up to and including the
//! first unconditional `jmp` after `t`; it moves only when nothing can fall into it (the instruction before `t`
//! is a `jmp` or a stop), when it holds no loop head, no stop and no instruction of a cycle or of another moved
//! block, and when it is at most [`MAX_BLOCK_BYTES`] long. Both ends are unconditional jumps, so removing the block
//! from its place and inserting it after another `jmp` changes no fall-through edge: every other edge is a branch,
//! which the layout re-aims at the new offset (`check_same_program` proves the control flow is the same). The
//! blocks of one cycle are written smallest first, so the most of them are within a short branch's reach.

use std::collections::HashMap;

use super::{Decoded, Kind};

/// The longest block moved after a cycle: longer ones could not all be reached with 2-byte branches anyway.
const MAX_BLOCK_BYTES: usize = 96;

/// The most instructions a cycle is followed through (a hot cycle that fits a cache line has far fewer).
const MAX_CYCLE_INSTRUCTIONS: usize = 48;

/// The write order [`write_order`] plans.
pub(super) struct HotOrder {
    /// The instructions' indices in the order they are written.
    pub order: Vec<usize>,
    /// Per instruction: a branch of a cycle to a block moved right after it, or any instruction of a moved block;
    /// a branch among them starts in its 2-byte form.
    pub starts_short: Vec<bool>,
}

/// The instructions' write order (module documentation).
pub(super) fn write_order(instructions: &[Decoded], index_of: &HashMap<usize, usize>, loop_head: &[bool]) -> HotOrder {
    let n = instructions.len();
    let cycles: Vec<(usize, usize)> = (0..n)
        .filter(|&h| loop_head[h])
        .filter_map(|h| cycle_from(instructions, loop_head, h).map(|c| (h, c)))
        .collect();
    // Instructions that must stay where they are: the cycles themselves, then each moved block.
    let mut claimed = vec![false; n];
    for &(h, c) in &cycles {
        claimed[h..=c].iter_mut().for_each(|x| *x = true);
    }
    let mut after: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut moved = vec![false; n];
    let mut starts_short = vec![false; n];
    for &(h, c) in &cycles {
        let mut blocks = Vec::new();
        for (i, d) in instructions.iter().enumerate().take(c + 1).skip(h) {
            let Kind::CondJump { target, .. } = d.kind else { continue };
            let Some(&t) = index_of.get(&target) else { continue };
            if t <= c {
                continue;
            }
            // A second branch of the cycle to a block already moved after it is short like the first.
            if !blocks.iter().any(|&(start, _)| start == t) {
                let Some(e) = movable_block(instructions, loop_head, &claimed, t) else { continue };
                claimed[t..=e].iter_mut().for_each(|x| *x = true);
                moved[t..=e].iter_mut().for_each(|x| *x = true);
                starts_short[t..=e].iter_mut().for_each(|x| *x = true);
                blocks.push((t, e));
            }
            starts_short[i] = true;
        }
        let bytes = |&(t, e): &(usize, usize)| instructions[e].offset + instructions[e].len - instructions[t].offset;
        blocks.sort_by_key(bytes);
        after.insert(c, blocks);
    }
    let mut order = Vec::with_capacity(n);
    for i in (0..n).filter(|&i| !moved[i]) {
        order.push(i);
        for &(t, e) in after.get(&i).into_iter().flatten() {
            order.extend(t..=e);
        }
    }
    HotOrder { order, starts_short }
}

/// The index of the `jmp` that closes the cycle starting at loop head `h`, if it is one (module documentation).
fn cycle_from(instructions: &[Decoded], loop_head: &[bool], h: usize) -> Option<usize> {
    let head = instructions[h].offset;
    for (i, d) in instructions.iter().enumerate().skip(h).take(MAX_CYCLE_INSTRUCTIONS) {
        if i != h && loop_head[i] {
            return None;
        }
        match d.kind {
            Kind::Jump { target } => return (target == head).then_some(i),
            Kind::Stop => return None,
            _ => {}
        }
    }
    None
}

/// The last index of the block starting at `t` when it may move (module documentation).
fn movable_block(instructions: &[Decoded], loop_head: &[bool], claimed: &[bool], t: usize) -> Option<usize> {
    if !matches!(instructions[t.checked_sub(1)?].kind, Kind::Jump { .. } | Kind::Stop) {
        return None;
    }
    let start = instructions[t].offset;
    for (i, d) in instructions.iter().enumerate().skip(t) {
        if claimed[i] || loop_head[i] || d.offset + d.len - start > MAX_BLOCK_BYTES {
            return None;
        }
        match d.kind {
            Kind::Jump { .. } => return Some(i),
            Kind::Stop => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::{check_same_program, shorten_and_align_loops, LOOP_ALIGNMENT};

    /// `push rbp; H: cmp al, 9 (3c 09); jbe T (rel32); add al, 1 (04 01); jmp H (rel32); <cold: ret>; T: add al, 2;
    /// jmp H (rel32); ret`, with `filler` times `add al, 3` and a `ret` between the exit's `ret` and T: the head's
    /// `then` block comes after unrelated code, as Cranelift's reverse postorder puts it.
    fn loop_with_side_block(filler: usize) -> Vec<u8> {
        let mut code = vec![0x55];
        let head = code.len();
        code.extend_from_slice(&[0x3c, 0x09]);
        let jbe = code.len();
        code.extend_from_slice(&[0x0f, 0x86, 0, 0, 0, 0]);
        code.extend_from_slice(&[0x04, 0x01]);
        let back = code.len();
        code.push(0xe9);
        code.extend_from_slice(&(head as i32 - (back as i32 + 5)).to_le_bytes());
        code.push(0xc3); // the exit path's `ret`: nothing falls into T
        for _ in 0..filler {
            code.extend_from_slice(&[0x04, 0x03]);
        }
        code.push(0xc3);
        let t = code.len();
        code[jbe + 2..jbe + 6].copy_from_slice(&(t as i32 - (jbe as i32 + 6)).to_le_bytes());
        code.extend_from_slice(&[0x04, 0x02]);
        let back2 = code.len();
        code.push(0xe9);
        code.extend_from_slice(&(head as i32 - (back2 as i32 + 5)).to_le_bytes());
        code.push(0xc3);
        code
    }

    #[test]
    fn a_block_the_cycle_branches_to_is_written_right_after_the_cycle() {
        let code = loop_with_side_block(100);
        let out = shorten_and_align_loops(&code, &mut [], 1).expect("re-laid").code;
        check_same_program(&code, &out).unwrap();
        let l = LOOP_ALIGNMENT;
        // H: cmp; jbe +4 (short, to T right after the cycle); add; jmp H (short); T: add al, 2; jmp H (short).
        assert_eq!(&out[l..l + 8], &[0x3c, 0x09, 0x76, 0x04, 0x04, 0x01, 0xeb, 0xf8]);
        assert_eq!(&out[l + 8..l + 12], &[0x04, 0x02, 0xeb, 0xf4]);
        assert_eq!(out[l + 12], 0xc3, "then the exit's ret and the filler, in their old order");
    }

    #[test]
    fn branches_inside_a_moved_block_start_short() {
        // T becomes `add al, 2; jne +2 (rel32); add al, 4; jmp H`: a forward branch inside the moved block.
        let mut code = loop_with_side_block(100);
        let t = code.len() - 8;
        let tail = code.split_off(t);
        code.extend_from_slice(&tail[..2]);
        code.extend_from_slice(&[0x0f, 0x85, 2, 0, 0, 0, 0x04, 0x04]);
        let back = code.len();
        code.push(0xe9);
        code.extend_from_slice(&(1 - (back as i32 + 5)).to_le_bytes());
        code.push(0xc3);
        let out = shorten_and_align_loops(&code, &mut [], 1).expect("re-laid").code;
        check_same_program(&code, &out).unwrap();
        let l = LOOP_ALIGNMENT;
        assert_eq!(&out[l + 8..l + 16], &[0x04, 0x02, 0x75, 0x02, 0x04, 0x04, 0xeb, 0xf0], "T, packed after the cycle");
    }

    #[test]
    fn a_block_something_falls_into_stays_where_it_is() {
        let mut code = loop_with_side_block(2);
        // The `ret` before T becomes a `cld` (fc), which falls through into T.
        let t = code.len() - 8;
        assert_eq!(code[t - 1], 0xc3);
        code[t - 1] = 0xfc;
        let out = shorten_and_align_loops(&code, &mut [], 1).expect("re-laid").code;
        check_same_program(&code, &out).unwrap();
        let l = LOOP_ALIGNMENT;
        // T stays after the filler, and the `jbe` to it keeps its rel32 form (only exits to moved blocks start short).
        assert_eq!(&out[l..l + 4], &[0x3c, 0x09, 0x0f, 0x86]);
        assert_eq!(&out[l + 8..l + 14], &[0x04, 0x01, 0xeb, 0xf4, 0xc3, 0x04], "the cycle, the exit's ret, the filler");
    }

    #[test]
    fn the_check_rejects_a_moved_block_that_changes_the_control_flow() {
        let code = loop_with_side_block(100);
        let out = shorten_and_align_loops(&code, &mut [], 1).expect("re-laid").code;
        let l = LOOP_ALIGNMENT;
        // T's `jmp H` re-aimed at the cycle's `add` instead of H.
        let mut wrong = out.clone();
        wrong[l + 11] = 0xf6;
        assert!(check_same_program(&code, &wrong).is_err());
        // The cycle's `jbe` aimed at T's `jmp` (skipping T's add).
        let mut skipped = out.clone();
        skipped[l + 3] = 0x06;
        assert!(check_same_program(&code, &skipped).is_err());
    }
}
