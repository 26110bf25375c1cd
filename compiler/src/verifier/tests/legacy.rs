//! Legacy packet loads `LD_ABS`/`LD_IND` (RFC 9669 §5.5, docs/verifier.md §2): accepted with r6 the context of a
//! program type with packet data, in the entry function, with a number as the `LD_IND` offset; the result is a
//! number of the load's width and r1–r5 become undefined.

use super::*;

const R7: Reg = Reg::R7;

fn verify_as(instructions: Vec<I>, program_type: &str) -> Result<Verified<'static>, Rejection> {
    let m: &'static Module = Box::leak(Box::new(module(instructions)));
    let t = WINDOWS.program_type_by_name(program_type).unwrap();
    verify_program(m, 0, &WINDOWS, t, &VerifierOptions::default())
}

#[test]
fn legacy_loads_through_the_context_in_r6_are_accepted_and_give_a_number_of_their_width() {
    // r0 = ldabsh 12; the result is below 2^16, so `r0 <= 65535` is always true and the exit path has r0 = 1.
    let program = vec![
        movr(R6, R1),
        mov(R7, 3),
        ld_abs(MemSize::H, 12),
        ld_ind(MemSize::B, R7, -1),
        ld_ind(MemSize::W, R7, 2_000_000_000),
        ld_abs(MemSize::H, 12),
        jif(JumpCond::Gt, R0, Operand::Imm(0xffff), 1),
        mov(R0, 1),
        I::Exit,
    ];
    let v = verify_as(program, "xdp").expect("r6 is the XDP context");
    // The load's packet comes from the program type's context layout (Windows xdp_md_t: data 0, data_end 8).
    let fields = v.packet_fields().expect("xdp has packet fields");
    assert_eq!((fields.data, fields.data_end, fields.width), (0, 8, MemSize::DW));
    // The branch past 65535 was never taken: the 2-byte result is bounded.
    assert_eq!(v.branch_decision(6), BranchDecision::NeverTaken);
}

#[test]
fn a_legacy_load_leaves_r1_to_r5_undefined() {
    let r = verify_as(
        vec![
            movr(R6, R1),
            mov(R2, 1),
            ld_abs(MemSize::B, 0),
            I::Alu { width: Width::W64, op: AluOp::Add, dst: R0, src: Operand::Reg(R2) },
            I::Exit,
        ],
        "xdp",
    )
    .expect_err("r2 is undefined after the load");
    assert_eq!((r.pc, r.property), (3, Property::Uninitialized));
    // r6 keeps the context, so a second load needs no re-copy.
    verify_as(vec![movr(R6, R1), ld_abs(MemSize::B, 0), ld_abs(MemSize::B, 1), I::Exit], "xdp").expect("r6 kept");
}

#[test]
fn a_legacy_load_needs_r6_to_be_the_context_at_offset_zero() {
    for (setup, what) in [
        (vec![], "r6 undefined"),
        (vec![mov(R6, 0)], "a number"),
        (vec![movr(R6, R1), add(R6, 8)], "the context at offset 8"),
        (vec![movr(R6, FP)], "the stack"),
        (vec![ldx(MemSize::DW, R6, R1, 0)], "a packet pointer"),
    ] {
        let mut program = setup;
        program.extend([ld_abs(MemSize::B, 0), I::Exit]);
        let r = verify_as(program.clone(), "xdp").expect_err(what);
        assert!(
            matches!(r.property, Property::TypeMismatch | Property::Uninitialized) && r.message.contains("r6"),
            "{what}: {r}"
        );
    }
}

#[test]
fn a_legacy_load_in_a_program_type_without_packet_is_rejected() {
    let r = verify_as(vec![movr(R6, R1), ld_abs(MemSize::W, 0), I::Exit], "sock_addr").expect_err("no packet");
    assert_eq!(r.property, Property::InvalidInstruction);
    assert!(r.message.contains("sock_addr") && r.message.contains("data_end"), "{r}");
}

#[test]
fn a_legacy_load_offset_register_must_be_a_defined_number() {
    let r = verify_as(vec![movr(R6, R1), movr(R7, FP), ld_ind(MemSize::B, R7, 0), I::Exit], "xdp")
        .expect_err("a pointer offset");
    assert_eq!(r.property, Property::PointerLeak);
    let r = verify_as(vec![movr(R6, R1), ld_ind(MemSize::B, R7, 0), I::Exit], "xdp").expect_err("r7 undefined");
    assert_eq!(r.property, Property::Uninitialized);
}

#[test]
fn a_legacy_load_inside_a_local_function_is_rejected() {
    // The callee gets the context as r1 and copies it to r6: still rejected, its failure path would return to
    // the caller instead of ending the program.
    let program = vec![I::CallLocal { offset: 1 }, I::Exit, movr(R6, R1), ld_abs(MemSize::B, 0), I::Exit];
    let r = verify_as(program, "xdp").expect_err("legacy load in a subprogram");
    assert_eq!((r.pc, r.property), (3, Property::InvalidInstruction));
    assert!(r.message.contains("local function"), "{r}");
}
