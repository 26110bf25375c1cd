//! ARM64 output. Executed: the bpf_conformance suite and the benchmark programs run as ARM64 code in the
//! AArch64 emulator (bpf2sys_tests::arm64) and give their expected r0. Structural: every conformance program and
//! every sample program compiles for aarch64 Windows, and `llvm-objdump` (an independent decoder) disassembles all
//! of its code into valid instructions, with `.pdata`/`.xdata` that `llvm-readobj --unwind` accepts.

use std::process::Command;

use bpf2sys::compiled::{CompiledProgram, RelocTarget, Target, UnwindData};
use bpf2sys::driver::{Session, SessionOptions};
use bpf2sys::lower::MapDataLayout;
use bpf2sys::lower::{self, object::write_coff_object, LowerOptions};
use bpf2sys_tests::arm64::{Arm64Engine, Arm64Program};
use bpf2sys_tests::bench::{engines::bench_helper, input, programs};
use bpf2sys_tests::conformance::{corpus_dir, data_files, load, run_dirs, Outcome};
use bpf2sys_tests::native::compile_with_length_prologue_for;
use bpf2sys_tests::native::HostRuntime;
use bpf2sys_tests::opaque::OpaqueConstants;

fn tool_available(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Disassembles the ARM64 object and checks every code word decodes.
fn check_disassembly(name: &str, program: &CompiledProgram) {
    for f in &program.functions {
        assert_eq!(f.code.len() % 4, 0, "{name}: {} is not a whole number of A64 instructions", f.name);
        let UnwindData::Arm64 { fragments } = &f.unwind else { panic!("{name}: x64 unwind data in ARM64 output") };
        let mut covered = 0;
        for u in fragments {
            let header = u32::from_le_bytes(u.record[..4].try_into().unwrap());
            assert_eq!(u.start, covered, "{name}: fragments are contiguous");
            assert_eq!((header & 0x3ffff) * 4, u.end - u.start, "{name}: .xdata FunctionLength");
            covered = u.end;
        }
        assert_eq!(covered as usize, f.code.len(), "{name}: fragments cover the function");
    }
    if !tool_available("llvm-objdump") {
        return;
    }
    let bytes =
        write_coff_object(lower::build_isa(Target::Arm64).unwrap(), name, std::slice::from_ref(program)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.obj");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("llvm-objdump").arg("-d").arg(&path).output().unwrap();
    assert!(out.status.success(), "{name}: llvm-objdump failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("<unknown>"), "{name}: undecodable instruction\n{text}");
    let decoded = text
        .lines()
        .filter(|l| {
            l.trim_start().split(':').next().is_some_and(|a| u64::from_str_radix(a.trim(), 16).is_ok())
                && l.contains('\t')
        })
        .count();
    let words: usize = program.functions.iter().map(|f| f.code.len() / 4).sum();
    assert!(decoded >= words, "{name}: {decoded} decoded instructions for {words} code words\n{text}");
    let unwind = Command::new("llvm-readobj").arg("--unwind").arg(&path).output().unwrap();
    assert!(unwind.status.success(), "{name}: llvm-readobj --unwind failed");
    let unwind = String::from_utf8_lossy(&unwind.stdout);
    let fragments: usize = program.functions.iter().map(|f| f.unwind.fragments().len()).sum();
    assert_eq!(unwind.matches("RuntimeFunction {").count(), fragments, "{name}\n{unwind}");
}

/// All programs' functions in one object (renamed `<program>/<function>`), so one tool run checks them all.
fn combine(programs: Vec<(String, CompiledProgram)>) -> CompiledProgram {
    let mut functions = Vec::new();
    for (prefix, program) in programs {
        for mut f in program.functions {
            f.name = format!("{prefix}/{}", f.name);
            for r in &mut f.relocations {
                if let RelocTarget::Function(callee) = &mut r.target {
                    *callee = format!("{prefix}/{callee}");
                }
            }
            functions.push(f);
        }
    }
    CompiledProgram { program_name: "all".into(), functions, helper_ids: vec![], referenced_maps: vec![] }
}

#[test]
fn every_conformance_program_compiles_for_arm64() {
    let files = data_files(&corpus_dir().join("tests")).unwrap();
    assert!(files.len() >= 313);
    let mut programs = Vec::new();
    for path in files {
        let test = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let compiled = compile_with_length_prologue_for(Target::Arm64, &test.program, test.memory.len())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        programs.push((path.file_stem().unwrap().to_string_lossy().to_string(), compiled));
    }
    check_disassembly("conformance", &combine(programs));
}

#[test]
fn every_sample_program_compiles_for_arm64_and_x64() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let mut count = 0;
    let mut arm64 = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "o") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let module =
            bpf2sys::elf::load(&std::fs::read(&path).unwrap(), &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let session = Session::new(SessionOptions::default()).unwrap();
        let verified = session.verify(&name, &module).unwrap_or_else(|e| panic!("{e}"));
        for index in 0..module.programs.len() {
            for target in [Target::X64, Target::Arm64] {
                let isa = lower::build_isa(target).unwrap();
                let compiled = lower::lower_program(&*isa, &verified, index, &LowerOptions::new(target), false)
                    .unwrap_or_else(|e| panic!("{name} program {index} for {target:?}: {e}"))
                    .program;
                if target == Target::Arm64 {
                    arm64.push((format!("{name}/{}", module.programs[index].name), compiled));
                }
            }
            count += 1;
        }
    }
    assert!(count > 0, "no sample programs found in {}", dir.display());
    check_disassembly("samples", &combine(arm64));
}

fn assert_all_pass(engine: &mut dyn bpf2sys_tests::conformance::Engine) {
    let summary = run_dirs(engine, &[corpus_dir().join("tests")]).unwrap();
    let failures: Vec<String> = summary
        .results
        .iter()
        .filter(|(_, o)| *o != Outcome::Pass)
        .map(|(p, o)| format!("{}: {o:?}", p.display()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(summary.to_string(), "313 passed, 0 failed, 0 skipped");
}

#[test]
fn arm64_code_passes_all_313_conformance_tests() {
    assert_all_pass(&mut Arm64Engine);
}

#[test]
fn arm64_code_passes_all_313_conformance_tests_with_opaque_constants() {
    assert_all_pass(&mut OpaqueConstants::new(Arm64Engine));
}

#[test]
fn arm64_code_returns_the_expected_result_for_every_benchmark_program() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let all = programs::load_all(root).unwrap();
    assert_eq!(all.len(), programs::PROGRAMS.len());
    for p in all {
        // The real programs (maps, tail calls) run as ARM64 drivers in the emulated runtime instead:
        // bench_runtime_programs.rs.
        if bpf2sys_tests::bench::runtime_programs::runtime_program(&p.name).is_some() {
            continue;
        }
        let code = programs::function_bytecode(&p.object_path, "entry").unwrap();
        let module = bpf2sys_tests::native::module_from_instructions(&p.name, bpf2sys::isa::decode(&code).unwrap());
        let compiled = lower::lower_unverified_for_testing(&module, 0, &LowerOptions::new(Target::Arm64)).unwrap();
        let runtime = HostRuntime::new(&compiled.helper_ids, &bench_helper, &[], MapDataLayout::default(), Vec::new());
        let mut program = Arm64Program::load(&compiled, runtime).unwrap();
        let mut buffer = input::make_input(&p.name).unwrap();
        let r0 =
            program.run(buffer.as_mut_ptr() as *mut std::ffi::c_void).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert_eq!(r0, p.expected_r0, "{}", p.name);
    }
}
