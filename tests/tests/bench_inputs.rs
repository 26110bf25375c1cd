//! The Rust port of the benchmark inputs is byte-identical to the C `make_input()` it came from.

use std::path::{Path, PathBuf};
use std::process::Command;

use bpf2sys_tests::bench::{input, native_c, programs};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn rust_inputs_match_the_c_generator_byte_for_byte() {
    let cc = native_c::find_compiler("cc").expect("a host C compiler `cc` (gcc) is required by the benchmarks");
    let dir = tempfile::tempdir().unwrap();
    let gen = dir.path().join("gen_inputs");
    let status = Command::new(&cc.command)
        .arg("-O2")
        .arg(native_c::host_sources_dir(&repo_root()).join("gen_inputs.c"))
        .arg("-o")
        .arg(&gen)
        .status()
        .unwrap();
    assert!(status.success(), "building gen_inputs.c failed");
    for program in programs::PROGRAMS {
        let file = dir.path().join(format!("{program}.in"));
        assert!(Command::new(&gen).arg(program).arg(&file).status().unwrap().success());
        let from_c = std::fs::read(&file).unwrap();
        assert_eq!(input::make_input(program).unwrap(), from_c, "input of {program}");
    }
}
