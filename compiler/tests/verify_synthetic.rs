//! The largest synthetic program of the `verify` bench (about 100k instructions: bounds checks, packet loads,
//! branches, stack stores and a counted loop every 8 blocks) verifies, so the bench times an accepted program.
//! Not timed: speed is measured only by `cargo bench -p bpf2sys --bench verify`.

#[path = "../benches/common/synthetic.rs"]
mod synthetic;

use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::verifier::{verify_program, VerifierOptions};

#[test]
fn synthetic_100k_instruction_program_verifies_with_every_loop_bounded() {
    let module = synthetic::module(100_000);
    let program = &module.programs[0];
    assert!(program.instructions.len() >= 99_000, "{} instructions", program.instructions.len());
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    let verified = verify_program(&module, 0, &WINDOWS, xdp, &VerifierOptions::default())
        .unwrap_or_else(|r| panic!("the 100k synthetic program is rejected: {r}"));
    let report = verified.report();
    // One counted loop (4 iterations) every 8 blocks of the generator.
    assert!(report.loop_bounds.len() > 1000, "{} loops bounded", report.loop_bounds.len());
    assert!(report.loop_bounds.iter().all(|b| b.max_iterations == 4), "{:?}", &report.loop_bounds[..3]);
}
