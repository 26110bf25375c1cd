//! bpf2sys: compiles eBPF ELF objects into verified, HVCI-compatible, signed Windows kernel drivers.
//!
//! The pipeline, one module per stage; each stage talks to its neighbours only:
//!
//! ```text
//! ELF object ─► elf (front end) ─► program::Module ─► verifier ─► lower (Cranelift) ─► compiled::CompiledProgram
//!                                                                                       │
//!                                  runtime shim (DriverEntry, NMR, metadata tables) ────┤
//!                                                                                       ▼
//!                                                       link (PE32+ driver image) ─► .sys ─► signing
//! ```
//!
//! [`driver`] runs the stages (a [`driver::Session`]: load → verify → lower → link → sign → lint) for every entry
//! point; [`batch`] runs one build per object on every core, results in input order. Stage boundaries are types:
//! the front end produces a [`program::Module`], the verifier a [`verifier::Verified`] per program (the only input
//! lowering accepts), lowering a [`compiled::CompiledProgram`].
//!
//! Shared vocabulary: [`isa`] (RFC 9669 instructions and semantics), [`platform`] (program types, contexts,
//! helpers as data), [`program`] (the front end's output), [`compiled`] (the backend's output). See
//! ARCHITECTURE.md for who may import whom.
//!
//! [`cli::keys`] is the one parser of the signing options, shared by the `bpf2sys` binary (`sign`, `build`) and
//! `cargo xtask build-driver`; it is command-line edge code (clap arguments, `anyhow` errors) and no stage uses it.

pub mod batch;
/// Command-line argument types shared by the `bpf2sys` binary and the project's `cargo xtask`.
pub mod cli {
    pub mod keys;
}
pub mod compiled;
pub mod driver;
pub mod elf;
pub mod interp;
pub mod isa;
pub mod link;
pub mod lower;
pub mod platform;
pub mod program;
pub mod verifier;
