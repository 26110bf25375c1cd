//! Compiled programs as a standalone COFF object (`bpf2sys compile --emit obj`), for users who link eBPF
//! programs into their own drivers.
//!
//! In: a [`CompiledProgram`] and the ISA it was compiled for. Out: COFF object bytes written by cranelift-object,
//! plus the `.pdata`/`.xdata` sections cranelift-object does not write for Windows (toolchain-notes §1.5), built
//! from our [`crate::compiled::UnwindData`]. Each entry function is exported under its program's name with the contract §5.1
//! signature `uint64_t prog(void* context, const program_runtime_context_t* runtime_context)`; subprograms are
//! local symbols. Functions reach each other by symbol relocations; data and import targets become undefined
//! symbols (`__imp_<name>` for import slots).

use cranelift_codegen::binemit::Reloc;
use cranelift_module::{default_libcall_names, DataId, Linkage, Module, ModuleReloc, ModuleRelocTarget};
use cranelift_object::{ObjectBuilder, ObjectModule};
use object::write::{Relocation, SectionId, SymbolId};
use object::{RelocationFlags, SectionKind};

use crate::compiled::{CompiledProgram, RelocKind, RelocTarget, Target};

use super::runtime_env::RuntimeEnvironment;
use super::LowerError;

// IMAGE_REL_AMD64_ADDR32NB / IMAGE_REL_ARM64_ADDR32NB: 32-bit image-relative address, what `.pdata` holds.
const IMAGE_REL_AMD64_ADDR32NB: u16 = 0x0003;
const IMAGE_REL_ARM64_ADDR32NB: u16 = 0x0002;

fn object_error(e: impl std::fmt::Display) -> LowerError {
    LowerError::Codegen { function: String::new(), message: format!("writing the COFF object: {e}") }
}

/// Writes `programs` (compiled for `isa`) as one COFF object with `.text`, `.xdata` and `.pdata`; each program's
/// entry function is exported under its name, subprograms are local.
pub fn write_coff_object(
    isa: cranelift_codegen::isa::OwnedTargetIsa,
    object_name: &str,
    programs: &[CompiledProgram],
) -> Result<Vec<u8>, LowerError> {
    let target = super::codegen::isa_target(&*isa)?;
    let builder =
        ObjectBuilder::new(isa, object_name.as_bytes().to_vec(), default_libcall_names()).map_err(object_error)?;
    let mut module = ObjectModule::new(builder);
    let functions: Vec<(bool, &crate::compiled::CompiledFunction)> =
        programs.iter().flat_map(|p| p.functions.iter().enumerate().map(|(i, f)| (i == 0, f))).collect();

    let mut ids = Vec::with_capacity(functions.len());
    for &(entry, f) in &functions {
        let sig =
            if entry { RuntimeEnvironment::entry_signature() } else { RuntimeEnvironment::local_function_signature() };
        let linkage = if entry { Linkage::Export } else { Linkage::Local };
        ids.push(module.declare_function(&f.name, linkage, &sig).map_err(object_error)?);
    }
    let mut data_ids: Vec<(RelocTarget, DataId)> = Vec::new();
    for (&(_, f), &id) in functions.iter().zip(&ids) {
        let mut relocs = Vec::with_capacity(f.relocations.len());
        for r in &f.relocations {
            let kind = match r.kind {
                RelocKind::X64PcRel32 => Reloc::X86PCRel4,
                RelocKind::Abs64 => Reloc::Abs8,
                RelocKind::Arm64Call26 => Reloc::Arm64Call,
                other => {
                    return Err(LowerError::Codegen {
                        function: f.name.clone(),
                        message: format!(
                            "{other:?} relocations cannot be written to a COFF object by cranelift-object"
                        ),
                    })
                }
            };
            let name = match &r.target {
                RelocTarget::Function(callee) => {
                    let index =
                        functions.iter().position(|(_, g)| &g.name == callee).ok_or_else(|| LowerError::Codegen {
                            function: f.name.clone(),
                            message: format!("call of unknown function {callee}"),
                        })?;
                    ModuleRelocTarget::from(ids[index])
                }
                other => {
                    let data = match data_ids.iter().find(|(t, _)| t == other) {
                        Some((_, d)) => *d,
                        None => {
                            let symbol = match other {
                                RelocTarget::Data(name) => name.clone(),
                                RelocTarget::ImportSlot { name, .. } => format!("__imp_{name}"),
                                RelocTarget::Function(_) => unreachable!("handled above"),
                            };
                            let d =
                                module.declare_data(&symbol, Linkage::Import, false, false).map_err(object_error)?;
                            data_ids.push((other.clone(), d));
                            d
                        }
                    };
                    ModuleRelocTarget::from(data)
                }
            };
            relocs.push(ModuleReloc { offset: r.offset, kind, name, addend: r.addend });
        }
        module.define_function_bytes(id, f.alignment as u64, &f.code, &relocs).map_err(object_error)?;
    }

    let mut product = module.finish();
    let symbols: Vec<SymbolId> = ids.iter().map(|&id| product.function_symbol(id)).collect();
    let obj = &mut product.object;
    let xdata = obj.add_section(Vec::new(), b".xdata".to_vec(), SectionKind::ReadOnlyData);
    let pdata = obj.add_section(Vec::new(), b".pdata".to_vec(), SectionKind::ReadOnlyData);
    let xdata_symbol = obj.section_symbol(xdata);
    let addr32nb = match target {
        Target::X64 => IMAGE_REL_AMD64_ADDR32NB,
        Target::Arm64 => IMAGE_REL_ARM64_ADDR32NB,
    };
    let relocate = |obj: &mut object::write::Object, section: SectionId, offset: u64, symbol: SymbolId, addend: i64| {
        obj.add_relocation(
            section,
            Relocation { offset, symbol, addend, flags: RelocationFlags::Coff { typ: addr32nb } },
        )
        .map_err(object_error)
    };
    for (&(_, f), &symbol) in functions.iter().zip(&symbols) {
        for u in f.unwind.fragments() {
            let xdata_offset = obj.append_section_data(xdata, &u.record, 4);
            match target {
                // RUNTIME_FUNCTION: BeginAddress, EndAddress, UnwindInfoAddress.
                Target::X64 => {
                    let at = obj.append_section_data(pdata, &[0; 12], 4);
                    relocate(obj, pdata, at, symbol, i64::from(u.start))?;
                    relocate(obj, pdata, at + 4, symbol, i64::from(u.end))?;
                    relocate(obj, pdata, at + 8, xdata_symbol, xdata_offset as i64)?;
                }
                // ARM64 RUNTIME_FUNCTION: BeginAddress, UnwindData (an .xdata RVA: low two bits 0 = not packed).
                Target::Arm64 => {
                    let at = obj.append_section_data(pdata, &[0; 8], 4);
                    relocate(obj, pdata, at, symbol, i64::from(u.start))?;
                    relocate(obj, pdata, at + 4, xdata_symbol, xdata_offset as i64)?;
                }
            }
        }
    }
    product.emit().map_err(object_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{AluOp, Instruction as I, Operand, Reg, Width};
    use crate::lower::{build_isa, lower_unverified_for_testing, LowerOptions};
    use crate::program::functions_from_calls;
    use crate::program::{Module, Program};

    fn module_with_call() -> Module {
        let instructions = vec![
            I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R6, src: Operand::Reg(Reg::R1) },
            I::Load { size: crate::isa::MemSize::DW, sign_extend: false, dst: Reg::R7, src: Reg::R1, offset: 0 },
            I::Load { size: crate::isa::MemSize::DW, sign_extend: false, dst: Reg::R8, src: Reg::R1, offset: 8 },
            I::Load { size: crate::isa::MemSize::DW, sign_extend: false, dst: Reg::R9, src: Reg::R1, offset: 16 },
            I::CallLocal { offset: 5 },
            I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Reg(Reg::R6) },
            I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Reg(Reg::R7) },
            I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Reg(Reg::R8) },
            I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Reg(Reg::R9) },
            I::Exit,
            I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R0, src: Operand::Imm(2) },
            I::Exit,
        ];
        Module {
            name: "t".into(),
            programs: vec![Program {
                name: "prog".into(),
                section_name: "xdp".into(),
                functions: functions_from_calls(&instructions),
                instructions,
                line_info: vec![],
            }],
            ..Module::default()
        }
    }

    /// Decodes the object with `llvm-readobj --unwind` (an independent unwind parser) when it is installed.
    fn readobj_unwind(bytes: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.obj");
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("llvm-readobj").arg("--unwind").arg(&path).output().ok()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(String::from_utf8(out.stdout).unwrap())
    }

    #[test]
    fn x64_object_exports_entry_and_carries_unwind_info() {
        let module = module_with_call();
        let compiled = lower_unverified_for_testing(&module, 0, &LowerOptions::new(Target::X64)).unwrap();
        let fragments: usize = compiled.functions.iter().map(|f| f.unwind.fragments().len()).sum();
        let bytes = write_coff_object(build_isa(Target::X64).unwrap(), "t", &[compiled]).unwrap();
        if std::env::var_os("BPF2SYS_DUMP_OBJ").is_some() {
            std::fs::write("/tmp/bpf2sys-unwind-test.obj", &bytes).unwrap();
        }
        let file = goblin::pe::Coff::parse(&bytes).unwrap();
        let names: Vec<String> = file.sections.iter().map(|s| s.name().unwrap_or("").to_string()).collect();
        assert!(names.iter().any(|n| n == ".pdata") && names.iter().any(|n| n == ".xdata"), "{names:?}");
        if let Some(text) = readobj_unwind(&bytes) {
            // One RUNTIME_FUNCTION per unwind fragment.
            assert_eq!(text.matches("RuntimeFunction {").count(), fragments, "{text}");
            assert!(text.contains("PUSH_NONVOL reg=RBP"), "{text}");
            assert!(text.contains("StartAddress: prog"), "{text}");
        }
    }

    #[test]
    fn arm64_object_carries_xdata() {
        let module = module_with_call();
        let compiled = lower_unverified_for_testing(&module, 0, &LowerOptions::new(Target::Arm64)).unwrap();
        let fragments: usize = compiled.functions.iter().map(|f| f.unwind.fragments().len()).sum();
        let bytes = write_coff_object(build_isa(Target::Arm64).unwrap(), "t", &[compiled]).unwrap();
        if let Some(text) = readobj_unwind(&bytes) {
            assert_eq!(text.matches("RuntimeFunction {").count(), fragments, "{text}");
            assert!(text.contains("end"), "{text}");
        }
    }
}
