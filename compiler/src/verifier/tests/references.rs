//! Reference tracking on the Linux platform (docs/verifier.md §2, "References"; `verifier/refs.rs`): ring-buffer
//! records (`bpf_ringbuf_reserve` → `bpf_ringbuf_submit`/`discard`) and sockets (`bpf_sk_lookup_tcp`/`udp`,
//! `bpf_skc_lookup_tcp` → `bpf_sk_release`). Programs the kernel accepts verify; every attack is rejected at the
//! instruction that breaks the rule.

use super::*;
use crate::platform::linux::LINUX;

const R5: Reg = Reg::R5;
const R7: Reg = Reg::R7;
const R8: Reg = Reg::R8;

const RESERVE: i32 = 131;
const SUBMIT: i32 = 132;
const DISCARD: i32 = 133;
const SK_LOOKUP_TCP: i32 = 84;
const SK_LOOKUP_UDP: i32 = 85;
const SK_RELEASE: i32 = 86;
const SKC_LOOKUP_TCP: i32 = 99;
const PRANDOM: i32 = 7;
const TAIL_CALL: i32 = 12;

fn call(id: i32) -> I {
    I::CallHelper { id }
}

/// Linux xdp with a ring buffer (map 0), an 8-byte-value hash map (1) and a program array (2).
fn linux_with(p: Vec<I>, options: &VerifierOptions) -> Result<VerificationReport, Rejection> {
    let mut m = module(p);
    m.maps = vec![map("events", MapType::RINGBUF, 0), map("m", MapType::HASH, 8), map("progs", MapType::PROG_ARRAY, 4)];
    let xdp = LINUX.program_type_by_name("xdp").unwrap();
    verify_program(&m, 0, &LINUX, xdp, options).map(Verified::into_report)
}

fn linux(p: Vec<I>) -> Result<VerificationReport, Rejection> {
    linux_with(p, &VerifierOptions::default())
}

#[track_caller]
fn accepted(p: Vec<I>, what: &str) {
    if let Err(e) = linux(p) {
        panic!("{what}: {e}");
    }
}

#[track_caller]
fn rejected_at(p: Vec<I>, pc: usize, property: Property, what: &str) -> Rejection {
    match linux(p) {
        Ok(_) => panic!("unsound accept: {what}"),
        Err(e) => {
            assert_eq!((e.pc, e.property), (pc, property), "{what}: {e}");
            e
        }
    }
}

/// `r0 = bpf_ringbuf_reserve(&events, 8, 0); r6 = r0` (slots 0–5, the call at 4).
fn reserve() -> Vec<I> {
    let mut p = vec![mov(R2, 8)];
    p.extend(map_fd(R1, 0));
    p.extend([mov(R3, 0), call(RESERVE), movr(R6, R0)]);
    p
}

/// `reserve()`, then `if r6 == 0 goto exit`, `body`, `r0 = 0; exit` (the jump lands on `r0 = 0`).
fn checked_record(body: Vec<I>) -> Vec<I> {
    let mut p = reserve();
    p.push(jif(JumpCond::Eq, R6, Operand::Imm(0), body.len() as i16));
    p.extend(body);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

/// `bpf_ringbuf_submit(reg, 0)` or `bpf_ringbuf_discard(reg, 0)`.
fn give_back(reg: Reg, id: i32) -> Vec<I> {
    vec![movr(R1, reg), mov(R2, 0), call(id)]
}

/// A zeroed 12-byte tuple at fp-16 and `r0 = lookup(ctx, fp-16, 12, 0, 0); r6 = r0`, with the context in r9.
fn lookup(id: i32) -> Vec<I> {
    vec![
        st(MemSize::DW, FP, -16, 0),
        st(MemSize::W, FP, -8, 0),
        movr(R1, Reg::R9),
        movr(R2, FP),
        add(R2, -16),
        mov(R3, 12),
        mov(R4, 0),
        mov(R5, 0),
        call(id),
        movr(R6, R0),
    ]
}

#[test]
fn a_reserved_record_that_is_submitted_or_discarded_verifies() {
    for id in [SUBMIT, DISCARD] {
        accepted(checked_record([vec![st(MemSize::DW, R6, 0, 1)], give_back(R6, id)].concat()), "fill and give back");
    }
    // Both ways on two paths; a null check of a copy checks the original.
    let mut both = reserve();
    both.extend([movr(R7, R0), jif(JumpCond::Eq, R7, Operand::Imm(0), 9), call(PRANDOM)]);
    both.push(jif(JumpCond::Eq, R0, Operand::Imm(0), 4));
    both.extend(give_back(R6, SUBMIT));
    both.push(I::Jump { offset: 3, long: false });
    both.extend(give_back(R6, DISCARD));
    both.extend([mov(R0, 0), I::Exit]);
    accepted(both, "submit on one path, discard on the other");
    // Kept on the stack across a helper call that clobbers r0-r5, reloaded and submitted.
    let spilled = [
        vec![stx(MemSize::DW, FP, -24, R6), mov(R6, 0), call(PRANDOM), ldx(MemSize::DW, R7, FP, -24)],
        give_back(R7, SUBMIT),
    ];
    accepted(checked_record(spilled.concat()), "a spilled reference");
    // Checked for null twice: the join of the filled and the null path keeps the record-or-null.
    let mut twice = reserve();
    twice.extend([jif(JumpCond::Eq, R6, Operand::Imm(0), 1), st(MemSize::W, R6, 4, 2)]);
    twice.push(jif(JumpCond::Eq, R6, Operand::Imm(0), 3));
    twice.extend(give_back(R6, SUBMIT));
    twice.extend([mov(R0, 0), I::Exit]);
    accepted(twice, "if (e) fill; if (e) submit");
    // Reserved and submitted in every iteration of a counted loop.
    let mut looped = vec![mov(R8, 0)];
    let body_start = looped.len();
    looped.extend(reserve());
    looped.push(jif(JumpCond::Eq, R6, Operand::Imm(0), 3));
    looped.extend(give_back(R6, SUBMIT));
    looped.push(add(R8, 1));
    let back = -((looped.len() + 1 - body_start) as i16);
    looped.extend([jif(JumpCond::Lt, R8, Operand::Imm(4), back), mov(R0, 0), I::Exit]);
    accepted(looped, "reserve and submit in a loop");
}

#[test]
fn a_looked_up_socket_that_is_released_verifies() {
    for id in [SK_LOOKUP_TCP, SK_LOOKUP_UDP, SKC_LOOKUP_TCP] {
        let mut p = vec![movr(Reg::R9, R1)];
        p.extend(lookup(id));
        p.extend([
            jif(JumpCond::Eq, R6, Operand::Imm(0), 3),
            ldx(MemSize::W, R2, R6, 4),
            movr(R1, R6),
            call(SK_RELEASE),
        ]);
        p.extend([mov(R0, 0), I::Exit]);
        accepted(p, "lookup, read family, release");
    }
}

#[test]
fn a_reference_held_at_exit_on_some_path_is_a_leak() {
    // Submitted only when a random number is non-zero.
    let mut p = checked_record(
        [vec![call(PRANDOM), jif(JumpCond::Eq, R0, Operand::Imm(0), 3)], give_back(R6, SUBMIT)].concat(),
    );
    let exit = p.len() - 1;
    let e = rejected_at(p.clone(), exit, Property::ReferenceLeak, "not submitted on one path");
    assert!(e.message.contains("bpf_ringbuf_reserve returned at instruction 4"), "{e}");
    assert_eq!(e.values, vec![("reference acquired at".to_string(), "instruction 4".to_string())]);
    // Never null checked, never given back.
    p = reserve();
    p.extend([mov(R0, 0), I::Exit]);
    rejected_at(p, 7, Property::ReferenceLeak, "reserved and dropped");
    // A socket never released.
    let mut s = vec![movr(Reg::R9, R1)];
    s.extend(lookup(SK_LOOKUP_TCP));
    s.extend([jif(JumpCond::Eq, R6, Operand::Imm(0), 1), ldx(MemSize::W, R2, R6, 4), mov(R0, 0), I::Exit]);
    rejected_at(s, 14, Property::ReferenceLeak, "socket not released");
    // Reserved on one path only: the join keeps the reference, it is not silently dropped.
    let mut one = vec![mov(R6, 0), call(PRANDOM), jif(JumpCond::Eq, R0, Operand::Imm(0), 6)];
    one.extend(reserve());
    one.push(jif(JumpCond::Eq, R6, Operand::Imm(0), 0));
    one.extend([mov(R0, 0), I::Exit]);
    rejected_at(one, 11, Property::ReferenceLeak, "reserved on one path");
    // Off (the PREVAIL suite's model), the leak is accepted but a released record is still dead.
    let off = VerifierOptions { check_reference_leaks: false, ..VerifierOptions::default() };
    linux_with(checked_record(vec![]), &off).expect("leak accepted without leak checks");
    let dead = checked_record([give_back(R6, SUBMIT), vec![st(MemSize::W, R6, 0, 1)]].concat());
    assert_eq!(linux_with(dead, &off).unwrap_err().property, Property::ReleasedReference);
}

#[test]
fn a_released_record_is_dead_in_every_copy() {
    // Double submit, through the same register and through a copy taken before the first.
    let mut twice = checked_record([vec![movr(R7, R6)], give_back(R6, SUBMIT), give_back(R7, DISCARD)].concat());
    rejected_at(twice.clone(), 13, Property::ReleasedReference, "double submit");
    twice = checked_record([give_back(R6, SUBMIT), give_back(R6, SUBMIT)].concat());
    rejected_at(twice, 12, Property::ReleasedReference, "submit twice");
    // Use after submit: a write, a read, a derived pointer, a spilled copy (reloaded as undefined bytes).
    let after = |before: Vec<I>, then: Vec<I>| checked_record([before, give_back(R6, SUBMIT), then].concat());
    rejected_at(after(vec![], vec![st(MemSize::W, R6, 0, 1)]), 10, Property::ReleasedReference, "write after submit");
    rejected_at(after(vec![], vec![ldx(MemSize::W, R2, R6, 0)]), 10, Property::ReleasedReference, "read after submit");
    let derived = after(vec![movr(R8, R6), add(R8, 4)], vec![st(MemSize::W, R8, 0, 1)]);
    rejected_at(derived, 12, Property::ReleasedReference, "write through r6 + 4 after submit");
    let spill =
        after(vec![stx(MemSize::DW, FP, -24, R6)], vec![ldx(MemSize::DW, R8, FP, -24), st(MemSize::W, R8, 0, 1)]);
    let e = linux(spill).expect_err("reload after submit");
    assert!(matches!(e.property, Property::Uninitialized | Property::ReleasedReference) && e.pc == 12, "{e}");
    // A register that is the record on one path and a map value on the other is no usable pointer after the
    // join (otherwise it would outlive the submit on the record's path).
    let mut either = reserve();
    either.extend([jif(JumpCond::Eq, R6, Operand::Imm(0), 14), st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)]);
    either.extend(map_fd(R1, 1));
    either.extend([call(1), movr(R8, R0), movr(R7, R6), jif(JumpCond::Eq, R8, Operand::Imm(0), 1), movr(R7, R8)]);
    either.extend(give_back(R6, SUBMIT));
    either.extend([st(MemSize::W, R7, 0, 1), mov(R0, 0), I::Exit]);
    rejected_at(either, 20, Property::Uninitialized, "record-or-map-value written after the submit");
    // A socket after its release.
    let mut s = vec![movr(Reg::R9, R1)];
    s.extend(lookup(SKC_LOOKUP_TCP));
    s.extend([jif(JumpCond::Eq, R6, Operand::Imm(0), 3), movr(R1, R6), call(SK_RELEASE), ldx(MemSize::W, R2, R6, 4)]);
    s.extend([mov(R0, 0), I::Exit]);
    rejected_at(s, 14, Property::ReleasedReference, "read of a released socket");
}

#[test]
fn only_an_unmodified_held_non_null_reference_of_the_right_kind_is_released() {
    let offset = checked_record([vec![movr(R7, R6), add(R7, 4)], give_back(R7, SUBMIT)].concat());
    rejected_at(offset, 11, Property::HelperArgument, "submit of record + 4");
    let mut unchecked = reserve();
    unchecked.extend(give_back(R6, SUBMIT));
    unchecked.extend([mov(R0, 0), I::Exit]);
    rejected_at(unchecked, 8, Property::NullDereference, "submit before the null check");
    // A map value and a stack buffer are not references.
    let mut value = vec![st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)];
    value.extend(map_fd(R1, 1));
    value.extend([call(1), jif(JumpCond::Eq, R0, Operand::Imm(0), 3)]);
    value.extend(give_back(R0, SUBMIT));
    value.extend([mov(R0, 0), I::Exit]);
    rejected_at(value, 9, Property::HelperArgument, "submit of a map value");
    let stack = [vec![st(MemSize::DW, FP, -8, 0), movr(R7, FP), add(R7, -8)], give_back(R7, DISCARD), vec![I::Exit]];
    rejected_at(stack.concat(), 5, Property::HelperArgument, "discard of a stack buffer");
    // A record is not a socket and a socket is not a record.
    rejected_at(
        checked_record(vec![movr(R1, R6), call(SK_RELEASE)]),
        8,
        Property::HelperArgument,
        "sk_release(record)",
    );
    let mut s = vec![movr(Reg::R9, R1)];
    s.extend(lookup(SK_LOOKUP_UDP));
    s.push(jif(JumpCond::Eq, R6, Operand::Imm(0), 3));
    s.extend(give_back(R6, SUBMIT));
    s.extend([mov(R0, 0), I::Exit]);
    rejected_at(s, 14, Property::HelperArgument, "ringbuf_submit(socket)");
    // The Windows platform has none of these helpers.
    let windows = verify_xdp_on(&WINDOWS, vec![], [give_back(FP, SUBMIT), vec![I::Exit]].concat());
    assert_eq!(windows.unwrap_err().property, Property::UnknownHelper);
}

#[test]
fn a_reference_lost_from_every_holder_cannot_be_released() {
    // The only copy is spilled, then one of its bytes is overwritten: the reload is undefined.
    let partial = [
        vec![stx(MemSize::DW, FP, -24, R6), mov(R6, 0), st(MemSize::B, FP, -20, 1), ldx(MemSize::DW, R7, FP, -24)],
        give_back(R7, SUBMIT),
    ];
    rejected_at(checked_record(partial.concat()), 13, Property::Uninitialized, "partial overwrite of the spill");
    let dropped = vec![stx(MemSize::DW, FP, -24, R6), mov(R6, 0), st(MemSize::B, FP, -20, 1)];
    let p = checked_record(dropped);
    let exit = p.len() - 1;
    rejected_at(p, exit, Property::ReferenceLeak, "partial overwrite, then exit");
    // Two records reserved at different calls and joined into one register: neither can be released.
    let mut joined = vec![call(PRANDOM), jif(JumpCond::Eq, R0, Operand::Imm(0), 7)];
    joined.extend(reserve());
    joined.push(I::Jump { offset: 6, long: false });
    joined.extend(reserve());
    joined.push(jif(JumpCond::Eq, R6, Operand::Imm(0), 3));
    joined.extend(give_back(R6, SUBMIT));
    joined.extend([mov(R0, 0), I::Exit]);
    assert!(linux(joined).is_err(), "a register holding one of two references is not a reference");
}

#[test]
fn references_follow_bpf_to_bpf_calls() {
    // The callee submits the record passed in r1; the caller's saved copy in r6 dies with it.
    let callee = [give_back(R1, SUBMIT), vec![mov(R0, 0), I::Exit]].concat();
    let caller_use = |after: Vec<I>| {
        let body = [vec![movr(R1, R6), I::CallLocal { offset: 0 }], after].concat();
        let mut p = checked_record(body);
        let len = p.len();
        // Patch the call to land after the caller's exit, where the callee starts.
        let call_at = p.iter().position(|i| matches!(i, I::CallLocal { .. })).unwrap();
        p[call_at] = I::CallLocal { offset: (len - call_at - 1) as i32 };
        p.extend(callee.clone());
        p
    };
    accepted(caller_use(vec![]), "a callee submits the caller's record");
    rejected_at(
        caller_use(vec![st(MemSize::W, R6, 0, 1)]),
        9,
        Property::ReleasedReference,
        "use after the callee submits",
    );
    // A callee that reserves and returns without submitting leaks at the program's exit.
    let mut leaky = vec![I::CallLocal { offset: 2 }, mov(R0, 0), I::Exit];
    leaky.extend(reserve());
    leaky.extend([mov(R0, 0), I::Exit]);
    rejected_at(leaky, 2, Property::ReferenceLeak, "a callee's record never submitted");
    // A callee that returns the record it reserved; the caller submits it.
    let mut returned = vec![I::CallLocal { offset: 7 }, movr(R6, R0), jif(JumpCond::Eq, R6, Operand::Imm(0), 3)];
    returned.extend(give_back(R6, SUBMIT));
    returned.extend([mov(R0, 0), I::Exit]);
    returned.extend(reserve());
    returned.push(I::Exit);
    accepted(returned, "a callee returns its record to the caller");
}

#[test]
fn the_program_cannot_end_or_reacquire_while_holding_a_reference() {
    // A tail call does not return when it succeeds.
    let mut tail = vec![movr(Reg::R9, R1)];
    tail.extend(reserve());
    tail.push(jif(JumpCond::Eq, R6, Operand::Imm(0), 8));
    tail.push(movr(R1, Reg::R9));
    tail.extend(map_fd(R2, 2));
    tail.extend([mov(R3, 0), call(TAIL_CALL)]);
    tail.extend(give_back(R6, SUBMIT));
    tail.extend([mov(R0, 0), I::Exit]);
    rejected_at(tail, 12, Property::ReferenceLeak, "tail call with a live record");
    // A legacy packet load may end the program.
    let mut legacy = vec![movr(R8, R1)];
    legacy.extend(reserve());
    legacy.extend([jif(JumpCond::Eq, R6, Operand::Imm(0), 7), movr(R7, R6), movr(R6, R8), ld_abs(MemSize::B, 0)]);
    legacy.extend(give_back(R7, SUBMIT));
    legacy.extend([mov(R0, 0), I::Exit]);
    rejected_at(legacy, 10, Property::ReferenceLeak, "LD_ABS with a live record");
    // The same reserve again in a loop while the previous record is still held.
    let mut again = vec![mov(R8, 0)];
    again.extend(reserve());
    again.extend([movr(R7, R6), add(R8, 1), jif(JumpCond::Lt, R8, Operand::Imm(2), -9), mov(R0, 0), I::Exit]);
    rejected_at(again, 5, Property::ReferenceLeak, "a second reserve at the same call while holding the first");
}
