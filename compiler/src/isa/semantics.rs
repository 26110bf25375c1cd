//! RFC 9669 semantics on concrete values: the one definition the reference interpreter, the verifier (constant
//! folding, branch refinement of constants) and lowering's pre-passes (constant tracking in `stack_stores`) share,
//! so they cannot disagree.

use super::{AluOp, ByteOrder, JumpCond, Width};

/// ALU semantics (RFC 9669 §4.1; contract §5.5): 32-bit results are zero-extended; division by zero gives 0 and
/// modulo by zero leaves the dividend; `INT_MIN / -1 = INT_MIN` and `INT_MIN % -1 = 0`. An immediate `src` must
/// already be sign-extended to 64 bits.
pub fn eval_alu(op: AluOp, width: Width, dst: u64, src: u64) -> u64 {
    match width {
        Width::W64 => alu64(op, dst, src),
        Width::W32 => alu32(op, dst as u32, src as u32) as u64,
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

fn alu64(op: AluOp, d: u64, s: u64) -> u64 {
    match op {
        AluOp::Add => d.wrapping_add(s),
        AluOp::Sub => d.wrapping_sub(s),
        AluOp::Mul => d.wrapping_mul(s),
        AluOp::Div => d.checked_div(s).unwrap_or(0),
        // wrapping_div gives INT_MIN for INT_MIN / -1.
        AluOp::SDiv if s == 0 => 0,
        AluOp::SDiv => (d as i64).wrapping_div(s as i64) as u64,
        AluOp::Or => d | s,
        AluOp::And => d & s,
        AluOp::Lsh => d << (s & 63),
        AluOp::Rsh => d >> (s & 63),
        AluOp::Neg => (d as i64).wrapping_neg() as u64,
        AluOp::Mod => d.checked_rem(s).unwrap_or(d),
        // wrapping_rem gives 0 for INT_MIN % -1; the result has the dividend's sign (truncating division).
        AluOp::SMod if s == 0 => d,
        AluOp::SMod => (d as i64).wrapping_rem(s as i64) as u64,
        AluOp::Xor => d ^ s,
        AluOp::Mov => s,
        AluOp::MovSx(bits) => sign_extend_from(s, bits as u32),
        AluOp::Arsh => ((d as i64) >> (s & 63)) as u64,
    }
}

/// On the low halves; the caller zero-extends the result.
fn alu32(op: AluOp, d: u32, s: u32) -> u32 {
    match op {
        AluOp::Add => d.wrapping_add(s),
        AluOp::Sub => d.wrapping_sub(s),
        AluOp::Mul => d.wrapping_mul(s),
        AluOp::Div => d.checked_div(s).unwrap_or(0),
        AluOp::SDiv if s == 0 => 0,
        AluOp::SDiv => (d as i32).wrapping_div(s as i32) as u32,
        AluOp::Or => d | s,
        AluOp::And => d & s,
        AluOp::Lsh => d << (s & 31),
        AluOp::Rsh => d >> (s & 31),
        AluOp::Neg => (d as i32).wrapping_neg() as u32,
        AluOp::Mod => d.checked_rem(s).unwrap_or(d),
        AluOp::SMod if s == 0 => d,
        AluOp::SMod => (d as i32).wrapping_rem(s as i32) as u32,
        AluOp::Xor => d ^ s,
        AluOp::Mov => s,
        AluOp::MovSx(bits) => sign_extend_from(s as u64, bits as u32) as u32,
        AluOp::Arsh => ((d as i32) >> (s & 31)) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
