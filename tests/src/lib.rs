//! Integration-test support: the Linux-side emulation of the eBPF for Windows runtime, the conformance harness
//! and the benchmarks.

pub mod bench;
pub mod conformance;
pub mod native;
