//! `bpf2sys verify` exit codes and output formats.

use std::path::Path;
use std::process::Command;

fn bpf2sys(args: &[&str]) -> (i32, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bpf2sys")).current_dir(root).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn verified_objects_exit_0_and_report_loop_bounds() {
    let (code, out, _) = bpf2sys(&["verify", "samples/bounded_loop.o"]);
    assert_eq!(code, 0);
    assert!(out.contains("verified") && out.contains("at most 64 iterations"), "{out}");
}

#[test]
fn rejected_objects_exit_1_with_a_diagnostic_at_the_source_line() {
    let (code, _, err) = bpf2sys(&["verify", "samples/unsafe/missing_null_check.o"]);
    assert_eq!(code, 1);
    assert!(err.contains("possible null dereference") && err.contains("missing_null_check.c:17"), "{err}");
    let (code, out, _) = bpf2sys(&["verify", "samples/unsafe/missing_null_check.o", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["rejection"]["property"], "null_dereference");
    assert_eq!(v[0]["rejection"]["line"], 17);
}

#[test]
fn unusable_input_exits_2() {
    assert_eq!(bpf2sys(&["verify", "does/not/exist.o"]).0, 2);
    assert_eq!(bpf2sys(&["verify", "samples/droppacket.c"]).0, 2, "not an ELF object");
    assert_eq!(bpf2sys(&["verify", "samples/droppacket.o", "--program", "nope"]).0, 2);
    assert_eq!(bpf2sys(&["verify", "samples/droppacket.o", "--type", "nope"]).0, 2);
}

#[test]
fn show_state_prints_invariants() {
    let (code, out, _) = bpf2sys(&["verify", "samples/droppacket.o", "--show-state"]);
    assert_eq!(code, 0);
    assert!(out.contains("r1: ctx offset=0") && out.contains("packet_size >="), "{out}");
}
