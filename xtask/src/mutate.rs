//! `cargo xtask mutate [--cases N] [--seed S] [--jobs J] [--timeout-ms T] [--memory-mib M] [--case K] [--drivers-only]`
//!
//! The hostile-input campaign of issue 17 as a repeatable run: every committed eBPF object (`samples/**/*.o`)
//! and a driver built from every sample (x64 and ARM64, test-signed and unsigned) is mutated (bit flips, interesting values in
//! header-sized fields, truncation, chunk deletion, duplication and insertion), and the `bpf2sys` binary runs on
//! each mutant in a child process with a CPU-time, address-space and wall-clock cap:
//! - objects: `verify`, `build` (to a scratch file) and `inspect`, and every eighth case `compile --emit obj`;
//! - drivers: `check`, `verify-signature` and `inspect` (the `.sys` reader: metadata, PE facts, signature).
//!
//! A case is one mutant with all its subcommands. The run fails on any panic (exit 101), death by a signal,
//! timeout, exit code outside 0/1/2, or a verdict disagreement between `verify` and `build` on the same object
//! (verified but not built, rejected but built, or a different rejection code): the verifier is the only safety
//! gate, so what it accepts must compile, and what it rejects must not. Mutants are a pure function of
//! (seed, case number), so `--case K` reproduces one; failing inputs are saved under `target/mutate-failures/`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bpf2sys::compiled::Target;
use bpf2sys::driver::{build_driver, default_runtime_version, SessionOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of cases (mutants) to run.
    #[arg(long, default_value_t = 20_000)]
    pub cases: u64,
    /// Seed of the mutation generator.
    #[arg(long, default_value_t = 0x6270_6632_7379_7321)]
    pub seed: u64,
    /// Parallel workers.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Wall-clock limit per subcommand run (the CPU limit is the same, rounded up to seconds).
    #[arg(long, default_value_t = 20_000)]
    pub timeout_ms: u64,
    /// Address-space limit per subcommand run.
    #[arg(long, default_value_t = 2048)]
    pub memory_mib: u64,
    /// Run only this case number (to reproduce a failure).
    #[arg(long)]
    pub case: Option<u64>,
    /// Mutate only the drivers (x64 and ARM64, signed and unsigned): the `.sys` readers' campaign.
    #[arg(long)]
    pub drivers_only: bool,
}

/// An input of the campaign before mutation.
struct Seed {
    name: String,
    kind: Kind,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Driver,
}

/// How one subcommand run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Exit(i32),
    Signal(i32),
    Timeout,
}

/// Counters of the whole run.
#[derive(Default)]
struct Tally {
    cases: u64,
    runs: u64,
    /// (subcommand, exit code) -> count.
    exits: std::collections::BTreeMap<(String, i32), u64>,
    failures: Vec<String>,
    panics: u64,
    signals: u64,
    timeouts: u64,
    disagreements: u64,
}

/// SplitMix64: a tiny, well-mixed generator, so each case is reproducible from (seed, case).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values that break length, offset and count fields.
const INTERESTING: [u64; 12] =
    [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1000, u64::MAX];

/// One to four mutations of `input`.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        match rng.below(8) {
            0 | 1 if len > 0 => {
                let at = rng.below(len);
                bytes[at] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let at = rng.below(len);
                bytes[at] = rng.next() as u8;
            }
            3 | 4 if len >= 8 => {
                // An interesting value in a 2-, 4- or 8-byte little-endian field at an aligned offset: ELF and PE
                // headers, section tables, BTF records and instruction immediates are all aligned fields.
                let width = [2usize, 4, 8][rng.below(3)];
                let at = rng.below(len / width) * width;
                let value = INTERESTING[rng.below(INTERESTING.len())].wrapping_add(rng.below(3) as u64).wrapping_sub(1);
                bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
            5 => {
                let keep = rng.below(len + 1);
                bytes.truncate(keep);
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(256));
                if rng.below(2) == 0 {
                    bytes.drain(at..at + n);
                } else {
                    let chunk = bytes[at..at + n].to_vec();
                    let to = rng.below(bytes.len() + 1);
                    bytes.splice(to..to, chunk);
                }
            }
            _ => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let random: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, random);
            }
        }
    }
    bytes
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the repository").to_path_buf()
}

fn objects_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            objects_under(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "o") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every committed object, and a test-signed and an unsigned driver built from each top-level sample.
fn seeds(root: &Path) -> Result<Vec<Seed>> {
    let mut paths = Vec::new();
    objects_under(&root.join("samples"), &mut paths)?;
    paths.sort();
    let test = bpf2sys_signing::test_cert::load_or_create(&root.join("target/test-signing"))?;
    let mut seeds = Vec::new();
    for path in paths {
        let name = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {name}"))?;
        let top_level = path.parent() == Some(&root.join("samples"));
        if top_level {
            let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // The version `bpf2sys build` picks when none is given (1.5.0 for objects that call kfuncs).
            let runtime_version = default_runtime_version(&bytes, &file_name);
            // x64 and ARM64: the `.sys` reader evaluates each machine's metadata callbacks from their code.
            for (target, label) in [(Target::X64, ""), (Target::Arm64, " arm64")] {
                let options = SessionOptions { runtime_version, target, ..SessionOptions::default() };
                let image =
                    build_driver(&bytes, &file_name, &options).with_context(|| format!("{name} does not build"))?;
                let signed = bpf2sys_signing::sign_pe(&image, &test.signer, &Default::default())?;
                seeds.push(Seed { name: format!("{name} ({label}driver)"), kind: Kind::Driver, bytes: image });
                seeds.push(Seed { name: format!("{name} (signed{label} driver)"), kind: Kind::Driver, bytes: signed });
            }
        }
        seeds.push(Seed { name, kind: Kind::Object, bytes });
    }
    Ok(seeds)
}

/// The bpf2sys binary of the same profile as this xtask, built if needed.
pub(crate) fn bpf2sys_binary(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(root).args(["build", "-q", "-p", "bpf2sys", "--bin", "bpf2sys"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    if !build.status().context("running cargo build")?.success() {
        bail!("cargo build -p bpf2sys failed");
    }
    let exe = std::env::current_exe().context("locating xtask")?;
    let path = exe.parent().context("xtask has no directory")?.join(format!("bpf2sys{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// Whether `build`'s stderr says it left a program out of the driver (and wrote the others).
fn left_out_a_program(build_stderr: &str) -> bool {
    build_stderr.contains("left out of the driver")
}

/// Most bytes of a run's stderr kept; the rest is read and dropped so the child never blocks on a full pipe.
const STDERR_CAP: u64 = 64 * 1024;

/// Runs one subcommand under the limits; returns how it ended and (the first [`STDERR_CAP`] bytes of) its stderr.
fn run_capped(binary: &Path, args: &[&std::ffi::OsStr], limits: &Args) -> Result<(Outcome, String)> {
    let mut command = Command::new(binary);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let cpu_seconds = limits.timeout_ms.div_ceil(1000);
    let memory = limits.memory_mib << 20;
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let set = |resource, value: u64| {
                    let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                };
                set(libc::RLIMIT_CPU, cpu_seconds)?;
                set(libc::RLIMIT_AS, memory)?;
                set(libc::RLIMIT_CORE, 0)
            });
        }
    }
    let mut child = command.spawn().with_context(|| format!("cannot run {}", binary.display()))?;
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut kept = Vec::new();
        let _ = (&mut pipe).take(STDERR_CAP).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        String::from_utf8_lossy(&kept).into_owned()
    });
    let outcome = wait_capped(&mut child, limits.timeout_ms)?;
    // The pipe closes when the child is gone (it starts no processes of its own), so this join returns.
    let stderr = reader.join().expect("stderr reader thread");
    Ok((outcome, stderr))
}

/// Waits for `child` until `timeout_ms` have passed, then kills it.
fn wait_capped(child: &mut std::process::Child, timeout_ms: u64) -> Result<Outcome> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait()? {
            #[cfg(unix)]
            if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
                return Ok(Outcome::Signal(signal));
            }
            return Ok(Outcome::Exit(status.code().unwrap_or(-1)));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Outcome::Timeout);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Runs every subcommand for one mutant; returns the failures (empty when the case is clean).
fn run_case(
    binary: &Path,
    scratch: &Path,
    seed: &Seed,
    case: u64,
    bytes: &[u8],
    args: &Args,
    tally: &Mutex<Tally>,
) -> Result<Vec<String>> {
    let input = scratch.join(if seed.kind == Kind::Object { "mutant.o" } else { "mutant.sys" });
    std::fs::write(&input, bytes)?;
    let output = scratch.join("out.sys");
    let object_file = scratch.join("out.obj");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let mut runs: Vec<(&str, Vec<&std::ffi::OsStr>)> = match seed.kind {
        Kind::Object => vec![
            ("verify", vec![os("verify"), input.as_os_str()]),
            ("build", vec![os("build"), input.as_os_str(), os("-o"), output.as_os_str()]),
            ("inspect", vec![os("inspect"), input.as_os_str()]),
        ],
        Kind::Driver => vec![
            ("check", vec![os("check"), input.as_os_str()]),
            ("verify-signature", vec![os("verify-signature"), input.as_os_str()]),
            // The `.sys` reader (issue 18): metadata through the contract, PE facts and signature.
            ("inspect-sys", vec![os("inspect"), os("--format"), os("json"), input.as_os_str()]),
        ],
    };
    if seed.kind == Kind::Object && case.is_multiple_of(8) {
        runs.push((
            "compile",
            vec![os("compile"), input.as_os_str(), os("--emit"), os("obj"), os("-o"), object_file.as_os_str()],
        ));
    }
    let mut outcomes = Vec::new();
    for (name, argv) in &runs {
        let (outcome, stderr) = run_capped(binary, argv, args)?;
        outcomes.push((*name, outcome, stderr));
    }
    let mut failures = Vec::new();
    let mut tally = tally.lock().expect("tally lock");
    tally.cases += 1;
    for &(name, outcome, _) in &outcomes {
        tally.runs += 1;
        let code = match outcome {
            Outcome::Exit(code) => code,
            Outcome::Signal(signal) => {
                tally.signals += 1;
                failures.push(format!("{name}: killed by signal {signal}"));
                -signal
            }
            Outcome::Timeout => {
                tally.timeouts += 1;
                failures.push(format!("{name}: timed out after {} ms", args.timeout_ms));
                -1000
            }
        };
        *tally.exits.entry((name.to_string(), code)).or_default() += 1;
        if code == 101 {
            tally.panics += 1;
            failures.push(format!("{name}: panicked (exit 101)"));
        } else if code >= 0 && !(0..=2).contains(&code) {
            failures.push(format!("{name}: exit {code}, not one of 0/1/2"));
        }
    }
    let run_of = |wanted: &str| outcomes.iter().find(|(n, _, _)| *n == wanted);
    let code_of = |wanted: &str| run_of(wanted).map(|(_, o, _)| *o);
    if let (Some(Outcome::Exit(verify)), Some(Outcome::Exit(build))) = (code_of("verify"), code_of("build")) {
        // Same verdict: accepted objects build, rejected ones do not, unusable ones are unusable to both. One
        // exception (issue 13): a program refused at load time (e.g. a call to an undefined symbol) fails `verify`
        // but `build` writes the other programs and names the one it left out.
        let partial_build =
            verify == 1 && build == 0 && run_of("build").is_some_and(|(_, _, stderr)| left_out_a_program(stderr));
        if verify != build && verify != 101 && build != 101 && !partial_build {
            tally.disagreements += 1;
            failures.push(format!("verify exited {verify} but build exited {build}"));
        }
    }
    if !failures.is_empty() {
        let line = format!("case {case} ({}): {}", seed.name, failures.join("; "));
        tally.failures.push(line.clone());
        drop(tally);
        let dir = repo_root().join("target/mutate-failures");
        std::fs::create_dir_all(&dir)?;
        let ext = if seed.kind == Kind::Object { "o" } else { "sys" };
        std::fs::write(dir.join(format!("case-{case}.{ext}")), bytes)?;
        eprintln!("FAIL {line}");
    }
    Ok(failures)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let root = repo_root();
    let binary = bpf2sys_binary(&root)?;
    let mut seeds = seeds(&root)?;
    if args.drivers_only {
        seeds.retain(|s| s.kind == Kind::Driver);
    }
    let objects = seeds.iter().filter(|s| s.kind == Kind::Object).count();
    println!(
        "mutate: {} objects and {} drivers, seed {:#x}, {} case(s), {} job(s), limits {} ms / {} MiB per run",
        objects,
        seeds.len() - objects,
        args.seed,
        args.case.map_or(args.cases, |_| 1),
        args.jobs,
        args.timeout_ms,
        args.memory_mib
    );
    let (first, count) = match args.case {
        Some(case) => (case, 1),
        None => (0, args.cases),
    };
    let next = AtomicU64::new(first);
    let end = first + count;
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..args.jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let scratch = tempfile::tempdir()?;
                    loop {
                        let case = next.fetch_add(1, Ordering::Relaxed);
                        if case >= end {
                            return Ok(());
                        }
                        let mut rng = Rng(args.seed ^ case.wrapping_mul(0xd1b5_4a32_d192_ed03));
                        let seed = &seeds[rng.below(seeds.len())];
                        let bytes = mutate(&seed.bytes, &mut rng);
                        run_case(&binary, scratch.path(), seed, case, &bytes, &args, &tally)?;
                        if case > first && (case - first).is_multiple_of(5000) {
                            println!("mutate: {} cases, {:.0} s", case - first, started.elapsed().as_secs_f64());
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker thread")?;
        }
        Ok(())
    })?;
    let tally = tally.into_inner().expect("tally lock");
    println!(
        "mutate: {} cases, {} subcommand runs in {:.1} s",
        tally.cases,
        tally.runs,
        started.elapsed().as_secs_f64()
    );
    for ((name, code), n) in &tally.exits {
        println!("  {name:<17} exit {code:>4}: {n}");
    }
    println!(
        "  panics {}, signals {}, timeouts {}, verify/build disagreements {}",
        tally.panics, tally.signals, tally.timeouts, tally.disagreements
    );
    if tally.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} failing case(s); inputs saved in target/mutate-failures/", tally.failures.len());
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64) -> Args {
        Args { cases: 1, seed: 0, jobs: 1, timeout_ms, memory_mib: 2048, case: None, drivers_only: false }
    }

    fn sh(script: &str, timeout_ms: u64) -> (Outcome, String) {
        let argv = [std::ffi::OsStr::new("-c"), std::ffi::OsStr::new(script)];
        run_capped(Path::new("/bin/sh"), &argv, &limits(timeout_ms)).unwrap()
    }

    #[test]
    fn a_capped_run_returns_the_exit_code_and_the_stderr_of_the_one_run() {
        let (outcome, stderr) = sh("echo 'warning: p left out of the driver' >&2; echo out; exit 0", 10_000);
        assert_eq!(outcome, Outcome::Exit(0));
        assert_eq!(stderr, "warning: p left out of the driver\n");
        assert!(left_out_a_program(&stderr));
        let (outcome, stderr) = sh("echo 'error: rejected' >&2; exit 1", 10_000);
        assert_eq!(outcome, Outcome::Exit(1));
        assert!(!left_out_a_program(&stderr));
    }

    #[test]
    fn a_run_writing_more_stderr_than_a_pipe_holds_finishes_and_keeps_the_first_bytes() {
        // 1 MiB of stderr: the child would block on a full pipe if nobody read it.
        let (outcome, stderr) = sh("head -c 1048576 /dev/zero | tr '\\0' x >&2; exit 2", 10_000);
        assert_eq!(outcome, Outcome::Exit(2));
        assert_eq!(stderr.len() as u64, STDERR_CAP);
        assert!(stderr.bytes().all(|b| b == b'x'));
    }

    #[test]
    fn a_run_past_its_deadline_is_killed_and_reported_as_a_timeout() {
        let (outcome, _) = sh("exec sleep 30", 300);
        assert_eq!(outcome, Outcome::Timeout);
    }
}
