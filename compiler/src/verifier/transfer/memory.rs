//! Memory access (RFC 9669 §5): bounds of every region a base may point to, context fields, loads, stores
//! (stack spills and 4-byte number slots) and atomic alignment.

use crate::isa::{AtomicOp, MemSize, Reg};
use crate::platform::ObjectField;

use crate::verifier::num::Num;
use crate::verifier::relations::META_BASE;
use crate::verifier::state::{ty, Change, Loc, State, Value, FRAME_STRIDE};
use crate::verifier::{Env, Failure, Property};

use super::{fail, full, read, set_reg, show, Access};

/// Checks that `[base + off, base + off + size)` is inside the region of every type `base` may have.
#[allow(clippy::too_many_arguments)] // one call per memory check; the arguments are the check
pub(super) fn check_access(
    env: &Env,
    st: &State,
    pc: usize,
    reg: Reg,
    base: &Value,
    off: i64,
    size: u64,
    access: Access,
) -> Result<(), Failure> {
    if base.kind_off.is_some() {
        // A pointer into one of several regions: the access must be safe in each, at that region's offsets.
        for view in base.views() {
            check_access(env, st, pc, reg, &view, off, size, access)?;
        }
        return Ok(());
    }
    let vals = || vec![show(reg.to_string(), base)];
    let what = if access == Access::Read { "read" } else { "write" };
    if base.may_be(ty::UNINIT) {
        return Err(fail(pc, Property::Uninitialized, format!("{reg} used as a pointer may be uninitialised"), vals()));
    }
    if base.may_be(ty::NUMBER) {
        // A pointer-or-null not checked, or a value a null check proved to be null.
        if base.may_be(ty::POINTERS) && base.num.contains(0) || base.num.singleton() == Some(0) {
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
    if base.may_be(ty::SOCKET) {
        return check_socket_access(env, pc, reg, base, off, size, access);
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
        // Bytes before `data` are packet metadata down to `data_meta`: at most the proven room below `data`, or
        // at or above the pointer's own `data_meta` base (docs/verifier.md §3, `data_meta`).
        let meta_d = base.pkt.filter(|(id, _)| *id == META_BASE).map(|(_, d)| d as i128 + off as i128);
        let room = st.meta_room() as i128;
        if lo < -room && meta_d.is_none_or(|x| x < 0) {
            return Err(oob("packet", format!("offset may be before data_meta (proven metadata: {room} bytes)")));
        }
        let by_rel =
            base.pkt.is_some_and(|(id, d)| d as i128 + off as i128 + size as i128 <= st.packet_range(id) as i128);
        let by_size = hi <= st.packet_range(0) as i128;
        // data_meta + x + n <= data - room + x + n <= data + ranges[0] <= data_end.
        let by_meta = meta_d.is_some_and(|x| x + size as i128 <= room + st.packet_range(0) as i128);
        if !by_rel && !by_size && !by_meta {
            return Err(oob(
                "packet",
                format!("proven packet size {} — compare with data_end first", st.packet_range(0)),
            ));
        }
    }
    Ok(())
}

/// A socket returned by a helper (`HelperReturn::PtrToSockCommonOrNull`) is read-only and readable only field by
/// field, at a known offset, as the platform's `sock_common_fields` allow (Linux `bpf_sock_is_valid_access`).
fn check_socket_access(
    env: &Env,
    pc: usize,
    reg: Reg,
    base: &Value,
    off: i64,
    size: u64,
    access: Access,
) -> Result<(), Failure> {
    let vals = || vec![show(reg.to_string(), base)];
    if !base.is(ty::SOCKET) {
        let msg = format!("access through {reg}, which may be a socket or another kind of pointer");
        return Err(fail(pc, Property::TypeMismatch, msg, vals()));
    }
    if access == Access::Write {
        return Err(fail(pc, Property::ReadOnly, format!("write through {reg} into a socket (read-only)"), vals()));
    }
    let at = base.off.singleton().map(|o| (o as i64).wrapping_add(off));
    if at.is_some_and(|o| ObjectField::readable(env.platform.sock_common_fields, o, size as i64)) {
        return Ok(());
    }
    Err(fail(
        pc,
        Property::OutOfBounds,
        format!("read of {size} bytes at {reg}{off:+} is not a readable socket field (struct bpf_sock, sock_common)"),
        vals(),
    ))
}

/// Atomic operations on shared memory need a naturally aligned address (a misaligned `lock` access splits a
/// cache line on x64 and faults on ARM64). Stack frames and map values start 8-byte aligned (contract §5.1, map
/// value storage), so the offset from the region base decides; an offset range is not provably aligned (the
/// numeric domain keeps no congruences), so it must be a single value. Atomics whose address is proven to be on
/// the stack need no alignment: lowering makes them plain load-op-store sequences (see [`atomic`]).
pub(crate) fn check_atomic_alignment(pc: usize, dst: Reg, base: &Value, offset: i64, n: i64) -> Result<(), Failure> {
    // A pointer that may be stack or a map value is lowered as a real atomic: every kind must be aligned.
    if base.kind_off.is_some() {
        for view in base.views() {
            check_atomic_alignment(pc, dst, &view, offset, n)?;
        }
        return Ok(());
    }
    let aligned = base.off.singleton().is_some_and(|o| (o as i64).wrapping_add(offset).rem_euclid(n) == 0);
    if aligned {
        return Ok(());
    }
    Err(fail(
        pc,
        Property::Alignment,
        format!(
            "atomic {n}-byte access at {dst}{offset:+} may be misaligned: the address must be a multiple of {n}{}",
            if base.off.singleton().is_none() { " (the offset is not a single known value)" } else { "" }
        ),
        vec![show(dst.to_string(), base)],
    ))
}

/// The context pointer fields: (offset, width, kind). The width is the field's size in the platform's
/// context table (Linux declares them as 4-byte fields the kernel rewrites), else the pointer size.
pub(super) fn ctx_pointer_fields(env: &Env) -> Vec<(i64, i64, u16)> {
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

pub(super) fn load_ctx(
    env: &Env,
    pc: usize,
    base: &Value,
    off: i64,
    size: MemSize,
    sign_extend: bool,
) -> Result<Value, Failure> {
    let lo = base.off.smin as i128 + off as i128;
    let hi = base.off.smax as i128 + off as i128 + size.bytes() as i128;
    for (foff, psize, kind) in ctx_pointer_fields(env) {
        let (flo, fhi) = (foff as i128, foff as i128 + psize as i128);
        if lo < fhi && flo < hi {
            if lo == flo && hi == fhi && base.off.smin == base.off.smax {
                return Ok(match kind {
                    ty::PACKET => Value { pkt: Some((0, 0)), ..Value::pointer(ty::PACKET, Num::constant(0)) },
                    ty::PACKET_END => Value::pointer(ty::PACKET_END, Num::constant(0)),
                    // data_meta: at or below data. Where the platform makes it the start of the metadata before
                    // `data`, it carries the base `META_BASE`, so `meta + n <= data` proves metadata bytes.
                    _ => Value {
                        pkt: env.platform.data_meta_is_metadata.then_some((META_BASE, 0)),
                        ..Value::pointer(ty::PACKET, Num::signed(-(1 << 32), 0).expect("non-empty"))
                    },
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

pub(super) fn check_ctx_write(env: &Env, pc: usize, base: &Value, off: i64, size: u64) -> Result<(), Failure> {
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

pub(super) fn load(
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
        add(load_ctx(env, pc, &base.view(ty::CTX), off, size, sign_extend)?);
    }
    if base.may_be(ty::STACK) {
        add(load_stack(st, pc, src, &base, off, size, sign_extend)?);
    }
    if base.may_be(ty::PACKET | ty::SHARED | ty::SOCKET) {
        add(Value::number(full(size, sign_extend)));
    }
    Ok(result.expect("a memory type was checked"))
}

/// The value a load reads from the stack part of `base`: a whole spill or 4-byte number slot, a number, or,
/// when some byte may never have been written, an undefined value.
fn load_stack(
    st: &State,
    pc: usize,
    src: Reg,
    base: &Value,
    off: i64,
    size: MemSize,
    sign_extend: bool,
) -> Result<Value, Failure> {
    let stack_off = base.off_of(ty::STACK);
    let lo = stack_off.smin + off;
    let hi = stack_off.smax + off + size.bytes() as i64;
    if !st.stack.all_init(lo, hi) {
        if src == Reg::FP {
            // A reload at a fixed frame offset is not a use (as in PREVAIL, which checks only the bounds of
            // r10-based accesses): the register receives an undefined value that every use rejects
            // (docs/verifier.md §2, "Initialisation"). The bytes are in this invocation's own frame (checked by
            // `check_access`), so whatever they concretely hold is never another tenant's data, and an undefined
            // value never reaches a helper, memory outside the stack, a branch, an address or the return value.
            return Ok(Value::uninit());
        }
        // Through any other stack pointer the bytes must be initialised (PREVAIL: "Stack content is not
        // numeric"), like the memory a helper reads.
        return Err(fail(
            pc,
            Property::Uninitialized,
            format!("stack bytes [{lo}, {hi}) may be read before they are written (through {src}, not r10)"),
            vec![show(src.to_string(), base)],
        ));
    }
    let single = lo == stack_off.smax + off;
    let exact = match size {
        MemSize::DW if single => st.stack.spills.get(&lo),
        // A 4-byte number slot read whole and zero-extended gives the stored number (it is below 2^32).
        MemSize::W if single && !sign_extend => st.stack.narrow.get(&lo),
        _ => None,
    };
    if let Some(v) = exact {
        return Ok(v.clone());
    }
    if let Some((k, v)) = st.stack.overlapping(lo, hi).find(|(_, v)| v.may_be(ty::POINTERS)) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            format!("partial read of the pointer spilled at stack offset {k}"),
            vec![show(format!("stack[{k}]"), v)],
        ));
    }
    Ok(Value::number(full(size, sign_extend)))
}

/// A store of a register that may hold no defined value (RFC 9669 leaves it unspecified; PREVAIL allows it on
/// the stack). Only the invocation's own stack may receive it: the bytes it may hit become uninitialised, so a
/// later read gives an undefined value again and every use of it is rejected.
#[allow(clippy::too_many_arguments)] // the store instruction's fields
pub(super) fn store_undefined(
    env: &Env,
    st: &mut State,
    pc: usize,
    dst: Reg,
    off: i16,
    size: MemSize,
    src: Reg,
) -> Result<(), Failure> {
    let base = read(st, dst, pc)?;
    let n = size.bytes() as i64;
    check_access(env, st, pc, dst, &base, off as i64, n as u64, Access::Write)?;
    if !base.is(ty::STACK) {
        return Err(fail(
            pc,
            Property::Uninitialized,
            format!("{src} may be uninitialised and is stored outside the stack (map, context or packet)"),
            vec![show(src.to_string(), &st.regs[src.index()]), show(dst.to_string(), &base)],
        ));
    }
    let (lo, hi) = (base.off.smin + off as i64, base.off.smax + off as i64 + n);
    st.stack.clobber(lo, hi);
    st.forget_init_extents(lo - 8, hi + 8);
    for o in lo..hi {
        st.stack.set_init(o, false);
    }
    Ok(())
}

/// `src` is the stored register, if any: a slot that receives its whole value becomes its copy (loop deltas).
#[allow(clippy::too_many_arguments)] // the store instruction's fields
pub(super) fn store(
    env: &Env,
    st: &mut State,
    pc: usize,
    dst: Reg,
    off: i16,
    size: MemSize,
    v: Value,
    src: Option<Reg>,
) -> Result<(), Failure> {
    let base = read(st, dst, pc)?;
    let off = off as i64;
    let n = size.bytes() as i64;
    check_access(env, st, pc, dst, &base, off, n as u64, Access::Write)?;
    // Through a pointer that may also point elsewhere the stack bytes may stay as they were (`exact` is false).
    let stack_off = base.off_of(ty::STACK);
    let lo = stack_off.smin + off;
    let hi = stack_off.smax + off + n;
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
        check_ctx_write(env, pc, &base.view(ty::CTX), off, n as u64)?;
    }
    if base.may_be(ty::STACK) {
        st.stack.clobber(lo, hi);
        // A partly overwritten spilled pointer leaves bytes around [lo, hi) uninitialised.
        st.forget_init_extents(lo - 8, hi + 8);
        if opaque {
            for o in lo..hi {
                st.stack.set_init(o, false);
            }
        } else if exact {
            for o in lo..hi {
                st.stack.set_init(o, true);
            }
            let copy = src.map_or(Change::Unknown, |r| Change::CopyOf(Loc::Reg(r.index() as u8)));
            if spill {
                st.stack.spills_mut().insert(lo, v);
                st.record_change(Loc::Slot(lo), copy);
            } else if size == MemSize::W && lo.rem_euclid(4) == 0 && v.is_number() {
                // The stored bytes are the low 32 bits; the slot equals the source only if it is below 2^32.
                let same = v.num.umax <= u32::MAX as u64;
                let narrow = Value {
                    copy_id: v.copy_id.filter(|_| same),
                    len_bound: v.len_bound.filter(|_| same),
                    ..Value::number(v.num.low32())
                };
                st.stack.narrow.insert(lo, narrow);
                st.record_change(Loc::Slot(lo), if same { copy } else { Change::Unknown });
            }
        }
    }
    Ok(())
}

/// The slot an 8-byte (spill) or 4-byte (number slot, zero-extended) load through a single-valued stack pointer
/// reads whole, if any.
pub(super) fn reloaded_spill(st: &State, base: Reg, offset: i16, size: MemSize, sign_extend: bool) -> Option<i64> {
    if sign_extend {
        return None;
    }
    let b = &st.regs[base.index()];
    let o = b.off.singleton()? as i64 + offset as i64;
    let whole = match size {
        MemSize::DW => st.stack.spills.contains_key(&o),
        MemSize::W => st.stack.narrow.contains_key(&o),
        _ => false,
    };
    (b.is(ty::STACK) && whole).then_some(o)
}

/// Atomic operations (RFC 9669 §5.3): only on initialised stack bytes (not a spilled pointer) and map values,
/// with a number operand; fetch variants and `xchg` write the old value back. An address that may be a map
/// value must be naturally aligned. One that is stack only need not be: the frame belongs to this invocation
/// alone (no other CPU can see it), so lowering emits a plain load, operation and store, which gives the same
/// §5.3 result and never faults when misaligned. Whether an atomic is stack-only in *every* calling context is
/// decided by the fixpoint (`Fixpoint::stack_atomics`), which also checks the alignment of a stack-only visit
/// when another visit of the same slot may reach a map value.
#[allow(clippy::too_many_arguments)] // the instruction's fields
pub(super) fn atomic(
    env: &Env,
    s: &mut State,
    pc: usize,
    size: MemSize,
    op: AtomicOp,
    fetch: bool,
    dst: Reg,
    src: Reg,
    offset: i16,
) -> Result<(), Failure> {
    let base = read(s, dst, pc)?;
    let v = read(s, src, pc)?;
    if !v.is_number() {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "atomic operation with a pointer operand",
            vec![show(src.to_string(), &v)],
        ));
    }
    if base.types & !(ty::STACK | ty::SHARED) != 0 {
        return Err(fail(
            pc,
            Property::TypeMismatch,
            "atomic operations are allowed only on the stack and map values",
            vec![show(dst.to_string(), &base)],
        ));
    }
    let n = size.bytes() as i64;
    check_access(env, s, pc, dst, &base, offset as i64, n as u64, Access::Write)?;
    if base.may_be(ty::SHARED) {
        check_atomic_alignment(pc, dst, &base, offset as i64, n)?;
    }
    if base.may_be(ty::STACK) {
        let stack_off = base.off_of(ty::STACK);
        let (lo, hi) = (stack_off.smin + offset as i64, stack_off.smax + offset as i64 + n);
        if !s.stack.all_init(lo, hi) {
            return Err(fail(
                pc,
                Property::Uninitialized,
                format!("atomic operation reads stack bytes [{lo}, {hi}) that may be uninitialised"),
                vec![],
            ));
        }
        if s.stack.overlapping(lo, hi).any(|(_, v)| v.may_be(ty::POINTERS)) {
            return Err(fail(pc, Property::PointerLeak, "atomic operation on a spilled pointer", vec![]));
        }
        s.stack.clobber(lo, hi);
        s.forget_init_extents(lo - 8, hi + 8);
    }
    let old = Value::number(full(size, false));
    match op {
        AtomicOp::CmpXchg => {
            let r0 = read(s, Reg::R0, pc)?;
            if !r0.is_number() {
                return Err(fail(
                    pc,
                    Property::PointerLeak,
                    "cmpxchg compares with a pointer in r0",
                    vec![show("r0", &r0)],
                ));
            }
            set_reg(s, Reg::R0, old, Change::Unknown);
        }
        AtomicOp::Xchg => set_reg(s, src, old, Change::Unknown),
        _ if fetch => set_reg(s, src, old, Change::Unknown),
        _ => {}
    }
    Ok(())
}
