//! Lowering builds on what the verifier proved (`Verified`), instead of re-deriving it with weaker rules: a `callx`
//! whose helper id the verifier computed is compiled and calls that helper; what the proof cannot give one answer
//! for is refused with a clear error.

use std::ffi::c_void;

use bpf2sys::compiled::Target;
use bpf2sys::interp::{Access, Interpreter, Memory};
use bpf2sys::isa::{AluOp, AtomicOp, Imm64Kind, Instruction as I, MemSize, Operand, Reg, Width};
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::program::Module;
use bpf2sys::verifier::{verify_program, CallxTarget, Property, Verified, VerifierOptions};
use bpf2sys_tests::arm64::Arm64Program;
use bpf2sys_tests::conformance::ConformanceHost;
use bpf2sys_tests::native::{module_from_instructions, HelperFunction, HostRuntime, NativeProgram};
use bpf2sys_tests::support::lowered;

fn mov(dst: Reg, imm: i32) -> I {
    I::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Imm(imm) }
}

fn add(dst: Reg, imm: i32) -> I {
    I::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(imm) }
}

fn verify(module: &Module) -> Verified<'_> {
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    verify_program(module, 0, &WINDOWS, xdp, &VerifierOptions::default()).unwrap_or_else(|r| panic!("{r}"))
}

extern "win64" fn ktime_get_boot_ns(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> u64 {
    0x1234_5678
}

#[test]
fn callx_through_an_added_constant_verifies_compiles_and_calls_the_proven_helper() {
    // r2 = 3; r2 += 4; callx r2 (helper 7, bpf_ktime_get_boot_ns); exit
    let module =
        module_from_instructions("callx", vec![mov(Reg::R2, 3), add(Reg::R2, 4), I::CallReg { reg: Reg::R2 }, I::Exit]);
    let verified = verify(&module);
    assert_eq!(verified.callx_target(2), CallxTarget::Helper(7));

    let isa = lower::build_isa(Target::X64).unwrap();
    let lowered =
        lower::lower_program(&*isa, std::slice::from_ref(&verified), 0, &LowerOptions::new(Target::X64), false)
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lowered.program.helper_ids, vec![7]);

    let helper = |id: u32| (id == 7).then_some(ktime_get_boot_ns as HelperFunction);
    let runtime = HostRuntime::new(&lowered.program.helper_ids, &helper, &[], MapDataLayout::default(), Vec::new());
    let program = NativeProgram::load(&lowered.program, runtime).unwrap();
    let mut context = [0u8; 32];
    // SAFETY: the program only calls a helper without arguments and returns its result.
    let r0 = unsafe { program.run(context.as_mut_ptr() as *mut c_void) };
    assert_eq!(r0, 0x1234_5678);
}

#[test]
fn the_unchecked_test_path_refuses_a_callx_target_it_cannot_see_in_the_text() {
    let module =
        module_from_instructions("callx", vec![mov(Reg::R2, 3), add(Reg::R2, 4), I::CallReg { reg: Reg::R2 }, I::Exit]);
    let r = Verified::unchecked_for_testing(&module, 0).expect_err("not a constant load");
    assert_eq!((r.pc, r.property), (2, Property::UnknownHelper), "{r}");
}

#[test]
fn a_callx_calling_a_different_helper_per_call_site_is_refused_by_lowering() {
    // main: r2 = 6; call sub; r2 = 7; call sub; r0 = 0; exit.  sub: callx r2; exit.
    let module = module_from_instructions(
        "callx",
        vec![
            mov(Reg::R2, 6),
            I::CallLocal { offset: 4 },
            mov(Reg::R2, 7),
            I::CallLocal { offset: 2 },
            mov(Reg::R0, 0),
            I::Exit,
            I::CallReg { reg: Reg::R2 },
            I::Exit,
        ],
    );
    let verified = verify(&module);
    assert_eq!(verified.callx_target(6), CallxTarget::PerCallingContext);
    let isa = lower::build_isa(Target::X64).unwrap();
    let e = lower::lower_program(&*isa, std::slice::from_ref(&verified), 0, &LowerOptions::new(Target::X64), false)
        .expect_err("one machine function cannot call two helpers through one constant");
    assert!(e.to_string().contains("slot 6") && e.to_string().contains("different helper"), "{e}");
}

#[test]
fn a_jump_from_one_function_into_another_is_rejected_by_the_gate() {
    // main: call sub; ja +1 (into sub's second slot); exit.  sub: r0 = 0; exit.
    let module = module_from_instructions(
        "cross",
        vec![I::CallLocal { offset: 2 }, I::Jump { offset: 2, long: false }, I::Exit, mov(Reg::R0, 0), I::Exit],
    );
    assert_eq!(module.programs[0].functions.len(), 2);
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    let r = verify_program(&module, 0, &WINDOWS, xdp, &VerifierOptions::default()).expect_err("crosses functions");
    assert_eq!((r.pc, r.property), (1, Property::ControlFlow), "{r}");
}

fn lddw(dst: Reg, v: u64) -> [I; 2] {
    [
        I::LoadImm64 { dst, kind: Imm64Kind::Imm, imm: v as u32 as i32, next_imm: (v >> 32) as u32 as i32 },
        I::LoadImm64Continuation,
    ]
}

/// Every atomic operation, 32- and 64-bit, at misaligned stack addresses reached through a copy of `r10` (so
/// only the verifier's proof, not the text, says they are on the stack); r0 folds every fetched value and the
/// final stack bytes together.
fn misaligned_stack_atomics() -> Vec<I> {
    let atomic = |size, op, fetch, src, offset| I::Atomic { size, op, fetch, dst: Reg::R2, src, offset };
    let xor_into_r0 = |r: Reg| I::Alu { width: Width::W64, op: AluOp::Xor, dst: Reg::R0, src: Operand::Reg(r) };
    let mut p = Vec::new();
    p.extend(lddw(Reg::R3, 0x1122_3344_5566_7788));
    p.extend([
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -24, src: Operand::Reg(Reg::R3) },
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -16, src: Operand::Reg(Reg::R3) },
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8, src: Operand::Reg(Reg::R3) },
        I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R2, src: Operand::Reg(Reg::FP) },
        add(Reg::R2, -21),
        mov(Reg::R0, 0),
    ]);
    p.extend(lddw(Reg::R4, 0x0101_0101_8000_0001));
    p.extend([
        atomic(MemSize::DW, AtomicOp::Add, true, Reg::R4, 0),
        xor_into_r0(Reg::R4),
        mov(Reg::R5, 0x7f0),
        atomic(MemSize::W, AtomicOp::Or, true, Reg::R5, 5),
        xor_into_r0(Reg::R5),
        mov(Reg::R6, -1),
        atomic(MemSize::DW, AtomicOp::Xor, false, Reg::R6, 3),
        mov(Reg::R6, 0x0ff0_0ff0),
        atomic(MemSize::W, AtomicOp::And, true, Reg::R6, 9),
        xor_into_r0(Reg::R6),
        mov(Reg::R7, 0x5a5a),
        atomic(MemSize::DW, AtomicOp::Xchg, true, Reg::R7, 1),
        xor_into_r0(Reg::R7),
        I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R8, src: Operand::Reg(Reg::R0) },
        // cmpxchg with a comparand that cannot match (the stack bytes are not r0 = 7), then one that does.
        mov(Reg::R0, 7),
        mov(Reg::R9, 0x3c3c),
        atomic(MemSize::DW, AtomicOp::CmpXchg, true, Reg::R9, 2),
        atomic(MemSize::DW, AtomicOp::CmpXchg, true, Reg::R9, 2),
        xor_into_r0(Reg::R8),
        atomic(MemSize::W, AtomicOp::CmpXchg, true, Reg::R9, 7),
        atomic(MemSize::W, AtomicOp::CmpXchg, true, Reg::R9, 7),
        xor_into_r0(Reg::R8),
    ]);
    for offset in [-24, -16, -8] {
        p.push(I::Load { size: MemSize::DW, sign_extend: false, dst: Reg::R3, src: Reg::FP, offset });
        p.push(xor_into_r0(Reg::R3));
        p.push(I::Alu { width: Width::W64, op: AluOp::Mul, dst: Reg::R0, src: Operand::Imm(31) });
    }
    p.push(I::Exit);
    p
}

/// r0 of `program` in the reference interpreter over a 32-byte context, asserted equal to r0 of the shipped code
/// on x64 and ARM64. For programs that touch only their own stack.
fn shipped_code_agrees_with_the_interpreter(program: &[I], verified: &Verified) -> u64 {
    let mut memory = Memory::new();
    let context = memory.add_region("context", vec![0; 32], Access::ReadWrite);
    let expected = Interpreter::new(program)
        .run(&[context.base()], &mut memory, &mut ConformanceHost)
        .unwrap_or_else(|e| panic!("interpreter: {e}"));
    for target in [Target::X64, Target::Arm64] {
        let lowered = lowered(verified, target);
        let runtime = HostRuntime::new(&[], &|_| None, &[], MapDataLayout::default(), Vec::new());
        let mut ctx = [0u8; 32];
        let ctx = ctx.as_mut_ptr() as *mut c_void;
        let r0 = match target {
            // SAFETY: the program touches only its own stack.
            Target::X64 => unsafe { NativeProgram::load(&lowered.program, runtime).unwrap().run(ctx) },
            Target::Arm64 => Arm64Program::load(&lowered.program, runtime).unwrap().run(ctx).unwrap(),
        };
        assert_eq!(r0, expected, "{target:?}");
    }
    expected
}

#[test]
fn misaligned_stack_atomics_verify_and_compute_the_interpreters_result_on_both_targets() {
    let program = misaligned_stack_atomics();
    let module = module_from_instructions("stack_atomics", program.clone());
    let verified = verify(&module);
    let atomics: Vec<usize> = (0..program.len()).filter(|&pc| matches!(program[pc], I::Atomic { .. })).collect();
    assert_eq!(atomics.len(), 9);
    assert!(atomics.iter().all(|&pc| verified.is_stack_atomic(pc)), "the verifier proved them stack-only");
    let unchecked = Verified::unchecked_for_testing(&module, 0).unwrap();
    assert!(atomics.iter().all(|&pc| !unchecked.is_stack_atomic(pc)), "the text alone (not r10) does not say so");

    shipped_code_agrees_with_the_interpreter(&program, &verified);
}

/// Undefined values copied, spilled, reloaded from never-written stack bytes and overwritten, but never used
/// (docs/verifier.md §2, "Initialisation"): r0 depends only on defined values, so the interpreter, x64 and ARM64
/// agree, and lowering reads the never-written registers and slots without any undefined SSA value.
#[test]
fn undefined_values_that_are_never_used_verify_and_lower_on_both_targets() {
    let movr = |dst, src| I::Alu { width: Width::W64, op: AluOp::Mov, dst, src: Operand::Reg(src) };
    let stx = |size, offset, src| I::Store { size, dst: Reg::FP, offset, src: Operand::Reg(src) };
    let ldx = |size, dst, offset| I::Load { size, sign_extend: false, dst, src: Reg::FP, offset };
    let program = vec![
        movr(Reg::R5, Reg::R5),
        I::Alu { width: Width::W32, op: AluOp::Mov, dst: Reg::R4, src: Operand::Reg(Reg::R3) },
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -8, src: Operand::Imm(42) },
        stx(MemSize::DW, -8, Reg::R6),
        ldx(MemSize::DW, Reg::R7, -8),
        stx(MemSize::W, -16, Reg::R4),
        ldx(MemSize::DW, Reg::R8, -16),
        ldx(MemSize::DW, Reg::R9, -40),
        stx(MemSize::DW, -24, Reg::R9),
        I::Store { size: MemSize::DW, dst: Reg::FP, offset: -32, src: Operand::Imm(7) },
        ldx(MemSize::DW, Reg::R0, -32),
        add(Reg::R0, 1),
        I::Exit,
    ];
    let module = module_from_instructions("undefined_copies", program.clone());
    let verified = verify(&module);
    assert_eq!(shipped_code_agrees_with_the_interpreter(&program, &verified), 8);
}
