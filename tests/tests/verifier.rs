//! The verifier on real objects and on PREVAIL's suite: every sample verifies under the Windows platform,
//! every hand-written unsafe variant is rejected at the marked source line, and PREVAIL's safety rejections
//! are all reproduced.

use std::path::{Path, PathBuf};

use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::verifier::{verify_program, Property, VerifierOptions};
use bpf2sys_tests::prevail::{run_dir, Outcome};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("samples directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    v.sort();
    v
}

fn load(path: &Path) -> bpf2sys::program::Module {
    let bytes = std::fs::read(path).expect("object");
    bpf2sys::elf::load(&bytes, &path.file_name().unwrap().to_string_lossy()).expect("loads")
}

#[test]
fn every_sample_verifies_under_the_windows_platform() {
    let samples = objects(&repo().join("samples"));
    assert!(samples.len() >= 10, "samples missing");
    for path in samples {
        let module = load(&path);
        for (i, p) in module.programs.iter().enumerate() {
            let (pt, _) = WINDOWS.program_type_for_section(&p.section_name).expect("known section");
            if let Err(r) = verify_program(&module, i, &WINDOWS, pt, &VerifierOptions::default()) {
                panic!("{}: {}", path.display(), bpf2sys::verifier::diagnostic::render(&r, false));
            }
        }
    }
}

#[test]
fn unsafe_samples_are_rejected_at_the_marked_source_line() {
    let dir = repo().join("samples/unsafe");
    let objs = objects(&dir);
    assert_eq!(objs.len(), 13);
    for path in objs {
        // Lossy: latin1_source.c is deliberately not UTF-8.
        let source = String::from_utf8_lossy(&std::fs::read(path.with_extension("c")).expect("C source")).into_owned();
        let (line, marker) = source
            .lines()
            .enumerate()
            .find_map(|(i, l)| l.split_once("// UNSAFE: ").map(|(_, m)| (i as u32 + 1, m.trim().to_string())))
            .expect("UNSAFE marker");
        let module = load(&path);
        let (pt, _) = WINDOWS.program_type_for_section(&module.programs[0].section_name).expect("section");
        let r = verify_program(&module, 0, &WINDOWS, pt, &VerifierOptions::default())
            .expect_err(&format!("{} must be rejected", path.display()));
        assert_eq!(r.line, Some(line), "{}: {}", path.display(), r);
        let expected = match marker.as_str() {
            "out_of_bounds" => Property::OutOfBounds,
            "null_dereference" => Property::NullDereference,
            "termination" => Property::Termination,
            "pointer_leak" => Property::PointerLeak,
            "uninitialized" => Property::Uninitialized,
            other => panic!("unknown marker {other}"),
        };
        assert_eq!(r.property, expected, "{}: {}", path.display(), r);
        assert!(r.source_line.as_deref().is_some_and(|l| l.contains("UNSAFE")), "source line attached");
        let text = bpf2sys::verifier::diagnostic::render(&r, false);
        assert!(text.contains(&format!(":{line}:")), "{}: the diagnostic names the line:\n{text}", path.display());
    }
}

#[test]
fn prevail_suite_has_no_unsound_accepts_and_agrees_on_verdicts() {
    let dir = repo().join("../shared/corpora/prevail-test-data");
    let results = run_dir(&dir).expect("suite");
    let (mut pass, mut fail, mut misaligned, mut unsound) = (0, 0, 0, Vec::new());
    for f in &results {
        for (name, o) in &f.cases {
            match o {
                Outcome::Pass => pass += 1,
                Outcome::Fail { unsound: u, detail } => {
                    fail += 1;
                    if *u {
                        unsound.push(format!("{}: {name}", f.file));
                    }
                    if detail.contains("misaligned") {
                        misaligned += 1;
                    }
                }
                Outcome::Skip(_) => {}
            }
        }
    }
    assert!(unsound.is_empty(), "unsound accepts: {unsound:?}");
    assert!(pass + fail > 760, "too many skipped cases: {} run", pass + fail);
    let agreement = pass as f64 / (pass + fail) as f64;
    // Measured 99.0% (775 of 783); every remaining disagreement is explained in docs/verifier.md §5. Misaligned
    // atomics on the stack are accepted (lowered as plain load-op-store); PREVAIL's suite has no misaligned
    // atomic on a map value, so no disagreement is about alignment any more.
    assert_eq!(misaligned, 0, "disagreements on alignment");
    assert!(agreement >= 0.989, "agreement {agreement:.3}");
}
