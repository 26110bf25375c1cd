//! The bpf_conformance suite (../shared/corpora/bpf_conformance) against the reference interpreter, the
//! assembler and the decoder.

use std::path::PathBuf;

use bpf2sys::isa::asm::assemble_lines;
use bpf2sys::isa::disasm::disassemble;
use bpf2sys::isa::{decode, encode_bytes, DecodeError};
use bpf2sys_tests::conformance::{
    corpus_dir, data_files, load, parse, run_dirs, run_test, InterpreterEngine, LoadError, Outcome,
};

fn tests_dir() -> PathBuf {
    corpus_dir().join("tests")
}

fn negative_dir() -> PathBuf {
    corpus_dir().join("negative")
}

fn name(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn interpreter_passes_all_313_conformance_tests() {
    let summary = run_dirs(&mut InterpreterEngine, &[tests_dir()]).unwrap();
    let failures: Vec<String> = summary
        .results
        .iter()
        .filter(|(_, o)| *o != Outcome::Pass)
        .map(|(p, o)| format!("{}: {o:?}", name(p)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(summary.to_string(), "313 passed, 0 failed, 0 skipped");
}

#[test]
fn interpreter_passes_all_313_conformance_tests_with_opaque_constants() {
    let mut engine = bpf2sys_tests::opaque::OpaqueConstants::new(InterpreterEngine);
    let summary = run_dirs(&mut engine, &[tests_dir()]).unwrap();
    let failures: Vec<String> = summary
        .results
        .iter()
        .filter(|(_, o)| *o != Outcome::Pass)
        .map(|(p, o)| format!("{}: {o:?}", name(p)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(summary.to_string(), "313 passed, 0 failed, 0 skipped");
}

#[test]
fn every_corpus_program_round_trips_through_the_disassembler() {
    for path in data_files(&tests_dir()).unwrap() {
        let test = load(&path).unwrap_or_else(|e| panic!("{}: {e}", name(&path)));
        let text = disassemble(&test.program);
        let back = assemble_lines(text.lines().enumerate().map(|(i, l)| (i + 1, l)))
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", name(&path)));
        assert_eq!(back, test.program, "{}:\n{text}", name(&path));
        // And the bytes decode to the same instructions.
        assert_eq!(decode(&encode_bytes(&back)).unwrap(), test.program, "{}", name(&path));
    }
}

#[test]
fn assembly_and_raw_encoding_agree_in_lddw_data() {
    let file = parse(&std::fs::read_to_string(tests_dir().join("lddw.data")).unwrap()).unwrap();
    let raw = file.raw.clone().expect("lddw.data has a -- raw section");
    let assembled = assemble_lines(file.asm.iter().map(|(n, l)| (*n, l.as_str()))).unwrap();
    assert_eq!(encode_bytes(&assembled), raw);
}

/// The 45 `unused-*` files set a field RFC 9669 requires to be zero; the file name ends with that field.
#[test]
fn unused_field_negatives_are_rejected_by_the_decoder_naming_the_field() {
    let mut count = 0;
    for path in data_files(&negative_dir()).unwrap() {
        let file_name = name(&path);
        if !file_name.starts_with("unused-") {
            continue;
        }
        count += 1;
        let field = file_name.trim_end_matches(".data").rsplit('-').next().unwrap().to_string();
        match load(&path) {
            Err(LoadError::Decode(DecodeError::NonZeroField { field: named, .. })) => {
                assert!(named.starts_with(&field), "{file_name}: decoder named `{named}`, expected `{field}`")
            }
            other => panic!("{file_name}: expected a decoder rejection of field `{field}`, got {other:?}"),
        }
    }
    assert_eq!(count, 45);
}

/// The other 15 negatives are malformed files or programs, each rejected by the stage responsible.
#[test]
fn other_negatives_are_rejected_with_the_right_kind_of_error() {
    let expect_asm = |needle: &'static str| move |r: &Result<_, LoadError>| matches!(r, Err(LoadError::Assemble(e)) if e.message.contains(needle));
    type Check = Box<dyn Fn(&Result<bpf2sys_tests::conformance::ConformanceTest, LoadError>) -> bool>;
    let cases: Vec<(&str, Check)> = vec![
        ("empty.data", Box::new(|r| matches!(r, Err(LoadError::NoInstructions)))),
        ("empty_instructions.data", Box::new(|r| matches!(r, Err(LoadError::NoInstructions)))),
        ("invalid_imm32_dec_range.data", Box::new(expect_asm("32-bit signed range"))),
        ("invalid_imm32_hex_range.data", Box::new(expect_asm("out of the 32-bit range"))),
        ("invalid_label.data", Box::new(expect_asm("unknown label `NOT_A_LABEL`"))),
        ("invalid_lock.data", Box::new(expect_asm("invalid number of operands for lock"))),
        ("invalid_lock2.data", Box::new(expect_asm("invalid number of operands for lock"))),
        ("invalid_mnemonic.data", Box::new(expect_asm("unknown mnemonic `ldxq`"))),
        ("invalid_offset.data", Box::new(expect_asm("invalid memory operand"))),
        ("invalid_offset_range.data", Box::new(expect_asm("16-bit"))),
        ("invalid_operand_count.data", Box::new(expect_asm("invalid number of operands for lddw"))),
        ("invalid_register.data", Box::new(expect_asm("invalid register `%r50`"))),
        (
            "invalid_unknown_directive.data",
            Box::new(|r| {
                matches!(r, Err(LoadError::UnknownDirective { directive, .. })
                    if directive == "-- Unknown directive")
            }),
        ),
    ];
    for (file, check) in &cases {
        let result = load(&negative_dir().join(file));
        assert!(check(&result), "{file}: unexpected {:?}", result.as_ref().map(|_| "a runnable test"));
    }

    // `error.data` assembles, but reads r0 before writing it: the interpreter refuses to run it (the suite
    // expects an error).
    let test = load(&negative_dir().join("error.data")).unwrap();
    let mut engine = InterpreterEngine;
    let run = bpf2sys_tests::conformance::Engine::run(&mut engine, &test.program, &test.memory);
    assert!(matches!(&run, Err(e) if e.to_string().contains("r0, which holds no defined value")), "{run:?}");
    assert_eq!(run_test(&mut engine, &test), Outcome::Pass, "an expected error is a pass");

    // `incorrect_return_value_high_bits.data` expects a wrong r0 (high byte 0x89 instead of 0x88): a runner that
    // compares only the low bits would pass it, ours must fail it.
    let test = load(&negative_dir().join("incorrect_return_value_high_bits.data")).unwrap();
    assert_eq!(
        run_test(&mut engine, &test),
        Outcome::Fail("r0 = 0x8877665544332211, expected 0x8977665544332211".into())
    );

    let all = data_files(&negative_dir()).unwrap();
    assert_eq!(all.len(), 60);
    assert_eq!(all.iter().filter(|p| !name(p).starts_with("unused-")).count(), cases.len() + 2);
}

/// `manifest.tsv` records each test's slot count and expected r0: the assembler must count slots the same way
/// (a `lddw` is two) and the parser must read the same result.
#[test]
fn assembled_programs_match_the_manifest() {
    let manifest = std::fs::read_to_string(corpus_dir().join("manifest.tsv")).unwrap();
    let mut rows = manifest.lines();
    let header: Vec<&str> = rows.next().unwrap().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, n_insns, expected) = (column("file"), column("n_insns"), column("expected"));
    let mut checked = 0;
    for row in rows.filter(|r| !r.is_empty()) {
        let fields: Vec<&str> = row.split('\t').collect();
        let test = load(&tests_dir().join(fields[file])).unwrap();
        assert_eq!(test.program.len(), fields[n_insns].parse::<usize>().unwrap(), "{}", fields[file]);
        let want = u64::from_str_radix(fields[expected].trim_start_matches("0x"), 16).unwrap();
        assert_eq!(test.expected.value, Some(want), "{}", fields[file]);
        assert_eq!(test.expected.error, None, "{}", fields[file]);
        checked += 1;
    }
    assert_eq!(checked, 313);
}
