//! `branchy`'s tokenizer loop ships with its hot cycle in one 64-byte line (`lower::x64_layout::hot_cycles`): the
//! loop head starts a line, and the fall-through path from it back to the head — letter test, letter body, exit
//! test, `jmp head` — is at most 64 bytes, every branch out of it in its 2-byte form. On the bench machine that is
//! the difference between 1.1x and 1.3x of clang -O2 (samples/bench/README.md), and each part of it (imm8 adds,
//! 32-bit compares, moved blocks, short exits) is a separate change that a later one could undo without any
//! functional test noticing. The program's result is checked by the bench tests (`native_bench`).

use std::path::Path;

use bpf2sys_tests::bench::{engines, programs};
use iced_x86::{Decoder, DecoderOptions, FlowControl};

/// The x64 code of bench program `name`'s entry function, lowered as the bench lowers it.
fn bench_code(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is inside the repository");
    let object = programs::bench_dir(root).join(format!("{name}.o"));
    let bytecode = programs::function_bytecode(&object, "entry").expect("bench object");
    let compiled = engines::lower_bytecode(name, &bytecode).expect("bench programs lower");
    compiled.functions[0].code.clone()
}

#[test]
fn branchys_letter_cycle_fits_one_cache_line_with_short_exits() {
    let code = bench_code("branchy");
    let decoded: Vec<_> = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE).into_iter().collect();
    // The loop head: the target of the first backward unconditional jump.
    let head = decoded
        .iter()
        .find(|i| i.flow_control() == FlowControl::UnconditionalBranch && i.near_branch_target() < i.ip())
        .map(|i| i.near_branch_target())
        .expect("branchy has a loop");
    assert_eq!(head % 64, 0, "the loop head starts a cache line");
    let cycle: Vec<_> = decoded.iter().skip_while(|i| i.ip() < head).collect();
    let close = cycle
        .iter()
        .position(|i| i.flow_control() == FlowControl::UnconditionalBranch)
        .expect("the cycle closes with a jmp");
    assert_eq!(cycle[close].near_branch_target(), head, "the fall-through path returns to the head");
    let bytes = cycle[close].next_ip() - head;
    assert!(bytes <= 64, "the letter cycle is {bytes} bytes");
    for branch in cycle[..close].iter().filter(|i| i.flow_control() == FlowControl::ConditionalBranch) {
        assert_eq!(branch.len(), 2, "the branch at {:#x} out of the cycle is short", branch.ip());
    }
}
