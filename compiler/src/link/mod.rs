//! The driver linker: compiled programs + the runtime shim → a PE32+ kernel driver image.
//!
//! In: the front end's [`Module`] and the backend's [`CompiledProgram`]s (one per entry program), plus
//! [`LinkOptions`]. Out: the `.sys` bytes ([`link_driver`]).
//!
//! Steps: describe the module in the shim's terms ([`describe_module`]: map entries, helper tables, GUIDs and
//! the program-info hash from the platform tables, contract §2.2/§3.2), build the shim
//! ([`bpf2sys_runtime_shim::build`]), compile its IR functions with the backend
//! ([`crate::lower::codegen::compile_ir_function`]), then place everything with [`image::write_image`].
//! [`lint`] checks finished images against the HVCI and PE rules (driver-image-and-signing.md §5.2).

pub mod image;
pub mod lint;

use cranelift_codegen::isa::TargetIsa;

use bpf2sys_runtime_shim as shim;
use shim::{DataSection, ModuleDescription, RuntimeVersion, Symbol};

use crate::compiled::{CompiledProgram, RelocTarget, Target};
use crate::lower::codegen::{compile_ir_function, SymbolTable};
use crate::lower::LowerError;
use crate::platform::{windows::WINDOWS, Platform, ProgramType};
use crate::program::{Module, Pinning, Program};

use image::{DataItem, DataSectionKind, ImageInput};

/// Why linking failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("program `{program}` is in ELF section `{section}`, which names no known program type")]
    UnknownProgramType { program: String, section: String },
    #[error("program `{program}` uses helper {id}, which program type `{program_type}` does not provide")]
    UnknownHelper { program: String, id: u32, program_type: String },
    #[error("program `{program}` calls kfunc `{name}`, {what}")]
    Kfunc { program: String, name: String, what: String },
    #[error("program `{0}` has no compiled code")]
    MissingCompiledProgram(String),
    #[error("compiled program `{0}` has no entry function")]
    EmptyCompiledProgram(String),
    #[error("map {map_index} referenced by {what} does not exist")]
    BadMapIndex { what: String, map_index: usize },
    #[error(transparent)]
    Shim(#[from] shim::ShimError),
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error("symbol `{0}` is defined twice")]
    DuplicateSymbol(String),
    #[error("undefined symbol `{0}`")]
    UndefinedSymbol(String),
    #[error("PE section name `{0}` must be 1..8 bytes")]
    SectionName(String),
    #[error("function `{function}`: relocation at offset {offset:#x} is out of range or out of bounds")]
    BadRelocation { function: String, offset: u32 },
    #[error("data object `{object}`: relocation at offset {offset:#x} is out of bounds")]
    BadDataRelocation { object: String, offset: u32 },
    #[error("function `{0}` carries unwind data for the other architecture")]
    UnwindMismatch(String),
    #[error("internal linker error: {0}")]
    Internal(String),
}

/// How to link.
#[derive(Clone, Copy, Debug)]
pub struct LinkOptions {
    pub target: Target,
    pub runtime_version: RuntimeVersion,
    /// SHA-256 of the source ELF, reported by the metadata `hash` callback.
    pub elf_hash: Option<[u8; 32]>,
    /// Program type of every program (`build --type`); `None` selects it by each program's section name.
    pub program_type: Option<&'static ProgramType>,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            target: Target::X64,
            runtime_version: RuntimeVersion::PORTABLE,
            elf_hash: None,
            program_type: None,
        }
    }
}

/// A program's `btf_resolved_functions` table in the module-wide slot order ([`Module::kfunc_table`]), with
/// unused slots blank, and the prototypes of the kfuncs it calls for the program-info hash (§3.2 step 8).
fn btf_function_table(
    module: &Module,
    program: &crate::program::Program,
    platform: &Platform,
) -> Result<(Vec<shim::BtfFunctionSlot>, Vec<shim::HashedBtfFunction>), LinkError> {
    let used = program.kfunc_ids();
    if used.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut slots = Vec::new();
    let mut hashed = Vec::new();
    for k in module.kfunc_table() {
        if !used.contains(&k.id) {
            slots.push(shim::BtfFunctionSlot { name: String::new(), module_guid: [0; 16] });
            continue;
        }
        let err =
            |what: &str| LinkError::Kfunc { program: program.name.clone(), name: k.name.clone(), what: what.into() };
        let guid = k.module_guid.ok_or_else(|| err("which names no provider module"))?;
        let proto = platform.kfunc(guid, &k.name).ok_or_else(|| err("which the platform's kfunc table lacks"))?;
        slots.push(shim::BtfFunctionSlot { name: k.name.clone(), module_guid: guid.to_bytes() });
        hashed.push(shim::HashedBtfFunction {
            module_guid: guid.to_bytes(),
            name: k.name.clone(),
            return_type: proto.proto.ret as u32,
            arguments: proto.proto.args.map(|a| a as u32),
            flags: 0,
        });
    }
    Ok((slots, hashed))
}

/// The module in the shim's terms (contract §2.2), with the program-info hash of every program (§3.2).
pub fn describe_module(
    module: &Module,
    programs: &[CompiledProgram],
    platform: &Platform,
    options: &LinkOptions,
) -> Result<ModuleDescription, LinkError> {
    let map_name = |what: &str, index: usize| -> Result<String, LinkError> {
        module
            .maps
            .get(index)
            .map(|m| m.name.clone())
            .ok_or_else(|| LinkError::BadMapIndex { what: what.to_string(), map_index: index })
    };
    let maps = module
        .maps
        .iter()
        .map(|m| shim::MapDescription {
            name: m.name.clone(),
            map_type: m.map_type.0,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            inner_map_idx: m.inner_map_index.unwrap_or(0) as u32,
            pinning: match m.pinning {
                Pinning::None => 0,
                Pinning::ByName => 1,
            },
            id: m.id,
            inner_id: m.inner_id,
        })
        .collect();
    let described = module
        .programs
        .iter()
        .map(|p| describe_program(module, p, programs, platform, options))
        .collect::<Result<Vec<_>, _>>()?;
    let map_initial_values = module
        .map_initial_values
        .iter()
        .map(|iv| {
            Ok(shim::InitialValuesDescription {
                map_name: map_name("initial values", iv.map_index)?,
                values: iv.values.clone(),
            })
        })
        .collect::<Result<_, LinkError>>()?;
    let global_sections = module
        .global_sections
        .iter()
        .map(|g| {
            Ok(shim::GlobalSectionDescription {
                map_name: map_name(&g.section_name, g.map_index)?,
                initial_data: g.initial_data.clone(),
            })
        })
        .collect::<Result<_, LinkError>>()?;
    Ok(ModuleDescription {
        maps,
        programs: described,
        map_initial_values,
        global_sections,
        runtime_version: options.runtime_version,
        elf_hash: options.elf_hash,
    })
}

/// One program in the shim's terms: its entry symbol, helper and BTF-function tables, maps, type GUIDs and the
/// program-info hash (contract §2.2, §3.2).
fn describe_program(
    module: &Module,
    p: &Program,
    programs: &[CompiledProgram],
    platform: &Platform,
    options: &LinkOptions,
) -> Result<shim::ProgramDescription, LinkError> {
    let compiled = programs
        .iter()
        .find(|c| c.program_name == p.name)
        .ok_or_else(|| LinkError::MissingCompiledProgram(p.name.clone()))?;
    let entry = compiled.functions.first().ok_or_else(|| LinkError::EmptyCompiledProgram(p.name.clone()))?;
    let forced = options.program_type.map(|pt| (pt, pt.section_prefixes.first().map(|sp| sp.attach_type)));
    let (program_type, attach_type) = match forced {
        Some((pt, attach)) => (pt, attach),
        None => platform.program_type_for_section(&p.section_name).map(|(pt, at)| (pt, Some(at))).ok_or_else(|| {
            LinkError::UnknownProgramType { program: p.name.clone(), section: p.section_name.clone() }
        })?,
    };
    let (btf_functions, hashed_btf_functions) = btf_function_table(module, p, platform)?;
    let mut helpers = Vec::new();
    let mut hashed = Vec::new();
    for &id in &compiled.helper_ids {
        if id == 0 {
            helpers.push(shim::HelperSlot { id: 0, name: String::new() });
            continue;
        }
        let proto = platform.helper(program_type, id).ok_or_else(|| LinkError::UnknownHelper {
            program: p.name.clone(),
            id,
            program_type: program_type.name.to_string(),
        })?;
        helpers.push(shim::HelperSlot { id, name: proto.name.to_string() });
        hashed.push(shim::HashedHelper {
            id,
            name: proto.name.to_string(),
            return_type: proto.ret as u32,
            arguments: proto.args.map(|a| a as u32),
            reallocate_packet: proto.reallocate_packet,
        });
    }
    let hash = shim::program_info_hash(&shim::ProgramInfoHashInput {
        type_name: program_type.name.to_string(),
        context_descriptor: [
            program_type.context.size,
            program_type.context.data,
            program_type.context.end,
            program_type.context.meta,
        ],
        program_type: program_type.guid.to_bytes(),
        bpf_prog_type: program_type.bpf_prog_type,
        is_privileged: program_type.is_privileged,
        helpers: hashed,
        btf_functions: hashed_btf_functions,
    });
    let instruction_count = p.functions.first().map(|f| f.end - f.start).unwrap_or(p.instructions.len()) as u64;
    Ok(shim::ProgramDescription {
        program_name: p.name.clone(),
        section_name: p.section_name.clone(),
        function_symbol: entry.name.clone(),
        helpers,
        btf_functions,
        referenced_maps: compiled.referenced_maps.clone(),
        instruction_count,
        program_type: program_type.guid.to_bytes(),
        expected_attach_type: attach_type.map_or([0; 16], |at| at.guid.to_bytes()),
        program_info_hash: Some(hash),
    })
}

fn reloc_target(s: &Symbol) -> RelocTarget {
    match s {
        Symbol::Function(n) => RelocTarget::Function(n.clone()),
        Symbol::Data(n) => RelocTarget::Data(n.clone()),
        Symbol::Import { dll, name } => RelocTarget::ImportSlot { dll: dll.clone(), name: name.clone() },
    }
}

/// Links `programs` (compiled for `options.target`) and the runtime shim, compiled with `isa`, into a driver
/// image.
pub fn link_driver(
    isa: &dyn TargetIsa,
    module: &Module,
    programs: &[CompiledProgram],
    options: &LinkOptions,
) -> Result<Vec<u8>, LinkError> {
    image::write_image(&image_input(isa, module, programs, options)?)
}

/// Everything [`link_driver`] places, before layout: the compiled shim and program functions with their PE
/// sections, and the shim's data objects.
pub fn image_input(
    isa: &dyn TargetIsa,
    module: &Module,
    programs: &[CompiledProgram],
    options: &LinkOptions,
) -> Result<ImageInput, LinkError> {
    let description = describe_module(module, programs, &WINDOWS, options)?;
    let driver_shim = shim::build(&description, isa.frontend_config())?;

    let mut functions = Vec::new();
    for f in driver_shim.functions {
        let mut symbols = SymbolTable::new();
        for s in &f.externals {
            symbols.declare(reloc_target(s));
        }
        functions.push((".text".to_string(), compile_ir_function(isa, &f.name, f.function, &symbols)?));
    }
    // Entry functions go to their program's PE section (contract §4.1); subprograms stay in `.text`.
    for (symbol, pe_section) in &driver_shim.program_sections {
        let compiled = programs
            .iter()
            .find(|c| c.functions.first().is_some_and(|f| &f.name == symbol))
            .ok_or_else(|| LinkError::UndefinedSymbol(symbol.clone()))?;
        functions.push((pe_section.clone(), compiled.functions[0].clone()));
    }
    for (symbol, _) in &driver_shim.program_sections {
        let compiled = programs.iter().find(|c| &c.functions[0].name == symbol).expect("found above");
        for sub in &compiled.functions[1..] {
            // Two programs calling the same subprogram carry identical copies under one name: place it once.
            if let Some((_, existing)) = functions.iter().find(|(_, f)| f.name == sub.name) {
                if existing != sub {
                    return Err(LinkError::DuplicateSymbol(sub.name.clone()));
                }
                continue;
            }
            functions.push((".text".to_string(), sub.clone()));
        }
    }
    let data = driver_shim
        .data
        .into_iter()
        .map(|d| DataItem {
            section: match d.section {
                DataSection::Rdata => DataSectionKind::Rdata,
                DataSection::Data => DataSectionKind::Data,
                DataSection::Maps => DataSectionKind::Named("maps"),
                DataSection::Programs => DataSectionKind::Named("programs"),
            },
            relocations: d.relocations.iter().map(|r| (r.offset, reloc_target(&r.target), r.addend)).collect(),
            name: d.name,
            alignment: d.alignment,
            bytes: d.bytes,
        })
        .collect();
    Ok(ImageInput {
        target: options.target,
        functions,
        data,
        entry: shim::DRIVER_ENTRY.to_string(),
        section_alignment: image::SECTION_ALIGNMENT,
    })
}
