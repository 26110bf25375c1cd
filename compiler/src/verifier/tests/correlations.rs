//! Relational facts for issue 12's patterns 3, 6 and 7 (docs/verifier.md §3): pointers into one of several
//! regions with per-kind offsets, lengths that bound packet reads through comparisons, and initialised stack
//! extents tied to a size register across joins. Each fact has tests that it is not over-applied.

use super::*;

fn verify_value_size(instructions: Vec<I>, value_size: u32) -> Result<VerificationReport, Rejection> {
    let mut m = module(instructions);
    m.maps = vec![map("m", MapType::ARRAY, value_size)];
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    verify_program(&m, 0, &WINDOWS, xdp, &VerifierOptions::default()).map(Verified::into_report)
}

fn ja(offset: i32) -> I {
    I::Jump { offset, long: false }
}

/// r6 = the looked-up value + 8, or `fp-8` when the lookup failed (`init_stack`: fp-8 holds 8 bytes), then `use_`.
fn stack_or_map_value(init_stack: bool, use_: Vec<I>) -> Vec<I> {
    let mut p = vec![st(MemSize::W, FP, -12, 0)];
    if init_stack {
        p.push(st(MemSize::DW, FP, -8, 7));
    }
    p.extend([movr(R2, FP), add(R2, -12)]);
    p.extend(map_fd(R1, 0));
    p.push(I::CallHelper { id: 1 });
    p.extend([jif(JumpCond::Eq, R0, Operand::Imm(0), 3), movr(R6, R0), add(R6, 8), ja(2)]);
    p.extend([movr(R6, FP), add(R6, -8)]);
    p.extend(use_);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn a_pointer_to_the_stack_or_a_map_value_is_checked_at_each_kinds_offset() {
    let read = |n: MemSize, at: i16| vec![ldx(n, R3, R6, at)];
    verify_value_size(stack_or_map_value(true, read(MemSize::DW, 0)), 16).expect("stack -8 and value +8, 8 bytes");
    let printk = vec![movr(R1, R6), mov(R2, 8), I::CallHelper { id: 12 }];
    verify_value_size(stack_or_map_value(true, printk.clone()), 16).expect("helper reads 8 bytes of either");
    // Moving the pointer moves both kinds: 4 bytes at +4 stay inside both.
    verify_value_size(stack_or_map_value(true, vec![add(R6, 4), ldx(MemSize::W, R3, R6, 0)]), 16).expect("moved");
}

#[test]
fn a_mixed_pointer_access_must_fit_every_kind() {
    // The value has room for 16 bytes at +8, the stack buffer for 8 only.
    let r = verify_value_size(stack_or_map_value(true, vec![ldx(MemSize::DW, R3, R6, 8)]), 32).unwrap_err();
    assert_eq!(r.property, Property::OutOfBounds, "stack [0, 8) is outside the frame");
    // The stack side fits, the value side (8 bytes at +8 of a 12-byte value) does not.
    let r = verify_value_size(stack_or_map_value(true, vec![ldx(MemSize::DW, R3, R6, 0)]), 12).unwrap_err();
    assert_eq!(r.property, Property::OutOfBounds, "value [8, 16) is outside 12 bytes");
    let printk = vec![movr(R1, R6), mov(R2, 8), I::CallHelper { id: 12 }];
    let r = verify_value_size(stack_or_map_value(true, printk), 12).unwrap_err();
    assert_eq!(r.property, Property::OutOfBounds, "the helper reads past the value");
}

#[test]
fn a_mixed_pointer_needs_the_stack_side_initialised() {
    let r = verify_value_size(stack_or_map_value(false, vec![ldx(MemSize::DW, R3, R6, 0)]), 16).unwrap_err();
    assert_eq!(r.property, Property::Uninitialized);
    let printk = vec![movr(R1, R6), mov(R2, 8), I::CallHelper { id: 12 }];
    let r = verify_value_size(stack_or_map_value(false, printk), 16).unwrap_err();
    assert_eq!(r.property, Property::Uninitialized);
}

#[test]
fn a_store_through_a_mixed_pointer_does_not_initialise_the_stack() {
    // If r6 points to the map value, fp-8 was never written.
    let p = stack_or_map_value(false, vec![st(MemSize::DW, R6, 0, 1), ldx(MemSize::DW, R3, FP, -8), add(R3, 1)]);
    assert_eq!(verify_value_size(p, 16).unwrap_err().property, Property::Uninitialized);
    // Nor does it record a spill: a pointer stored through it is not readable back from the stack.
    let p = stack_or_map_value(true, vec![stx(MemSize::DW, R6, 0, R6)]);
    assert_eq!(verify_value_size(p, 16).unwrap_err().property, Property::PointerLeak, "pointer into a map value");
}

fn jif32(cond: JumpCond, dst: Reg, src: Operand, offset: i16) -> I {
    I::JumpIf { width: Width::W32, cond, dst, src, offset }
}
fn alu(op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width: Width::W64, op, dst, src }
}

/// clang's `u32 n = data_end - data; for (i = 0; i < n && i < 64; i++) sum += data[i];` (rotated: the read
/// comes first, `exit_if` (`i + 1 >= n`, as `r3 exit_if r1`) after it).
fn packet_loop(exit_if: JumpCond) -> Vec<I> {
    vec![
        ldx(MemSize::DW, R2, R1, 0),
        ldx(MemSize::DW, R1, R1, 8),
        alu(AluOp::Sub, R1, Operand::Reg(R2)),
        jif32(JumpCond::Eq, R1, Operand::Imm(0), 10),
        mov(R3, 0),
        alu(AluOp::Lsh, R1, Operand::Imm(32)),
        alu(AluOp::Rsh, R1, Operand::Imm(32)),
        movr(R4, R3),
        movr(Reg::R5, R2),
        alu(AluOp::Add, Reg::R5, Operand::Reg(R4)),
        ldx(MemSize::B, Reg::R5, Reg::R5, 0),
        add(R3, 1),
        jif(exit_if, R3, Operand::Reg(R1), 1),
        jif(JumpCond::Lt, R3, Operand::Imm(64), -7),
        mov(R0, 0),
        I::Exit,
    ]
}

#[test]
fn a_loop_index_below_the_packet_length_reads_the_packet() {
    verify(packet_loop(JumpCond::Ge)).expect("i < n = data_end - data at every read");
    // `i <= n` lets the last read hit data[n], one byte past data_end.
    let r = verify(packet_loop(JumpCond::Gt)).unwrap_err();
    assert_eq!((r.pc, r.property), (10, Property::OutOfBounds));
}

/// `n = data_end - data - 4` (with `guard`: after `if n < 4 exit`), `r3` a zero-extended 32-bit number
/// compared with `n` by `cmp` (taken: exit), then a read of `size` bytes at `data + r3` (slot 8).
fn index_below_length_minus_4(guard: bool, cmp: I, size: MemSize) -> Vec<I> {
    let guard = if guard { jif(JumpCond::Lt, Reg::R5, Operand::Imm(4), 4) } else { ja(0) };
    vec![
        ldx(MemSize::DW, R2, R1, 0),
        ldx(MemSize::DW, Reg::R5, R1, 8),
        ldx(MemSize::W, R3, R1, 24),
        alu(AluOp::Sub, Reg::R5, Operand::Reg(R2)),
        guard,
        add(Reg::R5, -4),
        cmp,
        alu(AluOp::Add, R2, Operand::Reg(R3)),
        ldx(size, R0, R2, 0),
        mov(R0, 0),
        I::Exit,
    ]
}

#[test]
fn a_comparison_with_a_length_bounds_the_other_number() {
    // i < n - 4 leaves 5 bytes from data + i; the 32-bit unsigned comparison is the 64-bit one (both < 2^32).
    let below = jif32(JumpCond::Ge, R3, Operand::Reg(Reg::R5), 2);
    verify(index_below_length_minus_4(true, below, MemSize::W)).expect("4 of 5 bytes");
    let r = verify(index_below_length_minus_4(true, below, MemSize::DW)).unwrap_err();
    assert_eq!((r.pc, r.property), (8, Property::OutOfBounds), "8 of 5 bytes");
    // `n > i` is the same relation with the operands swapped.
    let above = jif32(JumpCond::Le, Reg::R5, Operand::Reg(R3), 2);
    verify(index_below_length_minus_4(true, above, MemSize::W)).expect("swapped operands");
}

#[test]
fn comparisons_that_do_not_order_the_values_bound_nothing() {
    // w3 may be 2^31 or more, negative as an i32: `w3 s< n` holds for it without w3 being below n.
    let signed = jif32(JumpCond::Sge, R3, Operand::Reg(Reg::R5), 2);
    let r = verify(index_below_length_minus_4(true, signed, MemSize::B)).unwrap_err();
    assert_eq!((r.pc, r.property), (8, Property::OutOfBounds));
    // Without the guard n - 4 may be negative: an unsigned comparison with it orders nothing as signed numbers.
    let unsigned = jif(JumpCond::Ge, R3, Operand::Reg(Reg::R5), 2);
    let r = verify(index_below_length_minus_4(false, unsigned, MemSize::B)).unwrap_err();
    assert_eq!((r.pc, r.property), (8, Property::OutOfBounds));
}

/// Writes 8 bytes at fp-16 on both paths and 8 more at fp-8 on one, with r2 = the extent (`short`, 16), joins
/// and `tail`s, then logs `r2` bytes from fp-16.
fn extent_per_path(short: i32, tail: Vec<I>) -> Vec<I> {
    let mut p = vec![
        ldx(MemSize::W, Reg::R5, R1, 24),
        st(MemSize::DW, FP, -16, 1),
        jif(JumpCond::Eq, Reg::R5, Operand::Imm(0), 3),
        st(MemSize::DW, FP, -8, 2),
        mov(R2, 16),
        ja(1),
        mov(R2, short),
    ];
    p.extend(tail);
    p.extend([movr(R1, FP), add(R1, -16), I::CallHelper { id: 12 }, mov(R0, 0), I::Exit]);
    p
}

#[test]
fn a_size_matching_each_paths_extent_survives_the_join() {
    verify(extent_per_path(8, vec![])).expect("each path wrote r2 bytes");
    verify(extent_per_path(4, vec![])).expect("fewer bytes than written");
    verify(extent_per_path(8, vec![movr(R3, R2), movr(R2, R3)])).expect("copies keep the fact");
    let refine = vec![jif(JumpCond::Gt, R2, Operand::Imm(12), 0)];
    verify(extent_per_path(8, refine)).expect("a branch only narrows the size");
}

#[test]
fn an_extent_is_not_over_applied() {
    let uninit = |p: Vec<I>| verify(p).unwrap_err().property;
    assert_eq!(uninit(extent_per_path(12, vec![])), Property::Uninitialized, "12 bytes, 8 written");
    assert!(verify(extent_per_path(8, vec![add(R2, 1)])).is_err(), "the size changed");
    // Half of a pointer stored into the extent makes its bytes unreadable.
    let half_pointer = vec![stx(MemSize::W, FP, -12, FP)];
    assert_eq!(uninit(extent_per_path(8, half_pointer)), Property::Uninitialized, "bytes made unreadable");
    // A helper reading from a later offset than the extent's start reads past it.
    let mut p = extent_per_path(8, vec![]);
    let n = p.len();
    p[n - 4] = add(R1, -15);
    assert!(verify(p).is_err(), "starting one byte later");
}

#[test]
fn an_extent_never_covers_a_pointer_spilled_on_one_path() {
    // Both paths initialise [-16, 0) and log 16 bytes, but one has spilled a pointer at fp-8.
    let p = vec![
        ldx(MemSize::W, Reg::R5, R1, 24),
        st(MemSize::DW, FP, -16, 1),
        st(MemSize::DW, FP, -8, 2),
        mov(R2, 16),
        jif(JumpCond::Eq, Reg::R5, Operand::Imm(0), 1),
        stx(MemSize::DW, FP, -8, FP),
        movr(R1, FP),
        add(R1, -16),
        I::CallHelper { id: 12 },
        mov(R0, 0),
        I::Exit,
    ];
    let r = verify(p).unwrap_err().property;
    assert!(matches!(r, Property::Uninitialized | Property::PointerLeak), "{r:?}");
}

/// `if (data_end == data) exit;` then a read of `size` bytes at `data + at`.
fn nonempty_packet_read(at: i16, size: MemSize) -> Vec<I> {
    vec![
        ldx(MemSize::DW, R2, R1, 0),
        ldx(MemSize::DW, R3, R1, 8),
        jif(JumpCond::Eq, R3, Operand::Reg(R2), 1),
        ldx(size, R0, R2, at),
        mov(R0, 0),
        I::Exit,
    ]
}

#[test]
fn data_end_unequal_to_data_proves_one_packet_byte() {
    verify(nonempty_packet_read(0, MemSize::B)).expect("data_end != data: the packet has a byte");
    // One byte only: a second byte or a 2-byte read is not proven.
    let r = verify(nonempty_packet_read(1, MemSize::B)).unwrap_err();
    assert_eq!((r.pc, r.property), (3, Property::OutOfBounds));
    let r = verify(nonempty_packet_read(0, MemSize::H)).unwrap_err();
    assert_eq!((r.pc, r.property), (3, Property::OutOfBounds));
    // `p != data_end` for p = data + 4, not known to be inside the packet, proves nothing (p may be past the end).
    let mut p = nonempty_packet_read(0, MemSize::B);
    p.splice(2..2, [add(R2, 4)]);
    let r = verify(p).unwrap_err();
    assert_eq!((r.pc, r.property), (4, Property::OutOfBounds));
}

/// `len = data_end - data; for (i = 0; i < len; i++) sum += data[i];` with the loop test at the bottom.
fn loop_over_the_whole_packet() -> Vec<I> {
    vec![
        ldx(MemSize::DW, R2, R1, 0),
        ldx(MemSize::DW, R1, R1, 8),
        alu(AluOp::Sub, R1, Operand::Reg(R2)),
        mov(R3, 0),
        mov(R0, 0),
        jif(JumpCond::Ge, R3, Operand::Reg(R1), 6),
        movr(R4, R2),
        alu(AluOp::Add, R4, Operand::Reg(R3)),
        ldx(MemSize::B, R4, R4, 0),
        alu(AluOp::Add, R0, Operand::Reg(R4)),
        add(R3, 1),
        jif(JumpCond::Lt, R3, Operand::Reg(R1), -6),
        I::Exit,
    ]
}

#[test]
fn the_largest_packet_length_bounds_a_loop_over_the_packet() {
    // Windows packets may be up to 2^32 - 1 bytes: such a loop may run longer than the iteration limit.
    let r = verify(loop_over_the_whole_packet()).unwrap_err();
    assert_eq!(r.property, Property::Termination);
    assert!(r.message.contains("4294967295"), "{r}");
    // With packets of at most 1500 bytes the counter stays below 1500.
    let options = VerifierOptions { max_packet_len: 1500, ..VerifierOptions::default() };
    let report = verify_with(loop_over_the_whole_packet(), &options).expect("bounded by the packet length");
    assert!(report.loop_bounds.iter().all(|b| b.max_iterations <= 1500), "{:?}", report.loop_bounds);
}

/// `r0 = ctx.ingress_ifindex` (a number); `if r0 == 0 { r2 = ctx + 4; r3 = ctx } else { r2 = 1; r3 = r0 }` as
/// `then` / `other` pick (the same kind on each path by default), then `use_`.
fn same_kind_on_each_path(mixed: bool, use_: Vec<I>) -> Vec<I> {
    let mut p = vec![ldx(MemSize::W, R0, R1, 24), jif(JumpCond::Eq, R0, Operand::Imm(0), 3)];
    // Number path.
    p.extend([mov(R2, 1), if mixed { movr(R3, R1) } else { movr(R3, R0) }, ja(3)]);
    // Context path.
    p.extend([movr(R2, R1), add(R2, 4), if mixed { movr(R3, R0) } else { movr(R3, R1) }]);
    p.extend(use_);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn values_of_one_kind_on_every_path_may_be_subtracted_and_compared() {
    // r4 = r3 (a copy keeps the relation), r4 -= r2: numbers or two context offsets, never a mixed pair.
    let sub = vec![movr(R4, R3), alu(AluOp::Sub, R4, Operand::Reg(R2))];
    verify(same_kind_on_each_path(false, sub.clone())).expect("{number, ctx} pairs of one kind per path");
    let cmp = vec![jif(JumpCond::Gt, R3, Operand::Reg(R2), 0)];
    verify(same_kind_on_each_path(false, cmp.clone())).expect("comparison of one kind");
    // A number on one side and the context on the other: the difference would be an address.
    for use_ in [sub, cmp] {
        let r = verify(same_kind_on_each_path(true, use_)).unwrap_err();
        assert!(matches!(r.property, Property::PointerArithmetic | Property::PointerLeak), "{r}");
    }
}

#[test]
fn a_write_ends_the_same_kind_relation() {
    // r3 is rewritten after the join (with the context): r3 - r2 may be ctx - number.
    let r =
        verify(same_kind_on_each_path(false, vec![movr(R3, R1), alu(AluOp::Sub, R3, Operand::Reg(R2))])).unwrap_err();
    assert_eq!(r.property, Property::PointerArithmetic);
    // So does any arithmetic on one of them.
    let r = verify(same_kind_on_each_path(false, vec![add(R3, 0), alu(AluOp::Sub, R3, Operand::Reg(R2))])).unwrap_err();
    assert_eq!(r.property, Property::PointerArithmetic);
}

/// `n = ctx.ingress_ifindex & 63; for (i = 0; (i & mask) < n; i++) {}` (PREVAIL's 8/16-bit truncation loops).
fn masked_counter_loop(mask: i32) -> Vec<I> {
    vec![
        ldx(MemSize::W, R1, R1, 24),
        alu(AluOp::And, R1, Operand::Imm(63)),
        mov(R0, 0),
        movr(R2, R0),
        alu(AluOp::And, R2, Operand::Imm(mask)),
        jif(JumpCond::Gt, R1, Operand::Reg(R2), 1),
        ja(2),
        add(R0, 1),
        ja(-6),
        I::Exit,
    ]
}

#[test]
fn a_mask_that_keeps_every_value_keeps_the_copy_and_bounds_the_loop() {
    // i stays below 64 < 256 while the loop runs, so i & 255 is i and `n > i & 255` bounds i itself.
    let report = verify(masked_counter_loop(255)).expect("the masked copy is the counter");
    assert!(report.loop_bounds.iter().all(|b| b.max_iterations <= 256), "{:?}", report.loop_bounds);
    verify(masked_counter_loop(0xffff)).expect("16-bit mask");
    // i & 7 drops bits of i once i reaches 8: the test then says nothing about i, which may wrap around.
    let r = verify(masked_counter_loop(7)).unwrap_err();
    assert_eq!(r.property, Property::Termination);
    // 254 is not of the form 2^k - 1: i & 254 differs from i for odd i.
    let r = verify(masked_counter_loop(254)).unwrap_err();
    assert_eq!(r.property, Property::Termination);
}
