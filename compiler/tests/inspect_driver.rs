//! `bpf2sys inspect X.sys` reads a driver back through the native-module contract (issue 18): for every sample
//! object that builds, x64 and ARM64, unsigned and test-signed, the driver's report carries the same program and
//! map facts `inspect X.o` gives, the PE facts and the signature; malformed drivers exit 2 with a reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let mut objects: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("samples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objects.sort();
    objects
}

fn bpf2sys(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bpf2sys")).args(args).output().expect("run bpf2sys")
}

fn inspect(path: &Path) -> Value {
    let out = bpf2sys(&[&"inspect", &"--format", &"json", &path]);
    assert!(out.status.success(), "inspect {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("inspect prints JSON")
}

fn helper_set(program: &Value) -> BTreeSet<(u64, String)> {
    program["helpers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_u64().unwrap(), h["name"].as_str().unwrap_or("?").to_string()))
        .collect()
}

fn set(v: &Value) -> BTreeSet<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// The program and map facts of `inspect X.o` that a driver carries, compared with `inspect X.sys`.
fn assert_round_trip(object: &Value, driver: &Value, what: &str) {
    let programs = object["programs"].as_array().unwrap();
    let driver_programs = driver["programs"].as_array().unwrap();
    assert_eq!(programs.len(), driver_programs.len(), "{what}: program count");
    for p in programs {
        let name = p["name"].as_str().unwrap();
        let d = driver_programs.iter().find(|d| d["name"] == name).unwrap_or_else(|| panic!("{what}: no `{name}`"));
        for key in ["section", "program_type", "attach_type", "entry_instruction_count"] {
            assert_eq!(p[key], d[key], "{what}: program `{name}` {key}");
        }
        assert_eq!(helper_set(p), helper_set(d), "{what}: program `{name}` helpers");
        assert_eq!(set(&p["maps_referenced"]), set(&d["maps_referenced"]), "{what}: program `{name}` maps");
        let used: BTreeSet<String> =
            d["kfuncs"].as_array().unwrap().iter().filter_map(|k| k["name"].as_str().map(String::from)).collect();
        let object_kfuncs: BTreeSet<String> = object["kfuncs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| p["kfuncs"].as_array().unwrap().contains(&k["id"]))
            .map(|k| k["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(object_kfuncs, used, "{what}: program `{name}` kfuncs");
        assert!(d["program_info_hash"].as_str().is_some_and(|h| h.len() == 64), "{what}: `{name}` hash");
        assert!(d["code_size"].as_u64().is_some_and(|s| s > 0), "{what}: `{name}` code size");
    }
    let maps = object["maps"].as_array().unwrap();
    assert_eq!(maps, driver["maps"].as_array().unwrap(), "{what}: maps");
    assert_eq!(
        object["global_sections"].as_array().unwrap().len(),
        driver["global_sections"].as_array().unwrap().len(),
        "{what}: global sections"
    );
}

#[test]
fn inspect_sys_round_trips_the_objects_facts_for_every_sample_driver() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut checked = 0;
    for object in samples() {
        let stem = object.file_stem().unwrap().to_string_lossy().into_owned();
        let facts = inspect(&object);
        for target in ["x64", "arm64"] {
            for signed in [false, true] {
                let driver = dir.path().join(format!("{stem}-{target}-{signed}.sys"));
                let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
                    vec![&"build", &object, &"--target", &target, &"-o", &driver];
                if signed {
                    args.extend([
                        &"--test-sign" as &dyn AsRef<std::ffi::OsStr>,
                        &"--test-cert-dir",
                        &certs,
                        &"--page-hashes",
                    ]);
                }
                let out = bpf2sys(&args);
                if !out.status.success() {
                    // Objects the verifier rejects (or that no program of which loads) make no driver.
                    assert_ne!(stem, "droppacket", "{}", String::from_utf8_lossy(&out.stderr));
                    continue;
                }
                let what = format!("{stem} {target} {}", if signed { "signed" } else { "unsigned" });
                let report = inspect(&driver);
                assert_eq!(report["machine"], target, "{what}");
                assert_eq!(report["pe"]["machine"], target, "{what}");
                assert_round_trip(&facts, &report, &what);
                let imports = report["pe"]["imports"].as_array().unwrap();
                assert!(imports.iter().any(|m| m["dll"] == "NETIO.SYS"), "{what}: NMR imports");
                let signature = &report["signature"];
                if signed {
                    assert_eq!(signature["intact"], true, "{what}: {signature}");
                    assert_eq!(signature["digest_algorithm"], "SHA-256", "{what}");
                    assert!(signature["signer_subject"].as_str().is_some_and(|s| s.contains("bpf2sys")), "{what}");
                    assert!(!signature["chain"].as_array().unwrap().is_empty(), "{what}");
                    assert!(signature["page_hashes"].as_u64().is_some_and(|n| n > 0), "{what}");
                } else {
                    assert!(signature.is_null(), "{what}: {signature}");
                }
                let text = bpf2sys(&[&"inspect", &driver]);
                assert!(text.status.success() && String::from_utf8_lossy(&text.stdout).contains("program "), "{what}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "only {checked} drivers were checked");
}

#[test]
fn inspect_sys_refuses_malformed_drivers_with_exit_2_and_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let object = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/droppacket.o");
    let driver = dir.path().join("d.sys");
    assert!(bpf2sys(&[&"build", &object, &"-o", &driver]).status.success());
    let good = std::fs::read(&driver).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> =
        vec![("truncated", good[..good.len() / 2].to_vec()), ("just MZ", b"MZ".to_vec())];
    // Break the metadata table's size field (56 → 8): the runtime would refuse the module.
    let word = |o: usize| u64::from_le_bytes(good[o..o + 8].try_into().unwrap());
    let table = (0..good.len() - 56)
        .step_by(8)
        .find(|&o| word(o) == 56 && (1..7).all(|k| (0x1_4000_0000..0x1_5000_0000).contains(&word(o + 8 * k))))
        .expect("the metadata table");
    let mut bad_table = good.clone();
    bad_table[table] = 8;
    cases.push(("no metadata table", bad_table));
    for (what, bytes) in cases {
        let path = dir.path().join("bad.sys");
        std::fs::write(&path, bytes).unwrap();
        let out = bpf2sys(&[&"inspect", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.lines().count() == 1, "{what}: {stderr}");
    }
}
