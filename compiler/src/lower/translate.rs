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
//!   effect-free path becomes `select`s instead ([`super::if_conversion`]). The jumps into a short loop latch run
//!   copies of it ([`super::latch_copy`]): a conditional skip to it enters its own copy, translated again after the
//!   function's blocks; a `goto`, fall-through or if-converted jump into it is replaced by the latch's instructions
//!   ([`FunctionTranslator::jump_to`]); a loop header's jump may be negated to choose the layout.
//! - **ALU.** 64-bit operations work on `i64`. 32-bit operations reduce both operands to `i32`, operate, and
//!   zero-extend (RFC 9669 §4.1). Cranelift's shifts already mask the count by the type width, which is exactly
//!   eBPF's rule. Division and modulo never trap: a zero divisor selects the RFC result (x / 0 = 0,
//!   x % 0 = x) and a divisor of −1 is handled before `sdiv`/`srem` so that INT_MIN / −1 = INT_MIN and
//!   INT_MIN % −1 = 0.
//! - **Memory.** Loads and stores are plain Cranelift memory operations at `reg + offset`; atomics use
//!   `atomic_rmw` / `atomic_cas` (sequentially consistent, `lock`-prefixed on x64 like bpf2c's `Interlocked*`);
//!   on ARM64 a 32-bit `cmpxchg` first gives its comparand zero upper bits (`FunctionTranslator::cas_comparand`).
//!   An atomic the verifier proved to address only the invocation's own stack
//!   ([`Verified::is_stack_atomic`]) is a plain load, operation and store instead: nobody else sees the frame,
//!   and it may be misaligned.
//!   There are no bounds checks: the verifier proved every access safe before lowering, so loads are `notrap`.
//!   Byte loads that assemble one wider value become one load ([`super::load_combine`]); constant stores to the
//!   stack are merged ([`super::stack_stores`]); any other store of a constant — an immediate, or a register that
//!   holds one constant on every path ([`super::plan::block_entry_constants`]) — stores an immediate of the access's
//!   width; spill slots no pointer reaches live in SSA variables ([`super::stack_slots`]).
//! - **Runtime contract.** Helper calls, map addresses and global-variable addresses go through the
//!   `program_runtime_context_t` passed as the entry function's second argument; [`RuntimeEnvironment`]
//!   (`runtime_env`) is the only lowering code that knows its layout (contract §2.2, §5.2–5.4).
//!
//! Files: this one translates a function (blocks, entry frame, the walk over its instructions and the pre-pass
//! plans); [`code_translator`] translates each instruction, one function per operator group.

mod code_translator;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use cranelift_codegen::entity::EntityRef;
use cranelift_codegen::ir::{
    self, types, Block, Function, InstBuilder, MemFlags, MemFlagsData, Opcode, StackSlotData, StackSlotKind, Type,
    UserFuncName, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

use crate::compiled::Target;
use crate::isa::{Instruction, MemSize, Reg, Width, STACK_FRAME_SIZE};
use crate::program::{Module, Program};
use crate::verifier::Verified;

use super::codegen::{new_function, SymbolTable};
use super::edge_constants::constants_on_edges;
use super::load_combine::{remove_unused_loads, ByteAssemblies, Combination, CombinedLoad};
use super::narrow_compare::{constant, narrow_compares};
use super::plan::FunctionPlan;
use super::runtime_env::{MapDataLayout, RuntimeEnvironment};
use super::stack_stores::{keeps_window_open, ConstantRegisters, PendingStackStores};
use super::LowerError;

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
    target: Target,
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
            plan: FunctionPlan::new(verified, index, map_data),
            promoted: BTreeMap::new(),
            target,
            constant_key: None,
            latch_copies: BTreeMap::new(),
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
    /// What the pre-passes decided for the current function (see `plan`).
    plan: FunctionPlan,
    /// The variables of the plan's promoted stack slots, by offset from `r10` (see `stack_slots`).
    promoted: BTreeMap<i16, Variable>,
    target: Target,
    /// For the instruction being translated, when it is an inline array lookup ([`FunctionPlan::array_lookup`]):
    /// its key, if `r2` is `r10 + k` and the 4 bytes there were just stored as constants in this block (clang's
    /// `u32 zero = 0; bpf_map_lookup_elem(&m, &zero)`). Still stored for whatever reads them later.
    constant_key: Option<u32>,
    /// The block holding a copy of a loop latch for each conditional skip to it the plan picked, by the slot of
    /// the skip's jump ([`FunctionPlan::latch_copy`]).
    latch_copies: BTreeMap<usize, Block>,
}

/// Values every instruction of a function may need.
struct Frame {
    regs: [Variable; Reg::COUNT],
    context: Value,
    runtime_context: Value,
    /// The entry block's zero: the value of every register that holds nothing meaningful (see `clobber_scratch`).
    zero: Value,
    /// The flags of every program load ([`FunctionTranslator::program_load_flags`]), interned once: the
    /// `InstBuilder` load methods take the flags' data and look it up in the function's flag set (a hash) at
    /// every load.
    program_loads: MemFlags,
    /// Each variable's value at the current position, for the variables the current block has read or written
    /// through [`Frame::use_var`] / [`Frame::def_var`]. `FunctionBuilder::use_var` consults the SSA builder's
    /// per-block state at every read (~200 instructions), though within one block a variable keeps the value it
    /// was last given or found to have. Emptied whenever the builder changes block ([`Frame::switch_to_block`]),
    /// so the translation reads, writes and switches only through the frame once it exists.
    values: RefCell<Vec<Option<Value>>>,
}

impl Frame {
    /// `var`'s value here (`FunctionBuilder::use_var`).
    fn use_var(&self, b: &mut FunctionBuilder, var: Variable) -> Value {
        let mut values = self.values.borrow_mut();
        if let Some(Some(value)) = values.get(var.index()) {
            return *value;
        }
        let value = b.use_var(var);
        Self::remember(&mut values, var, value);
        value
    }

    /// Gives `var` the value `value` from here on (`FunctionBuilder::def_var`).
    fn def_var(&self, b: &mut FunctionBuilder, var: Variable, value: Value) {
        b.def_var(var, value);
        Self::remember(&mut self.values.borrow_mut(), var, value);
    }

    fn remember(values: &mut Vec<Option<Value>>, var: Variable, value: Value) {
        if values.len() <= var.index() {
            values.resize(var.index() + 1, None);
        }
        values[var.index()] = Some(value);
    }

    /// Continues in `block` (`FunctionBuilder::switch_to_block`), where no value is known yet.
    fn switch_to_block(&self, b: &mut FunctionBuilder, block: Block) {
        b.switch_to_block(block);
        self.values.borrow_mut().fill(None);
    }
}

/// What the walk over a block's instructions carries from one instruction to the next.
struct Walk {
    /// The last instruction ended the block (a jump or `exit`).
    terminated: bool,
    /// The registers known to hold a constant here.
    constants: ConstantRegisters,
    /// Constant stack stores buffered for merging (see `stack_stores`).
    pending: PendingStackStores,
    /// Byte loads that may assemble one wider value (see `load_combine`).
    assemblies: ByteAssemblies<Value>,
}

impl Default for Walk {
    fn default() -> Walk {
        // Nothing is translated yet: the first slot starts a block.
        Walk {
            terminated: true,
            constants: ConstantRegisters::default(),
            pending: PendingStackStores::default(),
            assemblies: ByteAssemblies::default(),
        }
    }
}

impl Walk {
    /// Starts a block whose entry knows `constants`; pending stores were written before the previous block ended.
    fn enter(&mut self, constants: ConstantRegisters) {
        self.constants = constants;
        self.assemblies.clear();
    }
}

impl FunctionTranslator<'_> {
    /// One Cranelift block per verifier block leader of the function `start..end`, created in the order a scan of
    /// the code meets them: the function start, then for each jump its target before its fall-through. Block
    /// numbers break ties in Cranelift's block ordering and register allocation, so the creation order is part of
    /// the generated code: creating them in slot order instead made `branchy` 1.35x of clang -O2 where this
    /// order gives 1.13x (BENCHMARKS.md, bisected to the typed-gate commit 5fa39c9).
    fn leader_blocks(&self, b: &mut FunctionBuilder, start: usize, end: usize) -> Vec<Option<Block>> {
        let control_flow = self.verified.control_flow();
        let mut block_at: Vec<Option<Block>> = vec![None; end - start];
        let mut create = |slot: i64, b: &mut FunctionBuilder| {
            let in_function = slot >= start as i64 && slot < end as i64;
            if in_function && control_flow.is_block_leader(slot as usize) && block_at[slot as usize - start].is_none() {
                block_at[slot as usize - start] = Some(b.create_block());
            }
        };
        create(start as i64, b);
        for pc in start..end {
            let insn = &self.program.instructions[pc];
            if let Some(target) = insn.jump_target(pc) {
                create(target, b);
            }
            if matches!(insn, Instruction::Jump { .. } | Instruction::JumpIf { .. } | Instruction::Exit) {
                create(pc as i64 + 1, b);
            }
        }
        // Every leader has a block, whichever way the verifier found it.
        for pc in start..end {
            create(pc as i64, b);
        }
        block_at
    }
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
        let mut func = new_function(UserFuncName::user(1, self.index as u32), sig);
        let mut b = FunctionBuilder::new(&mut func, fctx);

        // Blocks: the verifier's block leaders (function start, jump targets, the instruction after every jump or
        // exit).
        let block_at = self.leader_blocks(&mut b, pf.start, pf.end);
        self.latch_copies = self.plan.latch_copies().map(|(skip, _)| (skip, b.create_block())).collect();

        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let regs: [Variable; Reg::COUNT] = std::array::from_fn(|_| b.declare_var(types::I64));
        let zero = b.ins().iconst(types::I64, 0);
        for r in regs {
            b.def_var(r, zero);
        }
        let program_loads = b.func.dfg.mem_flags.insert_unchecked(self.program_load_flags());
        let frame = Self::function_frame(&mut b, regs, &params, zero, program_loads, is_entry.then_some(frames));
        // A function that never writes memory, never calls and has no loop reads memory that cannot change while it
        // runs, and every use of a load is dominated by the load itself: the load may then be placed at its use
        // (Cranelift's `can_move`) without ever running on a path where the original would not have run. This
        // matters for long straight-line code such as a fully unrolled hash, where Cranelift otherwise keeps every
        // load at its original place ahead of the arithmetic it feeds, and hundreds of loaded values are live at
        // once (`FunctionPlan::movable_loads`, `program_load`). Spill slots that no pointer can reach become SSA
        // variables (see `stack_slots::promotable_slots`).
        self.promoted = (self.plan.promoted_slots.iter().copied())
            .map(|offset| {
                let var = b.declare_var(types::I64);
                // A verified program may reload a slot before writing it, but never uses that undefined value
                // (docs/verifier.md §2); defining it as zero keeps every SSA use well-defined.
                frame.def_var(&mut b, var, zero);
                (offset, var)
            })
            .collect();
        let first = block_at[0].expect("function start is a leader");
        b.ins().jump(first, &[]);

        let mut walk = Walk::default();
        for pc in pf.start..pf.end {
            if let Some(block) = block_at[pc - pf.start] {
                if !walk.terminated {
                    Self::flush_stack_stores(&mut b, &frame, &mut walk.pending);
                    self.jump_to(&mut b, &frame, &block_at, pf.start, pc)?;
                }
                frame.switch_to_block(&mut b, block);
                walk.enter(self.plan.constants_at(pc)); // what every path into it agrees on (`plan`)
            } else if walk.terminated {
                continue; // An lddw continuation after a terminator, or dead code without a label.
            }
            self.translate_slot(&mut b, &frame, &block_at, pf.start, pc, &mut walk)?;
        }
        Self::flush_stack_stores(&mut b, &frame, &mut walk.pending);
        if !walk.terminated {
            // Falling off the end of a function: the verifier rejects it; never reached at run time.
            b.ins().trap(ir::TrapCode::unwrap_user(1));
        }
        // The loop latch copies that conditional skips enter (`latch_copy`): the latch's instructions again,
        // ending in its own conditional jump.
        for (skip, latch) in self.plan.latch_copies().collect::<Vec<_>>() {
            frame.switch_to_block(&mut b, self.latch_copies[&skip]);
            self.translate_latch(&mut b, &frame, &block_at, pf.start, latch.first, latch.jump)?;
        }
        b.seal_all_blocks();
        b.finalize(frontend);
        remove_unused_loads(&mut func);
        narrow_compares(&mut func);
        constants_on_edges(&mut func);
        Ok(func)
    }

    /// Ends the current block by going to the block at (absolute) slot `target`: a `jump`, or, when that block is a
    /// short loop latch (`FunctionPlan::latch_at`), its instructions translated here again, closing conditional jump
    /// included ([`FunctionTranslator::translate_latch`]).
    fn jump_to(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        target: usize,
    ) -> Result<(), LowerError> {
        let Some(last) = self.plan.latch_at(target) else {
            b.ins().jump(block_at[target - start].expect("jump targets are leaders"), &[]);
            return Ok(());
        };
        self.translate_latch(b, frame, block_at, start, target, last)
    }

    /// Translates the loop latch `first..=jump` (absolute slots) again into the current block. The latch holds only
    /// ALU operations and its closing conditional jump, so the copy starts from what every path into the latch
    /// agrees on (no pending stack store, no byte assembly) and ends where the original's jump goes.
    fn translate_latch(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        first: usize,
        jump: usize,
    ) -> Result<(), LowerError> {
        let mut walk = Walk::default();
        walk.enter(self.plan.constants_at(first));
        for pc in first..=jump {
            self.translate_slot(b, frame, block_at, start, pc, &mut walk)?;
        }
        debug_assert!(walk.terminated, "a latch copy ends in its conditional jump");
        Ok(())
    }

    /// Translates the instruction at `pc` in the current block, carrying `walk` from the instruction before it.
    fn translate_slot(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        pc: usize,
        walk: &mut Walk,
    ) -> Result<(), LowerError> {
        let insn = self.program.instructions[pc];
        walk.terminated = false;
        if self.plan.is_omitted(pc) {
            // A zero-extension the verifier proved leaves its register unchanged (see `plan`): no code, and
            // every register, constant and byte assembly tracked here stays as it was.
            return Ok(());
        }
        let combination = walk.assemblies.update(&insn, |r| frame.use_var(b, frame.regs[r.index()]));
        if let Instruction::Store { size, dst: Reg::FP, offset, src } = insn {
            if let Some(value) = walk.constants.operand(src).filter(|_| !self.promoted.contains_key(&offset)) {
                walk.pending.push(offset, size, value);
                return Ok(());
            }
        }
        self.constant_key = self.stored_key(pc, &walk.constants, &walk.pending);
        if !keeps_window_open(&insn) {
            Self::flush_stack_stores(b, frame, &mut walk.pending);
        }
        walk.constants.update(&insn);
        if self.translate_promoted_access(b, frame, insn)
            || combination == Combination::Redundant
            || Self::translate_constant_store(b, frame, insn, &walk.constants)
        {
            return Ok(());
        }
        walk.terminated = self.translate_instruction(b, frame, block_at, start, pc, insn)?;
        if let Combination::Load { dst, load } = combination {
            let value = self.combined_load(b, frame, load);
            frame.def_var(b, frame.regs[dst.index()], value);
        }
        Ok(())
    }

    /// The registers' first values and the [`Frame`] of a function with parameters `params`: the entry function (with
    /// `entry_frames` eBPF frames) gets `r1 = context` and `r10` at the top of its own stack; a subprogram gets r1–r5
    /// and its `r10` from its caller.
    fn function_frame(
        b: &mut FunctionBuilder,
        regs: [Variable; Reg::COUNT],
        params: &[Value],
        zero: Value,
        program_loads: MemFlags,
        entry_frames: Option<u32>,
    ) -> Frame {
        if let Some(frames) = entry_frames {
            let size = STACK_FRAME_SIZE * frames;
            let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 4));
            let base = b.ins().stack_addr(types::I64, slot, 0);
            let top = b.ins().iadd_imm_s(base, size as i64);
            b.def_var(regs[1], params[0]);
            b.def_var(regs[10], top);
            Frame {
                regs,
                context: params[0],
                runtime_context: params[1],
                zero,
                program_loads,
                values: RefCell::default(),
            }
        } else {
            for (i, r) in [1, 2, 3, 4, 5, 10].into_iter().enumerate() {
                b.def_var(regs[r], params[i]);
            }
            Frame {
                regs,
                context: params[6],
                runtime_context: params[7],
                zero,
                program_loads,
                values: RefCell::default(),
            }
        }
    }

    /// The key of the inline array lookup at `pc` when the block just stored it as a constant at `r2`'s stack
    /// address (see `constant_key`): the buffered bytes are what memory holds there.
    fn stored_key(&self, pc: usize, constants: &ConstantRegisters, pending: &PendingStackStores) -> Option<u32> {
        self.plan.array_lookup(pc).and(constants.frame_offset(Reg::R2)).and_then(|k| pending.word(k))
    }

    /// Translates an access to a stack slot kept in an SSA variable; returns false if `insn` is not one.
    fn translate_promoted_access(&self, b: &mut FunctionBuilder, frame: &Frame, insn: Instruction) -> bool {
        match insn {
            Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset, src }
                if self.promoted.contains_key(&offset) =>
            {
                let value = Self::operand(b, frame, Width::W64, src);
                frame.def_var(b, self.promoted[&offset], value);
                true
            }
            Instruction::Load { size: MemSize::DW, src: Reg::FP, offset, dst, .. }
                if self.promoted.contains_key(&offset) =>
            {
                let value = frame.use_var(b, self.promoted[&offset]);
                frame.def_var(b, frame.regs[dst.index()], value);
                true
            }
            _ => false,
        }
    }

    /// Runs the fall-through `path` of a conditional jump unconditionally, then keeps each variable it wrote only if
    /// the jump falls through (see `if_conversion`). `conditions` is (the jump falls through, the jump is taken).
    ///
    /// The select is `select(falls_through, new, old)` rather than `select(taken, old, new)`: Cranelift's x64 `cmov`
    /// overwrites the register of the select's last operand, and the variable's old value usually dies here and
    /// sits in the register a loop carries the variable in, so the kept value stays in that register instead of
    /// being moved back into it on every back edge (`branchy`'s word count). A constant new value stays last: as
    /// the `cmov`'s source it would become a load from the constant pool.
    fn translate_speculated_path(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        (falls_through, taken): (Value, Value),
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
        let before: Vec<Value> = written.iter().map(|&v| frame.use_var(b, v)).collect();
        for &slot in path {
            let insn = self.program.instructions[start + slot];
            if self.plan.is_omitted(start + slot) {
                continue;
            }
            if !self.translate_promoted_access(b, frame, insn) {
                self.translate_instruction(b, frame, block_at, start, start + slot, insn)?;
            }
        }
        for (variable, old) in written.into_iter().zip(before) {
            let new = frame.use_var(b, variable);
            if new != old {
                let kept = if constant(&b.func.dfg, new).is_some() {
                    b.ins().select(taken, old, new)
                } else {
                    b.ins().select(falls_through, new, old)
                };
                frame.def_var(b, variable, kept);
            }
        }
        Ok(())
    }

    /// A program load of `size` bytes at `base + offset`, sign- or zero-extended to 64 bits as RFC 9669 §5.1
    /// says, as one extending load (`uload8` … `sload32`) where Cranelift's x64 and ARM64 backends emit the same
    /// `movz`/`movs`/`ldr` for it as for a load and an extension. In a function whose loads may move
    /// ([`FunctionPlan::movable_loads`]) the load is readonly, notrap and can_move: a pure value Cranelift's e-graph
    /// places at its use, which the patched Cranelift (`vendor/cranelift-codegen`) allows for the extending loads
    /// too; one instruction per eBPF load instead of two is ~13 % of the instructions of lowering `unrolled_xdp`
    /// (BPF2SYS-PATCH.md). A 4-byte load there stays a `load.i32` and an extension: a 32-bit ALU operation reads its
    /// operands through `ireduce.i32`, which the e-graph folds with the extension back to the `i32` load, and x64 then
    /// uses that load as the operation's memory operand; nothing folds `ireduce` of a `uload32`.
    fn program_load(
        &self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        size: MemSize,
        signed: bool,
        base: Value,
        offset: i16,
    ) -> Value {
        let offset = i32::from(offset);
        if self.plan.movable_loads && size == MemSize::W {
            let loaded = Self::load(b, frame, Opcode::Load, types::I32, base, offset);
            return if signed { b.ins().sextend(types::I64, loaded) } else { b.ins().uextend(types::I64, loaded) };
        }
        let opcode = match (size, signed) {
            (MemSize::B, false) => Opcode::Uload8,
            (MemSize::B, true) => Opcode::Sload8,
            (MemSize::H, false) => Opcode::Uload16,
            (MemSize::H, true) => Opcode::Sload16,
            (MemSize::W, false) => Opcode::Uload32,
            (MemSize::W, true) => Opcode::Sload32,
            (MemSize::DW, _) => Opcode::Load,
        };
        // Every extending load's controlling type is its `i64` result (`uload32`/`sload32` take it from the
        // address, also `i64`).
        Self::load(b, frame, opcode, types::I64, base, offset)
    }

    /// The flags of a program load: readonly, notrap and can_move where the plan lets loads move, notrap elsewhere.
    fn program_load_flags(&self) -> MemFlagsData {
        if self.plan.movable_loads {
            mem().with_readonly().with_notrap().with_can_move()
        } else {
            load_flags()
        }
    }

    /// One program load (`opcode` of the `Load` format, controlling type `ty`) with the function's interned flags:
    /// what `b.ins().uload8(...)` and the like build, without their per-call lookup of the flags.
    fn load(b: &mut FunctionBuilder, frame: &Frame, opcode: Opcode, ty: Type, base: Value, offset: i32) -> Value {
        let (inst, dfg) = b.ins().Load(opcode, ty, frame.program_loads, offset.into(), base);
        dfg.first_result(inst)
    }

    /// The one load that replaces a register assembled from byte loads, zero-extended like every eBPF load.
    fn combined_load(&self, b: &mut FunctionBuilder, frame: &Frame, load: CombinedLoad<Value>) -> Value {
        if !load.byte_swapped {
            return self.program_load(b, frame, load.size, false, load.base, load.offset);
        }
        let ty = Self::memory_type(load.size);
        let loaded = Self::load(b, frame, Opcode::Load, ty, load.base, i32::from(load.offset));
        let value = b.ins().bswap(loaded);
        if ty == types::I64 {
            value
        } else {
            b.ins().uextend(types::I64, value)
        }
    }

    /// Translates a store of an immediate or of a register `constants` knows ([`Self::store_constant`]); returns false
    /// if `insn` is not one.
    fn translate_constant_store(
        b: &mut FunctionBuilder,
        frame: &Frame,
        insn: Instruction,
        constants: &ConstantRegisters,
    ) -> bool {
        let Instruction::Store { size, dst, offset, src } = insn else { return false };
        let Some(value) = constants.operand(src) else { return false };
        Self::store_constant(b, frame, size, dst, offset, value);
        true
    }

    /// A store of an immediate or of a register known to hold `value` (see `plan::block_entry_constants`): the
    /// constant as an `iconst` of the access's own width, written with `store`. Only in that shape does Cranelift's
    /// x64 backend store the constant as an immediate (`mov $imm, mem`); a narrowing `istore8/16/32` of a 64-bit
    /// constant first materialises it in a register, inside a loop on every iteration, since Cranelift
    /// rematerialises constants at their uses (`sieve`'s marking loop). The bytes written are the low `size` bytes
    /// of `value` either way (RFC 9669 §5.2).
    fn store_constant(b: &mut FunctionBuilder, frame: &Frame, size: MemSize, dst: Reg, offset: i16, value: u64) {
        let addr = frame.use_var(b, frame.regs[dst.index()]);
        let bits = size.bytes() * 8;
        // Cranelift wants narrow constants zero-extended.
        let value = if bits == 64 { value } else { value & ((1u64 << bits) - 1) };
        let constant = b.ins().iconst(Self::memory_type(size), value as i64);
        b.ins().store(mem(), constant, addr, i32::from(offset));
    }

    /// Writes the buffered constant stack stores as merged, naturally aligned stores.
    fn flush_stack_stores(b: &mut FunctionBuilder, frame: &Frame, pending: &mut PendingStackStores) {
        if pending.is_empty() {
            return;
        }
        let fp = frame.use_var(b, frame.regs[Reg::FP.index()]);
        for store in pending.chunks() {
            let ty = Self::memory_type(store.size);
            // Cranelift wants narrow constants zero-extended; `chunks` only fills the low `size` bytes.
            let value = b.ins().iconst(ty, store.value as i64);
            b.ins().store(mem(), value, fp, store.offset);
        }
    }
}
