//! Soundness fuzzing for CI: random programs, every accepted one executed in the reference interpreter on
//! several inputs with checked memory (tests/src/soundness.rs). The long-run mode is
//! `cargo xtask verifier-fuzz --programs N`.

use bpf2sys_tests::soundness::{campaign, check, generate, Verdict};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepted_random_programs_never_fault_in_the_interpreter(seed in any::<u64>()) {
        let p = generate(seed);
        let v = check(&p, seed, 6);
        prop_assert!(!matches!(v, Verdict::Unsound(_)), "seed {seed}: {v:?}\n{p:#?}");
    }
}

#[test]
fn the_generator_produces_accepted_programs_with_loops_calls_and_maps() {
    let c = campaign(0, 2_000, 4, |seed, _, why| panic!("seed {seed}: {why}"));
    assert_eq!(c.unsound, 0);
    // The campaign is only meaningful if a good share of programs get through the verifier.
    assert!(c.accepted * 10 >= c.programs, "only {} of {} accepted", c.accepted, c.programs);
}

#[test]
fn the_generator_produces_accepted_programs_with_legacy_packet_loads() {
    // The oracle covers LD_ABS/LD_IND only if accepted programs contain them (the interpreter runs them through
    // XDP's data/data_end fields, ending the program with 0 out of bounds).
    let accepted_with_legacy = (0..3_000u64)
        .filter(|&seed| {
            let p = generate(seed);
            p.iter().any(|i| matches!(i, bpf2sys::isa::Instruction::LegacyPacketLoad { .. }))
                && check(&p, seed, 4) == Verdict::Accepted
        })
        .count();
    assert!(accepted_with_legacy >= 30, "only {accepted_with_legacy} accepted programs with legacy loads");
}
