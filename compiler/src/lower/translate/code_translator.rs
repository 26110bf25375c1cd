//! Per-instruction translation, one function per operator group (in the manner of wasmtime's
//! `code_translator`): ALU and byte order (RFC 9669 §4.1–4.2), 64-bit immediates and runtime objects (§5.4,
//! contract §5.4), memory (§5.1–5.3), control flow (§4.3), calls (contract §5.1–5.3). Each group's `match` covers
//! its instructions; [`FunctionTranslator::translate_instruction`] dispatches on the group.

use cranelift_codegen::ir::condcodes::{CondCode, IntCC};
use cranelift_codegen::ir::{self, types, AtomicRmwOp, Block, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;

use crate::compiled::{RelocTarget, Target};
use crate::isa::{
    AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width,
    STACK_FRAME_SIZE,
};
use crate::platform::windows::{HELPER_MAP_LOOKUP_ELEM, HELPER_TAIL_CALL};
use crate::verifier::CallxTarget;

use super::super::plan::{ArrayLookup, JumpLowering};
use super::super::runtime_env::RuntimeEnvironment;
use super::super::LowerError;
use super::{function_symbol, load_flags, mem, Frame, FunctionTranslator};

impl FunctionTranslator<'_> {
    /// Translates one instruction; returns whether it ended the block.
    pub(super) fn translate_instruction(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        pc: usize,
        insn: Instruction,
    ) -> Result<bool, LowerError> {
        match insn {
            Instruction::Alu { width, op, dst, src } => self.translate_alu(b, frame, pc, width, op, dst, src)?,
            Instruction::Endian { order, bits, dst } => self.translate_byte_order(b, frame, pc, order, bits, dst)?,
            Instruction::LoadImm64 { dst, kind, imm, next_imm } => {
                self.translate_load_imm64(b, frame, pc, dst, kind, imm, next_imm)?
            }
            Instruction::LoadImm64Continuation => {}
            Instruction::Load { .. }
            | Instruction::Store { .. }
            | Instruction::Atomic { .. }
            | Instruction::LegacyPacketLoad { .. } => self.translate_memory(b, frame, pc, insn)?,
            Instruction::Jump { .. } | Instruction::JumpIf { .. } | Instruction::Exit => {
                return self.translate_control_flow(b, frame, block_at, start, pc, insn)
            }
            Instruction::CallHelper { .. }
            | Instruction::CallReg { .. }
            | Instruction::CallLocal { .. }
            | Instruction::CallBtf { .. } => return self.translate_call(b, frame, pc, insn),
        }
        Ok(false)
    }

    /// ALU (RFC 9669 §4.1): 64-bit on `i64`; 32-bit on the `i32` halves, zero-extended.
    #[allow(clippy::too_many_arguments)] // the fields of one instruction
    fn translate_alu(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        width: Width,
        op: AluOp,
        dst: Reg,
        src: Operand,
    ) -> Result<(), LowerError> {
        let reg = |r: Reg| frame.regs[r.index()];
        let ty = Self::ty(width);
        let s = Self::operand(b, frame, width, src);
        // `mov` does not read its destination. Reading it anyway would make the old value look live, and
        // cranelift-frontend would keep it alive around loops as a block parameter.
        let d = if matches!(op, AluOp::Mov | AluOp::MovSx(_)) {
            s
        } else {
            let d64 = frame.use_var(b, reg(dst));
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
        frame.def_var(b, reg(dst), result);
        Ok(())
    }

    /// Byte order (RFC 9669 §4.2) on a little-endian target: `le` truncates, `be`/`bswap` swap.
    fn translate_byte_order(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        order: ByteOrder,
        bits: u32,
        dst: Reg,
    ) -> Result<(), LowerError> {
        let v = frame.use_var(b, frame.regs[dst.index()]);
        let narrow = match bits {
            16 => types::I16,
            32 => types::I32,
            64 => types::I64,
            other => return Err(self.unsupported(pc, format!("byte swap of {other} bits"))),
        };
        let low = if narrow == types::I64 { v } else { b.ins().ireduce(narrow, v) };
        let value = match order {
            ByteOrder::ToLe => low,
            ByteOrder::ToBe | ByteOrder::Swap => b.ins().bswap(low),
        };
        let value = if narrow == types::I64 { value } else { b.ins().uextend(types::I64, value) };
        frame.def_var(b, frame.regs[dst.index()], value);
        Ok(())
    }

    /// 64-bit immediates and runtime objects (RFC 9669 §5.4, contract §5.4): constants, map addresses from
    /// `map_data`, global-variable addresses from `global_variable_section_data`.
    #[allow(clippy::too_many_arguments)] // the fields of one instruction
    fn translate_load_imm64(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        dst: Reg,
        kind: Imm64Kind,
        imm: i32,
        next_imm: i32,
    ) -> Result<(), LowerError> {
        let value = match kind {
            Imm64Kind::Imm => b.ins().iconst(types::I64, Instruction::imm64(imm, next_imm) as i64),
            Imm64Kind::MapIndex => {
                let map = self.map_index(pc, imm)?;
                self.env.map_address(b, frame.runtime_context, map)
            }
            Imm64Kind::MapIndexValue => {
                let map = self.map_index(pc, imm)?;
                self.env
                    .global_address(b, frame.runtime_context, map, next_imm as u32)
                    .ok_or_else(|| self.unsupported(pc, format!("map {map} is not a global-variable section")))?
            }
            other => return Err(self.unsupported(pc, format!("lddw {} is not supported", other.name()))),
        };
        frame.def_var(b, frame.regs[dst.index()], value);
        Ok(())
    }

    /// Memory (RFC 9669 §5.1–5.3): plain loads and stores at `reg + offset` (the verifier proved them in bounds),
    /// sequentially consistent atomics.
    fn translate_memory(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        insn: Instruction,
    ) -> Result<(), LowerError> {
        let reg = |r: Reg| frame.regs[r.index()];
        match insn {
            Instruction::Load { size, sign_extend, dst, src, offset } => {
                let addr = frame.use_var(b, reg(src));
                let value = self.program_load(b, frame, size, sign_extend, addr, offset);
                frame.def_var(b, reg(dst), value);
            }
            Instruction::Store { size, dst, offset, src } => {
                let addr = frame.use_var(b, reg(dst));
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
                self.translate_atomic(b, frame, pc, size, op, fetch, dst, src, offset)?
            }
            Instruction::LegacyPacketLoad { mode, size, src, imm } => {
                self.translate_legacy_packet_load(b, frame, pc, mode, size, src, imm)?
            }
            other => unreachable!("not a memory instruction: {other:?}"),
        }
        Ok(())
    }

    /// Legacy packet load (RFC 9669 §5.5; semantics in `isa::semantics::legacy_packet_*`): reads `data` and
    /// `data_end` from the context in r6 at the offsets the program type's layout gives
    /// ([`crate::verifier::Verified::packet_fields`]), returns 0 from the program unless `[offset, offset + size)`
    /// lies in `[0, data_end - data)`, and otherwise loads the bytes and converts them from network byte order.
    /// The bounds check is the whole safety argument (the verifier proves r6 is that context and the load is in
    /// the entry function, where returning ends the program). r1–r5 are clobbered as after a helper call.
    #[allow(clippy::too_many_arguments)] // the fields of one instruction
    fn translate_legacy_packet_load(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        mode: PacketLoadMode,
        size: MemSize,
        src: Reg,
        imm: i32,
    ) -> Result<(), LowerError> {
        let reg = |r: Reg| frame.regs[r.index()];
        let Some(fields) = self.verified.packet_fields() else {
            return Err(self.unsupported(pc, "legacy packet load in a program type whose context has no packet"));
        };
        if self.index != 0 {
            return Err(self.unsupported(pc, "legacy packet load inside a local function"));
        }
        let value_type = match size {
            MemSize::DW => return Err(self.unsupported(pc, "8-byte legacy packet load")),
            other => Self::memory_type(other),
        };
        let field_type = match fields.width {
            MemSize::DW => types::I64,
            other => return Err(self.unsupported(pc, format!("{}-byte packet pointer fields", other.bytes()))),
        };
        let flags = load_flags();
        let context = frame.use_var(b, reg(Reg::R6));
        let data = b.ins().load(field_type, flags, context, fields.data as i32);
        let data_end = b.ins().load(field_type, flags, context, fields.data_end as i32);
        // The offset is a 32-bit sum read as signed (Linux's `int offset`), so `offset + size` cannot wrap in 64 bits.
        let offset = match mode {
            PacketLoadMode::Abs => b.ins().iconst(types::I32, imm as u32 as i64),
            PacketLoadMode::Ind => {
                let s = frame.use_var(b, reg(src));
                let s = b.ins().ireduce(types::I32, s);
                b.ins().iadd_imm_s(s, imm as i64)
            }
        };
        let offset = b.ins().sextend(types::I64, offset);
        let len = b.ins().isub(data_end, data);
        let limit = b.ins().iadd_imm_s(offset, size.bytes() as i64);
        let non_negative = b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, offset, 0);
        let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, limit, len);
        let in_bounds = b.ins().band(non_negative, fits);
        let load = b.create_block();
        let out_of_bounds = b.create_block();
        b.ins().brif(in_bounds, load, &[], out_of_bounds, &[]);
        frame.switch_to_block(b, out_of_bounds);
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().return_(&[zero]);
        frame.switch_to_block(b, load);
        let addr = b.ins().iadd(data, offset);
        let raw = b.ins().load(value_type, flags, addr, 0);
        let host_order = if size == MemSize::B { raw } else { b.ins().bswap(raw) };
        let value = b.ins().uextend(types::I64, host_order);
        frame.def_var(b, reg(Reg::R0), value);
        Self::clobber_scratch(b, frame);
        Ok(())
    }

    /// Atomics (RFC 9669 §5.3): `atomic_rmw` / `atomic_cas`, `lock`-prefixed on x64 like bpf2c's `Interlocked*`.
    #[allow(clippy::too_many_arguments)] // the fields of one instruction
    fn translate_atomic(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        size: MemSize,
        op: AtomicOp,
        fetch: bool,
        dst: Reg,
        src: Reg,
        offset: i16,
    ) -> Result<(), LowerError> {
        let reg = |r: Reg| frame.regs[r.index()];
        let ty = match size {
            MemSize::W => types::I32,
            MemSize::DW => types::I64,
            other => return Err(self.unsupported(pc, format!("atomic access of {} bytes", other.bytes()))),
        };
        let base = frame.use_var(b, reg(dst));
        let addr = b.ins().iadd_imm_s(base, offset as i64);
        let narrow = |b: &mut FunctionBuilder, v: Value| if ty == types::I64 { v } else { b.ins().ireduce(ty, v) };
        let widen =
            |b: &mut FunctionBuilder, v: Value| if ty == types::I64 { v } else { b.ins().uextend(types::I64, v) };
        let s64 = frame.use_var(b, reg(src));
        let s = narrow(b, s64);
        if self.verified.is_stack_atomic(pc) {
            self.plain_stack_atomic(b, frame, ty, op, fetch, src, addr, s);
            return Ok(());
        }
        let rmw = match op {
            AtomicOp::CmpXchg => {
                let r0 = frame.use_var(b, reg(Reg::R0));
                let expected = narrow(b, r0);
                let expected = self.cas_comparand(b, ty, expected);
                let old = b.ins().atomic_cas(mem(), addr, expected, s);
                let old = widen(b, old);
                frame.def_var(b, reg(Reg::R0), old);
                return Ok(());
            }
            AtomicOp::Add => AtomicRmwOp::Add,
            AtomicOp::Or => AtomicRmwOp::Or,
            AtomicOp::And => AtomicRmwOp::And,
            AtomicOp::Xor => AtomicRmwOp::Xor,
            AtomicOp::Xchg => AtomicRmwOp::Xchg,
        };
        let old = b.ins().atomic_rmw(ty, mem(), rmw, addr, s);
        if fetch || op == AtomicOp::Xchg {
            let old = widen(b, old);
            frame.def_var(b, reg(src), old);
        }
        Ok(())
    }

    /// An atomic on the invocation's own stack (the verifier proved the address is stack in every execution,
    /// [`crate::verifier::Verified::is_stack_atomic`]): a plain load, operation and store. No other CPU can see the frame, so this
    /// gives the RFC 9669 §5.3 result without `lock`/exclusive accesses, and a misaligned address (which the
    /// verifier allows only here) does not fault on ARM64. `cmpxchg` stores `src` if the loaded value equals the
    /// low `ty` bits of r0 and otherwise stores the loaded value back; r0 gets the old value zero-extended.
    #[allow(clippy::too_many_arguments)] // the fields of one instruction, already turned into values
    fn plain_stack_atomic(
        &self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        ty: Type,
        op: AtomicOp,
        fetch: bool,
        src: Reg,
        addr: Value,
        s: Value,
    ) {
        let reg = |r: Reg| frame.regs[r.index()];
        let old = b.ins().load(ty, mem(), addr, 0);
        let (new, result_reg) = match op {
            AtomicOp::Add => (b.ins().iadd(old, s), fetch.then_some(src)),
            AtomicOp::Or => (b.ins().bor(old, s), fetch.then_some(src)),
            AtomicOp::And => (b.ins().band(old, s), fetch.then_some(src)),
            AtomicOp::Xor => (b.ins().bxor(old, s), fetch.then_some(src)),
            AtomicOp::Xchg => (s, Some(src)),
            AtomicOp::CmpXchg => {
                let r0 = frame.use_var(b, reg(Reg::R0));
                let expected = if ty == types::I64 { r0 } else { b.ins().ireduce(ty, r0) };
                let equal = b.ins().icmp(IntCC::Equal, old, expected);
                (b.ins().select(equal, s, old), Some(Reg::R0))
            }
        };
        b.ins().store(mem(), new, addr, 0);
        if let Some(r) = result_reg {
            let old = if ty == types::I64 { old } else { b.ins().uextend(types::I64, old) };
            frame.def_var(b, reg(r), old);
        }
    }

    /// The comparand of an `atomic_cas` of type `ty`. RFC 9669 §5.3: a 32-bit `cmpxchg` compares the low 32 bits
    /// of r0. Cranelift's AArch64 CAS loop (ARMv8.0, no LSE) compares the zero-extended loaded word with all 64
    /// bits of the comparand's register (`ldaxr w27, [x25]; cmp x27, x26`), while an `i32` value's upper register
    /// bits are undefined (here: r0's upper half), so the exchange would fail whenever r0's upper half is not
    /// zero. A 32-bit acquire load writes a W register, zero-extending it; going through a stack slot with
    /// atomic accesses keeps any pass from forwarding the value around the load. x64's `lock cmpxchg` compares
    /// 32 bits and needs nothing.
    fn cas_comparand(&self, b: &mut FunctionBuilder, ty: Type, expected: Value) -> Value {
        if ty != types::I32 || self.target != Target::Arm64 {
            return expected;
        }
        let slot = b.create_sized_stack_slot(ir::StackSlotData::new(ir::StackSlotKind::ExplicitSlot, 4, 2));
        let addr = b.ins().stack_addr(types::I64, slot, 0);
        let flags = ir::MemFlagsData::trusted();
        b.ins().atomic_store(flags, expected, addr);
        b.ins().atomic_load(types::I32, flags, addr)
    }

    /// Control flow (RFC 9669 §4.3): `ja` → `jump`, conditional jumps → `brif` (or selects over a short
    /// effect-free fall-through path, `if_conversion`), `exit` → `return r0`. Always ends the block.
    fn translate_control_flow(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        block_at: &[Option<Block>],
        start: usize,
        pc: usize,
        insn: Instruction,
    ) -> Result<bool, LowerError> {
        let block = |slot: i64| block_at[slot as usize - start].expect("jump targets are leaders");
        match insn {
            Instruction::Jump { .. } => {
                let target = insn.jump_target(pc).expect("jump") as usize;
                self.jump_to(b, frame, block_at, start, target)?;
            }
            Instruction::JumpIf { width, cond, dst, src, .. } => {
                let target = insn.jump_target(pc).expect("jump");
                let lowering = self.plan.jump(pc).clone();
                if let JumpLowering::Goto { taken } = lowering {
                    // The verifier proved the direction (see `plan`): no comparison.
                    b.ins().jump(block(if taken { target } else { pc as i64 + 1 }), &[]);
                    return Ok(true);
                }
                let s = Self::operand(b, frame, width, src);
                let d64 = frame.use_var(b, frame.regs[dst.index()]);
                let d = if width == Width::W32 { b.ins().ireduce(types::I32, d64) } else { d64 };
                // A skip to a loop latch that enters a copy of it, and a rotated loop header's jump (`latch_copy`),
                // compare for the other edge, so that the copy or the target is the branch's second successor:
                // Cranelift places that one right after the block.
                let second = match (&lowering, self.latch_copies.get(&pc)) {
                    (_, Some(&copy)) => Some(copy),
                    (JumpLowering::BranchTargetNext, None) => Some(block(target)),
                    _ => None,
                };
                let condition = |b: &mut FunctionBuilder, inverted: bool| match jump_condition(cond) {
                    Some(cc) => {
                        let cc = if inverted { cc.complement() } else { cc };
                        b.ins().icmp(cc, d, s)
                    }
                    None => {
                        let bits = b.ins().band(d, s);
                        b.ins().icmp_imm_s(if inverted { IntCC::Equal } else { IntCC::NotEqual }, bits, 0)
                    }
                };
                if let JumpLowering::Select { path } = lowering {
                    // Both conditions: `translate_speculated_path` picks per select (the unused one is dead code).
                    let conditions = (condition(b, true), condition(b, false));
                    self.translate_speculated_path(b, frame, block_at, start, conditions, &path)?;
                    self.jump_to(b, frame, block_at, start, target as usize)?;
                    return Ok(true);
                }
                // `taken` is "the jump falls through" when inverted.
                let taken = condition(b, second.is_some());
                match second {
                    Some(second) => {
                        b.ins().brif(taken, block(pc as i64 + 1), &[], second, &[]);
                    }
                    None => {
                        b.ins().brif(taken, block(target), &[], block(pc as i64 + 1), &[]);
                    }
                }
            }
            Instruction::Exit => {
                let r0 = frame.use_var(b, frame.regs[0]);
                // `FunctionPlan::cold_returns`; Cranelift rejects a cold entry block, and the entry never holds an
                // `exit` (translation enters the first slot's block by a jump), but check rather than assume.
                let here = b.current_block().filter(|&here| Some(here) != b.func.layout.entry_block());
                if let Some(here) = here.filter(|_| self.plan.cold_returns) {
                    b.set_cold_block(here);
                }
                b.ins().return_(&[r0]);
            }
            other => unreachable!("not a control-flow instruction: {other:?}"),
        }
        Ok(true)
    }

    /// Calls (contract §5.1–5.3): helpers through `helper_data`, `callx` to the helper the verifier proved, local
    /// functions with `r10 − 512` as the callee's frame. Returns whether the block ended.
    fn translate_call(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        insn: Instruction,
    ) -> Result<bool, LowerError> {
        match insn {
            Instruction::CallHelper { id } => self.call_helper(b, frame, pc, id as u32)?,
            Instruction::CallReg { reg } => match self.verified.callx_target(pc) {
                CallxTarget::Helper(id) => self.call_helper(b, frame, pc, id)?,
                CallxTarget::Unreachable => {
                    // Never executed (the verifier found no path here): nothing to call.
                    b.ins().trap(ir::TrapCode::unwrap_user(1));
                    return Ok(true);
                }
                CallxTarget::PerCallingContext => {
                    return Err(self.unsupported(
                        pc,
                        format!("callx {reg} calls a different helper from each call site of its function"),
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
                    args.push(frame.use_var(b, frame.regs[r]));
                }
                let r10 = frame.use_var(b, frame.regs[10]);
                args.push(b.ins().iadd_imm_s(r10, -(STACK_FRAME_SIZE as i64)));
                args.push(frame.context);
                args.push(frame.runtime_context);
                let call = b.ins().call(fref, &args);
                let r0 = b.inst_results(call)[0];
                frame.def_var(b, frame.regs[0], r0);
                Self::clobber_scratch(b, frame);
            }
            Instruction::CallBtf { btf_id, module: 0 } => {
                let address = u32::try_from(btf_id)
                    .ok()
                    .and_then(|id| self.env.kfunc_address(b, frame.runtime_context, id))
                    .ok_or_else(|| {
                        self.unsupported(pc, format!("kfunc id {btf_id} is not in the module's kfunc table"))
                    })?;
                self.call_indirect_helper(b, frame, address);
            }
            Instruction::CallBtf { .. } => {
                return Err(self.unsupported(pc, "kfunc calls naming a module BTF fd index are not supported"))
            }
            other => unreachable!("not a call: {other:?}"),
        }
        Ok(false)
    }

    pub(super) fn operand(b: &mut FunctionBuilder, frame: &Frame, width: Width, src: Operand) -> Value {
        match (width, src) {
            (Width::W64, Operand::Reg(r)) => frame.use_var(b, frame.regs[r.index()]),
            (Width::W64, Operand::Imm(i)) => b.ins().iconst(types::I64, i as i64),
            (Width::W32, Operand::Reg(r)) => {
                let v = frame.use_var(b, frame.regs[r.index()]);
                b.ins().ireduce(types::I32, v)
            }
            (Width::W32, Operand::Imm(i)) => b.ins().iconst(types::I32, i as u32 as i64),
        }
    }

    /// The integer type of a `size`-byte memory access.
    pub(super) fn memory_type(size: MemSize) -> Type {
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

    fn map_index(&mut self, pc: usize, imm: i32) -> Result<usize, LowerError> {
        let map = usize::try_from(imm).ok().filter(|&m| m < self.module.maps.len()).ok_or_else(|| {
            self.unsupported(pc, format!("lddw refers to map index {imm}, the module has {}", self.module.maps.len()))
        })?;
        self.referenced_maps.insert(map as u16);
        Ok(map)
    }

    /// `r0 = address(r1..r5, context)` with the `helper_function_t` ABI (helpers and kfuncs alike).
    fn call_indirect_helper(&mut self, b: &mut FunctionBuilder, frame: &Frame, address: Value) -> Value {
        let sig = b.import_signature(RuntimeEnvironment::helper_signature());
        let mut args = Vec::with_capacity(6);
        for r in 1..=5 {
            args.push(frame.use_var(b, frame.regs[r]));
        }
        args.push(frame.context);
        let call = b.ins().call_indirect(sig, address, &args);
        let r0 = b.inst_results(call)[0];
        frame.def_var(b, frame.regs[0], r0);
        Self::clobber_scratch(b, frame);
        r0
    }

    /// `r0 = helper_data[i].address(r1..r5, context)`; after `bpf_tail_call`, `if (r0 == 0) return 0`. A
    /// `bpf_map_lookup_elem` the plan lowers inline ([`ArrayLookup`]) calls nothing.
    fn call_helper(&mut self, b: &mut FunctionBuilder, frame: &Frame, pc: usize, id: u32) -> Result<(), LowerError> {
        if let Some(lookup) = self.plan.array_lookup(pc).filter(|_| id == HELPER_MAP_LOOKUP_ELEM) {
            return self.inline_array_lookup(b, frame, pc, lookup);
        }
        let address = self
            .env
            .helper_address(b, frame.runtime_context, id)
            .ok_or_else(|| self.unsupported(pc, format!("helper {id} is missing from the helper table")))?;
        let r0 = self.call_indirect_helper(b, frame, address);
        if id == HELPER_TAIL_CALL {
            let done = b.create_block();
            let cont = b.create_block();
            b.ins().brif(r0, cont, &[], done, &[]);
            frame.switch_to_block(b, done);
            let zero = b.ins().iconst(types::I64, 0);
            b.ins().return_(&[zero]);
            frame.switch_to_block(b, cont);
        }
        Ok(())
    }

    /// `bpf_map_lookup_elem` on the one `ARRAY` map the verifier proved `r1` is (contract §5.2, as bpf2c inlines it):
    /// `key = *(u32 *)r2; r0 = key < max_entries ? map_data[m].array_data + key * value_size : 0`, the value the
    /// runtime's array lookup returns. The verifier proved the 4 key bytes at `r2` readable (the map's key size);
    /// a key the block just stored as a constant (`constant_key`) is used as that constant. r1–r5 are clobbered as
    /// by the call, and `m` is referenced so the runtime fills `map_data[m]` (§3.3).
    fn inline_array_lookup(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &Frame,
        pc: usize,
        lookup: ArrayLookup,
    ) -> Result<(), LowerError> {
        let ArrayLookup { map, max_entries, value_size } = lookup;
        let base = self
            .env
            .array_data(b, frame.runtime_context, map)
            .ok_or_else(|| self.unsupported(pc, "inline array lookup for a runtime without map_data.array_data"))?;
        self.referenced_maps.insert(map as u16);
        if let Some(key) = self.constant_key.take() {
            // A key known at compile time: either always in range (a non-null pointer) or never (null).
            let r0 = if key < max_entries {
                b.ins().iadd_imm_s(base, (u64::from(key) * u64::from(value_size)) as i64)
            } else {
                frame.zero
            };
            frame.def_var(b, frame.regs[0], r0);
            Self::clobber_scratch(b, frame);
            return Ok(());
        }
        let r2 = frame.use_var(b, frame.regs[2]);
        let key = b.ins().load(types::I32, load_flags(), r2, 0);
        let key = b.ins().uextend(types::I64, key);
        // key < 2^32 and value_size < 2^32: the product fits in 64 bits.
        let offset = if value_size.is_power_of_two() {
            b.ins().ishl_imm_u(key, i64::from(value_size.trailing_zeros()))
        } else {
            b.ins().imul_imm_u(key, i64::from(value_size))
        };
        let address = b.ins().iadd(base, offset);
        let in_range = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, key, i64::from(max_entries));
        let r0 = b.ins().select(in_range, address, frame.zero);
        frame.def_var(b, frame.regs[0], r0);
        Self::clobber_scratch(b, frame);
        Ok(())
    }

    /// After a call, r1–r5 hold nothing a program may read (RFC 9669 §2.4: they are scratch registers; the verifier
    /// rejects reads of them before they are written again). Giving them the one shared zero instead of keeping
    /// their old values ends those values' lives at the call: otherwise an argument computed in a loop stays
    /// live around the loop as a block parameter, and every constant argument becomes a loop-carried value.
    fn clobber_scratch(b: &mut FunctionBuilder, frame: &Frame) {
        for r in 1..=5 {
            frame.def_var(b, frame.regs[r], frame.zero);
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

/// The Cranelift comparison of a conditional jump (RFC 9669 §4.3); `None` for `jset`, which tests `dst & src`.
fn jump_condition(cond: JumpCond) -> Option<IntCC> {
    Some(match cond {
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
        JumpCond::Set => return None,
    })
}
