//! Lowering builds on what the verifier proved (`Verified`), instead of re-deriving it with weaker rules: a `callx`
//! whose helper id the verifier computed is compiled and calls that helper; what the proof cannot give one answer
//! for is refused with a clear error.

use std::ffi::c_void;

use bpf2sys::compiled::Target;
use bpf2sys::isa::{AluOp, Instruction as I, Operand, Reg, Width};
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::program::Module;
use bpf2sys::verifier::{verify_program, CallxTarget, Property, Verified, VerifierOptions};
use bpf2sys_tests::native::{module_from_instructions, HelperFunction, HostRuntime, NativeProgram};

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
