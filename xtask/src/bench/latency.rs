//! The compile-latency table of `cargo xtask bench`: every sample, the benchmark objects and generated 10k/100k
//! slot programs, each measured stage by stage in its own child process (`--compile-cell OBJECT`) so its peak RSS
//! is its own. Also the figures issue 16's goals read from the table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context as _;
use bpf2sys_files::write_atomically;
use bpf2sys_tests::bench::programs::{self, PROGRAMS};
use bpf2sys_tests::bench::timing::{self, Mode};
use bpf2sys_tests::bench::{compile, generated, report};

use super::{exit_description, repo_root, run_with_timeout};

/// The figures of the table the goals are judged on.
#[derive(Clone, Debug, Default)]
pub struct LatencyFigures {
    /// `unrolled_xdp.o` to signed `.sys` bytes, median µs.
    pub unrolled_end_to_end_us: Option<f64>,
    /// Signing the `unrolled_xdp` driver (RSA-2048), median µs.
    pub unrolled_sign_us: Option<f64>,
    /// Lowering + codegen of `unrolled_xdp`, median µs per 1k instruction slots.
    pub unrolled_lower_us_per_1k: Option<f64>,
    /// Peak RSS of the process building the generated 100k-slot program, MiB.
    pub generated_100k_peak_rss_mib: Option<f64>,
}

/// The objects of the compile-latency table: every sample, the benchmark objects (with the XDP `unrolled`), and
/// generated programs of 10k and 100k instruction slots (written under `target/bench/`).
fn compile_targets(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut targets = Vec::new();
    let mut samples: Vec<PathBuf> = std::fs::read_dir(root.join("samples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    samples.sort();
    for path in samples {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        targets.push((format!("sample {name}"), path));
    }
    for p in PROGRAMS.iter().chain([&programs::UNROLLED_XDP]) {
        targets.push((format!("bench {p}.o"), programs::bench_dir(root).join(format!("{p}.o"))));
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for slots in [10_000, 100_000] {
        let path = dir.join(format!("generated-{}k.o", slots / 1000));
        write_atomically(&path, &generated::xdp_object(slots))?;
        targets.push((format!("generated {}k", slots / 1000), path));
    }
    Ok(targets)
}

/// The compile-latency table, and the figures the goals are judged on.
pub fn compile_latency_section(root: &Path, mode: Mode) -> anyhow::Result<(String, LatencyFigures)> {
    let mut figures = LatencyFigures::default();
    let runs = if mode == Mode::Quick { 2 } else { 11 };
    let mut out = format!(
        "µs per stage for the whole object (all its programs), median of {runs} runs in one process (cold first \
         run in parentheses). Stages of one `driver::Session`: `load`; `verify` (every program); `lower` (Cranelift \
         IR and x64 codegen per program); `link` (runtime shim, PE32+ image); `sign` (Authenticode SHA-256, RSA-2048 \
         test certificate, no timestamp); end to end = `build` + `sign`, `.o` bytes to signed `.sys` bytes in memory. µs per 1k eBPF instruction slots from the end-to-end median (from lower+codegen where the \
         object cannot be linked). Peak RSS of a process that compiles only that object, all stages and runs \
         included. A stage that rejects the object is marked fail, with the reason below.\n\n\
         | program | slots |"
    );
    for s in compile::STAGES {
        out.push_str(&format!(" {s} |"));
    }
    out.push_str(" µs / 1k slots | peak RSS |\n|---|---:|");
    for _ in compile::STAGES {
        out.push_str("---:|");
    }
    out.push_str("---:|---:|\n");
    let mut notes: Vec<String> = Vec::new();
    for (label, path) in compile_targets(root)? {
        eprintln!("bench: compile latency of {label}");
        let quick = if mode == Mode::Quick { Some("--quick") } else { None };
        let v = match run_cell_process("--compile-cell", &path, quick) {
            Ok(v) => v,
            Err(e) => {
                out.push_str(&format!("| {label} | | **fail**: {e} |\n"));
                continue;
            }
        };
        if let Some(e) = v["error"].as_str() {
            out.push_str(&format!("| {label} | | **fail**: {e} |\n"));
            continue;
        }
        let slots = v["slots"].as_u64().unwrap_or(0);
        let is_unrolled_xdp = label == format!("bench {}.o", programs::UNROLLED_XDP);
        out.push_str(&format!("| {label} | {} |", report::group_thousands(slots)));
        let mut per_1k = None;
        for (i, stage) in compile::STAGES.iter().enumerate() {
            let s = &v["stages"][i];
            if let (Some(median), Some(cold)) = (s["median_us"].as_f64(), s["cold_us"].as_f64()) {
                out.push_str(&format!(" {} ({}) |", report::format_us(median), report::format_us(cold)));
                if is_unrolled_xdp {
                    match *stage {
                        "end to end" => figures.unrolled_end_to_end_us = Some(median),
                        "sign" => figures.unrolled_sign_us = Some(median),
                        "lower+codegen" => {
                            figures.unrolled_lower_us_per_1k = Some(median / (slots.max(1) as f64 / 1000.0))
                        }
                        _ => {}
                    }
                }
                if *stage == "end to end" || (*stage == "lower+codegen" && per_1k.is_none()) {
                    per_1k = Some((median / (slots.max(1) as f64 / 1000.0), *stage));
                }
            } else if let Some(e) = s["failed"].as_str() {
                out.push_str(" fail |");
                // The verifier's reason is listed; the stages after it only say they need it.
                if !e.starts_with("needs a verified module") {
                    notes.push(format!("- {label} / {stage}: {e}"));
                }
            } else {
                out.push_str(" n/a |");
                if let Some(reason) = s["not_available"].as_str() {
                    let note = format!("- {stage}: {reason}");
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                }
            }
        }
        match per_1k {
            Some((v, "end to end")) => out.push_str(&format!(" {} |", report::format_us(v))),
            Some((v, _)) => out.push_str(&format!(" {} (lower) |", report::format_us(v))),
            None => out.push_str(" – |"),
        }
        let rss_mib = v["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0;
        if label == "generated 100k" {
            // The goal is about building the program; the cell's process also holds every stage's output while it
            // times the next stages, so the goal's figure comes from a process that only builds and signs it once.
            match build_peak_rss_mib(&path) {
                Ok(mib) => {
                    figures.generated_100k_peak_rss_mib = Some(mib);
                    notes.push(format!(
                        "- {label}: peak RSS of a process that only builds and signs it once, as `bpf2sys build` \
                         does: {mib:.1} MiB (the table's {rss_mib:.1} MiB is the timing process, which holds the \
                         module, its verified programs and their lowered code while it times link, sign and the \
                         end-to-end builds)"
                    ));
                }
                Err(e) => notes.push(format!("- {label}: build-only peak RSS: {e}")),
            }
        }
        out.push_str(&format!(" {rss_mib:.1} MiB |\n"));
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    Ok((out, figures))
}

/// The child side of the "peak RSS building the generated 100k-slot program" figure: one build and signature of
/// `object`, nothing else in the process.
pub fn run_build_cell(object: &Path) -> anyhow::Result<()> {
    let key_dir = repo_root().join("target/bench/signing");
    let value = match compile::build_and_sign_once(object, &key_dir) {
        Ok(len) => serde_json::json!({ "signed_bytes": len, "peak_rss_kib": timing::peak_rss_kib() }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    println!("{value}");
    Ok(())
}

/// Peak RSS in MiB of a child process that builds and signs `object` once (`--build-cell`).
fn build_peak_rss_mib(object: &Path) -> anyhow::Result<f64> {
    let v = run_cell_process("--build-cell", object, None)?;
    if let Some(e) = v["error"].as_str() {
        bail!("{e}");
    }
    Ok(v["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0)
}

/// Runs this binary as `bench CELL_FLAG OBJECT [EXTRA]` in a child process (so its peak RSS is its own) and returns
/// the JSON object on the last line of its output that holds one.
fn run_cell_process(cell_flag: &str, object: &Path, extra: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", cell_flag]).arg(object).args(extra);
    let output = run_with_timeout(cmd, Duration::from_secs(600)).map_err(anyhow::Error::msg)?;
    if !output.status.success() {
        bail!("crashed: {} {}", exit_description(&output.status), String::from_utf8_lossy(&output.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    Ok(serde_json::from_str(line)?)
}

/// The child side of the compile-latency table.
pub fn run_compile_cell(object: &Path, mode: Mode) -> anyhow::Result<()> {
    let runs = if mode == Mode::Quick { 2 } else { 11 };
    let key_dir = repo_root().join("target/bench/signing");
    let value = match compile::measure(object, &key_dir, runs) {
        Ok(latency) => {
            let stages: Vec<serde_json::Value> = latency
                .stages
                .iter()
                .map(|s| match s {
                    compile::StageOutcome::Timed { cold_us, median_us } => {
                        serde_json::json!({ "cold_us": cold_us, "median_us": median_us })
                    }
                    compile::StageOutcome::Failed(e) => serde_json::json!({ "failed": e }),
                    compile::StageOutcome::NotAvailable(e) => serde_json::json!({ "not_available": e }),
                })
                .collect();
            serde_json::json!({ "slots": latency.slots, "stages": stages, "peak_rss_kib": timing::peak_rss_kib() })
        }
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    println!("{value}");
    Ok(())
}
