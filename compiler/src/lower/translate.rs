//! Translation of eBPF instructions into Cranelift IR.
//!
//! In: one [`Verified`] program (entry function first, subprograms appended) and the facts the verifier proved
//! about it: the helper each `callx` calls, the call depth, the block leaders. Out: one Cranelift IR function per
//! eBPF function plus the [`SymbolTable`] their external names refer to, ready for [`super::codegen`].
//!
//! # The translation
//! - **Registers.** `r0`..`r10` are cranelift-frontend [`Variable`]s of type `i64`, so they live in SSA values
//!   and machine registers, never in memory. The entry function starts with `r1 = context`,
//!   `r10 = stack top`, every other register zero (bpf2c zero-initialises its register locals, contract §5.1).
//! - **Stack.** The entry function owns one explicit stack slot of `512 × frames` bytes, where `frames` is the
//!   deepest chain of local calls plus one; `r10` points one past its end. A local call passes the callee
//!   `r10 − 512` (contract §5.7, PREVAIL's frame model), so frames never overlap, and the callee uses that `r10`
//!   directly: subprograms own no eBPF stack of their own.
//! - **Control flow.** Every jump target and every instruction after a jump or `exit` starts a Cranelift block;
//!   `ja` becomes `jump`, conditional jumps `brif`, `exit` `return r0`. Blocks are sealed once the whole
//!   function is translated (back edges of bounded loops are allowed). A conditional jump over a short,
//!   effect-free path becomes `select`s instead ([`super::if_conversion`]).
//! - **ALU.** 64-bit operations work on `i64`. 32-bit operations reduce both operands to `i32`, operate, and
//!   zero-extend (RFC 9669 §4.1). Cranelift's shifts already mask the count by the type width, which is exactly
//!   eBPF's rule. Division and modulo never trap: a zero divisor selects the RFC result (x / 0 = 0,
//!   x % 0 = x) and a divisor of −1 is handled before `sdiv`/`srem` so that INT_MIN / −1 = INT_MIN and
//!   INT_MIN % −1 = 0.
//! - **Memory.** Loads and stores are plain Cranelift memory operations at `reg + offset`; atomics use
//!   `atomic_rmw` / `atomic_cas` (sequentially consistent, `lock`-prefixed on x64 like bpf2c's `Interlocked*`).
//!   There are no bounds checks: the verifier proved every access safe before lowering, so loads are `notrap`.
//!   Byte loads that assemble one wider value become one load ([`super::load_combine`]); constant stores to the
//!   stack are merged ([`super::stack_stores`]); spill slots no pointer reaches live in SSA variables
//!   ([`super::stack_slots`]).
//! - **Runtime contract.** Helper calls, map addresses and global-variable addresses go through the
//!   `program_runtime_context_t` passed as the entry function's second argument; [`RuntimeEnvironment`] is the
//!   only code that knows its layout (contract §2.2, §5.2–5.4).

use std::collections::{BTreeMap, BTreeSet};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    self, types, AbiParam, AtomicRmwOp, Block, Function, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type,
    UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

use crate::compiled::RelocTarget;
use crate::isa::{
    AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, Reg, Width, STACK_FRAME_SIZE,
};
use crate::platform::windows::HELPER_TAIL_CALL;
use crate::program::{Module, Program};
use crate::verifier::{CallxTarget, Verified};

use super::codegen::SymbolTable;
use super::if_conversion::fall_through_path;
use super::load_combine::{remove_unused_loads, ByteAssemblies, Combination, CombinedLoad};
use super::stack_stores::{keeps_window_open, ConstantRegisters, PendingStackStores};
use super::LowerError;

// `program_runtime_context_t` and the runtime-owned arrays it points to (contract §2.2), defined once in the shim.
use bpf2sys_runtime_shim::abi::offsets::{
    GLOBAL_SECTION_DATA_ADDRESS, GLOBAL_SECTION_DATA_STRIDE, HELPER_DATA_ADDRESS, HELPER_DATA_STRIDE, MAP_DATA_ADDRESS,
    RUNTIME_CONTEXT_GLOBAL_VARIABLE_SECTION_DATA as RC_GLOBAL_VARIABLE_SECTION_DATA,
    RUNTIME_CONTEXT_HELPER_DATA as RC_HELPER_DATA, RUNTIME_CONTEXT_MAP_DATA as RC_MAP_DATA,
};
pub use bpf2sys_runtime_shim::abi::MapDataLayout;

/// Everything the generated code knows about the eBPF for Windows runtime: the helper table of this program,
/// the `map_data` stride, which global section a map index is, and the function shapes of contract §5.1.
#[derive(Clone, Debug)]
pub struct RuntimeEnvironment {
    /// Helper id → index into `runtime_context->helper_data`.
    helper_index: BTreeMap<u32, u32>,
    /// The program's helper table in index order; 0 marks a sentinel slot (contract §5.2).
    pub helper_ids: Vec<u32>,
    /// Module map index → global-variable section index, for `lddw` map-value references.
    global_section_of_map: BTreeMap<usize, usize>,
    map_data: MapDataLayout,
}

impl RuntimeEnvironment {
    /// The helper table for `program` (contract §5.2): first-appearance order when the module has no
    /// subprograms, otherwise the module-wide list over `programs` (every program of the module) sorted by id
    /// with sentinels for helpers this program does not use.
    pub fn new(program: &Verified, programs: &[Verified], map_data: MapDataLayout) -> Self {
        let module = program.module();
        let used = program.helper_ids();
        let module_has_subprograms = module.programs.iter().any(|p| p.functions.len() > 1);
        let helper_ids: Vec<u32> = if module_has_subprograms {
            let all: BTreeSet<u32> = programs.iter().flat_map(Verified::helper_ids).collect();
            all.into_iter().map(|id| if used.contains(&id) { id } else { 0 }).collect()
        } else {
            used
        };
        let helper_index =
            helper_ids.iter().enumerate().filter(|(_, &id)| id != 0).map(|(i, &id)| (id, i as u32)).collect();
        let global_section_of_map = module.global_sections.iter().enumerate().map(|(g, s)| (s.map_index, g)).collect();
        RuntimeEnvironment { helper_index, helper_ids, global_section_of_map, map_data }
    }

    /// `fn(context, runtime_context) -> u64` (contract §5.1).
    pub fn entry_signature() -> ir::Signature {
        let mut sig = ir::Signature::new(CallConv::WindowsFastcall);
        sig.params.extend([AbiParam::new(types::I64); 2]);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    /// `fn(r1, r2, r3, r4, r5, r10, context, runtime_context) -> u64` (contract §5.1).
    pub fn local_function_signature() -> ir::Signature {
        let mut sig = ir::Signature::new(CallConv::WindowsFastcall);
        sig.params.extend([AbiParam::new(types::I64); 8]);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    /// `helper_function_t`: `fn(r1, r2, r3, r4, r5, context) -> u64`.
    pub fn helper_signature() -> ir::Signature {
        let mut sig = ir::Signature::new(CallConv::WindowsFastcall);
        sig.params.extend([AbiParam::new(types::I64); 6]);
        sig.returns.push(AbiParam::new(types::I64));
        sig
    }

    fn flags() -> MemFlagsData {
        // Runtime-owned tables are valid, aligned and not modified while the program runs. Their validity does not
        // depend on any check in the program (the runtime context is valid for the whole call and every table entry
        // the code indexes exists), so the loads may move: `can_move` lets Cranelift share them and hoist them out
        // of loops — e.g. a helper's address is loaded once, not on every call in a loop.
        MemFlagsData::trusted().with_readonly().with_can_move()
    }

    /// `runtime_context->helper_data[i].address`.
    fn helper_address(&self, b: &mut FunctionBuilder, rc: Value, id: u32) -> Option<Value> {
        let index = *self.helper_index.get(&id)?;
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_HELPER_DATA);
        let offset = HELPER_DATA_STRIDE as i64 * index as i64 + HELPER_DATA_ADDRESS as i64;
        Some(b.ins().load(types::I64, Self::flags(), table, offset as i32))
    }

    /// `runtime_context->map_data[m].address`.
    fn map_address(&self, b: &mut FunctionBuilder, rc: Value, map: usize) -> Value {
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_MAP_DATA);
        let offset = self.map_data.stride() as i64 * map as i64 + MAP_DATA_ADDRESS as i64;
        b.ins().load(types::I64, Self::flags(), table, offset as i32)
    }

    /// `runtime_context->global_variable_section_data[g].address_of_map_value + offset`.
    fn global_address(&self, b: &mut FunctionBuilder, rc: Value, map: usize, offset: u32) -> Option<Value> {
        let section = *self.global_section_of_map.get(&map)?;
        let table = b.ins().load(types::I64, Self::flags(), rc, RC_GLOBAL_VARIABLE_SECTION_DATA);
        let entry = GLOBAL_SECTION_DATA_STRIDE as i64 * section as i64 + GLOBAL_SECTION_DATA_ADDRESS as i64;
        let base = b.ins().load(types::I64, Self::flags(), table, entry as i32);
        Some(b.ins().iadd_imm_s(base, offset as i64))
    }
}

/// What a function does that decides how freely Cranelift may move its loads and arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionShape {
    /// It stores, runs an atomic, calls, or uses a legacy packet load: memory may change while it runs.
    pub writes_or_calls: bool,
    /// It has a backward jump.
    pub loops: bool,
}

/// The [`FunctionShape`] of one function's instructions.
pub fn function_shape(instructions: &[Instruction]) -> FunctionShape {
    let mut shape = FunctionShape { writes_or_calls: false, loops: false };
    for (pc, insn) in instructions.iter().enumerate() {
        match insn {
            _ if insn.may_write_memory() => shape.writes_or_calls = true,
            // Jump targets are relative, so slot indices within the slice compare correctly.
            Instruction::Jump { .. } | Instruction::JumpIf { .. } => {
                shape.loops |= insn.jump_target(pc).is_some_and(|t| t <= pc as i64)
            }
            _ => {}
        }
    }
    shape
}

/// The result of translating one program: IR functions (entry first) and the symbols they reference.
pub struct TranslatedProgram {
    /// (unique symbol name, IR) per eBPF function, the entry function first.
    pub functions: Vec<(String, Function)>,
    pub symbols: SymbolTable,
    pub helper_ids: Vec<u32>,
    pub referenced_maps: Vec<u16>,
}

/// The symbol name of function `index` of `program` (unique within a driver image).
pub fn function_symbol(program: &Program, index: usize) -> String {
    if index == 0 {
        program.name.clone()
    } else {
        let f = &program.functions[index];
        let name = if f.name.is_empty() { format!("sub_{}", f.start) } else { f.name.clone() };
        format!("{}.{}", program.name, name)
    }
}

/// Translates `verified` into Cranelift IR; `programs` are the verified programs of its module (see
/// [`super::lower_program`]).
pub fn translate_program(
    verified: &Verified,
    programs: &[Verified],
    map_data: MapDataLayout,
    frontend: TargetFrontendConfig,
) -> Result<TranslatedProgram, LowerError> {
    let module = verified.module();
    let program = verified.program();
    let env = RuntimeEnvironment::new(verified, programs, map_data);
    // The verifier checked the function structure (`ControlFlow`): an entry function at slot 0, jumps inside their
    // function, calls to function starts.
    let frames = verified.call_depth();
    let mut symbols = SymbolTable::new();
    let mut referenced_maps = BTreeSet::new();
    let mut fctx = FunctionBuilderContext::new();
    let mut functions = Vec::with_capacity(program.functions.len());
    for index in 0..program.functions.len() {
        let mut translator = FunctionTranslator {
            env: &env,
            verified,
            module,
            program,
            index,
            symbols: &mut symbols,
            referenced_maps: &mut referenced_maps,
            movable_loads: false,
            promoted: BTreeMap::new(),
        };
        let func = translator.translate(&mut fctx, frames, frontend)?;
        functions.push((function_symbol(program, index), func));
    }
    Ok(TranslatedProgram {
        functions,
        symbols,
        helper_ids: env.helper_ids,
        referenced_maps: referenced_maps.into_iter().collect(),
    })
}

struct FunctionTranslator<'a> {
    env: &'a RuntimeEnvironment,
    verified: &'a Verified<'a>,
    module: &'a Module,
    program: &'a Program,
    index: usize,
    symbols: &'a mut SymbolTable,
    referenced_maps: &'a mut BTreeSet<u16>,
    /// The current function never writes memory, calls or loops, so its loads may move (see `translate`).
    movable_loads: bool,
    /// The current function's stack slots kept in SSA variables, by offset from `r10` (see `stack_slots`).
    promoted: BTreeMap<i16, Variable>,
}

/// Values every instruction of a function may need.
struct Frame {
    regs: [Variable; Reg::COUNT],
    context: Value,
    runtime_context: Value,
    /// The entry block's zero: the value of every register that holds nothing meaningful (see `clobber_scratch`).
    zero: Value,
}

fn mem() -> MemFlagsData {
    // Program memory: may be shared with other CPUs (maps) and is not known to be aligned.
    MemFlagsData::new()
}

fn load_flags() -> MemFlagsData {
    // The verifier proved every program load in bounds, so none faults: `notrap` lets `remove_unused_loads` drop
    // loads whose values a combined load replaced.
    mem().with_notrap()
}

impl FunctionTranslator<'_> {
    fn unsupported(&self, slot: usize, message: impl Into<String>) -> LowerError {
        LowerError::Unsupported { program: self.program.name.clone(), slot, message: message.into() }
    }

    fn translate(
        &mut self,
        fctx: &mut FunctionBuilderContext,
        frames: u32,
        frontend: TargetFrontendConfig,
    ) -> Result<Function, LowerError> {
        let pf = self.program.functions[self.index].clone();
        let is_entry = self.index == 0;
        let sig = if is_entry {
            RuntimeEnvironment::entry_signature()
        } else {
            RuntimeEnvironment::local_function_signature()
        };
        let mut func = Function::with_name_signature(UserFuncName::user(1, self.index as u32), sig);
        let mut b = FunctionBuilder::new(&mut func, fctx);

        // Blocks: the verifier's block leaders (function start, jump targets, the instruction after every jump or
        // exit).
        let control_flow = self.verified.control_flow();
        let block_at: Vec<Option<Block>> =
            (pf.start..pf.end).map(|pc| control_flow.is_block_leader(pc).then(|| b.create_block())).collect();

        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let regs: [Variable; Reg::COUNT] = std::array::from_fn(|_| b.declare_var(types::I64));
        let zero = b.ins().iconst(types::I64, 0);
        for r in regs {
            b.def_var(r, zero);
        }
        let frame = if is_entry {
            let size = STACK_FRAME_SIZE * frames;
            let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 4));
            let base = b.ins().stack_addr(types::I64, slot, 0);
            let top = b.ins().iadd_imm_s(base, size as i64);
            b.def_var(regs[1], params[0]);
            b.def_var(regs[10], top);
            Frame { regs, context: params[0], runtime_context: params[1], zero }
        } else {
            for (i, r) in [1, 2, 3, 4, 5, 10].into_iter().enumerate() {
                b.def_var(regs[r], params[i]);
            }
            Frame { regs, context: params[6], runtime_context: params[7], zero }
        };
        // A function that never writes memory, never calls and has no loop reads memory that cannot change while it
        // runs, and every use of a load is dominated by the load itself: the load may then be placed at its use
        // (Cranelift's `can_move`) without ever running on a path where the original would not have run. This
        // matters for long straight-line code such as a fully unrolled hash, where Cranelift otherwise keeps every
        // load at its original place ahead of the arithmetic it feeds, and hundreds of loaded values are live at
        // once.
        let shape = function_shape(&self.program.instructions[pf.start..pf.end]);
        self.movable_loads = !shape.writes_or_calls && !shape.loops;
        // Spill slots that no pointer can reach become SSA variables (see `stack_slots::promotable_slots`).
        self.promoted = super::stack_slots::promotable_slots(&self.program.instructions[pf.start..pf.end])
            .into_iter()
            .map(|offset| {
                let var = b.declare_var(types::I64);
                // Never read before written in a verified program (the verifier rejects uninitialised reads).
                b.def_var(var, zero);
                (offset, var)
            })
            .collect();
        let first = block_at[0].expect("function start is a leader");
        b.ins().jump(first, &[]);

        let mut terminated = true;
        // Constant stores to the stack are buffered and merged (see `stack_stores`).
        let mut constants = ConstantRegisters::default();
        let mut pending = PendingStackStores::default();
        // Byte loads assembling one wider value become one load (see `load_combine`).
        let mut assemblies = ByteAssemblies::<Value>::default();
        for pc in pf.start..pf.end {
            let insn = self.program.instructions[pc];
            if let Some(block) = block_at[pc - pf.start] {
                if !terminated {
                    Self::flush_stack_stores(&mut b, &frame, &mut pending);
                    b.ins().jump(block, &[]);
                }
                b.switch_to_block(block);
                constants.clear();
                assemblies.clear();
            } else if terminated {
                continue; // An lddw continuation after a terminator, or dead code without a label.
            }
            let combination = assemblies.update(&insn, |r| b.use_var(frame.regs[r.index()]));
            if let Instruction::Store { size, dst: Reg::FP, offset, src } = insn {
                if let Some(value) = constants.operand(src).filter(|_| !self.promoted.contains_key(&offset)) {
                    pending.push(offset, size, value);
                    terminated = false;
                    continue;
                }
            }
            if !keeps_window_open(&insn) {
                Self::flush_stack_stores(&mut b, &frame, &mut pending);
            }
            constants.update(&insn);
            if self.translate_promoted_access(&mut b, &frame, insn) || combination == Combination::Redundant {
                terminated = false;
                continue;
            }
            terminated = self.translate_instruction(&mut b, &frame, &block_at, pf.start, pc, insn)?;
            if let Combination::Load { dst, load } = combination {
                let value = self.combined_load(&mut b, load);
                b.def_var(frame.regs[dst.index()], value);
            }
        }
        Self::flush_stack_stores(&mut b, &frame, &mut pending);
        if !terminated {
            // Falling off the end of a function: the verifier rejects it; never reached at run time.
            b.ins().trap(ir::TrapCode::unwrap_user(1));
        }
        b.seal_all_blocks();
        b.finalize(frontend);
        remove_unused_loads(&mut func);
        Ok(func)
    }

    /// Translates an access to a stack slot kept in an SSA variable; returns false if `insn` is not one.
    fn translate_promoted_access(&self, b: &mut FunctionBuilder, frame: &Frame, insn: Instruction) -> bool {
        match insn {
            Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset, src }
                if self.promoted.contains_key(&offset) =>
            {
                let value = Self::operand(b, frame, Width::W64, src);
                b.def_var(self.promoted[&offset], value);
                true
            }
            Instruction::Load { size: MemSize::DW, src: Reg::FP, offset, dst, .. }
                if self.promoted.contains_key(&offset) =>
            {
                let value = b.use_var(self.promoted[&offset]);
                b.def_var(frame.regs[dst.index()], value);
                true
            }
            _ => false,
        }
    }

    /// Runs the fall-through `path` of a conditional jump unconditionally, then keeps each variable it wrote only if
    /// the jump is not `taken` (see `if_conversion`).
    fn translate_speculated_path(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        taken: Value,
        path: &[usize],
    ) -> Result<(), LowerError> {
        let mut written: Vec<Variable> = Vec::new();
        for &slot in path {
            let variable = match self.program.instructions[start + slot] {
                Instruction::Store { offset, .. } => self.promoted[&offset],
                ref insn => {
                    let dst =
                        insn.written_register().expect("every speculated instruction but a slot store writes one");
                    frame.regs[dst.index()]
                }
            };
            if !written.contains(&variable) {
                written.push(variable);
            }
        }
        let before: Vec<Value> = written.iter().map(|&v| b.use_var(v)).collect();
        for &slot in path {
            let insn = self.program.instructions[start + slot];
            if !self.translate_promoted_access(b, frame, insn) {
                self.translate_instruction(b, frame, block_at, start, start + slot, insn)?;
            }
        }
        for (variable, old) in written.into_iter().zip(before) {
            let new = b.use_var(variable);
            if new != old {
                let kept = b.ins().select(taken, old, new);
                b.def_var(variable, kept);
            }
        }
        Ok(())
    }

    /// The one load that replaces a register assembled from byte loads, zero-extended like every eBPF load.
    fn combined_load(&self, b: &mut FunctionBuilder, load: CombinedLoad<Value>) -> Value {
        let flags = if self.movable_loads { mem().with_readonly().with_notrap().with_can_move() } else { load_flags() };
        let ty = Self::memory_type(load.size);
        let loaded = b.ins().load(ty, flags, load.base, i32::from(load.offset));
        let value = if load.byte_swapped { b.ins().bswap(loaded) } else { loaded };
        if ty == types::I64 {
            value
        } else {
            b.ins().uextend(types::I64, value)
        }
    }

    /// Writes the buffered constant stack stores as merged, naturally aligned stores.
    fn flush_stack_stores(b: &mut FunctionBuilder, frame: &Frame, pending: &mut PendingStackStores) {
        if pending.is_empty() {
            return;
        }
        let fp = b.use_var(frame.regs[Reg::FP.index()]);
        for store in pending.chunks() {
            let ty = Self::memory_type(store.size);
            // Cranelift wants narrow constants zero-extended; `chunks` only fills the low `size` bytes.
            let value = b.ins().iconst(ty, store.value as i64);
            b.ins().store(mem(), value, fp, store.offset);
        }
    }

    fn operand(b: &mut FunctionBuilder, frame: &Frame, width: Width, src: Operand) -> Value {
        match (width, src) {
            (Width::W64, Operand::Reg(r)) => b.use_var(frame.regs[r.index()]),
            (Width::W64, Operand::Imm(i)) => b.ins().iconst(types::I64, i as i64),
            (Width::W32, Operand::Reg(r)) => {
                let v = b.use_var(frame.regs[r.index()]);
                b.ins().ireduce(types::I32, v)
            }
            (Width::W32, Operand::Imm(i)) => b.ins().iconst(types::I32, i as u32 as i64),
        }
    }

    /// The integer type of a `size`-byte memory access.
    fn memory_type(size: MemSize) -> Type {
        match size {
            MemSize::B => types::I8,
            MemSize::H => types::I16,
            MemSize::W => types::I32,
            MemSize::DW => types::I64,
        }
    }

    fn ty(width: Width) -> Type {
        match width {
            Width::W32 => types::I32,
            Width::W64 => types::I64,
        }
    }

    /// Translates one instruction; returns whether it ended the block.
    fn translate_instruction(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        pc: usize,
        insn: Instruction,
    ) -> Result<bool, LowerError> {
        let reg = |r: Reg| frame.regs[r.index()];
        let block = |slot: i64| block_at[slot as usize - start].expect("jump targets are leaders");
        match insn {
            // ---- ALU (RFC 9669 §4.1) ----
            Instruction::Alu { width, op, dst, src } => {
                let ty = Self::ty(width);
                let s = Self::operand(b, frame, width, src);
                // `mov` does not read its destination. Reading it anyway would make the old value look live, and
                // cranelift-frontend would keep it alive around loops as a block parameter.
                let d = if matches!(op, AluOp::Mov | AluOp::MovSx(_)) {
                    s
                } else {
                    let d64 = b.use_var(reg(dst));
                    if width == Width::W32 {
                        b.ins().ireduce(types::I32, d64)
                    } else {
                        d64
                    }
                };
                let result = match op {
                    AluOp::Add => b.ins().iadd(d, s),
                    AluOp::Sub => b.ins().isub(d, s),
                    AluOp::Mul => b.ins().imul(d, s),
                    AluOp::Or => b.ins().bor(d, s),
                    AluOp::And => b.ins().band(d, s),
                    AluOp::Xor => b.ins().bxor(d, s),
                    // Cranelift masks shift counts by the type width, as RFC 9669 requires.
                    AluOp::Lsh => b.ins().ishl(d, s),
                    AluOp::Rsh => b.ins().ushr(d, s),
                    AluOp::Arsh => b.ins().sshr(d, s),
                    AluOp::Neg => b.ins().ineg(d),
                    AluOp::Mov => s,
                    AluOp::MovSx(bits) => {
                        let narrow = match bits {
                            8 => types::I8,
                            16 => types::I16,
                            32 => types::I32,
                            other => return Err(self.unsupported(pc, format!("movsx from {other} bits"))),
                        };
                        if narrow == ty {
                            s
                        } else {
                            let low = b.ins().ireduce(narrow, s);
                            b.ins().sextend(ty, low)
                        }
                    }
                    AluOp::Div | AluOp::Mod | AluOp::SDiv | AluOp::SMod => Self::division(b, ty, op, d, s),
                };
                let result = if width == Width::W32 { b.ins().uextend(types::I64, result) } else { result };
                b.def_var(reg(dst), result);
            }
            Instruction::Endian { order, bits, dst } => {
                let v = b.use_var(reg(dst));
                let narrow = match bits {
                    16 => types::I16,
                    32 => types::I32,
                    64 => types::I64,
                    other => return Err(self.unsupported(pc, format!("byte swap of {other} bits"))),
                };
                let low = if narrow == types::I64 { v } else { b.ins().ireduce(narrow, v) };
                let value = match order {
                    // Little-endian targets: to-LE only truncates.
                    ByteOrder::ToLe => low,
                    ByteOrder::ToBe | ByteOrder::Swap => b.ins().bswap(low),
                };
                let value = if narrow == types::I64 { value } else { b.ins().uextend(types::I64, value) };
                b.def_var(reg(dst), value);
            }

            // ---- 64-bit immediates and runtime objects (RFC 9669 §5.4, contract §5.4) ----
            Instruction::LoadImm64 { dst, kind, imm, next_imm } => {
                let value = match kind {
                    Imm64Kind::Imm => b.ins().iconst(types::I64, Instruction::imm64(imm, next_imm) as i64),
                    Imm64Kind::MapIndex => {
                        let map = self.map_index(pc, imm)?;
                        self.env.map_address(b, frame.runtime_context, map)
                    }
                    Imm64Kind::MapIndexValue => {
                        let map = self.map_index(pc, imm)?;
                        self.env.global_address(b, frame.runtime_context, map, next_imm as u32).ok_or_else(|| {
                            self.unsupported(pc, format!("map {map} is not a global-variable section"))
                        })?
                    }
                    other => return Err(self.unsupported(pc, format!("lddw {} is not supported", other.name()))),
                };
                b.def_var(reg(dst), value);
            }
            Instruction::LoadImm64Continuation => {}

            // ---- Memory (RFC 9669 §5.1–5.3) ----
            Instruction::Load { size, sign_extend, dst, src, offset } if self.movable_loads => {
                let addr = b.use_var(reg(src));
                let flags = mem().with_readonly().with_notrap().with_can_move();
                let ty = Self::memory_type(size);
                let loaded = b.ins().load(ty, flags, addr, offset as i32);
                let value = match (ty == types::I64, sign_extend) {
                    (true, _) => loaded,
                    (false, false) => b.ins().uextend(types::I64, loaded),
                    (false, true) => b.ins().sextend(types::I64, loaded),
                };
                b.def_var(reg(dst), value);
            }
            Instruction::Load { size, sign_extend, dst, src, offset } => {
                let addr = b.use_var(reg(src));
                let off = offset as i32;
                let flags = load_flags();
                let value = match (size, sign_extend) {
                    (MemSize::B, false) => b.ins().uload8(types::I64, flags, addr, off),
                    (MemSize::B, true) => b.ins().sload8(types::I64, flags, addr, off),
                    (MemSize::H, false) => b.ins().uload16(types::I64, flags, addr, off),
                    (MemSize::H, true) => b.ins().sload16(types::I64, flags, addr, off),
                    (MemSize::W, false) => b.ins().uload32(flags, addr, off),
                    (MemSize::W, true) => b.ins().sload32(flags, addr, off),
                    (MemSize::DW, _) => b.ins().load(types::I64, flags, addr, off),
                };
                b.def_var(reg(dst), value);
            }
            Instruction::Store { size, dst, offset, src } => {
                let addr = b.use_var(reg(dst));
                let value = Self::operand(b, frame, Width::W64, src);
                let off = offset as i32;
                match size {
                    MemSize::B => b.ins().istore8(mem(), value, addr, off),
                    MemSize::H => b.ins().istore16(mem(), value, addr, off),
                    MemSize::W => b.ins().istore32(mem(), value, addr, off),
                    MemSize::DW => b.ins().store(mem(), value, addr, off),
                };
            }
            Instruction::Atomic { size, op, fetch, dst, src, offset } => {
                let ty = match size {
                    MemSize::W => types::I32,
                    MemSize::DW => types::I64,
                    other => return Err(self.unsupported(pc, format!("atomic access of {} bytes", other.bytes()))),
                };
                let base = b.use_var(reg(dst));
                let addr = b.ins().iadd_imm_s(base, offset as i64);
                let narrow =
                    |b: &mut FunctionBuilder, v: Value| if ty == types::I64 { v } else { b.ins().ireduce(ty, v) };
                let widen = |b: &mut FunctionBuilder, v: Value| {
                    if ty == types::I64 {
                        v
                    } else {
                        b.ins().uextend(types::I64, v)
                    }
                };
                let s64 = b.use_var(reg(src));
                let s = narrow(b, s64);
                match op {
                    AtomicOp::CmpXchg => {
                        let r0 = b.use_var(reg(Reg::R0));
                        let expected = narrow(b, r0);
                        let old = b.ins().atomic_cas(mem(), addr, expected, s);
                        let old = widen(b, old);
                        b.def_var(reg(Reg::R0), old);
                    }
                    _ => {
                        let rmw = match op {
                            AtomicOp::Add => AtomicRmwOp::Add,
                            AtomicOp::Or => AtomicRmwOp::Or,
                            AtomicOp::And => AtomicRmwOp::And,
                            AtomicOp::Xor => AtomicRmwOp::Xor,
                            AtomicOp::Xchg => AtomicRmwOp::Xchg,
                            AtomicOp::CmpXchg => unreachable!("handled above"),
                        };
                        let old = b.ins().atomic_rmw(ty, mem(), rmw, addr, s);
                        if fetch || op == AtomicOp::Xchg {
                            let old = widen(b, old);
                            b.def_var(reg(src), old);
                        }
                    }
                }
            }
            Instruction::LegacyPacketLoad { .. } => {
                return Err(self.unsupported(pc, "legacy packet loads (LD_ABS/LD_IND) are not supported"))
            }

            // ---- Control flow (RFC 9669 §4.3) ----
            Instruction::Jump { .. } => {
                let target = block(insn.jump_target(pc).expect("jump"));
                b.ins().jump(target, &[]);
                return Ok(true);
            }
            Instruction::JumpIf { width, cond, dst, src, .. } => {
                let s = Self::operand(b, frame, width, src);
                let d64 = b.use_var(reg(dst));
                let d = if width == Width::W32 { b.ins().ireduce(types::I32, d64) } else { d64 };
                let taken = match cond {
                    JumpCond::Set => {
                        let bits = b.ins().band(d, s);
                        b.ins().icmp_imm_s(IntCC::NotEqual, bits, 0)
                    }
                    _ => {
                        let cc = match cond {
                            JumpCond::Eq => IntCC::Equal,
                            JumpCond::Ne => IntCC::NotEqual,
                            JumpCond::Gt => IntCC::UnsignedGreaterThan,
                            JumpCond::Ge => IntCC::UnsignedGreaterThanOrEqual,
                            JumpCond::Lt => IntCC::UnsignedLessThan,
                            JumpCond::Le => IntCC::UnsignedLessThanOrEqual,
                            JumpCond::Sgt => IntCC::SignedGreaterThan,
                            JumpCond::Sge => IntCC::SignedGreaterThanOrEqual,
                            JumpCond::Slt => IntCC::SignedLessThan,
                            JumpCond::Sle => IntCC::SignedLessThanOrEqual,
                            JumpCond::Set => unreachable!("handled above"),
                        };
                        b.ins().icmp(cc, d, s)
                    }
                };
                let target = block(insn.jump_target(pc).expect("jump"));
                let end = self.program.functions[self.index].end;
                let is_promoted = |offset| self.promoted.contains_key(&offset);
                if let Some(path) = fall_through_path(&self.program.instructions[start..end], pc - start, is_promoted) {
                    self.translate_speculated_path(b, frame, block_at, start, taken, &path)?;
                    b.ins().jump(target, &[]);
                    return Ok(true);
                }
                let next = block(pc as i64 + 1);
                b.ins().brif(taken, target, &[], next, &[]);
                return Ok(true);
            }
            Instruction::Exit => {
                let r0 = b.use_var(reg(Reg::R0));
                b.ins().return_(&[r0]);
                return Ok(true);
            }

            // ---- Calls (contract §5.1–5.3) ----
            Instruction::CallHelper { id } => self.call_helper(b, frame, pc, id as u32)?,
            Instruction::CallReg { reg: r } => match self.verified.callx_target(pc) {
                CallxTarget::Helper(id) => self.call_helper(b, frame, pc, id)?,
                CallxTarget::Unreachable => {
                    // Never executed (the verifier found no path here): nothing to call.
                    b.ins().trap(ir::TrapCode::unwrap_user(1));
                    return Ok(true);
                }
                CallxTarget::PerCallingContext => {
                    return Err(self.unsupported(
                        pc,
                        format!("callx {r} calls a different helper from each call site of its function"),
                    ))
                }
            },
            Instruction::CallLocal { .. } => {
                let callee = self.verified.control_flow().callee(pc).expect("the verifier resolved every local call");
                let name = function_symbol(self.program, callee);
                let fref = self.symbols.import_function(
                    b.func,
                    RelocTarget::Function(name),
                    RuntimeEnvironment::local_function_signature(),
                );
                let mut args = Vec::with_capacity(8);
                for r in 1..=5 {
                    args.push(b.use_var(frame.regs[r]));
                }
                let r10 = b.use_var(frame.regs[10]);
                args.push(b.ins().iadd_imm_s(r10, -(STACK_FRAME_SIZE as i64)));
                args.push(frame.context);
                args.push(frame.runtime_context);
                let call = b.ins().call(fref, &args);
                let r0 = b.inst_results(call)[0];
                b.def_var(reg(Reg::R0), r0);
                Self::clobber_scratch(b, frame);
            }
            Instruction::CallBtf { .. } => {
                return Err(self.unsupported(pc, "calls of BTF-resolved functions (kfuncs) are not supported"))
            }
        }
        Ok(false)
    }

    fn map_index(&mut self, pc: usize, imm: i32) -> Result<usize, LowerError> {
        let map = usize::try_from(imm).ok().filter(|&m| m < self.module.maps.len()).ok_or_else(|| {
            self.unsupported(pc, format!("lddw refers to map index {imm}, the module has {}", self.module.maps.len()))
        })?;
        self.referenced_maps.insert(map as u16);
        Ok(map)
    }

    /// `r0 = helper_data[i].address(r1..r5, context)`; after `bpf_tail_call`, `if (r0 == 0) return 0`.
    fn call_helper(&mut self, b: &mut FunctionBuilder, frame: &Frame, pc: usize, id: u32) -> Result<(), LowerError> {
        let address = self
            .env
            .helper_address(b, frame.runtime_context, id)
            .ok_or_else(|| self.unsupported(pc, format!("helper {id} is missing from the helper table")))?;
        let sig = b.import_signature(RuntimeEnvironment::helper_signature());
        let mut args = Vec::with_capacity(6);
        for r in 1..=5 {
            args.push(b.use_var(frame.regs[r]));
        }
        args.push(frame.context);
        let call = b.ins().call_indirect(sig, address, &args);
        let r0 = b.inst_results(call)[0];
        b.def_var(frame.regs[0], r0);
        Self::clobber_scratch(b, frame);
        if id == HELPER_TAIL_CALL {
            let done = b.create_block();
            let cont = b.create_block();
            b.ins().brif(r0, cont, &[], done, &[]);
            b.switch_to_block(done);
            let zero = b.ins().iconst(types::I64, 0);
            b.ins().return_(&[zero]);
            b.switch_to_block(cont);
        }
        Ok(())
    }

    /// After a call, r1–r5 hold nothing a program may read (RFC 9669 §2.4: they are scratch registers; the verifier
    /// rejects reads of them before they are written again). Giving them the one shared zero instead of keeping
    /// their old values ends those values' lives at the call: otherwise an argument computed in a loop stays
    /// live around the loop as a block parameter, and every constant argument becomes a loop-carried value.
    fn clobber_scratch(b: &mut FunctionBuilder, frame: &Frame) {
        for r in 1..=5 {
            b.def_var(frame.regs[r], frame.zero);
        }
    }

    /// DIV/MOD/SDIV/SMOD without traps (RFC 9669 §4.1): x / 0 = 0, x % 0 = x, INT_MIN / −1 = INT_MIN,
    /// INT_MIN % −1 = 0.
    fn division(b: &mut FunctionBuilder, ty: Type, op: AluOp, d: Value, s: Value) -> Value {
        let zero = b.ins().iconst(ty, 0);
        let one = b.ins().iconst(ty, 1);
        let is_zero = b.ins().icmp_imm_s(IntCC::Equal, s, 0);
        match op {
            AluOp::Div | AluOp::Mod => {
                let divisor = b.ins().select(is_zero, one, s);
                if op == AluOp::Div {
                    let q = b.ins().udiv(d, divisor);
                    b.ins().select(is_zero, zero, q)
                } else {
                    let r = b.ins().urem(d, divisor);
                    b.ins().select(is_zero, d, r)
                }
            }
            _ => {
                let minus_one = if ty == types::I32 { u32::MAX as i64 } else { -1 };
                let minus_one = b.ins().iconst(ty, minus_one);
                let is_minus_one = b.ins().icmp(IntCC::Equal, s, minus_one);
                let special = b.ins().bor(is_zero, is_minus_one);
                let divisor = b.ins().select(special, one, s);
                if op == AluOp::SDiv {
                    let q = b.ins().sdiv(d, divisor);
                    let negated = b.ins().ineg(d);
                    let q = b.ins().select(is_minus_one, negated, q);
                    b.ins().select(is_zero, zero, q)
                } else {
                    let r = b.ins().srem(d, divisor);
                    let r = b.ins().select(is_minus_one, zero, r);
                    b.ins().select(is_zero, d, r)
                }
            }
        }
    }
}
