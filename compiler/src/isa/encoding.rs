//! The bit-level encoding (RFC 9669 §3-§5): raw 8-byte slots, strict decoding into [`Instruction`]s and the
//! exact inverse, encoding.
//!
//! In: raw bytecode (little-endian 8-byte slots). Out: one [`Instruction`] per slot (a `lddw` yields
//! [`Instruction::LoadImm64`] followed by [`Instruction::LoadImm64Continuation`]). Every field RFC 9669 says must
//! be zero is checked, and a violation names the field and the slot.

use super::{
    AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width,
    SLOT_SIZE,
};

// Field encodings of the model's types (RFC 9669 §5.1 Table 10, §5.4 Table 12).
impl MemSize {
    pub(super) fn encoding(self) -> u8 {
        match self {
            MemSize::W => 0x00,
            MemSize::H => 0x08,
            MemSize::B => 0x10,
            MemSize::DW => 0x18,
        }
    }

    pub(super) fn from_encoding(bits: u8) -> MemSize {
        match bits & 0x18 {
            0x00 => MemSize::W,
            0x08 => MemSize::H,
            0x10 => MemSize::B,
            _ => MemSize::DW,
        }
    }
}

impl Imm64Kind {
    pub(super) fn from_src(src: u8) -> Option<Imm64Kind> {
        Some(match src {
            0 => Imm64Kind::Imm,
            1 => Imm64Kind::MapFd,
            2 => Imm64Kind::MapValue,
            3 => Imm64Kind::VariableAddr,
            4 => Imm64Kind::CodeAddr,
            5 => Imm64Kind::MapIndex,
            6 => Imm64Kind::MapIndexValue,
            _ => return None,
        })
    }

    pub(super) fn src(self) -> u8 {
        match self {
            Imm64Kind::Imm => 0,
            Imm64Kind::MapFd => 1,
            Imm64Kind::MapValue => 2,
            Imm64Kind::VariableAddr => 3,
            Imm64Kind::CodeAddr => 4,
            Imm64Kind::MapIndex => 5,
            Imm64Kind::MapIndexValue => 6,
        }
    }
}

/// Why a slot could not be decoded. Every variant names the slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bytecode length {len} is not a multiple of 8 bytes")]
    Truncated { len: usize },
    #[error("slot {pc}: unknown opcode {opcode:#04x}")]
    UnknownOpcode { pc: usize, opcode: u8 },
    #[error("slot {pc}: opcode {opcode:#04x} requires the {field} field to be zero, found {value}")]
    NonZeroField { pc: usize, opcode: u8, field: &'static str, value: i64 },
    #[error("slot {pc}: invalid register number {reg} in the {field} field")]
    BadRegister { pc: usize, field: &'static str, reg: u8 },
    #[error("slot {pc}: {what}")]
    Invalid { pc: usize, what: String },
    #[error("slot {pc}: lddw is missing its second slot")]
    MissingLddwTail { pc: usize },
}

/// The raw fields of one 8-byte slot (RFC 9669 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RawSlot {
    pub opcode: u8,
    pub dst: u8,
    pub src: u8,
    pub offset: i16,
    pub imm: i32,
}

impl RawSlot {
    pub fn from_bytes(b: &[u8; 8]) -> RawSlot {
        RawSlot {
            opcode: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            offset: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn to_bytes(self) -> [u8; 8] {
        let o = self.offset.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [self.opcode, (self.dst & 0xf) | (self.src << 4), o[0], o[1], i[0], i[1], i[2], i[3]]
    }
}

// Instruction classes (RFC 9669 §3, Table 2).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;

// Memory modes (RFC 9669 §5, Table 11).
const MODE_IMM: u8 = 0x00;
const MODE_ABS: u8 = 0x20;
const MODE_IND: u8 = 0x40;
const MODE_MEM: u8 = 0x60;
const MODE_MEMSX: u8 = 0x80;
const MODE_ATOMIC: u8 = 0xc0;

const SOURCE_X: u8 = 0x08;
const BPF_FETCH: i32 = 0x01;

struct Fields<'a> {
    pc: usize,
    raw: &'a RawSlot,
}

impl Fields<'_> {
    fn zero(&self, field: &'static str, value: i64) -> Result<(), DecodeError> {
        if value != 0 {
            return Err(DecodeError::NonZeroField { pc: self.pc, opcode: self.raw.opcode, field, value });
        }
        Ok(())
    }
    fn dst(&self) -> Result<Reg, DecodeError> {
        Reg::new(self.raw.dst).ok_or(DecodeError::BadRegister { pc: self.pc, field: "dst", reg: self.raw.dst })
    }
    fn src(&self) -> Result<Reg, DecodeError> {
        Reg::new(self.raw.src).ok_or(DecodeError::BadRegister { pc: self.pc, field: "src", reg: self.raw.src })
    }
    fn unknown(&self) -> DecodeError {
        DecodeError::UnknownOpcode { pc: self.pc, opcode: self.raw.opcode }
    }
}

fn decode_alu(f: &Fields, width: Width) -> Result<Instruction, DecodeError> {
    let raw = f.raw;
    let code = raw.opcode & 0xf0;
    let uses_reg = raw.opcode & SOURCE_X != 0;
    let dst = f.dst()?;
    let operand = |f: &Fields| -> Result<Operand, DecodeError> {
        if uses_reg {
            f.zero("imm", raw.imm as i64)?;
            Ok(Operand::Reg(f.src()?))
        } else {
            f.zero("src", raw.src as i64)?;
            Ok(Operand::Imm(raw.imm))
        }
    };
    let plain = |op: AluOp| -> Result<Instruction, DecodeError> {
        f.zero("offset", raw.offset as i64)?;
        Ok(Instruction::Alu { width, op, dst, src: operand(f)? })
    };
    match code {
        0x00 => plain(AluOp::Add),
        0x10 => plain(AluOp::Sub),
        0x20 => plain(AluOp::Mul),
        0x30 | 0x90 => {
            let signed = match raw.offset {
                0 => false,
                1 => true,
                other => return Err(f.zero("offset (0 or 1 for div/mod)", other as i64).unwrap_err()),
            };
            let op = match (code, signed) {
                (0x30, false) => AluOp::Div,
                (0x30, true) => AluOp::SDiv,
                (_, false) => AluOp::Mod,
                (_, true) => AluOp::SMod,
            };
            Ok(Instruction::Alu { width, op, dst, src: operand(f)? })
        }
        0x40 => plain(AluOp::Or),
        0x50 => plain(AluOp::And),
        0x60 => plain(AluOp::Lsh),
        0x70 => plain(AluOp::Rsh),
        0x80 => {
            // NEG: RFC 9669 Table 4 lists only the immediate form with src_reg and imm zero.
            if uses_reg {
                return Err(f.unknown());
            }
            f.zero("offset", raw.offset as i64)?;
            f.zero("src", raw.src as i64)?;
            f.zero("imm", raw.imm as i64)?;
            Ok(Instruction::Alu { width, op: AluOp::Neg, dst, src: Operand::Imm(0) })
        }
        0xa0 => plain(AluOp::Xor),
        0xb0 => match raw.offset {
            0 => plain(AluOp::Mov),
            8 | 16 | 32 => {
                // MOVSX only has a register form; 32-bit movsx from 32 bits is meaningless (RFC 9669 §4.1).
                if !uses_reg || (width == Width::W32 && raw.offset == 32) {
                    return Err(DecodeError::Invalid {
                        pc: f.pc,
                        what: format!("opcode {:#04x}: invalid movsx offset {}", raw.opcode, raw.offset),
                    });
                }
                Ok(Instruction::Alu { width, op: AluOp::MovSx(raw.offset as u8), dst, src: operand(f)? })
            }
            other => Err(f.zero("offset (0, 8, 16 or 32 for mov)", other as i64).unwrap_err()),
        },
        0xc0 => plain(AluOp::Arsh),
        0xd0 => {
            f.zero("offset", raw.offset as i64)?;
            f.zero("src", raw.src as i64)?;
            let order = match (width, uses_reg) {
                (Width::W32, false) => ByteOrder::ToLe,
                (Width::W32, true) => ByteOrder::ToBe,
                (Width::W64, false) => ByteOrder::Swap,
                (Width::W64, true) => return Err(f.unknown()),
            };
            if !matches!(raw.imm, 16 | 32 | 64) {
                return Err(DecodeError::Invalid {
                    pc: f.pc,
                    what: format!(
                        "opcode {:#04x}: byte-swap width must be 16, 32 or 64, found {}",
                        raw.opcode, raw.imm
                    ),
                });
            }
            Ok(Instruction::Endian { order, bits: raw.imm as u32, dst })
        }
        _ => Err(f.unknown()),
    }
}

fn decode_jump(f: &Fields, class: u8) -> Result<Instruction, DecodeError> {
    let raw = f.raw;
    let code = raw.opcode & 0xf0;
    let uses_reg = raw.opcode & SOURCE_X != 0;
    let width = if class == CLASS_JMP { Width::W64 } else { Width::W32 };
    match code {
        0x00 => {
            // JA (JMP class, offset) and gotol/JA32 (JMP32 class, imm).
            if uses_reg {
                return Err(f.unknown());
            }
            f.zero("dst", raw.dst as i64)?;
            f.zero("src", raw.src as i64)?;
            if class == CLASS_JMP {
                f.zero("imm", raw.imm as i64)?;
                Ok(Instruction::Jump { offset: raw.offset as i32, long: false })
            } else {
                f.zero("offset", raw.offset as i64)?;
                Ok(Instruction::Jump { offset: raw.imm, long: true })
            }
        }
        0x80 => {
            if class != CLASS_JMP {
                return Err(f.unknown());
            }
            if uses_reg {
                // callx: the register is in dst (as LLVM and the conformance suite encode it).
                f.zero("src", raw.src as i64)?;
                f.zero("offset", raw.offset as i64)?;
                f.zero("imm", raw.imm as i64)?;
                return Ok(Instruction::CallReg { reg: f.dst()? });
            }
            f.zero("dst", raw.dst as i64)?;
            match raw.src {
                0 => {
                    f.zero("offset", raw.offset as i64)?;
                    Ok(Instruction::CallHelper { id: raw.imm })
                }
                1 => {
                    f.zero("offset", raw.offset as i64)?;
                    Ok(Instruction::CallLocal { offset: raw.imm })
                }
                2 => Ok(Instruction::CallBtf { btf_id: raw.imm, module: raw.offset }),
                other => Err(DecodeError::Invalid {
                    pc: f.pc,
                    what: format!("call with unknown source {other} (0 helper, 1 local, 2 BTF)"),
                }),
            }
        }
        0x90 => {
            if class != CLASS_JMP || uses_reg {
                return Err(f.unknown());
            }
            f.zero("dst", raw.dst as i64)?;
            f.zero("src", raw.src as i64)?;
            f.zero("offset", raw.offset as i64)?;
            f.zero("imm", raw.imm as i64)?;
            Ok(Instruction::Exit)
        }
        _ => {
            let cond = match code {
                0x10 => JumpCond::Eq,
                0x20 => JumpCond::Gt,
                0x30 => JumpCond::Ge,
                0x40 => JumpCond::Set,
                0x50 => JumpCond::Ne,
                0x60 => JumpCond::Sgt,
                0x70 => JumpCond::Sge,
                0xa0 => JumpCond::Lt,
                0xb0 => JumpCond::Le,
                0xc0 => JumpCond::Slt,
                0xd0 => JumpCond::Sle,
                _ => return Err(f.unknown()),
            };
            let dst = f.dst()?;
            let src = if uses_reg {
                f.zero("imm", raw.imm as i64)?;
                Operand::Reg(f.src()?)
            } else {
                f.zero("src", raw.src as i64)?;
                Operand::Imm(raw.imm)
            };
            Ok(Instruction::JumpIf { width, cond, dst, src, offset: raw.offset })
        }
    }
}

fn decode_memory(f: &Fields, class: u8) -> Result<Instruction, DecodeError> {
    let raw = f.raw;
    let mode = raw.opcode & 0xe0;
    let size = MemSize::from_encoding(raw.opcode);
    match (class, mode) {
        (CLASS_LD, MODE_IMM) => unreachable!("lddw is decoded by the caller"),
        (CLASS_LD, MODE_ABS) | (CLASS_LD, MODE_IND) => {
            f.zero("dst", raw.dst as i64)?;
            f.zero("offset", raw.offset as i64)?;
            if size == MemSize::DW {
                return Err(f.unknown());
            }
            let mode = if mode == MODE_ABS { PacketLoadMode::Abs } else { PacketLoadMode::Ind };
            let src = if mode == PacketLoadMode::Abs {
                f.zero("src", raw.src as i64)?;
                Reg::R0
            } else {
                f.src()?
            };
            Ok(Instruction::LegacyPacketLoad { mode, size, src, imm: raw.imm })
        }
        (CLASS_LDX, MODE_MEM) | (CLASS_LDX, MODE_MEMSX) => {
            f.zero("imm", raw.imm as i64)?;
            let sign_extend = mode == MODE_MEMSX;
            if sign_extend && size == MemSize::DW {
                return Err(f.unknown());
            }
            Ok(Instruction::Load { size, sign_extend, dst: f.dst()?, src: f.src()?, offset: raw.offset })
        }
        (CLASS_ST, MODE_MEM) => {
            f.zero("src", raw.src as i64)?;
            Ok(Instruction::Store { size, dst: f.dst()?, offset: raw.offset, src: Operand::Imm(raw.imm) })
        }
        (CLASS_STX, MODE_MEM) => {
            f.zero("imm", raw.imm as i64)?;
            Ok(Instruction::Store { size, dst: f.dst()?, offset: raw.offset, src: Operand::Reg(f.src()?) })
        }
        (CLASS_STX, MODE_ATOMIC) => {
            if !matches!(size, MemSize::W | MemSize::DW) {
                return Err(f.unknown());
            }
            let (op, fetch) = match raw.imm {
                0x00 => (AtomicOp::Add, false),
                0x40 => (AtomicOp::Or, false),
                0x50 => (AtomicOp::And, false),
                0xa0 => (AtomicOp::Xor, false),
                0x01 => (AtomicOp::Add, true),
                0x41 => (AtomicOp::Or, true),
                0x51 => (AtomicOp::And, true),
                0xa1 => (AtomicOp::Xor, true),
                0xe1 => (AtomicOp::Xchg, true),
                0xf1 => (AtomicOp::CmpXchg, true),
                other => {
                    return Err(DecodeError::Invalid { pc: f.pc, what: format!("unknown atomic operation {other:#x}") })
                }
            };
            Ok(Instruction::Atomic { size, op, fetch, dst: f.dst()?, src: f.src()?, offset: raw.offset })
        }
        _ => Err(f.unknown()),
    }
}

/// Decodes one slot (not `lddw`, which needs two).
fn decode_slot(pc: usize, raw: &RawSlot) -> Result<Instruction, DecodeError> {
    let f = Fields { pc, raw };
    let class = raw.opcode & 0x07;
    match class {
        CLASS_ALU => decode_alu(&f, Width::W32),
        CLASS_ALU64 => decode_alu(&f, Width::W64),
        CLASS_JMP | CLASS_JMP32 => decode_jump(&f, class),
        _ => decode_memory(&f, class),
    }
}

const OPCODE_LDDW: u8 = 0x18;

/// Decodes a whole program. The result has exactly one entry per slot.
pub fn decode(bytes: &[u8]) -> Result<Vec<Instruction>, DecodeError> {
    if !bytes.len().is_multiple_of(SLOT_SIZE) {
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    let slots: Vec<RawSlot> =
        bytes.chunks_exact(SLOT_SIZE).map(|c| RawSlot::from_bytes(c.try_into().expect("chunk of 8"))).collect();
    decode_slots(&slots)
}

/// Decodes a program given as raw slots.
pub fn decode_slots(slots: &[RawSlot]) -> Result<Vec<Instruction>, DecodeError> {
    let mut out = Vec::with_capacity(slots.len());
    let mut pc = 0;
    while pc < slots.len() {
        let raw = &slots[pc];
        if raw.opcode & 0x07 == CLASS_LD && raw.opcode & 0xe0 == MODE_IMM {
            if raw.opcode != OPCODE_LDDW {
                return Err(DecodeError::UnknownOpcode { pc, opcode: raw.opcode });
            }
            let f = Fields { pc, raw };
            let dst = f.dst()?;
            f.zero("offset", raw.offset as i64)?;
            let kind = Imm64Kind::from_src(raw.src).ok_or_else(|| DecodeError::Invalid {
                pc,
                what: format!("lddw with unknown pseudo source {}", raw.src),
            })?;
            let tail = slots.get(pc + 1).ok_or(DecodeError::MissingLddwTail { pc })?;
            // The second slot carries only the upper immediate; every other field must be zero (RFC 9669 §5.4).
            let tf = Fields { pc: pc + 1, raw: tail };
            tf.zero("opcode", tail.opcode as i64)?;
            tf.zero("dst", tail.dst as i64)?;
            tf.zero("src", tail.src as i64)?;
            tf.zero("offset", tail.offset as i64)?;
            out.push(Instruction::LoadImm64 { dst, kind, imm: raw.imm, next_imm: tail.imm });
            out.push(Instruction::LoadImm64Continuation);
            pc += 2;
            continue;
        }
        out.push(decode_slot(pc, raw)?);
        pc += 1;
    }
    Ok(out)
}

/// Encodes one instruction into its slot(s).
pub fn encode_instruction(insn: &Instruction, out: &mut Vec<RawSlot>) {
    let reg_or_imm = |src: &Operand| match *src {
        Operand::Reg(r) => (SOURCE_X, r.number(), 0),
        Operand::Imm(i) => (0, 0, i),
    };
    let slot = match *insn {
        Instruction::Alu { width, op, dst, src } => {
            let class = if width == Width::W64 { CLASS_ALU64 } else { CLASS_ALU };
            let (x, s, imm) = reg_or_imm(&src);
            let (code, offset) = match op {
                AluOp::Add => (0x00, 0),
                AluOp::Sub => (0x10, 0),
                AluOp::Mul => (0x20, 0),
                AluOp::Div => (0x30, 0),
                AluOp::SDiv => (0x30, 1),
                AluOp::Or => (0x40, 0),
                AluOp::And => (0x50, 0),
                AluOp::Lsh => (0x60, 0),
                AluOp::Rsh => (0x70, 0),
                AluOp::Neg => (0x80, 0),
                AluOp::Mod => (0x90, 0),
                AluOp::SMod => (0x90, 1),
                AluOp::Xor => (0xa0, 0),
                AluOp::Mov => (0xb0, 0),
                AluOp::MovSx(bits) => (0xb0, bits as i16),
                AluOp::Arsh => (0xc0, 0),
            };
            RawSlot { opcode: class | code | x, dst: dst.number(), src: s, offset, imm }
        }
        Instruction::Endian { order, bits, dst } => {
            let (class, x) = match order {
                ByteOrder::ToLe => (CLASS_ALU, 0),
                ByteOrder::ToBe => (CLASS_ALU, SOURCE_X),
                ByteOrder::Swap => (CLASS_ALU64, 0),
            };
            RawSlot { opcode: class | 0xd0 | x, dst: dst.number(), src: 0, offset: 0, imm: bits as i32 }
        }
        Instruction::LoadImm64 { dst, kind, imm, next_imm } => {
            out.push(RawSlot { opcode: OPCODE_LDDW, dst: dst.number(), src: kind.src(), offset: 0, imm });
            RawSlot { opcode: 0, dst: 0, src: 0, offset: 0, imm: next_imm }
        }
        Instruction::LoadImm64Continuation => return,
        Instruction::Load { size, sign_extend, dst, src, offset } => {
            let mode = if sign_extend { MODE_MEMSX } else { MODE_MEM };
            RawSlot { opcode: CLASS_LDX | mode | size.encoding(), dst: dst.number(), src: src.number(), offset, imm: 0 }
        }
        Instruction::Store { size, dst, offset, src } => match src {
            Operand::Reg(r) => RawSlot {
                opcode: CLASS_STX | MODE_MEM | size.encoding(),
                dst: dst.number(),
                src: r.number(),
                offset,
                imm: 0,
            },
            Operand::Imm(i) => {
                RawSlot { opcode: CLASS_ST | MODE_MEM | size.encoding(), dst: dst.number(), src: 0, offset, imm: i }
            }
        },
        Instruction::Atomic { size, op, fetch, dst, src, offset } => {
            let base = match op {
                AtomicOp::Add => 0x00,
                AtomicOp::Or => 0x40,
                AtomicOp::And => 0x50,
                AtomicOp::Xor => 0xa0,
                AtomicOp::Xchg => 0xe0,
                AtomicOp::CmpXchg => 0xf0,
            };
            let imm = base | if fetch || matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg) { BPF_FETCH } else { 0 };
            RawSlot {
                opcode: CLASS_STX | MODE_ATOMIC | size.encoding(),
                dst: dst.number(),
                src: src.number(),
                offset,
                imm,
            }
        }
        Instruction::LegacyPacketLoad { mode, size, src, imm } => {
            let m = if mode == PacketLoadMode::Abs { MODE_ABS } else { MODE_IND };
            RawSlot { opcode: CLASS_LD | m | size.encoding(), dst: 0, src: src.number(), offset: 0, imm }
        }
        Instruction::Jump { offset, long } => {
            if long {
                RawSlot { opcode: CLASS_JMP32, dst: 0, src: 0, offset: 0, imm: offset }
            } else {
                RawSlot { opcode: CLASS_JMP, dst: 0, src: 0, offset: offset as i16, imm: 0 }
            }
        }
        Instruction::JumpIf { width, cond, dst, src, offset } => {
            let class = if width == Width::W64 { CLASS_JMP } else { CLASS_JMP32 };
            let code = match cond {
                JumpCond::Eq => 0x10,
                JumpCond::Gt => 0x20,
                JumpCond::Ge => 0x30,
                JumpCond::Set => 0x40,
                JumpCond::Ne => 0x50,
                JumpCond::Sgt => 0x60,
                JumpCond::Sge => 0x70,
                JumpCond::Lt => 0xa0,
                JumpCond::Le => 0xb0,
                JumpCond::Slt => 0xc0,
                JumpCond::Sle => 0xd0,
            };
            let (x, s, imm) = reg_or_imm(&src);
            RawSlot { opcode: class | code | x, dst: dst.number(), src: s, offset, imm }
        }
        Instruction::CallHelper { id } => RawSlot { opcode: 0x85, dst: 0, src: 0, offset: 0, imm: id },
        Instruction::CallLocal { offset } => RawSlot { opcode: 0x85, dst: 0, src: 1, offset: 0, imm: offset },
        Instruction::CallBtf { btf_id, module } => {
            RawSlot { opcode: 0x85, dst: 0, src: 2, offset: module, imm: btf_id }
        }
        Instruction::CallReg { reg } => RawSlot { opcode: 0x8d, dst: reg.number(), src: 0, offset: 0, imm: 0 },
        Instruction::Exit => RawSlot { opcode: 0x95, dst: 0, src: 0, offset: 0, imm: 0 },
    };
    out.push(slot);
}

/// Encodes a program (one entry per slot, as [`decode`] returns) back to raw slots.
pub fn encode(program: &[Instruction]) -> Vec<RawSlot> {
    let mut out = Vec::with_capacity(program.len());
    for insn in program {
        encode_instruction(insn, &mut out);
    }
    out
}

/// Encodes a program to bytes.
pub fn encode_bytes(program: &[Instruction]) -> Vec<u8> {
    encode(program).iter().flat_map(|s| s.to_bytes()).collect()
}
