//! Benchmarks of generated code against native C and other eBPF engines, and compile latency
//! (`cargo xtask bench`; method in ../shared/docs/benchmarks.md).
//!
//! In: the programs and expected results in `samples/bench/`, the C host pieces next to this module.
//! Out: measurements that `xtask bench` turns into BENCHMARKS.md. Peers that are not part of bpf2sys (rbpf)
//! are driven from the xtask so that only it depends on them.
//!
//! Helpers are calls into the runtime, never part of a program: the native baseline links each program with the
//! host instead of compiling them together, so clang cannot inline a helper, and every engine that runs machine
//! code calls the baseline's own helper code and tail-call loop ([`host_c`]; for `maplookup`, the fixed copy of
//! `bench_lookup` in [`input::machine_code`]). The rule and its reasons: `samples/bench/README.md`.

pub mod batch;
pub mod compile;
pub mod engines;
pub mod generated;
pub mod host_c;
pub mod input;
pub mod maps;
pub mod native_c;
pub mod programs;
pub mod report;
pub mod runtime_programs;
pub mod timing;
