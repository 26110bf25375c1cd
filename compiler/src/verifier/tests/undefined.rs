//! Undefined values (docs/verifier.md §2, "Initialisation"): copied by `mov`, stored to and reloaded from the
//! invocation's own stack, read from never-written stack bytes — and rejected at every use.

use super::*;

const R7: Reg = Reg::R7;

fn alu(op: AluOp, dst: Reg, src: Reg) -> I {
    I::Alu { width: Width::W64, op, dst, src: Operand::Reg(src) }
}

/// `body`, then `r0 = 0; exit`.
fn then_return_zero(mut body: Vec<I>) -> Vec<I> {
    body.extend([mov(R0, 0), I::Exit]);
    body
}

fn rejected_at(body: Vec<I>) -> (usize, Property) {
    let r = rejected(body);
    (r.pc, r.property)
}

#[test]
fn undefined_values_may_be_copied_spilled_and_reloaded() {
    // PREVAIL's "MOV of a number and an uninitialized register", "packet: simple valid access" (`r5 = r5`).
    verify(then_return_zero(vec![movr(R0, R3), movr(Reg::R5, Reg::R5)])).expect("copies are not uses");
    let mov32 = I::Alu { width: Width::W32, op: AluOp::Mov, dst: R2, src: Operand::Reg(R3) };
    verify(then_return_zero(vec![mov32])).expect("a 32-bit copy is not a use");
    // "stack: overwrite exact-match stack cell with uninitialized register".
    verify(then_return_zero(vec![
        st(MemSize::DW, FP, -8, 42),
        stx(MemSize::DW, FP, -8, R6),
        ldx(MemSize::DW, R0, FP, -8),
    ]))
    .expect("an undefined spill and its reload are not uses");
    // "uninit: Read uninitialized stack range" (aligned and unaligned).
    verify(then_return_zero(vec![ldx(MemSize::DW, R0, FP, -16), ldx(MemSize::DW, R2, FP, -10)]))
        .expect("reading never-written stack bytes is not a use");
}

#[test]
fn only_reloads_at_fixed_frame_offsets_may_read_undefined_bytes() {
    // Through another stack pointer the bytes must be initialised, as PREVAIL requires ("stack_numeric_size join
    // must use minimum"): one path wrote 8 bytes, the other 4, and 8 are read through r2.
    let p = vec![
        movr(R2, FP),
        add(R2, -8),
        ldx(MemSize::W, R3, R1, 24),
        mov(R4, 0),
        jif(JumpCond::Eq, R3, Operand::Imm(0), 2),
        stx(MemSize::DW, R2, 0, R4),
        I::Jump { offset: 1, long: false },
        stx(MemSize::W, R2, 0, R4),
        ldx(MemSize::DW, R3, R2, 0),
    ];
    assert_eq!(rejected_at(then_return_zero(p.clone())), (8, Property::Uninitialized));
    let mut four = p;
    four[8] = ldx(MemSize::W, R3, R2, 0);
    verify(then_return_zero(four)).expect("4 bytes are written on both paths");
}

#[test]
fn every_use_of_an_undefined_value_is_rejected() {
    let uninit = Property::Uninitialized;
    // ALU operand (after a copy).
    assert_eq!(rejected_at(then_return_zero(vec![movr(R2, R3), mov(R0, 1), alu(AluOp::Add, R0, R2)])), (2, uninit));
    // A reload of an overwritten cell is undefined: the stale 42 is gone.
    let reload = vec![st(MemSize::DW, FP, -8, 42), stx(MemSize::DW, FP, -8, R6), ldx(MemSize::DW, R2, FP, -8)];
    let mut p = reload.clone();
    p.push(add(R2, 1));
    assert_eq!(rejected_at(then_return_zero(p)), (3, uninit));
    // A partial overwrite makes the whole 8-byte reload undefined.
    let p = vec![st(MemSize::DW, FP, -8, 42), stx(MemSize::B, FP, -5, R6), ldx(MemSize::DW, R2, FP, -8), add(R2, 1)];
    assert_eq!(rejected_at(then_return_zero(p)), (3, uninit));
    // Address.
    assert_eq!(rejected_at(then_return_zero(vec![movr(R2, R3), ldx(MemSize::B, R0, R2, 0)])), (1, uninit));
    // Comparison.
    let p = vec![ldx(MemSize::DW, R2, FP, -8), jif(JumpCond::Eq, R2, Operand::Imm(0), 0)];
    assert_eq!(rejected_at(then_return_zero(p)), (1, uninit));
    // Helper argument (bpf_map_lookup_elem's key pointer).
    let mut p = vec![ldx(MemSize::DW, R2, FP, -8)];
    p.extend(map_fd(R1, 0));
    p.push(I::CallHelper { id: 1 });
    assert_eq!(rejected_at(then_return_zero(p)), (3, uninit));
    // Helper memory argument with an undefined byte in it (the stack bytes stay uninitialised).
    let mut p = vec![st(MemSize::W, FP, -4, 0), stx(MemSize::B, FP, -3, R6), movr(R2, FP), add(R2, -4)];
    p.extend(map_fd(R1, 0));
    p.push(I::CallHelper { id: 1 });
    assert_eq!(rejected_at(then_return_zero(p)).1, uninit);
    // Atomic operand and atomic on undefined stack bytes.
    let atomic = |src| I::Atomic { size: MemSize::DW, op: AtomicOp::Add, fetch: false, dst: FP, src, offset: -8 };
    let p = vec![st(MemSize::DW, FP, -8, 0), movr(R2, R7), atomic(R2)];
    assert_eq!(rejected_at(then_return_zero(p)), (2, uninit));
    let p = vec![stx(MemSize::DW, FP, -8, R7), mov(R2, 1), atomic(R2)];
    assert_eq!(rejected_at(then_return_zero(p)), (2, uninit));
    // Sign-extending move, byte swap, the program's r0.
    let movsx = I::Alu { width: Width::W64, op: AluOp::MovSx(8), dst: R0, src: Operand::Reg(R3) };
    assert_eq!(rejected_at(then_return_zero(vec![movsx])), (0, uninit));
    assert_eq!(rejected_at(vec![ldx(MemSize::W, R0, FP, -4), I::Exit]), (1, uninit));
}

#[test]
fn undefined_values_never_reach_memory_outside_the_stack() {
    // Into a map value.
    let p = lookup(vec![jif(JumpCond::Eq, R0, Operand::Imm(0), 1), stx(MemSize::DW, R0, 0, R7)]);
    assert_eq!(rejected(p).property, Property::Uninitialized);
    // Into the context (a writable field would still be outside the stack), and into the packet.
    assert_eq!(rejected(then_return_zero(vec![stx(MemSize::W, R1, 24, R7)])).property, Property::Uninitialized);
    let r = rejected(packet_program(8, vec![stx(MemSize::DW, R2, 0, R7)]));
    assert_eq!(r.property, Property::Uninitialized);
    // A value that is undefined on one path only is still undefined.
    let p = vec![
        ldx(MemSize::W, R3, R1, 24),
        jif(JumpCond::Eq, R3, Operand::Imm(0), 1),
        mov(R7, 1),
        movr(R2, R7),
        alu(AluOp::Add, R3, R2),
    ];
    assert_eq!(rejected_at(then_return_zero(p)), (4, Property::Uninitialized));
}

#[test]
fn an_undefined_value_does_not_hide_a_spilled_pointer_or_an_out_of_frame_store() {
    // The store of an undefined register still needs an address inside the frame.
    let r = rejected(then_return_zero(vec![stx(MemSize::DW, FP, 0, R7)]));
    assert_eq!(r.property, Property::OutOfBounds);
    // Overwriting half of a spilled pointer with undefined bytes leaves the rest unreadable as a number.
    let p = vec![stx(MemSize::DW, FP, -8, R1), stx(MemSize::W, FP, -8, R7), ldx(MemSize::W, R2, FP, -4), add(R2, 1)];
    assert_eq!(rejected_at(then_return_zero(p)), (3, Property::Uninitialized));
}
