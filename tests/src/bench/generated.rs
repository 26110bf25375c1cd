//! Generated large programs for compile throughput (µs per 1k instructions at 10k and 100k instructions), as
//! ELF objects in the shape clang emits, so they go through every pipeline stage like a real program.
//!
//! The program is a verifiable XDP program: it bounds-checks the first 64 packet bytes once, initialises eight
//! stack slots, then repeats a block that mixes what real programs do — a packet byte load, 64-bit ALU and
//! multiply, a stack store and reload, and a short forward branch (a diamond, so a path-sensitive verifier joins
//! instead of exploring 2^n paths) — until the requested size, then returns the hash.

use bpf2sys::isa::{self, AluOp, Imm64Kind, Instruction, JumpCond, MemSize, Operand, Reg, Width};
use object::write::{Object, Symbol, SymbolSection};
use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};

/// Name of the generated program's function symbol.
pub const SYMBOL: &str = "generated";

/// Bytes of packet the program reads; the input packet must be at least this long.
pub const PACKET_BYTES: i16 = 64;

fn alu(op: AluOp, dst: Reg, src: Operand) -> Instruction {
    Instruction::Alu { width: Width::W64, op, dst, src }
}

/// The instructions of a generated program with at least `slots` instruction slots (a few more at most).
pub fn instructions(slots: usize) -> Vec<Instruction> {
    let (data, end, tmp, byte, mix, prime) = (Reg::R6, Reg::R7, Reg::R2, Reg::R3, Reg::R4, Reg::R8);
    let mut code = vec![
        // r6 = ctx->data, r7 = ctx->data_end (xdp_md_t, contract §7.2).
        Instruction::Load { size: MemSize::DW, sign_extend: false, dst: data, src: Reg::R1, offset: 0 },
        Instruction::Load { size: MemSize::DW, sign_extend: false, dst: end, src: Reg::R1, offset: 8 },
        alu(AluOp::Mov, Reg::R0, Operand::Imm(0)),
        alu(AluOp::Mov, tmp, Operand::Reg(data)),
        alu(AluOp::Add, tmp, Operand::Imm(i32::from(PACKET_BYTES))),
        // if data + 64 <= data_end, skip the early exit.
        Instruction::JumpIf { width: Width::W64, cond: JumpCond::Le, dst: tmp, src: Operand::Reg(end), offset: 1 },
        Instruction::Exit,
        Instruction::LoadImm64 { dst: prime, kind: Imm64Kind::Imm, imm: 0x0000_01b3, next_imm: 0x0000_0100 },
        Instruction::LoadImm64Continuation,
    ];
    for slot in 0..8i16 {
        code.push(Instruction::Store {
            size: MemSize::DW,
            dst: Reg::FP,
            offset: -8 * (slot + 1),
            src: Operand::Imm(0),
        });
    }
    let mut k: i16 = 0;
    while code.len() + 1 < slots {
        let offset = k % PACKET_BYTES;
        let stack = -8 * (k % 8 + 1);
        code.extend([
            Instruction::Load { size: MemSize::B, sign_extend: false, dst: byte, src: data, offset },
            alu(AluOp::Xor, Reg::R0, Operand::Reg(byte)),
            alu(AluOp::Mul, Reg::R0, Operand::Reg(prime)),
            alu(AluOp::Mov, mix, Operand::Reg(Reg::R0)),
            alu(AluOp::Rsh, mix, Operand::Imm(29)),
            alu(AluOp::Xor, Reg::R0, Operand::Reg(mix)),
            Instruction::Store { size: MemSize::DW, dst: Reg::FP, offset: stack, src: Operand::Reg(Reg::R0) },
            Instruction::Load {
                size: MemSize::DW,
                sign_extend: false,
                dst: mix,
                src: Reg::FP,
                offset: -8 * ((k + 3) % 8 + 1),
            },
            alu(AluOp::Add, Reg::R0, Operand::Reg(mix)),
            Instruction::JumpIf {
                width: Width::W64,
                cond: JumpCond::Gt,
                dst: byte,
                src: Operand::Imm(0x80),
                offset: 1,
            },
            alu(AluOp::Add, Reg::R0, Operand::Imm(17)),
            alu(AluOp::Lsh, byte, Operand::Imm(3)),
            alu(AluOp::Sub, Reg::R0, Operand::Reg(byte)),
        ]);
        k = k.wrapping_add(1) & 0x3fff;
    }
    code.push(Instruction::Exit);
    code
}

/// An eBPF ELF object (section `xdp`, global function [`SYMBOL`]) holding [`instructions`]`(slots)`.
pub fn xdp_object(slots: usize) -> Vec<u8> {
    let bytes = isa::encode_bytes(&instructions(slots));
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let section = obj.add_section(Vec::new(), b"xdp".to_vec(), object::SectionKind::Text);
    let offset = obj.append_section_data(section, &bytes, 8);
    obj.add_symbol(Symbol {
        name: SYMBOL.as_bytes().to_vec(),
        value: offset,
        size: bytes.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
    obj.write().expect("writing an ELF object to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

    #[test]
    fn generated_programs_have_the_requested_size_and_round_trip() {
        for slots in [100, 10_000] {
            let code = instructions(slots);
            let n: usize = code.len();
            assert!((slots..slots + 16).contains(&n), "{n} slots for {slots}");
            let bytes = isa::encode_bytes(&code);
            assert_eq!(isa::decode(&bytes).unwrap(), code);
            assert_eq!(code.last(), Some(&Instruction::Exit));
        }
    }

    #[test]
    fn generated_object_is_an_ebpf_elf_with_one_xdp_function() {
        let data = xdp_object(1000);
        let file = object::File::parse(&*data).unwrap();
        assert_eq!(file.architecture(), Architecture::Bpf);
        let sym = file.symbols().find(|s| s.name() == Ok(SYMBOL)).unwrap();
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        assert_eq!(section.name(), Ok("xdp"));
        assert_eq!(sym.size() as usize, section.data().unwrap().len());
    }
}
