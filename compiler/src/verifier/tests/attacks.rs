//! Unsafe twins of this session's verifier facts (issue 12 soundness review): each program would, if accepted,
//! read or write out of bounds, use a maybe-null pointer, or let an undefined value or an address escape at run
//! time. Undefined values (docs/verifier.md §2, "Initialisation"), legacy packet loads, the Linux socket and
//! ring-buffer record results, `data_meta` room and `data_end != data` (§3).

use super::*;
use crate::isa::ByteOrder;
use crate::platform::linux::LINUX;

const R5: Reg = Reg::R5;
const R7: Reg = Reg::R7;
const R8: Reg = Reg::R8;

fn ret0(mut body: Vec<I>) -> Vec<I> {
    body.extend([mov(R0, 0), I::Exit]);
    body
}

fn alu(width: Width, op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width, op, dst, src }
}

#[track_caller]
fn rejects(r: Result<VerificationReport, Rejection>, expected: &[Property], what: &str) {
    match r {
        Ok(_) => panic!("unsound accept: {what}"),
        Err(e) => assert!(expected.contains(&e.property), "{what}: rejected for another reason: {e}"),
    }
}

#[track_caller]
fn accepts(r: Result<VerificationReport, Rejection>, what: &str) {
    if let Err(e) = r {
        panic!("{what}: {e}");
    }
}

const UNINIT: &[Property] = &[Property::Uninitialized];
const OOB: &[Property] = &[Property::OutOfBounds];

#[test]
fn undefined_values_are_rejected_through_every_indirect_use() {
    let w = |p: Vec<I>| verify_xdp_on(&WINDOWS, vec![], p);
    // cmpxchg compares r0 with memory: an undefined r0 is a use.
    let cas = I::Atomic { size: MemSize::DW, op: AtomicOp::CmpXchg, fetch: true, dst: FP, src: R2, offset: -8 };
    rejects(w(ret0(vec![st(MemSize::DW, FP, -8, 0), mov(R2, 1), movr(R0, R7), cas])), UNINIT, "cmpxchg comparand");
    // 32-bit ALU on a 32-bit copy, and the copy's 64-bit view returned.
    let w2 = alu(Width::W32, AluOp::Mov, R2, Operand::Reg(R7));
    rejects(w(ret0(vec![w2, alu(Width::W32, AluOp::Add, R2, Operand::Imm(1))])), UNINIT, "add32");
    rejects(w(vec![w2, movr(R0, R2), I::Exit]), UNINIT, "w2 = w7; r0 = r2");
    // Byte swap of a copy.
    rejects(w(ret0(vec![movr(R2, R7), I::Endian { order: ByteOrder::ToBe, bits: 16, dst: R2 }])), UNINIT, "be16");
    // A spilled undefined value reloaded through another stack pointer, or sign-extended through r10 and used.
    let via_r2 = vec![stx(MemSize::DW, FP, -8, R7), movr(R2, FP), add(R2, -8), ldx(MemSize::DW, R3, R2, 0)];
    rejects(w(ret0(via_r2)), UNINIT, "reload through r2");
    let sx = I::Load { size: MemSize::W, sign_extend: true, dst: R2, src: FP, offset: -4 };
    rejects(w(ret0(vec![sx, add(R2, 1)])), UNINIT, "ldxsw of never-written bytes");
    // Comparison with an undefined source operand.
    rejects(w(ret0(vec![mov(R0, 0), jif(JumpCond::Eq, R0, Operand::Reg(R7), 0)])), UNINIT, "jeq r0, r7");
    // Through a local function: the callee returns its undefined argument, the program returns it.
    rejects(w(vec![movr(R2, R7), I::CallLocal { offset: 1 }, I::Exit, movr(R0, R2), I::Exit]), UNINIT, "callee");
    // As a helper's size argument.
    let printk = vec![st(MemSize::DW, FP, -8, 0), movr(R1, FP), add(R1, -8), movr(R2, R7), I::CallHelper { id: 12 }];
    rejects(w(ret0(printk)), UNINIT, "trace_printk size");
    // As the value bpf_map_update_elem copies into a map.
    let mut update = vec![st(MemSize::W, FP, -4, 0), stx(MemSize::DW, FP, -16, R7), movr(R2, FP), add(R2, -4)];
    update.extend([movr(R3, FP), add(R3, -16), mov(R4, 0)]);
    update.extend(map_fd(R1, 0));
    update.push(I::CallHelper { id: 2 });
    rejects(w(ret0(update)), UNINIT, "map update value");
    // An undefined store on one path of a join leaves the slot undefined.
    let join = vec![
        st(MemSize::DW, FP, -8, 1),
        ldx(MemSize::W, R3, R1, 24),
        jif(JumpCond::Eq, R3, Operand::Imm(0), 1),
        stx(MemSize::DW, FP, -8, R7),
        ldx(MemSize::DW, R2, FP, -8),
        add(R2, 1),
    ];
    rejects(w(ret0(join)), UNINIT, "join of a defined and an undefined spill");
    // Through a pointer that is a map value or the stack, an undefined store may reach the map.
    rejects(
        w(lookup(vec![
            jif(JumpCond::Ne, R0, Operand::Imm(0), 2),
            movr(R0, FP),
            add(R0, -8),
            stx(MemSize::DW, R0, 0, R7),
        ])),
        &[Property::Uninitialized, Property::TypeMismatch],
        "map value or stack",
    );
    // A variable-offset undefined store, then a fixed reload and use.
    let var = vec![
        st(MemSize::DW, FP, -16, 1),
        st(MemSize::DW, FP, -8, 1),
        ldx(MemSize::W, R3, R1, 24),
        alu(Width::W64, AluOp::And, R3, Operand::Imm(8)),
        movr(R2, FP),
        add(R2, -16),
        alu(Width::W64, AluOp::Add, R2, Operand::Reg(R3)),
        stx(MemSize::DW, R2, 0, R7),
        ldx(MemSize::DW, R4, FP, -8),
        add(R4, 1),
    ];
    rejects(w(ret0(var)), &[Property::Uninitialized, Property::OutOfBounds], "variable-offset undefined store");
}

#[test]
fn a_legacy_load_rejects_an_r6_that_may_not_be_the_context_and_a_pointer_offset() {
    let w = |p: Vec<I>| verify_xdp_on(&WINDOWS, vec![], p);
    let ty = &[Property::TypeMismatch, Property::Uninitialized, Property::PointerLeak, Property::PointerArithmetic];
    // r6 is the context on one path and the stack on the other.
    let join = vec![ldx(MemSize::W, R3, R1, 24), movr(R6, R1), jif(JumpCond::Eq, R3, Operand::Imm(0), 1), movr(R6, FP)];
    rejects(w(ret0([join, vec![ld_abs(MemSize::B, 0)]].concat())), ty, "r6 ctx or stack");
    // r6 is a map value.
    rejects(
        w(lookup(vec![jif(JumpCond::Eq, R0, Operand::Imm(0), 2), movr(R6, R0), ld_abs(MemSize::B, 0)])),
        ty,
        "map value",
    );
    // r6 reloaded from a spill of the context that was partly overwritten.
    let spill = vec![stx(MemSize::DW, FP, -8, R1), st(MemSize::B, FP, -8, 0), ldx(MemSize::DW, R6, FP, -8)];
    rejects(w(ret0([spill, vec![ld_abs(MemSize::B, 0)]].concat())), ty, "clobbered context spill");
    // An undefined offset via a copy, the context itself, and data_end as the LD_IND offset.
    rejects(w(ret0(vec![movr(R6, R1), movr(R7, R8), ld_ind(MemSize::B, R7, 0)])), ty, "undefined offset");
    rejects(w(ret0(vec![movr(R6, R1), ld_ind(MemSize::B, R6, 0)])), ty, "context as offset");
    rejects(w(ret0(vec![movr(R6, R1), ldx(MemSize::DW, R7, R1, 8), ld_ind(MemSize::W, R7, 0)])), ty, "data_end offset");
    // The load clobbers r1: the context must not be used through it afterwards.
    rejects(w(ret0(vec![movr(R6, R1), ld_abs(MemSize::B, 0), ldx(MemSize::W, R0, R1, 24)])), ty, "r1 after LD_ABS");
}

/// Linux xdp with a 4-byte-key hash map (index 0) and a ring buffer (index 1).
fn linux(p: Vec<I>) -> Result<VerificationReport, Rejection> {
    verify_xdp_on(&LINUX, vec![map("m", MapType::HASH, 8), map("events", MapType::RINGBUF, 0)], p)
}

/// `r6 = ctx; skc_lookup_tcp_call(R6); if r0 == 0 goto exit; then; r0 = 0; exit`.
fn checked_socket(then: Vec<I>) -> Vec<I> {
    let mut p = vec![movr(R6, R1)];
    p.extend(skc_lookup_tcp_call(R6));
    p.push(jif(JumpCond::Eq, R0, Operand::Imm(0), then.len() as i16));
    ret0([p, then].concat())
}

#[test]
fn a_socket_never_serves_as_memory_a_context_or_a_packet_bound() {
    let bad = &[
        Property::TypeMismatch,
        Property::HelperArgument,
        Property::PointerLeak,
        Property::ReadOnly,
        Property::PointerArithmetic,
        Property::OutOfBounds,
    ];
    let mut key = vec![movr(R2, R0)];
    key.extend(map_fd(R1, 0));
    key.push(I::CallHelper { id: 1 });
    rejects(linux(checked_socket(key)), bad, "socket as a map key");
    let mut out = vec![movr(R2, R0)];
    out.extend(map_fd(R1, 1));
    out.extend([mov(R3, 4), mov(R4, 0), I::CallHelper { id: 130 }]);
    rejects(linux(checked_socket(out)), bad, "socket as ringbuf_output data");
    let mut as_ctx = vec![movr(R6, R0)];
    as_ctx.extend(skc_lookup_tcp_call(R6));
    rejects(linux(checked_socket(as_ctx)), bad, "socket as the lookup's context");
    let atomic = I::Atomic { size: MemSize::W, op: AtomicOp::Add, fetch: false, dst: R0, src: R2, offset: 72 };
    rejects(linux(checked_socket(vec![mov(R2, 1), atomic])), bad, "atomic on a socket");
    let w32 = alu(Width::W32, AluOp::Mov, R2, Operand::Reg(R0));
    rejects(linux(checked_socket(vec![w32])), bad, "32-bit copy of a socket");
    rejects(linux(checked_socket(vec![movr(R2, R0), alu(Width::W64, AluOp::Sub, R2, Operand::Reg(R0))])), bad, "sub");
    let spill = vec![stx(MemSize::DW, FP, -24, R0), ldx(MemSize::W, R2, FP, -24)];
    rejects(linux(checked_socket(spill)), bad, "partial reload of a spilled socket");
    let bound = vec![ldx(MemSize::W, R3, R6, 4), jif(JumpCond::Gt, R0, Operand::Reg(R3), 0)];
    rejects(linux(checked_socket(bound)), bad, "socket compared with data_end");
    let mut stale = vec![movr(R6, R1)];
    stale.extend(skc_lookup_tcp_call(R6));
    stale.push(movr(R7, R0));
    stale.extend(skc_lookup_tcp_call(R6));
    stale.extend([jif(JumpCond::Eq, R7, Operand::Imm(0), 1), ldx(MemSize::W, R1, R0, 72)]);
    rejects(linux(ret0(stale)), &[Property::NullDereference], "null check of the first socket, read of the second");
    let mut copy = vec![movr(R6, R1)];
    copy.extend(skc_lookup_tcp_call(R6));
    copy.extend([movr(R7, R0), jif(JumpCond::Eq, R7, Operand::Imm(0), 3), ldx(MemSize::W, R1, R0, 72)]);
    copy.extend([movr(R1, R0), I::CallHelper { id: 86 }]);
    accepts(linux(ret0(copy)), "a null check of a copy checks the original");
}

/// `r0 = bpf_ringbuf_reserve(&events, r2 = size, 0)`.
fn reserve(size: Vec<I>) -> Vec<I> {
    let mut p = size;
    p.extend(map_fd(R1, 1));
    p.extend([mov(R3, 0), I::CallHelper { id: 131 }]);
    p
}

#[test]
fn a_ring_buffer_record_is_no_larger_than_its_smallest_size_and_needs_its_own_null_check() {
    let checked = |size: i32, then: Vec<I>| {
        let mut p = reserve(vec![mov(R2, size)]);
        p.push(jif(JumpCond::Eq, R0, Operand::Imm(0), then.len() as i16));
        ret0([p, then].concat())
    };
    let mut out = vec![movr(R2, R0)];
    out.extend(map_fd(R1, 1));
    out.extend([mov(R3, 16), mov(R4, 0), I::CallHelper { id: 130 }]);
    rejects(linux(checked(8, out)), OOB, "16 bytes of an 8-byte record to a helper");
    rejects(linux(checked(0, vec![st(MemSize::B, R0, 0, 1)])), OOB, "empty record");
    rejects(linux(checked(8, vec![st(MemSize::B, R0, -1, 1)])), OOB, "before the record");
    let var = vec![
        movr(R6, R0),
        I::CallHelper { id: 7 },
        alu(Width::W64, AluOp::And, R0, Operand::Imm(7)),
        alu(Width::W64, AluOp::Add, R6, Operand::Reg(R0)),
        st(MemSize::DW, R6, 0, 1),
    ];
    rejects(linux(checked(8, var)), OOB, "variable offset inside an 8-byte record");
    rejects(linux(ret0(reserve(vec![mov(R2, -1)]))), &[Property::HelperArgument], "size -1");
    rejects(linux(ret0(reserve(vec![movr(R2, R7)]))), UNINIT, "undefined size");
    let mut stale = reserve(vec![mov(R2, 8)]);
    stale.push(movr(R7, R0));
    stale.extend(reserve(vec![mov(R2, 8)]));
    stale.extend([jif(JumpCond::Eq, R7, Operand::Imm(0), 1), st(MemSize::DW, R0, 0, 1)]);
    rejects(linux(ret0(stale)), &[Property::NullDereference], "null check of the first record, write to the second");
}

/// Linux xdp: r6 = ctx, r5 = prandom, r2 = data_meta, r3 = data, r8 = data_end.
fn meta_setup() -> Vec<I> {
    vec![
        movr(R6, R1),
        I::CallHelper { id: 7 },
        movr(R5, R0),
        ldx(MemSize::W, R2, R6, 8),
        ldx(MemSize::W, R3, R6, 0),
        ldx(MemSize::W, R8, R6, 4),
    ]
}

#[test]
fn metadata_room_is_only_what_a_check_against_data_proves() {
    let l = |p: Vec<I>| verify_xdp_on(&LINUX, vec![], p);
    // The check jumps over the read when the room IS there.
    let wrong = vec![movr(R4, R2), add(R4, 8), jif(JumpCond::Le, R4, Operand::Reg(R3), 1), ldx(MemSize::DW, R0, R2, 0)];
    rejects(l(ret0([meta_setup(), wrong].concat())), OOB, "read when meta + 8 > data");
    // meta + 14 <= data_end says nothing about the packet after data.
    let end = vec![movr(R4, R2), add(R4, 14), jif(JumpCond::Gt, R4, Operand::Reg(R8), 1), ldx(MemSize::B, R0, R3, 13)];
    rejects(l(ret0([meta_setup(), end].concat())), OOB, "packet from a meta/data_end check");
    // A variable-offset left side: meta + [0, 7] + 8 <= data proves 8 bytes, not 15.
    let var_meta = vec![
        alu(Width::W64, AluOp::And, R5, Operand::Imm(7)),
        movr(R4, R2),
        alu(Width::W64, AluOp::Add, R4, Operand::Reg(R5)),
        add(R4, 8),
        jif(JumpCond::Gt, R4, Operand::Reg(R3), 1),
        ldx(MemSize::DW, R0, R2, 7),
    ];
    rejects(l(ret0([meta_setup(), var_meta].concat())), OOB, "variable meta offset");
    // A variable-offset right side: meta + 8 <= data + [0, 7] proves one byte, not 8.
    let var_data = vec![
        alu(Width::W64, AluOp::And, R5, Operand::Imm(7)),
        movr(R7, R3),
        alu(Width::W64, AluOp::Add, R7, Operand::Reg(R5)),
        movr(R4, R2),
        add(R4, 8),
        jif(JumpCond::Gt, R4, Operand::Reg(R7), 1),
        ldx(MemSize::DW, R0, R2, 0),
    ];
    rejects(l(ret0([meta_setup(), var_data].concat())), OOB, "variable data offset");
    // Checked on one path only.
    let join = vec![
        movr(R4, R2),
        add(R4, 8),
        jif(JumpCond::Eq, R5, Operand::Imm(0), 1),
        jif(JumpCond::Gt, R4, Operand::Reg(R3), 1),
        ldx(MemSize::DW, R0, R2, 0),
    ];
    rejects(l(ret0([meta_setup(), join].concat())), OOB, "room proven on one path");
    // bpf_xdp_adjust_head moves data: the room is gone.
    let adjust = vec![
        movr(R4, R2),
        add(R4, 8),
        jif(JumpCond::Gt, R4, Operand::Reg(R3), 5),
        movr(R1, R6),
        mov(R2, 4),
        I::CallHelper { id: 44 },
        ldx(MemSize::W, R3, R6, 0),
        ldx(MemSize::B, R0, R3, -1),
    ];
    rejects(l(ret0([meta_setup(), adjust].concat())), OOB, "room after adjust_head");
}

#[test]
fn data_end_unequal_to_a_pointer_proves_a_byte_only_for_one_proven_offset() {
    // Windows xdp: r6 = ctx, r5 = prandom & 255, r2 = data, r3 = data_end.
    let setup = || {
        vec![
            movr(R6, R1),
            I::CallHelper { id: 6 },
            movr(R5, R0),
            alu(Width::W64, AluOp::And, R5, Operand::Imm(255)),
            ldx(MemSize::DW, R2, R6, 0),
            ldx(MemSize::DW, R3, R6, 8),
        ]
    };
    let w = |p: Vec<I>| verify_xdp_on(&WINDOWS, vec![], p);
    let var = vec![
        movr(R4, R2),
        alu(Width::W64, AluOp::Add, R4, Operand::Reg(R5)),
        jif(JumpCond::Eq, R4, Operand::Reg(R3), 1),
        ldx(MemSize::B, R0, R4, 0),
    ];
    rejects(w(ret0([setup(), var].concat())), OOB, "data + var != data_end");
    let unproven =
        vec![movr(R4, R2), add(R4, 20), jif(JumpCond::Eq, R4, Operand::Reg(R3), 1), ldx(MemSize::B, R0, R4, 0)];
    rejects(w(ret0([setup(), unproven].concat())), OOB, "data + 20 != data_end, nothing proven");
    // 14 proven: data + 14 != data_end proves byte 14 only; data + 15 proves nothing.
    let fourteen = |d: i32, size: MemSize, at: i16| {
        packet_program(
            14,
            vec![movr(R5, R2), add(R5, d), jif(JumpCond::Eq, R5, Operand::Reg(R3), 1), ldx(size, R0, R2, at)],
        )
    };
    accepts(w(fourteen(14, MemSize::B, 14)), "byte 14");
    rejects(w(fourteen(14, MemSize::H, 14)), OOB, "bytes 14-15");
    rejects(w(fourteen(15, MemSize::B, 15)), OOB, "data + 15 is past the proven 14");
    // data_end == data written the other way round: not taken proves one byte.
    let swapped = |size| {
        vec![
            ldx(MemSize::DW, R2, R1, 0),
            ldx(MemSize::DW, R3, R1, 8),
            jif(JumpCond::Eq, R3, Operand::Reg(R2), 1),
            ldx(size, R0, R2, 0),
        ]
    };
    accepts(w(ret0(swapped(MemSize::B))), "one byte");
    rejects(w(ret0(swapped(MemSize::H))), OOB, "two bytes");
}

#[test]
fn packet_pointers_do_not_survive_bpf_clone_redirect() {
    // Linux `bpf_helper_changes_pkt_data` lists bpf_clone_redirect: it may un-clone the skb and move its data, so a
    // packet pointer proven before the call may point at freed memory after it.
    let m = module(vec![
        movr(R6, R1),
        ldx(MemSize::W, R2, R1, 76),
        ldx(MemSize::W, R3, R1, 80),
        movr(R7, R2),
        movr(R4, R2),
        add(R4, 8),
        jif(JumpCond::Gt, R4, Operand::Reg(R3), 5),
        movr(R1, R6),
        mov(R2, 1),
        mov(R3, 0),
        I::CallHelper { id: 13 },
        ldx(MemSize::B, R0, R7, 0),
        mov(R0, 0),
        I::Exit,
    ]);
    let tc = LINUX.program_type_by_name("sched_cls").unwrap();
    let r = verify_program(&m, 0, &LINUX, tc, &VerifierOptions::default()).map(Verified::into_report);
    rejects(
        r,
        &[Property::OutOfBounds, Property::Uninitialized, Property::TypeMismatch],
        "packet read after clone_redirect",
    );
}

/// `r3 = ctx field; if r3 == 0 { path_a } else { path_b }; tail; r0 = 0; exit`.
fn two_paths(path_a: Vec<I>, path_b: Vec<I>, tail: Vec<I>) -> Vec<I> {
    let mut p = vec![ldx(MemSize::W, R3, R1, 24), jif(JumpCond::Ne, R3, Operand::Imm(0), path_a.len() as i16 + 1)];
    p.extend(path_a);
    p.push(I::Jump { offset: path_b.len() as i32, long: false });
    p.extend(path_b);
    ret0([p, tail].concat())
}

#[test]
fn registers_of_different_kinds_on_one_path_are_no_same_kind_pair() {
    let leak = &[Property::PointerLeak, Property::PointerArithmetic, Property::TypeMismatch];
    let sub = || alu(Width::W64, AluOp::Sub, R7, Operand::Reg(R8));
    let w = |p: Vec<I>| verify_xdp_on(&WINDOWS, vec![], p);
    // Path A: stack and context; path B: two stack pointers. The difference would be an address distance.
    let fp8 = || vec![movr(R7, FP), add(R7, -8)];
    let a = [fp8(), vec![movr(R8, R1)]].concat();
    let b = [fp8(), vec![movr(R8, FP), add(R8, -16)]].concat();
    rejects(w(two_paths(a, b, vec![sub()])), leak, "stack - ctx on one path");
    // A related {number, ctx} pair stops being related when one of them is rewritten (even by a copy of the
    // context).
    let a = vec![mov(R7, 1), mov(R8, 2)];
    let b = vec![movr(R7, R1), add(R7, 4), movr(R8, R1)];
    accepts(w(two_paths(a.clone(), b.clone(), vec![sub()])), "a related pair may be subtracted");
    rejects(w(two_paths(a.clone(), b.clone(), vec![movr(R8, R1), sub()])), leak, "r8 rewritten with the context");
    // A helper call leaves r6-r9 as they are, so the pair stays related.
    accepts(w(two_paths(a.clone(), b.clone(), vec![I::CallHelper { id: 6 }, sub()])), "r7, r8 across a helper call");
    let cmp_then_leak = vec![movr(R8, FP), jif(JumpCond::Gt, R7, Operand::Reg(R8), 0)];
    rejects(w(two_paths(a, b, cmp_then_leak)), leak, "comparison with an unrelated stack pointer");
}

#[test]
fn a_function_called_from_two_contexts_is_checked_in_both_even_past_a_merge_point() {
    // The second call passes fp-4: the callee's 8-byte store would reach 4 bytes above the caller's frame. The
    // callee has a merge point after a branch (a head whose state must not be handed over as final from the first
    // context alone).
    let program = vec![
        movr(R1, FP),
        add(R1, -8),
        I::CallLocal { offset: 5 },
        movr(R1, FP),
        add(R1, -4),
        I::CallLocal { offset: 2 },
        mov(R0, 0),
        I::Exit,
        ldx(MemSize::B, R2, R1, 0),
        jif(JumpCond::Eq, R2, Operand::Imm(0), 1),
        mov(R3, 1),
        st(MemSize::DW, R1, 0, 1),
        mov(R0, 0),
        I::Exit,
    ];
    let mut first_context_only = program.clone();
    first_context_only[4] = add(R1, -8);
    let w = |p: Vec<I>| verify_xdp_on(&WINDOWS, vec![], p);
    // Stack bytes read by the callee must be initialised: write fp-16..fp first (shifts no offsets: the calls are
    // relative).
    let init = |p: Vec<I>| [vec![st(MemSize::DW, FP, -8, 0), st(MemSize::DW, FP, -16, 0)], p].concat();
    rejects(w(init(program)), OOB, "8-byte store at fp-4 in the second context");
    accepts(w(init(first_context_only)), "both contexts pass fp-8");
}
