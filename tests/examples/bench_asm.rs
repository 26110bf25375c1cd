//! Prints the Cranelift IR and the x64 machine code bpf2sys generates for one benchmark program — the view used to
//! compare our code with `clang -O2`'s when profiling (`cargo run -p bpf2sys-tests --example bench_asm -- sieve`).

use std::path::Path;

use bpf2sys::compiled::Target;
use bpf2sys::isa;
use bpf2sys::lower::{self, LowerOptions};
use bpf2sys::verifier::Verified;
use bpf2sys_tests::bench::programs;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: bench_asm <{}>", programs::PROGRAMS.join("|"));
        std::process::exit(2);
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is inside the repository");
    let object = programs::bench_dir(root).join(format!("{name}.o"));
    let code = programs::function_bytecode(&object, "entry").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let instructions = isa::decode(&code).expect("bench bytecode decodes");
    let module = bpf2sys_tests::native::module_from_instructions(&name, instructions);
    let isa = lower::build_isa(Target::X64).expect("x64 ISA");
    // The bench programs read their buffer through r1, which no program type allows: lowered unverified.
    let unchecked = Verified::unchecked_for_testing(&module, 0).expect("bench programs have constant callx targets");
    let lowered = lower::lower_program(&*isa, &[unchecked], 0, &LowerOptions::new(Target::X64), true)
        .expect("bench programs lower");
    for text in lowered.clif.iter().chain(&lowered.disassembly) {
        println!("{text}");
    }
    // The raw bytes too, for `objdump -D -b binary -m i386:x86-64` (final layout, real offsets).
    if let Some(path) = std::env::args().nth(2) {
        let code: Vec<u8> = lowered.program.functions.iter().flat_map(|f| f.code.iter().copied()).collect();
        std::fs::write(&path, code).expect("writing the code bytes");
    }
}
