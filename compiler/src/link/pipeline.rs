//! The whole build: ELF object → verified programs → machine code → driver image.
//!
//! In: the bytes of a `clang -target bpf` object, its file name (for the C name, contract §1.1) and
//! [`BuildOptions`]. Out: the `.sys` bytes. Every program must pass [`crate::verifier::verify_program`] first —
//! the kernel never re-checks native code, so a rejected program stops the build with the verifier's
//! diagnostics and no output.

use sha2::{Digest, Sha256};

use bpf2sys_runtime_shim::RuntimeVersion;

use crate::compiled::{CompiledProgram, Target};
use crate::elf::{self, ElfError};
use crate::lower::{self, LowerError, LowerOptions, MapDataLayout};
use crate::platform::windows::WINDOWS;
use crate::verifier::{diagnostic, verify_program, Rejection, VerifierOptions};

use super::{link_driver, LinkError, LinkOptions};

/// How to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub target: Target,
    pub runtime_version: RuntimeVersion,
    pub verifier: VerifierOptions,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            target: Target::X64,
            runtime_version: RuntimeVersion::PORTABLE,
            verifier: VerifierOptions::default(),
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}: {source}")]
    Elf { file: String, source: ElfError },
    #[error("{file}: program `{program}` is in section `{section}`, which names no eBPF for Windows program type")]
    UnknownProgramType { file: String, program: String, section: String },
    #[error("{file}: {} program(s) failed verification; no driver was written\n{}", .rejections.len(), render(.rejections))]
    Unverified { file: String, rejections: Vec<Rejection> },
    #[error("{file}: {source}")]
    Lower { file: String, source: LowerError },
    #[error("{file}: {source}")]
    Link { file: String, source: LinkError },
}

fn render(rejections: &[Rejection]) -> String {
    rejections.iter().map(|r| diagnostic::render(r, false)).collect::<Vec<_>>().join("\n")
}

/// Verifies, compiles and links every program of the object.
pub fn build_driver(object: &[u8], file_name: &str, options: &BuildOptions) -> Result<Vec<u8>, BuildError> {
    let file = file_name.to_string();
    let module = elf::load(object, file_name).map_err(|source| BuildError::Elf { file: file.clone(), source })?;
    let mut rejections = Vec::new();
    for (i, p) in module.programs.iter().enumerate() {
        let (program_type, _) =
            WINDOWS.program_type_for_section(&p.section_name).ok_or_else(|| BuildError::UnknownProgramType {
                file: file.clone(),
                program: p.name.clone(),
                section: p.section_name.clone(),
            })?;
        if let Err(r) = verify_program(&module, i, &WINDOWS, program_type, &options.verifier) {
            rejections.push(r);
        }
    }
    if !rejections.is_empty() {
        return Err(BuildError::Unverified { file, rejections });
    }
    let lower_options = LowerOptions {
        target: options.target,
        map_data: if options.runtime_version.has_array_data() { MapDataLayout::V1_4 } else { MapDataLayout::V1_3 },
    };
    let isa = lower::build_isa(options.target).map_err(|source| BuildError::Lower { file: file.clone(), source })?;
    let programs: Vec<CompiledProgram> = (0..module.programs.len())
        .map(|i| lower::lower_program_with(&*isa, &module, i, &lower_options, false).map(|l| l.program))
        .collect::<Result<_, _>>()
        .map_err(|source| BuildError::Lower { file: file.clone(), source })?;
    let link_options = LinkOptions {
        target: options.target,
        runtime_version: options.runtime_version,
        elf_hash: Some(Sha256::digest(object).into()),
    };
    link_driver(&module, &programs, &link_options).map_err(|source| BuildError::Link { file, source })
}
