//! Conditional jumps whose direction the verifier proved are lowered without their comparison
//! (`lower::plan::JumpLowering::Goto`), and the shipped code still computes what the interpreter computes, x64 and
//! ARM64. The fuzzer (`verifier_fuzz`) checks the fact itself: every direction an accepted program takes in the
//! interpreter is one the verifier recorded.

use std::ffi::c_void;

use bpf2sys::compiled::Target;
use bpf2sys::interp::{Access, Interpreter, Memory};
use bpf2sys::isa::{AluOp, Instruction as I, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::lower::MapDataLayout;
use bpf2sys::platform::windows::WINDOWS;
use bpf2sys::program::Module;
use bpf2sys::verifier::{verify_program, BranchDecision, Verified, VerifierOptions};
use bpf2sys_tests::arm64::Arm64Program;
use bpf2sys_tests::native::{module_from_instructions, HostRuntime, NativeProgram};
use bpf2sys_tests::support::{lowered, NoHelpers};

fn alu(op: AluOp, dst: Reg, src: Operand) -> I {
    I::Alu { width: Width::W64, op, dst, src }
}

fn load(size: MemSize, dst: Reg, src: Reg, offset: i16) -> I {
    I::Load { size, sign_extend: false, dst, src, offset }
}

fn jgt(dst: Reg, src: Reg, offset: i16) -> I {
    I::JumpIf { width: Width::W64, cond: JumpCond::Gt, dst, src: Operand::Reg(src), offset }
}

/// XDP: the packet must hold 8 bytes (checked), then 4 bytes (checked again: proven, never taken); returns the
/// first 32-bit word, or 0 for a short packet. A second jump compares a value the verifier knows (`r6 = 7`,
/// `if r6 > r7` with `r7 = 100`: never taken) and a third a loaded byte (unknown: kept).
fn redundant_checks() -> Vec<I> {
    vec![
        load(MemSize::DW, Reg::R2, Reg::R1, 0),          // 0: r2 = data
        load(MemSize::DW, Reg::R3, Reg::R1, 8),          // 1: r3 = data_end
        alu(AluOp::Mov, Reg::R4, Operand::Reg(Reg::R2)), // 2
        alu(AluOp::Add, Reg::R4, Operand::Imm(8)),       // 3
        jgt(Reg::R4, Reg::R3, 12),                       // 4: if data + 8 > data_end goto 17
        alu(AluOp::Mov, Reg::R5, Operand::Reg(Reg::R2)), // 5
        alu(AluOp::Add, Reg::R5, Operand::Imm(4)),       // 6
        jgt(Reg::R5, Reg::R3, 9),                        // 7: if data + 4 > data_end goto 17 (proven: never)
        alu(AluOp::Mov, Reg::R6, Operand::Imm(7)),       // 8
        alu(AluOp::Mov, Reg::R7, Operand::Imm(100)),     // 9
        jgt(Reg::R6, Reg::R7, 6),                        // 10: if 7 > 100 goto 17 (proven: never)
        load(MemSize::W, Reg::R0, Reg::R2, 0),           // 11
        load(MemSize::B, Reg::R8, Reg::R2, 4),           // 12
        I::JumpIf { width: Width::W64, cond: JumpCond::Eq, dst: Reg::R8, src: Operand::Imm(0), offset: 1 }, // 13
        alu(AluOp::Add, Reg::R0, Operand::Imm(1)),       // 14: r0 += 1 when byte 4 is not zero
        I::Exit,                                         // 15
        I::Exit,                                         // 16 (unreached)
        alu(AluOp::Mov, Reg::R0, Operand::Imm(0)),       // 17
        I::Exit,                                         // 18
    ]
}

fn verify(module: &Module) -> Verified<'_> {
    let xdp = WINDOWS.program_type_by_name("xdp").expect("xdp");
    verify_program(module, 0, &WINDOWS, xdp, &VerifierOptions::default()).unwrap_or_else(|r| panic!("{r}"))
}

/// r0 of the reference interpreter for an XDP context over `packet`.
fn interpret(program: &[I], packet: &[u8]) -> u64 {
    let mut memory = Memory::new();
    let data = memory.add_region("packet", packet.to_vec(), Access::ReadWrite).base();
    let mut ctx = Vec::new();
    for word in [data, data + packet.len() as u64, data, 0] {
        ctx.extend_from_slice(&word.to_le_bytes());
    }
    let ctx = memory.add_region("context", ctx, Access::ReadOnly).base();
    Interpreter::new(program).run(&[ctx], &mut memory, &mut NoHelpers).unwrap_or_else(|e| panic!("{e}"))
}

/// An XDP context (data, data_end, data_meta, ingress ifindex) over `packet`.
fn context(packet: &mut [u8]) -> [u64; 4] {
    let data = packet.as_mut_ptr() as u64;
    [data, data + packet.len() as u64, data, 0]
}

fn packets() -> Vec<Vec<u8>> {
    let mut packets: Vec<Vec<u8>> = (0..12).map(|len| (1..=len as u8).collect()).collect();
    packets.push(vec![0x11, 0x22, 0x33, 0x44, 0, 9, 9, 9]);
    packets
}

#[test]
fn the_verifier_records_the_directions_it_proved_and_keeps_the_unproven_ones() {
    let module = module_from_instructions("checks", redundant_checks());
    let verified = verify(&module);
    assert_eq!(verified.branch_decision(4), BranchDecision::Compare);
    assert_eq!(verified.branch_decision(7), BranchDecision::NeverTaken);
    assert_eq!(verified.branch_decision(10), BranchDecision::NeverTaken);
    assert_eq!(verified.branch_decision(13), BranchDecision::Compare);
    // The test harnesses' unverified path proves nothing.
    let unchecked = Verified::unchecked_for_testing(&module, 0).unwrap();
    assert!((0..19).all(|slot| unchecked.branch_decision(slot) == BranchDecision::Compare));
}

#[test]
fn proven_jumps_lose_their_comparison_and_the_code_matches_the_interpreter_on_x64() {
    let module = module_from_instructions("checks", redundant_checks());
    let verified = verify(&module);
    let lowered = lowered(&verified, Target::X64);
    // Two comparisons remain (slots 4 and 13), each an `icmp` in the IR.
    let compares = lowered.clif[0].lines().filter(|l| l.contains("icmp")).count();
    assert_eq!(compares, 2, "{}", lowered.clif[0]);
    let runtime = HostRuntime::new(&[], &|_| None, &[], MapDataLayout::default(), Vec::new());
    let program = NativeProgram::load(&lowered.program, runtime).unwrap();
    for mut packet in packets() {
        let expected = interpret(&module.programs[0].instructions, &packet);
        let mut ctx = context(&mut packet);
        // SAFETY: the program is verified for the XDP context, which `ctx` is, over `packet`.
        let r0 = unsafe { program.run(ctx.as_mut_ptr() as *mut c_void) };
        assert_eq!(r0, expected, "packet {packet:?}");
    }
}

#[test]
fn proven_jumps_lose_their_comparison_and_the_code_matches_the_interpreter_on_arm64() {
    let module = module_from_instructions("checks", redundant_checks());
    let verified = verify(&module);
    let lowered = lowered(&verified, Target::Arm64);
    let runtime = HostRuntime::new(&[], &|_| None, &[], MapDataLayout::default(), Vec::new());
    let mut program = Arm64Program::load(&lowered.program, runtime).unwrap();
    for mut packet in packets() {
        let expected = interpret(&module.programs[0].instructions, &packet);
        let mut ctx = context(&mut packet);
        let r0 = program.run(ctx.as_mut_ptr() as *mut c_void).unwrap();
        assert_eq!(r0, expected, "packet {packet:?}");
    }
}
