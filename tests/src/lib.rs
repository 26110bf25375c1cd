//! Integration-test support: the Linux-side emulation of the eBPF for Windows runtime, the conformance harness,
//! the PREVAIL suite runner and the benchmarks.

pub mod bench;
pub mod conformance;
pub mod native;
pub mod prevail;
