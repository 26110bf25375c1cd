//! `bpf2sys run X.sys` (issue 18): a driver's program runs in the emulated runtime on a pcap, a raw packet or a
//! context; exit 0 on a clean run, 1 when the program faults, 2 for unusable input.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bpf2sys(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bpf2sys")).args(args).output().expect("run bpf2sys")
}

fn build(dir: &Path, sample: &str, target: &str) -> PathBuf {
    let driver = dir.join(format!("{sample}-{target}.sys"));
    let object = repo().join(format!("samples/{sample}.o"));
    let out = bpf2sys(&[&"build", &object, &"--target", &target, &"-o", &driver]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    driver
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn run_reports_a_verdict_per_captured_packet_and_the_maps_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let driver = build(dir.path(), "droppacket", "x64");
    let pcap = repo().join("samples/fixtures/droppacket.pcap");
    let report =
        json(&bpf2sys(&[&"run", &driver, &"--program", &"drop_empty_udp", &"--pcap", &pcap, &"--format", &"json"]));
    let verdicts: Vec<&str> =
        report["runs"].as_array().unwrap().iter().map(|r| r["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["XDP_DROP", "XDP_PASS", "XDP_PASS", "XDP_PASS", "XDP_PASS", "XDP_DROP"]);
    let entries = &report["maps"][0]["entries"];
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!((entries[0]["key_int"].as_u64(), entries[0]["value_int"].as_u64()), (Some(17), Some(2)));
    // One raw packet, text output.
    let packet = dir.path().join("truncated.bin");
    std::fs::write(&packet, [0u8; 10]).unwrap();
    let out = bpf2sys(&[&"run", &driver, &"--program", &"drop_empty_udp", &"--packet", &packet]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("r0 = 1 XDP_PASS"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn run_takes_context_fields_and_map_entries_for_programs_without_packets() {
    let dir = tempfile::tempdir().unwrap();
    let driver = build(dir.path(), "bind_policy", "x64");
    let context = dir.path().join("ctx.json");
    std::fs::write(&context, r#"{"process_id": 42, "operation": 0}"#).unwrap();
    let maps = dir.path().join("maps.json");
    std::fs::write(&maps, r#"{"denied_processes": [{"key": 42, "value": 1}]}"#).unwrap();
    let run = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"run", &driver, &"--program", &"authorize_bind", &"--context", &context, &"--format", &"json"];
        args.extend_from_slice(extra);
        json(&bpf2sys(&args))
    };
    assert_eq!(run(&[&"--maps", &maps])["runs"][0]["verdict"], "BIND_DENY");
    assert_eq!(run(&[])["runs"][0]["verdict"], "BIND_PERMIT");
}

#[test]
fn unusable_inputs_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let x64 = build(dir.path(), "droppacket", "x64");
    let arm64 = build(dir.path(), "droppacket", "arm64");
    let pcap = repo().join("samples/fixtures/droppacket.pcap");
    let bad_context = dir.path().join("bad.json");
    std::fs::write(&bad_context, r#"{"no_such_field": 1}"#).unwrap();
    let bad_maps = dir.path().join("maps.json");
    std::fs::write(&bad_maps, r#"{"dropped_packet_map": [{"key": 1, "value": "0x01"}]}"#).unwrap();
    let cases: Vec<(&str, Vec<&dyn AsRef<std::ffi::OsStr>>)> = vec![
        ("ARM64 driver", vec![&"run", &arm64, &"--program", &"drop_empty_udp", &"--pcap", &pcap]),
        ("unknown program", vec![&"run", &x64, &"--program", &"nope", &"--pcap", &pcap]),
        ("no input", vec![&"run", &x64, &"--program", &"drop_empty_udp"]),
        ("unknown field", vec![&"run", &x64, &"--program", &"drop_empty_udp", &"--context", &bad_context]),
        ("short value", vec![&"run", &x64, &"--program", &"drop_empty_udp", &"--pcap", &pcap, &"--maps", &bad_maps]),
        ("not a capture", vec![&"run", &x64, &"--program", &"drop_empty_udp", &"--pcap", &bad_maps]),
        ("not a driver", vec![&"run", &pcap, &"--program", &"drop_empty_udp", &"--pcap", &pcap]),
    ];
    for (what, args) in cases {
        let out = bpf2sys(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.lines().count() == 1, "{what}: {stderr}");
    }
}

#[test]
fn a_program_that_faults_exits_1_and_names_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let driver = build(dir.path(), "droppacket", "x64");
    let report = json(&bpf2sys(&[&"inspect", &"--format", &"json", &driver]));
    let rva = report["programs"][0]["function_rva"].as_u64().unwrap() as u32;
    let section = report["pe"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            let va = s["virtual_address"].as_u64().unwrap() as u32;
            rva >= va && rva < va + s["virtual_size"].as_u64().unwrap() as u32
        })
        .unwrap()
        .clone();
    // The file offset of the function: the section's raw data pointer, read from the section table.
    let mut bytes = std::fs::read(&driver).unwrap();
    let name = section["name"].as_str().unwrap().as_bytes().to_vec();
    let header =
        bytes.windows(8).position(|w| w.starts_with(&name) && w[name.len()..].iter().all(|&b| b == 0)).unwrap();
    let raw = u32::from_le_bytes(bytes[header + 20..header + 24].try_into().unwrap());
    let offset = (raw + rva - section["virtual_address"].as_u64().unwrap() as u32) as usize;
    // ud2: the program's first instruction traps (a stand-in for a miscompiled program).
    bytes[offset..offset + 2].copy_from_slice(&[0x0f, 0x0b]);
    let broken = dir.path().join("broken.sys");
    std::fs::write(&broken, &bytes).unwrap();
    let pcap = repo().join("samples/fixtures/droppacket.pcap");
    let out = bpf2sys(&[&"run", &broken, &"--program", &"drop_empty_udp", &"--pcap", &pcap, &"--format", &"json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("faulted on input 0"), "{stderr}");
    let partial: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(partial["runs"].as_array().unwrap().len(), 0);
}
