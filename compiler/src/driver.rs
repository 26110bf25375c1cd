//! The compiler driver: one [`Session`] runs every stage, for every entry point (the CLI, `cargo xtask
//! build-driver`, the benchmarks and the tests).
//!
//! ```text
//! object bytes ─load─► Module ─verify─► [Verified] ─lower─► [CompiledProgram] ─link─► .sys ─sign─► .sys ─lint─► report
//! ```
//!
//! In: the bytes of a `clang -target bpf` object and its file name (the C name, contract §1.1). Out: the driver
//! image, unsigned ([`Session::build`]) or signed ([`Session::sign`]), and its lint report ([`Session::lint`]).
//! Each stage is a method taking the previous stage's output type, so a caller can stop after any stage
//! (`compile --emit` stops after `lower`, `verify` after `verify`). The session owns what every stage shares: the
//! platform tables, the target, the runtime version the module reports, the verifier options and one Cranelift
//! ISA (built once, used by lowering and by the linker for the runtime shim).
//!
//! Every program must pass the verifier before it is lowered — the kernel never re-checks native code — and
//! [`crate::lower`] takes only [`Verified`] programs, so a rejected program stops the build with the verifier's
//! diagnostics and no output.

use cranelift_codegen::isa::OwnedTargetIsa;
use sha2::{Digest, Sha256};

use bpf2sys_runtime_shim::RuntimeVersion;
use bpf2sys_signing::{SignOptions, Signer, SigningError};

use crate::compiled::{CompiledProgram, Target};
use crate::elf::{self, ElfError};
use crate::link::lint::{lint_driver, LintReport, NotAnImage};
use crate::link::{link_driver, LinkError, LinkOptions};
use crate::lower::{self, LowerError, LowerOptions, LoweredProgram, MapDataLayout};
use crate::platform::windows::WINDOWS;
use crate::platform::{Platform, PlatformError, ProgramType};
use crate::program::{CoreRelocations, Module, RefusedProgram};
use crate::verifier::{diagnostic, verify_program, Rejection, Verified, VerifierOptions};

/// What a session builds for.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub target: Target,
    /// The version the module reports to the runtime (contract §2.4); it also selects the `map_data` stride.
    pub runtime_version: RuntimeVersion,
    pub verifier: VerifierOptions,
    /// Program type (descriptor name, e.g. `sample`) for every program, like bpf2c's `--type`; `None` selects
    /// each program's type by its ELF section name.
    pub program_type: Option<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            target: Target::X64,
            runtime_version: RuntimeVersion::PORTABLE,
            verifier: VerifierOptions::default(),
            program_type: None,
        }
    }
}

/// The runtime version a build of `object` should target when the user names none: the portable 1.3.0, or 1.5.0
/// (the first with BTF-resolved functions in the program entry, contract §2.2) when a program calls a kfunc.
/// An object that does not load gets the portable version; the build itself then reports why.
pub fn default_runtime_version(object: &[u8], file_name: &str) -> RuntimeVersion {
    match elf::load(object, file_name) {
        Ok(m) if m.programs.iter().any(|p| !p.kfunc_ids().is_empty()) => RuntimeVersion::PROGRAM_ENTRY_V1,
        _ => RuntimeVersion::PORTABLE,
    }
}

/// A built driver, and the programs of the object it leaves out.
#[derive(Debug)]
pub struct BuiltDriver {
    pub image: Vec<u8>,
    /// Programs the front end refused (e.g. they call an undefined symbol); the others are in the image.
    pub left_out: Vec<RefusedProgram>,
    /// Programs with CO-RE relocations, built as compiled (the relocations are not applied).
    pub core_relocations: Vec<CoreRelocations>,
}

/// Why a stage failed. Every variant names the input file.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{file}: {source}")]
    Elf { file: String, source: ElfError },
    #[error(
        "{file}: program `{program}` is in section `{section}`, which names no program type of the {platform} platform"
    )]
    UnknownProgramType { file: String, program: String, section: String, platform: &'static str },
    #[error("{file}: `{name}` is not a program type of the {platform} platform (known: {known})")]
    UnknownProgramTypeName { file: String, name: String, platform: &'static str, known: String },
    #[error("{file}: {source}")]
    Platform { file: String, source: PlatformError },
    #[error("{file}: no program can be built\n{}", render_refused(.refused))]
    NoBuildablePrograms { file: String, refused: Vec<RefusedProgram> },
    #[error("{file}: {} program(s) failed verification; no driver was written\n{}", .rejections.len(), render(.rejections))]
    Unverified { file: String, rejections: Vec<Rejection> },
    #[error("{file}: {source}")]
    Lower { file: String, source: LowerError },
    #[error("{file}: {source}")]
    Link { file: String, source: LinkError },
    #[error("{file}: cannot sign the driver: {source}")]
    Sign { file: String, source: SigningError },
    #[error("cannot configure code generation: {0}")]
    Isa(LowerError),
}

fn render_refused(refused: &[RefusedProgram]) -> String {
    refused
        .iter()
        .map(|r| format!("program `{}` (section `{}`): {}", r.name, r.section_name, r.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

fn render(rejections: &[Rejection]) -> String {
    rejections.iter().map(|r| diagnostic::render(r, false)).collect::<Vec<_>>().join("\n")
}

/// The driver's shared state; see the module documentation.
pub struct Session {
    platform: &'static Platform,
    options: SessionOptions,
    isa: OwnedTargetIsa,
}

impl Session {
    /// A session building eBPF for Windows drivers (the only platform a `.sys` is for).
    pub fn new(options: SessionOptions) -> Result<Session, DriverError> {
        let isa = lower::build_isa(options.target).map_err(DriverError::Isa)?;
        Ok(Session { platform: &WINDOWS, options, isa })
    }

    pub fn platform(&self) -> &'static Platform {
        self.platform
    }

    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    pub fn target(&self) -> Target {
        self.options.target
    }

    /// The session's Cranelift ISA.
    pub fn isa(&self) -> &dyn cranelift_codegen::isa::TargetIsa {
        &*self.isa
    }

    /// A shared handle to the session's ISA, for writers that keep one (the COFF object writer).
    pub fn shared_isa(&self) -> OwnedTargetIsa {
        self.isa.clone()
    }

    /// Stage 1: the front end, with the platform's conventions, and the platform's check that its runtime can
    /// create every map (an unknown map type would compile into a driver the runtime refuses).
    pub fn load(&self, object: &[u8], file_name: &str) -> Result<Module, DriverError> {
        let file = file_name.to_string();
        let module = elf::load_with(object, file_name, self.platform.conventions)
            .map_err(|source| DriverError::Elf { file: file.clone(), source })?;
        if module.programs.is_empty() && !module.refused_programs.is_empty() {
            return Err(DriverError::NoBuildablePrograms { file, refused: module.refused_programs });
        }
        self.platform.check_maps(&module.maps).map_err(|source| DriverError::Platform { file, source })?;
        Ok(module)
    }

    /// The program type `--type` forces on every program, if any.
    fn forced_program_type(&self, file: &str) -> Result<Option<&'static ProgramType>, DriverError> {
        let Some(name) = &self.options.program_type else { return Ok(None) };
        let platform = self.platform;
        platform.program_type_by_name(name).map(Some).ok_or_else(|| DriverError::UnknownProgramTypeName {
            file: file.to_string(),
            name: name.clone(),
            platform: platform.name,
            known: platform.program_types.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// Stage 2: verifies every program of `module` as the program type its section names. All rejections are
    /// collected, so one run reports every unsafe program.
    pub fn verify<'m>(&self, file: &str, module: &'m Module) -> Result<Vec<Verified<'m>>, DriverError> {
        self.verify_selected(file, module, &(0..module.programs.len()).collect::<Vec<_>>())
    }

    /// [`Session::verify`] for the programs at `selected` — and, when the module has subprograms, every other
    /// program too, since lowering then needs the whole module (its helper table is module-wide, contract §5.2).
    pub fn verify_selected<'m>(
        &self,
        file: &str,
        module: &'m Module,
        selected: &[usize],
    ) -> Result<Vec<Verified<'m>>, DriverError> {
        let module_has_subprograms = module.programs.iter().any(|p| p.functions.len() > 1);
        let forced = self.forced_program_type(file)?;
        let mut verified = Vec::with_capacity(module.programs.len());
        let mut rejections = Vec::new();
        for (i, p) in module.programs.iter().enumerate() {
            if !module_has_subprograms && !selected.contains(&i) {
                continue;
            }
            let by_section = || self.platform.program_type_for_section(&p.section_name).map(|(pt, _)| pt);
            let program_type = forced.or_else(by_section).ok_or_else(|| DriverError::UnknownProgramType {
                file: file.to_string(),
                program: p.name.clone(),
                section: p.section_name.clone(),
                platform: self.platform.name,
            })?;
            match verify_program(module, i, self.platform, program_type, &self.options.verifier) {
                Ok(v) => verified.push(v),
                Err(r) => rejections.push(r),
            }
        }
        if !rejections.is_empty() {
            return Err(DriverError::Unverified { file: file.to_string(), rejections });
        }
        Ok(verified)
    }

    /// How this session lowers: its target and the `map_data` layout of its runtime version.
    pub fn lower_options(&self) -> LowerOptions {
        LowerOptions { target: self.options.target, map_data: MapDataLayout::for_version(self.options.runtime_version) }
    }

    /// Stage 3: machine code for every verified program of one module.
    pub fn lower(&self, file: &str, programs: &[Verified]) -> Result<Vec<CompiledProgram>, DriverError> {
        Ok(self.lower_with_text(file, programs, false)?.into_iter().map(|l| l.program).collect())
    }

    /// [`Session::lower`], keeping Cranelift IR and the disassembly of the shipped bytes when `keep_text`.
    pub fn lower_with_text(
        &self,
        file: &str,
        programs: &[Verified],
        keep_text: bool,
    ) -> Result<Vec<LoweredProgram>, DriverError> {
        lower::lower_module(self.isa(), programs, &self.lower_options(), keep_text)
            .map_err(|source| DriverError::Lower { file: file.to_string(), source })
    }

    /// Stage 4: links the compiled programs and the runtime shim into a driver image. `object` (the ELF bytes) is
    /// hashed into the module's metadata (`hash` callback, contract §2.2).
    pub fn link(
        &self,
        file: &str,
        module: &Module,
        programs: &[CompiledProgram],
        object: Option<&[u8]>,
    ) -> Result<Vec<u8>, DriverError> {
        let options = LinkOptions {
            target: self.options.target,
            runtime_version: self.options.runtime_version,
            elf_hash: object.map(|o| Sha256::digest(o).into()),
            program_type: self.forced_program_type(file)?,
        };
        link_driver(self.isa(), module, programs, &options)
            .map_err(|source| DriverError::Link { file: file.to_string(), source })
    }

    /// load → verify → lower → link: the unsigned driver image for `object`.
    pub fn build(&self, object: &[u8], file_name: &str) -> Result<Vec<u8>, DriverError> {
        self.build_report(object, file_name).map(|b| b.image)
    }

    /// [`Session::build`], also reporting the programs the front end left out (they reach an undefined symbol).
    pub fn build_report(&self, object: &[u8], file_name: &str) -> Result<BuiltDriver, DriverError> {
        let module = self.load(object, file_name)?;
        let verified = self.verify(file_name, &module)?;
        let programs = self.lower(file_name, &verified)?;
        let image = self.link(file_name, &module, &programs, Some(object))?;
        Ok(BuiltDriver {
            image,
            left_out: module.refused_programs.clone(),
            core_relocations: module.core_relocations.clone(),
        })
    }

    /// Stage 5: embeds an Authenticode signature (driver-image-and-signing.md §3).
    pub fn sign(
        &self,
        file_name: &str,
        image: &[u8],
        signer: &Signer,
        options: &SignOptions,
    ) -> Result<Vec<u8>, DriverError> {
        bpf2sys_signing::sign_pe(image, signer, options)
            .map_err(|source| DriverError::Sign { file: file_name.to_string(), source })
    }

    /// Stage 6: the static lint of a finished image: HVCI and PE rules H1–H7, P1–P11 and the signature rules
    /// S1–S7 (driver-image-and-signing.md §5.2), the signature verified once for all seven.
    pub fn lint(&self, image: &[u8]) -> Result<LintReport, NotAnImage> {
        lint_driver(image)
    }
}

/// Builds one object with a fresh [`Session`]: load → verify → lower → link, the unsigned driver image.
pub fn build_driver(object: &[u8], file_name: &str, options: &SessionOptions) -> Result<Vec<u8>, DriverError> {
    Session::new(options.clone())?.build(object, file_name)
}
