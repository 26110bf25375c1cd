//! RFC 9669 semantics on concrete values: the one definition the reference interpreter, the verifier (constant
//! folding, branch refinement of constants) and lowering's pre-passes (constant tracking in `stack_stores`) share,
//! so they cannot disagree.

use super::{AluOp, ByteOrder, Instruction, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width};

/// ALU semantics (RFC 9669 §4.1; contract §5.5): 32-bit results are zero-extended; division by zero gives 0 and
/// modulo by zero leaves the dividend; `INT_MIN / -1 = INT_MIN` and `INT_MIN % -1 = 0`. An immediate `src` must
/// already be sign-extended to 64 bits.
pub fn eval_alu(op: AluOp, width: Width, dst: u64, src: u64) -> u64 {
    match width {
        Width::W64 => alu::<u64>(op, dst, src),
        Width::W32 => alu::<u32>(op, dst as u32, src as u32) as u64,
    }
}

/// Byte-order semantics (RFC 9669 §4.2) on a little-endian target: `le` truncates to `bits`, `be`/`bswap` swap
/// the low `bits` bits; the result is zero-extended.
pub fn eval_byte_order(order: ByteOrder, bits: u32, value: u64) -> u64 {
    match (order, bits) {
        (ByteOrder::ToLe, 16) => value as u16 as u64,
        (ByteOrder::ToLe, 32) => value as u32 as u64,
        (ByteOrder::ToLe, _) => value,
        (_, 16) => (value as u16).swap_bytes() as u64,
        (_, 32) => (value as u32).swap_bytes() as u64,
        (_, _) => value.swap_bytes(),
    }
}

/// A zero-extension idiom: instructions that clear the upper 32 bits of `reg` and change nothing else, so they
/// leave `reg` unchanged when its value is below 2^32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZeroExtension {
    pub reg: Reg,
    /// How many slots the idiom takes (from the slot it was found at).
    pub slots: usize,
}

/// The zero-extension idiom starting at `instructions[at]`, if any: clang's `r <<= 32; r >>= 32` (CPU v1/v2, RFC
/// 9669 §4.1: 64-bit shifts, the second logical) or the 32-bit move `w = w` (v3; 32-bit results are
/// zero-extended). Neither reads memory or sets anything but `reg`.
pub fn zero_extension_at(instructions: &[Instruction], at: usize) -> Option<ZeroExtension> {
    let shift = |i: Option<&Instruction>, shift_op: AluOp| match i {
        Some(&Instruction::Alu { width: Width::W64, op, dst, src: Operand::Imm(32) }) if op == shift_op => Some(dst),
        _ => None,
    };
    match instructions.get(at)? {
        &Instruction::Alu { width: Width::W32, op: AluOp::Mov, dst, src: Operand::Reg(src) } if src == dst => {
            Some(ZeroExtension { reg: dst, slots: 1 })
        }
        _ => {
            let reg = shift(instructions.get(at), AluOp::Lsh)?;
            (shift(instructions.get(at + 1), AluOp::Rsh)? == reg).then_some(ZeroExtension { reg, slots: 2 })
        }
    }
}

/// Whether a conditional jump (RFC 9669 §4.3) is taken for `dst` and `src`; 32-bit jumps compare the low halves.
pub fn eval_jump_condition(cond: JumpCond, width: Width, dst: u64, src: u64) -> bool {
    let (ud, us, sd, ss) = match width {
        Width::W64 => (dst, src, dst as i64, src as i64),
        Width::W32 => (dst as u32 as u64, src as u32 as u64, dst as i32 as i64, src as i32 as i64),
    };
    match cond {
        JumpCond::Eq => ud == us,
        JumpCond::Ne => ud != us,
        JumpCond::Gt => ud > us,
        JumpCond::Ge => ud >= us,
        JumpCond::Lt => ud < us,
        JumpCond::Le => ud <= us,
        JumpCond::Set => ud & us != 0,
        JumpCond::Sgt => sd > ss,
        JumpCond::Sge => sd >= ss,
        JumpCond::Slt => sd < ss,
        JumpCond::Sle => sd <= ss,
    }
}

/// Sign-extends the low `bits` bits of `v` to 64 bits (`movsx`, sign-extending loads, RFC 9669 §4.1, §5.2).
pub fn sign_extend_from(v: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}

/// Where a legacy packet load (RFC 9669 §5.5) finds the packet: the offsets of the packet-start (`data`) and
/// packet-end (`data_end`) pointer fields in the context `r6` points to, and their width. The values come from the
/// program type's context layout (`platform::ContextDescriptor`); the interpreter, the verifier's `Verified` and
/// lowering all use this one description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketFields {
    pub data: u32,
    pub data_end: u32,
    /// 8 on 64-bit platforms (Windows `xdp_md_t`), 4 for Linux's `__sk_buff` view.
    pub width: MemSize,
}

/// The packet offset a legacy load reads at (RFC 9669 §5.5; Linux `gen_ld_abs`): `imm` for `LD_ABS`, and for
/// `LD_IND` the 32-bit wrapping sum of the low half of `src` and `imm`, read as a signed 32-bit number (Linux
/// passes it as `int offset`).
pub fn legacy_packet_offset(mode: PacketLoadMode, src: u64, imm: i32) -> i32 {
    match mode {
        PacketLoadMode::Abs => imm,
        PacketLoadMode::Ind => (src as u32).wrapping_add(imm as u32) as i32,
    }
}

/// Whether `size` bytes at packet offset `offset` lie inside a packet of `len` bytes. Otherwise the load ends the
/// program with r0 = 0 (Linux: the `bpf_skb_load_helper_*` failure path `r0 = 0; exit`). Negative offsets are out
/// of bounds: Linux's ancillary windows (`SKF_NET_OFF`, `SKF_LL_OFF`) address socket-buffer headers that a
/// data/data_end packet does not have.
pub fn legacy_packet_in_bounds(offset: i32, size: MemSize, len: u64) -> bool {
    offset >= 0 && (offset as u64) + size.bytes() as u64 <= len
}

/// The loaded value: the `size` bytes read as a little-endian number (`raw`), converted from network to host
/// byte order and zero-extended.
pub fn legacy_packet_value(size: MemSize, raw: u64) -> u64 {
    match size {
        MemSize::B => raw & 0xff,
        other => eval_byte_order(ByteOrder::Swap, other.bytes() * 8, raw),
    }
}

/// An operand word of the ALU: `u32` for the ALU class, `u64` for ALU64. [`alu`] is written once over it, so the
/// two widths cannot drift apart.
trait Word:
    Copy + Eq + std::ops::BitOr<Output = Self> + std::ops::BitAnd<Output = Self> + std::ops::BitXor<Output = Self>
{
    const ZERO: Self;
    fn wrapping_add(self, other: Self) -> Self;
    fn wrapping_sub(self, other: Self) -> Self;
    fn wrapping_mul(self, other: Self) -> Self;
    fn checked_div(self, other: Self) -> Option<Self>;
    fn checked_rem(self, other: Self) -> Option<Self>;
    /// Signed division and remainder (truncating); `wrapping_*` gives `INT_MIN / -1 = INT_MIN`, `INT_MIN % -1 = 0`.
    fn signed_wrapping_div(self, other: Self) -> Self;
    fn signed_wrapping_rem(self, other: Self) -> Self;
    fn signed_wrapping_neg(self) -> Self;
    /// Shifts by `other` modulo the width (RFC 9669 §4.1 masks the shift amount).
    fn shl_masked(self, other: Self) -> Self;
    fn shr_masked(self, other: Self) -> Self;
    fn ashr_masked(self, other: Self) -> Self;
    /// `movsx`: the low `bits` bits, sign-extended to the width.
    fn sign_extended_from(self, bits: u32) -> Self;
}

macro_rules! word {
    ($unsigned:ty, $signed:ty) => {
        impl Word for $unsigned {
            const ZERO: Self = 0;
            fn wrapping_add(self, other: Self) -> Self {
                <$unsigned>::wrapping_add(self, other)
            }
            fn wrapping_sub(self, other: Self) -> Self {
                <$unsigned>::wrapping_sub(self, other)
            }
            fn wrapping_mul(self, other: Self) -> Self {
                <$unsigned>::wrapping_mul(self, other)
            }
            fn checked_div(self, other: Self) -> Option<Self> {
                <$unsigned>::checked_div(self, other)
            }
            fn checked_rem(self, other: Self) -> Option<Self> {
                <$unsigned>::checked_rem(self, other)
            }
            fn signed_wrapping_div(self, other: Self) -> Self {
                (self as $signed).wrapping_div(other as $signed) as $unsigned
            }
            fn signed_wrapping_rem(self, other: Self) -> Self {
                (self as $signed).wrapping_rem(other as $signed) as $unsigned
            }
            fn signed_wrapping_neg(self) -> Self {
                (self as $signed).wrapping_neg() as $unsigned
            }
            fn shl_masked(self, other: Self) -> Self {
                self << (other & (<$unsigned>::BITS - 1) as $unsigned)
            }
            fn shr_masked(self, other: Self) -> Self {
                self >> (other & (<$unsigned>::BITS - 1) as $unsigned)
            }
            fn ashr_masked(self, other: Self) -> Self {
                ((self as $signed) >> (other & (<$unsigned>::BITS - 1) as $unsigned)) as $unsigned
            }
            fn sign_extended_from(self, bits: u32) -> Self {
                sign_extend_from(self as u64, bits) as $unsigned
            }
        }
    };
}

word!(u32, i32);
word!(u64, i64);

/// One ALU operation at the width of `W` (RFC 9669 §4.1).
fn alu<W: Word>(op: AluOp, d: W, s: W) -> W {
    match op {
        AluOp::Add => d.wrapping_add(s),
        AluOp::Sub => d.wrapping_sub(s),
        AluOp::Mul => d.wrapping_mul(s),
        AluOp::Div => d.checked_div(s).unwrap_or(W::ZERO),
        AluOp::SDiv if s == W::ZERO => W::ZERO,
        AluOp::SDiv => d.signed_wrapping_div(s),
        AluOp::Or => d | s,
        AluOp::And => d & s,
        AluOp::Lsh => d.shl_masked(s),
        AluOp::Rsh => d.shr_masked(s),
        AluOp::Neg => d.signed_wrapping_neg(),
        AluOp::Mod => d.checked_rem(s).unwrap_or(d),
        // The remainder has the dividend's sign (truncating division).
        AluOp::SMod if s == W::ZERO => d,
        AluOp::SMod => d.signed_wrapping_rem(s),
        AluOp::Xor => d ^ s,
        AluOp::Mov => s,
        AluOp::MovSx(bits) => s.sign_extended_from(bits as u32),
        AluOp::Arsh => d.ashr_masked(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_extension_idioms_are_the_identity_exactly_below_2_pow_32() {
        let shl = Instruction::Alu { width: Width::W64, op: AluOp::Lsh, dst: Reg::R2, src: Operand::Imm(32) };
        let shr = Instruction::Alu { width: Width::W64, op: AluOp::Rsh, dst: Reg::R2, src: Operand::Imm(32) };
        let mov32 = Instruction::Alu { width: Width::W32, op: AluOp::Mov, dst: Reg::R2, src: Operand::Reg(Reg::R2) };
        assert_eq!(zero_extension_at(&[shl, shr], 0), Some(ZeroExtension { reg: Reg::R2, slots: 2 }));
        assert_eq!(zero_extension_at(&[mov32], 0), Some(ZeroExtension { reg: Reg::R2, slots: 1 }));
        // Not idioms: an arithmetic right shift, another register, a lone shift, a 32-bit move between registers.
        let sar = Instruction::Alu { width: Width::W64, op: AluOp::Arsh, dst: Reg::R2, src: Operand::Imm(32) };
        let shr3 = Instruction::Alu { width: Width::W64, op: AluOp::Rsh, dst: Reg::R3, src: Operand::Imm(32) };
        let mov32_other =
            Instruction::Alu { width: Width::W32, op: AluOp::Mov, dst: Reg::R2, src: Operand::Reg(Reg::R3) };
        assert_eq!(zero_extension_at(&[shl, sar], 0), None);
        assert_eq!(zero_extension_at(&[shl, shr3], 0), None);
        assert_eq!(zero_extension_at(&[shl], 0), None);
        assert_eq!(zero_extension_at(&[mov32_other], 0), None);
        // The semantics the lowering relies on: identity exactly for values below 2^32.
        for v in [0u64, 1, 0x7fff_ffff, 0xffff_ffff, 0x1_0000_0000, u64::MAX, 0x8000_0000_0000_0001] {
            let shifted = eval_alu(AluOp::Rsh, Width::W64, eval_alu(AluOp::Lsh, Width::W64, v, 32), 32);
            let moved = eval_alu(AluOp::Mov, Width::W32, v, v);
            assert_eq!(shifted == v, v <= u32::MAX as u64, "{v:#x}");
            assert_eq!(moved == v, v <= u32::MAX as u64, "{v:#x}");
        }
    }

    #[test]
    fn division_and_modulo_follow_rfc_9669_at_the_edges() {
        assert_eq!(eval_alu(AluOp::Div, Width::W64, 7, 0), 0);
        assert_eq!(eval_alu(AluOp::Mod, Width::W64, 7, 0), 7);
        assert_eq!(eval_alu(AluOp::SDiv, Width::W64, i64::MIN as u64, u64::MAX), i64::MIN as u64);
        assert_eq!(eval_alu(AluOp::SMod, Width::W64, i64::MIN as u64, u64::MAX), 0);
        assert_eq!(eval_alu(AluOp::SDiv, Width::W32, i32::MIN as u32 as u64, u64::MAX), i32::MIN as u32 as u64);
        assert_eq!(eval_alu(AluOp::Add, Width::W32, u32::MAX as u64, 1), 0, "32-bit results are zero-extended");
    }

    #[test]
    fn shifts_mask_the_amount_to_the_width_and_arsh_keeps_the_sign() {
        assert_eq!(eval_alu(AluOp::Lsh, Width::W64, 1, 65), 2);
        assert_eq!(eval_alu(AluOp::Lsh, Width::W32, 1, 33), 2);
        assert_eq!(eval_alu(AluOp::Rsh, Width::W32, 0xffff_ffff_8000_0000, 31), 1, "32-bit shifts the low half");
        assert_eq!(eval_alu(AluOp::Arsh, Width::W32, 0x8000_0000, 4), 0xf800_0000);
        assert_eq!(eval_alu(AluOp::Arsh, Width::W64, 1 << 63, 63), u64::MAX);
        assert_eq!(eval_alu(AluOp::MovSx(8), Width::W32, 0, 0x80), 0xffff_ff80);
        assert_eq!(eval_alu(AluOp::MovSx(16), Width::W64, 0, 0x8000), 0xffff_ffff_ffff_8000);
        assert_eq!(eval_alu(AluOp::Neg, Width::W32, 1, 0), 0xffff_ffff);
    }

    proptest::proptest! {
        /// The 32-bit ALU is the 64-bit one on the low halves wherever the low half of the result depends only on
        /// the low halves of the operands, and its result is always zero-extended.
        #[test]
        fn alu32_agrees_with_alu64_on_the_low_halves(d: u64, s: u64, k in 0usize..7) {
            let op = [AluOp::Add, AluOp::Sub, AluOp::Mul, AluOp::Or, AluOp::And, AluOp::Xor, AluOp::Mov][k];
            let narrow = eval_alu(op, Width::W32, d, s);
            proptest::prop_assert_eq!(narrow >> 32, 0);
            proptest::prop_assert_eq!(narrow, eval_alu(op, Width::W64, d, s) as u32 as u64);
        }
    }

    #[test]
    fn jump_conditions_compare_signed_and_unsigned_at_the_given_width() {
        assert!(eval_jump_condition(JumpCond::Gt, Width::W64, u64::MAX, 1));
        assert!(!eval_jump_condition(JumpCond::Sgt, Width::W64, u64::MAX, 1));
        assert!(eval_jump_condition(JumpCond::Eq, Width::W32, 0x1_0000_0005, 5), "32-bit compares the low halves");
        assert!(eval_jump_condition(JumpCond::Slt, Width::W32, 0xffff_ffff, 0));
        assert!(eval_jump_condition(JumpCond::Set, Width::W64, 0b110, 0b010));
    }

    #[test]
    fn byte_order_truncates_or_swaps_and_zero_extends() {
        assert_eq!(eval_byte_order(ByteOrder::ToLe, 16, 0x1122_3344), 0x3344);
        assert_eq!(eval_byte_order(ByteOrder::ToBe, 16, 0x1122_3344), 0x4433);
        assert_eq!(eval_byte_order(ByteOrder::ToBe, 32, 0x1122_3344), 0x4433_2211);
        assert_eq!(eval_byte_order(ByteOrder::ToBe, 64, 0x0102_0304_0506_0708), 0x0807_0605_0403_0201);
    }
}
