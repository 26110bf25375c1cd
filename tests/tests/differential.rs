//! Differential testing: random well-formed programs must give the same r0 and the same buffer contents when run
//! by the reference interpreter and as bpf2sys's native code, x64 (in-process) and ARM64 (emulated).
//!
//! Programs cover ALU32/ALU64 (every operation, register and immediate sources with edge values), byte swaps,
//! `lddw`, loads and stores on the stack and on a 64-byte buffer (all sizes, sign-extending loads), atomics
//! (every operation, fetch forms, W and DW; on the buffer as real atomics, on the stack, also misaligned, as the
//! plain load-op-store lowering gives them), conditional jumps (all predicates, JMP and JMP32), `ja`/`gotol`,
//! bounded loops, helper calls (the conformance "unwind" helper 5) and local calls into subprograms.
//!
//! The generator keeps programs verifier-clean: r9 (the buffer) and r10 (the stack) are the only pointers and
//! never flow into scalars, every register is written before it is read (r1..r5 are re-written after calls),
//! stack bytes are initialised before use, and loops are counted down in r8 which their bodies do not write.
//! The interpreter enforces all of this, so a generator mistake fails loudly instead of hiding a divergence.
//!
//! Case counts: `BPF2SYS_DIFF_CASES` for x64 (default 8000, about 30 s here) and `BPF2SYS_DIFF_ARM64_CASES` for
//! ARM64 (default 2000; each program is emulated). A diverging seed is printed by proptest; add it to
//! `regressions` below as a named test.

use std::ffi::c_void;

use bpf2sys::compiled::Target;
use bpf2sys::interp::{Access, HelperArgs, HelperOutcome, Host, HostError, Interpreter, Memory};
use bpf2sys::isa::{AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};
use bpf2sys_tests::arm64::Arm64Program;
use bpf2sys_tests::native::{conformance_helper, module_from_instructions, HostRuntime, NativeProgram};
use bpf2sys_tests::support::SplitMix64 as Rng;
use proptest::prelude::*;

const BUFFER_SIZE: usize = 64;
const STACK_WINDOW: i16 = 64;

/// The immediates the generator draws: edge values most of the time.
trait Immediates {
    fn imm(&mut self) -> i32;
    fn imm64(&mut self) -> u64;
}
impl Immediates for Rng {
    fn imm(&mut self) -> i32 {
        match self.below(8) {
            0 => 0,
            1 => 1,
            2 => -1,
            3 => i32::MIN,
            4 => i32::MAX,
            5 => self.below(64) as i32,
            _ => self.next_u64() as i32,
        }
    }
    fn imm64(&mut self) -> u64 {
        match self.below(6) {
            0 => i64::MIN as u64,
            1 => u64::MAX,
            2 => 0x8000_0000,
            3 => self.below(1 << 20),
            _ => self.next_u64(),
        }
    }
}

const SCALARS: [u8; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
const BUFFER: Reg = Reg::R9;
const LOOP_COUNTER: u8 = 8;

struct Generator {
    rng: Rng,
    out: Vec<I>,
    defined: [bool; 11],
    in_loop: bool,
    /// Entry slots of generated subprograms are resolved after generation: (call slot, subprogram index).
    calls: Vec<(usize, usize)>,
    subprograms: usize,
    budget: usize,
}

fn reg(n: u8) -> Reg {
    Reg::new(n).expect("register number")
}

impl Generator {
    fn mov_imm(&mut self, dst: u8) {
        let v = self.rng.imm();
        self.out.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: reg(dst), src: Operand::Imm(v) });
        self.defined[dst as usize] = true;
    }

    fn writable(&mut self) -> u8 {
        loop {
            let r = self.rng.pick(&SCALARS);
            if !(self.in_loop && r == LOOP_COUNTER) {
                return r;
            }
        }
    }

    /// A scalar register holding a defined value (defining one first if needed).
    fn readable(&mut self) -> u8 {
        let r = self.rng.pick(&SCALARS);
        if !self.defined[r as usize] {
            if self.in_loop && r == LOOP_COUNTER {
                unreachable!("the loop counter is always defined inside its loop");
            }
            self.mov_imm(r);
        }
        r
    }

    fn defined_dst(&mut self) -> u8 {
        let r = self.writable();
        if !self.defined[r as usize] {
            self.mov_imm(r);
        }
        r
    }

    fn operand(&mut self) -> Operand {
        if self.rng.chance(50) {
            Operand::Reg(reg(self.readable()))
        } else {
            Operand::Imm(self.rng.imm())
        }
    }

    /// A memory operand of `size` bytes: (base register, offset), naturally aligned.
    fn address(&mut self, size: MemSize) -> (Reg, i16) {
        let bytes = size.bytes() as i16;
        let slots = (BUFFER_SIZE as i16) / bytes;
        let index = self.rng.below(slots as u64) as i16;
        if self.rng.chance(50) {
            (BUFFER, index * bytes)
        } else {
            (Reg::FP, -STACK_WINDOW + index * bytes)
        }
    }

    fn prologue(&mut self, entry: bool) {
        self.out.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: BUFFER, src: Operand::Reg(Reg::R1) });
        self.defined = [false; 11];
        self.defined[9] = true;
        self.defined[10] = true;
        // The entry function overwrites r1 (the buffer pointer, kept in r9); a subprogram keeps the scalars its
        // caller passed in r2 and r3.
        let initialise: &[u8] = if entry { &[0, 1, 2, 3, 4, 5, 6, 7, 8] } else { &[0, 1, 4, 5, 6, 7, 8] };
        for &r in initialise {
            if self.rng.chance(20) {
                let v = self.rng.imm64();
                self.out.push(I::LoadImm64 {
                    dst: reg(r),
                    kind: Imm64Kind::Imm,
                    imm: v as u32 as i32,
                    next_imm: (v >> 32) as u32 as i32,
                });
                self.out.push(I::LoadImm64Continuation);
                self.defined[r as usize] = true;
            } else {
                self.mov_imm(r);
            }
        }
        if !entry {
            self.defined[2] = true;
            self.defined[3] = true;
        }
        for k in 0..(STACK_WINDOW / 8) {
            let imm = self.rng.imm();
            self.out.push(I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8 - 8 * k, src: Operand::Imm(imm) });
        }
    }

    fn block(&mut self, statements: usize, depth: usize, entry: bool) {
        for _ in 0..statements {
            if self.budget == 0 {
                return;
            }
            self.budget -= 1;
            self.statement(depth, entry);
        }
    }

    fn statement(&mut self, depth: usize, entry: bool) {
        let kind = self.rng.below(100);
        match kind {
            0..=34 => self.alu(),
            35..=39 => {
                let dst = self.defined_dst();
                let order = self.rng.pick(&[ByteOrder::ToLe, ByteOrder::ToBe, ByteOrder::Swap]);
                let bits = self.rng.pick(&[16, 32, 64]);
                self.out.push(I::Endian { order, bits, dst: reg(dst) });
            }
            40..=42 => {
                let dst = self.writable();
                let v = self.rng.imm64();
                self.out.push(I::LoadImm64 {
                    dst: reg(dst),
                    kind: Imm64Kind::Imm,
                    imm: v as u32 as i32,
                    next_imm: (v >> 32) as u32 as i32,
                });
                self.out.push(I::LoadImm64Continuation);
                self.defined[dst as usize] = true;
            }
            43..=52 => {
                let size = self.rng.pick(&[MemSize::B, MemSize::H, MemSize::W, MemSize::DW]);
                let sign_extend = size != MemSize::DW && self.rng.chance(30);
                let (base, offset) = self.address(size);
                let dst = self.writable();
                self.out.push(I::Load { size, sign_extend, dst: reg(dst), src: base, offset });
                self.defined[dst as usize] = true;
            }
            53..=62 => {
                let size = self.rng.pick(&[MemSize::B, MemSize::H, MemSize::W, MemSize::DW]);
                let (base, offset) = self.address(size);
                let src =
                    if self.rng.chance(50) { Operand::Reg(reg(self.readable())) } else { Operand::Imm(self.rng.imm()) };
                self.out.push(I::Store { size, dst: base, offset, src });
            }
            63..=69 => self.atomic(),
            70..=81 if depth < 3 => self.conditional(depth, entry),
            82..=85 if depth < 3 && !self.in_loop => self.counted_loop(depth, entry),
            86..=88 if depth < 3 => {
                // ja / gotol over a block that is never executed.
                let long = self.rng.chance(50);
                let at = self.out.push_slot();
                let saved = self.defined;
                let n = 1 + self.rng.below(3) as usize;
                self.block(n, depth + 1, entry);
                self.defined = saved;
                let offset = (self.out.len() - at - 1) as i32;
                self.out[at] = I::Jump { offset, long };
            }
            89..=92 => {
                // Helper 5 returns r1; r1 = 0 ends the program with r0 = 0 (the tail-call/unwind rule).
                // In a subprogram bpf2sys, like bpf2c, returns 0 from the subprogram only (contract §5.2), while the
                // interpreter ends the program, so r1 = 0 is generated in the entry function only.
                let v = if entry && self.rng.chance(10) { 0 } else { self.rng.imm() | 1 };
                self.out.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R1, src: Operand::Imm(v) });
                if self.rng.chance(30) {
                    self.out.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R2, src: Operand::Imm(5) });
                    self.out.push(I::CallReg { reg: Reg::R2 });
                } else {
                    self.out.push(I::CallHelper { id: 5 });
                }
                self.after_call();
            }
            93..=99 if entry && self.subprograms > 0 => {
                self.out.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R1, src: Operand::Reg(BUFFER) });
                for r in [2, 3] {
                    if !self.defined[r] {
                        self.mov_imm(r as u8);
                    }
                }
                let target = self.rng.below(self.subprograms as u64) as usize;
                self.calls.push((self.out.len(), target));
                self.out.push(I::CallLocal { offset: 0 });
                self.after_call();
            }
            _ => self.alu(),
        }
    }

    fn after_call(&mut self) {
        for r in 1..=5 {
            self.defined[r] = false;
        }
        self.defined[0] = true;
    }

    fn alu(&mut self) {
        let width = if self.rng.chance(50) { Width::W64 } else { Width::W32 };
        let op = self.rng.pick(&[
            AluOp::Add,
            AluOp::Sub,
            AluOp::Mul,
            AluOp::Div,
            AluOp::SDiv,
            AluOp::Or,
            AluOp::And,
            AluOp::Lsh,
            AluOp::Rsh,
            AluOp::Neg,
            AluOp::Mod,
            AluOp::SMod,
            AluOp::Xor,
            AluOp::Mov,
            AluOp::MovSx(8),
            AluOp::MovSx(16),
            AluOp::MovSx(32),
            AluOp::Arsh,
        ]);
        let op = match (op, width) {
            (AluOp::MovSx(32), Width::W32) => AluOp::MovSx(16),
            (op, _) => op,
        };
        let src = match op {
            AluOp::Neg => Operand::Imm(0),
            AluOp::MovSx(_) => Operand::Reg(reg(self.readable())),
            _ => self.operand(),
        };
        let dst = if matches!(op, AluOp::Mov | AluOp::MovSx(_)) { self.writable() } else { self.defined_dst() };
        self.out.push(I::Alu { width, op, dst: reg(dst), src });
        self.defined[dst as usize] = true;
    }

    fn atomic(&mut self) {
        let size = self.rng.pick(&[MemSize::W, MemSize::DW]);
        let (base, mut offset) = self.address(size);
        if base == Reg::FP && self.rng.chance(50) {
            // A stack atomic may be misaligned (lowered as a plain load-op-store, docs/verifier.md §2).
            let bytes = size.bytes() as i16;
            offset = -STACK_WINDOW + self.rng.below((STACK_WINDOW - bytes + 1) as u64) as i16;
        }
        let op = self.rng.pick(&[
            AtomicOp::Add,
            AtomicOp::Or,
            AtomicOp::And,
            AtomicOp::Xor,
            AtomicOp::Xchg,
            AtomicOp::CmpXchg,
        ]);
        let fetch = matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg) || self.rng.chance(50);
        if op == AtomicOp::CmpXchg && !self.defined[0] {
            self.mov_imm(0);
        }
        // The source is written back by fetch forms, so it must not be the loop counter.
        let src = if fetch && op != AtomicOp::CmpXchg { self.defined_dst() } else { self.readable() };
        self.out.push(I::Atomic { size, op, fetch, dst: base, src: reg(src), offset });
        if op == AtomicOp::CmpXchg {
            self.defined[0] = true;
        }
    }

    fn conditional(&mut self, depth: usize, entry: bool) {
        let width = if self.rng.chance(50) { Width::W64 } else { Width::W32 };
        let cond = self.rng.pick(&JumpCond::ALL);
        let dst = self.readable();
        let src = self.operand();
        let at = self.out.push_slot();
        let before = self.defined;
        let n = 1 + self.rng.below(4) as usize;
        self.block(n, depth + 1, entry);
        let mut after = self.defined;
        // Where the jump goes: past the then-block, or to the else-block.
        let mut target = self.out.len();
        if self.rng.chance(30) {
            // if-else: the then-block ends with a jump over the else-block.
            let ja = self.out.push_slot();
            target = self.out.len();
            let then_defined = self.defined;
            self.defined = before;
            let n = 1 + self.rng.below(3) as usize;
            self.block(n, depth + 1, entry);
            let offset = (self.out.len() - ja - 1) as i32;
            self.out[ja] = I::Jump { offset, long: false };
            for r in 0..11 {
                after[r] = then_defined[r] && self.defined[r];
            }
        } else {
            for r in 0..11 {
                after[r] = before[r] && after[r];
            }
        }
        let offset = (target - at - 1) as i16;
        self.out[at] = I::JumpIf { width, cond, dst: reg(dst), src, offset };
        self.defined = after;
    }

    fn counted_loop(&mut self, depth: usize, entry: bool) {
        let n = 1 + self.rng.below(5) as i32;
        self.out.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: reg(LOOP_COUNTER), src: Operand::Imm(n) });
        self.defined[LOOP_COUNTER as usize] = true;
        let start = self.out.len();
        let before = self.defined;
        self.in_loop = true;
        let n = 1 + self.rng.below(5) as usize;
        self.block(n, depth + 1, entry);
        self.in_loop = false;
        // The next iteration may read what was defined before the loop: re-define what a call in the body undefined.
        for r in 0..=5u8 {
            if before[r as usize] && !self.defined[r as usize] {
                self.mov_imm(r);
            }
        }
        self.out.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: reg(LOOP_COUNTER), src: Operand::Imm(-1) });
        let at = self.out.len();
        let offset = start as i64 - at as i64 - 1;
        let cond = if self.rng.chance(50) { JumpCond::Ne } else { JumpCond::Sgt };
        self.out.push(I::JumpIf {
            width: Width::W64,
            cond,
            dst: reg(LOOP_COUNTER),
            src: Operand::Imm(0),
            offset: offset as i16,
        });
    }
}

trait PushSlot {
    fn push_slot(&mut self) -> usize;
}
impl PushSlot for Vec<I> {
    /// Reserves a slot for a jump whose offset is known later.
    fn push_slot(&mut self) -> usize {
        self.push(I::Exit);
        self.len() - 1
    }
}

/// A random well-formed program: the entry function, then up to two subprograms.
fn generate(seed: u64, size: usize) -> Vec<I> {
    let mut rng = Rng(seed);
    let subprograms = rng.below(3) as usize;
    let mut g = Generator {
        rng,
        out: Vec::new(),
        defined: [false; 11],
        in_loop: false,
        calls: Vec::new(),
        subprograms,
        budget: size,
    };
    g.prologue(true);
    g.block(size, 0, true);
    if !g.defined[0] {
        g.mov_imm(0);
    }
    g.out.push(I::Exit);
    let mut starts = Vec::new();
    for _ in 0..subprograms {
        starts.push(g.out.len());
        g.prologue(false);
        g.budget = size / 2;
        g.block(size / 2, 0, false);
        g.out.push(I::Exit);
    }
    for &(slot, target) in &g.calls {
        g.out[slot] = I::CallLocal { offset: (starts[target] as i64 - slot as i64 - 1) as i32 };
    }
    g.out
}

struct DiffHost;
impl Host for DiffHost {
    fn call_helper(&mut self, id: i32, args: HelperArgs, _: &mut Memory) -> Result<HelperOutcome, HostError> {
        assert_eq!(id, 5, "only helper 5 is generated");
        let r1 = args.arg(1)?;
        Ok(if r1 == 0 { HelperOutcome::Exit(0) } else { HelperOutcome::Return(r1) })
    }
}

/// Runs `program` in the interpreter and as native code for `target`; returns (interp r0, interp buffer,
/// native r0, native buffer).
fn run_both(program: &[I], buffer: &[u8], target: Target) -> (u64, Vec<u8>, u64, Vec<u8>) {
    let mut memory = Memory::new();
    let region = memory.add_region("buffer", buffer.to_vec(), Access::ReadWrite);
    let interp_r0 = Interpreter::new(program)
        .run(&[region.base()], &mut memory, &mut DiffHost)
        .unwrap_or_else(|e| panic!("generated program is not well-formed: {e}\n{}", listing(program)));
    let interp_buffer = memory.region(region).unwrap().data.clone();

    let module = module_from_instructions("diff", program.to_vec());
    let compiled = lower::lower_unverified_for_testing(&module, 0, &LowerOptions::new(target)).expect("lowering");
    let runtime =
        HostRuntime::new(&compiled.helper_ids, &conformance_helper, &[], MapDataLayout::default(), Vec::new());
    let mut native_buffer = buffer.to_vec();
    let context = native_buffer.as_mut_ptr() as *mut c_void;
    let native_r0 = match target {
        Target::X64 => {
            let native = NativeProgram::load(&compiled, runtime).expect("loading");
            // SAFETY: generated programs access only the 64-byte buffer through r1/r9 and their stack windows.
            unsafe { native.run(context) }
        }
        Target::Arm64 => Arm64Program::load(&compiled, runtime)
            .expect("loading")
            .run(context)
            .unwrap_or_else(|e| panic!("ARM64: {e}\n{}", listing(program))),
    };
    (interp_r0, interp_buffer, native_r0, native_buffer)
}

fn check(seed: u64, size: usize, target: Target) {
    let program = generate(seed, size);
    let mut buffer = [0u8; BUFFER_SIZE];
    let mut rng = Rng(seed ^ 0x5555);
    for b in &mut buffer {
        *b = rng.next_u64() as u8;
    }
    let (ir0, ibuf, nr0, nbuf) = run_both(&program, &buffer, target);
    assert_eq!(nr0, ir0, "{target:?}: r0 differs for seed {seed:#x} size {size}\n{}", listing(&program));
    assert_eq!(nbuf, ibuf, "{target:?}: buffer differs for seed {seed:#x} size {size}\n{}", listing(&program));
}

fn listing(program: &[I]) -> String {
    program.iter().enumerate().map(|(pc, i)| format!("{pc:4}: {i:?}\n")).collect()
}

fn cases(variable: &str, default: u32) -> u32 {
    std::env::var(variable).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases("BPF2SYS_DIFF_CASES", 8000), failure_persistence: None, ..ProptestConfig::default()
    })]

    #[test]
    fn native_code_matches_the_interpreter(seed in any::<u64>(), size in 1usize..40) {
        check(seed, size, Target::X64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases("BPF2SYS_DIFF_ARM64_CASES", 2000), failure_persistence: None, ..ProptestConfig::default()
    })]

    #[test]
    fn arm64_code_matches_the_interpreter(seed in any::<u64>(), size in 1usize..40) {
        check(seed, size, Target::Arm64);
    }
}

#[test]
fn generator_covers_every_instruction_group() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..400 {
        for insn in generate(seed, 30) {
            seen.insert(match insn {
                I::Alu { width: Width::W32, .. } => "alu32",
                I::Alu { width: Width::W64, .. } => "alu64",
                I::Endian { .. } => "endian",
                I::LoadImm64 { .. } => "lddw",
                I::Load { .. } => "load",
                I::Store { .. } => "store",
                I::Atomic { .. } => "atomic",
                I::Jump { long: false, .. } => "ja",
                I::Jump { long: true, .. } => "gotol",
                I::JumpIf { width: Width::W32, .. } => "jmp32",
                I::JumpIf { width: Width::W64, offset, .. } if offset < 0 => "loop",
                I::JumpIf { .. } => "jmp",
                I::CallHelper { .. } => "helper",
                I::CallReg { .. } => "callx",
                I::CallLocal { .. } => "local call",
                _ => "other",
            });
        }
    }
    for group in [
        "alu32",
        "alu64",
        "endian",
        "lddw",
        "load",
        "store",
        "atomic",
        "ja",
        "gotol",
        "jmp32",
        "loop",
        "jmp",
        "helper",
        "callx",
        "local call",
    ] {
        assert!(seen.contains(group), "the generator never emits {group}");
    }
}
