//! Helper calls: arguments checked against the platform prototype (maps — every candidate of a branch-selected
//! map —, keys and values, memory with its size, context), and the helper's effects and result.

use crate::isa::Reg;
use crate::platform::{HelperArg, HelperPrototype, HelperReturn, MapHelperRule, Reference};
use crate::program::{MapDefinition, MapType};

use crate::verifier::num::Num;
use crate::verifier::refs::{self, End};
use crate::verifier::state::{ty, Change, MapSet, State, Value};
use crate::verifier::{Env, Failure, Property};

use super::memory::check_access;
use super::{fail, set_reg, show, Access};

/// Whether `size` bytes from the packet pointer `p` stay inside the packet because `size` is bounded by the
/// distance from a pointer at or after `p` to `data_end` (its length bound; docs/verifier.md §3).
pub(super) fn within_packet_by_length(p: &Value, size: &Value) -> bool {
    let (Some((id, d)), true) = (size.len_bound, p.is(ty::PACKET) && p.off.smin >= 0) else {
        return false;
    };
    match p.pkt {
        // p = data + base_id + d', p + size ≤ data + base_id + d' + len - base_id - d ≤ data_end iff d' ≤ d.
        Some((pid, dp)) if pid == id && dp <= d => true,
        // p = data + o with o ≤ hi(off): p + size ≤ data + o + len - d ≤ data_end iff hi(off) ≤ d.
        _ => id == 0 && p.off.smax <= d,
    }
}

#[allow(clippy::too_many_arguments)] // one call per memory check; the arguments are the check
pub(super) fn arg_mem(
    env: &Env,
    st: &State,
    pc: usize,
    i: usize,
    reg: Reg,
    v: &Value,
    size_value: &Value,
    write: bool,
    or_null: bool,
) -> Result<(), Failure> {
    let size = &size_value.num;
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
    // A pointer into one of several regions (per-kind offsets) is checked in each region separately.
    for view in p.views() {
        if !within_packet_by_length(&view, size_value) {
            check_access(env, st, pc, reg, &view, 0, size.umax, if write { Access::Write } else { Access::Read })?;
        }
    }
    if p.may_be(ty::STACK) && !write {
        let stack_off = p.off_of(ty::STACK);
        let lo = stack_off.smin;
        let hi = stack_off.smax + size.umax as i64;
        // Or the size is tied to an initialised extent: `[b, b + size)` is initialised for `b` in `[el, eh]`.
        let by_extent = size_value.init_extent.is_some_and(|(el, eh)| el <= lo && stack_off.smax <= eh);
        if !by_extent && !st.stack.all_init(lo, hi) {
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

/// A map argument: a map handle (a program array for tail calls); with several candidate maps (chosen on a
/// branch) every candidate must be a map the platform lets this helper use.
fn check_map_arg(
    env: &Env,
    pc: usize,
    proto: &HelperPrototype,
    i: usize,
    kind: HelperArg,
    v: &Value,
) -> Result<MapSet, Failure> {
    let r = Reg::new(i as u8 + 1).expect("r1..r5");
    let vals = || vec![show(r.to_string(), v)];
    let bad = |what: &str| {
        fail(pc, Property::HelperArgument, format!("argument {} ({r}) of {} must be {what}", i + 1, proto.name), vals())
    };
    // A map chosen on a branch has several candidates: each must satisfy the prototype.
    let candidates: Vec<&MapDefinition> = v.maps.iter().filter_map(|m| env.maps.get(m as usize)).collect();
    let all_prog_arrays = !candidates.is_empty() && candidates.iter().all(|d| d.map_type == MapType::PROG_ARRAY);
    let ok = if kind == HelperArg::PtrToMapOfPrograms {
        v.is(ty::MAP_FD_PROGRAMS) || (v.is(ty::MAP_FD) && all_prog_arrays)
    } else {
        v.is(ty::MAP_FD) || v.is(ty::MAP_FD_PROGRAMS)
    };
    if !ok {
        return Err(bad(if kind == HelperArg::PtrToMap { "a map" } else { "a program array map" }));
    }
    for def in &candidates {
        if !MapHelperRule::permits(env.platform.map_helper_rules, proto.id, def.map_type) {
            return Err(fail(
                pc,
                Property::HelperArgument,
                format!(
                    "{} cannot be used on map `{}` of type {}: the runtime does not support it for this map type",
                    proto.name,
                    def.name,
                    def.map_type.name()
                ),
                vals(),
            ));
        }
    }
    Ok(v.maps)
}

/// A pointer the program holds a reference to (docs/verifier.md §2, "References"): exactly the pointer kind the
/// acquiring helper returns (not null), unmodified (offset 0: the kernel finds the object from it), and marked
/// with a reference the program may hold — by the invariants of `refs.rs` the reference is then held and this
/// is its object.
fn check_reference_arg(st: &State, kind: HelperArg, v: &Value, bad: impl Fn(&str) -> Failure) -> Result<(), Failure> {
    let (t, what) = match kind {
        HelperArg::PtrToAllocMem => (ty::SHARED, "a ring-buffer record from bpf_ringbuf_reserve"),
        _ => (ty::SOCKET, "a socket from bpf_sk_lookup_tcp/udp or bpf_skc_lookup_tcp"),
    };
    let held = v.ref_id.is_some_and(|k| st.refs.contains(&k));
    if held && v.may_be(ty::NUMBER) && v.may_be(t) {
        let mut f = bad(&format!("{what} checked for null first (it may be null here)"));
        f.property = Property::NullDereference;
        return Err(f);
    }
    if !held || !v.is(t) {
        return Err(bad(&format!("{what} the program still holds a reference to")));
    }
    if v.off.singleton() != Some(0) {
        return Err(bad(&format!("{what}, unmodified (offset 0), as the helper returned it")));
    }
    Ok(())
}

/// An argument must be defined; a released reference says so (docs/verifier.md §2, "References").
fn check_defined(pc: usize, proto: &HelperPrototype, i: usize, v: &Value) -> Result<(), Failure> {
    let r = Reg::new(i as u8 + 1).expect("r1..r5");
    if let Some(f) = refs::released(pc, format!("argument {} ({r}) of {}", i + 1, proto.name), v) {
        return Err(f);
    }
    if v.may_be(ty::UNINIT) {
        return Err(fail(
            pc,
            Property::Uninitialized,
            format!("argument {} ({r}) of {} may be uninitialised", i + 1, proto.name),
            vec![show(r.to_string(), v)],
        ));
    }
    Ok(())
}

/// Checks every argument against the prototype; returns the map argument's candidates and the memory the
/// helper writes (pointer, size).
fn check_args(
    env: &Env,
    st: &State,
    pc: usize,
    proto: &HelperPrototype,
) -> Result<(MapSet, Vec<(Value, Num)>), Failure> {
    let args: Vec<Value> = (1..=5).map(|r| st.regs[r].clone()).collect();
    let reg = |i: usize| Reg::new(i as u8 + 1).expect("r1..r5");
    let mut map = MapSet::UNKNOWN;
    let mut writes: Vec<(Value, Num)> = Vec::new();
    for (i, kind) in proto.args.iter().enumerate() {
        let v = &args[i];
        let r = reg(i);
        let vals = || vec![show(r.to_string(), v)];
        if *kind == HelperArg::DontCare {
            continue;
        }
        check_defined(pc, proto, i, v)?;
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
                    arg_mem(env, st, pc, i, reg(i - 1), pv, v, write, or_null)?;
                    if write {
                        writes.push((pv.clone(), v.num));
                    }
                }
            }
            HelperArg::ConstAllocSizeOrZero => {
                // The size of the region returned (`HelperReturn::PtrToAllocMemOrNull`): its smallest value.
                if !v.is_number() || v.num.umax > i32::MAX as u64 {
                    return Err(bad("a bounded number (the size to allocate)"));
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
            HelperArg::PtrToMap | HelperArg::PtrToMapOfPrograms => map = check_map_arg(env, pc, proto, i, *kind, v)?,
            HelperArg::PtrToMapKey | HelperArg::PtrToMapValue => {
                let defs: Vec<&MapDefinition> = map.iter().filter_map(|m| env.maps.get(m as usize)).collect();
                if defs.is_empty() {
                    return Err(bad("a key/value of a statically known map"));
                }
                // The largest key/value of the candidates covers what the helper reads for each of them.
                let size = defs
                    .iter()
                    .map(|d| if *kind == HelperArg::PtrToMapKey { d.key_size } else { d.value_size })
                    .max()
                    .expect("non-empty");
                arg_mem(env, st, pc, i, r, v, &Value::number(Num::constant(size as u64)), false, false)?;
                if *kind == HelperArg::PtrToMapValue {
                    // Queue/stack pop and peek write the value through this pointer: it must be writable too.
                    check_access(env, st, pc, r, v, 0, size as u64, Access::Write)?;
                }
            }
            HelperArg::PtrToAllocMem | HelperArg::PtrToBtfIdSockCommon => check_reference_arg(st, *kind, v, bad)?,
            HelperArg::PtrToStack | HelperArg::PtrToStackOrNull => {
                let null_ok = *kind == HelperArg::PtrToStackOrNull && v.is_number() && v.num.singleton() == Some(0);
                if !null_ok && !v.is(ty::STACK) {
                    return Err(bad("a stack pointer"));
                }
            }
        }
    }
    Ok((map, writes))
}

pub(super) fn helper_call(env: &Env, st: &mut State, pc: usize, id: i64) -> Result<(), Failure> {
    let proto = u32::try_from(id).ok().and_then(|id| env.platform.helper(env.program_type, id)).ok_or_else(|| {
        fail(
            pc,
            Property::UnknownHelper,
            format!("invalid helper function id {id} for program type {}", env.program_type.name),
            vec![],
        )
    })?;
    call_with_prototype(env, st, pc, proto)
}

/// A call of a BTF-resolved function: the object's kfunc table names it, the platform's kfunc table gives its
/// prototype by (provider module GUID, name), checked like a helper's (coverage §2).
pub(super) fn kfunc_call(env: &Env, st: &mut State, pc: usize, btf_id: i32) -> Result<(), Failure> {
    let unknown = |what: String| fail(pc, Property::UnknownHelper, what, vec![]);
    let kfunc = env
        .kfuncs
        .iter()
        .find(|k| i64::from(k.id) == i64::from(btf_id))
        .ok_or_else(|| unknown(format!("kfunc id {btf_id} is not an extern function the object declares")))?;
    let module = kfunc.module_guid.ok_or_else(|| {
        unknown(format!(
            "kfunc '{}' names no provider module (declare it with btf_decl_tag(\"module_id:{{GUID}}\"))",
            kfunc.name
        ))
    })?;
    let proto = env.platform.kfunc(module, &kfunc.name).ok_or_else(|| {
        unknown(format!(
            "unknown kfunc '{}' of module {module}: the {} platform has no prototype for it",
            kfunc.name, env.platform.name
        ))
    })?;
    call_with_prototype(env, st, pc, &proto.proto)
}

/// Checks r1..r5 against a prototype and applies the call's effects: clobbered r1..r5, r0 per the return type.
fn call_with_prototype(
    env: &Env,
    st: &mut State,
    pc: usize,
    proto: &crate::platform::HelperPrototype,
) -> Result<(), Failure> {
    let (map, writes) = check_args(env, st, pc, proto)?;
    if proto.ret == HelperReturn::IntegerOrNoReturnIfSucceed {
        // A successful tail call never returns: a reference held now could never be released.
        refs::check_no_references(env, st, pc, &format!("{}, which does not return when it succeeds", proto.name))?;
    }
    if proto.reference == Reference::Releases {
        let released =
            proto.args.iter().position(|a| matches!(a, HelperArg::PtrToAllocMem | HelperArg::PtrToBtfIdSockCommon));
        // `check_args` proved the argument holds a reference the program holds.
        if let Some(k) = released.and_then(|i| st.regs[i + 1].ref_id) {
            st.end_reference(k, End::Released);
        }
    }
    for (p, size) in writes {
        if p.may_be(ty::STACK) {
            let stack_off = p.off_of(ty::STACK);
            let lo = stack_off.smin;
            st.stack.clobber(lo, stack_off.smax + size.umax as i64);
            st.forget_init_extents(lo - 8, stack_off.smax + size.umax as i64 + 8);
            // Only a pointer that is surely this stack slot initialises it.
            if p.is(ty::STACK) && p.off.smin == p.off.smax {
                for o in lo..lo + size.umin as i64 {
                    st.stack.set_init(o, true);
                }
            }
        }
    }
    // A record of at least the smallest requested size (checked to be below 2^31 by `check_args`).
    let alloc_size =
        proto.args.iter().position(|a| *a == HelperArg::ConstAllocSizeOrZero).map(|i| st.regs[i + 1].num.umin);
    for r in 1..=5 {
        set_reg(st, Reg::new(r).expect("reg"), Value::uninit(), Change::Unknown);
    }
    if proto.reallocate_packet {
        st.invalidate_packet();
    }
    let or_null =
        |t: u16| Value { types: t | ty::NUMBER, num: Num::constant(0), ..Value::pointer(t, Num::constant(0)) };
    let ret = match proto.ret {
        HelperReturn::Integer | HelperReturn::IntegerOrNoReturnIfSucceed => Value::number(Num::TOP),
        HelperReturn::PtrToMapValueOrNull => lookup_result(env, pc, proto.name, map)?,
        // A full socket is read through the sock_common view: fewer readable fields (docs/verifier.md §8).
        HelperReturn::PtrToSockCommonOrNull | HelperReturn::PtrToSocketOrNull => or_null(ty::SOCKET),
        // Writable shared memory (numbers only, like a map value), 8-byte aligned like a map value.
        HelperReturn::PtrToAllocMemOrNull => Value { shared_size: alloc_size.unwrap_or(0), ..or_null(ty::SHARED) },
    };
    let mut ret = ret;
    if ret.may_be(ty::POINTERS) {
        // Copies of this result share its identity, so a null check on any copy refines all (a new result of
        // the same call in a later loop iteration takes the identity away from the old one's holders first).
        let id = pc as u32 + 1;
        st.forget_copy_id(id);
        ret.copy_id = Some(id);
    }
    if proto.reference == Reference::Acquires
        && !st.acquire_reference(pc, &mut ret)
        && env.options.check_reference_leaks
    {
        return Err(fail(
            pc,
            Property::ReferenceLeak,
            format!(
                "{} acquires a new reference while the one it returned on an earlier run of this instruction may \
                 still be held (release it first)",
                proto.name
            ),
            vec![(refs::ACQUIRED_AT.into(), pc.to_string())],
        ));
    }
    set_reg(st, Reg::R0, ret, Change::Unknown);
    Ok(())
}

/// The value-or-null a map lookup returns for the candidate maps `maps`: a value of the smallest candidate
/// value size, or — for maps of maps — the inner map handle, which must then be the same for every candidate.
pub(super) fn lookup_result(env: &Env, pc: usize, helper: &str, maps: MapSet) -> Result<Value, Failure> {
    let defs: Vec<&MapDefinition> = maps.iter().filter_map(|m| env.maps.get(m as usize)).collect();
    if defs.is_empty() {
        return Err(fail(pc, Property::HelperArgument, format!("{helper} needs a statically known map"), vec![]));
    }
    let nested = defs.iter().filter(|d| env.platform.conventions.is_map_of_maps(d.map_type)).count();
    if nested == 0 {
        return Ok(Value {
            types: ty::SHARED | ty::NUMBER,
            num: Num::constant(0),
            shared_size: defs.iter().map(|d| d.value_size as u64).min().expect("non-empty"),
            maps,
            ..Value::pointer(ty::SHARED, Num::constant(0))
        });
    }
    let inner = defs[0].inner_map_index;
    if nested != defs.len() || defs.iter().any(|d| d.inner_map_index != inner) {
        return Err(fail(
            pc,
            Property::HelperArgument,
            format!("{helper} on one of several maps whose values differ in kind (maps of maps with different inner maps, or mixed with plain maps)"),
            vec![],
        ));
    }
    let inner = inner.map(|i| i as u32);
    let t = if inner.and_then(|i| env.maps.get(i as usize)).is_some_and(|d| d.map_type == MapType::PROG_ARRAY) {
        ty::MAP_FD_PROGRAMS
    } else {
        ty::MAP_FD
    };
    Ok(Value {
        types: t | ty::NUMBER,
        num: Num::constant(0),
        maps: inner.map_or(MapSet::UNKNOWN, MapSet::one),
        ..Value::pointer(t, Num::constant(0))
    })
}
