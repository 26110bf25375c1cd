//! `cargo xtask build-driver [OBJ ...] [--out DIR] [--target x64|arm64] [--runtime-version X.Y.Z] [--unsigned]`
//!
//! Builds drivers the way CI does: for each object (default: every `samples/*.o`), verify → compile → link
//! (→ sign, once the signing stage lands; until then every output is unsigned and `--unsigned` changes
//! nothing), then lint the result (driver-image-and-signing.md §5.2). Outputs go to `--out` (default
//! `target/drivers/`), written atomically. Fails if any object fails to build or any image fails a rule.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bpf2sys::compiled::Target;
use bpf2sys::link::lint::lint_image;
use bpf2sys::link::pipeline::{build_driver, BuildOptions};
use bpf2sys::link::write_atomically;
use bpf2sys_runtime_shim::RuntimeVersion;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// eBPF objects to build (default: every samples/*.o).
    pub objects: Vec<PathBuf>,
    /// Output directory (default: target/drivers).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Target architecture.
    #[arg(long, default_value = "x64", value_parser = ["x64", "arm64"])]
    pub target: String,
    /// Runtime version the modules report (contract §2.4; default: the most portable, 1.3.0).
    #[arg(long, default_value = "1.3.0", value_parser = RuntimeVersion::parse)]
    pub runtime_version: RuntimeVersion,
    /// Leave the drivers unsigned (today every output is unsigned; signing joins with the signing stage).
    #[arg(long)]
    pub unsigned: bool,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the repository").to_path_buf()
}

pub fn run(args: Args) -> Result<ExitCode> {
    let root = repo_root();
    let objects = if args.objects.is_empty() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("samples"))
            .context("cannot list samples/")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "o"))
            .collect();
        v.sort();
        v
    } else {
        args.objects.clone()
    };
    if objects.is_empty() {
        bail!("no objects to build");
    }
    let out = args.out.clone().unwrap_or_else(|| root.join("target").join("drivers"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let options = BuildOptions {
        target: if args.target == "arm64" { Target::Arm64 } else { Target::X64 },
        runtime_version: args.runtime_version,
        ..BuildOptions::default()
    };
    let mut failures = 0;
    for object in &objects {
        let name = object.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(object).with_context(|| format!("cannot read {}", object.display()))?;
        let started = Instant::now();
        let image = match build_driver(&bytes, &name, &options) {
            Ok(image) => image,
            Err(e) => {
                eprintln!("error: {e}");
                failures += 1;
                continue;
            }
        };
        let elapsed = started.elapsed();
        let report = lint_image(&image);
        let path = out.join(Path::new(&name).with_extension("sys"));
        if !report.passed() {
            eprintln!("error: {} fails the driver lint, not written:\n{report}", path.display());
            failures += 1;
            continue;
        }
        write_atomically(&path, &image).with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "{} -> {} ({} bytes, {}, unsigned, {:.1} ms)",
            object.display(),
            path.strip_prefix(&root).unwrap_or(&path).display(),
            image.len(),
            args.target,
            elapsed.as_secs_f64() * 1e3
        );
    }
    if failures > 0 {
        eprintln!("{failures} of {} objects failed", objects.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
