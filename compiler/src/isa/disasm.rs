//! Disassembler producing the bpf_conformance text syntax that [`super::asm`] reads ([`disassemble`]), and the
//! PREVAIL/clang style diagnostics use ([`clang_style`]).
//!
//! In: [`Instruction`]s indexed by slot. Out: text, one instruction per line (a `lddw` continuation slot has no
//! line of its own). `assemble(disassemble(p)) == p` for every program [`super::decode`] accepts: jump targets
//! are printed as signed slot counts (`+2`, `-1`), immediates as signed decimals, `lddw` values as full 64-bit
//! hexadecimals, and the assembler's documented extensions cover the `lddw` pseudo sources, legacy packet loads
//! and BTF calls into other modules.

use std::fmt::Write;

use super::asm::{alu_mnemonic, imm64_kind_mnemonic, jump_mnemonic};
use super::{
    AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width,
};

/// Disassembles a program, one line per instruction, each ending in `\n`.
pub fn disassemble(program: &[Instruction]) -> String {
    let mut out = String::new();
    for insn in program {
        if let Some(text) = format_instruction(insn) {
            out.push_str(&text);
            out.push('\n');
        }
    }
    out
}

/// The text of one instruction; `None` for a `lddw` continuation slot (part of the preceding `lddw`).
pub fn format_instruction(insn: &Instruction) -> Option<String> {
    let mut s = String::new();
    match *insn {
        Instruction::Alu { width, op, dst, src } => {
            let suffix = if width == Width::W32 { "32" } else { "" };
            match op {
                AluOp::Neg => write!(s, "neg{suffix} %{dst}"),
                AluOp::MovSx(bits) => {
                    write!(s, "movsx{bits}{} %{dst}, {}", if width == Width::W32 { "32" } else { "64" }, operand(src))
                }
                _ => write!(s, "{}{suffix} %{dst}, {}", alu_mnemonic(op), operand(src)),
            }
        }
        Instruction::Endian { order, bits, dst } => {
            let name = match order {
                ByteOrder::ToLe => "le",
                ByteOrder::ToBe => "be",
                ByteOrder::Swap => "bswap",
            };
            write!(s, "{name}{bits} %{dst}")
        }
        Instruction::LoadImm64 { dst, kind, imm, next_imm } => match (kind, imm64_kind_mnemonic(kind)) {
            (Imm64Kind::Imm, _) | (_, None) => write!(s, "lddw %{dst}, {:#x}", Instruction::imm64(imm, next_imm)),
            (_, Some(name)) if next_imm == 0 => write!(s, "lddw %{dst}, {name}({imm})"),
            (_, Some(name)) => write!(s, "lddw %{dst}, {name}({imm}){next_imm:+}"),
        },
        Instruction::LoadImm64Continuation => return None,
        Instruction::Load { size, sign_extend, dst, src, offset } => {
            let s_ = if sign_extend { "s" } else { "" };
            write!(s, "ldx{s_}{} %{dst}, [%{src}{offset:+}]", size_name(size))
        }
        Instruction::Store { size, dst, offset, src } => match src {
            Operand::Reg(r) => write!(s, "stx{} [%{dst}{offset:+}], %{r}", size_name(size)),
            Operand::Imm(i) => write!(s, "st{} [%{dst}{offset:+}], {i}", size_name(size)),
        },
        Instruction::Atomic { size, op, fetch, dst, src, offset } => {
            let name = match op.alu_op() {
                Some(alu) => alu_mnemonic(alu),
                None if op == AtomicOp::Xchg => "xchg",
                None => "cmpxchg",
            };
            // xchg/cmpxchg always fetch; the assembler implies it, so `fetch` is printed for the others only.
            let fetch = if fetch && !matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg) { "fetch " } else { "" };
            let w = if size == MemSize::W { "32" } else { "" };
            write!(s, "lock {fetch}{name}{w} [%{dst}{offset:+}], %{src}")
        }
        Instruction::LegacyPacketLoad { mode, size, src, imm } => match mode {
            PacketLoadMode::Abs => write!(s, "ldabs{} {imm}", size_name(size)),
            PacketLoadMode::Ind => write!(s, "ldind{} %{src}, {imm}", size_name(size)),
        },
        Instruction::Jump { offset, long } => write!(s, "{} {offset:+}", if long { "ja32" } else { "ja" }),
        Instruction::JumpIf { width, cond, dst, src, offset } => {
            let suffix = if width == Width::W32 { "32" } else { "" };
            write!(s, "{}{suffix} %{dst}, {}, {offset:+}", jump_mnemonic(cond), operand(src))
        }
        Instruction::CallHelper { id } => write!(s, "call {id}"),
        Instruction::CallLocal { offset } => write!(s, "call local {offset:+}"),
        Instruction::CallBtf { btf_id, module: 0 } => write!(s, "call runtime {btf_id}"),
        Instruction::CallBtf { btf_id, module } => write!(s, "call runtime {btf_id}, {module}"),
        Instruction::CallReg { reg } => write!(s, "call %{reg}"),
        Instruction::Exit => write!(s, "exit"),
    }
    .expect("writing to a String cannot fail");
    Some(s)
}

fn operand(op: Operand) -> String {
    match op {
        Operand::Reg(r) => format!("%{r}"),
        Operand::Imm(i) => i.to_string(),
    }
}

fn size_name(size: MemSize) -> &'static str {
    match size {
        MemSize::B => "b",
        MemSize::H => "h",
        MemSize::W => "w",
        MemSize::DW => "dw",
    }
}

fn c_type(s: MemSize) -> &'static str {
    match s {
        MemSize::B => "u8",
        MemSize::H => "u16",
        MemSize::W => "u32",
        MemSize::DW => "u64",
    }
}

/// One instruction in the PREVAIL/clang assembly style (`r0 = *(u32 *)(r1 +4)`), as diagnostics name it; a
/// `lddw` continuation slot is named as such.
pub fn clang_style(insn: &Instruction) -> String {
    let reg = |r: Reg, w: Width| if w == Width::W32 { format!("w{}", r.number()) } else { r.to_string() };
    match *insn {
        Instruction::Alu { width, op, dst, src } => {
            let d = reg(dst, width);
            let s = match src {
                Operand::Reg(r) => reg(r, width),
                Operand::Imm(i) => i.to_string(),
            };
            match op {
                AluOp::Neg => format!("{d} = -{d}"),
                AluOp::MovSx(n) => format!("{d} = (s{n}){s}"),
                AluOp::Mov => format!("{d} = {s}"),
                _ => format!("{d} {}= {s}", alu_symbol(op)),
            }
        }
        Instruction::Endian { order, bits, dst } => format!("{dst} = {order:?}{bits} {dst}").to_lowercase(),
        Instruction::LoadImm64 { dst, kind, imm, next_imm } => match kind {
            Imm64Kind::Imm => format!("{dst} = {} ll", Instruction::imm64(imm, next_imm) as i64),
            k => format!("{dst} = {}({imm}) + {next_imm}", k.name()),
        },
        Instruction::LoadImm64Continuation => "(lddw second slot)".into(),
        Instruction::Load { size, sign_extend, dst, src, offset } => {
            let t = if sign_extend { c_type(size).replace('u', "s") } else { c_type(size).to_string() };
            format!("{dst} = *({t} *)({src} {offset:+})")
        }
        Instruction::Store { size, dst, offset, src } => {
            let value = match src {
                Operand::Reg(r) => r.to_string(),
                Operand::Imm(i) => i.to_string(),
            };
            format!("*({} *)({dst} {offset:+}) = {value}", c_type(size))
        }
        Instruction::Atomic { size, op, fetch, dst, src, offset } => {
            let sym = match op.alu_op() {
                Some(alu) => format!("{}=", alu_symbol(alu)),
                None if op == AtomicOp::Xchg => "x=".into(),
                None => "cx=".into(),
            };
            format!("lock *({} *)({dst} {offset:+}) {sym} {src}{}", c_type(size), if fetch { " fetch" } else { "" })
        }
        Instruction::LegacyPacketLoad { mode, size, src, imm } => {
            format!("r0 = *({} *)skb[{mode:?} {src} + {imm}]", c_type(size))
        }
        Instruction::Jump { offset, .. } => format!("goto {offset:+}"),
        Instruction::JumpIf { width, cond, dst, src, offset } => {
            let sym = match cond {
                JumpCond::Eq => "==",
                JumpCond::Ne => "!=",
                JumpCond::Gt => ">",
                JumpCond::Ge => ">=",
                JumpCond::Lt => "<",
                JumpCond::Le => "<=",
                JumpCond::Set => "&",
                JumpCond::Sgt => "s>",
                JumpCond::Sge => "s>=",
                JumpCond::Slt => "s<",
                JumpCond::Sle => "s<=",
            };
            let s = match src {
                Operand::Reg(r) => reg(r, width),
                Operand::Imm(i) => i.to_string(),
            };
            format!("if {} {sym} {s} goto {offset:+}", reg(dst, width))
        }
        Instruction::CallHelper { id } => format!("call {id}"),
        Instruction::CallLocal { offset } => format!("call local {offset:+}"),
        Instruction::CallBtf { btf_id, module } => format!("call_btf {btf_id} module {module}"),
        Instruction::CallReg { reg } => format!("callx {reg}"),
        Instruction::Exit => "exit".into(),
    }
}

/// The C operator of a binary ALU operation (`s` marks the signed forms, as PREVAIL prints them).
fn alu_symbol(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+",
        AluOp::Sub => "-",
        AluOp::Mul => "*",
        AluOp::Div => "/",
        AluOp::SDiv => "s/",
        AluOp::Or => "|",
        AluOp::And => "&",
        AluOp::Lsh => "<<",
        AluOp::Rsh => ">>",
        AluOp::Mod => "%",
        AluOp::SMod => "s%",
        AluOp::Xor => "^",
        AluOp::Arsh => "s>>",
        AluOp::Mov | AluOp::MovSx(_) | AluOp::Neg => "",
    }
}

/// Proptest strategies for raw instruction slots, shared by the ISA and interpreter property tests.
#[cfg(test)]
pub(crate) mod strategies {
    use super::super::{decode_slots, RawSlot};
    use proptest::prelude::*;

    /// Opcodes that decode with at least one choice of the other fields (computed from the decoder).
    fn valid_opcodes() -> Vec<u8> {
        let fields = [(0u8, 0i16, 0i32), (1, 0, 0), (0, 0, 16), (1, 0, 0xf1), (0, 1, 0), (1, 8, 0)];
        (0..=255u8)
            .filter(|&opcode| {
                fields.iter().any(|&(src, offset, imm)| {
                    let slot = RawSlot { opcode, dst: 1, src, offset, imm };
                    decode_slots(&[slot, RawSlot::default()]).is_ok() || decode_slots(&[slot]).is_ok()
                })
            })
            .collect()
    }

    /// Raw slots: mostly valid opcodes (some arbitrary ones), registers r0..r10 with an occasional invalid
    /// number, and fields that are often zero so that most slots decode. With `small`, offsets and immediates
    /// stay small so memory accesses and jumps land near their base.
    pub(crate) fn raw_slot(small: bool) -> impl Strategy<Value = RawSlot> {
        let opcode = prop_oneof![9 => proptest::sample::select(valid_opcodes()), 1 => any::<u8>()];
        let special = prop_oneof![Just(5), Just(6), Just(7), Just(8), Just(16), Just(32), Just(64), Just(-1)];
        let atomic = prop_oneof![Just(0x01), Just(0x40), Just(0x41), Just(0x50), Just(0xa1), Just(0xe1), Just(0xf1)];
        let (lo, hi) = if small { (-16i32, 16i32) } else { (i32::MIN, i32::MAX) };
        let imm = prop_oneof![6 => Just(0i32), 2 => special, 1 => atomic, 2 => lo..=hi, 1 => any::<i32>()];
        let offset = prop_oneof![
            6 => Just(0i16),
            1 => prop_oneof![Just(1), Just(8), Just(16), Just(32)],
            2 => (lo as i16)..=(hi.min(i16::MAX as i32) as i16),
            1 => any::<i16>()
        ];
        let src = prop_oneof![6 => Just(0u8), 1 => Just(1u8), 3 => 0u8..=10, 1 => 0u8..=15];
        let dst = prop_oneof![9 => 0u8..=10, 1 => 0u8..=15];
        (opcode, dst, src, offset, imm).prop_map(|(opcode, dst, src, offset, imm)| RawSlot {
            opcode,
            dst,
            src,
            offset,
            imm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::asm::assemble;
    use super::super::{decode_slots, encode, RawSlot};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_the_suite_syntax() {
        let text = "mov32 %r0, 0\nlddw %r1, 0x1122334455667788\nldxsh %r2, [%r1-2]\nstw [%r10-8], -1\n\
                    lock fetch xor32 [%r10-8], %r2\njsge32 %r0, %r1, -3\ncall local +1\ncall %r3\nexit\n";
        let p = assemble(text).unwrap();
        assert_eq!(disassemble(&p), text);
    }

    #[test]
    fn extensions_round_trip() {
        let text = "lddw %r1, map_by_idx(3)\nlddw %r2, map_val_by_idx(1)+16\nlddw %r3, map_val_by_fd(-1)-8\n\
                    ldabsh 12\nldindw %r4, -2\ncall runtime 7, 2\ncall runtime 9\nexit\n";
        let p = assemble(text).unwrap();
        assert_eq!(disassemble(&p), text);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any decodable instruction sequence survives disassembly and reassembly unchanged.
        #[test]
        fn assemble_inverts_disassemble(slots in proptest::collection::vec(strategies::raw_slot(false), 1..24)) {
            // Keep only the slots that decode, so each case is a valid program.
            let mut program = Vec::new();
            for (i, slot) in slots.iter().enumerate() {
                let pair = [*slot, RawSlot { imm: i as i32 * 7919, ..Default::default() }];
                let try_slots: &[RawSlot] = if slot.opcode == 0x18 { &pair } else { &pair[..1] };
                if let Ok(decoded) = decode_slots(try_slots) {
                    program.extend(decoded);
                }
            }
            let text = disassemble(&program);
            let back = assemble(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(&back, &program, "text:\n{}", text);
            prop_assert_eq!(decode_slots(&encode(&back)).unwrap(), program);
        }
    }
}
