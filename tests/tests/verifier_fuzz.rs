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
