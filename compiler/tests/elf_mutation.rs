//! Hostile input: the ELF front end never panics, hangs or allocates without bound on mutated objects.
//!
//! Every committed object under `samples/` (including `variants/`, `bench/`, `unsafe/`, `linux/`) is mutated by
//! proptest and loaded with eBPF for Windows or Linux conventions (legacy record layouts, map numbering): bit flips,
//! truncation, and corruption of the size/offset/count fields that parsers trust — the ELF header, section
//! headers, symbols, relocation entries, and the `.BTF` / `.BTF.ext` headers and type records. Each mutated
//! object must load or give an error; a panic fails the case (proptest catches it and shrinks).
//!
//! Allocation is measured by a counting global allocator: the peak live heap while loading must stay below
//! `ALLOCATION_FACTOR` × the input size plus a constant, so no field can make the loader reserve memory it was
//! not given. Each case must also finish within `CASE_TIME_LIMIT`.
//!
//! Case count: `BPF2SYS_ELF_MUTATION_CASES` (default 100000, a few seconds in the test profile on 2 cores);
//! `BPF2SYS_ELF_MUTATION_CASES=2000000 cargo test -p bpf2sys --test elf_mutation -- --nocapture` for a long run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bpf2sys::elf::ObjectConventions;
use object::read::elf::{FileHeader, SectionHeader};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Counts live heap bytes per thread (the loader is single-threaded).
struct CountingAllocator;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            let now = live.get().saturating_add(layout.size());
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Peak live heap while loading may be at most this many times the input size, plus `ALLOCATION_SLACK`.
const ALLOCATION_FACTOR: usize = 64;
const ALLOCATION_SLACK: usize = 8 << 20;
const CASE_TIME_LIMIT: Duration = Duration::from_secs(2);

/// A pristine sample with the file offsets of the structures worth corrupting.
struct Sample {
    name: String,
    bytes: Vec<u8>,
    /// (offset of the section header, sh_offset, sh_size, sh_type, name)
    sections: Vec<(usize, usize, usize, u32, String)>,
}

impl Sample {
    fn section(&self, name: &str) -> Option<(usize, usize)> {
        self.sections.iter().find(|s| s.4 == name).map(|s| (s.1, s.2))
    }
    fn sections_of_type(&self, sh_type: u32) -> Vec<(usize, usize)> {
        self.sections.iter().filter(|s| s.3 == sh_type).map(|s| (s.1, s.2)).collect()
    }
}

fn samples() -> &'static [Sample] {
    static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
        // Every object under samples/ (ours, variants, and the benchmark and unsafe sets where present).
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "o") {
                    paths.push(p);
                }
            }
        }
        paths.sort();
        paths.into_iter().map(|p| parse_sample(&p)).collect()
    })
}

fn parse_sample(path: &Path) -> Sample {
    let bytes = std::fs::read(path).unwrap();
    let endian = object::LittleEndian;
    let header = object::elf::FileHeader64::<object::LittleEndian>::parse(&*bytes).unwrap();
    let table = header.sections(endian, &*bytes).unwrap();
    let shoff = header.e_shoff(endian) as usize;
    let shentsize = header.e_shentsize(endian) as usize;
    let sections = table
        .iter()
        .enumerate()
        .map(|(i, sh)| {
            (
                shoff + i * shentsize,
                sh.sh_offset(endian) as usize,
                sh.sh_size(endian) as usize,
                sh.sh_type(endian),
                String::from_utf8_lossy(table.section_name(endian, sh).unwrap()).into_owned(),
            )
        })
        .collect();
    Sample { name: path.file_name().unwrap().to_string_lossy().into_owned(), bytes, sections }
}

/// A replacement value for a field: absolute, relative to the file length, or relative to the old value.
#[derive(Clone, Debug)]
enum Value {
    Abs(u64),
    NearFileLen(i16),
    Delta(i32),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Abs(0)),
        Just(Value::Abs(1)),
        Just(Value::Abs(u64::MAX)),
        Just(Value::Abs(0xffff_ffff)),
        Just(Value::Abs(0x8000_0000)),
        Just(Value::Abs(0x7fff_ffff)),
        (0u64..4096).prop_map(Value::Abs),
        any::<u64>().prop_map(Value::Abs),
        (-64i16..64).prop_map(Value::NearFileLen),
        (-256i32..256).prop_map(Value::Delta),
    ]
}

/// Where a mutation writes, chosen relative to the sample's structures; indexes are reduced modulo the
/// number of candidates when applied.
#[derive(Clone, Debug)]
enum Mutation {
    BitFlip {
        at: usize,
        bit: u8,
    },
    Truncate {
        keep: usize,
    },
    /// ELF header field: (offset, width).
    ElfHeader {
        field: usize,
        value: Value,
    },
    SectionHeader {
        section: usize,
        field: usize,
        value: Value,
    },
    /// A symbol's st_name / st_value / st_size / st_shndx / st_info.
    Symbol {
        symbol: usize,
        field: usize,
        value: Value,
    },
    Relocation {
        entry: usize,
        field: usize,
        value: Value,
    },
    /// `.BTF` or `.BTF.ext` header field.
    BtfHeader {
        ext: bool,
        field: usize,
        value: Value,
    },
    /// A 32-bit word anywhere inside `.BTF` / `.BTF.ext` (type records, line records, string offsets).
    BtfWord {
        ext: bool,
        word: usize,
        value: Value,
    },
    /// A 32-bit word inside an executable or map section (instructions, map records).
    ContentWord {
        section: usize,
        word: usize,
        value: Value,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::BitFlip { at, bit }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (any::<usize>(), value()).prop_map(|(field, value)| Mutation::ElfHeader { field, value }),
        (any::<usize>(), any::<usize>(), value()).prop_map(|(section, field, value)| Mutation::SectionHeader {
            section,
            field,
            value
        }),
        (any::<usize>(), any::<usize>(), value()).prop_map(|(symbol, field, value)| Mutation::Symbol {
            symbol,
            field,
            value
        }),
        (any::<usize>(), any::<usize>(), value()).prop_map(|(entry, field, value)| Mutation::Relocation {
            entry,
            field,
            value
        }),
        (any::<bool>(), any::<usize>(), value()).prop_map(|(ext, field, value)| Mutation::BtfHeader {
            ext,
            field,
            value
        }),
        (any::<bool>(), any::<usize>(), value()).prop_map(|(ext, word, value)| Mutation::BtfWord { ext, word, value }),
        (any::<usize>(), any::<usize>(), value()).prop_map(|(section, word, value)| Mutation::ContentWord {
            section,
            word,
            value
        }),
    ]
}

fn read_le(bytes: &[u8], at: usize, width: usize) -> u64 {
    let mut v = 0u64;
    for i in (0..width).rev() {
        v = (v << 8) | u64::from(bytes[at + i]);
    }
    v
}

/// Writes `value` into the `width`-byte little-endian field at `at`, if it lies inside `bytes`.
fn write_field(bytes: &mut [u8], at: usize, width: usize, value: &Value) {
    if at + width > bytes.len() {
        return;
    }
    let old = read_le(bytes, at, width);
    let new = match *value {
        Value::Abs(v) => v,
        Value::NearFileLen(d) => (bytes.len() as i64 + i64::from(d)) as u64,
        Value::Delta(d) => old.wrapping_add(d as i64 as u64),
    };
    for i in 0..width {
        bytes[at + i] = (new >> (8 * i)) as u8;
    }
}

// ELF64 header fields worth corrupting: (offset, width).
const ELF_HEADER_FIELDS: &[(usize, usize)] = &[
    (0x10, 2), // e_type
    (0x12, 2), // e_machine
    (0x28, 8), // e_shoff
    (0x3a, 2), // e_shentsize
    (0x3c, 2), // e_shnum
    (0x3e, 2), // e_shstrndx
    (0x04, 1), // EI_CLASS
    (0x05, 1), // EI_DATA
];
// Elf64_Shdr fields: sh_name, sh_type, sh_flags, sh_offset, sh_size, sh_link, sh_info, sh_entsize.
const SECTION_FIELDS: &[(usize, usize)] =
    &[(0, 4), (4, 4), (8, 8), (0x18, 8), (0x20, 8), (0x28, 4), (0x2c, 4), (0x38, 8)];
// Elf64_Sym fields: st_name, st_info, st_shndx, st_value, st_size.
const SYMBOL_FIELDS: &[(usize, usize)] = &[(0, 4), (4, 1), (6, 2), (8, 8), (16, 8)];
// Elf64_Rel fields: r_offset, r_info (type), r_info (symbol).
const RELOCATION_FIELDS: &[(usize, usize)] = &[(0, 8), (8, 4), (12, 4)];
// .BTF header: magic, version, hdr_len, type_off, type_len, str_off, str_len; .BTF.ext: ... line_info_off/len.
const BTF_HEADER_FIELDS: &[(usize, usize)] =
    &[(0, 2), (2, 1), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4)];

fn apply(sample: &Sample, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = sample.bytes.clone();
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::BitFlip { at, bit } => {
                let at = at % bytes.len();
                bytes[at] ^= 1 << bit;
            }
            Mutation::Truncate { keep } => {
                let keep = keep % bytes.len();
                bytes.truncate(keep);
            }
            Mutation::ElfHeader { field, value } => {
                let (at, width) = ELF_HEADER_FIELDS[field % ELF_HEADER_FIELDS.len()];
                write_field(&mut bytes, at, width, value);
            }
            Mutation::SectionHeader { section, field, value } => {
                let (header, ..) = &sample.sections[section % sample.sections.len()];
                let (at, width) = SECTION_FIELDS[field % SECTION_FIELDS.len()];
                write_field(&mut bytes, header + at, width, value);
            }
            Mutation::Symbol { symbol, field, value } => {
                if let Some(&(off, size)) = sample.sections_of_type(object::elf::SHT_SYMTAB).first() {
                    let count = size / 24;
                    if count > 0 {
                        let (at, width) = SYMBOL_FIELDS[field % SYMBOL_FIELDS.len()];
                        write_field(&mut bytes, off + (symbol % count) * 24 + at, width, value);
                    }
                }
            }
            Mutation::Relocation { entry, field, value } => {
                let rels = sample.sections_of_type(object::elf::SHT_REL);
                if !rels.is_empty() {
                    let (off, size) = rels[entry % rels.len()];
                    let count = size / 16;
                    if count > 0 {
                        let (at, width) = RELOCATION_FIELDS[field % RELOCATION_FIELDS.len()];
                        write_field(&mut bytes, off + (entry / rels.len() % count) * 16 + at, width, value);
                    }
                }
            }
            Mutation::BtfHeader { ext, field, value } => {
                if let Some((off, _)) = sample.section(if *ext { ".BTF.ext" } else { ".BTF" }) {
                    let (at, width) = BTF_HEADER_FIELDS[field % BTF_HEADER_FIELDS.len()];
                    write_field(&mut bytes, off + at, width, value);
                }
            }
            Mutation::BtfWord { ext, word, value } => {
                if let Some((off, size)) = sample.section(if *ext { ".BTF.ext" } else { ".BTF" }) {
                    if size >= 4 {
                        write_field(&mut bytes, off + (word % (size / 4)) * 4, 4, value);
                    }
                }
            }
            Mutation::ContentWord { section, word, value } => {
                let content: Vec<_> = sample
                    .sections
                    .iter()
                    .filter(|s| s.3 == object::elf::SHT_PROGBITS && !s.4.starts_with(".debug") && s.2 >= 4)
                    .collect();
                if !content.is_empty() {
                    let s = content[section % content.len()];
                    write_field(&mut bytes, s.1 + (word % (s.2 / 4)) * 4, 4, value);
                }
            }
        }
    }
    bytes
}

fn case_count() -> u32 {
    std::env::var("BPF2SYS_ELF_MUTATION_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// What later stages may rely on in any module the loader accepts, however odd its input was.
fn check_invariants(module: &bpf2sys::program::Module) -> Result<(), String> {
    use bpf2sys::isa::{Imm64Kind, Instruction};
    for p in &module.programs {
        let mut next = 0;
        for f in &p.functions {
            if f.start != next || f.start >= f.end {
                return Err(format!("{}: functions do not tile the program at {}", p.name, f.name));
            }
            next = f.end;
        }
        if next != p.instructions.len() {
            return Err(format!("{}: functions cover {next} of {} slots", p.name, p.instructions.len()));
        }
        if let Some(l) = p.line_info.iter().find(|l| l.slot >= p.instructions.len()) {
            return Err(format!("{}: line info for slot {} past the end", p.name, l.slot));
        }
        for (pc, insn) in p.instructions.iter().enumerate() {
            match *insn {
                Instruction::LoadImm64 { kind: Imm64Kind::MapIndex, imm, .. }
                | Instruction::LoadImm64 { kind: Imm64Kind::MapIndexValue, imm, .. }
                    if imm < 0 || imm as usize >= module.maps.len() =>
                {
                    return Err(format!("{}: slot {pc} names map {imm} of {}", p.name, module.maps.len()));
                }
                Instruction::LoadImm64 { kind: Imm64Kind::MapIndexValue, imm, next_imm, .. } => {
                    let size = module.maps[imm as usize].value_size as i64;
                    if next_imm < 0 || i64::from(next_imm) > size {
                        return Err(format!("{}: slot {pc} global offset {next_imm} outside {size} bytes", p.name));
                    }
                }
                Instruction::CallBtf { btf_id, module: 0 }
                    if !module.kfuncs.iter().any(|k| i64::from(k.id) == i64::from(btf_id)) =>
                {
                    return Err(format!(
                        "{}: slot {pc} calls kfunc {btf_id}, which the module does not declare",
                        p.name
                    ));
                }
                _ => {}
            }
        }
    }
    if module.kfunc_table().len() != module.kfuncs.len() {
        return Err("kfunc table lost entries".into());
    }
    if let Some(r) = module.legacy_map_records.iter().find(|r| r.map_index >= module.maps.len()) {
        return Err(format!("legacy record at {}+{} names map {}", r.section, r.offset, r.map_index));
    }
    if let Some(r) = module.refused_programs.iter().find(|r| r.reason.is_empty()) {
        return Err(format!("refused program without a reason: {r:?}"));
    }
    // The platform checks run on whatever the loader accepts; they must answer, not panic.
    let _ = bpf2sys::platform::windows::WINDOWS.check_maps(&module.maps);
    let _ = bpf2sys::platform::linux::LINUX.check_maps(&module.maps);
    for (i, m) in module.maps.iter().enumerate() {
        if m.inner_map_index.is_some_and(|j| j >= module.maps.len() || j == i) {
            return Err(format!("map {}: inner map index out of range", m.name));
        }
    }
    for g in &module.global_sections {
        if module.maps.get(g.map_index).is_none_or(|m| m.value_size as usize != g.initial_data.len()) {
            return Err("global section does not match its map".into());
        }
    }
    for v in &module.map_initial_values {
        if v.map_index >= module.maps.len() || v.values.len() > module.maps[v.map_index].max_entries as usize {
            return Err("map initial values out of range".into());
        }
    }
    Ok(())
}

/// Loads `bytes` with the given conventions, returning (the error's variant name if rejected, peak heap growth,
/// elapsed).
fn load_measured(
    bytes: &[u8],
    name: &str,
    conventions: ObjectConventions,
) -> (Result<Option<String>, String>, usize, Duration) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let start = Instant::now();
    let result = bpf2sys::elf::load_with(bytes, name, conventions);
    let elapsed = start.elapsed();
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    let outcome = match result {
        Ok(module) => check_invariants(&module).map(|()| None),
        Err(e) => {
            let debug = format!("{e:?}");
            Ok(Some(debug[..debug.find([' ', '(', '{']).unwrap_or(debug.len())].to_string()))
        }
    };
    (outcome, peak, elapsed)
}

#[test]
fn mutated_samples_never_panic_hang_or_overallocate() {
    let samples = samples();
    assert!(samples.len() >= 12, "expected the committed samples, found {}", samples.len());
    let cases = case_count();
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let loaded = AtomicUsize::new(0);
    let rejected = AtomicUsize::new(0);
    let by_error = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    // Every object is read with both platforms' conventions (Linux legacy layouts and map-in-map numbering take
    // other paths than Windows ones).
    let strategy = (0..samples.len(), prop::collection::vec(mutation(), 1..4), any::<bool>());
    let result = runner.run(&strategy, |(index, mutations, linux)| {
        let sample = &samples[index];
        let bytes = apply(sample, &mutations);
        let conventions = if linux { ObjectConventions::Linux } else { ObjectConventions::Windows };
        let (outcome, peak, elapsed) = load_measured(&bytes, &sample.name, conventions);
        let error = match outcome {
            Ok(error) => error,
            Err(broken) => return Err(TestCaseError::fail(format!("{}: accepted but {broken}", sample.name))),
        };
        match error {
            None => {
                loaded.fetch_add(1, Ordering::Relaxed);
            }
            Some(kind) => {
                rejected.fetch_add(1, Ordering::Relaxed);
                *by_error.lock().unwrap().entry(kind).or_default() += 1;
            }
        }
        let limit = bytes.len() * ALLOCATION_FACTOR + ALLOCATION_SLACK;
        prop_assert!(
            peak <= limit,
            "{}: peak heap {peak} bytes > limit {limit} for {} input bytes",
            sample.name,
            bytes.len()
        );
        prop_assert!(elapsed <= CASE_TIME_LIMIT, "{}: load took {elapsed:?}", sample.name);
        Ok(())
    });
    let (loaded, rejected) = (loaded.into_inner(), rejected.into_inner());
    eprintln!("elf_mutation: {} mutated objects ({loaded} loaded, {rejected} rejected), no panic", loaded + rejected);
    let by_error = by_error.into_inner().unwrap();
    eprintln!("elf_mutation: rejections by error kind: {by_error:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    // The mutations must reach the deep error paths, not only the ELF header checks (skipped for tiny runs).
    if cases >= 2000 {
        for kind in ["Malformed", "Btf", "Relocation", "Symbol", "Section", "Decode", "Map"] {
            assert!(by_error.contains_key(kind), "no mutation produced an ElfError::{kind}: {by_error:?}");
        }
    }
}

#[test]
fn every_truncation_of_every_sample_is_an_error_or_loads() {
    // Exhaustive over prefix lengths at a stride (every length for the smallest object), no panic.
    for sample in samples() {
        let stride = if sample.bytes.len() < 4096 { 1 } else { 7 };
        for len in (0..sample.bytes.len()).step_by(stride) {
            let _ = bpf2sys::elf::load(&sample.bytes[..len], &sample.name);
        }
    }
}

#[test]
fn inspect_never_panics_on_mutated_objects() {
    // `bpf2sys inspect` on mutated objects: exit 0 (loaded) or 2 (rejected with a message), never a panic.
    let samples = samples();
    let cases = (case_count() / 500).clamp(20, 400);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutated.o");
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&(0..samples.len(), prop::collection::vec(mutation(), 1..3)), |(index, mutations)| {
        let bytes = apply(&samples[index], &mutations);
        std::fs::write(&path, &bytes).unwrap();
        for format in ["text", "json"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_bpf2sys"))
                .args(["inspect", "--format", format])
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(!stderr.contains("panicked"), "{}: {stderr}", samples[index].name);
            match out.status.code() {
                Some(0) => prop_assert!(!out.stdout.is_empty()),
                Some(2) => prop_assert!(stderr.starts_with("error: "), "{stderr}"),
                other => prop_assert!(false, "exit status {other:?}: {stderr}"),
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A `.BTF`-shaped section: a valid preamble, random offsets/lengths (mostly in range), random body.
fn btf_like() -> impl Strategy<Value = Vec<u8>> {
    (0u32..64, 0u32..64, 0u32..512, 0u32..512, prop::collection::vec(any::<u8>(), 0..600)).prop_map(
        |(type_off, type_len, str_off, str_len, body)| {
            let mut b = vec![0x9f, 0xeb, 1, 0];
            for v in [24u32, type_off, type_len, str_off, str_len] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&body);
            b
        },
    )
}

#[test]
fn btf_parsers_never_panic_on_random_sections() {
    use bpf2sys::elf::btf::{parse_line_info, Btf};
    let cases = (case_count() / 5).max(1000);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let result = runner.run(&(btf_like(), btf_like()), |(btf_bytes, mut ext_bytes)| {
        if let Ok(btf) = Btf::parse(&btf_bytes) {
            // Exercise the type walkers on every id, including cyclic or dangling chains.
            for id in 0..btf.type_count() as u32 + 2 {
                let _ = btf.size_of(id);
                let _ = btf.skip_modifiers(id);
            }
            let _ = btf.datasec(".maps");
            ext_bytes[4..8].copy_from_slice(&32u32.to_le_bytes());
            let _ = parse_line_info(&ext_bytes, &btf);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
