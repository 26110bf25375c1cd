//! Fuzz-case inspection: `cargo run -p bpf2sys-tests --example fuzz_case SEED` prints the program and its
//! verdict; `... fuzz_case stats N` prints why the first N generated programs were rejected.
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::program::{Function, Module, Program};
use bpf2sys::verifier::{verify_program, VerifierOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("stats") {
        let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for seed in 0..n {
            let p = bpf2sys_tests::soundness::generate(seed);
            let m = Module {
                programs: vec![Program {
                    name: "f".into(),
                    section_name: "xdp".into(),
                    functions: vec![Function { name: "f".into(), start: 0, end: p.len() }],
                    instructions: p,
                    line_info: vec![],
                }],
                maps: bpf2sys_tests::soundness::maps(),
                ..Module::default()
            };
            let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
            let key = match verify_program(&m, 0, &WINDOWS, xdp, &VerifierOptions::default()) {
                Ok(_) => "accepted".to_string(),
                Err(r) => r.message.chars().take(60).collect(),
            };
            *counts.entry(key).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
        for (k, c) in v.iter().take(25) {
            println!("{c:6} {k}");
        }
        return;
    }
    let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let p = bpf2sys_tests::soundness::generate(seed);
    for (i, insn) in p.iter().enumerate() {
        println!("{i:4}: {}", bpf2sys::verifier::diagnostic::disassemble(insn));
    }
    println!("{:?}", bpf2sys_tests::soundness::check(&p, seed, 6));
}
