//! Legacy packet loads (`LD_ABS`/`LD_IND`, RFC 9669 §5.5) run as shipped machine code, x64 in-process and ARM64
//! emulated, against the reference interpreter: random programs of legacy loads (every size, in-bounds and
//! out-of-bounds offsets, negative and wrapping `LD_IND` offsets) mixed with ALU on the loaded values, on packets
//! of random length reached through a Windows XDP-style context (`data` at 0, `data_end` at 8). They must give the
//! same r0, including the 0 an out-of-bounds load ends the program with.
//!
//! Case counts: `BPF2SYS_LEGACY_CASES` (x64, default 3000) and `BPF2SYS_LEGACY_ARM64_CASES` (default 500).

use std::ffi::c_void;

use bpf2sys::compiled::Target;
use bpf2sys::interp::{Access, Config, Interpreter, Memory};
use bpf2sys::isa::semantics::PacketFields;
use bpf2sys::isa::{AluOp, Instruction as I, MemSize, Operand, PacketLoadMode, Reg, Width};
use bpf2sys::lower::{self, LowerOptions, MapDataLayout};
use bpf2sys_tests::arm64::Arm64Program;
use bpf2sys_tests::native::{conformance_helper, module_from_instructions, HostRuntime, NativeProgram};
use bpf2sys_tests::support::{NoHelpers, SplitMix64 as Rng};
use proptest::prelude::*;

const FIELDS: PacketFields = PacketFields { data: 0, data_end: 8, width: MemSize::DW };

trait PacketOffsets {
    fn offset(&mut self, len: usize) -> i32;
}
impl PacketOffsets for Rng {
    /// A packet offset: mostly near the packet (in bounds, at the edge, just past it), sometimes extreme.
    fn offset(&mut self, len: usize) -> i32 {
        match self.below(10) {
            0 => i32::MAX,
            1 => i32::MIN,
            2 => -(self.below(8) as i32) - 1,
            _ => self.below(len as u64 + 6) as i32,
        }
    }
}

fn reg(n: u8) -> Reg {
    Reg::new(n).expect("register")
}

/// `r6 = r1`, then legacy loads accumulated into r7 with ALU steps on the loaded value; r8 holds an index for
/// `LD_IND`. r1–r5 are never read after a load (it leaves them undefined).
fn generate(seed: u64, len_hint: usize) -> Vec<I> {
    let mut rng = Rng(seed);
    let mov = |dst: u8, imm: i32| I::Alu { width: Width::W64, op: AluOp::Mov, dst: reg(dst), src: Operand::Imm(imm) };
    let mut out = vec![
        I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R6, src: Operand::Reg(Reg::R1) },
        mov(7, 0),
        mov(8, rng.offset(len_hint)),
    ];
    for _ in 0..1 + rng.below(6) {
        let size = [MemSize::B, MemSize::H, MemSize::W][rng.below(3) as usize];
        match rng.below(4) {
            0 => out.push(I::LegacyPacketLoad {
                mode: PacketLoadMode::Abs,
                size,
                src: Reg::R0,
                imm: rng.offset(len_hint),
            }),
            1 => {
                // An index with high bits set: only its low 32 bits count.
                let high = (rng.next_u64() as i32) | 1;
                out.push(mov(9, high));
                out.push(I::Alu { width: Width::W64, op: AluOp::Lsh, dst: reg(9), src: Operand::Imm(32) });
                out.push(I::Alu { width: Width::W64, op: AluOp::Or, dst: reg(9), src: Operand::Reg(reg(8)) });
                out.push(I::LegacyPacketLoad {
                    mode: PacketLoadMode::Ind,
                    size,
                    src: reg(9),
                    imm: rng.below(4) as i32,
                });
            }
            _ => {
                let imm = if rng.below(3) == 0 { rng.offset(len_hint) } else { rng.below(4) as i32 - 1 };
                out.push(I::LegacyPacketLoad { mode: PacketLoadMode::Ind, size, src: reg(8), imm });
            }
        }
        let op = [AluOp::Add, AluOp::Xor, AluOp::Mul][rng.below(3) as usize];
        out.push(I::Alu { width: Width::W64, op, dst: reg(7), src: Operand::Reg(Reg::R0) });
        // The next index: moved by a small step, or a fresh offset.
        if rng.below(2) == 0 {
            out.push(I::Alu {
                width: Width::W64,
                op: AluOp::Add,
                dst: reg(8),
                src: Operand::Imm(rng.below(5) as i32 - 1),
            });
        } else {
            out.push(mov(8, rng.offset(len_hint)));
        }
    }
    out.push(I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R0, src: Operand::Reg(reg(7)) });
    out.push(I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Imm(1) });
    out.push(I::Exit);
    out
}

fn interpret(program: &[I], packet: &[u8]) -> u64 {
    let mut memory = Memory::new();
    let p = memory.add_region("packet", packet.to_vec(), Access::ReadOnly);
    let mut context = p.base().to_le_bytes().to_vec();
    context.extend((p.base() + packet.len() as u64).to_le_bytes());
    let context = memory.add_region("context", context, Access::ReadOnly);
    let config = Config { packet_fields: Some(FIELDS), ..Config::default() };
    Interpreter::with_config(program, config)
        .run(&[context.base()], &mut memory, &mut NoHelpers)
        .unwrap_or_else(|e| panic!("generated program is not well-formed: {e}\n{program:?}"))
}

fn native(program: &[I], packet: &[u8], target: Target) -> u64 {
    let module = module_from_instructions("legacy", program.to_vec());
    let compiled = lower::lower_unverified_with_packet_for_testing(&module, 0, &LowerOptions::new(target), FIELDS)
        .expect("lowering");
    let runtime =
        HostRuntime::new(&compiled.helper_ids, &conformance_helper, &[], MapDataLayout::default(), Vec::new());
    let packet = packet.to_vec();
    let data = packet.as_ptr() as u64;
    let mut context = [data, data + packet.len() as u64];
    let context = context.as_mut_ptr() as *mut c_void;
    match target {
        // SAFETY: the program reads only the context's two fields and, after its bounds check, the packet.
        Target::X64 => unsafe { NativeProgram::load(&compiled, runtime).expect("loading").run(context) },
        Target::Arm64 => Arm64Program::load(&compiled, runtime).expect("loading").run(context).expect("ARM64 run"),
    }
}

fn check(seed: u64, target: Target) {
    let mut rng = Rng(seed ^ 0xa5a5);
    let len = rng.below(24) as usize;
    let packet: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    let program = generate(seed, len);
    let expected = interpret(&program, &packet);
    assert_eq!(
        native(&program, &packet, target),
        expected,
        "{target:?}, seed {seed:#x}, packet {packet:02x?}\n{program:#?}"
    );
}

fn cases(variable: &str, default: u32) -> u32 {
    std::env::var(variable).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases("BPF2SYS_LEGACY_CASES", 3000), failure_persistence: None, ..ProptestConfig::default()
    })]

    #[test]
    fn x64_legacy_packet_loads_match_the_interpreter(seed in any::<u64>()) {
        check(seed, Target::X64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases("BPF2SYS_LEGACY_ARM64_CASES", 500), failure_persistence: None, ..ProptestConfig::default()
    })]

    #[test]
    fn arm64_legacy_packet_loads_match_the_interpreter(seed in any::<u64>()) {
        check(seed, Target::Arm64);
    }
}

/// Fixed cases with known results, so a shared mistake of the interpreter and the code generator shows too.
#[test]
fn legacy_loads_give_the_network_order_value_or_end_the_program_with_zero() {
    let packet = [0x11, 0x22, 0x33, 0x44, 0x55];
    let load = |mode, size, src, imm| {
        vec![
            I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R6, src: Operand::Reg(Reg::R1) },
            I::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R7, src: Operand::Imm(2) },
            I::LegacyPacketLoad { mode, size, src, imm },
            I::Alu { width: Width::W64, op: AluOp::Add, dst: Reg::R0, src: Operand::Imm(0x1000_0000) },
            I::Exit,
        ]
    };
    let cases = [
        (load(PacketLoadMode::Abs, MemSize::B, Reg::R0, 4), 0x1000_0055),
        (load(PacketLoadMode::Abs, MemSize::H, Reg::R0, 0), 0x1000_1122),
        (load(PacketLoadMode::Abs, MemSize::W, Reg::R0, 1), 0x1000_0000 + 0x2233_4455),
        (load(PacketLoadMode::Ind, MemSize::H, Reg::R7, 1), 0x1000_4455),
        (load(PacketLoadMode::Abs, MemSize::W, Reg::R0, 2), 0),
        (load(PacketLoadMode::Ind, MemSize::B, Reg::R7, -3), 0),
        (load(PacketLoadMode::Abs, MemSize::B, Reg::R0, 5), 0),
    ];
    for (program, expected) in cases {
        assert_eq!(interpret(&program, &packet), expected, "interpreter: {program:?}");
        for target in [Target::X64, Target::Arm64] {
            assert_eq!(native(&program, &packet, target), expected, "{target:?}: {program:?}");
        }
    }
}
