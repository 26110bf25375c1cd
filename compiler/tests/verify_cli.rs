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

#[test]
fn linux_objects_verify_with_the_linux_platform() {
    for object in ["samples/linux/perf_output.o", "samples/linux/bpf_load_map_def.o", "samples/linux/iproute2_maps.o"] {
        let (code, out, err) = bpf2sys(&["verify", "--platform", "linux", object]);
        assert_eq!(code, 0, "{object}: {out}{err}");
    }
    let (code, out, _) = bpf2sys(&["verify", "--platform", "linux", "samples/linux/perf_output.o"]);
    assert_eq!(code, 0);
    assert!(out.contains("(kprobe) verified"), "{out}");
    // Read as an eBPF for Windows object, map type 13 is RINGBUF, which cannot hold `values`.
    let (code, _, err) = bpf2sys(&["verify", "samples/linux/perf_output.o"]);
    assert_eq!(code, 2);
    assert!(err.contains("map 'counts_by_cgroup'"), "{err}");
}

#[test]
fn a_program_calling_an_undefined_symbol_is_refused_by_name_and_the_others_verify() {
    let (code, out, err) = bpf2sys(&["verify", "samples/unresolved_call.o"]);
    assert_eq!(code, 1);
    assert!(out.contains("program `pass_plain` (xdp) verified"), "{out}");
    assert!(
        err.contains("program `pass_checked` (section `xdp/checked`) cannot be built: call to undefined symbol 'checksum_from_elsewhere'"),
        "{err}"
    );
}

#[test]
fn build_refuses_a_map_type_the_runtime_cannot_create() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut bytes = std::fs::read(root.join("samples/legacy_maps.o")).unwrap();
    // The first legacy record (`port_counts`, BPF_MAP_TYPE_HASH) becomes type 100.
    let at = bytes.windows(16).position(|w| w == [1, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 4, 0, 0]).unwrap();
    bytes[at] = 100;
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("type100.o");
    std::fs::write(&object, &bytes).unwrap();
    let output = dir.path().join("type100.sys");
    let (code, _, err) = bpf2sys(&["build", object.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("map 'port_counts': type 100 is not a map type windows supports"), "{err}");
    assert!(!output.exists(), "nothing is written");
}

#[test]
fn build_type_selects_the_program_type_for_every_program() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("k.sys");
    let out = output.to_str().unwrap();
    let (code, _, err) = bpf2sys(&["build", "samples/droppacket.o", "-o", out, "--type", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("`nope` is not a program type of the windows platform"), "{err}");
    let (code, stdout, err) = bpf2sys(&["build", "samples/droppacket.o", "-o", out, "--type", "xdp_test"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("wrote"), "{stdout}");
}

#[test]
fn verify_and_build_both_reject_an_object_whose_every_program_is_refused_at_load() {
    // droppacket's only program references `dropped_packet_map`; make that symbol undefined (st_shndx = 0).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut bytes = std::fs::read(root.join("samples/droppacket.o")).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let symtab = elf.section_headers.iter().find(|s| s.sh_type == goblin::elf::section_header::SHT_SYMTAB).unwrap();
    let index = elf.syms.iter().position(|s| elf.strtab.get_at(s.st_name) == Some("dropped_packet_map")).unwrap();
    let st_shndx = symtab.sh_offset as usize + index * 24 + 6;
    drop(elf);
    bytes[st_shndx..st_shndx + 2].copy_from_slice(&0u16.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("undefined_map.o");
    std::fs::write(&object, &bytes).unwrap();
    let object = object.to_str().unwrap();

    let (code, _, err) = bpf2sys(&["verify", object]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reference to undefined symbol 'dropped_packet_map'"), "{err}");
    let output = dir.path().join("undefined_map.sys");
    let (code, _, err) = bpf2sys(&["build", object, "-o", output.to_str().unwrap()]);
    assert_eq!(code, 1, "a program refused at load is a rejected program, as in verify: {err}");
    assert!(err.contains("no program can be built; no driver was written"), "{err}");
    assert!(!output.exists());
}

#[test]
fn co_re_relocations_are_reported_by_inspect_verify_and_build_and_left_as_compiled() {
    let warning = "warning: samples/core_reloc.o: program `count_bytes_core` has 3 CO-RE relocations (.BTF.ext); none \
                   is applied: Windows has no kernel BTF to relocate against";
    let (code, out, err) = bpf2sys(&["verify", "samples/core_reloc.o"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(warning), "{err}");
    assert_eq!(err.lines().count(), 1, "one warning line:\n{err}");
    let (code, out, err) = bpf2sys(&["inspect", "--format", "json", "samples/core_reloc.o"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(warning), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["programs"][0]["core_relocation_count"], 3);
    // The accesses keep the offsets clang compiled against the object's own BTF: data_end @8, then data @0.
    let disassembly = report["programs"][0]["disassembly"].as_array().unwrap();
    assert!(disassembly[0]["text"].as_str().unwrap().contains("r1+8"), "{}", disassembly[0]["text"]);
    assert!(
        disassembly[1]["text"].as_str().unwrap().contains("r1+0")
            || disassembly[1]["text"].as_str().unwrap().contains("[r1]")
    );
    let dir = tempfile::tempdir().unwrap();
    let driver = dir.path().join("core_reloc.sys");
    let (code, out, err) = bpf2sys(&["build", "samples/core_reloc.o", "-o", driver.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(warning), "{err}");
    // An object without CO-RE relocations gets no such warning.
    let (code, _, err) = bpf2sys(&["verify", "samples/droppacket.o"]);
    assert_eq!(code, 0);
    assert!(!err.contains("CO-RE"), "{err}");
}
