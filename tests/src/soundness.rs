//! Verifier soundness fuzzing: random programs (valid encodings; packet, stack, map and context access;
//! pointer/scalar mixing; loops; helper and local calls) go through the verifier, and every accepted program
//! runs in the reference interpreter ([`bpf2sys::interp`]) on many inputs with checked memory. Any fault the
//! interpreter reports — out-of-bounds or unmapped access, uninitialised register or stack read, write to
//! read-only memory, a helper argument that violates its prototype, more instructions executed than the
//! verifier's stated bound — in an accepted program is a soundness bug. So is a conditional jump going a
//! direction the verifier did not record (lowering drops the comparison of a jump with one recorded direction).

use std::collections::HashMap;

use bpf2sys::interp::{Access, Config, HelperArgs, HelperOutcome, Host, HostError, Interpreter, Memory, TraceStep};
use bpf2sys::isa::semantics::{zero_extension_at, PacketFields};
use bpf2sys::isa::{
    AluOp, AtomicOp, Imm64Kind, Instruction as I, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width,
};
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::platform::{HelperArg, ProgramType};
use bpf2sys::program::{functions_from_calls, MapDefinition, MapType, Module, Pinning, Program};
use bpf2sys::verifier::{verify_program, Verified, VerifierOptions};

/// xorshift64*: deterministic, seedable, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

const MAP_HASH: i32 = 0;
const MAP_ARRAY: i32 = 1;
const MAP_PROGRAMS: i32 = 2;
const MAP_HANDLE_BASE: u64 = 0xdead_0000;

fn map_def(name: &str, map_type: MapType, key_size: u32, value_size: u32) -> MapDefinition {
    MapDefinition {
        name: name.into(),
        map_type,
        key_size,
        value_size,
        max_entries: 4,
        inner_map_index: None,
        pinning: Pinning::None,
        id: 0,
        inner_id: 0,
    }
}

/// The maps every generated program may use.
pub fn maps() -> Vec<MapDefinition> {
    vec![
        map_def("hash", MapType::HASH, 4, 8),
        map_def("array", MapType::ARRAY, 4, 16),
        map_def("programs", MapType::PROG_ARRAY, 4, 4),
    ]
}

fn reg(n: u64) -> Reg {
    Reg::new(n as u8).expect("0..=10")
}

const SIZES: [MemSize; 4] = [MemSize::B, MemSize::H, MemSize::W, MemSize::DW];
const ALU_OPS: [AluOp; 14] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::Or,
    AluOp::And,
    AluOp::Lsh,
    AluOp::Rsh,
    AluOp::Mod,
    AluOp::Xor,
    AluOp::Mov,
    AluOp::Arsh,
    AluOp::SDiv,
    AluOp::MovSx(16),
];

/// Where a pending jump goes.
enum Target {
    End,
    Sub,
    Slot(usize),
}

struct Builder {
    code: Vec<I>,
    fixups: Vec<(usize, Target)>,
}

impl Builder {
    fn push(&mut self, i: I) {
        self.code.push(i);
        if let I::LoadImm64 { .. } = i {
            self.code.push(I::LoadImm64Continuation);
        }
    }
    fn jump_if(&mut self, width: Width, cond: JumpCond, dst: Reg, src: Operand, t: Target) {
        self.fixups.push((self.code.len(), t));
        self.code.push(I::JumpIf { width, cond, dst, src, offset: 0 });
    }
    fn reload_packet(&mut self) {
        self.push(I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R2, src: Reg::R6, offset: 0 });
        self.push(I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R3, src: Reg::R6, offset: 8 });
    }
    /// After a call r1..r5 are undefined: reload the packet and give r4 a value (r5 most of the time).
    fn after_call(&mut self, r: &mut Rng) {
        self.reload_packet();
        self.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R4, src: Operand::Imm(small_imm(r)) });
        if r.chance(80) {
            self.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R5, src: Operand::Imm(small_imm(r)) });
        }
    }
}

fn small_imm(r: &mut Rng) -> i32 {
    match r.below(6) {
        0 => r.below(8) as i32,
        1 => r.below(70) as i32,
        2 => -(r.below(16) as i32),
        3 => r.pick(&[i32::MIN, i32::MAX, -1, 255, 65535, 512, 4096]),
        4 => r.below(600) as i32 - 300,
        _ => r.next_u64() as i32,
    }
}

fn alu(r: &mut Rng, b: &mut Builder, dst: Reg) {
    let width = if r.chance(30) { Width::W32 } else { Width::W64 };
    let op = r.pick(&ALU_OPS);
    let src = if r.chance(50) { Operand::Reg(reg(r.below(11))) } else { Operand::Imm(small_imm(r)) };
    let op = match (op, width) {
        (AluOp::MovSx(_), Width::W32) => AluOp::Mov,
        (o, _) => o,
    };
    b.push(I::Alu { width, op, dst, src });
}

/// One random program: xdp, r6 = ctx, r2/r3 = data/data_end, then random snippets, then `r0 = k; exit`.
pub fn generate(seed: u64) -> Vec<I> {
    let r = &mut Rng::new(seed);
    let mut b = Builder { code: Vec::new(), fixups: Vec::new() };
    b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R6, src: Operand::Reg(Reg::R1) });
    b.reload_packet();
    for n in [0, 4, 5, 7, 8, 9] {
        if r.chance(93) {
            b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: reg(n), src: Operand::Imm(small_imm(r)) });
        }
    }
    let mut uses_sub = false;
    let snippets = 1 + r.below(10);
    for _ in 0..snippets {
        let scratch = reg(r.pick(&[0, 4, 5, 7, 8, 9]));
        match r.below(16) {
            0 | 1 => {
                // bounds check against data_end
                let k = r.below(48) as i32;
                b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R4, src: Operand::Reg(Reg::R2) });
                b.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R4, src: Operand::Imm(k) });
                let cond = r.pick(&[JumpCond::Gt, JumpCond::Ge, JumpCond::Gt]);
                b.jump_if(Width::W64, cond, Reg::R4, Operand::Reg(Reg::R3), Target::End);
            }
            2 => {
                let size = r.pick(&SIZES);
                b.push(I::Load {
                    size,
                    sign_extend: r.chance(10),
                    dst: scratch,
                    src: Reg::R2,
                    offset: r.below(48) as i16,
                });
            }
            3 => {
                let size = r.pick(&SIZES);
                let src = if r.chance(50) { Operand::Imm(small_imm(r)) } else { Operand::Reg(reg(r.below(10))) };
                let base = if r.chance(80) { Reg::R2 } else { reg(r.below(11)) };
                b.push(I::Store { size, dst: base, offset: r.below(48) as i16, src });
            }
            4 => {
                let size = r.pick(&SIZES);
                let span = if r.chance(95) { 64 } else { 530 };
                let off = -(1 + r.below(span) as i16);
                let src = if r.chance(40) { Operand::Imm(small_imm(r)) } else { Operand::Reg(reg(r.below(11))) };
                b.push(I::Store { size, dst: Reg::FP, offset: off, src });
            }
            5 => {
                let size = r.pick(&SIZES);
                let off = -(1 + r.below(64) as i16);
                b.push(I::Load { size, sign_extend: r.chance(10), dst: scratch, src: Reg::FP, offset: off });
            }
            6 | 7 => {
                let dst = if r.chance(90) { scratch } else { reg(r.below(11)) };
                alu(r, &mut b, dst)
            }
            8 => {
                // map lookup, optional null check, value access
                let map = r.pick(&[MAP_HASH, MAP_ARRAY]);
                let key_off = -4 - 4 * r.below(4) as i16;
                if r.chance(90) {
                    b.push(I::Store {
                        size: MemSize::W,
                        dst: Reg::FP,
                        offset: key_off,
                        src: Operand::Imm(r.below(6) as i32),
                    });
                }
                b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R2, src: Operand::Reg(Reg::FP) });
                b.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R2, src: Operand::Imm(key_off as i32) });
                b.push(I::LoadImm64 { dst: Reg::R1, kind: Imm64Kind::MapIndex, imm: map, next_imm: 0 });
                b.push(I::CallHelper { id: 1 });
                let checked = r.chance(85);
                let body_len = 1;
                if checked {
                    b.code.push(I::JumpIf {
                        width: Width::W64,
                        cond: JumpCond::Eq,
                        dst: Reg::R0,
                        src: Operand::Imm(0),
                        offset: body_len,
                    });
                }
                let size = r.pick(&SIZES);
                let off = r.below(18) as i16;
                match r.below(3) {
                    0 => b.push(I::Load { size, sign_extend: false, dst: Reg::R5, src: Reg::R0, offset: off }),
                    1 => b.push(I::Store {
                        size,
                        dst: Reg::R0,
                        offset: off,
                        src: Operand::Reg(reg(r.pick(&[6, 7, 2, 0, 10]))),
                    }),
                    _ => b.push(I::Atomic {
                        size: r.pick(&[MemSize::W, MemSize::DW]),
                        op: AtomicOp::Add,
                        fetch: r.chance(50),
                        dst: Reg::R0,
                        src: reg(r.pick(&[7, 8, 9, 6])),
                        offset: off,
                    }),
                }
                b.after_call(r);
            }
            9 => {
                // counted loop
                let c = reg(r.pick(&[7, 8, 9]));
                b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: c, src: Operand::Imm(r.below(3) as i32) });
                let head = b.code.len();
                let other = reg(r.pick(&[0, 5]));
                alu(r, &mut b, other);
                if r.chance(90) {
                    let step = 1 + r.below(3) as i32;
                    let w = if r.chance(30) { Width::W32 } else { Width::W64 };
                    b.push(I::Alu { width: w, op: AluOp::Add, dst: c, src: Operand::Imm(step) });
                }
                let n = r.below(20) as i32;
                let cond = r.pick(&[JumpCond::Lt, JumpCond::Ne, JumpCond::Le, JumpCond::Slt]);
                b.jump_if(Width::W64, cond, c, Operand::Imm(n), Target::Slot(head));
            }
            10 => {
                let cond = r.pick(&JumpCond::ALL);
                let w = if r.chance(20) { Width::W32 } else { Width::W64 };
                let src = if r.chance(60) { Operand::Imm(small_imm(r)) } else { Operand::Reg(reg(r.below(11))) };
                b.jump_if(w, cond, reg(r.below(10)), src, Target::End);
            }
            11 => {
                // variable packet offset with its own bounds check
                b.push(I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R5, src: Reg::R6, offset: 24 });
                b.push(I::Alu {
                    width: Width::W64,
                    op: AluOp::And,
                    dst: Reg::R5,
                    src: Operand::Imm(r.pick(&[15, 31, 255])),
                });
                b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R4, src: Operand::Reg(Reg::R2) });
                b.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R4, src: Operand::Reg(Reg::R5) });
                b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R5, src: Operand::Reg(Reg::R4) });
                let checked = 1 + r.below(8) as i32;
                b.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R5, src: Operand::Imm(checked) });
                b.jump_if(Width::W64, JumpCond::Gt, Reg::R5, Operand::Reg(Reg::R3), Target::End);
                let fitting: Vec<MemSize> = SIZES.iter().copied().filter(|s| s.bytes() as i32 <= checked).collect();
                let size = if r.chance(80) { r.pick(&fitting) } else { r.pick(&SIZES) };
                let off = if r.chance(80) { (checked - size.bytes() as i32).max(0) as i16 } else { r.below(8) as i16 };
                b.push(I::Load { size, sign_extend: false, dst: Reg::R0, src: Reg::R4, offset: off });
            }
            12 => {
                // helper with memory arguments: trace_printk2(stack buffer, size) or memset
                let off = 8 * (1 + r.below(4) as i32);
                if r.chance(80) {
                    b.push(I::Store { size: MemSize::DW, dst: Reg::FP, offset: -off as i16, src: Operand::Imm(0) });
                }
                b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R1, src: Operand::Reg(Reg::FP) });
                b.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R1, src: Operand::Imm(-off) });
                b.push(I::Alu {
                    width: Width::W64,
                    op: AluOp::Mov,
                    dst: Reg::R2,
                    src: Operand::Imm(1 + r.below(12) as i32),
                });
                if r.chance(50) {
                    b.push(I::CallHelper { id: 12 });
                } else {
                    b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R3, src: Operand::Imm(7) });
                    b.push(I::CallHelper { id: 24 });
                }
                b.after_call(r);
            }
            13 => {
                // legacy packet load (RFC 9669 §5.5): through r6 = ctx (sometimes another register in r6 or a pointer
                // offset, which must be rejected), at in- and out-of-bounds offsets; it clobbers r1..r5
                let mode = if r.chance(50) { PacketLoadMode::Abs } else { PacketLoadMode::Ind };
                let size = r.pick(&SIZES[..3]);
                if r.chance(5) {
                    b.push(I::Alu {
                        width: Width::W64,
                        op: AluOp::Mov,
                        dst: Reg::R6,
                        src: Operand::Reg(reg(r.below(11))),
                    });
                }
                let src = reg(r.pick(&[0, 4, 5, 7, 8, 9, 10]));
                let imm = if r.chance(80) { r.below(80) as i32 - 4 } else { small_imm(r) };
                b.push(I::LegacyPacketLoad { mode, size, src, imm });
                if r.chance(50) {
                    b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: scratch, src: Operand::Reg(Reg::R0) });
                }
                b.after_call(r);
            }
            14 if r.chance(50) => {
                // `data + k != data_end` (proves byte k only when k is within the proven range), then a packet load
                // at or around k
                let k = r.below(24) as i32;
                b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R4, src: Operand::Reg(Reg::R2) });
                b.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R4, src: Operand::Imm(k) });
                let (dst, src) = if r.chance(50) { (Reg::R4, Reg::R3) } else { (Reg::R3, Reg::R4) };
                b.jump_if(Width::W64, JumpCond::Eq, dst, Operand::Reg(src), Target::End);
                let off = (k + r.below(3) as i32 - 1).max(0) as i16;
                b.push(I::Load { size: r.pick(&SIZES), sign_extend: false, dst: scratch, src: Reg::R2, offset: off });
            }
            14 => {
                // an undefined (or defined) value copied, spilled, partly overwritten and reloaded, then used
                let from = reg(r.pick(&[0, 4, 5, 7, 8, 9]));
                let w = if r.chance(30) { Width::W32 } else { Width::W64 };
                b.push(I::Alu { width: w, op: AluOp::Mov, dst: scratch, src: Operand::Reg(from) });
                let off = -8 * (1 + r.below(4) as i16);
                b.push(I::Store { size: MemSize::DW, dst: Reg::FP, offset: off, src: Operand::Reg(scratch) });
                if r.chance(30) {
                    let part = off + r.below(8) as i16;
                    b.push(I::Store { size: MemSize::B, dst: Reg::FP, offset: part, src: Operand::Reg(from) });
                }
                let size = r.pick(&SIZES);
                let back = off + (r.below(8 / size.bytes() as u64) as i16) * size.bytes() as i16;
                b.push(I::Load { size, sign_extend: r.chance(10), dst: scratch, src: Reg::FP, offset: back });
                if r.chance(70) {
                    alu(r, &mut b, scratch);
                }
            }
            _ => {
                // local call with a pointer to our stack, or a tail call
                if r.chance(70) {
                    b.push(I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8, src: Operand::Imm(3) });
                    b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R1, src: Operand::Reg(Reg::FP) });
                    b.push(I::Alu {
                        width: Width::W64,
                        op: AluOp::Add,
                        dst: Reg::R1,
                        src: Operand::Imm(-8 - r.below(3) as i32),
                    });
                    b.fixups.push((b.code.len(), Target::Sub));
                    b.code.push(I::CallLocal { offset: 0 });
                    uses_sub = true;
                } else {
                    b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R1, src: Operand::Reg(Reg::R6) });
                    b.push(I::LoadImm64 { dst: Reg::R2, kind: Imm64Kind::MapIndex, imm: MAP_PROGRAMS, next_imm: 0 });
                    b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R3, src: Operand::Imm(0) });
                    b.push(I::CallHelper { id: 5 });
                }
                b.after_call(r);
            }
        }
    }
    let end = b.code.len();
    if r.chance(95) {
        b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R0, src: Operand::Imm(r.below(4) as i32) });
    }
    b.push(I::Exit);
    let sub = b.code.len();
    if uses_sub {
        // sub(r1 = pointer into the caller's stack): read through it, use its own frame.
        b.push(I::Load {
            size: r.pick(&SIZES),
            sign_extend: false,
            dst: Reg::R0,
            src: Reg::R1,
            offset: r.below(3) as i16,
        });
        b.push(I::Store {
            size: MemSize::DW,
            dst: Reg::FP,
            offset: -8 - 8 * r.below(2) as i16,
            src: Operand::Reg(Reg::R0),
        });
        if r.chance(20) {
            b.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R0, src: Operand::Reg(Reg::FP) });
        }
        b.push(I::Exit);
    }
    for (at, t) in std::mem::take(&mut b.fixups) {
        let target = match t {
            Target::End => end,
            Target::Sub => sub,
            Target::Slot(s) => s,
        } as i64;
        let rel = target - at as i64 - 1;
        match &mut b.code[at] {
            I::JumpIf { offset, .. } => *offset = rel as i16,
            I::CallLocal { offset } => *offset = rel as i32,
            _ => unreachable!("fixups are jumps"),
        }
    }
    b.code
}

/// The emulated environment: maps with values as memory regions, helpers checked against their prototypes.
struct FuzzHost<'a> {
    rng: Rng,
    maps: &'a [MapDefinition],
    program_type: &'a ProgramType,
    values: HashMap<(usize, Vec<u8>), u64>,
}

impl Host for FuzzHost<'_> {
    fn call_helper(&mut self, id: i32, args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError> {
        let proto = WINDOWS.helper(self.program_type, id as u32).ok_or(HostError::UnknownHelper { id })?;
        let mut map: Option<usize> = None;
        let mut key = Vec::new();
        // Check every argument against the prototype, as the runtime's helper would use it.
        for (i, kind) in proto.args.iter().enumerate() {
            let n = i + 1;
            match kind {
                HelperArg::DontCare => {}
                HelperArg::PtrToMap | HelperArg::PtrToMapOfPrograms => {
                    let h = args.arg(n)?;
                    let m = h.checked_sub(MAP_HANDLE_BASE).filter(|m| (*m as usize) < self.maps.len());
                    map = Some(m.ok_or(HostError::Failed(format!("r{n} = {h:#x} is not a map handle")))? as usize);
                }
                HelperArg::PtrToMapKey => {
                    let m = &self.maps[map.expect("map before key")];
                    key = memory.read(args.arg(n)?, m.key_size as usize)?.to_vec();
                }
                HelperArg::PtrToMapValue => {
                    let m = &self.maps[map.expect("map before value")];
                    memory.read(args.arg(n)?, m.value_size as usize)?;
                }
                HelperArg::PtrToReadableMem | HelperArg::PtrToReadableMemOrNull => {
                    let (p, size) = (args.arg(n)?, args.arg(n + 1)?);
                    if p != 0 || *kind == HelperArg::PtrToReadableMem {
                        memory.read(p, size as usize)?;
                    }
                }
                HelperArg::PtrToWritableMem | HelperArg::PtrToWritableMemOrNull => {
                    let (p, size) = (args.arg(n)?, args.arg(n + 1)?);
                    if p != 0 || *kind == HelperArg::PtrToWritableMem {
                        let fill = vec![self.rng.next_u64() as u8; size as usize];
                        memory.write(p, &fill)?;
                    }
                }
                _ => {
                    args.arg(n)?;
                }
            }
        }
        let r0 = match id {
            1 => {
                let m = map.expect("lookup has a map");
                let def = &self.maps[m];
                let present = def.map_type == MapType::ARRAY
                    && u32::from_le_bytes(key[..4].try_into().expect("4")) < def.max_entries
                    || self.rng.chance(60);
                if !present {
                    0
                } else if let Some(&addr) = self.values.get(&(m, key.clone())) {
                    addr
                } else {
                    let data: Vec<u8> = (0..def.value_size).map(|_| self.rng.next_u64() as u8).collect();
                    let addr = memory.add_region(format!("map {m} value"), data, Access::ReadWrite).base();
                    self.values.insert((m, key), addr);
                    addr
                }
            }
            5 => u64::MAX, // the tail call fails: execution continues
            _ => self.rng.next_u64() % 1000,
        };
        Ok(HelperOutcome::Return(r0))
    }

    fn resolve_load_imm64(
        &mut self,
        kind: Imm64Kind,
        imm: i32,
        next_imm: i32,
        _: &mut Memory,
    ) -> Result<u64, HostError> {
        match kind {
            Imm64Kind::MapIndex if (imm as usize) < self.maps.len() => Ok(MAP_HANDLE_BASE + imm as u64),
            _ => Err(HostError::UnresolvedLoad { kind: kind.name(), imm, next_imm, reason: "not a fuzz map".into() }),
        }
    }
}

/// What happened to one generated program.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Rejected,
    /// Accepted and ran cleanly on every input.
    Accepted,
    /// Accepted, but the interpreter faulted: a soundness bug.
    Unsound(String),
}

/// Verifies one program and, if accepted, runs it on `inputs` random inputs.
/// The module a generated program is verified in: one XDP program and the fuzzer's maps.
pub fn fuzz_module(program: &[I]) -> Module {
    Module {
        name: "fuzz".into(),
        programs: vec![Program {
            name: "fuzz".into(),
            section_name: "xdp".into(),
            instructions: program.to_vec(),
            functions: functions_from_calls(program),
            line_info: vec![],
        }],
        maps: maps(),
        ..Module::default()
    }
}

pub fn check(program: &[I], seed: u64, inputs: usize) -> Verdict {
    let module = fuzz_module(program);
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    let report = match verify_program(&module, 0, &WINDOWS, xdp, &VerifierOptions::default()) {
        Ok(r) => r,
        Err(_) => return Verdict::Rejected,
    };
    let budget = report.report().max_instructions_executed.expect("termination is checked").min(50_000_000);
    // Legacy packet loads find the packet through XDP's context layout (the table, not the verifier's output).
    let packet_fields =
        Some(PacketFields { data: xdp.context.data as u32, data_end: xdp.context.end as u32, width: MemSize::DW });
    let config =
        Config { instruction_budget: budget, max_call_depth: 8, check_uninitialized_stack: true, packet_fields };
    let interp = Interpreter::with_config(program, config);
    let mut rng = Rng::new(seed ^ 0x5eed);
    for input in 0..inputs {
        let mut memory = Memory::new();
        let len = if input == 0 { 0 } else { rng.below(72) as usize };
        let packet: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let data = memory.add_region("packet", packet, Access::ReadWrite).base();
        let mut ctx = Vec::with_capacity(32);
        ctx.extend_from_slice(&data.to_le_bytes());
        ctx.extend_from_slice(&(data + len as u64).to_le_bytes());
        ctx.extend_from_slice(&data.to_le_bytes());
        ctx.extend_from_slice(&(rng.next_u64() as u32 as u64).to_le_bytes());
        let ctx_addr = memory.add_region("context", ctx, Access::ReadOnly).base();
        let maps = module.maps.clone();
        let mut host =
            FuzzHost { rng: Rng::new(rng.next_u64()), maps: &maps, program_type: xdp, values: HashMap::new() };
        let mut directions = LoweringFactCheck::new(&report);
        let outcome = interp.run_traced(&[ctx_addr], &mut memory, &mut host, &mut |step| directions.step(step));
        if let Err(e) = outcome {
            return Verdict::Unsound(format!("input {input} (packet length {len}): {e}"));
        }
        if let Some(why) = directions.violation {
            return Verdict::Unsound(format!("input {input} (packet length {len}): {why}"));
        }
    }
    Verdict::Accepted
}

/// Checks the facts lowering uses against every instruction the interpreter executes: each conditional jump
/// against the directions the verifier recorded for it (lowering turns a jump with one recorded direction into an
/// unconditional jump, so a direction taken at run time but not recorded would be miscompiled), and each
/// zero-extension the verifier called redundant against its register's value (lowering leaves it out, so a value
/// of 2^32 or more there would keep its upper half), and each map lookup the verifier called one in a known
/// `ARRAY` map against the handle in `r1` (lowering indexes that map's values inline).
struct LoweringFactCheck<'v> {
    verified: &'v Verified<'v>,
    /// The conditional jump just executed: (slot, target slot).
    pending: Option<(usize, usize)>,
    violation: Option<String>,
}

impl<'v> LoweringFactCheck<'v> {
    fn new(verified: &'v Verified<'v>) -> Self {
        LoweringFactCheck { verified, pending: None, violation: None }
    }

    fn step(&mut self, step: &TraceStep) {
        if let Some(m) = self.verified.array_map_lookup(step.pc).filter(|_| self.violation.is_none()) {
            let r1 = step.registers[1];
            if r1 != Some(MAP_HANDLE_BASE + m as u64) {
                self.violation = Some(format!(
                    "the lookup at slot {} was recorded as one in map {m}, but r1 = {r1:#x?} there",
                    step.pc
                ));
            }
        }
        if self.verified.is_redundant_zero_extension(step.pc) && self.violation.is_none() {
            let program = &self.verified.program().instructions;
            let reg = zero_extension_at(program, step.pc).expect("a recorded zero-extension is an idiom").reg;
            let value = step.registers[reg.index()];
            if value.is_none_or(|v| v > u64::from(u32::MAX)) {
                self.violation = Some(format!(
                    "the zero-extension at slot {} was recorded as redundant, but {reg:?} = {value:#x?} there",
                    step.pc
                ));
            }
        }
        if let Some((pc, target)) = self.pending.take() {
            let recorded = self.verified.branch_directions(pc);
            let taken = step.pc == target;
            let allowed = recorded.is_some_and(|d| if taken { d.taken } else { d.not_taken });
            if !allowed && self.violation.is_none() {
                let went = if taken { "taken" } else { "not taken" };
                self.violation =
                    Some(format!("the jump at slot {pc} was {went}, but the verifier recorded only {recorded:?}"));
            }
        }
        if let I::JumpIf { .. } = step.instruction {
            let target = step.instruction.jump_target(step.pc).expect("a jump has a target") as usize;
            self.pending = Some((step.pc, target));
        }
    }
}

/// `program` with zero-extension idioms (`w = w` or `r <<= 32; r >>= 32`) inserted after some ALU instructions
/// and narrow loads, on the register they wrote, every jump and local call re-aimed at its old target: random
/// programs rarely contain the idioms, and lowering leaves out those the verifier calls redundant (issue 16).
pub fn with_zero_extensions(program: &[I], seed: u64) -> Vec<I> {
    let mut r = Rng::new(seed ^ 0x2e40);
    let mut out = Vec::with_capacity(program.len() * 2);
    // new_slot[pc]: where the instruction at `pc` lands; one more entry for the end.
    let mut new_slot = Vec::with_capacity(program.len() + 1);
    for insn in program {
        new_slot.push(out.len());
        out.push(*insn);
        let dst = match *insn {
            I::Alu { dst, .. } if r.chance(40) => dst,
            I::Load { dst, size, .. } if size != MemSize::DW && r.chance(60) => dst,
            _ => continue,
        };
        if r.chance(50) {
            out.push(I::Alu { width: Width::W64, op: AluOp::Lsh, dst, src: Operand::Imm(32) });
            out.push(I::Alu { width: Width::W64, op: AluOp::Rsh, dst, src: Operand::Imm(32) });
        } else {
            out.push(I::Alu { width: Width::W32, op: AluOp::Mov, dst, src: Operand::Reg(dst) });
        }
    }
    new_slot.push(out.len());
    for (pc, insn) in program.iter().enumerate() {
        let Some(target) = insn.jump_target(pc) else { continue };
        let Some(&to) = usize::try_from(target).ok().and_then(|t| new_slot.get(t)) else { continue };
        let offset = to as i64 - new_slot[pc] as i64 - 1;
        out[new_slot[pc]] = match *insn {
            I::Jump { long, .. } => I::Jump { offset: offset as i32, long },
            I::JumpIf { width, cond, dst, src, .. } => {
                I::JumpIf { width, cond, dst, src, offset: i16::try_from(offset).unwrap_or(i16::MAX) }
            }
            I::CallLocal { .. } => I::CallLocal { offset: offset as i32 },
            other => other,
        };
    }
    out
}

/// Counts of a campaign.
#[derive(Debug, Default, Clone, Copy)]
pub struct Campaign {
    pub programs: u64,
    pub accepted: u64,
    pub unsound: u64,
}

/// Runs programs `first..first + count`; calls `on_unsound(seed, program, why)` for each soundness bug.
pub fn campaign(first: u64, count: u64, inputs: usize, mut on_unsound: impl FnMut(u64, &[I], &str)) -> Campaign {
    let mut c = Campaign::default();
    for seed in first..first + count {
        let p = generate(seed);
        c.programs += 1;
        match check(&p, seed, inputs) {
            Verdict::Rejected => {}
            Verdict::Accepted => c.accepted += 1,
            Verdict::Unsound(why) => {
                c.accepted += 1;
                c.unsound += 1;
                on_unsound(seed, &p, &why);
            }
        }
    }
    c
}
