//! Cranelift IR function → [`CompiledFunction`]: machine code, relocations and Windows unwind data.
//!
//! In: a Cranelift IR [`Function`] (built by the eBPF lowering in [`super::translate`] or by the runtime shim) and
//! the [`SymbolTable`] that gave meaning to its external names. Out: a [`CompiledFunction`] the driver linker places
//! into `.text`, with `.pdata`/`.xdata` built from [`UnwindData`].
//!
//! # External names
//! Every external name (called function, `symbol_value` global value) must be a
//! `UserExternalName { namespace: 0, index }` created by [`SymbolTable::declare`]; `index` selects the
//! [`RelocTarget`] the relocation is reported against. Declare them **colocated** (the helpers
//! [`SymbolTable::import_function`] and [`SymbolTable::import_symbol`] do) so that x64 code gets only
//! `X64PcRel32` and ARM64 code only `BL`/`ADRP`/`ADD` relocations (toolchain-notes §1.4): the image needs no base
//! relocations for code. An import is reached through its IAT slot: `symbol_value(ImportSlot)`, `load`,
//! `call_indirect`, the sequence MSVC emits.
//!
//! # Unwind data
//! Written from the code by [`super::unwind`] (x64 from Cranelift's prologue record checked against the bytes,
//! ARM64 by decoding the prologue and every epilogue), exact at every instruction offset.

use std::ops::Range;
use std::str::FromStr;

use cranelift_codegen::binemit::Reloc;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{self, ExternalName, Function, SourceLoc, UserExternalName};
use cranelift_codegen::isa::{self, OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, FinalizedRelocTarget};

use crate::compiled::{CodeRelocation, CompiledFunction, RelocKind, RelocTarget, Target, UnwindData};

use super::LowerError;

/// The target triple Cranelift compiles for.
pub fn target_triple(target: Target) -> &'static str {
    match target {
        Target::X64 => "x86_64-pc-windows-msvc",
        Target::Arm64 => "aarch64-pc-windows-msvc",
    }
}

/// Builds the Cranelift ISA with the settings every driver function is compiled with (toolchain-notes §1.4):
/// no PIC (the image resolves everything itself), inline stack probes (no `__chkstk` import, and the only form
/// Cranelift supports on AArch64), frame pointers kept for kernel stack walks, optimisation for speed.
pub fn build_isa(target: Target) -> Result<OwnedTargetIsa, LowerError> {
    build_isa_with(target, "speed")
}

/// The ISA of [`build_isa`] without Cranelift's mid-end optimizer, built once per target.
fn unoptimized_isa(target: Target) -> Result<&'static dyn TargetIsa, LowerError> {
    static X64: std::sync::OnceLock<OwnedTargetIsa> = std::sync::OnceLock::new();
    static ARM64: std::sync::OnceLock<OwnedTargetIsa> = std::sync::OnceLock::new();
    let cell = match target {
        Target::X64 => &X64,
        Target::Arm64 => &ARM64,
    };
    if let Some(isa) = cell.get() {
        return Ok(&**isa);
    }
    let isa = build_isa_with(target, "none")?;
    Ok(&**cell.get_or_init(|| isa))
}

/// [`build_isa`] with another Cranelift `opt_level`.
fn build_isa_with(target: Target, opt_level: &str) -> Result<OwnedTargetIsa, LowerError> {
    let mut flags = settings::builder();
    let set = |b: &mut settings::Builder, name: &str, value: &str| {
        b.set(name, value).map_err(|e| LowerError::Isa(format!("setting {name}={value}: {e}")))
    };
    set(&mut flags, "opt_level", opt_level)?;
    set(&mut flags, "is_pic", "false")?;
    set(&mut flags, "enable_probestack", "true")?;
    set(&mut flags, "probestack_strategy", "inline")?;
    set(&mut flags, "unwind_info", "true")?;
    set(&mut flags, "preserve_frame_pointers", "true")?;
    // The IR verifier costs compile time; run it in debug builds (tests), where it catches lowering bugs early.
    set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
    let triple = target_lexicon::Triple::from_str(target_triple(target)).map_err(|e| LowerError::Isa(e.to_string()))?;
    isa::lookup(triple)
        .map_err(|e| LowerError::Isa(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| LowerError::Isa(e.to_string()))
}

/// Which [`Target`] an ISA produces code for.
pub fn isa_target(isa: &dyn TargetIsa) -> Result<Target, LowerError> {
    match isa.triple().architecture {
        target_lexicon::Architecture::X86_64 => Ok(Target::X64),
        target_lexicon::Architecture::Aarch64(_) => Ok(Target::Arm64),
        other => Err(LowerError::Isa(format!("unsupported architecture {other}"))),
    }
}

/// The external symbols IR functions refer to, by `UserExternalName { namespace: 0, index }`.
#[derive(Clone, Debug, Default)]
pub struct SymbolTable {
    targets: Vec<RelocTarget>,
}

impl SymbolTable {
    pub fn new() -> SymbolTable {
        SymbolTable::default()
    }

    /// The external name standing for `target` (declared once; later calls return the same name).
    pub fn declare(&mut self, target: RelocTarget) -> UserExternalName {
        let index = match self.targets.iter().position(|t| *t == target) {
            Some(i) => i,
            None => {
                self.targets.push(target);
                self.targets.len() - 1
            }
        };
        UserExternalName { namespace: 0, index: index as u32 }
    }

    /// What a user external name refers to.
    pub fn resolve(&self, name: &UserExternalName) -> Option<&RelocTarget> {
        if name.namespace != 0 {
            return None;
        }
        self.targets.get(name.index as usize)
    }

    /// Declares `target` in `func` as a directly called, colocated function with signature `signature`.
    pub fn import_function(
        &mut self,
        func: &mut Function,
        target: RelocTarget,
        signature: ir::Signature,
    ) -> ir::FuncRef {
        let name = self.declare(target);
        let name_ref = func.declare_imported_user_function(name);
        let signature = func.import_signature(signature);
        func.import_function(ir::ExtFuncData {
            name: ExternalName::user(name_ref),
            signature,
            colocated: true,
            patchable: false,
        })
    }

    /// Declares `target` in `func` as a colocated symbol whose address `symbol_value` yields (data objects,
    /// IAT slots, or a function's address).
    pub fn import_symbol(&mut self, func: &mut Function, target: RelocTarget) -> ir::GlobalValue {
        let name = self.declare(target);
        let name_ref = func.declare_imported_user_function(name);
        func.create_global_value(ir::GlobalValueData::Symbol {
            name: ExternalName::user(name_ref),
            offset: 0.into(),
            colocated: true,
            tls: false,
        })
    }
}

/// Options for [`compile_ir_function_with`]; the default optimizes and keeps no text.
#[derive(Clone, Copy, Debug)]
pub struct CompileOptions {
    /// Also return Cranelift's textual machine code (its `VCode` after register allocation) for `--emit asm`.
    pub disassembly: bool,
    /// Run Cranelift's mid-end optimizer (e-graph rewrites, GVN, LICM). Off, the IR is compiled as written.
    pub optimize: bool,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions { disassembly: false, optimize: true }
    }
}

/// A compiled function with optional debugging text.
#[derive(Clone, Debug)]
pub struct CompiledWithText {
    pub function: CompiledFunction,
    /// Machine instructions as Cranelift prints them, when requested.
    pub disassembly: Option<String>,
}

/// Compiles one IR function for `isa` into a [`CompiledFunction`] named `name`.
///
/// External names in `func` are resolved through `symbols` (see the module doc).
pub fn compile_ir_function(
    isa: &dyn TargetIsa,
    name: &str,
    func: Function,
    symbols: &SymbolTable,
) -> Result<CompiledFunction, LowerError> {
    compile_ir_function_with(isa, name, func, symbols, CompileOptions::default()).map(|c| c.function)
}

/// [`compile_ir_function`] with options.
pub fn compile_ir_function_with(
    isa: &dyn TargetIsa,
    name: &str,
    func: Function,
    symbols: &SymbolTable,
    options: CompileOptions,
) -> Result<CompiledWithText, LowerError> {
    let target = isa_target(isa)?;
    let isa = if options.optimize { isa } else { unoptimized_isa(target)? };
    CONTEXT.with_borrow_mut(|ctx| {
        ctx.clear();
        // The function compiled before, now empty, keeps its tables' capacity for the next translation
        // (`new_function`) instead of being dropped here.
        let compiled_before = std::mem::replace(&mut ctx.func, func);
        SPARE_FUNCTION.set(Some(compiled_before));
        compile_in_context(ctx, isa, target, name, symbols, options)
    })
}

/// An empty IR function named `name` with signature `signature`, as `Function::with_name_signature` makes it, built
/// in the storage of a function this thread compiled before when there is one: its data-flow graph, layout and
/// source-location tables are emptied by `Context::clear` (`Function::clear`) but keep their capacity, so the
/// translation does not grow them from nothing again (that reallocation and copying was ~0.8 % of lowering
/// `unrolled_xdp`).
/// The function's contents, and so the code, are the same either way.
pub fn new_function(name: ir::UserFuncName, signature: ir::Signature) -> Function {
    match SPARE_FUNCTION.take() {
        Some(mut func) => {
            func.name = name;
            func.signature = signature;
            // `DataFlowGraph::clear` leaves exception tables out (none of ours has any; emptied for certain).
            func.dfg.exception_tables.clear();
            func
        }
        None => Function::with_name_signature(name, signature),
    }
}

thread_local! {
    /// One Cranelift [`Context`] per thread, reused for every function (as `Context::new` advises): its register
    /// allocator keeps its buffers from one function to the next instead of allocating and growing them again,
    /// which was ~10% of a build in page faults and buffer growth (perf, `bpf2sys build` of `unrolled_xdp.o`).
    /// `clear` resets everything that describes a function; the generated code does not depend on the reuse.
    static CONTEXT: std::cell::RefCell<Context> = std::cell::RefCell::new(Context::new());
    /// The function [`CONTEXT`] compiled before the current one, cleared, for [`new_function`].
    static SPARE_FUNCTION: std::cell::Cell<Option<Function>> = const { std::cell::Cell::new(None) };
}

/// The source location (its bits) [`mark_returns`] gives every `return`. Cranelift emits a return's epilogue inside the
/// return's source-location range (`VCode::emit`), so the code ranges with this location are exactly the returns:
/// where `unwind::x64::drop_redundant_epilogue_adds` looks, instead of decoding the whole function.
const RETURN_SRCLOC: u32 = 1;

/// Gives every `return` of `func` [`RETURN_SRCLOC`]. Source locations are metadata: the machine code does not
/// change (every sample and bench driver byte-identical, x64 and ARM64).
fn mark_returns(func: &mut Function) {
    let mut block = func.layout.entry_block();
    while let Some(b) = block {
        if let Some(inst) = func.layout.last_inst(b).filter(|&i| func.dfg.insts[i].opcode().is_return()) {
            func.set_srcloc(inst, SourceLoc::new(RETURN_SRCLOC));
        }
        block = func.layout.next_block(b);
    }
}

/// Whether the machine code of the function just compiled in `ctx` may hold a backward branch, that is, a loop,
/// which is what [`super::x64_layout::shorten_and_align_loops`] is for (loop heads are the targets of backward
/// branches; its short forward branches and moved blocks matter inside loops, where they run many times).
/// Cranelift lays out the blocks in the reverse postorder of `ctx.domtree` (the tree lowering used), each
/// critical-edge block right after its predecessor, and sinks effectively cold blocks (marked cold, or ending in
/// `trap`) to the end; so without a cold block and without a CFG edge to a block at or before its source in that
/// order, the function has no loop and keeps Cranelift's bytes: its forward branches run once each, and skipping
/// the pass saves decoding and planning the function (1.3 M of 60.8 M instructions of `bpf2sys build
/// samples/bench/unrolled_xdp.o` under callgrind).
fn has_backward_edge(ctx: &Context) -> bool {
    let func = &ctx.func;
    let mut order = cranelift_codegen::entity::SecondaryMap::with_default(usize::MAX);
    for (i, &block) in ctx.domtree.cfg_rpo().enumerate() {
        if func.is_effectively_cold(block) {
            return true;
        }
        order[block] = i;
    }
    ctx.domtree.cfg_rpo().any(|&block| ctx.cfg.succ_iter(block).any(|succ| order[succ] <= order[block]))
}

/// The compiled function's relocations as [`CodeRelocation`]s against the symbols `symbols` declared; any other
/// relocation kind or target is an error naming the function.
fn code_relocations(
    compiled: &cranelift_codegen::CompiledCode,
    params: &ir::function::FunctionParameters,
    symbols: &SymbolTable,
    name: &str,
) -> Result<Vec<CodeRelocation>, LowerError> {
    let mut relocations = Vec::with_capacity(compiled.buffer.relocs().len());
    for reloc in compiled.buffer.relocs() {
        let kind = match reloc.kind {
            Reloc::X86PCRel4 | Reloc::X86CallPCRel4 => RelocKind::X64PcRel32,
            Reloc::Abs8 => RelocKind::Abs64,
            Reloc::Arm64Call => RelocKind::Arm64Call26,
            Reloc::Aarch64AdrPrelPgHi21 => RelocKind::Arm64AdrPrelPgHi21,
            Reloc::Aarch64AddAbsLo12Nc => RelocKind::Arm64AddAbsLo12Nc,
            other => {
                return Err(LowerError::Codegen {
                    function: name.to_string(),
                    message: format!("unsupported relocation kind {other} at offset {:#x}", reloc.offset),
                })
            }
        };
        let target = match &reloc.target {
            FinalizedRelocTarget::ExternalName(ExternalName::User(r)) => {
                let user = &params.user_named_funcs()[*r];
                symbols.resolve(user).cloned().ok_or_else(|| LowerError::Codegen {
                    function: name.to_string(),
                    message: format!("external name {user} was not declared in the symbol table"),
                })?
            }
            other => {
                return Err(LowerError::Codegen {
                    function: name.to_string(),
                    message: format!(
                        "relocation at {:#x} against {} (only declared symbols are supported)",
                        reloc.offset,
                        other.display(Some(params))
                    ),
                })
            }
        };
        relocations.push(CodeRelocation { offset: reloc.offset, kind, target, addend: reloc.addend });
    }
    Ok(relocations)
}

/// Compiles `ctx.func` and turns the result into a [`CompiledWithText`].
fn compile_in_context(
    ctx: &mut Context,
    isa: &dyn TargetIsa,
    target: Target,
    name: &str,
    symbols: &SymbolTable,
    options: CompileOptions,
) -> Result<CompiledWithText, LowerError> {
    ctx.set_disasm(options.disassembly);
    if target == Target::X64 {
        mark_returns(&mut ctx.func);
    }
    ctx.compile(isa, &mut ControlPlane::default())
        .map_err(|e| LowerError::Codegen { function: name.to_string(), message: format!("{:?}", e.inner) })?;
    let compiled = ctx.compiled_code().expect("compiled just above");
    let mut code = compiled.code_buffer().to_vec();
    let relayout = target == Target::X64 && has_backward_edge(ctx);
    // x64 epilogues: the `add rsp, N` before `mov rsp, rbp` becomes a NOP so that the epilogue unwinds exactly
    // (see `unwind::x64`). A function the loop re-layout below rewrites is searched whole afterwards instead: the
    // pass must see Cranelift's own instructions (it treats NOPs as its padding).
    if target == Target::X64 && !relayout {
        let epilogues: Vec<Range<usize>> = (compiled.buffer.get_srclocs_sorted().iter())
            .filter(|l| l.loc.bits() == RETURN_SRCLOC)
            .map(|l| l.start as usize..l.end as usize)
            .collect();
        super::unwind::x64::drop_redundant_epilogue_adds(&mut code, &epilogues);
    }
    let mut relocations = code_relocations(compiled, &ctx.func.params, symbols, name)?;

    // Cranelift's x64 branches are all rel32 and its loops unaligned; re-lay the body out with short loop back edges
    // and aligned loop heads (`x64_layout`). The prologue, which the unwind data describes, is left byte for byte.
    let mut aligned_loops = false;
    let code = match target {
        Target::X64 if relayout => {
            let prologue_end =
                compiled.buffer.unwind_info.iter().map(|(offset, _)| *offset as usize).max().unwrap_or(0);
            let original_relocations = relocations.clone();
            match super::x64_layout::shorten_and_align_loops(&code, &mut relocations, prologue_end) {
                // The pass is checked on every function: a re-layout that does not decode to the same program
                // (a bug) must never ship, so the function then keeps Cranelift's own bytes.
                Some(relaid) => match super::x64_layout::check_same_program(&code, &relaid.code) {
                    Ok(()) => {
                        aligned_loops = relaid.aligned_loops;
                        relaid.code
                    }
                    Err(e) => {
                        debug_assert!(false, "x64 re-layout of `{name}` changed the program: {e}");
                        relocations = original_relocations;
                        code
                    }
                },
                None => code,
            }
        }
        Target::X64 | Target::Arm64 => code,
    };
    let mut code = code;
    if relayout {
        let all = 0..code.len();
        super::unwind::x64::drop_redundant_epilogue_adds(&mut code, std::slice::from_ref(&all));
    }

    let unwind_error = |message: String| LowerError::Codegen { function: name.to_string(), message };
    let unwind = match target {
        Target::X64 => UnwindData::X64 {
            fragments: super::unwind::x64::fragments(&code, &compiled.buffer.unwind_info).map_err(unwind_error)?,
        },
        Target::Arm64 => {
            // Cranelift records the prologue's frame operations; the last one ends the prologue.
            let prologue_end =
                compiled.buffer.unwind_info.iter().map(|(offset, _)| *offset as usize).max().unwrap_or(0);
            UnwindData::Arm64 { fragments: super::unwind::arm64::fragments(&code, prologue_end).map_err(unwind_error)? }
        }
    };
    // Loop heads are aligned relative to the function start (`x64_layout`), so the function must be aligned as much.
    let loop_alignment = if aligned_loops { super::x64_layout::LOOP_ALIGNMENT as u32 } else { 1 };
    let alignment = compiled.buffer.alignment.max(isa.function_alignment().preferred).max(loop_alignment);
    // `--emit asm` shows what ships: on x64 the bytes after the re-layout; ARM64 code is Cranelift's as emitted.
    let disassembly = match target {
        Target::X64 if options.disassembly => Some(super::x64_layout::disassemble(&code)),
        _ => compiled.vcode.clone(),
    };
    Ok(CompiledWithText {
        function: CompiledFunction { name: name.to_string(), code, alignment, relocations, unwind },
        disassembly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, UserFuncName};
    use cranelift_codegen::isa::CallConv;
    use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

    /// A function that keeps several values live across a call, forcing callee-saved registers.
    fn function_with_saves(symbols: &mut SymbolTable) -> Function {
        let mut sig = ir::Signature::new(CallConv::WindowsFastcall);
        sig.params.push(AbiParam::new(types::I64));
        sig.returns.push(AbiParam::new(types::I64));
        let mut func = Function::with_name_signature(UserFuncName::user(1, 0), sig.clone());
        let callee = symbols.import_function(&mut func, RelocTarget::Function("callee".into()), sig);
        let slot = symbols
            .import_symbol(&mut func, RelocTarget::ImportSlot { dll: "ntoskrnl.exe".into(), name: "DbgPrint".into() });
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry)[0];
        let live: Vec<_> = (0..6).map(|i| b.ins().load(types::I64, MemFlagsData::trusted(), p, i * 8)).collect();
        let call = b.ins().call(callee, &[p]);
        let mut acc = b.inst_results(call)[0];
        for v in live {
            acc = b.ins().iadd(acc, v);
        }
        let addr = b.ins().symbol_value(types::I64, slot);
        acc = b.ins().iadd(acc, addr);
        b.ins().return_(&[acc]);
        b.finalize(isa_frontend(&func_isa()));
        func
    }

    fn func_isa() -> OwnedTargetIsa {
        build_isa(Target::X64).unwrap()
    }

    fn isa_frontend(isa: &OwnedTargetIsa) -> cranelift_codegen::isa::TargetFrontendConfig {
        isa.frontend_config()
    }

    #[test]
    fn x64_relocations_map_to_declared_targets() {
        let isa = func_isa();
        let mut symbols = SymbolTable::new();
        let func = function_with_saves(&mut symbols);
        let compiled = compile_ir_function(&*isa, "f", func, &symbols).unwrap();
        let targets: Vec<_> = compiled.relocations.iter().map(|r| (&r.target, r.kind)).collect();
        assert!(targets.contains(&(&RelocTarget::Function("callee".into()), RelocKind::X64PcRel32)));
        assert!(targets
            .iter()
            .any(|(t, k)| matches!(t, RelocTarget::ImportSlot { .. }) && *k == RelocKind::X64PcRel32));
    }

    #[test]
    fn x64_unwind_info_describes_the_real_save_slots() {
        let isa = func_isa();
        let mut symbols = SymbolTable::new();
        let func = function_with_saves(&mut symbols);
        let compiled = compile_ir_function(&*isa, "f", func, &symbols).unwrap();
        use crate::lower::unwind::x64::{UWOP_ALLOC_LARGE, UWOP_ALLOC_SMALL, UWOP_PUSH_NONVOL, UWOP_SAVE_NONVOL};
        let UnwindData::X64 { fragments } = &compiled.unwind else { panic!("x64 unwind expected") };
        // The first record covers the prologue and the body up to the first epilogue tail.
        assert_eq!(fragments[0].start, 0);
        assert_eq!(fragments.last().unwrap().end as usize, compiled.code.len());
        let unwind_info = &fragments[0].record;
        assert_eq!(unwind_info[0], 1);
        assert_eq!(unwind_info[3], 0, "no frame register");
        let count = unwind_info[2] as usize;
        assert_eq!(unwind_info.len(), 4 + 2 * (count + count % 2));
        // Walk the codes and check every SAVE_NONVOL against the actual `mov [rsp+disp], reg` in the code.
        let mut i = 0;
        let mut saves = 0;
        let mut saw_alloc = false;
        while i < count {
            let at = 4 + 2 * i;
            let (op_off, op) = (unwind_info[at], unwind_info[at + 1]);
            match op & 0xf {
                UWOP_PUSH_NONVOL => i += 1,
                UWOP_ALLOC_SMALL => {
                    saw_alloc = true;
                    i += 1
                }
                UWOP_ALLOC_LARGE => {
                    saw_alloc = true;
                    i += if op >> 4 == 0 { 2 } else { 3 }
                }
                UWOP_SAVE_NONVOL => {
                    let reg = op >> 4;
                    let disp = u16::from_le_bytes([unwind_info[at + 2], unwind_info[at + 3]]) as u32 * 8;
                    // The instruction ending at op_off is `mov [rsp+disp], reg` (REX.W 89 /r with SIB rsp).
                    let found = (4..=8).any(|len| {
                        let start = op_off as usize - len;
                        let ins = &compiled.code[start..op_off as usize];
                        let rex = ins[0];
                        ins.len() >= 4
                            && rex & 0xf8 == 0x48
                            && ins[1] == 0x89
                            && ((ins[2] >> 3) & 7) | ((rex & 4) << 1) == reg
                            && ins[3] == 0x24
                            && match ins[2] >> 6 {
                                0 => disp == 0 && ins.len() == 4,
                                1 => ins.len() == 5 && ins[4] as u32 == disp,
                                2 => ins.len() == 8 && u32::from_le_bytes(ins[4..8].try_into().unwrap()) == disp,
                                _ => false,
                            }
                    });
                    assert!(found, "SAVE_NONVOL reg {reg} at +{disp} does not match the code");
                    saves += 1;
                    i += 2;
                }
                other => panic!("unexpected unwind op {other}"),
            }
        }
        assert!(saw_alloc);
        assert!(saves > 0, "the test function must save callee-saved registers");
    }

    #[test]
    fn arm64_compiles_with_xdata_header() {
        let isa = build_isa(Target::Arm64).unwrap();
        let mut symbols = SymbolTable::new();
        let func = function_with_saves(&mut symbols);
        let compiled = compile_ir_function(&*isa, "f", func, &symbols).unwrap();
        let UnwindData::Arm64 { fragments } = &compiled.unwind else { panic!("arm64 unwind expected") };
        let mut covered = 0;
        for f in fragments {
            assert_eq!(f.start, covered, "fragments are contiguous");
            let header = u32::from_le_bytes(f.record[..4].try_into().unwrap());
            assert_eq!((header & 0x3ffff) * 4, f.end - f.start);
            assert!(f.record[4..].contains(&0xe4), "unwind codes end with `end`");
            covered = f.end;
        }
        assert_eq!(covered as usize, compiled.code.len());
        assert!(compiled.relocations.iter().any(|r| r.kind == RelocKind::Arm64Call26));
        assert!(compiled.relocations.iter().any(|r| r.kind == RelocKind::Arm64AdrPrelPgHi21));
    }
}
