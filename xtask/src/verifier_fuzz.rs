//! `cargo xtask verifier-fuzz [--programs N] [--first SEED] [--inputs K]`: the long-run soundness campaign.
//! Generates N random programs (seeds FIRST..FIRST+N), verifies each, runs every accepted one in the reference
//! interpreter on K inputs, and prints the counts. Any fault in an accepted program is printed with its seed
//! (reproduce with `cargo run -p bpf2sys-tests --example fuzz_case SEED`) and fails the task.

use std::process::ExitCode;
use std::time::Instant;

use bpf2sys_tests::soundness::campaign;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of programs to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub programs: u64,
    /// First seed.
    #[arg(long, default_value_t = 1 << 32)]
    pub first: u64,
    /// Inputs per accepted program.
    #[arg(long, default_value_t = 6)]
    pub inputs: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let (mut programs, mut accepted, mut unsound) = (0u64, 0u64, 0u64);
    let chunk = 100_000u64;
    let mut seed = args.first;
    while programs < args.programs {
        let n = chunk.min(args.programs - programs);
        let c = campaign(seed, n, args.inputs, |seed, _, why| println!("UNSOUND seed {seed}: {why}"));
        programs += c.programs;
        accepted += c.accepted;
        unsound += c.unsound;
        seed += n;
        eprintln!("{programs} programs, {accepted} accepted, {unsound} unsound ({:.0?})", start.elapsed());
    }
    println!(
        "verifier soundness fuzzing: {programs} programs generated, {accepted} accepted and executed on {} inputs each, {unsound} unsound accepts ({:.1?})",
        args.inputs,
        start.elapsed()
    );
    Ok(if unsound == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
