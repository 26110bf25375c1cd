#![allow(clippy::result_large_err)] // test helpers return verify_program's result as is

use proptest::prelude::*;

use super::num::{eval_alu, eval_cond, Num};
use super::*;
use crate::isa::{
    AluOp, AtomicOp, Imm64Kind, Instruction as I, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width,
};
use crate::platform::windows::WINDOWS;
use crate::program::{MapDefinition, MapType, Pinning, Program};
use crate::verifier::state::FRAME_STRIDE;

const R0: Reg = Reg::R0;
const R1: Reg = Reg::R1;
const R2: Reg = Reg::R2;
const R3: Reg = Reg::R3;
const R4: Reg = Reg::R4;
const R6: Reg = Reg::R6;
const FP: Reg = Reg::FP;

fn mov(dst: Reg, imm: i32) -> I {
    I::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(imm) }
}
fn movr(dst: Reg, src: Reg) -> I {
    I::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Reg(src) }
}
fn add(dst: Reg, imm: i32) -> I {
    I::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(imm) }
}
fn ldx(size: MemSize, dst: Reg, src: Reg, offset: i16) -> I {
    I::Load { size, sign_extend: false, dst, src, offset }
}
fn stx(size: MemSize, dst: Reg, offset: i16, src: Reg) -> I {
    I::Store { size, dst, offset, src: Operand::Reg(src) }
}
fn st(size: MemSize, dst: Reg, offset: i16, imm: i32) -> I {
    I::Store { size, dst, offset, src: Operand::Imm(imm) }
}
fn jif(cond: JumpCond, dst: Reg, src: Operand, offset: i16) -> I {
    I::JumpIf { width: Width::W64, cond, dst, src, offset }
}
/// A map with 4-byte keys and four entries (the shape the relational tests need; name, type and value size vary).
fn map(name: &str, map_type: MapType, value_size: u32) -> MapDefinition {
    MapDefinition {
        name: name.into(),
        map_type,
        key_size: 4,
        value_size,
        max_entries: 4,
        inner_map_index: None,
        pinning: Pinning::None,
        id: 0,
        inner_id: 0,
    }
}

fn map_fd(dst: Reg, index: i32) -> [I; 2] {
    [I::LoadImm64 { dst, kind: Imm64Kind::MapIndex, imm: index, next_imm: 0 }, I::LoadImm64Continuation]
}

fn module(instructions: Vec<I>) -> Module {
    Module {
        name: "t".into(),
        programs: vec![Program {
            name: "prog".into(),
            section_name: "xdp".into(),
            functions: crate::program::functions_from_calls(&instructions),
            instructions,
            line_info: vec![],
        }],
        maps: vec![MapDefinition {
            name: "m".into(),
            map_type: MapType::HASH,
            key_size: 4,
            value_size: 8,
            max_entries: 4,
            inner_map_index: None,
            pinning: Pinning::None,
            id: 0,
            inner_id: 0,
        }],
        ..Module::default()
    }
}

fn verify_with(instructions: Vec<I>, options: &VerifierOptions) -> Result<VerificationReport, Rejection> {
    let m = module(instructions);
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    verify_program(&m, 0, &WINDOWS, xdp, options).map(Verified::into_report)
}

/// Verifies `instructions` as an xdp program of `platform`, with `maps` (the module's default test map when empty).
fn verify_xdp_on(
    platform: &'static crate::platform::Platform,
    maps: Vec<MapDefinition>,
    instructions: Vec<I>,
) -> Result<VerificationReport, Rejection> {
    let mut m = module(instructions);
    if !maps.is_empty() {
        m.maps = maps;
    }
    let xdp = platform.program_type_by_name("xdp").unwrap();
    verify_program(&m, 0, platform, xdp, &VerifierOptions::default()).map(Verified::into_report)
}

fn ld_abs(size: MemSize, imm: i32) -> I {
    I::LegacyPacketLoad { mode: PacketLoadMode::Abs, size, src: R0, imm }
}

fn ld_ind(size: MemSize, src: Reg, imm: i32) -> I {
    I::LegacyPacketLoad { mode: PacketLoadMode::Ind, size, src, imm }
}

/// A zeroed 12-byte tuple at fp-16, then `r0 = bpf_skc_lookup_tcp(ctx, fp-16, 12, 0, 0)` (Linux helper 99).
fn skc_lookup_tcp_call(ctx: Reg) -> Vec<I> {
    let mut p = vec![st(MemSize::DW, FP, -16, 0), st(MemSize::W, FP, -8, 0)];
    if ctx != R1 {
        p.push(movr(R1, ctx));
    }
    p.extend([movr(R2, FP), add(R2, -16), mov(R3, 12), mov(R4, 0), mov(Reg::R5, 0), I::CallHelper { id: 99 }]);
    p
}

fn verify(instructions: Vec<I>) -> Result<VerificationReport, Rejection> {
    verify_with(instructions, &VerifierOptions::default())
}

fn rejected(instructions: Vec<I>) -> Rejection {
    verify(instructions).expect_err("must be rejected")
}

/// `data` in r2, `data_end` in r3, then `r4 = data + len; if r4 > data_end goto exit` and `body`, r0 = 0.
fn packet_program(len: i32, body: Vec<I>) -> Vec<I> {
    let mut p = vec![ldx(MemSize::DW, R2, R1, 0), ldx(MemSize::DW, R3, R1, 8), movr(R4, R2), add(R4, len)];
    p.push(jif(JumpCond::Gt, R4, Operand::Reg(R3), body.len() as i16));
    p.extend(body);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn packet_read_after_data_end_check_is_accepted() {
    verify(packet_program(14, vec![ldx(MemSize::H, R0, R2, 12)])).expect("in bounds");
}

#[test]
fn packet_read_past_the_checked_length_is_rejected() {
    let r = rejected(packet_program(14, vec![ldx(MemSize::W, R0, R2, 12)]));
    assert_eq!((r.pc, r.property), (5, Property::OutOfBounds));
}

#[test]
fn packet_read_without_check_is_rejected() {
    let r = rejected(vec![ldx(MemSize::DW, R2, R1, 0), ldx(MemSize::B, R0, R2, 0), I::Exit]);
    assert_eq!(r.property, Property::OutOfBounds);
}

#[test]
fn using_an_uninitialised_register_is_rejected() {
    // The copy is allowed; the program's r0 is a use (more in `undefined.rs`).
    let r = rejected(vec![movr(R0, R3), I::Exit]);
    assert_eq!((r.pc, r.property), (1, Property::Uninitialized));
    let r = rejected(vec![I::Exit]);
    assert_eq!(r.property, Property::Uninitialized, "r0 at exit");
}

fn lookup(then: Vec<I>) -> Vec<I> {
    let mut p = vec![st(MemSize::W, FP, -4, 0), movr(R2, FP), add(R2, -4)];
    p.extend(map_fd(R1, 0));
    p.push(I::CallHelper { id: 1 });
    p.extend(then);
    p.extend([mov(R0, 0), I::Exit]);
    p
}

#[test]
fn map_value_needs_a_null_check() {
    let r = rejected(lookup(vec![ldx(MemSize::DW, R3, R0, 0)]));
    assert_eq!(r.property, Property::NullDereference);
    verify(lookup(vec![jif(JumpCond::Eq, R0, Operand::Imm(0), 1), ldx(MemSize::DW, R3, R0, 0)])).expect("checked");
    let r = rejected(lookup(vec![jif(JumpCond::Eq, R0, Operand::Imm(0), 1), ldx(MemSize::DW, R3, R0, 4)]));
    assert_eq!(r.property, Property::OutOfBounds, "value_size 8");
}

#[test]
fn storing_a_pointer_into_a_map_value_is_a_leak() {
    let r = rejected(lookup(vec![jif(JumpCond::Eq, R0, Operand::Imm(0), 1), stx(MemSize::DW, R0, 0, FP)]));
    assert_eq!(r.property, Property::PointerLeak);
}

#[test]
fn a_spilled_pointer_is_restored_but_cannot_be_read_partially() {
    verify(vec![stx(MemSize::DW, FP, -8, R1), ldx(MemSize::DW, R2, FP, -8), ldx(MemSize::W, R0, R2, 24), I::Exit])
        .expect("ctx pointer round-trips through the stack");
    let r = rejected(vec![stx(MemSize::DW, FP, -8, R1), ldx(MemSize::W, R0, FP, -8), I::Exit]);
    assert_eq!(r.property, Property::PointerLeak);
}

#[test]
fn division_by_zero_is_allowed_by_default_and_forbidden_on_request() {
    let p = vec![
        ldx(MemSize::W, R0, R1, 24),
        I::Alu { width: Width::W64, op: AluOp::Div, dst: R0, src: Operand::Reg(R0) },
        I::Exit,
    ];
    verify(p.clone()).expect("RFC 9669: x / 0 = 0");
    let strict = VerifierOptions { allow_division_by_zero: false, ..VerifierOptions::default() };
    assert_eq!(verify_with(p, &strict).unwrap_err().property, Property::DivisionByZero);
}

#[test]
fn counted_loop_gets_a_bound_and_an_infinite_loop_is_rejected() {
    // r0 = 0; loop: r0 += 1; if r0 < 10 goto loop; exit
    let report =
        verify(vec![mov(R0, 0), add(R0, 1), jif(JumpCond::Lt, R0, Operand::Imm(10), -2), I::Exit]).expect("bounded");
    assert_eq!(report.loop_bounds.len(), 1);
    assert_eq!(report.loop_bounds[0].max_iterations, 10);
    assert!(report.max_instructions_executed.unwrap() <= 40);
    let r = rejected(vec![mov(R0, 0), I::Jump { offset: -1, long: false }, I::Exit]);
    assert_eq!(r.property, Property::Termination);
    // A counter that is reset inside the loop does not bound it.
    let r = rejected(vec![mov(R0, 0), add(R0, 1), mov(R0, 0), jif(JumpCond::Lt, R0, Operand::Imm(10), -3), I::Exit]);
    assert_eq!(r.property, Property::Termination);
}

#[test]
fn recursion_and_deep_calls_are_rejected() {
    // f: call f
    let r = rejected(vec![I::CallLocal { offset: 1 }, I::Exit, I::CallLocal { offset: -1 }, mov(R0, 0), I::Exit]);
    assert_eq!(r.property, Property::Recursion);
    // A chain of 9 functions: each calls the next.
    let mut p = Vec::new();
    for _ in 0..9 {
        p.extend([I::CallLocal { offset: 2 }, mov(R0, 0), I::Exit]);
    }
    p.extend([mov(R0, 0), I::Exit]);
    assert_eq!(rejected(p).property, Property::CallDepth);
}

#[test]
fn local_calls_get_their_own_frame() {
    // caller writes its stack, passes a pointer; callee reads it through r1 and writes its own frame.
    let p = vec![
        st(MemSize::DW, FP, -8, 7),
        movr(R1, FP),
        add(R1, -8),
        I::CallLocal { offset: 1 },
        I::Exit,
        ldx(MemSize::DW, R0, R1, 0),
        stx(MemSize::DW, FP, -8, R0),
        I::Exit,
    ];
    let report = verify(p).expect("callee reads caller's stack");
    assert_eq!(report.max_call_depth, 2);
    assert_eq!(report.stack_bytes, 1024);
    // Returning a pointer to the callee's own frame is rejected.
    let r = rejected(vec![I::CallLocal { offset: 1 }, I::Exit, movr(R0, FP), I::Exit]);
    assert_eq!(r.property, Property::PointerLeak);
}

#[test]
fn the_distance_between_stack_pointers_of_two_frames_is_unknown() {
    // The abstract frames are FRAME_STRIDE apart, the native frames are not: a callee that subtracts its own frame
    // pointer from its caller's and uses the difference as a stack offset could write anywhere.
    let sub = |dst: Reg, src: Reg| I::Alu { width: Width::W64, op: AluOp::Sub, dst, src: Operand::Reg(src) };
    let addr = |dst: Reg, src: Reg| I::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Reg(src) };
    let callee = |distance: [I; 2]| {
        let mut p = vec![movr(R1, FP), add(R1, -8), I::CallLocal { offset: 1 }, I::Exit];
        p.extend([movr(R2, FP), add(R2, -8)]);
        p.extend(distance);
        p.extend([movr(R3, FP), addr(R3, R1), st(MemSize::DW, R3, -8, 0), mov(R0, 0), I::Exit]);
        p
    };
    let r = rejected(callee([sub(R1, R2), add(R1, -(FRAME_STRIDE as i32))]));
    assert_eq!(r.property, Property::OutOfBounds, "{r}");
    // The same distance inside one frame is exact: r1 - r2 = 0.
    let r = verify(callee([movr(R1, FP), sub(R1, FP)]));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn unsupported_instructions_are_rejected_by_name() {
    let r = rejected(vec![I::CallBtf { btf_id: 5, module: 0 }, mov(R0, 0), I::Exit]);
    assert!(r.message.contains("kfunc"), "{r}");
    let r = rejected(vec![I::CallHelper { id: 9999 }, I::Exit]);
    assert_eq!(r.property, Property::UnknownHelper);
}

#[test]
fn context_fields_are_read_only_unless_writable() {
    let r = rejected(vec![st(MemSize::W, R1, 24, 1), mov(R0, 0), I::Exit]);
    assert_eq!(r.property, Property::ReadOnly);
    let r = rejected(vec![ldx(MemSize::W, R0, R1, 0), I::Exit]);
    assert_eq!(r.property, Property::PointerLeak, "half of the data pointer");
    let r = rejected(vec![ldx(MemSize::W, R0, R1, 32), I::Exit]);
    assert_eq!(r.property, Property::OutOfBounds, "xdp context is 32 bytes");
}

#[test]
fn atomics_only_on_stack_and_map_values() {
    let atomic =
        |dst| I::Atomic { size: MemSize::DW, op: crate::isa::AtomicOp::Add, fetch: false, dst, src: R6, offset: 0 };
    verify(vec![mov(R6, 1), st(MemSize::DW, FP, -8, 0), movr(R2, FP), add(R2, -8), atomic(R2), mov(R0, 0), I::Exit])
        .expect("stack");
    let r = rejected(vec![mov(R6, 1), atomic(R1), mov(R0, 0), I::Exit]);
    assert_eq!(r.property, Property::TypeMismatch);
}

#[test]
fn a_jump_into_another_function_is_rejected_as_lowering_would_refuse_it() {
    // Issue 17 #3: `goto` from the entry function into the body of the function it calls verified, then `build`
    // refused it ("jump target … leaves the function").
    let p = vec![I::CallLocal { offset: 2 }, I::Jump { offset: 2, long: false }, I::Exit, mov(R0, 0), I::Exit];
    let r = rejected(p);
    assert_eq!((r.pc, r.property), (1, Property::ControlFlow));
    assert!(r.message.contains("leaves function"), "{}", r.message);
}

#[test]
fn rejection_names_the_source_line() {
    let mut m = module(vec![add(R3, 1), I::Exit]);
    m.programs[0].line_info = vec![crate::program::LineInfo {
        slot: 0,
        file: "x.c".into(),
        line: 7,
        column: 5,
        source_line: "    return y;".into(),
    }];
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    let r = verify_program(&m, 0, &WINDOWS, xdp, &VerifierOptions::default()).unwrap_err();
    assert_eq!((r.file.as_deref(), r.line), (Some("x.c"), Some(7)));
    let text = diagnostic::render(&r, false);
    assert!(text.contains("x.c:7:5") && text.contains("return y;") && text.contains("r3"), "{text}");
    assert!(diagnostic::to_json(&r).contains("\"property\":\"uninitialized\""));
}

fn num_strategy() -> impl Strategy<Value = (Num, u64)> {
    // A random interval and a member of it.
    (any::<u64>(), 0u64..=u64::MAX, any::<u64>(), prop::bool::ANY).prop_map(|(a, w, pick, small)| {
        let w = if small { w % 300 } else { w };
        let lo = a;
        let hi = a.saturating_add(w);
        let v = lo + pick % (hi - lo).saturating_add(1).max(1);
        (Num::unsigned(lo, hi).unwrap(), v.min(hi))
    })
}

const OPS: [AluOp; 16] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::SDiv,
    AluOp::Or,
    AluOp::And,
    AluOp::Lsh,
    AluOp::Rsh,
    AluOp::Neg,
    AluOp::Mod,
    AluOp::SMod,
    AluOp::Xor,
    AluOp::Mov,
    AluOp::MovSx(8),
    AluOp::Arsh,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Soundness of the numeric domain: the abstract result contains the concrete result.
    #[test]
    fn alu_over_approximates_concrete_semantics((a, x) in num_strategy(), (b, y) in num_strategy(), op in 0usize..16, w32 in any::<bool>()) {
        let width = if w32 { Width::W32 } else { Width::W64 };
        let op = OPS[op];
        let r = Num::alu(op, width, &a, &b);
        let c = eval_alu(op, width, x, y);
        prop_assert!(r.contains(c), "{op:?} {width:?}: {x} op {y} = {c} not in {r:?} (a={a:?}, b={b:?})");
    }

    /// Soundness of branch refinement: values satisfying the condition survive.
    #[test]
    fn assume_keeps_every_satisfying_value((a, x) in num_strategy(), (b, y) in num_strategy(), c in 0..JumpCond::ALL.len(), w32 in any::<bool>()) {
        let width = if w32 { Width::W32 } else { Width::W64 };
        let cond = JumpCond::ALL[c];
        if eval_cond(cond, width, x, y) {
            let r = Num::assume(cond, width, &a, &b);
            prop_assert!(r.is_some_and(|(ra, rb)| ra.contains(x) && rb.contains(y)), "{cond:?} {width:?} {x} {y} {a:?} {b:?} -> {r:?}");
        } else {
            let r = Num::assume_not(cond, width, &a, &b);
            prop_assert!(r.is_some_and(|(ra, rb)| ra.contains(x) && rb.contains(y)), "not {cond:?} {width:?} {x} {y} {a:?} {b:?} -> {r:?}");
        }
    }

    /// Signed intervals too (the strategy above is unsigned-shaped).
    #[test]
    fn signed_intervals_over_approximate(lo in any::<i64>(), w in 0i64..1000, pick in any::<u64>(), blo in -50i64..50, bw in 0i64..100, op in 0usize..16) {
        let hi = lo.saturating_add(w);
        let x = (lo as i128 + (pick % ((hi as i128 - lo as i128 + 1) as u64)) as i128) as i64;
        let a = Num::signed(lo, hi).unwrap();
        let b = Num::signed(blo, blo + bw).unwrap();
        let y = blo + (pick as i64).rem_euclid(bw + 1);
        for width in [Width::W32, Width::W64] {
            let r = Num::alu(OPS[op], width, &a, &b);
            prop_assert!(r.contains(eval_alu(OPS[op], width, x as u64, y as u64)));
        }
    }
}

mod array_lookups;
mod attacks;
mod correlations;
mod data_meta;
mod helper_returns;
mod legacy;
mod references;
mod relational;
mod undefined;

#[test]
fn zero_extensions_are_redundant_only_where_every_analysed_value_is_below_2_pow_32() {
    let shift = |op, dst| I::Alu { width: Width::W64, op, dst, src: Operand::Imm(32) };
    let mov32 = |dst| I::Alu { width: Width::W32, op: AluOp::Mov, dst, src: Operand::Reg(dst) };
    let program = vec![
        ldx(MemSize::W, R2, R1, 24), // 0: r2 = ingress_ifindex (32 bits)
        shift(AluOp::Lsh, R2),       // 1: redundant
        shift(AluOp::Rsh, R2),       // 2
        movr(R3, R2),                // 3
        I::Alu { width: Width::W64, op: AluOp::Add, dst: R3, src: Operand::Reg(R2) }, // 4: r3 < 2^33
        shift(AluOp::Lsh, R3),       // 5: needed
        shift(AluOp::Rsh, R3),       // 6
        mov32(R2),                   // 7: redundant
        movr(R4, R2),                // 8: r4 < 2^32 ...
        jif(JumpCond::Gt, R2, Operand::Imm(100), 2), // 9
        mov(R4, 1),                  // 10
        I::Alu { width: Width::W64, op: AluOp::Lsh, dst: R4, src: Operand::Imm(40) }, // 11: ... or 2^40 on this path
        mov32(R4),                   // 12: needed (the paths join here)
        mov(R0, 0),
        I::Exit,
    ];
    let m = module(program);
    let xdp = WINDOWS.program_type_by_name("xdp").unwrap();
    let v = verify_program(&m, 0, &WINDOWS, xdp, &VerifierOptions::default()).unwrap_or_else(|r| panic!("{r}"));
    let redundant: Vec<usize> = (0..16).filter(|&pc| v.is_redundant_zero_extension(pc)).collect();
    assert_eq!(redundant, vec![1, 7]);
    // The text alone proves nothing (the harnesses' unverified path).
    let unchecked = Verified::unchecked_for_testing(&m, 0).unwrap();
    assert!((0..16).all(|pc| !unchecked.is_redundant_zero_extension(pc)));
}
