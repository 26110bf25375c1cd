//! The translation of single instructions and function shapes, checked on the Cranelift IR it produces.

use super::*;
use crate::isa::{AluOp, Instruction as I, JumpCond, Operand, Reg, Width};
use crate::lower::build_isa;
use crate::program::{functions_from_calls, Program};

fn mov(dst: Reg, imm: i32) -> I {
    I::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(imm) }
}

/// The IR text of every function of `instructions` as one program (facts derived from the text).
fn ir(instructions: Vec<I>) -> Vec<String> {
    translated(instructions).iter().map(|f| f.display().to_string()).collect()
}

/// The IR of every function of `instructions` as one program (facts derived from the text).
fn translated(instructions: Vec<I>) -> Vec<Function> {
    let module = Module {
        name: "t".into(),
        programs: vec![Program {
            name: "t".into(),
            section_name: "xdp".into(),
            functions: functions_from_calls(&instructions),
            instructions,
            line_info: vec![],
        }],
        ..Module::default()
    };
    let verified = Verified::unchecked_for_testing(&module, 0).expect("well-formed");
    let isa = build_isa(crate::compiled::Target::X64).unwrap();
    let translated = translate_program(
        &verified,
        std::slice::from_ref(&verified),
        MapDataLayout::V1_3,
        isa.frontend_config(),
        crate::compiled::Target::X64,
    )
    .expect("translates");
    translated.functions.into_iter().map(|(_, f)| f).collect()
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "`{part}` missing from\n{text}");
    }
}

#[test]
fn a_32_bit_add_works_on_the_low_halves_and_zero_extends() {
    let add32 = I::Alu { width: Width::W32, op: AluOp::Add, dst: Reg::R0, src: Operand::Reg(Reg::R1) };
    let text = &ir(vec![mov(Reg::R0, 1), add32, I::Exit])[0];
    assert_contains(text, &["ireduce.i32", "iadd", "uextend.i64", "return"]);
}

#[test]
fn division_by_a_register_selects_the_rfc_results_instead_of_trapping() {
    let div = I::Alu { width: Width::W64, op: AluOp::Div, dst: Reg::R0, src: Operand::Reg(Reg::R1) };
    let text = &ir(vec![mov(Reg::R0, 7), div, I::Exit])[0];
    assert_contains(text, &["udiv", "select"]);
    let sdiv = I::Alu { width: Width::W64, op: AluOp::SDiv, dst: Reg::R0, src: Operand::Reg(Reg::R1) };
    let text = &ir(vec![mov(Reg::R0, 7), sdiv, I::Exit])[0];
    assert_contains(text, &["sdiv", "ineg", "icmp.i64 eq"]);
}

#[test]
fn a_conditional_jump_becomes_a_compare_and_brif() {
    let jgt = I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R1, src: Operand::Imm(5), offset: 2 };
    // if r1 > 5 goto +2; r0 = 1; r0 += r1 (a use keeps the path from being if-converted); exit; r0 = 2; exit
    let add = I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Reg(Reg::R1) };
    let program = vec![jgt, mov(Reg::R0, 1), I::Exit, mov(Reg::R0, 2), add, I::Exit];
    let text = &ir(program)[0];
    assert_contains(text, &["icmp.i64 ugt", "brif"]);
}

#[test]
fn a_function_that_loops_lays_its_returning_blocks_out_as_cold_code_and_a_straight_one_does_not() {
    // r0 = 0; L: r0 += 1; if r0 < 10 goto L; exit — the `exit` block follows the loop's exit test.
    let add = I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Imm(1) };
    let jlt = I::JumpIf { width: Width::W64, cond: JumpCond::Lt, dst: Reg::R0, src: Operand::Imm(10), offset: -2 };
    let text = &ir(vec![mov(Reg::R0, 0), add, jlt, I::Exit])[0];
    let cold: Vec<&str> = text.lines().filter(|l| l.contains(" cold")).collect();
    assert_eq!(cold.len(), 1, "one cold block, the one that returns:\n{text}");
    let after = text.split(cold[0]).nth(1).expect("the cold block's body");
    assert!(after.lines().take_while(|l| !l.ends_with(':')).any(|l| l.contains("return")), "{text}");
    // if r1 > 5 goto +2; r0 = 1; r0 += r1; exit; r0 = 2; exit: no loop, the returns stay where they are.
    let jgt = I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: Reg::R1, src: Operand::Imm(5), offset: 3 };
    let add = I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Reg(Reg::R1) };
    let text = &ir(vec![jgt, mov(Reg::R0, 1), add, I::Exit, mov(Reg::R0, 2), I::Exit])[0];
    assert!(!text.contains(" cold"), "{text}");
}

#[test]
fn a_helper_call_loads_its_address_from_the_runtime_context() {
    let text = &ir(vec![I::CallHelper { id: 7 }, I::Exit])[0];
    // runtime_context->helper_data (offset 24), then helper_data[0].address (offset 24), then an indirect call.
    assert_contains(text, &["load.i64 notrap aligned readonly can_move", "+24", "call_indirect"]);
}

#[test]
fn the_entry_frame_has_one_512_byte_frame_per_call_level_and_callees_get_r10_minus_512() {
    // main: call sub; exit.  sub: r0 = 0; exit.
    let functions = ir(vec![I::CallLocal { offset: 1 }, I::Exit, mov(Reg::R0, 0), I::Exit]);
    assert_eq!(functions.len(), 2);
    assert_contains(&functions[0], &["explicit_slot 1024", "iconst.i64 -512", "call fn0"]);
    assert!(!functions[1].contains("explicit_slot"), "a subprogram owns no stack:\n{}", functions[1]);
}

#[test]
fn straight_line_byte_loads_are_single_extending_loads_that_cranelift_places_at_their_uses() {
    // r4 = 0x1000193; then 32 times: r3 = *(u8 *)(r1 + i); r0 ^= r3; r0 *= r4 — an unrolled hash, as `unrolled_xdp`.
    let load = |i: i16| I::Load { size: MemSize::B, sign_extend: false, dst: Reg::R3, src: Reg::R1, offset: i };
    let xor = I::Alu { width: Width::W64, op: AluOp::Xor, dst: Reg::R0, src: Operand::Reg(Reg::R3) };
    let mul = I::Alu { width: Width::W64, op: AluOp::Mul, dst: Reg::R0, src: Operand::Reg(Reg::R4) };
    let mut program = vec![mov(Reg::R4, 0x100_0193)];
    program.extend((0..32).flat_map(|i| [load(i), xor, mul]));
    program.push(I::Exit);
    let func = translated(program).remove(0);
    let text = func.display().to_string();
    // One instruction per eBPF load, which the function's shape lets move (`FunctionPlan::movable_loads`).
    assert_eq!(text.matches("uload8.i64 notrap readonly can_move").count(), 32, "{text}");
    assert!(!text.contains("uextend"), "{text}");
    // The e-graph treats those loads as pure values (vendor/cranelift-codegen/BPF2SYS-PATCH.md) and places each at
    // its use, between the multiplications: were they effectful, all 32 would stay ahead of the arithmetic, which is
    // placed at its first effectful use (the return), and all 32 bytes would be live at once.
    let isa = build_isa(crate::compiled::Target::X64).unwrap();
    let mut ctx = cranelift_codegen::Context::for_function(func);
    ctx.optimize(&*isa, &mut cranelift_codegen::control::ControlPlane::default()).expect("optimizes");
    let optimized = ctx.func.display().to_string();
    let order: Vec<&str> = (optimized.lines())
        .filter_map(|l| ["uload8", "imul"].into_iter().find(|op| l.contains(&format!("= {op}"))))
        .collect();
    let expected: Vec<&str> = (0..32).flat_map(|_| ["uload8", "imul"]).collect();
    assert_eq!(order, expected, "{optimized}");
}
