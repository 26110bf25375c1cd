//! The reference interpreter: the executable specification of RFC 9669 that native code is diffed against.
//!
//! In: a program as [`Instruction`]s indexed by slot (from [`crate::isa::decode`], the assembler or the front
//! end), a [`Memory`] holding the regions the host mapped (context, packet, map values, a test buffer), entry
//! values for r1..r5, and a [`Host`] that provides helpers and resolves `lddw` pseudo sources.
//! Out: r0 at the outermost `exit`, or an [`InterpError`] naming the slot and what went wrong.
//!
//! Semantics, each cited where it is implemented:
//! - ALU (RFC 9669 §4.1): 32-bit operations use the low 32 bits and zero-extend the result; 64-bit immediates
//!   are sign-extended; shift counts are masked to the operand width; `x / 0 = 0`; `x % 0 = x`;
//!   `INT_MIN / -1 = INT_MIN` and `INT_MIN % -1 = 0` for the signed forms; `movsx` sign-extends.
//! - Byte order (§4.2): `le` truncates (the target is little-endian), `be` and `bswap` swap and zero-extend.
//! - Jumps (§4.3): 32-bit forms compare the low 32 bits; immediates of 64-bit compares are sign-extended.
//! - Memory (§5): every access is checked against the mapped regions; `ldxs` sign-extends; atomics (§5.3) are
//!   read-modify-write on one region, `fetch` returns the old value zero-extended, `cmpxchg` compares with r0.
//! - Legacy packet loads (§5.5): `r0 = ntoh(packet[offset..offset + size])` through the context's data/data_end
//!   fields ([`Config::packet_fields`]); out of bounds ends the program with 0; r1..r5 become undefined.
//! - Calls: helpers take r1..r5 and return r0, after which r1..r5 are undefined. A local call (src 1) gets a
//!   fresh 512-byte stack and its own r10; r6..r9 are restored when it returns; at most
//!   [`Config::max_call_depth`] frames exist at once (Linux's MAX_CALL_FRAMES, 8).
//!
//! Beyond the RFC, the interpreter refuses what a sound verifier must also refuse, so it can serve as the oracle
//! of verifier soundness fuzzing: using a register that holds no defined value (at entry every register but
//! r10 and the arguments the caller passed; r1..r5 after a call; r0 and r6..r9 on entry to a subprogram; r0
//! after a subprogram that did not set it), using stack bytes never written, writing r10. Undefined values are
//! tracked as poison, as PREVAIL does: a `mov` copies it, a load of never-written stack bytes gives an undefined
//! register, and a store of an undefined register makes stack bytes unwritten again (anywhere else it is an
//! error). Every *use* traps: an ALU operand, an address, a comparison, a helper argument, an atomic operand,
//! r0 at the program's exit. An instruction
//! budget stops non-terminating programs, so a test cannot hang.
//!
//! Errors are values: nothing a program does can make the interpreter panic or touch host memory.
//!
//! # Example
//!
//! A host with one helper that returns a pointer into a map value it maps on demand, and a program that
//! increments the value through that pointer and reads a packet through its context:
//!
//! ```
//! use bpf2sys::interp::{Access, HelperArgs, HelperOutcome, Host, HostError, Interpreter, Memory, RegionId};
//! use bpf2sys::isa::asm::assemble;
//!
//! struct CounterHost {
//!     value: Option<RegionId>,
//! }
//!
//! impl Host for CounterHost {
//!     fn call_helper(&mut self, id: i32, _args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError> {
//!         match id {
//!             // lookup(): the address of an 8-byte value, mapped the first time.
//!             1 => {
//!                 let value = *self
//!                     .value
//!                     .get_or_insert_with(|| memory.add_region("counter", vec![0; 8], Access::ReadWrite));
//!                 Ok(HelperOutcome::Return(value.base()))
//!             }
//!             _ => Err(HostError::UnknownHelper { id }),
//!         }
//!     }
//! }
//!
//! let mut memory = Memory::new();
//! let packet = memory.add_region("packet", vec![0x45, 0x00, 0x00, 0x54], Access::ReadOnly);
//! // The context holds data and data_end, as an XDP context does.
//! let mut context = packet.base().to_le_bytes().to_vec();
//! context.extend((packet.base() + 4).to_le_bytes());
//! let context = memory.add_region("context", context, Access::ReadOnly);
//!
//! let program = assemble(
//!     "mov %r6, %r1
//!      call 1
//!      mov %r1, 1
//!      lock add [%r0], %r1
//!      ldxdw %r2, [%r6]
//!      ldxb %r0, [%r2]
//!      exit",
//! )
//! .unwrap();
//! let mut host = CounterHost { value: None };
//! let r0 = Interpreter::new(&program).run(&[context.base()], &mut memory, &mut host).unwrap();
//! assert_eq!(r0, 0x45);
//! assert_eq!(memory.read_uint(host.value.unwrap().base(), bpf2sys::isa::MemSize::DW).unwrap(), 1);
//!
//! // Writing the read-only packet is an error value naming the slot and the region.
//! let program = assemble("ldxdw %r2, [%r1]\nstb [%r2], 0\nmov %r0, 0\nexit").unwrap();
//! let error = Interpreter::new(&program).run(&[context.base()], &mut memory, &mut host).unwrap_err();
//! assert_eq!(error.pc, 1);
//! assert!(error.to_string().contains("read-only packet"), "{error}");
//! ```

pub mod memory;

use crate::isa::semantics::{
    eval_alu, eval_byte_order, eval_jump_condition, legacy_packet_in_bounds, legacy_packet_offset, legacy_packet_value,
    sign_extend_from, PacketFields,
};
use crate::isa::{AluOp, AtomicOp, Imm64Kind, Instruction, MemSize, Operand, PacketLoadMode, Reg};
pub use memory::{Access, AccessKind, Memory, MemoryError, Region, RegionId};

/// Size of each call frame's stack ([`crate::isa::STACK_FRAME_SIZE`]).
pub const STACK_SIZE: usize = crate::isa::STACK_FRAME_SIZE as usize;

/// Limits of one run, and where the context keeps the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Maximum number of instructions executed before [`InterpErrorKind::BudgetExhausted`].
    pub instruction_budget: u64,
    /// Maximum number of simultaneous call frames, the entry function's included.
    pub max_call_depth: usize,
    /// Whether stack frames track which bytes were written (so using never-written bytes is an error);
    /// otherwise they read as zero, and storing an undefined register to the stack is an error.
    pub check_uninitialized_stack: bool,
    /// Where legacy packet loads (RFC 9669 §5.5) find the packet in the context `r6` points to (the program type's
    /// context layout); `None` for a context without packet fields, where such a load is an error.
    pub packet_fields: Option<PacketFields>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instruction_budget: 1_000_000,
            max_call_depth: 8,
            check_uninitialized_stack: true,
            packet_fields: None,
        }
    }
}

/// What a helper call does to the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelperOutcome {
    /// Continue with r0 = the value.
    Return(u64),
    /// End the whole program now with r0 = the value (an "unwind" helper, or a tail call the host ran itself).
    Exit(u64),
}

/// The arguments r1..r5 of a helper call. An argument the caller never set is undefined; a helper that reads
/// it gets [`HostError::UndefinedArgument`], which is a program bug a verifier must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelperArgs {
    values: [Option<u64>; 5],
}

impl HelperArgs {
    pub fn new(values: [Option<u64>; 5]) -> HelperArgs {
        HelperArgs { values }
    }

    /// Argument `n` (1-based: `arg(1)` is r1).
    pub fn arg(&self, n: usize) -> Result<u64, HostError> {
        assert!((1..=5).contains(&n), "helper arguments are r1..r5");
        self.values[n - 1].ok_or(HostError::UndefinedArgument { reg: n as u8 })
    }

    /// Argument `n` if defined.
    pub fn get(&self, n: usize) -> Option<u64> {
        self.values.get(n.wrapping_sub(1)).copied().flatten()
    }
}

/// Why a host callback failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("unknown helper {id}")]
    UnknownHelper { id: i32 },
    #[error("helper argument r{reg} is undefined")]
    UndefinedArgument { reg: u8 },
    #[error("cannot resolve lddw {kind} imm={imm} next_imm={next_imm}: {reason}")]
    UnresolvedLoad { kind: &'static str, imm: i32, next_imm: i32, reason: String },
    #[error("BTF function calls (kfuncs) are not supported by this host (btf_id {btf_id}, module {module})")]
    UnsupportedBtfCall { btf_id: i32, module: i16 },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("{0}")]
    Failed(String),
}

/// The environment a program runs in: helpers, map and global-variable references. Runtime specifics live
/// behind this trait so that the interpreter itself is only RFC 9669.
pub trait Host {
    /// Calls helper `id` (`call imm` or `callx`). The helper may read and write through pointer arguments and
    /// map new regions (e.g. return a pointer into a map value) through `memory`.
    fn call_helper(&mut self, id: i32, args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError>;

    /// Resolves a `lddw` whose source is not a plain immediate (RFC 9669 §5.4): for
    /// [`Imm64Kind::MapIndex`] a map handle, for [`Imm64Kind::MapIndexValue`] the address of byte `next_imm` of
    /// the map's value, which must be mapped in `memory`.
    fn resolve_load_imm64(
        &mut self,
        kind: Imm64Kind,
        imm: i32,
        next_imm: i32,
        memory: &mut Memory,
    ) -> Result<u64, HostError> {
        let _ = memory;
        Err(HostError::UnresolvedLoad { kind: kind.name(), imm, next_imm, reason: "no maps in this host".into() })
    }

    /// Calls a BTF-resolved function (`call` with src 2).
    fn call_btf(
        &mut self,
        btf_id: i32,
        module: i16,
        args: HelperArgs,
        memory: &mut Memory,
    ) -> Result<HelperOutcome, HostError> {
        let _ = (args, memory);
        Err(HostError::UnsupportedBtfCall { btf_id, module })
    }
}

/// A run-time error, at slot `pc` in call depth `depth` (0 = the entry function).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("slot {pc}: {kind}")]
pub struct InterpError {
    pub pc: usize,
    pub depth: usize,
    pub kind: InterpErrorKind,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpErrorKind {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("read of {reg}, which holds no defined value")]
    UninitializedRegister { reg: Reg },
    #[error("write to the read-only frame pointer r10")]
    FramePointerWrite,
    #[error("{call}: {error}")]
    Host { call: HostCall, error: HostError },
    #[error("callx register holds {value:#x}, not a helper id")]
    InvalidCallTarget { value: u64 },
    #[error("call depth limit of {limit} frames exceeded")]
    CallDepthExceeded { limit: usize },
    #[error("instruction budget of {budget} exhausted")]
    BudgetExhausted { budget: u64 },
    #[error("control transfer to slot {target}, outside the program's {len} slots")]
    JumpOutOfRange { target: i64, len: usize },
    #[error("execution ran past the last slot without exit")]
    FellOffEnd,
    #[error("executed the second slot of a lddw (a jump into the middle of an instruction)")]
    ContinuationExecuted,
    #[error("legacy packet access ({mode}) needs a context with packet fields; this run has none")]
    LegacyPacketLoad { mode: &'static str },
}

/// Which host callback failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostCall {
    /// `call imm` (`via` = None) or `callx` through register `via`.
    Helper { id: i32, via: Option<Reg> },
    /// A `lddw` pseudo source.
    LoadImm64 { kind: Imm64Kind },
    /// `call` with src 2.
    Btf { btf_id: i32, module: i16 },
}

impl std::fmt::Display for HostCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostCall::Helper { id, via: None } => write!(f, "helper {id}"),
            HostCall::Helper { id, via: Some(reg) } => write!(f, "helper {id} (callx {reg})"),
            HostCall::LoadImm64 { kind } => write!(f, "lddw {}", kind.name()),
            HostCall::Btf { btf_id, module } => write!(f, "BTF function {btf_id} (module {module})"),
        }
    }
}

/// A saved caller frame.
struct Frame {
    return_pc: usize,
    /// The caller's r6..r9.
    callee_saved: [Option<u64>; 4],
    /// The caller's r10.
    frame_pointer: u64,
    /// The callee's stack, unmapped on return.
    callee_stack: RegionId,
}

/// Registers: `None` is "no defined value".
struct Registers([Option<u64>; Reg::COUNT]);

/// A program ready to run.
pub struct Interpreter<'p> {
    program: &'p [Instruction],
    config: Config,
}

impl<'p> Interpreter<'p> {
    pub fn new(program: &'p [Instruction]) -> Interpreter<'p> {
        Interpreter { program, config: Config::default() }
    }

    pub fn with_config(program: &'p [Instruction], config: Config) -> Interpreter<'p> {
        Interpreter { program, config }
    }

    /// Runs from slot 0 with r1.. set to `args` (the rest undefined) and returns r0 at the outermost `exit`.
    /// Stack frames are mapped in `memory` for the run and unmapped before returning; every other region stays
    /// as the program left it.
    ///
    /// # Panics
    /// If `args` has more than 5 values (eBPF passes r1..r5 only): a bug in the caller, not in the program.
    pub fn run(&self, args: &[u64], memory: &mut Memory, host: &mut dyn Host) -> Result<u64, InterpError> {
        self.run_inner(args, memory, host, None)
    }

    /// Like [`Interpreter::run`], calling `trace` before each instruction executes: to find the first point where
    /// native code and the specification diverge, or to count executed instructions.
    pub fn run_traced(
        &self,
        args: &[u64],
        memory: &mut Memory,
        host: &mut dyn Host,
        trace: &mut dyn FnMut(&TraceStep),
    ) -> Result<u64, InterpError> {
        self.run_inner(args, memory, host, Some(trace))
    }

    fn run_inner<'a>(
        &'a self,
        args: &[u64],
        memory: &'a mut Memory,
        host: &'a mut dyn Host,
        trace: Option<&'a mut dyn FnMut(&TraceStep)>,
    ) -> Result<u64, InterpError> {
        assert!(args.len() <= 5, "eBPF passes at most 5 arguments (r1..r5)");
        let mut run = Run {
            program: self.program,
            config: &self.config,
            memory,
            host,
            regs: Registers([None; Reg::COUNT]),
            frames: Vec::new(),
            entry_stack: None,
            pc: 0,
            executed: 0,
            trace,
        };
        for (i, &v) in args.iter().enumerate() {
            run.regs.0[i + 1] = Some(v);
        }
        let stack = run.map_stack(0);
        run.entry_stack = Some(stack);
        let result = run.execute();
        run.unmap_all_stacks();
        result
    }
}

/// The state of one run.
struct Run<'r> {
    program: &'r [Instruction],
    config: &'r Config,
    memory: &'r mut Memory,
    host: &'r mut dyn Host,
    regs: Registers,
    frames: Vec<Frame>,
    entry_stack: Option<RegionId>,
    pc: usize,
    executed: u64,
    trace: Option<&'r mut dyn FnMut(&TraceStep)>,
}

/// The machine state just before an instruction executes, for [`Interpreter::run_traced`].
#[derive(Debug)]
pub struct TraceStep<'a> {
    pub pc: usize,
    /// Call depth, 0 in the entry function.
    pub depth: usize,
    pub instruction: &'a Instruction,
    /// r0..r10; `None` where the register holds no defined value.
    pub registers: &'a [Option<u64>; Reg::COUNT],
}

/// Result of executing one instruction.
enum Step {
    /// Continue at this slot.
    Goto(usize),
    /// The program ended with this r0.
    Finished(u64),
}

impl Run<'_> {
    fn error(&self, kind: impl Into<InterpErrorKind>) -> InterpError {
        InterpError { pc: self.pc, depth: self.frames.len(), kind: kind.into() }
    }

    /// Maps a fresh stack for the frame at call depth `depth` and points r10 at its top.
    fn map_stack(&mut self, depth: usize) -> RegionId {
        let name = format!("stack frame {depth}");
        let id = if self.config.check_uninitialized_stack {
            self.memory.add_uninitialized_region(name, STACK_SIZE, Access::ReadWrite)
        } else {
            self.memory.add_region(name, vec![0; STACK_SIZE], Access::ReadWrite)
        };
        // r10 points one past the top of the frame; the program addresses it with negative offsets.
        self.regs.0[Reg::FP.index()] = Some(id.base() + STACK_SIZE as u64);
        id
    }

    fn unmap_all_stacks(&mut self) {
        for frame in std::mem::take(&mut self.frames) {
            self.memory.remove_region(frame.callee_stack);
        }
        if let Some(id) = self.entry_stack.take() {
            self.memory.remove_region(id);
        }
    }

    fn get(&self, reg: Reg) -> Result<u64, InterpError> {
        self.regs.0[reg.index()].ok_or_else(|| self.error(InterpErrorKind::UninitializedRegister { reg }))
    }

    /// Makes `reg` hold no defined value (a copy of an undefined value).
    fn set_undefined(&mut self, reg: Reg) -> Result<(), InterpError> {
        if reg == Reg::FP {
            return Err(self.error(InterpErrorKind::FramePointerWrite));
        }
        self.regs.0[reg.index()] = None;
        Ok(())
    }

    fn set(&mut self, reg: Reg, value: u64) -> Result<(), InterpError> {
        if reg == Reg::FP {
            return Err(self.error(InterpErrorKind::FramePointerWrite));
        }
        self.regs.0[reg.index()] = Some(value);
        Ok(())
    }

    /// The second operand of a 64-bit operation: immediates are sign-extended (RFC 9669 §4.1, §4.3).
    fn operand64(&self, src: Operand) -> Result<u64, InterpError> {
        match src {
            Operand::Reg(r) => self.get(r),
            Operand::Imm(i) => Ok(i as i64 as u64),
        }
    }

    /// Absolute slot of a relative transfer from the current slot, checked against the program.
    fn target(&self, offset: i64) -> Result<usize, InterpError> {
        let target = self.pc as i64 + 1 + offset;
        if target < 0 || target >= self.program.len() as i64 {
            return Err(self.error(InterpErrorKind::JumpOutOfRange { target, len: self.program.len() }));
        }
        Ok(target as usize)
    }

    fn memory_error(&self, e: MemoryError) -> InterpError {
        self.error(InterpErrorKind::Memory(e))
    }

    fn execute(&mut self) -> Result<u64, InterpError> {
        loop {
            if self.executed >= self.config.instruction_budget {
                return Err(self.error(InterpErrorKind::BudgetExhausted { budget: self.config.instruction_budget }));
            }
            self.executed += 1;
            let Some(&insn) = self.program.get(self.pc) else {
                return Err(self.error(InterpErrorKind::FellOffEnd));
            };
            if let Some(trace) = self.trace.as_mut() {
                trace(&TraceStep {
                    pc: self.pc,
                    depth: self.frames.len(),
                    instruction: &insn,
                    registers: &self.regs.0,
                });
            }
            match self.step(insn)? {
                Step::Goto(next) => self.pc = next,
                Step::Finished(r0) => return Ok(r0),
            }
        }
    }

    fn step(&mut self, insn: Instruction) -> Result<Step, InterpError> {
        let next = self.pc + 1;
        match insn {
            // ---- Arithmetic (RFC 9669 §4.1, §4.2) ----
            Instruction::Alu { op: AluOp::Mov, dst, src: Operand::Reg(src), .. }
                if self.regs.0[src.index()].is_none() =>
            {
                // Copying an undefined value is not a use: the copy is undefined too (either width).
                self.set_undefined(dst)?;
                Ok(Step::Goto(next))
            }
            Instruction::Alu { width, op, dst, src } => {
                // neg and mov do not read dst (reading it would report an uninitialised register).
                let d = if matches!(op, AluOp::Mov | AluOp::MovSx(_)) { 0 } else { self.get(dst)? };
                let s = if op == AluOp::Neg { 0 } else { self.operand64(src)? };
                self.set(dst, eval_alu(op, width, d, s))?;
                Ok(Step::Goto(next))
            }
            Instruction::Endian { order, bits, dst } => {
                let v = self.get(dst)?;
                self.set(dst, eval_byte_order(order, bits, v))?;
                Ok(Step::Goto(next))
            }
            Instruction::LoadImm64 { dst, kind, imm, next_imm } => {
                let value = match kind {
                    Imm64Kind::Imm => Instruction::imm64(imm, next_imm),
                    _ => self.host.resolve_load_imm64(kind, imm, next_imm, self.memory).map_err(|error| {
                        self.error(InterpErrorKind::Host { call: HostCall::LoadImm64 { kind }, error })
                    })?,
                };
                self.set(dst, value)?;
                Ok(Step::Goto(next + 1))
            }
            Instruction::LoadImm64Continuation => Err(self.error(InterpErrorKind::ContinuationExecuted)),

            // ---- Memory (RFC 9669 §5) ----
            Instruction::Load { size, sign_extend, dst, src, offset } => {
                self.load(size, sign_extend, dst, src, offset)?;
                Ok(Step::Goto(next))
            }
            Instruction::Store { size, dst, offset, src } => {
                self.store(size, dst, offset, src)?;
                Ok(Step::Goto(next))
            }
            Instruction::Atomic { size, op, fetch, dst, src, offset } => {
                self.atomic(size, op, fetch, dst, src, offset)?;
                Ok(Step::Goto(next))
            }
            Instruction::LegacyPacketLoad { mode, size, src, imm } => self.legacy_packet_load(mode, size, src, imm),

            // ---- Control flow (RFC 9669 §4.3) ----
            Instruction::Jump { offset, .. } => Ok(Step::Goto(self.target(offset as i64)?)),
            Instruction::JumpIf { width, cond, dst, src, offset } => {
                let d = self.get(dst)?;
                let s = self.operand64(src)?;
                let taken = eval_jump_condition(cond, width, d, s);
                // The target is checked even when not taken: a wild offset is a program error either way.
                let target = self.target(offset as i64)?;
                Ok(Step::Goto(if taken { target } else { next }))
            }
            Instruction::CallHelper { id } => self.call_helper(id, None),
            Instruction::CallReg { reg } => {
                let value = self.get(reg)?;
                let id = i32::try_from(value).map_err(|_| self.error(InterpErrorKind::InvalidCallTarget { value }))?;
                self.call_helper(id, Some(reg))
            }
            Instruction::CallBtf { btf_id, module } => {
                let args = self.helper_args();
                let outcome = self.host.call_btf(btf_id, module, args, self.memory).map_err(|error| {
                    self.error(InterpErrorKind::Host { call: HostCall::Btf { btf_id, module }, error })
                })?;
                self.after_call(outcome)
            }
            Instruction::CallLocal { offset } => {
                let target = self.target(offset as i64)?;
                if self.frames.len() + 1 >= self.config.max_call_depth {
                    return Err(self.error(InterpErrorKind::CallDepthExceeded { limit: self.config.max_call_depth }));
                }
                let r = &self.regs.0;
                let callee_saved = [r[6], r[7], r[8], r[9]];
                let frame_pointer = self.get(Reg::FP)?;
                let callee_stack = self.map_stack(self.frames.len() + 1);
                self.frames.push(Frame { return_pc: next, callee_saved, frame_pointer, callee_stack });
                // The callee sees only its arguments r1..r5 and its own r10.
                for r in [0, 6, 7, 8, 9] {
                    self.regs.0[r] = None;
                }
                Ok(Step::Goto(target))
            }
            Instruction::Exit => {
                // The program's result must be defined; a subprogram's r0 is passed back as it is (a `void`
                // function returns nothing, and only a caller that reads r0 is wrong), as Linux does.
                let Some(frame) = self.frames.pop() else {
                    return Ok(Step::Finished(self.get(Reg::R0)?));
                };
                self.memory.remove_region(frame.callee_stack);
                for (i, v) in frame.callee_saved.into_iter().enumerate() {
                    self.regs.0[6 + i] = v;
                }
                self.regs.0[Reg::FP.index()] = Some(frame.frame_pointer);
                self.clobber_arguments();
                Ok(Step::Goto(frame.return_pc))
            }
        }
    }

    /// RFC 9669 §5.1 load. Reading never-written stack bytes is not a use: the register becomes undefined.
    fn load(&mut self, size: MemSize, sign_extend: bool, dst: Reg, src: Reg, offset: i16) -> Result<(), InterpError> {
        let addr = self.get(src)?.wrapping_add(offset as i64 as u64);
        match self.memory.read_uint(addr, size) {
            Ok(raw) => self.set(dst, if sign_extend { sign_extend_from(raw, size.bytes() * 8) } else { raw }),
            Err(MemoryError::Uninitialized { .. }) => self.set_undefined(dst),
            Err(e) => Err(self.memory_error(e)),
        }
    }

    /// RFC 9669 §5.1 store. Storing an undefined register is not a use, but only a region that tracks
    /// initialisation (a stack frame) can hold it: its bytes become unwritten again.
    fn store(&mut self, size: MemSize, dst: Reg, offset: i16, src: Operand) -> Result<(), InterpError> {
        let addr = self.get(dst)?.wrapping_add(offset as i64 as u64);
        let result = match src {
            Operand::Reg(r) if self.regs.0[r.index()].is_none() => {
                self.memory.write_undefined(addr, size.bytes() as usize)
            }
            _ => {
                let value = self.operand64(src)?;
                self.memory.write_uint(addr, size, value)
            }
        };
        result.map_err(|e| self.memory_error(e))
    }

    /// Legacy packet load (RFC 9669 §5.5, Linux `gen_ld_abs`): `r0 = ntoh(*(size *)(data + offset))` with the packet
    /// found through the context in r6 (`data`/`data_end` fields, [`Config::packet_fields`]); an out-of-bounds
    /// access ends the program with r0 = 0. Like a helper call (Linux implements it as one) it leaves r1..r5
    /// undefined.
    fn legacy_packet_load(
        &mut self,
        mode: PacketLoadMode,
        size: MemSize,
        src: Reg,
        imm: i32,
    ) -> Result<Step, InterpError> {
        let Some(fields) = self.config.packet_fields else {
            let mode = match mode {
                PacketLoadMode::Abs => "LD_ABS",
                PacketLoadMode::Ind => "LD_IND",
            };
            return Err(self.error(InterpErrorKind::LegacyPacketLoad { mode }));
        };
        let context = self.get(Reg::R6)?;
        let src_value = if mode == PacketLoadMode::Ind { self.get(src)? } else { 0 };
        let field = |run: &Self, offset: u32| {
            run.memory.read_uint(context.wrapping_add(offset as u64), fields.width).map_err(|e| run.memory_error(e))
        };
        let data = field(self, fields.data)?;
        let data_end = field(self, fields.data_end)?;
        let offset = legacy_packet_offset(mode, src_value, imm);
        if !legacy_packet_in_bounds(offset, size, data_end.saturating_sub(data)) {
            return Ok(Step::Finished(0));
        }
        let raw = self.memory.read_uint(data + offset as u64, size).map_err(|e| self.memory_error(e))?;
        self.regs.0[0] = Some(legacy_packet_value(size, raw));
        self.clobber_arguments();
        Ok(Step::Goto(self.pc + 1))
    }

    fn helper_args(&self) -> HelperArgs {
        let r = &self.regs.0;
        HelperArgs::new([r[1], r[2], r[3], r[4], r[5]])
    }

    /// r1..r5 are caller-saved: undefined after any call.
    fn clobber_arguments(&mut self) {
        for r in 1..=5 {
            self.regs.0[r] = None;
        }
    }

    fn call_helper(&mut self, id: i32, via: Option<Reg>) -> Result<Step, InterpError> {
        let args = self.helper_args();
        let outcome = self
            .host
            .call_helper(id, args, self.memory)
            .map_err(|error| self.error(InterpErrorKind::Host { call: HostCall::Helper { id, via }, error }))?;
        self.after_call(outcome)
    }

    fn after_call(&mut self, outcome: HelperOutcome) -> Result<Step, InterpError> {
        match outcome {
            HelperOutcome::Return(r0) => {
                self.regs.0[0] = Some(r0);
                self.clobber_arguments();
                Ok(Step::Goto(self.pc + 1))
            }
            HelperOutcome::Exit(r0) => Ok(Step::Finished(r0)),
        }
    }

    /// RFC 9669 §5.3. The read and the write hit the same bytes, so a region check on the read covers both
    /// (except writability, checked by the write).
    fn atomic(
        &mut self,
        size: MemSize,
        op: AtomicOp,
        fetch: bool,
        dst: Reg,
        src: Reg,
        offset: i16,
    ) -> Result<(), InterpError> {
        let addr = self.get(dst)?.wrapping_add(offset as i64 as u64);
        let operand = self.get(src)?;
        let old = self.memory.read_uint(addr, size).map_err(|e| self.memory_error(e))?;
        let mask = if size == MemSize::W { u32::MAX as u64 } else { u64::MAX };
        let new = match op {
            AtomicOp::Add => old.wrapping_add(operand) & mask,
            AtomicOp::Or => old | (operand & mask),
            AtomicOp::And => old & operand,
            AtomicOp::Xor => old ^ (operand & mask),
            AtomicOp::Xchg => operand & mask,
            AtomicOp::CmpXchg => {
                let expected = self.get(Reg::R0)? & mask;
                if old == expected {
                    operand & mask
                } else {
                    old
                }
            }
        };
        // Like x86 `lock cmpxchg`, a failed compare still writes (the old value): read-only memory is refused.
        self.memory.write_uint(addr, size, new).map_err(|e| self.memory_error(e))?;
        // The old value is returned zero-extended: in r0 for cmpxchg, in src for the other fetching forms.
        match op {
            AtomicOp::CmpXchg => self.set(Reg::R0, old)?,
            _ if fetch => self.set(src, old)?,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
