//! The bpf_conformance harness: reads `.data` test files, runs them on an [`Engine`], and compares r0.
//!
//! In: `.data` files in the format of ../shared/docs/test-corpora.md §1.2 (sections `-- asm`, `-- raw` in both
//! its word and byte forms, `-- mem`, `-- result`, `-- error`, and the ignored `-- c` / `-- no register offset`).
//! Out: one [`Outcome`] per file and a [`Summary`].
//!
//! A test runs with the convention of §1.4: r1 points to a writable copy of `mem` (0 when there is none),
//! r2 = `len(mem)`, r10 is the top of a 512-byte stack, and the result is the 64-bit r0 at the outermost exit.
//! Helpers are the uBPF plugin's table ([`helper_ids`]); helper 5 is the "unwind" helper: it returns its r1,
//! and if that is 0 the program ends at once with r0 = 0. A feature the engine lacks (the interpreter: kfunc
//! calls, legacy packet loads) makes the test a skip that names it; a file that cannot be parsed, assembled or
//! decoded is a failure that says why.
//!
//! Engines are pluggable ([`Engine`]): the reference interpreter is [`InterpreterEngine`]; the native engine
//! (compiled x64 code) implements the same trait, so the runner does not change when engines are added.

use std::fmt;
use std::path::{Path, PathBuf};

use bpf2sys::interp::{Access, HelperArgs, HelperOutcome, Host, HostError, InterpErrorKind, Interpreter, Memory};
use bpf2sys::isa::asm::{assemble_lines, AsmError};
use bpf2sys::isa::{decode, DecodeError, Instruction};

/// The conformance suite's "unwind" helper (uBPF plugin helper table, test-corpora.md §1.4).
pub const UNWIND_HELPER: i32 = 5;

/// What a test expects; at least one of the two is set.
///
/// As upstream's runner: a run that ends must give `value`; a run that fails passes if an `error` is expected.
/// The error text is the suite's message for its reference runtimes; messages are engine-specific, so it is
/// reported but not compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The full 64-bit r0 (`-- result`).
    pub value: Option<u64>,
    /// The expected failure (`-- error`, when not empty).
    pub error: Option<String>,
}

/// A loaded test.
#[derive(Clone, Debug, PartialEq)]
pub struct ConformanceTest {
    pub program: Vec<Instruction>,
    pub memory: Vec<u8>,
    pub expected: Expected,
}

/// The sections of a `.data` file, before assembly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestFile {
    /// Assembly lines with their 1-based line numbers in the file.
    pub asm: Vec<(usize, String)>,
    /// Pre-encoded program bytes from `-- raw`, if present.
    pub raw: Option<Vec<u8>>,
    pub memory: Vec<u8>,
    /// The last line of `-- result`.
    pub result: Option<u64>,
    /// The last line of `-- error`; `None` for an empty section (which upstream ignores too).
    pub error: Option<String>,
}

/// Why a file could not be turned into a runnable test. Each variant is a distinct kind of rejection.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    /// A section this format does not define (upstream skips such files; so does [`run_file`]).
    #[error("line {line}: unknown directive `{directive}`")]
    UnknownDirective { line: usize, directive: String },
    #[error("no instructions (neither `-- asm` nor `-- raw` has any)")]
    NoInstructions,
    #[error("no expectation (neither `-- result` nor `-- error`)")]
    NoExpectation,
    #[error("assembler: {0}")]
    Assemble(#[from] AsmError),
    #[error("raw program does not decode: {0}")]
    Decode(#[from] DecodeError),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Asm,
    Result,
    Mem,
    Raw,
    Ignored,
    Error,
}

/// Parses the text of a `.data` file (test-corpora.md §1.2).
pub fn parse(text: &str) -> Result<TestFile, LoadError> {
    let mut file = TestFile::default();
    let mut section = Section::None;
    let mut raw_tokens: Vec<(usize, String)> = Vec::new();
    let mut saw_raw = false;
    let mut result_line: Option<(usize, String)> = None;
    for (index, full) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = full.strip_suffix('\r').unwrap_or(full);
        let line = line.split('#').next().unwrap_or("");
        if line.contains("--") {
            // Substring tests in upstream's order.
            section = if line.contains("asm") {
                Section::Asm
            } else if line.contains("result") {
                Section::Result
            } else if line.contains("mem") {
                Section::Mem
            } else if line.contains("raw") {
                saw_raw = true;
                Section::Raw
            } else if line.contains("no register offset") || line.contains(" c") {
                Section::Ignored
            } else if line.contains("error") {
                Section::Error
            } else {
                return Err(LoadError::UnknownDirective { line: line_no, directive: line.trim().to_string() });
            };
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match section {
            // Text before the first directive belongs to no section; upstream ignores it too.
            Section::None => {}
            Section::Asm => file.asm.push((line_no, trimmed.to_string())),
            Section::Result => result_line = Some((line_no, trimmed.to_string())),
            Section::Mem => {
                for token in trimmed.split_whitespace() {
                    file.memory.push(mem_byte(token).ok_or_else(|| LoadError::Parse {
                        line: line_no,
                        message: format!("`{token}` in `-- mem` is not a hex byte"),
                    })?);
                }
            }
            Section::Raw => raw_tokens.extend(trimmed.split_whitespace().map(|t| (line_no, t.to_string()))),
            Section::Error => file.error = Some(trimmed.to_string()),
            Section::Ignored => {}
        }
    }
    if let Some((line, text)) = result_line {
        file.result = Some(parse_result(&text).ok_or_else(|| LoadError::Parse {
            line,
            message: format!("`{text}` in `-- result` is not a 64-bit number"),
        })?);
    }
    if saw_raw {
        file.raw = Some(parse_raw(&raw_tokens)?);
    }
    Ok(file)
}

/// A `-- mem` byte: one or two hex digits, optionally with `0x` (upstream reads them with `std::hex`).
fn mem_byte(token: &str) -> Option<u8> {
    let digits = token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")).unwrap_or(token);
    (1..=2).contains(&digits.len()).then(|| u8::from_str_radix(digits, 16).ok()).flatten()
}

/// A byte of the byte form of `-- raw`: exactly two hex digits.
fn hex_byte(token: &str) -> Option<u8> {
    (token.len() == 2).then(|| u8::from_str_radix(token, 16).ok()).flatten()
}

fn parse_result(text: &str) -> Option<u64> {
    if let Some(at) = text.find("0x") {
        return u64::from_str_radix(&text[at + 2..], 16).ok();
    }
    if let Some(negative) = text.strip_prefix('-') {
        return negative.parse::<u64>().ok().map(|v| v.wrapping_neg());
    }
    text.parse::<u64>().ok()
}

/// `-- raw` comes in two forms: 8 hex bytes per instruction (`07 00 01 00 01 00 00 00`, the negative tests), or
/// one little-endian 64-bit word per instruction (`0x5566778800000018`, upstream's own reading).
fn parse_raw(tokens: &[(usize, String)]) -> Result<Vec<u8>, LoadError> {
    if !tokens.is_empty() && tokens.iter().all(|(_, t)| hex_byte(t).is_some()) {
        if !tokens.len().is_multiple_of(8) {
            return Err(LoadError::Parse {
                line: tokens[tokens.len() - 1].0,
                message: format!("`-- raw` has {} bytes, not a whole number of 8-byte instructions", tokens.len()),
            });
        }
        return Ok(tokens.iter().map(|(_, t)| hex_byte(t).expect("checked")).collect());
    }
    let mut bytes = Vec::with_capacity(tokens.len() * 8);
    for (line, token) in tokens {
        let word = match token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => token.parse::<u64>().ok(),
        }
        .ok_or_else(|| LoadError::Parse {
            line: *line,
            message: format!("`{token}` in `-- raw` is neither a 64-bit instruction word nor a hex byte"),
        })?;
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    Ok(bytes)
}

impl TestFile {
    /// Assembles (or decodes `-- raw`, which takes precedence, as upstream) and checks the file is runnable.
    pub fn into_test(self) -> Result<ConformanceTest, LoadError> {
        let program = match &self.raw {
            Some(bytes) => decode(bytes)?,
            None => assemble_lines(self.asm.iter().map(|(n, l)| (*n, l.as_str())))?,
        };
        if program.is_empty() {
            return Err(LoadError::NoInstructions);
        }
        if self.result.is_none() && self.error.is_none() {
            return Err(LoadError::NoExpectation);
        }
        let expected = Expected { value: self.result, error: self.error };
        Ok(ConformanceTest { program, memory: self.memory, expected })
    }
}

/// Reads, parses and assembles one file.
pub fn load(path: &Path) -> Result<ConformanceTest, LoadError> {
    parse(&std::fs::read_to_string(path)?)?.into_test()
}

/// Why an engine did not produce r0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The engine cannot run this program at all (a feature it lacks); the test is skipped with this reason.
    Unsupported(String),
    /// The program was rejected or failed at run time.
    Failed(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Unsupported(why) => write!(f, "unsupported: {why}"),
            EngineError::Failed(why) => f.write_str(why),
        }
    }
}

/// Something that executes eBPF programs under the conformance convention.
pub trait Engine {
    /// Short name for reports (`interp`, `native`).
    fn name(&self) -> &str;
    /// Runs `program` with r1 = a writable copy of `memory` (0 if empty), r2 = `memory.len()`; returns r0.
    fn run(&mut self, program: &[Instruction], memory: &[u8]) -> Result<u64, EngineError>;
}

/// The reference interpreter as an engine.
#[derive(Default)]
pub struct InterpreterEngine;

/// The conformance host: the uBPF plugin's helper table (test-corpora.md §1.4), so that tests written for
/// uBPF's runner also run here. Pointer arguments go through the checked [`Memory`].
pub struct ConformanceHost;

/// Helper ids of the uBPF plugin's table.
pub mod helper_ids {
    /// `gather_bytes(a, b, c, d, e)`: the low bytes of the five arguments, `a` most significant.
    pub const GATHER_BYTES: i32 = 0;
    /// `memfrob(ptr, len)`: XOR each of `len` bytes at `ptr` with 42; returns 0.
    pub const MEMFROB: i32 = 1;
    /// `no_op()`: returns 0.
    pub const NO_OP: i32 = 2;
    /// `sqrti(x)`: the square root of `x` (computed in double precision), truncated.
    pub const SQRTI: i32 = 3;
    /// `strcmp_ext(a, b)`: C `strcmp` of two NUL-terminated strings.
    pub const STRCMP_EXT: i32 = 4;
    /// `unwind(x)`: returns `x`; if `x` is 0 the program ends at once with r0 = 0.
    pub const UNWIND: i32 = super::UNWIND_HELPER;
}

/// Longest string `strcmp_ext` reads before giving up (the test memory is never this large).
const MAX_STRING: u64 = 1 << 20;

impl Host for ConformanceHost {
    fn call_helper(&mut self, id: i32, args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError> {
        let value = match id {
            helper_ids::GATHER_BYTES => {
                let mut v = 0u64;
                for n in 1..=5 {
                    v = (v << 8) | (args.arg(n)? & 0xff);
                }
                v
            }
            helper_ids::MEMFROB => {
                let (ptr, len) = (args.arg(1)?, args.arg(2)?);
                let len = usize::try_from(len).map_err(|_| HostError::Failed(format!("memfrob length {len}")))?;
                let mut bytes = memory.read(ptr, len)?.to_vec();
                bytes.iter_mut().for_each(|b| *b ^= 42);
                memory.write(ptr, &bytes)?;
                0
            }
            helper_ids::NO_OP => 0,
            helper_ids::SQRTI => (args.arg(1)? as f64).sqrt() as u64,
            helper_ids::STRCMP_EXT => {
                let (a, b) = (args.arg(1)?, args.arg(2)?);
                let mut i = 0;
                loop {
                    if i == MAX_STRING {
                        return Err(HostError::Failed(format!("strcmp_ext: no NUL within {MAX_STRING} bytes")));
                    }
                    let ca = memory.read(a.wrapping_add(i), 1)?[0];
                    let cb = memory.read(b.wrapping_add(i), 1)?[0];
                    if ca != cb || ca == 0 {
                        // C's int result, converted to the 64-bit return register with sign extension.
                        break (ca as i64 - cb as i64) as u64;
                    }
                    i += 1;
                }
            }
            UNWIND_HELPER => {
                let r1 = args.arg(1)?;
                if r1 == 0 {
                    return Ok(HelperOutcome::Exit(0));
                }
                r1
            }
            _ => return Err(HostError::UnknownHelper { id }),
        };
        Ok(HelperOutcome::Return(value))
    }
}

impl Engine for InterpreterEngine {
    fn name(&self) -> &str {
        "interp"
    }

    fn run(&mut self, program: &[Instruction], memory: &[u8]) -> Result<u64, EngineError> {
        let mut space = Memory::new();
        let r1 = if memory.is_empty() {
            0
        } else {
            space.add_region("test memory", memory.to_vec(), Access::ReadWrite).base()
        };
        Interpreter::new(program).run(&[r1, memory.len() as u64], &mut space, &mut ConformanceHost).map_err(|e| match e
            .kind
        {
            // Features the reference interpreter deliberately lacks: the test cannot say anything about it.
            InterpErrorKind::Host { error: HostError::UnsupportedBtfCall { .. }, .. }
            | InterpErrorKind::LegacyPacketLoad { .. } => EngineError::Unsupported(e.to_string()),
            _ => EngineError::Failed(e.to_string()),
        })
    }
}

/// The result of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Why it failed.
    Fail(String),
    /// Why it was skipped.
    Skip(String),
}

/// Runs one loaded test.
pub fn run_test(engine: &mut dyn Engine, test: &ConformanceTest) -> Outcome {
    let Expected { value, error } = &test.expected;
    match engine.run(&test.program, &test.memory) {
        Err(EngineError::Unsupported(why)) => Outcome::Skip(why),
        Ok(r0) if *value == Some(r0) => Outcome::Pass,
        Ok(r0) => match (value, error) {
            (Some(want), _) => Outcome::Fail(format!("r0 = {r0:#x}, expected {want:#x}")),
            (None, error) => {
                Outcome::Fail(format!("r0 = {r0:#x}, expected an error `{}`", error.as_deref().unwrap_or("")))
            }
        },
        Err(EngineError::Failed(_)) if error.is_some() => Outcome::Pass,
        Err(EngineError::Failed(why)) => Outcome::Fail(match value {
            Some(want) => format!("{why} (expected r0 = {want:#x})"),
            None => why,
        }),
    }
}

/// Loads and runs one file. A file with a directive this format does not define is skipped (as upstream does);
/// a file that expects an error passes when the assembler or the decoder rejects its program (the stage that
/// catches the error comes before any engine); any other file that cannot be loaded fails with the reason.
pub fn run_file(engine: &mut dyn Engine, path: &Path) -> Outcome {
    let file = match std::fs::read_to_string(path).map_err(LoadError::from).and_then(|text| parse(&text)) {
        Ok(file) => file,
        Err(e @ LoadError::UnknownDirective { .. }) => return Outcome::Skip(e.to_string()),
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let expects_error = file.error.is_some();
    match file.into_test() {
        Ok(test) => run_test(engine, &test),
        Err(LoadError::Assemble(_) | LoadError::Decode(_)) if expects_error => Outcome::Pass,
        Err(e) => Outcome::Fail(e.to_string()),
    }
}

/// Runs one file in a child process, so that a program that crashes or hangs the engine (a missing helper,
/// `ja -1` in native code) fails alone and says so instead of ending the whole run. `command` is run with the
/// file's path appended and must print what `cargo xtask conformance` prints for one file: a `FAIL <path>: why`
/// or `SKIP <path>: why` line, then the `N passed, M failed, K skipped` summary.
pub fn run_file_in_child(command: &mut std::process::Command, path: &Path, timeout: std::time::Duration) -> Outcome {
    use std::io::Read;
    use std::process::Stdio;
    let spawned = command.arg(path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Outcome::Fail(format!("cannot start the child process: {e}")),
    };
    // Drain the pipes on threads, so a chatty child cannot block on a full pipe while we wait for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let start = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(std::time::Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    let Some(status) = status else {
        return Outcome::Fail(format!("did not finish within {} s (killed)", timeout.as_secs()));
    };
    for line in stdout.lines() {
        let reason = |rest: &str| rest.split_once(": ").map_or(rest, |(_, why)| why).to_string();
        if let Some(rest) = line.strip_prefix("FAIL ") {
            return Outcome::Fail(reason(rest));
        }
        if let Some(rest) = line.strip_prefix("SKIP ") {
            return Outcome::Skip(reason(rest));
        }
    }
    if stdout.lines().any(|l| l == "1 passed, 0 failed, 0 skipped") && status.success() {
        return Outcome::Pass;
    }
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
    Outcome::Fail(format!("the engine's process ended without a result ({status}): {last}"))
}

/// Results of a run over folders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub results: Vec<(PathBuf, Outcome)>,
}

impl Summary {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|(_, o)| *o == Outcome::Pass).count()
    }
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|(_, o)| matches!(o, Outcome::Fail(_))).count()
    }
    pub fn skipped(&self) -> usize {
        self.results.iter().filter(|(_, o)| matches!(o, Outcome::Skip(_))).count()
    }
}

impl fmt::Display for Summary {
    /// The last line of a report: `N passed, M failed, K skipped`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed(), self.failed(), self.skipped())
    }
}

/// Every `.data` file directly inside `dir`, sorted by name.
pub fn data_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "data") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs every `.data` file in each folder, in order; a path that names a file runs that file.
pub fn run_dirs(engine: &mut dyn Engine, dirs: &[PathBuf]) -> std::io::Result<Summary> {
    run_each(dirs, |path| run_file(engine, path))
}

/// [`run_dirs`] with any way of running a file (e.g. [`run_file_in_child`]).
pub fn run_each(dirs: &[PathBuf], mut run: impl FnMut(&Path) -> Outcome) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    for dir in dirs {
        let files = if dir.is_file() {
            vec![dir.clone()]
        } else {
            data_files(dir).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        };
        for path in files {
            let outcome = run(&path);
            summary.results.push((path, outcome));
        }
    }
    Ok(summary)
}

/// The repository's copy of the suite: `../shared/corpora/bpf_conformance` relative to the workspace root.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/bpf_conformance")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_in_any_order_with_comments() {
        let f = parse("# c\n-- asm\nmov %r0, 1 # one\nexit\n-- result\n0x1\n-- mem\n00 ff\n0a\n").unwrap();
        assert_eq!(f.asm, vec![(3, "mov %r0, 1".to_string()), (4, "exit".to_string())]);
        assert_eq!(f.result, Some(1));
        assert_eq!(f.memory, vec![0, 0xff, 0x0a]);
        assert_eq!(parse("-- mem\n0 0x1f a\n").unwrap().memory, vec![0, 0x1f, 0x0a]);
        assert!(matches!(parse("-- mem\n123\n"), Err(LoadError::Parse { line: 2, .. })));
    }

    #[test]
    fn the_last_result_line_wins_and_hex_may_be_uppercase() {
        let f = parse("-- result\n0x1\n0xFFFFFFFFFFFFFFF6\n").unwrap();
        assert_eq!(f.result, Some(0xffff_ffff_ffff_fff6));
        assert_eq!(parse("-- result\n42\n").unwrap().result, Some(42));
    }

    #[test]
    fn raw_accepts_words_and_bytes() {
        let words = parse("-- raw\n0x5566778800000018\n0x1122334400000000\n").unwrap().raw.unwrap();
        assert_eq!(words[..8], [0x18, 0, 0, 0, 0x88, 0x77, 0x66, 0x55]);
        let bytes = parse("-- raw\n07 00 01 00 01 00 00 00\n95 00 00 00 00 00 00 00\n").unwrap().raw.unwrap();
        assert_eq!(bytes.len(), 16);
        assert_eq!(bytes[..3], [0x07, 0x00, 0x01]);
        assert!(matches!(parse("-- raw\n07 00 01\n"), Err(LoadError::Parse { line: 2, .. })));
    }

    #[test]
    fn ignored_sections_and_unknown_directives() {
        let f =
            parse("-- c\nint main() { return 0; }\n-- asm\nexit\n-- no register offset\ncall instruction\n").unwrap();
        assert_eq!(f.asm.len(), 1);
        assert!(matches!(parse("-- asm\n-- Unknown directive\n"), Err(LoadError::UnknownDirective { line: 2, .. })));
    }

    #[test]
    fn runs_with_the_memory_convention() {
        let test = parse("-- asm\nldxb %r0, [%r1+1]\nadd %r0, %r2\nstb [%r1], 1\nexit\n-- mem\n00 07\n-- result\n9")
            .unwrap()
            .into_test()
            .unwrap();
        assert_eq!(run_test(&mut InterpreterEngine, &test), Outcome::Pass);
    }

    #[test]
    fn a_wrong_result_fails_and_a_missing_program_is_rejected() {
        let test = parse("-- asm\nmov %r0, 1\nexit\n-- result\n2").unwrap().into_test().unwrap();
        assert!(matches!(run_test(&mut InterpreterEngine, &test), Outcome::Fail(m) if m.contains("expected 0x2")));
        assert!(matches!(parse("-- result\n0").unwrap().into_test(), Err(LoadError::NoInstructions)));
        assert!(matches!(parse("-- asm\nexit").unwrap().into_test(), Err(LoadError::NoExpectation)));
        // An empty `-- error` section expects nothing.
        assert!(matches!(parse("-- asm\nexit\n-- error\n").unwrap().into_test(), Err(LoadError::NoExpectation)));
    }

    fn run_asm(text: &str, memory: &[u8]) -> Result<u64, EngineError> {
        let program = bpf2sys::isa::asm::assemble(text).unwrap();
        InterpreterEngine.run(&program, memory)
    }

    #[test]
    fn ubpf_plugin_helpers() {
        let gather = "mov %r1, 0x1ff\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\ncall 0\nexit";
        assert_eq!(run_asm(gather, &[]), Ok(0xff_0203_0405));
        // r1..r5 are undefined after the call, as after any helper call.
        let after = run_asm("mov %r2, 2\ncall 1\nldxh %r0, [%r1]\nexit", &[42, 43, 9]);
        assert!(
            matches!(&after, Err(EngineError::Failed(m)) if m.contains("r1, which holds no defined value")),
            "{after:?}"
        );
        let frob = "mov %r6, %r1\nmov %r2, 2\ncall 1\nldxw %r0, [%r6]\nexit";
        assert_eq!(run_asm(frob, &[42, 43, 9, 0]), Ok(0x0009_0100));
        assert_eq!(run_asm("mov %r1, 0\ncall 2\nexit", &[]), Ok(0));
        assert_eq!(run_asm("mov %r1, 1000001\ncall 3\nexit", &[]), Ok(1000));
        let strcmp = "mov %r2, %r1\nadd %r2, 4\ncall 4\nexit";
        assert_eq!(run_asm(strcmp, b"abc\0abc\0"), Ok(0));
        assert_eq!(run_asm(strcmp, b"abd\0abc\0"), Ok(1));
        assert_eq!(run_asm(strcmp, b"ab\0\0abc\0"), Ok(-99i64 as u64));
        // An unterminated string runs off the end of the memory: an error, not a read beyond it.
        assert!(
            matches!(run_asm(strcmp, b"abcdabcd"), Err(EngineError::Failed(m)) if m.contains("not inside test memory"))
        );
        assert!(matches!(run_asm("call 6\nexit", &[]), Err(EngineError::Failed(m)) if m.contains("unknown helper 6")));
    }

    #[test]
    fn features_the_interpreter_lacks_are_skipped_with_the_reason() {
        let test = parse("-- asm\ncall runtime 0x2a\nexit\n-- result\n0x0\n").unwrap().into_test().unwrap();
        assert!(matches!(run_test(&mut InterpreterEngine, &test), Outcome::Skip(m) if m.contains("kfunc")));
        let test = parse("-- raw\n0x0000000000000020\n0x95\n-- result\n0\n").unwrap().into_test().unwrap();
        assert!(matches!(run_test(&mut InterpreterEngine, &test), Outcome::Skip(m) if m.contains("LD_ABS")));
    }

    #[test]
    fn expected_values_and_errors_combine_as_upstream() {
        let outcome = |text: &str| run_test(&mut InterpreterEngine, &parse(text).unwrap().into_test().unwrap());
        // A run that fails passes when an error is expected, whatever the result line says.
        let oob = "-- asm\nmov %r0, 0\nldxdw %r0, [%r0+96]\nexit\n-- result\n0xffffffffffffffff\n";
        assert_eq!(outcome(&format!("{oob}-- error pattern\nout of bounds\n")), Outcome::Pass);
        assert!(matches!(outcome(oob), Outcome::Fail(m) if m.contains("outside every mapped region")));
        // A run that ends must give the value.
        assert_eq!(outcome("-- asm\nmov %r0, 3\nexit\n-- result\n3\n-- error\nany\n"), Outcome::Pass);
        assert!(matches!(outcome("-- asm\nmov %r0, 3\nexit\n-- error\nbad\n"), Outcome::Fail(m)
                if m.contains("expected an error `bad`")));
    }

    #[test]
    fn files_with_unknown_directives_are_skipped_with_the_directive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.data"), "-- asm\nmov %r0, 1\nexit\n-- result\n1\n-- test_jit\nnote\n")
            .unwrap();
        std::fs::write(dir.path().join("b.data"), "-- asm\nmov %r0, 1\nexit\n-- result\n2\n").unwrap();
        std::fs::write(dir.path().join("c.data"), "-- asm\nmov %r0, 1\nexit\n-- result\n1\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a test").unwrap();
        let summary = run_dirs(&mut InterpreterEngine, &[dir.path().to_path_buf()]).unwrap();
        assert_eq!(summary.to_string(), "1 passed, 1 failed, 1 skipped");
        assert!(matches!(&summary.results[0].1, Outcome::Skip(m) if m.contains("unknown directive `-- test_jit`")));
        // A file given directly runs alone; a missing folder is an error naming it.
        let one = run_dirs(&mut InterpreterEngine, &[dir.path().join("c.data")]).unwrap();
        assert_eq!(one.to_string(), "1 passed, 0 failed, 0 skipped");
        let missing = run_dirs(&mut InterpreterEngine, &[dir.path().join("nope")]).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn an_expected_error_passes_when_the_assembler_or_decoder_rejects_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let bad_asm = write("a.data", "-- asm\nfrobnicate %r0\nexit\n-- error\nunknown instruction\n");
        assert_eq!(run_file(&mut InterpreterEngine, &bad_asm), Outcome::Pass);
        let bad_raw = write("b.data", "-- raw\nff 00 00 00 00 00 00 00\n-- error\ninvalid opcode\n");
        assert_eq!(run_file(&mut InterpreterEngine, &bad_raw), Outcome::Pass);
        // Without an expected error the rejection is a failure that names it.
        let no_error = write("c.data", "-- asm\nfrobnicate %r0\nexit\n-- result\n0\n");
        assert!(matches!(run_file(&mut InterpreterEngine, &no_error), Outcome::Fail(m) if m.contains("assembler")));
        // An error the parser finds (not the program's) still fails.
        let bad_mem = write("d.data", "-- asm\nexit\n-- mem\nzz\n-- error\nanything\n");
        assert!(matches!(run_file(&mut InterpreterEngine, &bad_mem), Outcome::Fail(_)));
    }

    #[test]
    fn a_child_that_crashes_hangs_or_reports_gives_its_own_outcome() {
        use std::process::Command;
        use std::time::Duration;
        let path = Path::new("t.data");
        let sh = |script: &str| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(script).arg("sh");
            c
        };
        let timeout = Duration::from_secs(5);
        let pass = run_file_in_child(&mut sh("echo '1 passed, 0 failed, 0 skipped'"), path, timeout);
        assert_eq!(pass, Outcome::Pass);
        let fail = run_file_in_child(
            &mut sh("echo \"FAIL $1: r0 = 0x1\"; echo '0 passed, 1 failed, 0 skipped'"),
            path,
            timeout,
        );
        assert_eq!(fail, Outcome::Fail("r0 = 0x1".into()));
        let skip = run_file_in_child(&mut sh("echo \"SKIP $1: unknown directive\""), path, timeout);
        assert_eq!(skip, Outcome::Skip("unknown directive".into()));
        let crash = run_file_in_child(&mut sh("echo dying >&2; kill -SEGV $$"), path, timeout);
        assert!(matches!(&crash, Outcome::Fail(m) if m.contains("SIGSEGV") || m.contains("signal: 11")), "{crash:?}");
        let hang = run_file_in_child(&mut sh("sleep 30"), path, Duration::from_millis(200));
        assert!(matches!(&hang, Outcome::Fail(m) if m.contains("killed")), "{hang:?}");
    }

    #[test]
    fn unwind_helper_ends_the_program_when_it_returns_zero() {
        let test = parse("-- asm\nmov %r1, 0\ncall 5\nmov %r0, 2\nexit\n-- result\n0").unwrap().into_test().unwrap();
        assert_eq!(run_test(&mut InterpreterEngine, &test), Outcome::Pass);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Any text is loaded as a test or rejected with a reason; a loaded test runs to an outcome.
            #[test]
            fn arbitrary_files_load_or_are_rejected(
                lines in proptest::collection::vec(
                    concat!(
                        "(-- (asm|result|mem|raw|error|c|no register offset|other)",
                        "|[0-9a-fx ]{0,40}|mov %r0, [0-9]{1,3}|exit|# .*)"
                    ),
                    0..20,
                ),
            ) {
                let text = lines.join("\n");
                if let Ok(test) = parse(&text).and_then(TestFile::into_test) {
                    let _ = run_test(&mut InterpreterEngine, &test);
                }
            }
        }
    }
}
