use super::*;
use crate::isa::asm::assemble;

/// A host with the conformance suite's helper 5 ("return r1"), a helper that writes 8 bytes through a pointer,
/// and one map whose value is mapped lazily.
#[derive(Default)]
struct TestHost {
    map_value: Option<RegionId>,
    calls: Vec<i32>,
}

impl Host for TestHost {
    fn call_helper(&mut self, id: i32, args: HelperArgs, memory: &mut Memory) -> Result<HelperOutcome, HostError> {
        self.calls.push(id);
        match id {
            5 => {
                let r1 = args.arg(1)?;
                Ok(if r1 == 0 { HelperOutcome::Exit(0) } else { HelperOutcome::Return(r1) })
            }
            // write_u64(ptr, value)
            6 => {
                memory.write_uint(args.arg(1)?, MemSize::DW, args.arg(2)?)?;
                Ok(HelperOutcome::Return(0))
            }
            // lookup(): pointer to a fresh 8-byte map value.
            7 => {
                let id = *self
                    .map_value
                    .get_or_insert_with(|| memory.add_region("map value", vec![0; 8], Access::ReadWrite));
                Ok(HelperOutcome::Return(id.base()))
            }
            _ => Err(HostError::UnknownHelper { id }),
        }
    }

    fn resolve_load_imm64(
        &mut self,
        kind: Imm64Kind,
        imm: i32,
        next_imm: i32,
        memory: &mut Memory,
    ) -> Result<u64, HostError> {
        match (kind, imm) {
            (Imm64Kind::MapIndex, 0) => Ok(0xfeed),
            (Imm64Kind::MapIndexValue, 0) => {
                let id = *self
                    .map_value
                    .get_or_insert_with(|| memory.add_region("map value", vec![0; 8], Access::ReadWrite));
                Ok(id.base() + next_imm as u64)
            }
            _ => Err(HostError::UnresolvedLoad { kind: kind.name(), imm, next_imm, reason: "no such map".into() }),
        }
    }
}

fn run_with(text: &str, args: &[u64], memory: &mut Memory) -> Result<u64, InterpError> {
    let program = assemble(text).unwrap_or_else(|e| panic!("{e}"));
    Interpreter::new(&program).run(args, memory, &mut TestHost::default())
}

fn run(text: &str) -> Result<u64, InterpError> {
    run_with(text, &[], &mut Memory::new())
}

fn r0(text: &str) -> u64 {
    run(text).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn err(text: &str) -> InterpErrorKind {
    run(text).expect_err(text).kind
}

#[test]
fn division_by_zero_gives_zero() {
    assert_eq!(r0("mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nexit"), 0);
    assert_eq!(r0("mov %r0, 7\ndiv32 %r0, 0\nexit"), 0);
    assert_eq!(r0("mov %r0, -7\nsdiv %r0, 0\nexit"), 0);
    assert_eq!(r0("mov %r0, -7\nsdiv32 %r0, 0\nexit"), 0);
}

#[test]
fn modulo_by_zero_leaves_dst_and_32_bit_forms_zero_extend_it() {
    assert_eq!(r0("mov %r0, -7\nmod %r0, 0\nexit"), -7i64 as u64);
    assert_eq!(r0("mov %r0, -7\nmov %r1, 0\nmod32 %r0, %r1\nexit"), 0xffff_fff9);
    assert_eq!(r0("mov %r0, -7\nsmod %r0, 0\nexit"), -7i64 as u64);
    assert_eq!(r0("lddw %r0, 0x1234567880000000\nsmod32 %r0, 0\nexit"), 0x8000_0000);
}

#[test]
fn signed_overflow_of_division_is_defined() {
    assert_eq!(r0("lddw %r0, 0x8000000000000000\nsdiv %r0, -1\nexit"), 0x8000_0000_0000_0000);
    assert_eq!(r0("lddw %r0, 0x8000000000000000\nsmod %r0, -1\nexit"), 0);
    assert_eq!(r0("mov32 %r0, 0x80000000\nsdiv32 %r0, -1\nexit"), 0x8000_0000);
    assert_eq!(r0("mov32 %r0, 0x80000000\nsmod32 %r0, -1\nexit"), 0);
    // The remainder takes the dividend's sign (truncating division).
    assert_eq!(r0("mov %r0, -7\nsmod %r0, 2\nexit"), -1i64 as u64);
    assert_eq!(r0("mov %r0, 7\nsdiv %r0, -2\nexit"), -3i64 as u64);
}

#[test]
fn shift_counts_are_masked_to_the_operand_width() {
    assert_eq!(r0("mov %r0, 1\nlsh32 %r0, 60\nexit"), 1 << (60 & 31));
    assert_eq!(r0("mov %r0, 1\nlsh %r0, 65\nexit"), 2);
    assert_eq!(r0("mov %r0, 1\nlsh32 %r0, -1\nexit"), 1 << 31);
    assert_eq!(r0("mov %r0, -1\nrsh32 %r0, 36\nexit"), 0x0fff_ffff);
    assert_eq!(r0("mov32 %r0, 0x80000000\narsh32 %r0, 33\nexit"), 0xc000_0000);
    assert_eq!(r0("lddw %r0, 0x8000000000000000\narsh %r0, 127\nexit"), u64::MAX);
}

#[test]
fn alu32_results_are_zero_extended() {
    assert_eq!(r0("mov %r0, -1\nadd32 %r0, 1\nexit"), 0);
    assert_eq!(r0("mov %r0, -1\nmov32 %r0, %r0\nexit"), 0xffff_ffff);
    assert_eq!(r0("mov32 %r0, 0x80000000\nneg32 %r0\nexit"), 0x8000_0000);
    assert_eq!(r0("mov %r0, 1\nneg %r0\nexit"), u64::MAX);
    assert_eq!(r0("mov32 %r0, 0x80000000\nmul32 %r0, -1\nexit"), 0x8000_0000);
    // A 64-bit immediate operand is the sign-extended 32-bit value.
    assert_eq!(r0("mov %r0, 0\nor %r0, 0x80000000\nexit"), 0xffff_ffff_8000_0000);
}

#[test]
fn sign_extending_moves_and_loads() {
    assert_eq!(r0("mov %r1, 0x80\nmovsx864 %r0, %r1\nexit"), 0xffff_ffff_ffff_ff80);
    assert_eq!(r0("mov %r1, 0x80\nmovsx832 %r0, %r1\nexit"), 0xffff_ff80);
    assert_eq!(r0("mov %r1, 0x8000\nmovsx1632 %r0, %r1\nexit"), 0xffff_8000);
    assert_eq!(r0("mov32 %r1, 0x80000000\nmovsx3264 %r0, %r1\nexit"), 0xffff_ffff_8000_0000);
    let mut memory = Memory::new();
    let buf = memory.add_region("buffer", vec![0x80, 0xff, 0x7f, 0x80], Access::ReadOnly);
    let text = "ldxsb %r0, [%r1]\nldxsh %r2, [%r1+2]\nldxsw %r3, [%r1]\nldxb %r4, [%r1]\nexit";
    let program = assemble(text).unwrap();
    let r0 = Interpreter::new(&program).run(&[buf.base()], &mut memory, &mut TestHost::default()).unwrap();
    assert_eq!(r0, 0xffff_ffff_ffff_ff80);
    assert_eq!(run_with("ldxsh %r0, [%r1+2]\nexit", &[buf.base()], &mut memory).unwrap(), 0xffff_ffff_ffff_807f);
    assert_eq!(run_with("ldxsw %r0, [%r1]\nexit", &[buf.base()], &mut memory).unwrap(), 0xffff_ffff_807f_ff80);
    assert_eq!(run_with("ldxw %r0, [%r1]\nexit", &[buf.base()], &mut memory).unwrap(), 0x807f_ff80);
}

#[test]
fn byte_swaps_truncate_or_swap_and_zero_extend() {
    let v = "lddw %r0, 0x0123456789abcdef\n";
    assert_eq!(r0(&format!("{v}le16 %r0\nexit")), 0xcdef);
    assert_eq!(r0(&format!("{v}le32 %r0\nexit")), 0x89ab_cdef);
    assert_eq!(r0(&format!("{v}le64 %r0\nexit")), 0x0123_4567_89ab_cdef);
    assert_eq!(r0(&format!("{v}be16 %r0\nexit")), 0xefcd);
    assert_eq!(r0(&format!("{v}be32 %r0\nexit")), 0xefcd_ab89);
    assert_eq!(r0(&format!("{v}be64 %r0\nexit")), 0xefcd_ab89_6745_2301);
    assert_eq!(r0(&format!("{v}bswap16 %r0\nexit")), 0xefcd);
    assert_eq!(r0(&format!("{v}bswap64 %r0\nexit")), 0xefcd_ab89_6745_2301);
}

#[test]
fn jumps_compare_with_the_right_width_and_signedness() {
    // 64-bit compare with a sign-extended immediate.
    assert_eq!(r0("mov32 %r1, 0x80000000\nmov %r0, 1\njeq %r1, 0x80000000, +1\nmov %r0, 2\nexit"), 2);
    assert_eq!(r0("mov %r1, 0x80000000\nmov %r0, 1\njeq %r1, 0x80000000, +1\nmov %r0, 2\nexit"), 1);
    // 32-bit compare ignores the upper half.
    assert_eq!(r0("lddw %r1, 0x100000005\nmov %r0, 1\njeq32 %r1, 5, +1\nmov %r0, 2\nexit"), 1);
    assert_eq!(r0("mov %r1, -1\nmov %r0, 1\njslt32 %r1, 0, +1\nmov %r0, 2\nexit"), 1);
    assert_eq!(r0("mov %r1, -1\nmov %r0, 1\njlt %r1, 0, +1\nmov %r0, 2\nexit"), 2);
    assert_eq!(r0("mov %r1, 6\nmov %r0, 1\njset %r1, 2, +1\nmov %r0, 2\nexit"), 1);
    // gotol with a 32-bit offset, forwards and backwards.
    assert_eq!(r0("mov %r0, 1\nja32 +2\nexit\nmov %r0, 3\nja32 -3"), 1);
}

#[test]
fn atomics_fetch_exchange_and_compare() {
    let setup = "lddw %r1, 0x100000005\nstxdw [%r10-8], %r1\n";
    assert_eq!(r0(&format!("{setup}mov %r2, 3\nlock add [%r10-8], %r2\nldxdw %r0, [%r10-8]\nexit")), 0x1_0000_0008);
    assert_eq!(r0(&format!("{setup}mov %r2, 3\nlock fetch add [%r10-8], %r2\nmov %r0, %r2\nexit")), 0x1_0000_0005);
    // 32-bit forms touch only the low word and zero-extend the fetched value.
    assert_eq!(r0(&format!("{setup}mov %r2, -1\nlock add32 [%r10-8], %r2\nldxdw %r0, [%r10-8]\nexit")), 0x1_0000_0004);
    assert_eq!(r0(&format!("{setup}mov %r2, -1\nlock fetch or32 [%r10-8], %r2\nmov %r0, %r2\nexit")), 5);
    assert_eq!(r0(&format!("{setup}mov %r2, 6\nlock fetch and [%r10-8], %r2\nldxdw %r0, [%r10-8]\nexit")), 4);
    assert_eq!(
        r0(&format!("{setup}mov %r2, 6\nlock fetch xor32 [%r10-8], %r2\nldxdw %r0, [%r10-8]\nexit")),
        0x1_0000_0003
    );
    assert_eq!(
        r0(&format!("{setup}mov %r2, 9\nlock xchg [%r10-8], %r2\nldxdw %r0, [%r10-8]\nadd %r0, %r2\nexit")),
        0x1_0000_000e
    );
    // cmpxchg: equal → store, r0 = old; different → no change, r0 = old.
    assert_eq!(
        r0(&format!(
            "{setup}mov %r0, %r1\nmov %r2, 9\nlock cmpxchg [%r10-8], %r2\nldxdw %r3, [%r10-8]\nadd %r0, %r3\nexit"
        )),
        0x1_0000_000e
    );
    assert_eq!(
        r0(&format!("{setup}mov %r0, 5\nmov %r2, 9\nlock cmpxchg32 [%r10-8], %r2\nldxdw %r0, [%r10-8]\nexit")),
        0x1_0000_0009
    );
    assert_eq!(r0(&format!("{setup}mov %r0, 4\nmov %r2, 9\nlock cmpxchg32 [%r10-8], %r2\nexit")), 5);
}

#[test]
fn local_calls_get_fresh_stacks_and_preserve_r6_to_r9() {
    let text = "mov %r6, 6\nstdw [%r10-8], 11\nmov %r1, 4\ncall local f\nldxdw %r1, [%r10-8]\nadd %r0, %r1\n\
                add %r0, %r6\nexit\nf:\nmov %r6, 100\nstdw [%r10-8], 1000\nmov %r0, %r1\nexit";
    assert_eq!(r0(text), 4 + 11 + 6);
}

#[test]
fn subprograms_cannot_read_the_callers_registers_or_stack_bytes() {
    assert_eq!(
        err("mov %r6, 1\ncall local +1\nexit\nmov %r0, 0\nadd %r0, %r6\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R6 }
    );
    // r1..r5 are undefined after the call.
    assert_eq!(
        err("mov %r1, 1\ncall local +3\nmov %r0, 0\nadd %r0, %r1\nexit\nmov %r0, 0\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R1 }
    );
    assert!(matches!(
        err("stdw [%r10-8], 1\ncall local +1\nexit\nldxdw %r0, [%r10-8]\nadd %r0, 1\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R0 }
    ));
}

#[test]
fn a_subprogram_may_return_without_r0_but_the_caller_cannot_use_it() {
    assert_eq!(r0("call local +2\nmov %r0, 3\nexit\nexit"), 3);
    assert_eq!(err("call local +1\nexit\nexit"), InterpErrorKind::UninitializedRegister { reg: Reg::R0 });
}

#[test]
fn returned_frames_are_unmapped() {
    // The callee returns a pointer into its own stack; the caller's dereference must fail.
    let text = "call local +2\nldxdw %r0, [%r0]\nexit\nstdw [%r10-8], 1\nmov %r0, %r10\nadd %r0, -8\nexit";
    assert!(matches!(err(text), InterpErrorKind::Memory(MemoryError::Unmapped { .. })));
}

#[test]
fn call_depth_is_limited_to_eight_frames() {
    // Each function calls the next; with 8 frames it works, with 9 it fails.
    let chain = |n: usize| {
        let mut t = String::new();
        for _ in 0..n - 1 {
            t.push_str("call local +1\nexit\n");
        }
        t.push_str("mov %r0, 42\nexit\n");
        t
    };
    assert_eq!(r0(&chain(8)), 42);
    assert_eq!(err(&chain(9)), InterpErrorKind::CallDepthExceeded { limit: 8 });
}

#[test]
fn memory_accesses_are_checked() {
    let mut memory = Memory::new();
    let ro = memory.add_region("context", vec![1, 2, 3, 4], Access::ReadOnly);
    let e = run_with("ldxw %r0, [%r1+1]\nexit", &[ro.base()], &mut memory).unwrap_err();
    assert!(matches!(e.kind, InterpErrorKind::Memory(MemoryError::OutOfBounds { .. })), "{e}");
    let e = run_with("stb [%r1], 0\nmov %r0, 0\nexit", &[ro.base()], &mut memory).unwrap_err();
    assert!(matches!(e.kind, InterpErrorKind::Memory(MemoryError::ReadOnly { .. })), "{e}");
    assert!(e.to_string().starts_with("slot 0: write of 1 byte(s)"), "{e}");
    let stack_overrun = |text: &str| {
        let kind = err(text);
        matches!(kind, InterpErrorKind::Memory(MemoryError::OutOfBounds { region, .. }) if region == "stack frame 0")
    };
    assert!(stack_overrun("ldxb %r0, [%r10+0]\nexit"));
    assert!(stack_overrun("ldxb %r0, [%r10-513]\nexit"));
    assert!(stack_overrun("stdw [%r10-4], 0\nmov %r0, 0\nexit"));
    assert!(matches!(err("mov %r1, 0\nldxb %r0, [%r1]\nexit"), InterpErrorKind::Memory(MemoryError::Unmapped { .. })));
    assert!(matches!(
        err("stxb [%r10-1], %r10\nldxdw %r0, [%r10-8]\nexit"),
        InterpErrorKind::UninitializedRegister { .. }
    ));
}

#[test]
fn uninitialised_stack_check_can_be_disabled() {
    let program = assemble("ldxdw %r0, [%r10-8]\nexit").unwrap();
    let config = Config { check_uninitialized_stack: false, ..Config::default() };
    let r0 = Interpreter::with_config(&program, config).run(&[], &mut Memory::new(), &mut TestHost::default());
    assert_eq!(r0, Ok(0));
}

#[test]
fn registers_without_a_value_cannot_be_read_and_r10_cannot_be_written() {
    assert_eq!(err("or %r0, %r10\nexit"), InterpErrorKind::UninitializedRegister { reg: Reg::R0 });
    assert_eq!(err("exit"), InterpErrorKind::UninitializedRegister { reg: Reg::R0 });
    assert_eq!(err("mov %r10, 0\nexit"), InterpErrorKind::FramePointerWrite);
    let mut memory = Memory::new();
    assert_eq!(run_with("mov %r0, %r2\nexit", &[1, 2], &mut memory), Ok(2));
}

#[test]
fn helpers_get_arguments_memory_and_can_end_the_program() {
    assert_eq!(r0("mov %r1, -1\ncall 5\nexit"), u64::MAX);
    assert_eq!(r0("mov %r1, 0\ncall 5\nmov %r0, 9\nexit"), 0);
    assert_eq!(r0("mov %r1, 7\nmov %r2, 5\ncall %r2\nexit"), 7);
    assert_eq!(r0("mov %r1, %r10\nadd %r1, -8\nmov %r2, 99\ncall 6\nldxdw %r0, [%r10-8]\nexit"), 99);
    // A helper's pointer result is usable: the host mapped the region at run time.
    assert_eq!(r0("call 7\nstdw [%r0+0], 5\nldxdw %r0, [%r0]\nexit"), 5);
    assert!(matches!(err("call 99\nexit"), InterpErrorKind::Host { error: HostError::UnknownHelper { id: 99 }, .. }));
    assert!(matches!(
        err("call 5\nexit"),
        InterpErrorKind::Host { error: HostError::UndefinedArgument { reg: 1 }, .. }
    ));
    assert!(matches!(
        err("mov %r1, -1\nmov %r2, 99\ncall %r2\nexit"),
        InterpErrorKind::Host { call: HostCall::Helper { id: 99, via: Some(Reg::R2) }, .. }
    ));
    assert!(matches!(
        err("lddw %r2, 0x100000000\ncall %r2\nexit"),
        InterpErrorKind::InvalidCallTarget { value: 0x1_0000_0000 }
    ));
    // r1..r5 are undefined after a helper call.
    assert_eq!(err("mov %r1, 1\ncall 5\nadd %r0, %r1\nexit"), InterpErrorKind::UninitializedRegister { reg: Reg::R1 });
}

#[test]
fn pseudo_loads_resolve_through_the_host() {
    assert_eq!(r0("lddw %r0, map_by_idx(0)\nexit"), 0xfeed);
    assert_eq!(
        r0("lddw %r1, map_val_by_idx(0)+4\nstw [%r1], 3\nlddw %r2, map_val_by_idx(0)\nldxdw %r0, [%r2]\nexit"),
        3 << 32
    );
    assert!(matches!(err("lddw %r0, map_by_idx(1)\nexit"), InterpErrorKind::Host { .. }));
    assert!(matches!(
        err("call runtime 3\nexit"),
        InterpErrorKind::Host { error: HostError::UnsupportedBtfCall { .. }, .. }
    ));
}

#[test]
fn control_flow_errors_are_reported() {
    assert_eq!(err("mov %r0, 0\nja +5\nexit"), InterpErrorKind::JumpOutOfRange { target: 7, len: 3 });
    assert_eq!(err("mov %r0, 0"), InterpErrorKind::FellOffEnd);
    assert_eq!(err("mov %r0, 0\nja +1\nlddw %r1, 5\nexit"), InterpErrorKind::ContinuationExecuted);
    assert_eq!(err("mov %r6, 0\nldabsw 0\nexit"), InterpErrorKind::LegacyPacketLoad { mode: "LD_ABS" });
}

/// Runs `text` with r1 = a 16-byte context holding 8-byte `data` / `data_end` pointers to `packet` (the Windows XDP
/// layout), with legacy packet loads enabled; returns r0 or the error.
fn run_on_packet(text: &str, packet: &[u8]) -> Result<u64, InterpError> {
    let program = assemble(text).unwrap();
    let mut memory = Memory::new();
    let p = memory.add_region("packet", packet.to_vec(), Access::ReadOnly);
    let mut context = p.base().to_le_bytes().to_vec();
    context.extend((p.base() + packet.len() as u64).to_le_bytes());
    let context = memory.add_region("context", context, Access::ReadOnly);
    let packet_fields = Some(PacketFields { data: 0, data_end: 8, width: MemSize::DW });
    let config = Config { packet_fields, ..Config::default() };
    Interpreter::with_config(&program, config).run(&[context.base()], &mut memory, &mut TestHost::default())
}

#[test]
fn legacy_packet_loads_read_network_byte_order_through_the_context_in_r6() {
    let packet = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
    assert_eq!(run_on_packet("mov %r6, %r1\nldabsb 1\nexit", &packet), Ok(0x22));
    assert_eq!(run_on_packet("mov %r6, %r1\nldabsh 1\nexit", &packet), Ok(0x2233));
    assert_eq!(run_on_packet("mov %r6, %r1\nldabsw 2\nexit", &packet), Ok(0x3344_5566));
    // LD_IND: the offset is the low 32 bits of src plus imm, wrapping in 32 bits.
    assert_eq!(run_on_packet("mov %r6, %r1\nmov %r7, 3\nldindh %r7, -1\nexit", &packet), Ok(0x3344));
    assert_eq!(run_on_packet("mov %r6, %r1\nlddw %r7, 0x100000004\nldindb %r7, 1\nexit", &packet), Ok(0x66));
    assert_eq!(run_on_packet("mov %r6, %r1\nmov %r7, -1\nldindb %r7, 2\nexit", &packet), Ok(0x22));
}

#[test]
fn an_out_of_bounds_legacy_packet_load_ends_the_program_with_zero() {
    let packet = [0x11, 0x22, 0x33, 0x44];
    // The last byte is readable; one past it, a read crossing the end and negative offsets end the program.
    assert_eq!(run_on_packet("mov %r6, %r1\nldabsb 3\nexit", &packet), Ok(0x44));
    for load in ["ldabsb 4", "ldabsw 1", "ldabsh -1", "ldabsw 2147483647"] {
        let text = format!("mov %r6, %r1\n{load}\nmov %r0, 7\nexit");
        assert_eq!(run_on_packet(&text, &packet), Ok(0), "{load}");
    }
    let text = "mov %r6, %r1\nmov %r7, 0x7ffffffe\nldindw %r7, 4\nmov %r0, 7\nexit";
    assert_eq!(run_on_packet(text, &packet), Ok(0), "the 32-bit offset wraps to a negative number");
    assert_eq!(run_on_packet("mov %r6, %r1\nldabsb 0\nmov %r0, 7\nexit", &[]), Ok(0));
}

#[test]
fn a_legacy_packet_load_leaves_r1_to_r5_undefined_and_needs_r6() {
    let packet = [1, 2, 3, 4];
    let e = run_on_packet("mov %r6, %r1\nmov %r2, 1\nldabsb 0\nadd %r0, %r2\nexit", &packet).unwrap_err();
    assert_eq!(e.kind, InterpErrorKind::UninitializedRegister { reg: Reg::R2 });
    let e = run_on_packet("ldabsb 0\nexit", &packet).unwrap_err();
    assert_eq!(e.kind, InterpErrorKind::UninitializedRegister { reg: Reg::R6 });
    // r6 must point at a context whose fields are mapped.
    let e = run_on_packet("mov %r6, 8\nldabsb 0\nexit", &packet).unwrap_err();
    assert!(matches!(e.kind, InterpErrorKind::Memory(_)), "{e}");
}

#[test]
fn the_instruction_budget_stops_infinite_loops() {
    let program = assemble("mov %r0, 0\nja -1").unwrap();
    let config = Config { instruction_budget: 1000, ..Config::default() };
    let e = Interpreter::with_config(&program, config).run(&[], &mut Memory::new(), &mut TestHost::default());
    assert_eq!(e.unwrap_err().kind, InterpErrorKind::BudgetExhausted { budget: 1000 });
}

#[test]
fn tracing_sees_every_executed_instruction_with_its_registers() {
    let program = assemble("mov %r0, 1\ncall local +1\nexit\nmov %r0, 2\nexit").unwrap();
    let mut steps = Vec::new();
    let r0 = Interpreter::new(&program).run_traced(&[7], &mut Memory::new(), &mut TestHost::default(), &mut |s| {
        steps.push((s.pc, s.depth, s.registers[0], s.registers[1]))
    });
    assert_eq!(r0, Ok(2));
    assert_eq!(
        steps,
        vec![
            (0, 0, None, Some(7)),
            (1, 0, Some(1), Some(7)),
            (3, 1, None, Some(7)),
            (4, 1, Some(2), Some(7)),
            (2, 0, Some(2), None)
        ]
    );
}

#[test]
fn stacks_are_unmapped_after_the_run_even_on_error() {
    let mut memory = Memory::new();
    let _ = run_with("call local +1\nexit\nmov %r0, 0\nja -1", &[], &mut memory);
    assert_eq!(memory.regions().count(), 0);
    assert_eq!(run_with("mov %r0, 1\nexit", &[], &mut memory), Ok(1));
    assert_eq!(memory.regions().count(), 0);
}

mod properties {
    use super::*;
    use crate::isa::{decode_slots, RawSlot};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever a decodable program does, the interpreter returns a value or an error: no panic, no hang,
        /// and no stack frame left mapped.
        #[test]
        fn any_program_ends_in_a_value_or_an_error(
            body in proptest::collection::vec(crate::isa::disasm::strategies::raw_slot(true), 1..40),
            init in proptest::collection::vec(-8i32..8, 8),
            buffer in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            // Give r0 and r3..r9 values so runs get further than the first register read.
            let mut program: Vec<Instruction> = [0u8, 3, 4, 5, 6, 7, 8, 9]
                .iter()
                .zip(&init)
                .map(|(&r, &v)| Instruction::Alu {
                    width: crate::isa::Width::W64,
                    op: AluOp::Mov,
                    dst: Reg::new(r).unwrap(),
                    src: Operand::Imm(v),
                })
                .collect();
            for (i, slot) in body.iter().enumerate() {
                let pair = [*slot, RawSlot { imm: i as i32, ..Default::default() }];
                let slots: &[RawSlot] = if slot.opcode == 0x18 { &pair } else { &pair[..1] };
                if let Ok(decoded) = decode_slots(slots) {
                    program.extend(decoded);
                }
            }
            program.push(Instruction::Exit);
            let mut memory = Memory::new();
            let len = buffer.len() as u64;
            let region = memory.add_region("buffer", buffer, Access::ReadWrite);
            let config = Config { instruction_budget: 10_000, ..Config::default() };
            let result = Interpreter::with_config(&program, config).run(
                &[region.base(), len],
                &mut memory,
                &mut TestHost::default(),
            );
            if let Err(e) = &result {
                prop_assert!(e.pc < program.len(), "error slot {} outside the program: {e}", e.pc);
            }
            prop_assert!(memory.regions().all(|r| !r.name.starts_with("stack frame")));
        }
    }
}

#[test]
fn undefined_values_are_copied_spilled_and_reloaded_but_trap_when_used() {
    // Copies, 32-bit copies, stores to the stack and reloads are not uses (PREVAIL's semantics); the program
    // runs as long as the undefined value is never used.
    assert_eq!(r0("mov %r5, %r5\nmov32 %r4, %r3\nstxdw [%r10-8], %r4\nldxdw %r2, [%r10-8]\nmov %r0, 1\nexit"), 1);
    assert_eq!(r0("ldxdw %r2, [%r10-10]\nldxh %r3, [%r10-2]\nmov %r0, 2\nexit"), 2);
    // A store of an undefined register makes written stack bytes undefined again.
    assert_eq!(
        err("stdw [%r10-8], 42\nstxdw [%r10-8], %r6\nldxdw %r0, [%r10-8]\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R0 }
    );
    assert_eq!(
        err("stdw [%r10-8], 42\nstxb [%r10-5], %r6\nldxw %r1, [%r10-8]\nmov %r0, %r1\nadd %r0, 1\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R0 }
    );
    // Every use traps: ALU operand, address, comparison, helper argument, atomic operand, the program's r0.
    assert_eq!(
        err("mov %r1, %r7\nmov %r0, 0\nadd %r0, %r1\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R1 }
    );
    assert_eq!(err("mov %r1, %r7\nldxb %r0, [%r1]\nexit"), InterpErrorKind::UninitializedRegister { reg: Reg::R1 });
    assert_eq!(
        err("ldxdw %r1, [%r10-8]\njeq %r1, 0, +0\nmov %r0, 0\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R1 }
    );
    assert!(matches!(
        err("ldxdw %r1, [%r10-8]\ncall 5\nexit"),
        InterpErrorKind::Host { error: HostError::UndefinedArgument { reg: 1 }, .. }
    ));
    assert_eq!(
        err("stdw [%r10-8], 0\nmov %r1, %r9\nlock add [%r10-8], %r1\nmov %r0, 0\nexit"),
        InterpErrorKind::UninitializedRegister { reg: Reg::R1 }
    );
    assert_eq!(err("ldxw %r0, [%r10-4]\nexit"), InterpErrorKind::UninitializedRegister { reg: Reg::R0 });
    // Sign-extending moves read their source.
    assert_eq!(err("movsx864 %r0, %r3\nexit"), InterpErrorKind::UninitializedRegister { reg: Reg::R3 });
}

#[test]
fn undefined_values_cannot_be_stored_outside_the_stack() {
    let mut memory = Memory::new();
    let map = memory.add_region("map value", vec![0; 8], Access::ReadWrite);
    let e = run_with("stxdw [%r1], %r6\nmov %r0, 0\nexit", &[map.base()], &mut memory).unwrap_err();
    assert!(matches!(e.kind, InterpErrorKind::Memory(MemoryError::UndefinedStore { .. })), "{e}");
    // Without initialisation tracking the stack cannot hold undefined bytes either.
    let program = assemble("stxdw [%r10-8], %r6\nmov %r0, 0\nexit").unwrap();
    let config = Config { check_uninitialized_stack: false, ..Config::default() };
    let e = Interpreter::with_config(&program, config).run(&[], &mut Memory::new(), &mut TestHost::default());
    assert!(matches!(e, Err(InterpError { kind: InterpErrorKind::Memory(MemoryError::UndefinedStore { .. }), .. })));
}
