//! Helper results beyond integers and map values (docs/verifier.md §2, "Helpers"): the Linux platform's
//! `bpf_skc_lookup_tcp` socket-or-null (read-only, field by field) and `bpf_ringbuf_reserve` record-or-null
//! (writable numbers, of the requested size). The Windows platform has neither helper.

use super::*;
use crate::platform::linux::LINUX;

fn verify_on(
    platform: &'static crate::platform::Platform,
    instructions: Vec<I>,
) -> Result<VerificationReport, Rejection> {
    verify_xdp_on(platform, vec![map("events", MapType::RINGBUF, 0)], instructions)
}

fn linux(instructions: Vec<I>) -> Result<VerificationReport, Rejection> {
    verify_on(&LINUX, instructions)
}

fn property(r: Result<VerificationReport, Rejection>) -> Property {
    r.expect_err("must be rejected").property
}

/// A 12-byte tuple at fp-16, then `r0 = bpf_skc_lookup_tcp(ctx, fp-16, 12, 0, 0)`, `r7 = r0`, optionally
/// `if r0 == 0 goto exit`, then `then`, `bpf_sk_release(r7)` and `r0 = 0; exit`.
fn skc_lookup(null_check: bool, then: Vec<I>) -> Vec<I> {
    let mut p = skc_lookup_tcp_call(R1);
    p.push(movr(Reg::R7, R0));
    if null_check {
        p.push(jif(JumpCond::Eq, R0, Operand::Imm(0), then.len() as i16 + 2));
    }
    p.extend(then);
    // The lookup's reference is given back (docs/verifier.md §2, "References").
    p.extend([movr(R1, Reg::R7), I::CallHelper { id: 86 }, mov(R0, 0), I::Exit]);
    p
}

#[test]
fn a_checked_socket_is_readable_field_by_field() {
    linux(skc_lookup(true, vec![ldx(MemSize::W, R1, R0, 72)])).expect("state");
    let narrow = vec![ldx(MemSize::B, R1, R0, 25), ldx(MemSize::H, R2, R0, 42), ldx(MemSize::B, R3, R0, 49)];
    linux(skc_lookup(true, narrow)).expect("narrow loads of src_ip4, src_ip6[3], dst_port");
    linux(skc_lookup(true, vec![ldx(MemSize::W, R1, R0, 48)])).expect("dst_port read as its u32 word");
    // A socket may be kept on the stack and reloaded (a spilled pointer).
    let spilled = vec![stx(MemSize::DW, FP, -24, R0), ldx(MemSize::DW, R6, FP, -24), ldx(MemSize::W, R1, R6, 4)];
    linux(skc_lookup(true, spilled)).expect("family through a reload");
}

#[test]
fn a_socket_outside_its_readable_fields_or_unchecked_is_rejected() {
    assert_eq!(property(linux(skc_lookup(false, vec![ldx(MemSize::W, R1, R0, 72)]))), Property::NullDereference);
    for (size, at, what) in [
        (MemSize::W, 8, "type is not a sock_common field"),
        (MemSize::B, 50, "padding after dst_port"),
        (MemSize::B, 0, "bound_dev_if is read whole"),
        (MemSize::W, 74, "misaligned"),
        (MemSize::DW, 72, "state and rx_queue_mapping are separate fields"),
        (MemSize::W, 80, "past struct bpf_sock"),
    ] {
        let r = linux(skc_lookup(true, vec![ldx(size, R1, R0, at)]));
        assert_eq!(property(r), Property::OutOfBounds, "{what}");
    }
    assert_eq!(property(linux(skc_lookup(true, vec![st(MemSize::W, R0, 72, 1)]))), Property::ReadOnly);
    assert_eq!(property(linux(skc_lookup(true, vec![add(R0, 4)]))), Property::PointerArithmetic);
    // The address never escapes: not as a helper's number argument, not as the program's result.
    let mut leak = vec![movr(R2, R0)];
    leak.extend(map_fd(R1, 0));
    leak.push(I::CallHelper { id: 134 });
    assert_eq!(property(linux(skc_lookup(true, leak))), Property::PointerLeak, "bpf_ringbuf_query's flags");
    assert_eq!(property(linux(skc_lookup(true, vec![I::Exit]))), Property::PointerLeak, "returning the socket");
    assert_eq!(property(verify_on(&WINDOWS, skc_lookup(true, vec![]))), Property::UnknownHelper);
}

/// `r0 = bpf_ringbuf_reserve(&events, size, 0)` with `size` set by `size_setup` into r2, optionally null
/// checked, then `then`, `bpf_ringbuf_submit(r7 = the record, 0)` and `r0 = 0; exit`.
fn reserve(size_setup: Vec<I>, null_check: bool, then: Vec<I>) -> Vec<I> {
    let mut p = size_setup;
    p.extend(map_fd(R1, 0));
    p.extend([mov(R3, 0), I::CallHelper { id: 131 }, movr(Reg::R7, R0)]);
    if null_check {
        p.push(jif(JumpCond::Eq, R0, Operand::Imm(0), then.len() as i16 + 3));
    }
    p.extend(then);
    p.extend([movr(R1, Reg::R7), mov(R2, 0), I::CallHelper { id: 132 }, mov(R0, 0), I::Exit]);
    p
}

fn atomic(fetch: bool, offset: i16) -> I {
    I::Atomic { size: MemSize::W, op: AtomicOp::Add, fetch, dst: R0, src: R6, offset }
}

#[test]
fn a_reserved_record_is_writable_memory_of_the_requested_size() {
    let eight = || vec![mov(R2, 8)];
    let use_ =
        vec![st(MemSize::DW, R0, 0, 1), ldx(MemSize::W, R4, R0, 4), mov(R6, 2), atomic(true, 0), atomic(false, 4)];
    linux(reserve(eight(), true, use_)).expect("8 bytes written, read and updated atomically");
    assert_eq!(property(linux(reserve(eight(), false, vec![st(MemSize::DW, R0, 0, 1)]))), Property::NullDereference);
    assert_eq!(property(linux(reserve(eight(), true, vec![ldx(MemSize::DW, R4, R0, 4)]))), Property::OutOfBounds);
    assert_eq!(property(linux(reserve(eight(), true, vec![stx(MemSize::DW, R0, 0, FP)]))), Property::PointerLeak);
    assert_eq!(property(linux(reserve(eight(), true, vec![mov(R6, 1), atomic(false, 2)]))), Property::Alignment);
    // A size known only as a range gives a record of its smallest value; an unbounded one is refused.
    let masked = vec![
        I::CallHelper { id: 7 },
        movr(R2, R0),
        I::Alu { width: Width::W64, op: AluOp::And, dst: R2, src: Operand::Imm(15) },
    ];
    assert_eq!(property(linux(reserve(masked, true, vec![st(MemSize::B, R0, 0, 1)]))), Property::OutOfBounds);
    let unbounded = vec![I::CallHelper { id: 7 }, movr(R2, R0)];
    assert_eq!(property(linux(reserve(unbounded, true, vec![]))), Property::HelperArgument);
    assert_eq!(property(verify_on(&WINDOWS, reserve(eight(), true, vec![]))), Property::UnknownHelper);
}
