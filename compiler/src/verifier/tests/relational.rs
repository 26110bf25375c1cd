//! The relational facts (docs/verifier.md §3): copies of registers and spills, packet length bounds, counters
//! in stack slots, branch-selected maps; and the run-time budget, atomic alignment and map/helper rules.

use super::*;

const R5: Reg = Reg::R5;
const R7: Reg = Reg::R7;

fn mov32(dst: Reg, src: Reg) -> I {
    I::Alu { width: Width::W32, op: AluOp::Mov, dst, src: Operand::Reg(src) }
}
fn add32(dst: Reg, imm: i32) -> I {
    I::Alu { width: Width::W32, op: AluOp::Add, dst, src: Operand::Imm(imm) }
}
fn jif32(cond: JumpCond, dst: Reg, src: Operand, offset: i16) -> I {
    I::JumpIf { width: Width::W32, cond, dst, src, offset }
}
fn sub(dst: Reg, src: Reg) -> I {
    I::Alu { width: Width::W64, op: AluOp::Sub, dst, src: Operand::Reg(src) }
}
fn ja(offset: i32) -> I {
    I::Jump { offset, long: false }
}
fn verify_maps(instructions: Vec<I>, maps: Vec<MapDefinition>) -> Result<VerificationReport, Rejection> {
    let mut m = module(instructions);
    m.maps = maps;
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    verify_program(&m, 0, &WINDOWS, xdp, &VerifierOptions::default()).map(Verified::into_report)
}

/// Lookup in map 0 with the result spilled to `fp-16` and reloaded into r1 for the null check, then `use_`.
fn spilled_lookup(use_: Vec<I>) -> Vec<I> {
    let mut p = vec![st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)];
    p.extend(map_fd(R1, 0));
    p.push(I::CallHelper { id: 1 });
    p.extend([stx(MemSize::DW, FP, -16, R0), ldx(MemSize::DW, R1, FP, -16)]);
    p.push(jif(JumpCond::Eq, R1, Operand::Imm(0), use_.len() as i16));
    p.extend(use_);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn a_null_check_on_a_reload_refines_the_spilled_copy() {
    verify(spilled_lookup(vec![ldx(MemSize::DW, R2, FP, -16), ldx(MemSize::DW, R3, R2, 0)]))
        .expect("the second reload is the checked value");
    // r0 itself was copied into the slot too: it is refined by the check as well.
    verify(spilled_lookup(vec![ldx(MemSize::DW, R3, R0, 0)])).expect("r0 is a copy");
    let mut p = vec![st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)];
    p.extend(map_fd(R1, 0));
    p.push(I::CallHelper { id: 1 });
    p.extend([stx(MemSize::DW, FP, -16, R0), ldx(MemSize::DW, R6, FP, -16)]);
    // A second lookup at another slot replaces r0; the slot keeps the first (checked) result's identity only.
    p.extend([movr(R2, FP), add(R2, -4)]);
    p.extend(map_fd(R1, 0));
    p.push(I::CallHelper { id: 1 });
    p.extend([jif(JumpCond::Eq, R0, Operand::Imm(0), 2), ldx(MemSize::DW, R2, FP, -16), ldx(MemSize::DW, R3, R2, 0)]);
    p.extend([mov(R0, 0), I::Exit]);
    assert_eq!(rejected(p).property, Property::NullDereference, "checking another lookup proves nothing");
}

#[test]
fn a_loop_exit_tested_on_a_32_bit_copy_bounds_the_counter() {
    // r1 = 0; loop: r1 += 1; w2 = w1; if w2 != 10 goto loop
    let report = verify(vec![
        mov(R1, 0),
        add(R1, 1),
        mov32(R2, R1),
        jif32(JumpCond::Ne, R2, Operand::Imm(10), -3),
        mov(R0, 0),
        I::Exit,
    ])
    .expect("bounded through the copy");
    assert_eq!(report.loop_bounds.len(), 1);
    assert!(report.loop_bounds[0].max_iterations <= 11, "{:?}", report.loop_bounds);
}

/// `*(u32*)(fp-4) = 0; head: w1 = *(fp-4); if w1 > 9 exit; w1 = *(fp-4); w1 += 1; *(fp+store_at) = w1; goto head`
fn stack_counter_loop(store_at: i16) -> Vec<I> {
    vec![
        st(MemSize::W, FP, -4, 0),
        st(MemSize::W, FP, -8, 0),
        ldx(MemSize::W, R1, FP, -4),
        jif32(JumpCond::Gt, R1, Operand::Imm(9), 4),
        ldx(MemSize::W, R1, FP, -4),
        add32(R1, 1),
        stx(MemSize::W, FP, store_at, R1),
        ja(-6),
        mov(R0, 0),
        I::Exit,
    ]
}

#[test]
fn a_counter_kept_in_a_stack_slot_bounds_its_loop() {
    let report = verify(stack_counter_loop(-4)).expect("the slot is the counter");
    assert_eq!(report.loop_bounds.len(), 1);
    assert_eq!(report.loop_bounds[0].counter, "stack[-4]");
    assert!(report.loop_bounds[0].max_iterations <= 11, "{:?}", report.loop_bounds);
    // Storing the increment elsewhere leaves the tested slot unchanged: no bound.
    assert_eq!(rejected(stack_counter_loop(-8)).property, Property::Termination);
}

/// data in r2, `r3 = data_end - data`, capped at 32 by `if r3 < 32 goto +1; r3 = 32`, then `body`.
fn packet_length(body: Vec<I>) -> Vec<I> {
    let mut p = vec![ldx(MemSize::DW, R2, R1, 0), ldx(MemSize::DW, R3, R1, 8), sub(R3, R2)];
    p.extend([jif(JumpCond::Lt, R3, Operand::Imm(32), 1), mov(R3, 32)]);
    p.push(jif(JumpCond::Eq, R3, Operand::Imm(0), body.len() as i16));
    p.extend(body);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn a_length_from_a_pointer_difference_sizes_a_helper_read() {
    // bpf_trace_printk2(data, len): reads len bytes of the packet.
    verify(packet_length(vec![movr(R1, R2), movr(R2, R3), I::CallHelper { id: 12 }])).expect("len <= data_end - data");
    let r = rejected(packet_length(vec![movr(R1, R2), movr(R2, R3), add(R2, 1), I::CallHelper { id: 12 }]));
    assert_eq!(r.property, Property::OutOfBounds, "one byte more than the packet");
    let r = rejected(packet_length(vec![movr(R1, R2), add(R1, 1), movr(R2, R3), I::CallHelper { id: 12 }]));
    assert_eq!(r.property, Property::OutOfBounds, "starting one byte later");
}

#[test]
fn a_length_check_proves_packet_bytes() {
    // len = data_end - data; if len < 4 exit; read 4 bytes at data.
    let p = |n: i32, read: MemSize| {
        vec![
            ldx(MemSize::DW, R2, R1, 0),
            ldx(MemSize::DW, R3, R1, 8),
            sub(R3, R2),
            jif(JumpCond::Lt, R3, Operand::Imm(n), 1),
            ldx(read, R0, R2, 0),
            mov(R0, 0),
            I::Exit,
        ]
    };
    verify(p(4, MemSize::W)).expect("4 bytes proven");
    assert_eq!(verify(p(4, MemSize::DW)).unwrap_err().property, Property::OutOfBounds);
}

/// Picks map 0 or map 1 on a branch, looks up key 0, checks for null and writes 8 bytes at the value.
fn branch_selected_lookup() -> Vec<I> {
    let mut p = vec![st(MemSize::W, FP, -4, 0), ldx(MemSize::W, R5, R1, 24)];
    p.push(jif(JumpCond::Eq, R5, Operand::Imm(0), 3));
    p.extend(map_fd(R1, 0));
    p.push(ja(2));
    p.extend(map_fd(R1, 1));
    p.extend([movr(R2, FP), add(R2, -4), I::CallHelper { id: 1 }]);
    p.extend([jif(JumpCond::Eq, R0, Operand::Imm(0), 1), st(MemSize::DW, R0, 0, 1)]);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn a_map_chosen_on_a_branch_is_accepted_when_every_candidate_fits() {
    verify_maps(branch_selected_lookup(), vec![map("a", MapType::HASH, 8), map("b", MapType::ARRAY, 8)])
        .expect("both values hold 8 bytes");
    let r = verify_maps(branch_selected_lookup(), vec![map("a", MapType::HASH, 8), map("b", MapType::ARRAY, 4)])
        .unwrap_err();
    assert_eq!(r.property, Property::OutOfBounds, "map b's value has 4 bytes");
    let r = verify_maps(branch_selected_lookup(), vec![map("a", MapType::HASH, 8), map("b", MapType::RINGBUF, 8)])
        .unwrap_err();
    assert_eq!(r.property, Property::HelperArgument, "lookup in a ring buffer");
}

#[test]
fn map_helpers_are_refused_on_map_types_without_values() {
    for t in [MapType::PROG_ARRAY, MapType::RINGBUF, MapType::PERF_EVENT_ARRAY] {
        let r = verify_maps(lookup(vec![]), vec![map("m", t, 8)]).unwrap_err();
        assert_eq!(r.property, Property::HelperArgument, "{}", t.name());
    }
    verify_maps(lookup(vec![]), vec![map("m", MapType::LRU_HASH, 8)]).expect("hash maps have values");
}

#[test]
fn atomics_must_be_naturally_aligned() {
    let atomic =
        |offset: i16, size: MemSize| I::Atomic { size, op: AtomicOp::Add, fetch: false, dst: R0, src: R7, offset };
    let p = |a: I| lookup(vec![mov(R7, 1), jif(JumpCond::Eq, R0, Operand::Imm(0), 1), a]);
    let bigger = |p: Vec<I>| verify_maps(p, vec![map("m", MapType::HASH, 16)]);
    bigger(p(atomic(8, MemSize::DW))).expect("aligned");
    bigger(p(atomic(4, MemSize::W))).expect("aligned 4-byte");
    assert_eq!(bigger(p(atomic(4, MemSize::DW))).unwrap_err().property, Property::Alignment);
    assert_eq!(bigger(p(atomic(2, MemSize::W))).unwrap_err().property, Property::Alignment);
}

/// Verifies `instructions` (Windows XDP, one 8-byte-value hash map) and returns the atomic slots the verifier
/// proved to address the stack only.
fn stack_atomic_slots(instructions: Vec<I>) -> Result<Vec<usize>, Rejection> {
    let m = module(instructions);
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    let v = verify_program(&m, 0, &WINDOWS, xdp, &VerifierOptions::default())?;
    Ok((0..m.programs[0].instructions.len()).filter(|&pc| v.is_stack_atomic(pc)).collect())
}

#[test]
fn misaligned_atomics_on_the_stack_are_accepted_as_stack_atomics() {
    let atomic =
        |size: MemSize, dst: Reg, offset: i16| I::Atomic { size, op: AtomicOp::Add, fetch: true, dst, src: R7, offset };
    let init = [st(MemSize::DW, FP, -16, 0), st(MemSize::DW, FP, -8, 0), mov(R7, 1)];
    let mut p = init.to_vec();
    p.extend([atomic(MemSize::DW, FP, -12), atomic(MemSize::W, FP, -7), mov(R0, 0), I::Exit]);
    assert_eq!(stack_atomic_slots(p).expect("the frame is private: no alignment needed"), vec![3, 4]);
    // An offset range is fine on the stack too: every address in it is in the frame.
    let mut p = init.to_vec();
    p.extend([movr(R2, FP), add(R2, -13), jif(JumpCond::Eq, R7, Operand::Imm(0), 1), add(R2, 1)]);
    p.extend([atomic(MemSize::DW, R2, 0), mov(R0, 0), I::Exit]);
    assert_eq!(stack_atomic_slots(p).expect("fp-13 or fp-12"), vec![7]);
    // Still only on initialised bytes.
    let p = vec![st(MemSize::DW, FP, -8, 0), mov(R7, 1), atomic(MemSize::DW, FP, -12), mov(R0, 0), I::Exit];
    assert_eq!(stack_atomic_slots(p).unwrap_err().property, Property::Uninitialized);
}

/// A function `f(r1, r2)` doing an 8-byte atomic add at `r1`, called with `fp - 12` (misaligned) and then, if
/// `with_map_value`, with a map value (aligned).
fn atomic_in_a_function_called_twice(with_map_value: bool) -> Vec<I> {
    let mut p = vec![st(MemSize::DW, FP, -16, 0), st(MemSize::DW, FP, -8, 0), movr(R1, FP), add(R1, -12), mov(R2, 1)];
    let mut second = vec![st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)];
    second.extend(map_fd(R1, 0));
    second.extend([I::CallHelper { id: 1 }, jif(JumpCond::Eq, R0, Operand::Imm(0), 3), movr(R1, R0), mov(R2, 1)]);
    let tail = [mov(R0, 0), I::Exit];
    let callee = 5 + 1 + if with_map_value { second.len() + 1 } else { 0 } + tail.len();
    p.push(I::CallLocal { offset: (callee - 5 - 1) as i32 });
    if with_map_value {
        p.extend(second);
        let at = p.len();
        p.push(I::CallLocal { offset: (callee - at - 1) as i32 });
    }
    p.extend(tail);
    assert_eq!(p.len(), callee);
    p.extend([I::Atomic { size: MemSize::DW, op: AtomicOp::Add, fetch: false, dst: R1, src: R2, offset: 0 }]);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn an_atomic_that_may_reach_a_map_value_in_another_context_must_be_aligned_in_all() {
    let p = atomic_in_a_function_called_twice(false);
    let slot = p.len() - 3;
    assert_eq!(stack_atomic_slots(p).expect("stack only in its one context"), vec![slot]);
    // The second call passes a map value: the slot is lowered as a real atomic, so the misaligned stack
    // address of the first call is refused.
    let r = stack_atomic_slots(atomic_in_a_function_called_twice(true)).unwrap_err();
    assert_eq!(r.property, Property::Alignment, "{}", r.message);
}

/// Three nested loops of `n` iterations each.
fn nested_loops(n: i32) -> Vec<I> {
    vec![
        mov(R1, 0),
        mov(R2, 0),
        mov(R3, 0),
        add(R3, 1),
        jif(JumpCond::Lt, R3, Operand::Imm(n), -2),
        add(R2, 1),
        jif(JumpCond::Lt, R2, Operand::Imm(n), -5),
        add(R1, 1),
        jif(JumpCond::Lt, R1, Operand::Imm(n), -8),
        mov(R0, 0),
        I::Exit,
    ]
}

#[test]
fn the_run_time_bound_is_checked_against_the_instruction_budget() {
    let report = verify(nested_loops(50)).expect("50^3 iterations fit in 1,000,000 instructions");
    assert!(report.max_instructions_executed.unwrap() <= DEFAULT_MAX_INSTRUCTIONS);
    let r = verify(nested_loops(1000)).unwrap_err();
    assert_eq!(r.property, Property::Termination);
    assert!(r.message.contains("budget"), "{}", r.message);
    let generous = VerifierOptions { max_instructions: 1 << 40, ..VerifierOptions::default() };
    let report = verify_with(nested_loops(1000), &generous).expect("a larger budget");
    assert!(report.max_instructions_executed.unwrap() >= 1000 * 1000 * 1000);
}
