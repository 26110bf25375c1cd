//! `cargo xtask samples`: rebuild every `samples/*.c` into the committed `samples/*.o`.
//!
//! Flags: `clang -O2 -g -target bpf -mcpu=v3 -I samples/include`, plus `-fdebug-prefix-map=<repo>=.` so the
//! source paths recorded in BTF line info are relative (`./samples/x.c`) and the committed objects do not depend
//! on where the repository is checked out. Each object is written to a temporary file and renamed into place, so
//! a failed build never leaves a half-written `.o`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The clang to use.
    #[arg(long, default_value = "clang")]
    clang: String,
    /// Rebuild only these samples (file stems, e.g. `droppacket`); default: every `samples/*.c`.
    names: Vec<String>,
}

fn repo_root() -> PathBuf {
    // xtask/ lives directly under the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the repository").to_path_buf()
}

pub fn run(args: Args) -> Result<()> {
    let root = repo_root();
    let samples = root.join("samples");
    match Command::new(&args.clang).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => bail!(
            "`{}` was not found or does not run. Install clang with eBPF support (Debian/Ubuntu: `apt-get install \
             clang`), or pass --clang <path>.",
            args.clang
        ),
    }
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&samples)
        .with_context(|| format!("reading {}", samples.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter(|p| {
            args.names.is_empty() || p.file_stem().is_some_and(|s| args.names.iter().any(|n| s == n.as_str()))
        })
        .collect();
    sources.sort();
    if sources.is_empty() {
        bail!("no matching samples/*.c found");
    }
    let prefix_map = format!("-fdebug-prefix-map={}=.", root.display());
    for source in &sources {
        let object = source.with_extension("o");
        let relative = source.strip_prefix(&root).unwrap_or(source);
        let temp = tempfile::Builder::new()
            .prefix(".sample-")
            .suffix(".o")
            .tempfile_in(&samples)
            .context("creating a temporary object file")?;
        let status = Command::new(&args.clang)
            .current_dir(&root)
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I", "samples/include", &prefix_map, "-c"])
            .arg(relative)
            .arg("-o")
            .arg(temp.path())
            .status()
            .with_context(|| format!("running {}", args.clang))?;
        if !status.success() {
            bail!("clang failed on {} ({status})", relative.display());
        }
        temp.persist(&object).with_context(|| format!("writing {}", object.display()))?;
        println!("built {}", object.strip_prefix(&root).unwrap_or(&object).display());
    }
    println!("{} sample(s) rebuilt", sources.len());
    Ok(())
}
