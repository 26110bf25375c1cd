//! Zero-extensions (`r <<= 32; r >>= 32`, `w = w`) the verifier proved leave their register unchanged are left out
//! of the shipped code (`lower::plan::FunctionPlan::is_omitted`, issue 16), the ones it did not prove stay, and the
//! code computes what the interpreter computes on both sides of the difference, x64 and ARM64. The fuzzer
//! (`verifier_fuzz`) checks the fact itself: no recorded zero-extension ever sees a value of 2^32 or more.

use std::ffi::c_void;

use bpf2sys::compiled::Target;
use bpf2sys::interp::{Access, Interpreter, Memory};
use bpf2sys::isa::{AluOp, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::lower::MapDataLayout;
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::verifier::{verify_program, VerifierOptions};
use bpf2sys_tests::arm64::Arm64Program;
use bpf2sys_tests::native::{module_from_instructions, HostRuntime, NativeProgram};
use bpf2sys_tests::support::{lowered, NoHelpers};

fn alu(width: Width, op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width, op, dst, src }
}

fn shift(op: AluOp, dst: Reg, by: i32) -> I {
    alu(Width::W64, op, dst, Operand::Imm(by))
}

/// XDP: two zero-extensions of the 32-bit ingress ifindex (redundant: slots 1 and 7) and two of values that can
/// reach 2^32 (needed: slot 5, a sum of two ifindexes; slot 12, 2^40 on the path where the ifindex is at most 100).
fn zero_extensions() -> Vec<I> {
    let (r0, r1, r2, r3, r4) = (Reg::R0, Reg::R1, Reg::R2, Reg::R3, Reg::R4);
    vec![
        I::Load { size: MemSize::W, sign_extend: false, dst: r2, src: r1, offset: 24 }, // 0: r2 = ingress_ifindex
        shift(AluOp::Lsh, r2, 32),                                                      // 1: redundant
        shift(AluOp::Rsh, r2, 32),                                                      // 2
        alu(Width::W64, AluOp::Mov, r3, Operand::Reg(r2)),                              // 3
        alu(Width::W64, AluOp::Add, r3, Operand::Reg(r2)),                              // 4: r3 < 2^33
        shift(AluOp::Lsh, r3, 32),                                                      // 5: needed
        shift(AluOp::Rsh, r3, 32),                                                      // 6
        alu(Width::W32, AluOp::Mov, r2, Operand::Reg(r2)),                              // 7: redundant
        alu(Width::W64, AluOp::Mov, r4, Operand::Reg(r2)),                              // 8
        I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst: r2, src: Operand::Imm(100), offset: 2 }, // 9
        alu(Width::W64, AluOp::Mov, r4, Operand::Imm(1)),                               // 10
        shift(AluOp::Lsh, r4, 40),                                                      // 11
        alu(Width::W32, AluOp::Mov, r4, Operand::Reg(r4)),                              // 12: needed (join)
        alu(Width::W64, AluOp::Mov, r0, Operand::Reg(r3)),                              // 13
        alu(Width::W64, AluOp::Mul, r0, Operand::Imm(31)),                              // 14
        alu(Width::W64, AluOp::Add, r0, Operand::Reg(r4)),                              // 15
        I::Exit,                                                                        // 16
    ]
}

/// An XDP context (data, data_end, data_meta, ingress ifindex) over an empty packet.
fn context(ifindex: u32) -> [u64; 4] {
    [0, 0, 0, u64::from(ifindex)]
}

fn interpret(program: &[I], ifindex: u32) -> u64 {
    let mut memory = Memory::new();
    let ctx: Vec<u8> = context(ifindex).iter().flat_map(|w| w.to_le_bytes()).collect();
    let ctx = memory.add_region("context", ctx, Access::ReadOnly).base();
    Interpreter::new(program).run(&[ctx], &mut memory, &mut NoHelpers).unwrap_or_else(|e| panic!("{e}"))
}

const IFINDEXES: [u32; 7] = [0, 1, 5, 100, 101, 0x8000_0000, u32::MAX];

#[test]
fn proven_zero_extensions_are_left_out_and_the_code_matches_the_interpreter_on_both_targets() {
    let program = zero_extensions();
    let module = module_from_instructions("zext", program.clone());
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    let verified =
        verify_program(&module, 0, &WINDOWS, xdp, &VerifierOptions::default()).unwrap_or_else(|r| panic!("{r}"));
    let redundant: Vec<usize> = (0..program.len()).filter(|&pc| verified.is_redundant_zero_extension(pc)).collect();
    assert_eq!(redundant, vec![1, 7]);
    for target in [Target::X64, Target::Arm64] {
        let lowered = lowered(&verified, target);
        // Left out: slots 1-2 and 7. Kept: the right shift of slot 6 and the 32-bit move (`ireduce`) of slot 12
        // (each would appear twice if they were not left out).
        let clif = &lowered.clif[0];
        let count = |op: &str| clif.lines().filter(|l| l.contains(&format!("= {op} "))).count();
        assert_eq!((count("ushr"), count("ireduce.i32")), (1, 1), "{target:?}\n{clif}");
        let runtime = || HostRuntime::new(&[], &|_| None, &[], MapDataLayout::default(), Vec::new());
        for ifindex in IFINDEXES {
            let expected = interpret(&program, ifindex);
            let mut ctx = context(ifindex);
            let ctx = ctx.as_mut_ptr() as *mut c_void;
            let r0 = match target {
                // SAFETY: the program is verified for the XDP context, which `ctx` is; it reads only the ifindex.
                Target::X64 => unsafe { NativeProgram::load(&lowered.program, runtime()).unwrap().run(ctx) },
                Target::Arm64 => Arm64Program::load(&lowered.program, runtime()).unwrap().run(ctx).unwrap(),
            };
            assert_eq!(r0, expected, "{target:?}, ifindex {ifindex:#x}");
        }
    }
    // Where the ifindex is at most 100 the kept move of slot 12 is what clears 2^40.
    assert_eq!(interpret(&program, 5), 10 * 31);
}
