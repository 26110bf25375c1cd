//! Integration-test support for bpf2sys: the bpf_conformance and PREVAIL suite runners, the native-code runners
//! (x64 in-process, ARM64 in an instruction emulator),
//! the emulated eBPF for Windows runtime with the Windows platform and the AArch64 backend ([`emulator`]), the
//! Windows virtual unwinders that check every function's unwind data at every instruction offset, and the
//! benchmarks.
pub mod arm64;
pub mod bench;
pub mod conformance;
pub mod emulator;
pub mod generate;
pub mod native;
pub mod opaque;
pub mod prevail;
pub mod soundness;
pub mod support;
pub mod unwind;
