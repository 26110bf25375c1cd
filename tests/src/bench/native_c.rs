//! The native C "limit": each program's C source compiled for the host with `-O2` and linked with `native.c`
//! (copies of `../shared/bench/native.c` and `host_common.h` sit next to this file), run as a child process.
//!
//! The child times itself exactly as the method says (one warm-up call, 5 batches of ITERS calls, minimum batch
//! ÷ ITERS, every result compared with the first) and inherits the parent's one-core affinity. ITERS is sized
//! from a short calibration run so that a batch takes at least 30 ms.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::timing::{Measurement, Mode, MIN_BATCH};

/// A host C compiler found on `PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CCompiler {
    /// The command, e.g. `gcc`.
    pub command: String,
    /// First line of `--version`.
    pub version: String,
}

/// Why the native baseline has no figure.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("running `{command}` failed: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error("cannot read the output of `{command}`: {output:?}")]
    Output { command: String, output: String },
    #[error("cannot create {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Looks for `command` (`gcc`, `clang`) and reads its version; `None` when it is not installed.
pub fn find_compiler(command: &str) -> Option<CCompiler> {
    let out = Command::new(command).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string();
    Some(CCompiler { command: command.to_string(), version })
}

fn run(cmd: &mut Command) -> Result<String, NativeError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| NativeError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        return Err(NativeError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Directory of `host_common.h`, `native.c` and `gen_inputs.c`.
pub fn host_sources_dir(repo_root: &Path) -> PathBuf {
    repo_root.join("tests/src/bench")
}

/// Builds `native_<cc>_<program>` in `out_dir` from `samples/bench/<program>.c`, as `../shared/bench/Makefile`
/// does: the program compiled on its own with `-O2` (so the call stays opaque), then linked with `native.c`.
pub fn build(repo_root: &Path, cc: &CCompiler, program: &str, out_dir: &Path) -> Result<PathBuf, NativeError> {
    std::fs::create_dir_all(out_dir).map_err(|source| NativeError::Io { path: out_dir.to_path_buf(), source })?;
    let source = repo_root.join("samples/bench").join(format!("{program}.c"));
    let object = out_dir.join(format!("{program}.{}.o", cc.command));
    let exe = out_dir.join(format!("native_{}_{program}", cc.command));
    run(Command::new(&cc.command).args(["-O2", "-c"]).arg(&source).arg("-o").arg(&object))?;
    run(Command::new(&cc.command)
        .arg("-O2")
        .arg(format!("-DPROG=\"{program}\""))
        .arg(host_sources_dir(repo_root).join("native.c"))
        .arg(&object)
        .arg("-o")
        .arg(&exe))?;
    Ok(exe)
}

/// Runs a built baseline with `iters` calls per batch; returns (r0, ns per run).
fn run_once(exe: &Path, iters: u64) -> Result<(u64, f64), NativeError> {
    let out = run(Command::new(exe).arg(iters.to_string()))?;
    let command = exe.display().to_string();
    let bad = || NativeError::Output { command: command.clone(), output: out.clone() };
    // `native P result=0x… ns/run=…`
    let mut r0 = None;
    let mut ns = None;
    for field in out.split_whitespace() {
        if let Some(hex) = field.strip_prefix("result=0x") {
            r0 = u64::from_str_radix(hex, 16).ok();
        } else if let Some(v) = field.strip_prefix("ns/run=") {
            ns = v.parse::<f64>().ok();
        }
    }
    Ok((r0.ok_or_else(bad)?, ns.ok_or_else(bad)?))
}

/// Measures a built baseline: a calibration run, then a run with batches of at least 30 ms (in `Quick` mode only
/// the calibration run). The caller checks `r0` against the expected value.
pub fn measure(exe: &Path, mode: Mode) -> Result<Measurement, NativeError> {
    let calibration_iters = 1000;
    let (r0, ns) = run_once(exe, calibration_iters)?;
    if mode == Mode::Quick {
        return Ok(Measurement { ns_per_run: ns, calls_per_batch: calibration_iters, r0 });
    }
    let iters = ((MIN_BATCH.as_secs_f64() * 1.1e9) / ns.max(0.1)).ceil() as u64;
    let (r0, ns) = run_once(exe, iters)?;
    Ok(Measurement { ns_per_run: ns, calls_per_batch: iters, r0 })
}
