//! The benchmark programs in `samples/bench/`: their objects, their bytecode and the r0 each must return.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};

/// The programs of the timing tables: the six of ../shared/docs/benchmarks.md in its order, then the programs
/// representative of Windows workloads this repository adds (issue 16): `pktwalk`, and the real eBPF for Windows
/// programs of [`super::runtime_programs`] (`flowtrack`, `tailchain`, `bindpolicy`).
pub const PROGRAMS: [&str; 10] =
    ["csum", "parse", "branchy", "maplookup", "sieve", "unrolled", "pktwalk", "flowtrack", "tailchain", "bindpolicy"];

/// The verifiable XDP twin of `unrolled`, measured through the whole pipeline.
pub const UNROLLED_XDP: &str = "unrolled_xdp";

/// One benchmark program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchProgram {
    pub name: String,
    /// `samples/bench/<name>.o`.
    pub object_path: PathBuf,
    /// The result the program must return on its input (`samples/bench/expected-r0.txt`).
    pub expected_r0: u64,
}

/// Why the benchmark programs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: expected `<program> 0x<r0>`, found `{text}`")]
    ExpectedLine { path: PathBuf, line: usize, text: String },
    #[error("{path}: no expected r0 for program `{program}`")]
    MissingExpected { path: PathBuf, program: String },
    #[error("{path}: not a readable ELF object: {message}")]
    Elf { path: PathBuf, message: String },
    #[error("{path}: no function symbol `{symbol}`")]
    NoSymbol { path: PathBuf, symbol: String },
}

/// `samples/bench/` under the repository root.
pub fn bench_dir(repo_root: &Path) -> PathBuf {
    repo_root.join("samples/bench")
}

/// Reads `expected-r0.txt`: `#` comments, then `<program> 0x<r0>` lines.
pub fn expected_values(repo_root: &Path) -> Result<Vec<(String, u64)>, ProgramError> {
    let path = bench_dir(repo_root).join("expected-r0.txt");
    let text = std::fs::read_to_string(&path).map_err(|source| ProgramError::Io { path: path.clone(), source })?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || ProgramError::ExpectedLine { path: path.clone(), line: i + 1, text: line.to_string() };
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad());
        };
        let value = value.strip_prefix("0x").and_then(|h| u64::from_str_radix(h, 16).ok()).ok_or_else(bad)?;
        values.push((name.to_string(), value));
    }
    Ok(values)
}

/// The timing programs with their expected results.
pub fn load_all(repo_root: &Path) -> Result<Vec<BenchProgram>, ProgramError> {
    let expected = expected_values(repo_root)?;
    let path = bench_dir(repo_root).join("expected-r0.txt");
    PROGRAMS
        .iter()
        .map(|&name| {
            let expected_r0 = expected
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| ProgramError::MissingExpected { path: path.clone(), program: name.to_string() })?;
            Ok(BenchProgram {
                name: name.to_string(),
                object_path: bench_dir(repo_root).join(format!("{name}.o")),
                expected_r0,
            })
        })
        .collect()
}

/// The raw bytecode of function `symbol` in an eBPF object, for engines that take bytes (rbpf). The benchmark
/// objects have no relocations (../shared/bench/README.md), so the bytes are the complete program.
pub fn function_bytecode(object_path: &Path, symbol: &str) -> Result<Vec<u8>, ProgramError> {
    let data =
        std::fs::read(object_path).map_err(|source| ProgramError::Io { path: object_path.to_path_buf(), source })?;
    let elf = |message: String| ProgramError::Elf { path: object_path.to_path_buf(), message };
    let file = object::File::parse(&*data).map_err(|e| elf(e.to_string()))?;
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(symbol) && s.kind() == object::SymbolKind::Text)
        .ok_or_else(|| ProgramError::NoSymbol { path: object_path.to_path_buf(), symbol: symbol.to_string() })?;
    let section_index = sym.section_index().ok_or_else(|| elf(format!("symbol `{symbol}` has no section")))?;
    let section = file.section_by_index(section_index).map_err(|e| elf(e.to_string()))?;
    let bytes = section.data().map_err(|e| elf(e.to_string()))?;
    let start = sym.address() as usize;
    let end = start + sym.size() as usize;
    bytes
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| elf(format!("symbol `{symbol}` ({start}..{end}) lies outside its section")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    #[test]
    fn every_program_has_an_object_and_an_expected_value() {
        let programs = load_all(&repo_root()).unwrap();
        assert_eq!(programs.len(), PROGRAMS.len());
        for p in &programs {
            assert!(p.object_path.is_file(), "{}", p.object_path.display());
        }
        assert_eq!(programs[0].expected_r0, 0x70a5_b4d7_dc7e_12cb);
    }

    #[test]
    fn bytecode_has_the_documented_slot_counts() {
        // ../shared/docs/benchmarks.md, "eBPF insn slots (clang-14 -O2)"; pktwalk from samples/bench/README.md (the
        // runtime programs have no `entry`: their slots are in the README too, counted per program).
        let dir = bench_dir(&repo_root());
        for (name, slots) in [
            ("csum", 45),
            ("parse", 190),
            ("maplookup", 31),
            ("branchy", 98),
            ("sieve", 554),
            ("unrolled", 2314),
            ("pktwalk", 494),
        ] {
            let code = function_bytecode(&dir.join(format!("{name}.o")), "entry").unwrap();
            assert_eq!(code.len() / 8, slots, "{name}");
        }
    }
}
