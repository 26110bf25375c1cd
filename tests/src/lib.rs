//! Integration-test support: the Linux-side emulation of the eBPF for Windows runtime and the benchmarks.

pub mod bench;
pub mod native;
