//! Exact Windows unwind data, checked by execution: every function of every sample driver (the programs and the runtime
//! shim's functions; built for runtime 1.3.0 and 1.4.0) is virtually unwound at every instruction offset, on x64 and
//! ARM64, and must give back the caller's stack pointer, return address and callee-saved registers
//! (`bpf2sys_tests::unwind`).

use std::path::{Path, PathBuf};

use bpf2sys::compiled::Target;
use bpf2sys::driver::{build_driver, DriverError, SessionOptions};
use bpf2sys_runtime_shim::RuntimeVersion;
use bpf2sys_tests::unwind::{check_image, UnwindReport};

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("samples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    v.sort();
    v
}

/// The runtime versions a sample is built for: its default, and 1.4.0 where the default has no
/// `map_data.array_data` (lookups in one proven ARRAY map are then inlined, which can leave a function without
/// calls: another prologue shape).
fn versions(name: &str) -> Vec<RuntimeVersion> {
    if name == "kfunc" {
        vec![RuntimeVersion::parse("1.5.0").unwrap()]
    } else {
        vec![RuntimeVersion::PORTABLE, RuntimeVersion::MAP_DATA_V2]
    }
}

fn check_samples(target: Target) -> UnwindReport {
    let mut report = UnwindReport::default();
    let builds = samples().into_iter().flat_map(|p| {
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        versions(&name).into_iter().map(move |v| (p.clone(), name.clone(), v))
    });
    for (path, name, runtime_version) in builds {
        let options = SessionOptions { target, runtime_version, ..SessionOptions::default() };
        let image = match build_driver(&std::fs::read(&path).unwrap(), &format!("{name}.o"), &options) {
            Ok(image) => image,
            // The sample that is refused on purpose has no image to check.
            Err(DriverError::Unverified { .. }) if name == "unverifiable" => continue,
            Err(e) => panic!("{name} {target:?} {runtime_version}: {e}"),
        };
        let r = check_image(&image).unwrap_or_else(|e| panic!("{name} {target:?} {runtime_version}: {e}"));
        for m in &r.mismatches {
            eprintln!("{name} {target:?} {runtime_version}: {m}");
        }
        report.merge(r);
    }
    report
}

fn assert_exact(target: Target, report: &UnwindReport) {
    eprintln!(
        "{target:?}: {} functions, {} offsets checked, {} mismatches",
        report.functions,
        report.offsets,
        report.mismatches.len()
    );
    assert!(report.functions > 0 && report.offsets > report.functions);
    assert!(report.mismatches.is_empty(), "{target:?}: {} mismatches (listed above)", report.mismatches.len());
}

#[test]
fn every_sample_driver_function_unwinds_exactly_at_every_offset_on_arm64() {
    let report = check_samples(Target::Arm64);
    assert_exact(Target::Arm64, &report);
}

#[test]
fn every_sample_driver_function_unwinds_exactly_at_every_offset_on_x64() {
    let report = check_samples(Target::X64);
    assert_exact(Target::X64, &report);
}

/// Every bpf_conformance program that compiles, plain and with opaque constants, lowered for `target` (the
/// generated functions only: these programs are not drivers).
fn check_conformance(target: Target) -> UnwindReport {
    use bpf2sys_tests::conformance::{corpus_dir, data_files, load};
    use bpf2sys_tests::native::compile_with_length_prologue_for;
    use bpf2sys_tests::unwind::check_functions;
    let mut report = UnwindReport::default();
    for path in data_files(&corpus_dir().join("tests")).unwrap() {
        let Ok(test) = load(&path) else { continue };
        // The program as written, and its opaque-constants form (constants loaded from memory, so Cranelift cannot
        // fold the program away and more of the generated code is checked).
        let mut variants = vec![(test.program.clone(), test.memory.len())];
        if let Ok(opaque) = bpf2sys_tests::opaque::make_opaque(&test.program, &test.memory) {
            variants.push((opaque.program, opaque.memory.len()));
        }
        for (instructions, memory) in variants {
            let Ok(program) = compile_with_length_prologue_for(target, &instructions, memory) else { continue };
            let r = check_functions(target, &program.functions).unwrap_or_else(|e| panic!("{path:?} {target:?}: {e}"));
            for m in &r.mismatches {
                eprintln!("{path:?} {target:?}: {m}");
            }
            report.merge(r);
        }
    }
    report
}

#[test]
fn every_conformance_program_unwinds_exactly_at_every_offset_on_arm64() {
    assert_exact(Target::Arm64, &check_conformance(Target::Arm64));
}

#[test]
fn every_conformance_program_unwinds_exactly_at_every_offset_on_x64() {
    assert_exact(Target::X64, &check_conformance(Target::X64));
}

/// By hand: checks every image in `$BPF2SYS_UNWIND_IMAGES` (a directory of `.sys` files), e.g. drivers built by an
/// older bpf2sys, and prints the counts.
#[test]
#[ignore = "checks images from $BPF2SYS_UNWIND_IMAGES"]
fn images_from_the_environment() {
    let dir = std::env::var("BPF2SYS_UNWIND_IMAGES").expect("BPF2SYS_UNWIND_IMAGES");
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let mut report = UnwindReport::default();
    let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
    for path in paths {
        let r = check_image(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for m in &r.mismatches {
            eprintln!("{path:?}: {m}");
            let kind = m.split(": ").last().unwrap_or("").split(' ').next().unwrap_or("").to_string();
            *by_kind.entry(kind).or_default() += 1;
        }
        report.merge(r);
    }
    eprintln!(
        "{} functions, {} offsets, {} mismatches; first wrong value by kind: {by_kind:?}",
        report.functions,
        report.offsets,
        report.mismatches.len()
    );
}

/// A function with loads kept live across a call (callee-saved registers), `floats` f64 values live at once (for
/// d8–d15), a `frame`-byte stack slot (stack probes from 4 KiB), `body` load/add/store steps, and two returns (two epilogues).
fn generated_function(target: Target, frame: u32, body: usize) -> bpf2sys::compiled::CompiledFunction {
    generated_function_with_floats(target, frame, body, 0)
}

fn generated_function_with_floats(
    target: Target,
    frame: u32,
    body: usize,
    floats: usize,
) -> bpf2sys::compiled::CompiledFunction {
    use bpf2sys::compiled::RelocTarget;
    use bpf2sys::lower::codegen::{build_isa, compile_ir_function, SymbolTable};
    use cranelift_codegen::ir::{
        condcodes::IntCC, types::F64, types::I64, AbiParam, Function, InstBuilder, MemFlagsData, Signature,
        StackSlotData, StackSlotKind, UserFuncName,
    };
    use cranelift_codegen::isa::CallConv;
    use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

    let isa = build_isa(target).unwrap();
    let mut sig = Signature::new(CallConv::WindowsFastcall);
    sig.params.push(AbiParam::new(I64));
    sig.returns.push(AbiParam::new(I64));
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig.clone());
    let mut symbols = SymbolTable::new();
    let callee = symbols.import_function(&mut func, RelocTarget::Function("callee".into()), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry)[0];
    let flags = MemFlagsData::new();
    let slot =
        (frame > 0).then(|| b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, frame, 3)));
    if let Some(slot) = slot {
        b.ins().stack_store(I64, p, slot, (frame - 8) as i32);
    }
    // Live across the call: Cranelift keeps them in callee-saved registers (12 of them, more than fit in some
    // pairs, so odd and non-consecutive registers are saved too).
    let live: Vec<_> = (0..12).map(|i| b.ins().load(I64, flags, p, i * 8)).collect();
    let call = b.ins().call(callee, &[p]);
    let mut acc = b.inst_results(call)[0];
    // Cranelift treats every vector register as clobbered by a call, so d8–d15 are used (and saved) only when
    // more f64 values are live at once than the 24 caller-saved vector registers hold.
    let float_values: Vec<_> = (0..floats).map(|i| b.ins().load(F64, flags, p, 256 + 8 * i as i32)).collect();
    if let Some((&first, rest)) = float_values.split_first() {
        let sum = rest.iter().fold(first, |a, &v| b.ins().fadd(a, v));
        let bits = b.ins().bitcast(I64, cranelift_codegen::ir::MemFlagsData::new(), sum);
        acc = b.ins().iadd(acc, bits);
    }
    for i in 0..body {
        let v = b.ins().load(I64, flags, p, ((i % 32) * 8) as i32);
        let v = b.ins().iadd_imm_s(v, i as i64);
        b.ins().store(flags, v, p, (((i + 1) % 32) * 8) as i32);
    }
    for v in live {
        acc = b.ins().iadd(acc, v);
    }
    if let Some(slot) = slot {
        let s = b.ins().stack_load(I64, I64, slot, (frame - 8) as i32);
        acc = b.ins().iadd(acc, s);
    }
    let other = b.create_block();
    let zero = b.ins().icmp_imm_s(IntCC::Equal, acc, 0);
    let done = b.create_block();
    b.ins().brif(zero, other, &[], done, &[]);
    b.switch_to_block(other);
    b.seal_block(other);
    let one = b.ins().iconst(I64, 1);
    b.ins().return_(&[one]);
    b.switch_to_block(done);
    b.seal_block(done);
    b.ins().return_(&[acc]);
    b.finalize(isa.frontend_config());
    compile_ir_function(&*isa, "generated", func, &symbols).unwrap()
}

#[test]
fn stack_probes_and_multiple_epilogues_unwind_exactly_on_both_targets() {
    use bpf2sys_tests::unwind::check_functions;
    for target in [Target::X64, Target::Arm64] {
        // No probe, an unrolled probe (2 pages), a probe loop (16 pages).
        let functions: Vec<_> = [0, 8192, 65536].iter().map(|&frame| generated_function(target, frame, 40)).collect();
        let report = check_functions(target, &functions).unwrap();
        for m in &report.mismatches {
            eprintln!("{target:?}: {m}");
        }
        assert_exact(target, &report);
        assert_eq!(report.functions, 3);
    }
}

#[test]
fn arm64_floating_point_saves_d8_to_d15_unwind_exactly() {
    use bpf2sys_tests::unwind::check_functions;
    // 27 values live at once (three of d8..d15: a pair and a single), 40 (all eight), with and without a probe.
    let functions: Vec<_> = [(27, 0), (40, 0), (40, 65536)]
        .iter()
        .map(|&(floats, frame)| generated_function_with_floats(Target::Arm64, frame, 10, floats))
        .collect();
    for f in &functions {
        // The prologue saves d registers: `stp d, d, [sp, #-16]!` or `str d, [sp, #-16]!`.
        let words = f.code.chunks_exact(4).map(|w| u32::from_le_bytes(w.try_into().unwrap()));
        let saves_d = words.take(40).any(|w| w & 0xffc0_0000 == 0x6d80_0000 || w & 0xffe0_0c00 == 0xfc00_0c00);
        assert!(saves_d, "the function must save d registers");
    }
    let report = check_functions(Target::Arm64, &functions).unwrap();
    for m in &report.mismatches {
        eprintln!("{m}");
    }
    assert_exact(Target::Arm64, &report);
}

#[test]
fn an_arm64_function_over_1_mib_builds_and_unwinds_exactly() {
    use bpf2sys_tests::unwind::check_functions;
    let f = generated_function(Target::Arm64, 0, 95_000);
    assert!(f.code.len() > 1 << 20, "{} bytes", f.code.len());
    assert!(f.unwind.fragments().len() >= 2, "a function over 1 MiB needs several .xdata fragments");
    let report = check_functions(Target::Arm64, std::slice::from_ref(&f)).unwrap();
    for m in report.mismatches.iter().take(20) {
        eprintln!("{m}");
    }
    assert_exact(Target::Arm64, &report);
    assert_eq!(report.offsets, f.code.len() / 4);
}

/// Generated programs (the differential tests' generator: ALU, memory, branches, loops, helper and local calls),
/// compiled for both targets and checked at every offset. `BPF2SYS_UNWIND_CASES` sets the count (CI: 200).
#[test]
fn generated_programs_unwind_exactly_at_every_offset_on_both_targets() {
    use bpf2sys_tests::native::compile_with_length_prologue_for;
    use bpf2sys_tests::unwind::check_functions;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let cases: usize = std::env::var("BPF2SYS_UNWIND_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let strategy = bpf2sys_tests::generate::program(60);
    for target in [Target::X64, Target::Arm64] {
        // The same programs on both targets.
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
        let mut runner = TestRunner::new_with_rng(Config::default(), rng);
        let mut report = UnwindReport::default();
        for _ in 0..cases {
            let p = strategy.new_tree(&mut runner).unwrap().current();
            let program = compile_with_length_prologue_for(target, &p.program, p.memory.len()).unwrap();
            let r = check_functions(target, &program.functions).unwrap();
            for m in &r.mismatches {
                eprintln!("{target:?}: {m}\n{}", bpf2sys::isa::disasm::disassemble(&p.program));
            }
            report.merge(r);
        }
        assert_exact(target, &report);
    }
}
