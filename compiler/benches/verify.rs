//! Verification-time benchmark (`cargo bench -p bpf2sys --bench verify`): every sample program, the bench
//! programs of ../shared/bench/progs (compiled with clang when it is installed), and synthetic programs of
//! 1k, 10k and 100k instructions (`common/synthetic.rs`), to show that verification time grows near-linearly
//! with program size.
//!
//! It also prints the peak heap of one verification (the largest committed sample program and each synthetic
//! program), measured by a counting global allocator: bytes live at the high-water mark minus bytes live before
//! the call, so the figure is the verifier's own and does not depend on the rest of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::platform::{ContextDescriptor, ContextField, Guid, ProgramType};
use bpf2sys::program::Module;
use bpf2sys::verifier::{verify_program, VerifierOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "common/synthetic.rs"]
mod synthetic;

/// The system allocator, counting live bytes and their high-water mark.
struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator, with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Peak heap bytes allocated while `f` runs, above what was live when it started (single-threaded use).
fn peak_heap<T>(f: impl FnOnce() -> T) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    drop(black_box(f()));
    PEAK.load(Ordering::Relaxed) - before
}

fn print_peak(what: &str, bytes: usize) {
    println!("peak heap: {what}: {:.2} MiB ({bytes} bytes)", bytes as f64 / (1024.0 * 1024.0));
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

fn load(path: &Path) -> Option<Module> {
    let bytes = std::fs::read(path).ok()?;
    bpf2sys::elf::load(&bytes, &path.file_name()?.to_string_lossy()).ok()
}

fn samples(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify/samples");
    let mut paths: Vec<_> = std::fs::read_dir(repo().join("samples"))
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    paths.sort();
    let options = VerifierOptions::default();
    // (instructions, peak heap bytes, program) of the largest sample program by instruction count.
    let mut largest: Option<(usize, usize, String)> = None;
    for path in paths {
        let Some(module) = load(&path) else { continue };
        for (i, p) in module.programs.iter().enumerate() {
            let Some((pt, _)) = WINDOWS.program_type_for_section(&p.section_name) else { continue };
            if largest.as_ref().is_none_or(|(n, _, _)| p.instructions.len() > *n) {
                let peak = peak_heap(|| verify_program(&module, i, &WINDOWS, pt, &options).expect("verifies"));
                largest = Some((p.instructions.len(), peak, p.name.clone()));
            }
            group.bench_function(BenchmarkId::from_parameter(&p.name), |b| {
                b.iter(|| verify_program(black_box(&module), i, &WINDOWS, pt, &options).expect("verifies"))
            });
        }
    }
    group.finish();
    if let Some((n, peak, name)) = largest {
        print_peak(&format!("largest sample program {name} ({n} instructions)"), peak);
    }
}

/// The bench programs receive `struct buf { u32 len; u32 pad; u8 data[]; }` (bench/progs/common.h); the
/// harness passes at most 64 KiB of data, modelled as a read-only context of that size.
static BUF_FIELDS: &[ContextField] = &[
    ContextField { name: "len", offset: 0, size: 4, writable: false },
    ContextField { name: "pad", offset: 4, size: 4, writable: false },
    ContextField { name: "data", offset: 8, size: 65536, writable: false },
];
static BUF_TYPE: ProgramType = ProgramType {
    name: "bench_buf",
    guid: Guid::NULL,
    bpf_prog_type: 0,
    is_privileged: false,
    context: ContextDescriptor { size: 8 + 65536, data: -1, end: -1, meta: -1 },
    context_fields: BUF_FIELDS,
    section_prefixes: &[],
    specific_helpers: &[],
};

fn bench_programs(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify/bench_programs");
    let dir = repo().join("../shared/bench/progs");
    let out = std::env::temp_dir().join("bpf2sys-verify-bench");
    let _ = std::fs::create_dir_all(&out);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut sources: Vec<_> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "c")).collect();
    sources.sort();
    let options = VerifierOptions::default();
    for src in sources {
        let obj = out.join(src.file_stem().expect("stem")).with_extension("o");
        let built = std::process::Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .is_ok_and(|s| s.success());
        let Some(module) = built.then(|| load(&obj)).flatten() else { continue };
        let name = src.file_stem().expect("stem").to_string_lossy().into_owned();
        // Programs the verifier rejects (e.g. maplookup passes a number as its map) are benchmarked as well:
        // the time to a verdict is what is measured.
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| verify_program(black_box(&module), 0, &WINDOWS, &BUF_TYPE, &options).is_ok())
        });
    }
    group.finish();
}

fn synthetic_programs(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify/synthetic");
    group.sample_size(10);
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    let options = VerifierOptions::default();
    for n in [1_000usize, 10_000, 100_000] {
        let module = synthetic::module(n);
        let len = module.programs[0].instructions.len();
        let peak =
            peak_heap(|| verify_program(&module, 0, &WINDOWS, xdp, &options).expect("synthetic program verifies"));
        print_peak(&format!("synthetic {n} ({len} instructions)"), peak);
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| verify_program(black_box(&module), 0, &WINDOWS, xdp, &options).expect("verifies"))
        });
    }
    group.finish();
}

criterion_group!(benches, samples, bench_programs, synthetic_programs);
criterion_main!(benches);
