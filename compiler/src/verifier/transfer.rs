//! eBPF semantics over the abstract domain: one `match` over all instructions, grouped like RFC 9669
//! (ALU §4.1–4.2, jumps and calls §4.3, memory §5). Each arm checks the instruction's safety conditions on
//! the incoming state and produces the outgoing states of its edges.

use crate::isa::{AluOp, AtomicOp, Imm64Kind, Instruction, JumpCond, MemSize, Operand, Reg, Width};
use crate::platform::{HelperArg, HelperReturn};
use crate::program::{GlobalSectionKind, MapType};

use super::num::Num;
use super::state::{ty, State, Value, FRAME_STRIDE};
use super::{Env, Failure, Property};

/// Where control goes after an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// To slot `pc` in the same function activation.
    Local(usize),
    /// Into a local function starting at `target`, from the call at `call_pc`.
    Call { target: usize },
    /// Return from the current function.
    Return,
}

type Out = Result<Vec<(Edge, State)>, Failure>;

fn fail(pc: usize, property: Property, message: impl Into<String>, values: Vec<(String, String)>) -> Failure {
    Failure { pc, property, message: message.into(), values }
}

fn show(name: impl Into<String>, v: &Value) -> (String, String) {
    (name.into(), v.to_string())
}

fn read(st: &State, r: Reg, pc: usize) -> Result<Value, Failure> {
    let v = &st.regs[r.index()];
    if v.may_be(ty::UNINIT) {
        return Err(fail(
            pc,
            Property::Uninitialized,
            format!("{r} may be read before it is written"),
            vec![show(r.to_string(), v)],
        ));
    }
    Ok(v.clone())
}

fn operand(st: &State, src: Operand, width: Width, pc: usize) -> Result<Value, Failure> {
    match src {
        Operand::Reg(r) => read(st, r, pc),
        Operand::Imm(i) => Ok(Value::number(Num::constant(match width {
            Width::W64 => i as i64 as u64,
            Width::W32 => i as u32 as u64,
        }))),
    }
}

/// Writes a register; `added` is the constant added to its previous value (for loop deltas), if that is all
/// that happened and it could not wrap.
fn set_reg(st: &mut State, r: Reg, v: Value, added: Option<i64>) {
    st.regs[r.index()] = v;
    for d in st.deltas.values_mut() {
        d[r.index()] = match (d[r.index()], added) {
            (Some((lo, hi)), Some(c)) => lo.checked_add(c).zip(hi.checked_add(c)),
            _ => None,
        };
    }
}

fn full(size: MemSize, sign_extend: bool) -> Num {
    let bits = size.bytes() * 8;
    if bits == 64 {
        Num::TOP
    } else if sign_extend {
        let h = 1i64 << (bits - 1);
        Num::signed(-h, h - 1).expect("non-empty")
    } else {
        Num::full_width(bits)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Checks that `[base + off, base + off + size)` is inside the region of every type `base` may have.
#[allow(clippy::too_many_arguments)] // one call per memory check; the arguments are the check
fn check_access(
    env: &Env,
    st: &State,
    pc: usize,
    reg: Reg,
    base: &Value,
    off: i64,
    size: u64,
    access: Access,
) -> Result<(), Failure> {
    let vals = || vec![show(reg.to_string(), base)];
    let what = if access == Access::Read { "read" } else { "write" };
    if base.may_be(ty::UNINIT) {
        return Err(fail(pc, Property::Uninitialized, format!("{reg} used as a pointer may be uninitialised"), vals()));
    }
    if base.may_be(ty::NUMBER) {
        if base.may_be(ty::POINTERS) && base.num.contains(0) {
            return Err(fail(
                pc,
                Property::NullDereference,
                format!("possible null access through {reg} (missing null check)"),
                vals(),
            ));
        }
        return Err(fail(
            pc,
            Property::TypeMismatch,
            format!("{what} through {reg}, which may be a number, not a pointer"),
            vals(),
        ));
    }
    if base.may_be(ty::MAP_FD | ty::MAP_FD_PROGRAMS | ty::PACKET_END) {
        return Err(fail(
            pc,
            Property::TypeMismatch,
            format!("{what} through {reg}, which is not a pointer to memory"),
            vals(),
        ));
    }
    let lo = base.off.smin as i128 + off as i128;
    let hi = base.off.smax as i128 + off as i128 + size as i128;
    let oob = |region: &str, limit: String| {
        fail(
            pc,
            Property::OutOfBounds,
            format!("{what} of {size} bytes at {reg}{off:+} may be outside the {region} ({limit})"),
            vals(),
        )
    };
    if base.may_be(ty::CTX) {
        let csize = env.program_type.context.size as i128;
        if lo < 0 || hi > csize {
            return Err(oob("context", format!("context size {csize}")));
        }
    }
    if base.may_be(ty::STACK) && !st.stack.in_one_frame(lo, hi) {
        return Err(oob(
            "stack",
            format!(
                "bytes [{lo}, {hi}) are not inside one live 512-byte frame; frame k is [-{FRAME_STRIDE}k-512, -{FRAME_STRIDE}k)"
            ),
        ));
    }
    if base.may_be(ty::SHARED) {
        if lo < 0 || hi > base.shared_size as i128 {
            return Err(oob("map value or global section", format!("region size {}", base.shared_size)));
        }
        if access == Access::Write && base.shared_readonly {
            return Err(fail(
                pc,
                Property::ReadOnly,
                format!("write through {reg} into read-only data (.rodata)"),
                vals(),
            ));
        }
    }
    if base.may_be(ty::PACKET) {
        if lo < 0 {
            return Err(oob("packet", "offset may be negative".into()));
        }
        let by_rel =
            base.pkt.is_some_and(|(id, d)| d as i128 + off as i128 + size as i128 <= st.packet_range(id) as i128);
        let by_size = hi <= st.packet_range(0) as i128;
        if !by_rel && !by_size {
            return Err(oob(
                "packet",
                format!("proven packet size {} — compare with data_end first", st.packet_range(0)),
            ));
        }
    }
    Ok(())
}

/// The context pointer fields: (offset, width, kind). The width is the field's size in the platform's
/// context table (Linux declares them as 4-byte fields the kernel rewrites), else the pointer size.
fn ctx_pointer_fields(env: &Env) -> Vec<(i64, i64, u16)> {
    let c = env.program_type.context;
    let width = |off: i32| {
        env.program_type
            .context_fields
            .iter()
            .find(|f| f.offset as i32 == off)
            .map_or(env.options.ctx_pointer_size as i64, |f| f.size as i64)
    };
    let mut v = Vec::new();
    if c.data >= 0 {
        v.push((c.data as i64, width(c.data), ty::PACKET));
    }
    if c.end >= 0 {
        v.push((c.end as i64, width(c.end), ty::PACKET_END));
    }
    if c.meta >= 0 {
        v.push((c.meta as i64, width(c.meta), ty::PACKET | ty::UNINIT));
    }
    v
}

fn load_ctx(env: &Env, pc: usize, base: &Value, off: i64, size: MemSize, sign_extend: bool) -> Result<Value, Failure> {
    let lo = base.off.smin as i128 + off as i128;
    let hi = base.off.smax as i128 + off as i128 + size.bytes() as i128;
    for (foff, psize, kind) in ctx_pointer_fields(env) {
        let (flo, fhi) = (foff as i128, foff as i128 + psize as i128);
        if lo < fhi && flo < hi {
            if lo == flo && hi == fhi && base.off.smin == base.off.smax {
                return Ok(match kind {
                    ty::PACKET => Value { pkt: Some((0, 0)), ..Value::pointer(ty::PACKET, Num::constant(0)) },
                    ty::PACKET_END => Value::pointer(ty::PACKET_END, Num::constant(0)),
                    // data_meta: at or below data; never provably inside the packet here.
                    _ => Value::pointer(ty::PACKET, Num::signed(-(1 << 32), 0).expect("non-empty")),
                });
            }
            return Err(fail(
                pc,
                Property::PointerLeak,
                format!("context read [{lo}, {hi}) reads part of the packet pointer field at offset {foff}"),
                vec![],
            ));
        }
    }
    Ok(Value::number(full(size, sign_extend)))
}

fn check_ctx_write(env: &Env, pc: usize, base: &Value, off: i64, size: u64) -> Result<(), Failure> {
    let lo = base.off.smin as i128 + off as i128;
    let hi = base.off.smax as i128 + off as i128 + size as i128;
    let fields = env.program_type.context_fields;
    let ok = if fields.is_empty() {
        ctx_pointer_fields(env).iter().all(|(f, w, _)| hi <= *f as i128 || (*f + *w) as i128 <= lo)
    } else {
        fields.iter().any(|f| f.writable && f.offset as i128 <= lo && hi <= (f.offset + f.size) as i128)
    };
    if !ok {
        let names: Vec<&str> = fields
            .iter()
            .filter(|f| (f.offset as i128) < hi && lo < (f.offset + f.size) as i128)
            .map(|f| f.name)
            .collect();
        return Err(fail(
            pc,
            Property::ReadOnly,
            format!(
                "cannot write to context bytes [{lo}, {hi}){}: not a writable field",
                if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) }
            ),
            vec![],
        ));
    }
    Ok(())
}

fn load(
    env: &Env,
    st: &State,
    pc: usize,
    src: Reg,
    off: i16,
    size: MemSize,
    sign_extend: bool,
) -> Result<Value, Failure> {
    let base = read(st, src, pc)?;
    let off = off as i64;
    check_access(env, st, pc, src, &base, off, size.bytes() as u64, Access::Read)?;
    let mut result: Option<Value> = None;
    let mut add = |v: Value| {
        result = Some(match result.take() {
            Some(r) => r.join(&v),
            None => v,
        })
    };
    if base.may_be(ty::CTX) {
        add(load_ctx(env, pc, &base, off, size, sign_extend)?);
    }
    if base.may_be(ty::STACK) {
        let lo = base.off.smin + off;
        let hi = base.off.smax + off + size.bytes() as i64;
        if !st.stack.all_init(lo, hi) {
            return Err(fail(
                pc,
                Property::Uninitialized,
                format!("stack bytes [{lo}, {hi}) may be read before they are written"),
                vec![show(src.to_string(), &base)],
            ));
        }
        let exact = (lo == base.off.smax + off && size == MemSize::DW).then(|| st.stack.spills.get(&lo)).flatten();
        match exact {
            Some(v) => add(v.clone()),
            None => {
                if let Some((k, v)) = st.stack.overlapping(lo, hi).find(|(_, v)| v.may_be(ty::POINTERS)) {
                    return Err(fail(
                        pc,
                        Property::PointerLeak,
                        format!("partial read of the pointer spilled at stack offset {k}"),
                        vec![show(format!("stack[{k}]"), v)],
                    ));
                }
                add(Value::number(full(size, sign_extend)));
            }
        }
    }
    if base.may_be(ty::PACKET | ty::SHARED) {
        add(Value::number(full(size, sign_extend)));
    }
    Ok(result.expect("a memory type was checked"))
}

fn store(env: &Env, st: &mut State, pc: usize, dst: Reg, off: i16, size: MemSize, v: Value) -> Result<(), Failure> {
    let base = read(st, dst, pc)?;
    let off = off as i64;
    let n = size.bytes() as i64;
    check_access(env, st, pc, dst, &base, off, n as u64, Access::Write)?;
    let lo = base.off.smin + off;
    let hi = base.off.smax + off + n;
    let exact = base.is(ty::STACK) && base.off.smin == base.off.smax;
    let spill = exact && size == MemSize::DW && lo.rem_euclid(8) == 0;
    // Part of a pointer may go to the stack only; the bytes it covers become uninitialised, so they can never
    // be read back (no address bits escape as a number).
    let opaque = v.may_be(ty::POINTERS) && !spill;
    if opaque && !base.is(ty::STACK) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "storing a pointer into memory outside the stack (map, context or packet) would leak an address",
            vec![show("stored value", &v)],
        ));
    }
    if base.may_be(ty::CTX) {
        check_ctx_write(env, pc, &base, off, n as u64)?;
    }
    if base.may_be(ty::STACK) {
        st.stack.clobber(lo, hi);
        if opaque {
            for o in lo..hi {
                st.stack.set_init(o, false);
            }
        } else if exact {
            for o in lo..hi {
                st.stack.set_init(o, true);
            }
            if spill {
                st.stack.spills.insert(lo, v);
            }
        }
    }
    Ok(())
}

/// Pointer ± number, number + pointer, pointer − pointer (RFC 9669 §4.1 on addresses; anything else on a
/// pointer would expose or forge an address).
#[allow(clippy::too_many_arguments)] // one call per memory check; the arguments are the check
fn pointer_arith(
    st: &mut State,
    pc: usize,
    op: AluOp,
    width: Width,
    dst: Reg,
    a: &Value,
    b: &Value,
    src_is_imm: bool,
) -> Result<Value, Failure> {
    let vals = || vec![show(format!("{dst} (dst)"), a), show("src", b)];
    let arith_types = ty::CTX | ty::STACK | ty::PACKET | ty::SHARED;
    let same_region_sub = op == AluOp::Sub
        && a.types == b.types
        && (a.types == ty::STACK || a.types == ty::PACKET || a.types == ty::CTX || a.types == ty::PACKET_END);
    let packet_distance =
        op == AluOp::Sub && (a.types | b.types) == (ty::PACKET | ty::PACKET_END) && a.types != b.types;
    if width == Width::W32 && (same_region_sub || packet_distance) {
        // The truncated distance between two pointers into one region reveals no address.
        let d = pointer_arith(st, pc, op, Width::W64, dst, a, b, src_is_imm)?;
        return Ok(Value::number(d.num.low32()));
    }
    if width == Width::W32 || !matches!(op, AluOp::Add | AluOp::Sub) {
        return Err(fail(
            pc,
            Property::PointerArithmetic,
            format!("{op:?} ({}-bit) on a pointer is not allowed (only 64-bit pointer ± number)", width.bits()),
            vals(),
        ));
    }
    let pure_ptr = |v: &Value| v.types & !arith_types == 0 && v.types != 0;
    if a.may_be(ty::POINTERS) && b.is_number() || (op == AluOp::Add && a.is_number() && b.may_be(ty::POINTERS)) {
        let (p, n) = if a.is_number() { (b, a) } else { (a, b) };
        if !pure_ptr(p) {
            return Err(fail(
                pc,
                Property::PointerArithmetic,
                "arithmetic on a value that may be a null pointer, a map or data_end",
                vals(),
            ));
        }
        let off = Num::alu(op, Width::W64, &p.off, &n.num);
        let mut r = Value { off, ..p.clone() };
        if p.may_be(ty::PACKET) {
            r.pkt = match (p.pkt, n.num.singleton().filter(|_| src_is_imm)) {
                (Some((id, d)), Some(c)) => {
                    let c = c as i64;
                    (if op == AluOp::Add { d.checked_add(c) } else { d.checked_sub(c) }).map(|d| (id, d))
                }
                _ if off.smin == off.smax && src_is_imm => Some((0, off.smin)),
                _ => {
                    // A register operand gets a base id tied to this instruction even when its value is known in
                    // this iteration, so that the relation survives the join with later loop iterations.
                    // A new variable base: every packet pointer derived from this one by constants shares it.
                    let id = pc as u32 + 1;
                    st.forget_packet_id(id);
                    Some((id, 0))
                }
            };
        }
        return Ok(r);
    }
    if op == AluOp::Sub && a.may_be(ty::POINTERS) && b.may_be(ty::POINTERS) {
        let same = a.types == b.types
            && (a.types == ty::STACK
                || a.types == ty::PACKET
                || a.types == ty::CTX
                || (a.types == ty::SHARED && a.map.is_some() && a.map == b.map));
        if same {
            return Ok(Value::number(Num::alu(AluOp::Sub, Width::W64, &a.off, &b.off)));
        }
        let size_lo = st.packet_range(0);
        if a.is(ty::PACKET_END) && b.is(ty::PACKET) {
            let lo = (size_lo as i128 - b.off.smax as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            return Ok(Value::number(Num::signed(lo.min(0).max(lo), i64::MAX).unwrap_or(Num::TOP)));
        }
        if a.is(ty::PACKET) && b.is(ty::PACKET_END) {
            let hi = (b_off_neg(size_lo, a.off.smax)).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            return Ok(Value::number(Num::signed(i64::MIN, hi).unwrap_or(Num::TOP)));
        }
        if a.is(ty::PACKET_END) && b.is(ty::PACKET_END) {
            return Ok(Value::number(Num::constant(0)));
        }
    }
    Err(fail(
        pc,
        Property::PointerArithmetic,
        "arithmetic between pointers to different regions (or on a map) is not allowed",
        vals(),
    ))
}

fn b_off_neg(size_lo: i64, off_max: i64) -> i128 {
    off_max as i128 - size_lo as i128
}

fn alu(env: &Env, st: &mut State, pc: usize, width: Width, op: AluOp, dst: Reg, src: Operand) -> Result<(), Failure> {
    if dst == Reg::FP {
        return Err(fail(pc, Property::InvalidInstruction, "r10 (the frame pointer) is read-only", vec![]));
    }
    let b = operand(st, src, width, pc)?;
    if matches!(op, AluOp::Mov) {
        if width == Width::W32 && b.may_be(ty::POINTERS) {
            return Err(fail(
                pc,
                Property::PointerLeak,
                "32-bit move of a pointer exposes part of an address",
                vec![show("src", &b)],
            ));
        }
        let v = if width == Width::W32 { Value::number(b.num.low32()) } else { b };
        set_reg(st, dst, v, None);
        return Ok(());
    }
    if let AluOp::MovSx(_) = op {
        if b.may_be(ty::POINTERS) {
            return Err(fail(pc, Property::PointerLeak, "sign-extending move of a pointer", vec![show("src", &b)]));
        }
        set_reg(st, dst, Value::number(Num::alu(op, width, &Num::TOP, &b.num)), None);
        return Ok(());
    }
    let a = if op == AluOp::Neg { st.regs[dst.index()].clone() } else { read(st, dst, pc)? };
    if op == AluOp::Neg && a.may_be(ty::UNINIT) {
        return Err(fail(
            pc,
            Property::Uninitialized,
            format!("{dst} may be read before it is written"),
            vec![show(dst.to_string(), &a)],
        ));
    }
    if matches!(op, AluOp::Div | AluOp::Mod | AluOp::SDiv | AluOp::SMod) && !env.options.allow_division_by_zero {
        let divisor = if width == Width::W32 { b.num.low32() } else { b.num };
        if b.is_number() && divisor.contains(0) {
            return Err(fail(pc, Property::DivisionByZero, "possible division by zero", vec![show("divisor", &b)]));
        }
    }
    let arith_ptrs = ty::CTX | ty::STACK | ty::PACKET | ty::SHARED;
    let mixed = a.may_be(ty::NUMBER) && a.may_be(arith_ptrs) && a.types & !(ty::NUMBER | arith_ptrs) == 0;
    if mixed && b.is_number() && width == Width::W64 && matches!(op, AluOp::Add | AluOp::Sub) {
        // Either a number or a pointer: each part moves by the same amount (a null pointer stays a number).
        let v = Value {
            num: Num::alu(op, width, &a.num, &b.num),
            off: Num::alu(op, width, &a.off, &b.num),
            pkt: None,
            ..a.clone()
        };
        set_reg(st, dst, v, None);
        return Ok(());
    }
    if a.may_be(ty::POINTERS) || b.may_be(ty::POINTERS) {
        let v = pointer_arith(st, pc, op, width, dst, &a, &b, matches!(src, Operand::Imm(_)))?;
        set_reg(st, dst, v, None);
        return Ok(());
    }
    let result = Num::alu(op, width, &a.num, &b.num);
    // Loop delta: dst += c (or -= c) that cannot wrap in the operation width.
    let added = match (op, b.num.singleton()) {
        (AluOp::Add | AluOp::Sub, Some(c)) => {
            let c = if width == Width::W32 { c as u32 as i32 as i64 } else { c as i64 };
            let c = if op == AluOp::Sub { c.checked_neg() } else { Some(c) };
            c.filter(|&c| {
                let max = if width == Width::W32 { u32::MAX as u64 } else { u64::MAX };
                a.num.umax <= max
                    && if c >= 0 {
                        a.num.umax.checked_add(c as u64).is_some_and(|v| v <= max)
                    } else {
                        a.num.umin >= c.unsigned_abs()
                    }
            })
        }
        _ => None,
    };
    set_reg(st, dst, Value::number(result), added);
    Ok(())
}

/// Refines `st` for the branch where `dst cond src` holds (`taken`) or fails; `None` if infeasible.
fn branch(
    st: &State,
    pc: usize,
    width: Width,
    cond: JumpCond,
    dst: Reg,
    src: Operand,
    taken: bool,
) -> Result<Option<State>, Failure> {
    let a = read(st, dst, pc)?;
    let b = operand(st, src, width, pc)?;
    let mut s = st.clone();
    if a.is_number() && b.is_number() {
        let r =
            if taken { Num::assume(cond, width, &a.num, &b.num) } else { Num::assume_not(cond, width, &a.num, &b.num) };
        let Some((na, nb)) = r else { return Ok(None) };
        s.regs[dst.index()].num = na;
        if let Operand::Reg(r) = src {
            s.regs[r.index()].num = nb;
        }
        return Ok(Some(s));
    }
    let vals = || vec![show(dst.to_string(), &a), show("src", &b)];
    if width == Width::W32 {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "32-bit comparison of a pointer (it would compare part of an address)",
            vals(),
        ));
    }
    // Null checks: a pointer-or-null compared with 0.
    let zero = b.is_number() && b.num.singleton() == Some(0);
    if zero && a.may_be(ty::POINTERS) {
        let holds_eq = match (cond, taken) {
            (JumpCond::Eq, t) | (JumpCond::Ne, t) if (cond == JumpCond::Eq) == t => Some(true),
            (JumpCond::Eq | JumpCond::Ne, _) => Some(false),
            (JumpCond::Le, true) | (JumpCond::Gt, false) => Some(true),
            (JumpCond::Gt, true) | (JumpCond::Le, false) => Some(false),
            // Unsigned `< 0` never holds and `>= 0` always does: no information about the address.
            (JumpCond::Lt, true) | (JumpCond::Ge, false) => return Ok(None),
            (JumpCond::Lt, false) | (JumpCond::Ge, true) => return Ok(Some(s)),
            _ => None,
        };
        let Some(is_null) = holds_eq else {
            return Err(fail(
                pc,
                Property::PointerLeak,
                "comparison of a pointer with a number reveals its address (only == 0 / != 0 null checks are allowed)",
                vals(),
            ));
        };
        let v = &mut s.regs[dst.index()];
        if is_null {
            if !v.may_be(ty::NUMBER) {
                return Ok(None);
            }
            v.types = ty::NUMBER;
            match v.num.meet(&Num::constant(0)) {
                Some(n) => v.num = n,
                None => return Ok(None),
            }
        } else {
            v.types &= !ty::NUMBER;
            if a.may_be(ty::NUMBER) {
                if let Some(n) = Num::assume(JumpCond::Ne, Width::W64, &a.num, &Num::constant(0)).map(|p| p.0) {
                    v.types |= ty::NUMBER;
                    v.num = n;
                }
            }
            if v.types == 0 {
                return Ok(None);
            }
        }
        return Ok(Some(s));
    }
    let Operand::Reg(sr) = src else {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "comparison of a pointer with a non-zero constant reveals its address",
            vals(),
        ));
    };
    if width == Width::W32 || a.may_be(ty::NUMBER) || b.may_be(ty::NUMBER) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "comparison between a pointer and a number (or a 32-bit pointer comparison) reveals an address",
            vals(),
        ));
    }
    let maps = ty::MAP_FD | ty::MAP_FD_PROGRAMS;
    if matches!(cond, JumpCond::Eq | JumpCond::Ne) && (a.types | b.types) & !maps == 0 {
        // Map identity: equality reveals which map, not an address.
        return Ok(Some(s));
    }
    let packetish = ty::PACKET | ty::PACKET_END;
    let same_region = a.types == b.types
        && (a.types & (ty::STACK | ty::PACKET | ty::CTX) != 0 && a.types.count_ones() == 1
            || a.types == ty::SHARED && a.map.is_some() && a.map == b.map);
    if !(same_region || (a.types | b.types) & !packetish == 0) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "comparison between pointers to different regions reveals addresses",
            vals(),
        ));
    }
    // Packet bounds: `p <= data_end` (or `p < data_end`) proves the bytes before p are in the packet.
    let (p, cmp) = if a.is(ty::PACKET) && b.is(ty::PACKET_END) {
        (
            &a,
            Some(if taken {
                cond
            } else if cond == JumpCond::Set {
                return Ok(Some(s));
            } else {
                cond.negate()
            }),
        )
    } else if a.is(ty::PACKET_END) && b.is(ty::PACKET) {
        let c = if taken {
            cond
        } else if cond == JumpCond::Set {
            return Ok(Some(s));
        } else {
            cond.negate()
        };
        // end OP p  <=>  p OP' end
        let swapped = match c {
            JumpCond::Gt => JumpCond::Lt,
            JumpCond::Ge => JumpCond::Le,
            JumpCond::Lt => JumpCond::Gt,
            JumpCond::Le => JumpCond::Ge,
            JumpCond::Sgt => JumpCond::Slt,
            JumpCond::Sge => JumpCond::Sle,
            JumpCond::Slt => JumpCond::Sgt,
            JumpCond::Sle => JumpCond::Sge,
            other => other,
        };
        (&b, Some(swapped))
    } else {
        (&a, None)
    };
    let _ = sr;
    if let Some(c) = cmp {
        let extra = match c {
            JumpCond::Le | JumpCond::Sle | JumpCond::Eq => Some(0),
            JumpCond::Lt | JumpCond::Slt => Some(1),
            _ => None,
        };
        if let Some(e) = extra {
            let lo = p.off.smin.saturating_add(e);
            let r0 = s.packet_range(0).max(lo);
            s.packet_ranges.insert(0, r0);
            if let Some((id, d)) = p.pkt {
                let r = s.packet_range(id).max(d.saturating_add(e));
                s.packet_ranges.insert(id, r);
            }
        }
    }
    Ok(Some(s))
}

#[allow(clippy::too_many_arguments)] // one call per memory check; the arguments are the check
fn arg_mem(
    env: &Env,
    st: &State,
    pc: usize,
    i: usize,
    reg: Reg,
    v: &Value,
    size: &Num,
    write: bool,
    or_null: bool,
) -> Result<(), Failure> {
    let mut p = v.clone();
    if or_null && p.may_be(ty::NUMBER) {
        if p.num.singleton() != Some(0) {
            return Err(fail(
                pc,
                Property::HelperArgument,
                format!("argument {i} ({reg}) must be a pointer or null"),
                vec![show(reg.to_string(), v)],
            ));
        }
        p.types &= !ty::NUMBER;
        if p.types == 0 {
            return Ok(());
        }
    }
    let allowed = ty::STACK | ty::PACKET | ty::SHARED;
    if p.types & !allowed != 0 {
        return Err(fail(
            pc,
            Property::HelperArgument,
            format!("argument {i} ({reg}) must point to stack, packet or map memory"),
            vec![show(reg.to_string(), v)],
        ));
    }
    if size.umax == 0 {
        return Ok(());
    }
    if size.umax > i32::MAX as u64 {
        return Err(fail(pc, Property::HelperArgument, format!("size of argument {i} is not bounded"), vec![]));
    }
    check_access(env, st, pc, reg, &p, 0, size.umax, if write { Access::Write } else { Access::Read })?;
    if p.may_be(ty::STACK) && !write {
        let lo = p.off.smin;
        let hi = p.off.smax + size.umax as i64;
        if !st.stack.all_init(lo, hi) {
            return Err(fail(
                pc,
                Property::Uninitialized,
                format!("helper argument {i} reads stack bytes [{lo}, {hi}) that may be uninitialised"),
                vec![show(reg.to_string(), v)],
            ));
        }
        if let Some((k, _)) = st.stack.overlapping(lo, hi).find(|(_, v)| v.may_be(ty::POINTERS)) {
            return Err(fail(
                pc,
                Property::PointerLeak,
                format!("helper argument {i} would read the pointer spilled at stack offset {k}"),
                vec![],
            ));
        }
    }
    Ok(())
}

fn helper_call(env: &Env, st: &mut State, pc: usize, id: i64) -> Result<(), Failure> {
    let proto = u32::try_from(id).ok().and_then(|id| env.platform.helper(env.program_type, id)).ok_or_else(|| {
        fail(
            pc,
            Property::UnknownHelper,
            format!("invalid helper function id {id} for program type {}", env.program_type.name),
            vec![],
        )
    })?;
    let args: Vec<Value> = (1..=5).map(|r| st.regs[r].clone()).collect();
    let reg = |i: usize| Reg::new(i as u8 + 1).expect("r1..r5");
    let mut map: Option<u32> = None;
    let mut writes: Vec<(Value, Num)> = Vec::new();
    for (i, kind) in proto.args.iter().enumerate() {
        let v = &args[i];
        let r = reg(i);
        let vals = || vec![show(r.to_string(), v)];
        if *kind == HelperArg::DontCare {
            continue;
        }
        if v.may_be(ty::UNINIT) {
            return Err(fail(
                pc,
                Property::Uninitialized,
                format!("argument {} ({r}) of {} may be uninitialised", i + 1, proto.name),
                vals(),
            ));
        }
        let bad = |what: &str| {
            fail(
                pc,
                Property::HelperArgument,
                format!("argument {} ({r}) of {} must be {what}", i + 1, proto.name),
                vals(),
            )
        };
        match kind {
            HelperArg::DontCare => {}
            HelperArg::Anything => {
                if v.may_be(ty::POINTERS) {
                    return Err(fail(
                        pc,
                        Property::PointerLeak,
                        format!(
                            "argument {} ({r}) of {} expects a number; passing a pointer leaks an address",
                            i + 1,
                            proto.name
                        ),
                        vals(),
                    ));
                }
            }
            HelperArg::ConstSize | HelperArg::ConstSizeOrZero => {
                if !v.is_number() {
                    return Err(bad("a number (a size)"));
                }
                if *kind == HelperArg::ConstSize && v.num.umin == 0 {
                    return Err(bad("a size of at least 1"));
                }
                let (pk, pv) = (proto.args.get(i.wrapping_sub(1)), args.get(i.wrapping_sub(1)));
                if let (Some(pk), Some(pv)) = (pk, pv) {
                    let (write, or_null) = match pk {
                        HelperArg::PtrToReadableMem => (false, false),
                        HelperArg::PtrToReadableMemOrNull => (false, true),
                        HelperArg::PtrToWritableMem => (true, false),
                        HelperArg::PtrToWritableMemOrNull => (true, true),
                        _ => return Err(bad("preceded by a memory argument")),
                    };
                    arg_mem(env, st, pc, i, reg(i - 1), pv, &v.num, write, or_null)?;
                    if write {
                        writes.push((pv.clone(), v.num));
                    }
                }
            }
            HelperArg::PtrToReadableMem
            | HelperArg::PtrToReadableMemOrNull
            | HelperArg::PtrToWritableMem
            | HelperArg::PtrToWritableMemOrNull => {
                if !matches!(proto.args.get(i + 1), Some(HelperArg::ConstSize | HelperArg::ConstSizeOrZero)) {
                    return Err(bad("followed by a size"));
                }
            }
            HelperArg::PtrToCtx | HelperArg::PtrToCtxOrNull => {
                let null_ok = *kind == HelperArg::PtrToCtxOrNull && v.is_number() && v.num.singleton() == Some(0);
                let ctx_ok = v.is(ty::CTX) && v.off.singleton() == Some(0);
                if !(null_ok || ctx_ok) {
                    return Err(bad("the context pointer (offset 0)"));
                }
            }
            HelperArg::PtrToMap | HelperArg::PtrToMapOfPrograms => {
                let is_prog_array = |m: Option<u32>| {
                    m.and_then(|m| env.maps.get(m as usize)).is_some_and(|d| d.map_type == MapType::PROG_ARRAY)
                };
                let ok = if *kind == HelperArg::PtrToMapOfPrograms {
                    v.is(ty::MAP_FD_PROGRAMS) || (v.is(ty::MAP_FD) && is_prog_array(v.map))
                } else {
                    v.is(ty::MAP_FD) || v.is(ty::MAP_FD_PROGRAMS)
                };
                if !ok {
                    return Err(bad(if *kind == HelperArg::PtrToMap { "a map" } else { "a program array map" }));
                }
                map = v.map;
            }
            HelperArg::PtrToMapKey | HelperArg::PtrToMapValue => {
                let def = map
                    .and_then(|m| env.maps.get(m as usize))
                    .ok_or_else(|| bad("a key/value of a statically known map"))?;
                let size = if *kind == HelperArg::PtrToMapKey { def.key_size } else { def.value_size };
                arg_mem(env, st, pc, i, r, v, &Num::constant(size as u64), false, false)?;
                if *kind == HelperArg::PtrToMapValue {
                    // Queue/stack pop and peek write the value through this pointer: it must be writable too.
                    check_access(env, st, pc, r, v, 0, size as u64, Access::Write)?;
                }
            }
            HelperArg::PtrToStack | HelperArg::PtrToStackOrNull => {
                let null_ok = *kind == HelperArg::PtrToStackOrNull && v.is_number() && v.num.singleton() == Some(0);
                if !null_ok && !v.is(ty::STACK) {
                    return Err(bad("a stack pointer"));
                }
            }
        }
    }
    for (p, size) in writes {
        if p.may_be(ty::STACK) {
            let lo = p.off.smin;
            st.stack.clobber(lo, p.off.smax + size.umax as i64);
            if p.is(ty::STACK) && p.off.smin == p.off.smax {
                for o in lo..lo + size.umin as i64 {
                    st.stack.set_init(o, true);
                }
            }
        }
    }
    for r in 1..=5 {
        set_reg(st, Reg::new(r).expect("reg"), Value::uninit(), None);
    }
    if proto.reallocate_packet {
        st.invalidate_packet();
    }
    let ret = match proto.ret {
        HelperReturn::Integer | HelperReturn::IntegerOrNoReturnIfSucceed => Value::number(Num::TOP),
        HelperReturn::PtrToMapValueOrNull => {
            let def = map.and_then(|m| env.maps.get(m as usize).map(|d| (m, d)));
            let (m, def) = def.ok_or_else(|| {
                fail(pc, Property::HelperArgument, format!("{} needs a statically known map", proto.name), vec![])
            })?;
            if def.map_type.is_map_of_maps() {
                let inner = def.inner_map_index.map(|i| i as u32);
                let t = if inner
                    .and_then(|i| env.maps.get(i as usize))
                    .is_some_and(|d| d.map_type == MapType::PROG_ARRAY)
                {
                    ty::MAP_FD_PROGRAMS
                } else {
                    ty::MAP_FD
                };
                Value {
                    types: t | ty::NUMBER,
                    num: Num::constant(0),
                    map: inner,
                    ..Value::pointer(t, Num::constant(0))
                }
            } else {
                Value {
                    types: ty::SHARED | ty::NUMBER,
                    num: Num::constant(0),
                    shared_size: def.value_size as u64,
                    map: Some(m),
                    ..Value::pointer(ty::SHARED, Num::constant(0))
                }
            }
        }
    };
    set_reg(st, Reg::R0, ret, None);
    Ok(())
}

/// The transfer function of the instruction at `pc`.
pub fn step(env: &Env, pc: usize, st: &State) -> Out {
    let insn = env.program[pc];
    let mut s = st.clone();
    let next = |s: State| -> Out { Ok(vec![(Edge::Local(pc + 1), s)]) };
    match insn {
        // ---- ALU (RFC 9669 §4.1, §4.2) ----
        Instruction::Alu { width, op, dst, src } => {
            alu(env, &mut s, pc, width, op, dst, src)?;
            next(s)
        }
        Instruction::Endian { order, bits, dst } => {
            let a = read(&s, dst, pc)?;
            if !a.is_number() {
                return Err(fail(pc, Property::PointerLeak, "byte swap of a pointer", vec![show(dst.to_string(), &a)]));
            }
            set_reg(&mut s, dst, Value::number(Num::endian(order, bits, &a.num)), None);
            next(s)
        }
        // ---- 64-bit immediates (RFC 9669 §5.4; program.rs for map references) ----
        Instruction::LoadImm64 { dst, kind, imm, next_imm } => {
            if dst == Reg::FP {
                return Err(fail(pc, Property::InvalidInstruction, "r10 (the frame pointer) is read-only", vec![]));
            }
            let map_def = |i: i32| {
                env.maps.get(i as usize).ok_or_else(|| fail(pc, Property::InvalidInstruction, format!("lddw references map index {i}, but the module has {} maps", env.maps.len()), vec![]))
            };
            let v = match kind {
                Imm64Kind::Imm => Value::number(Num::constant(Instruction::imm64(imm, next_imm))),
                Imm64Kind::MapIndex | Imm64Kind::MapFd => {
                    let d = map_def(imm)?;
                    let t = if d.map_type == MapType::PROG_ARRAY { ty::MAP_FD_PROGRAMS } else { ty::MAP_FD };
                    Value { map: Some(imm as u32), ..Value::pointer(t, Num::constant(0)) }
                }
                Imm64Kind::MapIndexValue | Imm64Kind::MapValue => {
                    let d = map_def(imm)?;
                    let readonly = env.globals.iter().any(|g| g.map_index == imm as usize && g.kind == GlobalSectionKind::Rodata);
                    Value {
                        shared_size: d.value_size as u64,
                        shared_readonly: readonly,
                        map: Some(imm as u32),
                        ..Value::pointer(ty::SHARED, Num::constant(next_imm as u32 as u64))
                    }
                }
                Imm64Kind::VariableAddr | Imm64Kind::CodeAddr => {
                    return Err(fail(pc, Property::InvalidInstruction, format!("lddw with pseudo source {} is not supported", kind.name()), vec![]));
                }
            };
            set_reg(&mut s, dst, v, None);
            Ok(vec![(Edge::Local(pc + 2), s)])
        }
        Instruction::LoadImm64Continuation => Err(fail(pc, Property::ControlFlow, "jump into the middle of a lddw instruction", vec![])),
        // ---- Memory (RFC 9669 §5) ----
        Instruction::Load { size, sign_extend, dst, src, offset } => {
            if dst == Reg::FP {
                return Err(fail(pc, Property::InvalidInstruction, "r10 (the frame pointer) is read-only", vec![]));
            }
            let v = load(env, &s, pc, src, offset, size, sign_extend)?;
            set_reg(&mut s, dst, v, None);
            next(s)
        }
        Instruction::Store { size, dst, offset, src } => {
            let v = match src {
                Operand::Reg(r) => read(&s, r, pc)?,
                Operand::Imm(i) => Value::number(Num::constant(i as i64 as u64)),
            };
            store(env, &mut s, pc, dst, offset, size, v)?;
            next(s)
        }
        Instruction::Atomic { size, op, fetch, dst, src, offset } => {
            let base = read(&s, dst, pc)?;
            let v = read(&s, src, pc)?;
            if !v.is_number() {
                return Err(fail(pc, Property::PointerLeak, "atomic operation with a pointer operand", vec![show(src.to_string(), &v)]));
            }
            if base.types & !(ty::STACK | ty::SHARED) != 0 {
                return Err(fail(pc, Property::TypeMismatch, "atomic operations are allowed only on the stack and map values", vec![show(dst.to_string(), &base)]));
            }
            let n = size.bytes() as i64;
            check_access(env, &s, pc, dst, &base, offset as i64, n as u64, Access::Write)?;
            if base.may_be(ty::STACK) {
                let (lo, hi) = (base.off.smin + offset as i64, base.off.smax + offset as i64 + n);
                if !s.stack.all_init(lo, hi) {
                    return Err(fail(pc, Property::Uninitialized, format!("atomic operation reads stack bytes [{lo}, {hi}) that may be uninitialised"), vec![]));
                }
                if s.stack.overlapping(lo, hi).any(|(_, v)| v.may_be(ty::POINTERS)) {
                    return Err(fail(pc, Property::PointerLeak, "atomic operation on a spilled pointer", vec![]));
                }
                s.stack.clobber(lo, hi);
            }
            let old = Value::number(full(size, false));
            match op {
                AtomicOp::CmpXchg => {
                    let r0 = read(&s, Reg::R0, pc)?;
                    if !r0.is_number() {
                        return Err(fail(pc, Property::PointerLeak, "cmpxchg compares with a pointer in r0", vec![show("r0", &r0)]));
                    }
                    set_reg(&mut s, Reg::R0, old, None);
                }
                AtomicOp::Xchg => set_reg(&mut s, src, old, None),
                _ if fetch => set_reg(&mut s, src, old, None),
                _ => {}
            }
            next(s)
        }
        Instruction::LegacyPacketLoad { mode, .. } => Err(fail(
            pc,
            Property::InvalidInstruction,
            format!("legacy packet load LD_{mode:?} (RFC 9669 §5.5) is not supported; read the packet through data/data_end"),
            vec![],
        )),
        // ---- Jumps (RFC 9669 §4.3) ----
        Instruction::Jump { offset, .. } => Ok(vec![(Edge::Local((pc as i64 + 1 + offset as i64) as usize), s)]),
        Instruction::JumpIf { width, cond, dst, src, offset } => {
            let target = (pc as i64 + 1 + offset as i64) as usize;
            let mut out = Vec::new();
            let assumption = env.assumptions.binary_search(&pc).is_ok();
            if assumption {
                // A verifier-internal assumption (test suites): only the edge where the condition fails exists.
            } else if let Some(t) = branch(&s, pc, width, cond, dst, src, true)? {
                out.push((Edge::Local(target), t));
            }
            if let Some(f) = branch(&s, pc, width, cond, dst, src, false)? {
                out.push((Edge::Local(pc + 1), f));
            }
            Ok(out)
        }
        // ---- Calls and exit ----
        Instruction::CallHelper { id } => {
            helper_call(env, &mut s, pc, id as i64)?;
            next(s)
        }
        Instruction::CallReg { reg } => {
            let v = read(&s, reg, pc)?;
            match (v.is_number(), v.num.singleton()) {
                (true, Some(id)) => {
                    helper_call(env, &mut s, pc, id as i64)?;
                    next(s)
                }
                _ => Err(fail(pc, Property::UnknownHelper, format!("callx {reg}: the helper id is not a known constant"), vec![show(reg.to_string(), &v)])),
            }
        }
        Instruction::CallBtf { btf_id, .. } => Err(fail(
            pc,
            Property::InvalidInstruction,
            format!("call of BTF-resolved function (kfunc) id {btf_id} is not supported by this verifier"),
            vec![],
        )),
        Instruction::CallLocal { offset } => {
            let target = (pc as i64 + 1 + offset as i64) as usize;
            Ok(vec![(Edge::Call { target }, s)])
        }
        Instruction::Exit => Ok(vec![(Edge::Return, s)]),
    }
}

/// State at the callee's entry for a local call.
pub fn enter_call(st: &State) -> State {
    let mut s = st.clone();
    let saved = super::state::SavedFrame {
        regs: std::array::from_fn(|i| s.regs[6 + i].clone()),
        deltas: s.deltas.iter().map(|(k, d)| (*k, std::array::from_fn(|i| d[6 + i]))).collect(),
    };
    s.frames.push(saved);
    s.stack.push_frame();
    let depth = s.frames.len() as i64;
    for r in [0usize, 6, 7, 8, 9] {
        s.regs[r] = Value::uninit();
    }
    s.regs[10] = Value::pointer(ty::STACK, Num::signed(-FRAME_STRIDE * depth, -FRAME_STRIDE * depth).expect("point"));
    s.deltas.clear();
    s
}

/// State after a local function returns to its caller; checks that no pointer to the dying frame escapes.
pub fn leave_call(st: &State, pc: usize) -> Result<State, Failure> {
    let mut s = st.clone();
    let frame_top = -FRAME_STRIDE * s.frames.len() as i64;
    let dangling = |v: &Value| v.may_be(ty::STACK) && v.off.smin < frame_top;
    if dangling(&s.regs[0]) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "a function returns a pointer to its own stack frame",
            vec![show("r0", &s.regs[0])],
        ));
    }
    let saved = s.frames.pop().expect("inside a call");
    s.stack.pop_frame();
    let bad: Vec<i64> = s.stack.spills.iter().filter(|(_, v)| dangling(v)).map(|(k, _)| *k).collect();
    for k in bad {
        s.stack.spills.remove(&k);
        for b in k..k + 8 {
            s.stack.set_init(b, false);
        }
    }
    for r in 1..=5 {
        s.regs[r] = Value::uninit();
    }
    for (i, v) in saved.regs.into_iter().enumerate() {
        s.regs[6 + i] = v;
    }
    s.regs[10] =
        Value::pointer(ty::STACK, Num::signed(frame_top + FRAME_STRIDE, frame_top + FRAME_STRIDE).expect("point"));
    s.deltas = saved
        .deltas
        .iter()
        .map(|(k, d)| (*k, std::array::from_fn(|i| if (6..=9).contains(&i) { d[i - 6] } else { None })))
        .collect();
    Ok(s)
}
