//! Integration-test support for bpf2sys: the Linux-side emulation of the eBPF for Windows runtime.

pub mod emulator;
