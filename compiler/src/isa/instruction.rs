//! The instruction model (RFC 9669): registers, operand widths and sizes, operations and the typed
//! [`Instruction`] one slot decodes to. The bit-level encoding of these types lives in [`super::encoding`];
//! their text forms in [`super::asm`] and [`super::disasm`].

use std::fmt;

/// An eBPF register `r0`..`r10`. `r10` is the read-only frame pointer (RFC 9669 §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u8);

impl Reg {
    pub const R0: Reg = Reg(0);
    pub const R1: Reg = Reg(1);
    pub const R2: Reg = Reg(2);
    pub const R3: Reg = Reg(3);
    pub const R4: Reg = Reg(4);
    pub const R5: Reg = Reg(5);
    pub const R6: Reg = Reg(6);
    pub const R7: Reg = Reg(7);
    pub const R8: Reg = Reg(8);
    pub const R9: Reg = Reg(9);
    /// The frame pointer.
    pub const FP: Reg = Reg(10);
    /// Number of architectural registers.
    pub const COUNT: usize = 11;

    /// The register with number `n`, if `n <= 10`.
    pub fn new(n: u8) -> Option<Reg> {
        (n <= 10).then_some(Reg(n))
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub fn number(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Operand width of ALU, jump and atomic instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 32-bit: ALU class (0x04), JMP32 class (0x06), atomic size W.
    W32,
    /// 64-bit: ALU64 class (0x07), JMP class (0x05), atomic size DW.
    W64,
}

impl Width {
    pub fn bits(self) -> u32 {
        match self {
            Width::W32 => 32,
            Width::W64 => 64,
        }
    }
}

/// Memory access size (RFC 9669 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemSize {
    B,
    H,
    W,
    DW,
}

impl MemSize {
    pub fn bytes(self) -> u32 {
        match self {
            MemSize::B => 1,
            MemSize::H => 2,
            MemSize::W => 4,
            MemSize::DW => 8,
        }
    }

    pub fn from_bytes(n: u32) -> Option<MemSize> {
        Some(match n {
            1 => MemSize::B,
            2 => MemSize::H,
            4 => MemSize::W,
            8 => MemSize::DW,
            _ => return None,
        })
    }
}

/// Second operand of ALU and conditional-jump instructions: a register or the 32-bit immediate.
///
/// For 64-bit operations the immediate is sign-extended to 64 bits (RFC 9669 §4.1, §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Reg(Reg),
    Imm(i32),
}

/// ALU operations (RFC 9669 §4.1). Signed division/modulo and sign-extending moves are the v4 forms
/// distinguished by the `offset` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    /// Unsigned division; x / 0 = 0.
    Div,
    /// Signed division (offset 1); x / 0 = 0, INT_MIN / -1 = INT_MIN.
    SDiv,
    Or,
    And,
    Lsh,
    Rsh,
    /// Negation; the source must be immediate 0 with no register (RFC 9669 §4.1).
    Neg,
    /// Unsigned modulo; x % 0 = x.
    Mod,
    /// Signed modulo (offset 1); x % 0 = x, INT_MIN % -1 = 0.
    SMod,
    Xor,
    Mov,
    /// Sign-extending move from the low 8, 16 or 32 bits (offset 8/16/32).
    MovSx(u8),
    Arsh,
}

/// Byte-order operations (RFC 9669 §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// ALU `END` with source bit 0 (`le16/32/64`): on a little-endian machine, truncate only.
    ToLe,
    /// ALU `END` with source bit 1 (`be16/32/64`): byte swap.
    ToBe,
    /// ALU64 `END` (v4 `bswap16/32/64`): unconditional byte swap.
    Swap,
}

/// Atomic read-modify-write operations (RFC 9669 §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Add,
    Or,
    And,
    Xor,
    /// Exchange: always fetches the old value into `src`.
    Xchg,
    /// Compare with r0 and exchange: always fetches the old value into r0.
    CmpXchg,
}

impl AtomicOp {
    /// The ALU operation an atomic read-modify-write applies (RFC 9669 §5.3), `None` for the exchanges.
    pub fn alu_op(self) -> Option<AluOp> {
        match self {
            AtomicOp::Add => Some(AluOp::Add),
            AtomicOp::Or => Some(AluOp::Or),
            AtomicOp::And => Some(AluOp::And),
            AtomicOp::Xor => Some(AluOp::Xor),
            AtomicOp::Xchg | AtomicOp::CmpXchg => None,
        }
    }
}

/// Conditional jump predicates (RFC 9669 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JumpCond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl JumpCond {
    /// Every predicate, in opcode order (RFC 9669 §4.3, Table 5).
    pub const ALL: [JumpCond; 11] = [
        JumpCond::Eq,
        JumpCond::Gt,
        JumpCond::Ge,
        JumpCond::Set,
        JumpCond::Ne,
        JumpCond::Sgt,
        JumpCond::Sge,
        JumpCond::Lt,
        JumpCond::Le,
        JumpCond::Slt,
        JumpCond::Sle,
    ];

    /// The predicate that holds exactly when `self` does not.
    pub fn negate(self) -> JumpCond {
        use JumpCond::*;
        match self {
            Eq => Ne,
            Ne => Eq,
            Gt => Le,
            Le => Gt,
            Ge => Lt,
            Lt => Ge,
            Sgt => Sle,
            Sle => Sgt,
            Sge => Slt,
            Slt => Sge,
            // JSET has no negated opcode; callers handle it (e.g. by swapping branch targets).
            Set => Set,
        }
    }

    pub fn is_signed(self) -> bool {
        matches!(self, JumpCond::Sgt | JumpCond::Sge | JumpCond::Slt | JumpCond::Sle)
    }
}

/// What the immediate of a `lddw` means: its source field (RFC 9669 §5.4, Table 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Imm64Kind {
    /// src 0: the 64-bit immediate itself.
    Imm,
    /// src 1: `map_by_fd(imm)` — in an ELF object, resolved through a relocation to a map symbol.
    MapFd,
    /// src 2: `map_val(map_by_fd(imm)) + next_imm`.
    MapValue,
    /// src 3: `var_addr(imm)` — a BTF variable id.
    VariableAddr,
    /// src 4: `code_addr(imm)` — a function reference.
    CodeAddr,
    /// src 5: `map_by_idx(imm)` — the map with index `imm` in the module's map list.
    MapIndex,
    /// src 6: `map_val(map_by_idx(imm)) + next_imm`.
    MapIndexValue,
}

impl Imm64Kind {
    /// The RFC 9669 name of the pseudo source.
    pub fn name(self) -> &'static str {
        match self {
            Imm64Kind::Imm => "imm64",
            Imm64Kind::MapFd => "map_by_fd",
            Imm64Kind::MapValue => "map_val(map_by_fd)",
            Imm64Kind::VariableAddr => "var_addr",
            Imm64Kind::CodeAddr => "code_addr",
            Imm64Kind::MapIndex => "map_by_idx",
            Imm64Kind::MapIndexValue => "map_val(map_by_idx)",
        }
    }
}

/// Legacy packet-access mode (RFC 9669 §5.5): `LD_ABS` or `LD_IND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketLoadMode {
    Abs,
    Ind,
}

/// One decoded instruction. Jump offsets are kept exactly as encoded (relative to the next slot); use
/// [`Instruction::jump_target`] for the absolute slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// ALU / ALU64 arithmetic, including `mov`, `movsx`, `neg`, `sdiv`, `smod`.
    Alu { width: Width, op: AluOp, dst: Reg, src: Operand },
    /// Byte swap or truncation to `bits` (16, 32 or 64).
    Endian { order: ByteOrder, bits: u32, dst: Reg },
    /// `lddw`: two slots. For [`Imm64Kind::Imm`] the value is `imm as u32 | next_imm << 32`.
    LoadImm64 { dst: Reg, kind: Imm64Kind, imm: i32, next_imm: i32 },
    /// The second slot of a `lddw`; never executed.
    LoadImm64Continuation,
    /// `ldx` (zero-extending) or `ldxs` (sign-extending, v4) from `[src + offset]`.
    Load { size: MemSize, sign_extend: bool, dst: Reg, src: Reg, offset: i16 },
    /// `st` (immediate source) or `stx` (register source) to `[dst + offset]`.
    Store { size: MemSize, dst: Reg, offset: i16, src: Operand },
    /// Atomic operation on `[dst + offset]` (size W or DW only).
    Atomic { size: MemSize, op: AtomicOp, fetch: bool, dst: Reg, src: Reg, offset: i16 },
    /// Legacy `LD_ABS` / `LD_IND` packet load (decoded so later stages can reject it by name).
    LegacyPacketLoad { mode: PacketLoadMode, size: MemSize, src: Reg, imm: i32 },
    /// Unconditional jump: `ja` (16-bit offset) or `gotol`/`ja32` (32-bit immediate offset).
    Jump { offset: i32, long: bool },
    /// Conditional jump comparing `dst` with `src`.
    JumpIf { width: Width, cond: JumpCond, dst: Reg, src: Operand, offset: i16 },
    /// Call of a platform helper by id (`call imm`, src 0).
    CallHelper { id: i32 },
    /// Local (bpf-to-bpf) call (src 1): the callee starts at `pc + 1 + offset`.
    CallLocal { offset: i32 },
    /// Call of a BTF-resolved function / kfunc (src 2): `btf_id` in imm, module (BTF fd index) in `offset`.
    CallBtf { btf_id: i32, module: i16 },
    /// Call of the helper whose id is in a register (`callx`, v4 extension).
    CallReg { reg: Reg },
    /// Return r0 from the current function.
    Exit,
}

impl Instruction {
    /// Number of slots the instruction occupies (2 for `lddw`).
    pub fn slots(&self) -> usize {
        match self {
            Instruction::LoadImm64 { .. } => 2,
            Instruction::LoadImm64Continuation => 0,
            _ => 1,
        }
    }

    /// For `lddw` with [`Imm64Kind::Imm`], the 64-bit constant.
    pub fn imm64(imm: i32, next_imm: i32) -> u64 {
        (imm as u32 as u64) | ((next_imm as u32 as u64) << 32)
    }

    /// Absolute slot a jump (`Jump`, `JumpIf`) or local call at slot `pc` transfers to, if any.
    /// May be out of range; callers validate.
    pub fn jump_target(&self, pc: usize) -> Option<i64> {
        let rel = match *self {
            Instruction::Jump { offset, .. } => offset as i64,
            Instruction::JumpIf { offset, .. } => offset as i64,
            Instruction::CallLocal { offset } => offset as i64,
            _ => return None,
        };
        Some(pc as i64 + 1 + rel)
    }

    /// Whether memory may change while the instruction runs: it stores, runs an atomic, calls (a helper or local
    /// function may write anything it can reach), or is a legacy packet load (which may call into the runtime).
    pub fn may_write_memory(&self) -> bool {
        matches!(
            self,
            Instruction::Store { .. }
                | Instruction::Atomic { .. }
                | Instruction::CallHelper { .. }
                | Instruction::CallLocal { .. }
                | Instruction::CallBtf { .. }
                | Instruction::CallReg { .. }
                | Instruction::LegacyPacketLoad { .. }
        )
    }

    /// Whether control can continue to the next instruction.
    pub fn falls_through(&self) -> bool {
        !matches!(self, Instruction::Jump { .. } | Instruction::Exit)
    }
}
