//! `cargo xtask run-fixtures [FIXTURE.json…]`: the users' testing workflow of issue 18 as a check. Each fixture
//! under `samples/fixtures/` names a sample, and for each case a program, its input (a committed pcap, packets
//! as hex, and/or context fields), map entries to store first, and what must come out: r0 or verdict per input
//! and the exact entries of the listed maps. The sample is built into an x64 driver with `bpf2sys build` and
//! every case runs with `bpf2sys run --format json`, exactly as a user would run the driver they ship.
//!
//! Format (docs/run.md): `{"sample": NAME, "cases": [{"program", "pcap"?, "packets"?, "context"?, "maps"?,
//! "expect": {"verdicts"? | "r0"?, "maps"?: {MAP: [{"key", "value"}]}, "records"?: {MAP: [HEX]}}}]}`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Fixture files (default: every samples/fixtures/*.json).
    pub fixtures: Vec<PathBuf>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A classic little-endian pcap (LINKTYPE_ETHERNET) holding `packets`.
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32.to_le_bytes().to_vec(), vec![2, 0, 4, 0], vec![0; 8], 65535u32.to_le_bytes().to_vec()] {
        out.extend(v);
    }
    out.extend(1u32.to_le_bytes());
    for p in packets {
        out.extend([0u8; 8]);
        out.extend((p.len() as u32).to_le_bytes());
        out.extend((p.len() as u32).to_le_bytes());
        out.extend(p);
    }
    out
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    let digits: String = s.trim_start_matches("0x").chars().filter(|c| !c.is_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        bail!("`{s}` is not an even number of hex digits");
    }
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).context("hex")).collect()
}

/// Whether an expected key or value (a number, or "0x…" bytes) matches an entry's `*_int` / hex pair.
fn matches(expected: &Value, hex: &Value, int: &Value) -> bool {
    match expected {
        Value::Number(_) => expected == int,
        Value::String(s) => unhex(s).is_ok_and(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>() == *hex),
        _ => false,
    }
}

fn check_maps(expected: &serde_json::Map<String, Value>, maps: &[Value], what: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, entries) in expected {
        let Some(map) = maps.iter().find(|m| m["name"] == name.as_str()) else {
            failures.push(format!("{what}: no map `{name}` in the output"));
            continue;
        };
        let actual = map["entries"].as_array().cloned().unwrap_or_default();
        let wanted = entries.as_array().cloned().unwrap_or_default();
        let found = |e: &Value| {
            actual.iter().any(|a| {
                matches(&e["key"], &a["key"], &a["key_int"])
                    && (e.get("value").is_none() || matches(&e["value"], &a["value"], &a["value_int"]))
                    && (e.get("program").is_none() || e["program"] == a["program"])
            })
        };
        for e in &wanted {
            if !found(e) {
                failures
                    .push(format!("{what}: map `{name}` has no entry {e}; it holds {}", Value::Array(actual.clone())));
            }
        }
        if wanted.len() != actual.len() {
            failures.push(format!("{what}: map `{name}` holds {} entries, expected {}", actual.len(), wanted.len()));
        }
    }
    failures
}

fn check_case(
    bpf2sys: &Path,
    driver: &Path,
    dir: &Path,
    case: &Value,
    what: &str,
    scratch: &Path,
) -> Result<Vec<String>> {
    let program = case["program"].as_str().context("`program` is missing")?;
    let mut cmd = Command::new(bpf2sys);
    cmd.args(["run", "--format", "json", "--program", program]).arg(driver);
    if let Some(p) = case["pcap"].as_str() {
        cmd.arg("--pcap").arg(dir.join(p));
    }
    if let Some(packets) = case["packets"].as_array() {
        let packets: Vec<Vec<u8>> = packets.iter().map(|p| unhex(p.as_str().unwrap_or(""))).collect::<Result<_>>()?;
        let path = scratch.join("packets.pcap");
        std::fs::write(&path, pcap(&packets))?;
        cmd.arg("--pcap").arg(path);
    }
    for (flag, key) in [("--context", "context"), ("--maps", "maps")] {
        if let Some(v) = case.get(key) {
            let path = scratch.join(format!("{key}.json"));
            std::fs::write(&path, v.to_string())?;
            cmd.arg(flag).arg(path);
        }
    }
    let out = cmd.output().context("running bpf2sys run")?;
    if !out.status.success() {
        return Ok(vec![format!(
            "{what}: bpf2sys run exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        )]);
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("bpf2sys run --format json")?;
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    let expect = &case["expect"];
    let mut failures = Vec::new();
    for (key, field) in [("verdicts", "verdict"), ("r0", "r0")] {
        if let Some(wanted) = expect[key].as_array() {
            let got: Vec<Value> = runs.iter().map(|r| r[field].clone()).collect();
            if *wanted != got {
                failures.push(format!("{what}: {key} {got:?}, expected {wanted:?}"));
            }
        }
    }
    if let Some(maps) = expect["maps"].as_object() {
        failures.extend(check_maps(maps, report["maps"].as_array().map_or(&[], |v| v.as_slice()), what));
    }
    if let Some(records) = expect["records"].as_object() {
        for (name, wanted) in records {
            let got = report["maps"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["name"] == name.as_str())
                .map(|m| m["values"].clone());
            if got.as_ref() != Some(wanted) {
                failures.push(format!("{what}: records of `{name}` {got:?}, expected {wanted}"));
            }
        }
    }
    Ok(failures)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let root = root();
    let bpf2sys = crate::mutate::bpf2sys_binary(&root)?;
    let mut fixtures = args.fixtures;
    if fixtures.is_empty() {
        let dir = root.join("samples/fixtures");
        fixtures = std::fs::read_dir(&dir)
            .with_context(|| dir.display().to_string())?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?;
        fixtures.retain(|p| p.extension().is_some_and(|e| e == "json"));
        fixtures.sort();
    }
    let scratch = tempfile::tempdir()?;
    let (mut cases, mut failures) = (0, Vec::new());
    for fixture in &fixtures {
        let spec: Value =
            serde_json::from_slice(&std::fs::read(fixture).with_context(|| fixture.display().to_string())?)
                .with_context(|| format!("{}: not JSON", fixture.display()))?;
        let sample = spec["sample"].as_str().with_context(|| format!("{}: `sample` is missing", fixture.display()))?;
        let object = root.join("samples").join(format!("{sample}.o"));
        let driver = scratch.path().join(format!("{sample}.sys"));
        let build = Command::new(&bpf2sys).arg("build").arg(&object).arg("-o").arg(&driver).output()?;
        if !build.status.success() {
            failures.push(format!("{sample}: build failed: {}", String::from_utf8_lossy(&build.stderr).trim()));
            continue;
        }
        let dir = fixture.parent().unwrap_or(Path::new("."));
        for (i, case) in spec["cases"].as_array().into_iter().flatten().enumerate() {
            let what = format!("{sample} case {i} ({})", case["program"].as_str().unwrap_or("?"));
            failures.extend(check_case(&bpf2sys, &driver, dir, case, &what, scratch.path())?);
            cases += 1;
        }
    }
    println!("run-fixtures: {} fixture(s), {cases} case(s), {} failure(s)", fixtures.len(), failures.len());
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
