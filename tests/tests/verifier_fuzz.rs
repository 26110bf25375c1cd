//! Soundness fuzzing for CI: random programs, every accepted one executed in the reference interpreter on
//! several inputs with checked memory (tests/src/soundness.rs). The long-run mode is
//! `cargo xtask verifier-fuzz --programs N`.

use bpf2sys_tests::soundness::{campaign, check, fuzz_module, generate, with_zero_extensions, Verdict};
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

#[test]
fn the_generator_produces_accepted_programs_with_data_end_inequalities() {
    // The `data + k != data_end` rule (docs/verifier.md §3) is covered only if accepted programs compare a packet
    // pointer for equality with data_end (r3) and then load from the packet.
    use bpf2sys::isa::{Instruction as I, JumpCond, Operand, Reg};
    let accepted = (0..3_000u64)
        .filter(|&seed| {
            let p = generate(seed);
            let eq_end = |i: &I| {
                matches!(i, I::JumpIf { cond: JumpCond::Eq, dst: Reg::R4, src: Operand::Reg(Reg::R3), .. })
                    || matches!(i, I::JumpIf { cond: JumpCond::Eq, dst: Reg::R3, src: Operand::Reg(Reg::R4), .. })
            };
            p.windows(2).any(|w| eq_end(&w[0]) && matches!(w[1], I::Load { src: Reg::R2, .. }))
                && check(&p, seed, 4) == Verdict::Accepted
        })
        .count();
    assert!(accepted >= 15, "only {accepted} accepted programs with a data_end inequality and a packet load");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 30_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Lowering leaves out the zero-extensions the verifier calls redundant; `check` fails a program if one of them
    /// sees a value of 2^32 or more in the interpreter.
    #[test]
    fn redundant_zero_extensions_only_ever_see_values_below_2_pow_32(seed in any::<u64>()) {
        let p = with_zero_extensions(&generate(seed), seed);
        let v = check(&p, seed, 6);
        prop_assert!(!matches!(v, Verdict::Unsound(_)), "seed {seed}: {v:?}\n{p:#?}");
    }
}

#[test]
fn the_zero_extension_campaign_has_accepted_programs_with_redundant_and_needed_zero_extensions() {
    use bpf2sys::isa::semantics::zero_extension_at;
    use bpf2sys::platform::windows::WINDOWS;
    use bpf2sys::verifier::{verify_program, VerifierOptions};
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    let (mut redundant, mut needed) = (0, 0);
    for seed in 0..2_000 {
        let p = with_zero_extensions(&generate(seed), seed);
        let module = fuzz_module(&p);
        let Ok(verified) = verify_program(&module, 0, &WINDOWS, xdp, &VerifierOptions::default()) else { continue };
        for pc in (0..p.len()).filter(|&pc| zero_extension_at(&p, pc).is_some()) {
            if verified.is_redundant_zero_extension(pc) {
                redundant += 1;
            } else {
                needed += 1;
            }
        }
    }
    // Without both kinds the property test above would prove nothing about the fact.
    assert!(redundant >= 100 && needed >= 100, "redundant {redundant}, needed {needed}");
}
