//! Cranelift lowering: verified eBPF programs to Windows x64 / ARM64 machine code.
//!
//! In: a [`crate::program::Program`] (already accepted by the verifier) and its [`crate::program::Module`].
//! Out: a [`crate::compiled::CompiledProgram`] — per function machine code, relocations and Windows unwind data —
//! for the driver linker.
//!
//! - [`translate`] turns eBPF instructions into Cranelift IR (the translation itself is documented there);
//! - [`codegen`] compiles any Cranelift IR function (eBPF functions and the runtime shim's functions alike) into a
//!   [`crate::compiled::CompiledFunction`] and writes correct Windows unwind data.

pub mod codegen;

/// Why lowering failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error("cannot configure Cranelift: {0}")]
    Isa(String),
    #[error("code generation for function `{function}` failed: {message}")]
    Codegen { function: String, message: String },
    #[error("program `{program}`, slot {slot}: {message}")]
    Unsupported { program: String, slot: usize, message: String },
}
