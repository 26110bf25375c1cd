use bpf2sys::compiled::Target;
use bpf2sys::lower::{self, LowerOptions};
use std::path::Path;
#[test]
fn dump() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let isa = lower::build_isa(Target::X64).unwrap();
    for p in ["csum", "parse", "branchy", "maplookup", "sieve", "unrolled"] {
        let code =
            bpf2sys_tests::bench::programs::function_bytecode(&root.join(format!("samples/bench/{p}.o")), "entry")
                .unwrap();
        let insns = bpf2sys::isa::decode(&code).unwrap();
        let module = bpf2sys_tests::native::module_from_instructions(p, insns);
        let l = lower::lower_program_with(&*isa, &module, 0, &LowerOptions::new(Target::X64), true).unwrap();
        std::fs::write(format!("/tmp/dis/{p}.clif"), l.clif.join("\n")).unwrap();
        std::fs::write(format!("/tmp/dis/{p}.s"), l.disassembly.join("\n")).unwrap();
    }
}
