//! `cargo xtask samples`: rebuild every `samples/*.c` into the committed `samples/*.o`, and the benchmark programs
//! `samples/bench/*.c` (clang -O2 -target bpf, default CPU v1, no -g, as ../shared/bench/Makefile builds them).
//!
//! Flags: `clang -O2 -g -target bpf -mcpu=v3 -I samples/include`, plus `-fdebug-prefix-map=<repo>=.` so the
//! source paths recorded in BTF line info are relative (`./samples/x.c`) and the committed objects do not depend
//! on where the repository is checked out. Each object is written to a temporary file and renamed into place, so
//! a failed build never leaves a half-written `.o`.
//!
//! A few samples are also built with other CPU levels and without `-g` into `samples/variants/` so the front end's
//! tests cover clang's other encodings (v1 has no 32-bit jumps, v2 no atomics with fetch; without `-g` there is no
//! BTF, so only legacy maps and global data are possible).

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
        .filter(|p| args.names.is_empty() || p.file_stem().is_some_and(|s| args.names.iter().any(|n| s == n.as_str())))
        .collect();
    sources.sort();
    // The benchmark programs (samples/bench/*.c) are built like ../shared/bench/Makefile does — default CPU (v1), no
    // -g — because the benchmark tables compare engines on exactly those objects.
    let bench_dir = samples.join("bench");
    let mut bench_sources: Vec<PathBuf> = std::fs::read_dir(&bench_dir)
        .with_context(|| format!("reading {}", bench_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter(|p| args.names.is_empty() || p.file_stem().is_some_and(|s| args.names.iter().any(|n| s == n.as_str())))
        .collect();
    bench_sources.sort();
    // samples/linux/*.c follow Linux conventions (map-type numbering, legacy records); built like the others.
    let linux_dir = samples.join("linux");
    let mut linux_sources: Vec<PathBuf> = std::fs::read_dir(&linux_dir)
        .with_context(|| format!("reading {}", linux_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter(|p| args.names.is_empty() || p.file_stem().is_some_and(|s| args.names.iter().any(|n| s == n.as_str())))
        .collect();
    linux_sources.sort();
    if sources.is_empty() && bench_sources.is_empty() && linux_sources.is_empty() {
        bail!("no matching samples/*.c, samples/bench/*.c or samples/linux/*.c found");
    }
    let mut built = 0;
    for source in &sources {
        compile(&args.clang, &root, source, &source.with_extension("o"), "v3", true)?;
        built += 1;
        let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        for &(variant, cpu, debug) in VARIANTS.iter().filter(|v| v.0 == stem) {
            let name = format!("{variant}-{cpu}{}.o", if debug { "" } else { "-nodebug" });
            std::fs::create_dir_all(samples.join("variants")).context("creating samples/variants")?;
            compile(&args.clang, &root, source, &samples.join("variants").join(name), cpu, debug)?;
            built += 1;
        }
    }
    for source in &bench_sources {
        compile(&args.clang, &root, source, &source.with_extension("o"), "v1", false)?;
        built += 1;
    }
    for source in &linux_sources {
        compile(&args.clang, &root, source, &source.with_extension("o"), "v3", true)?;
        built += 1;
    }
    println!("{built} object(s) rebuilt");
    Ok(())
}

/// (sample stem, -mcpu, -g) of the extra builds in `samples/variants/`.
const VARIANTS: &[(&str, &str, bool)] = &[
    ("bpf_calls", "v1", true),
    ("bpf_calls", "v2", true),
    ("droppacket", "v1", true),
    ("droppacket", "v2", true),
    ("globals", "v1", false),
    ("globals", "v2", true),
    ("legacy_maps", "v1", false),
    ("legacy_maps", "v2", false),
    ("legacy_maps", "v3", false),
    ("tail_call", "v1", true),
];

fn compile(clang: &str, root: &Path, source: &Path, object: &Path, cpu: &str, debug: bool) -> Result<()> {
    let dir = object.parent().context("object path has a directory")?;
    let relative = source.strip_prefix(root).unwrap_or(source);
    let temp = tempfile::Builder::new()
        .prefix(".sample-")
        .suffix(".o")
        .tempfile_in(dir)
        .context("creating a temporary object file")?;
    let mut cmd = Command::new(clang);
    cmd.current_dir(root).args(["-O2", "-target", "bpf", "-I", "samples/include"]).arg(format!("-mcpu={cpu}"));
    if debug {
        cmd.arg("-g").arg(format!("-fdebug-prefix-map={}=.", root.display()));
    }
    let status =
        cmd.arg("-c").arg(relative).arg("-o").arg(temp.path()).status().with_context(|| format!("running {clang}"))?;
    if !status.success() {
        bail!("clang failed on {} ({status})", relative.display());
    }
    temp.persist(object).with_context(|| format!("writing {}", object.display()))?;
    println!("built {}", object.strip_prefix(root).unwrap_or(object).display());
    Ok(())
}
