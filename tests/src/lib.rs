//! Integration-test support for bpf2sys: the conformance harness, native-code runner, and the Linux-side
//! emulation of the eBPF for Windows runtime.
pub mod conformance;
pub mod emulator;
pub mod native;
