//! `cargo xtask bench [--quick]`: the benchmark tables of BENCHMARKS.md (method: ../shared/docs/benchmarks.md).
//!
//! Every (engine, program) cell runs in a child process of this binary (`--cell ENGINE PROGRAM`), pinned to the
//! same single core as the parent: a peer that traps or panics (rbpf's Cranelift backend on host pointers, its
//! JIT on large programs) is recorded as a failure instead of ending the run, and peak memory is per cell. The
//! native C baselines are their own programs (`tests/src/bench/native.c`). Full runs use a release build of this
//! binary (it rebuilds and re-executes itself); `--quick` runs few iterations in whatever build it is, checks every
//! result and prints the tables without rewriting BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bpf2sys_files::write_atomically;
use bpf2sys_tests::bench::native_c::{self, CCompiler};
use bpf2sys_tests::bench::programs::{self, BenchProgram, PROGRAMS};
use bpf2sys_tests::bench::report::{self, Cell, SpeedRow};
use bpf2sys_tests::bench::timing::{self, Measurement, Mode};
use bpf2sys_tests::bench::{engines, input, runtime_programs};

mod batch;
mod goals;
mod latency;
mod rbpf_peer;
use rbpf_peer::RbpfEngine;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Few iterations (CI): every result is still checked; BENCHMARKS.md is only written with --output.
    #[arg(long)]
    quick: bool,
    /// Where to write the report (default for full runs: BENCHMARKS.md in the repository root).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Measure only these engines besides the native baselines (bpf2sys-native, bpf2sys-interp, rbpf-jit,
    /// rbpf-cranelift, rbpf-interp); default all. The report is then not written unless --output is given.
    #[arg(long = "engine", value_name = "ENGINE")]
    engines: Vec<String>,
    /// Skip the compile-latency table.
    #[arg(long)]
    no_compile: bool,
    /// Skip the batch-build table.
    #[arg(long)]
    no_batch: bool,
    /// Internal: run one cell in this process and print its outcome as one JSON line.
    #[arg(long, hide = true, num_args = 2, value_names = ["ENGINE", "PROGRAM"])]
    cell: Option<Vec<String>>,
    /// Internal: measure the compile latency of one program in this process and print it as one JSON line.
    #[arg(long, hide = true, value_name = "OBJECT")]
    compile_cell: Option<PathBuf>,
    /// Internal: build and sign one object once in this process, as `bpf2sys build` does, and print its peak RSS
    /// as one JSON line.
    #[arg(long, hide = true, value_name = "OBJECT")]
    build_cell: Option<PathBuf>,
    /// Internal: build the batch on this many CPUs in this process and print the throughput as one JSON line.
    #[arg(long, hide = true, value_name = "CPUS")]
    batch_cell: Option<usize>,
}

/// The engines of the speed table, besides the native C baselines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Bpf2sysNative,
    Bpf2sysInterpreter,
    RbpfJit,
    RbpfCranelift,
    RbpfInterpreter,
}

impl Engine {
    const ALL: [Engine; 5] = [
        Engine::Bpf2sysNative,
        Engine::RbpfJit,
        Engine::RbpfCranelift,
        Engine::Bpf2sysInterpreter,
        Engine::RbpfInterpreter,
    ];

    fn id(self) -> &'static str {
        match self {
            Engine::Bpf2sysNative => "bpf2sys-native",
            Engine::Bpf2sysInterpreter => "bpf2sys-interp",
            Engine::RbpfJit => "rbpf-jit",
            Engine::RbpfCranelift => "rbpf-cranelift",
            Engine::RbpfInterpreter => "rbpf-interp",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Engine::Bpf2sysNative => "**bpf2sys native code** (x64, lower+codegen)",
            Engine::Bpf2sysInterpreter => "bpf2sys reference interpreter",
            Engine::RbpfJit => "rbpf 0.4.1 JIT",
            Engine::RbpfCranelift => "rbpf 0.4.1 Cranelift (cranelift 0.127)",
            Engine::RbpfInterpreter => "rbpf 0.4.1 interpreter",
        }
    }

    fn from_id(id: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.id() == id)
    }

    /// Why the engine cannot run in this build, if it cannot.
    fn unavailable(self) -> Option<&'static str> {
        match self {
            Engine::Bpf2sysNative
            | Engine::Bpf2sysInterpreter
            | Engine::RbpfJit
            | Engine::RbpfCranelift
            | Engine::RbpfInterpreter => None,
        }
    }

    /// Whether the engine has a separate compile step whose latency the peer table reports.
    fn compiles(self) -> bool {
        matches!(self, Engine::Bpf2sysNative | Engine::RbpfJit | Engine::RbpfCranelift)
    }
}

/// What a cell reports back to the parent.
#[derive(Clone, Debug, Default, PartialEq)]
struct CellOutcome {
    error: Option<String>,
    measurement: Option<Measurement>,
    compile_cold_us: Option<f64>,
    compile_median_us: Option<f64>,
}

impl CellOutcome {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.error,
            "ns_per_run": self.measurement.map(|m| m.ns_per_run),
            "calls_per_batch": self.measurement.map(|m| m.calls_per_batch),
            "r0": self.measurement.map(|m| format!("{:#018x}", m.r0)),
            "compile_cold_us": self.compile_cold_us,
            "compile_median_us": self.compile_median_us,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<CellOutcome> {
        let measurement = match (v["ns_per_run"].as_f64(), v["calls_per_batch"].as_u64(), v["r0"].as_str()) {
            (Some(ns_per_run), Some(calls_per_batch), Some(r0)) => Some(Measurement {
                ns_per_run,
                calls_per_batch,
                r0: u64::from_str_radix(r0.trim_start_matches("0x"), 16).ok()?,
            }),
            _ => None,
        };
        Some(CellOutcome {
            error: v["error"].as_str().map(str::to_string),
            measurement,
            compile_cold_us: v["compile_cold_us"].as_f64(),
            compile_median_us: v["compile_median_us"].as_f64(),
        })
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repository root").to_path_buf()
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mode = if args.quick { Mode::Quick } else { Mode::Full };
    if let Some(cell) = &args.cell {
        return run_cell(&cell[0], &cell[1], mode);
    }
    if let Some(object) = &args.compile_cell {
        return latency::run_compile_cell(object, mode);
    }
    if let Some(object) = &args.build_cell {
        return latency::run_build_cell(object);
    }
    if let Some(cpus) = args.batch_cell {
        return batch::run_batch_cell(cpus, mode);
    }
    if mode == Mode::Full && cfg!(debug_assertions) && std::env::var_os("BPF2SYS_BENCH_IN_DEBUG").is_none() {
        return reexec_release(&args);
    }
    let root = repo_root();
    let cpu = timing::pin_to_one_core().context("pinning the benchmark to one core")?;
    let programs = programs::load_all(&root)?;
    let started = Instant::now();
    eprintln!("bench: pinned to CPU {cpu}; {} mode", if args.quick { "quick" } else { "full" });

    let mut rows = Vec::new();
    let mut failures = 0usize;

    // Native C baselines: clang -O2 is the limit (the eBPF comes from the same LLVM), gcc -O2 the second
    // reference. Without clang there is no limit, and gcc in its place would move every ratio: fail instead.
    let clang = native_c::find_compiler("clang").context(
        "clang is not installed: the bench's limit is native clang -O2 and no other compiler stands in for it \
         (install it: apt-get install clang)",
    )?;
    let compilers: Vec<CCompiler> = std::iter::once(clang).chain(native_c::find_compiler("gcc")).collect();
    let native_dir = root.join("target/bench/native");
    let mut native_exes: Vec<Vec<Result<PathBuf, String>>> = Vec::new();
    for cc in &compilers {
        native_exes.push(
            programs
                .iter()
                .map(|p| native_c::build(&root, cc, &p.name, &native_dir).map_err(|e| e.to_string()))
                .collect(),
        );
    }
    if let Some((p, Err(e))) = programs.iter().zip(&native_exes[0]).find(|(_, exe)| exe.is_err()) {
        bail!("cannot build the clang -O2 baseline (the limit) of `{}`: {e}", p.name);
    }
    let engines: Vec<Engine> = Engine::ALL
        .into_iter()
        .filter(|e| args.engines.is_empty() || args.engines.iter().any(|id| id == e.id()))
        .collect();
    // Rows: the native baselines, then the engines. The machine is shared, so its load drifts: every round measures
    // each program on every implementation back to back, and each cell keeps its best round.
    let mut cells: Vec<Vec<Option<Cell>>> = vec![vec![None; programs.len()]; compilers.len() + engines.len()];
    let mut outcomes: Vec<Vec<CellOutcome>> = vec![vec![CellOutcome::default(); programs.len()]; engines.len()];
    let rounds = if mode == Mode::Quick { 1 } else { ROUNDS };
    for round in 0..rounds {
        for (j, p) in programs.iter().enumerate() {
            for (i, cc) in compilers.iter().enumerate() {
                let cell = match native_exes[i][j]
                    .as_ref()
                    .map_err(String::clone)
                    .and_then(|exe| native_c::measure(exe, mode).map_err(|e| e.to_string()))
                {
                    Ok(m) if m.r0 == p.expected_r0 => Cell::Time(m.ns_per_run),
                    Ok(m) => {
                        Cell::Failed(format!("wrong result: r0 = {:#018x}, expected {:#018x}", m.r0, p.expected_r0))
                    }
                    Err(e) => Cell::Failed(e),
                };
                eprintln!("bench: round {round}: native {} {}: {}", cc.command, p.name, describe(&cell));
                merge_cell(&mut cells[i][j], cell);
            }
            for (k, engine) in engines.iter().enumerate() {
                let row = compilers.len() + k;
                if let Some(reason) = engine.unavailable() {
                    cells[row][j] = Some(Cell::NotAvailable(reason.to_string()));
                    continue;
                }
                let outcome = spawn_cell(*engine, p, mode);
                let cell = match (&outcome.error, &outcome.measurement) {
                    (Some(e), _) => Cell::Failed(e.clone()),
                    (None, Some(m)) => Cell::Time(m.ns_per_run),
                    (None, None) => Cell::Failed("the cell reported neither a time nor an error".into()),
                };
                eprintln!("bench: round {round}: {} {}: {}", engine.id(), p.name, describe(&cell));
                merge_cell(&mut cells[row][j], cell);
                if round == 0 {
                    outcomes[k][j] = outcome;
                }
            }
        }
    }
    for (i, cc) in compilers.iter().enumerate() {
        rows.push(SpeedRow {
            engine: format!("native {} -O2", cc.command),
            cells: cells[i].iter().map(|c| c.clone().expect("measured")).collect(),
        });
    }
    // Row 0 is the limit: clang -O2.
    let limit = 0;
    let mut peer_compile: Vec<(Engine, Vec<CellOutcome>)> = Vec::new();
    for (k, engine) in engines.iter().enumerate() {
        rows.push(SpeedRow {
            engine: engine.label().to_string(),
            cells: cells[compilers.len() + k].iter().map(|c| c.clone().expect("measured")).collect(),
        });
        if engine.compiles() {
            peer_compile.push((*engine, outcomes[k].clone()));
        }
    }
    for row in &rows {
        failures += row.cells.iter().filter(|c| matches!(c, Cell::Failed(_))).count();
    }

    let machine = machine_description(&compilers);
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Generated by `cargo xtask bench` (method: `../shared/docs/benchmarks.md`); do not edit by hand. \
         Programs and expected results: `samples/bench/`.\n\n",
    );
    md.push_str(&machine);
    md.push_str("\n## Steady-state speed\n\n");
    md.push_str(&format!(
        "ns per run (ratio to the limit, native clang -O2 of the same C source). One core \
         (`sched_setaffinity`), one warm-up call, {}, minimum batch ÷ N. Every call's r0 is checked against the \
         first call's and the first against the expected value; a wrong result is a failure, never a time. \
         Objects: clang -O2, default CPU (v1).\n\n",
        match mode {
            Mode::Full => {
                "5 batches of N calls with N sized so a batch takes ≥ 30 ms; the machine is shared, so the table \
                 is measured in 3 rounds (each round runs every implementation on a program back to back) and \
                 each cell keeps its best round"
            }
            Mode::Quick => "**quick mode**: 2 short batches (figures are indicative only)",
        }
    ));
    md.push_str(&report::speed_table(&PROGRAMS, &rows, limit));
    md.push_str("\n## Peer compile time\n\n");
    md.push_str(&peer_compile_table(&peer_compile, mode));
    let mut latency_figures = None;
    if !args.no_compile {
        md.push_str("\n## Compile latency\n\n");
        let (section, figures) = latency::compile_latency_section(&root, mode)?;
        md.push_str(&section);
        latency_figures = Some(figures);
    }
    let mut batch_figures = None;
    if !args.no_batch {
        md.push_str("\n## Batch builds\n\n");
        let (section, figures) = batch::batch_section(mode)?;
        md.push_str(&section);
        batch_figures = Some(figures);
    }
    md.push_str("\n## Goals (issue 16)\n\n");
    md.push_str(&goals::goals_section(&rows, limit, latency_figures.as_ref(), batch_figures.as_ref()));
    md.push_str(&format!(
        "\nTotal bench time: {:.1} s ({} mode).\n",
        started.elapsed().as_secs_f64(),
        if args.quick { "quick" } else { "full" }
    ));

    println!("{md}");
    let partial = !args.engines.is_empty() || args.no_compile || args.no_batch;
    let output = args.output.clone().or_else(|| (!args.quick && !partial).then(|| root.join("BENCHMARKS.md")));
    if let Some(path) = output {
        // The verifier section comes from `cargo bench -p bpf2sys --bench verify` (docs/verifier.md §7), not from
        // this run: keep it.
        let kept = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.find("\n## Verifier speed").map(|i| old[i..].to_string()))
            .unwrap_or_default();
        let md = format!("{md}{kept}");
        write_atomically(&path, md.as_bytes())?;
        eprintln!("bench: wrote {}", path.display());
    }
    // Peers failing is data; bpf2sys failing, or a baseline failing, is an error.
    let own_failures = rows
        .iter()
        .filter(|r| r.engine.starts_with("native") || r.engine.starts_with("bpf2sys"))
        .flat_map(|r| r.cells.iter())
        .filter(|c| matches!(c, Cell::Failed(_)))
        .count();
    if own_failures > 0 {
        bail!("{own_failures} bpf2sys or native-baseline cells failed ({failures} failures in all)");
    }
    if batch_figures.as_ref().is_some_and(|b| !b.identical()) {
        bail!("the batch build on every core wrote different bytes from the one-thread build");
    }
    Ok(())
}

/// Rounds of the speed table in a full run (each cell keeps its best round).
const ROUNDS: usize = 3;

/// Combines a cell's rounds: a failure in any round is the result; otherwise the fastest time.
fn merge_cell(slot: &mut Option<Cell>, new: Cell) {
    *slot = Some(match (slot.take(), new) {
        (None, new) => new,
        (Some(Cell::Failed(e)), _) | (_, Cell::Failed(e)) => Cell::Failed(e),
        (Some(Cell::Time(a)), Cell::Time(b)) => Cell::Time(a.min(b)),
        (Some(other), _) => other,
    });
}

fn describe(cell: &Cell) -> String {
    match cell {
        Cell::Time(ns) => format!("{} ns/run", report::format_ns(*ns)),
        Cell::Failed(e) => format!("FAILED: {e}"),
        Cell::NotAvailable(e) => format!("not available: {e}"),
    }
}

/// Rebuilds this binary in release mode and runs the same command with it: timings of an unoptimised build of
/// our own crates would say nothing.
fn reexec_release(args: &BenchArgs) -> anyhow::Result<()> {
    let root = repo_root();
    eprintln!("bench: building the release xtask for a full run (set BPF2SYS_BENCH_IN_DEBUG=1 to skip)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "xtask"])
        .status()
        .context("running cargo build --release -p xtask")?;
    if !status.success() {
        bail!("cargo build --release -p xtask failed ({status})");
    }
    let mut cmd = Command::new(root.join("target/release/xtask"));
    cmd.arg("bench");
    if args.quick {
        cmd.arg("--quick");
    }
    for e in &args.engines {
        cmd.arg("--engine").arg(e);
    }
    if args.no_compile {
        cmd.arg("--no-compile");
    }
    if args.no_batch {
        cmd.arg("--no-batch");
    }
    if let Some(o) = &args.output {
        cmd.arg("--output").arg(o);
    }
    let status = cmd.status().context("running the release xtask")?;
    if !status.success() {
        bail!("the release bench failed ({status})");
    }
    Ok(())
}

/// Runs `--cell ENGINE PROGRAM` in a child process and reads its JSON line; a crash, a timeout or garbage is a
/// failure of that cell.
fn spawn_cell(engine: Engine, program: &BenchProgram, mode: Mode) -> CellOutcome {
    let failed = |e: String| CellOutcome { error: Some(e), ..CellOutcome::default() };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed(format!("cannot find the xtask binary: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--cell", engine.id(), &program.name]);
    if mode == Mode::Quick {
        cmd.arg("--quick");
    }
    let output = match run_with_timeout(cmd, Duration::from_secs(300)) {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return failed(format!(
            "crashed: {}{}",
            exit_description(&output.status),
            if last.is_empty() { String::new() } else { format!(" ({last})") }
        ));
    }
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        return failed(format!("no result line in the cell's output: {stdout:?}"));
    };
    match serde_json::from_str::<serde_json::Value>(line).ok().as_ref().and_then(CellOutcome::from_json) {
        Some(outcome) => outcome,
        None => failed(format!("unreadable result line {line:?}")),
    }
}

fn run_with_timeout(mut cmd: Command, limit: Duration) -> Result<std::process::Output, String> {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the cell process: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for the cell process: {e}")),
        }
    }
    child.wait_with_output().map_err(|e| format!("reading the cell's output: {e}"))
}

fn exit_description(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGILL => "SIGILL, an illegal-instruction trap",
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGBUS => "SIGBUS",
                libc::SIGFPE => "SIGFPE",
                libc::SIGABRT => "SIGABRT",
                libc::SIGKILL => "SIGKILL",
                libc::SIGTRAP => "SIGTRAP",
                _ => "signal",
            };
            format!("signal {sig} ({name})")
        }
        None => status.to_string(),
    }
}

/// The child side: measure one cell and print one JSON line. Panics are caught and reported; traps end the
/// process, which the parent reports.
fn run_cell(engine_id: &str, program_name: &str, mode: Mode) -> anyhow::Result<()> {
    let engine = Engine::from_id(engine_id).with_context(|| format!("unknown engine `{engine_id}`"))?;
    let root = repo_root();
    let program = programs::load_all(&root)?
        .into_iter()
        .find(|p| p.name == program_name)
        .with_context(|| format!("unknown program `{program_name}`"))?;
    // Keep panic messages out of stderr noise: they are reported in the result line.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = match std::panic::catch_unwind(|| measure_cell(engine, &program, mode)) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => CellOutcome { error: Some(format!("{e:#}")), ..CellOutcome::default() },
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic payload".into());
            CellOutcome { error: Some(format!("panic: {msg}")), ..CellOutcome::default() }
        }
    };
    println!("{}", outcome.to_json());
    Ok(())
}

fn measure_cell(engine: Engine, program: &BenchProgram, mode: Mode) -> anyhow::Result<CellOutcome> {
    let mut input = input::make_input(&program.name)?;
    if let Some(spec) = runtime_programs::runtime_program(&program.name) {
        return measure_runtime_cell(engine, spec, program, &mut input, mode);
    }
    match engine {
        Engine::Bpf2sysNative => {
            let code = programs::function_bytecode(&program.object_path, "entry")?;
            let runs = if mode == Mode::Quick { 3 } else { 11 };
            let (cold, median) = compile_times(runs, || Ok(engines::lower_bytecode(&program.name, &code).map(drop)?))?;
            let compiled = engines::lower_bytecode(&program.name, &code)?;
            let native = engines::NativeBench::load(&compiled)?;
            let buffer = input.as_mut_ptr();
            // SAFETY: the benchmark programs only access their own input, stack and the helper's values.
            let result = timing::measure(mode, program.expected_r0, || Ok(unsafe { native.run(buffer) }));
            Ok(CellOutcome {
                error: result.as_ref().err().map(|e| e.to_string()),
                measurement: result.ok(),
                compile_cold_us: Some(cold),
                compile_median_us: Some(median),
            })
        }
        Engine::Bpf2sysInterpreter => {
            let code = programs::function_bytecode(&program.object_path, "entry")?;
            let mut interp = engines::InterpBench::new(&code, input)?;
            let result = timing::measure(mode, program.expected_r0, || interp.run());
            Ok(CellOutcome {
                error: result.as_ref().err().map(|e| e.to_string()),
                measurement: result.ok(),
                ..CellOutcome::default()
            })
        }
        Engine::RbpfJit | Engine::RbpfCranelift | Engine::RbpfInterpreter => {
            let peer = match engine {
                Engine::RbpfJit => RbpfEngine::Jit,
                Engine::RbpfCranelift => RbpfEngine::Cranelift,
                _ => RbpfEngine::Interpreter,
            };
            let code = programs::function_bytecode(&program.object_path, "entry")?;
            rbpf_peer::measure(peer, &code, &mut input, program.expected_r0, mode)
        }
    }
}

/// A cell of a program that is a real eBPF for Windows program (`runtime_programs`): built as a user's build does
/// (verify, then lower: the compile time includes the verifier), run with the bench host's maps and tail calls.
fn measure_runtime_cell(
    engine: Engine,
    spec: &runtime_programs::RuntimeProgram,
    program: &BenchProgram,
    input: &mut [u8],
    mode: Mode,
) -> anyhow::Result<CellOutcome> {
    let outcome = |result: Result<timing::Measurement, timing::MeasureError>| CellOutcome {
        error: result.as_ref().err().map(|e| e.to_string()),
        measurement: result.ok(),
        ..CellOutcome::default()
    };
    match engine {
        Engine::Bpf2sysNative => {
            let (session, module) = runtime_programs::load_verified(&program.object_path)?;
            let runs = if mode == Mode::Quick { 3 } else { 11 };
            let (cold, median) = compile_times(runs, || Ok(runtime_programs::compile(&session, &module).map(drop)?))?;
            let compiled = runtime_programs::compile(&session, &module)?;
            let layout = session.lower_options().map_data;
            let mut native =
                runtime_programs::NativeRuntimeBench::from_compiled(spec, &module, &compiled, layout, input)?;
            // SAFETY: `input` outlives every run; the programs were verified for their contexts.
            let result = timing::measure(mode, program.expected_r0, || Ok(unsafe { native.run() }));
            Ok(CellOutcome { compile_cold_us: Some(cold), compile_median_us: Some(median), ..outcome(result) })
        }
        Engine::Bpf2sysInterpreter => {
            let mut interp = runtime_programs::InterpRuntimeBench::load(spec, &program.object_path, input)?;
            Ok(outcome(timing::measure(mode, program.expected_r0, || interp.run())))
        }
        Engine::RbpfJit | Engine::RbpfCranelift | Engine::RbpfInterpreter => {
            let peer = match engine {
                Engine::RbpfJit => RbpfEngine::Jit,
                Engine::RbpfCranelift => RbpfEngine::Cranelift,
                _ => RbpfEngine::Interpreter,
            };
            rbpf_peer::measure_runtime(peer, spec, &program.object_path, input, program.expected_r0, mode)
        }
    }
}

/// Median and first (cold) of `runs` timings of `compile`, in µs.
fn compile_times(runs: usize, mut compile: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        compile()?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let cold = times[0];
    times.sort_by(f64::total_cmp);
    Ok((cold, times[times.len() / 2]))
}

fn peer_compile_table(peers: &[(Engine, Vec<CellOutcome>)], mode: Mode) -> String {
    let mut out = format!(
        "µs per compile of the bytecode to machine code (bpf2sys: decode + `lower::lower_unverified_for_testing`, i.e. Cranelift IR \
         translation and x64 codegen with unwind data — for the real programs flowtrack, tailchain and bindpolicy \
         `Session::verify` + `Session::lower` of every program of the object; rbpf: `jit_compile` / `cranelift_compile`): median \
         of {} compiles in one process, cold first compile in parentheses.\n\n| implementation |",
        if mode == Mode::Quick { 3 } else { 11 }
    );
    for p in PROGRAMS {
        out.push_str(&format!(" {p} |"));
    }
    out.push_str("\n|---|");
    for _ in PROGRAMS {
        out.push_str("---:|");
    }
    out.push('\n');
    for (engine, outcomes) in peers {
        out.push_str(&format!("| {} |", engine.label()));
        for o in outcomes {
            match (o.compile_median_us, o.compile_cold_us) {
                (Some(m), Some(c)) => out.push_str(&format!(" {} ({}) |", report::format_us(m), report::format_us(c))),
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine_description(compilers: &[CCompiler]) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    // The parent is pinned to one core; report the machine's count, not the affinity mask's.
    let online = cpuinfo.lines().filter(|l| l.starts_with("processor")).count().max(cores);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string())))
        .unwrap_or_default();
    let root = repo_root();
    let commit = command_line("git", &["-C", &root.display().to_string(), "rev-parse", "--short=12", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let dirty =
        command_line("git", &["-C", &root.display().to_string(), "status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty());
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into());
    let kernel = command_line("uname", &["-sr"]).unwrap_or_default();
    let rustc = command_line("rustc", &["--version"]).unwrap_or_default();
    let mut s = String::new();
    s.push_str(&format!("- Date: {date}\n"));
    s.push_str(&format!("- Commit: `{commit}`{}\n", if dirty { " (with uncommitted changes)" } else { "" }));
    s.push_str(&format!("- Machine: {cpu}, {online} CPUs, {mem_kib} RAM, {kernel}\n"));
    s.push_str(&format!(
        "- Toolchain: {rustc}; build profile: {}\n",
        if cfg!(debug_assertions) { "debug (times not representative)" } else { "release" }
    ));
    for cc in compilers {
        s.push_str(&format!("- Native baseline `{}`: {}\n", cc.command, cc.version));
    }
    s
}
