//! Windows unwind data written from the machine code: x64 `UNWIND_INFO` ([`x64`]) and ARM64 `.xdata`
//! ([`arm64`]).
//!
//! In: a compiled function's code bytes and where its prologue ends (plus, on x64, Cranelift's record of the
//! prologue's register saves). Out: [`UnwindFragment`]s — one `.pdata` entry each — that let the Windows unwinder
//! (`RtlVirtualUnwind`) recover the caller's stack pointer, return address and callee-saved registers at every
//! instruction of the function: in the prologue, the body and every epilogue. A function is split into several
//! fragments where one record cannot describe every offset (see each module). `tests/src/unwind` checks this by
//! unwinding every function of every sample driver at every offset.

pub mod arm64;
pub mod x64;

pub use crate::compiled::UnwindFragment;
