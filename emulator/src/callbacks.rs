//! The metadata-table callbacks evaluated from their machine code, without running them (for reading a driver
//! file that may be hostile, or built for another processor).
//!
//! Contract §2.2 makes every callback a plain leaf function that stores constants through its pointer
//! arguments: `programs(program_entry_t** out, size_t* count)` and its siblings store an address and a count,
//! `version(bpf2c_version_t* out)` stores three numbers. [`evaluate`] interprets such a function over a small
//! abstract machine (each register holds a constant, an argument pointer plus an offset, or something unknown)
//! until it returns, and reports the stores it made through its arguments. Addresses are virtual addresses at the
//! image's preferred base (what a PC-relative computation or a DIR64-relocated constant gives). Anything outside
//! that shape (a load from memory, a branch, a call, a store of a value computed at run time) is refused with the
//! instruction's address: the callback is then not readable without running it, which the caller reports.

use std::collections::HashMap;

/// How many instructions a callback may have before the reader gives up (bpf2sys and bpf2c emit fewer than 20).
const MAX_INSTRUCTIONS: usize = 64;

/// A store through an argument: `*(arg + offset) = value` of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    pub arg: u8,
    pub offset: i64,
    pub size: u8,
    pub value: u64,
}

/// What a register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Const(u64),
    /// Argument `n` (a pointer) plus an offset.
    Arg(u8, i64),
    Unknown,
}

/// The code of a callback: `code` starts at virtual address `va`; `load64` reads 8 bytes at a virtual address of
/// the image (for ARM64 literal loads of relocated constants).
pub struct Code<'a> {
    pub va: u64,
    pub code: &'a [u8],
    pub load64: &'a dyn Fn(u64) -> Option<u64>,
}

/// The stores the callback at `code.va` makes through its arguments, for PE machine `machine`.
pub fn evaluate(machine: u16, code: &Code<'_>) -> Result<Vec<Store>, String> {
    match machine {
        object::pe::IMAGE_FILE_MACHINE_AMD64 => x64(code),
        object::pe::IMAGE_FILE_MACHINE_ARM64 => arm64(code),
        other => Err(format!("machine {other:#x} is neither x64 nor ARM64")),
    }
}

/// The value the callback stored at `(arg, offset)` with `size` bytes.
pub fn stored(stores: &[Store], arg: u8, offset: i64, size: u8) -> Option<u64> {
    // The last store wins, as in memory.
    stores.iter().rev().find(|s| s.arg == arg && s.offset == offset && s.size == size).map(|s| s.value)
}

fn truncate(value: u64, size: u8) -> u64 {
    if size >= 8 {
        value
    } else {
        value & ((1u64 << (8 * size)) - 1)
    }
}

fn store(stores: &mut Vec<Store>, base: Value, disp: i64, size: u8, value: Value, at: u64) -> Result<(), String> {
    match (base, value) {
        (Value::Arg(arg, off), Value::Const(v)) => {
            stores.push(Store { arg, offset: off + disp, size, value: truncate(v, size) });
            Ok(())
        }
        (Value::Arg(..), _) => Err(format!("instruction at {at:#x} stores a value computed at run time")),
        _ => Err(format!("instruction at {at:#x} stores through something other than an argument")),
    }
}

fn x64(code: &Code<'_>) -> Result<Vec<Store>, String> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let mut regs: HashMap<Register, Value> = HashMap::new();
    // Windows x64: the first four integer arguments in rcx, rdx, r8, r9.
    for (i, r) in [Register::RCX, Register::RDX, Register::R8, Register::R9].into_iter().enumerate() {
        regs.insert(r, Value::Arg(i as u8, 0));
    }
    let get =
        |regs: &HashMap<Register, Value>, r: Register| regs.get(&r.full_register()).copied().unwrap_or(Value::Unknown);
    let mut stores = Vec::new();
    let mut decoder = Decoder::with_ip(64, code.code, code.va, DecoderOptions::NONE);
    for _ in 0..MAX_INSTRUCTIONS {
        if !decoder.can_decode() {
            return Err("the callback runs past the end of its section".into());
        }
        let ins = decoder.decode();
        let at = ins.ip();
        if ins.is_invalid() {
            return Err(format!("invalid instruction at {at:#x}"));
        }
        let immediate = |i: u32| -> Option<u64> {
            match ins.op_kind(i) {
                OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate64 => {
                    Some(ins.immediate(i))
                }
                OpKind::Immediate8to32 | OpKind::Immediate8to64 | OpKind::Immediate32to64 => Some(ins.immediate(i)),
                _ => None,
            }
        };
        let written = |r: Register, v: Value, regs: &mut HashMap<Register, Value>| {
            // A 32-bit write zero-extends; narrower writes merge, which we do not track.
            let v = match (r.size(), v) {
                (8, v) => v,
                (4, Value::Const(c)) => Value::Const(c & 0xffff_ffff),
                _ => Value::Unknown,
            };
            regs.insert(r.full_register(), v);
        };
        match ins.mnemonic() {
            Mnemonic::Ret => return Ok(stores),
            Mnemonic::Nop => {}
            // Frame set-up and tear-down touch only rsp/rbp.
            Mnemonic::Push | Mnemonic::Pop if ins.op0_register().full_register() == Register::RBP => {}
            Mnemonic::Sub | Mnemonic::Add if ins.op0_register() == Register::RSP => {}
            Mnemonic::Mov
                if ins.op0_kind() == OpKind::Register
                    && matches!(ins.op0_register(), Register::RBP | Register::RSP) => {}
            // Callee-saved registers spilled to the frame and reloaded from it.
            Mnemonic::Mov
                if ins.op0_kind() == OpKind::Memory && matches!(ins.memory_base(), Register::RSP | Register::RBP) => {}
            Mnemonic::Mov
                if ins.op1_kind() == OpKind::Memory && matches!(ins.memory_base(), Register::RSP | Register::RBP) =>
            {
                written(ins.op0_register(), Value::Unknown, &mut regs);
            }
            Mnemonic::Mov if ins.op0_kind() == OpKind::Memory => {
                if ins.memory_index() != Register::None {
                    return Err(format!("instruction at {at:#x} stores through an indexed address"));
                }
                let value = match ins.op1_kind() {
                    OpKind::Register => get(&regs, ins.op1_register()),
                    _ => immediate(1).map_or(Value::Unknown, Value::Const),
                };
                let size = ins.memory_size().size() as u8;
                store(&mut stores, get(&regs, ins.memory_base()), ins.memory_displacement64() as i64, size, value, at)?;
            }
            Mnemonic::Mov if ins.op0_kind() == OpKind::Register => {
                let value = match ins.op1_kind() {
                    OpKind::Register => get(&regs, ins.op1_register()),
                    _ => immediate(1).map_or(Value::Unknown, Value::Const),
                };
                if ins.op1_kind() == OpKind::Memory {
                    return Err(format!("instruction at {at:#x} loads from memory"));
                }
                written(ins.op0_register(), value, &mut regs);
            }
            Mnemonic::Lea if ins.is_ip_rel_memory_operand() => {
                written(ins.op0_register(), Value::Const(ins.ip_rel_memory_address()), &mut regs);
            }
            Mnemonic::Xor if ins.op0_kind() == OpKind::Register && ins.op1_kind() == OpKind::Register => {
                let zero = ins.op0_register() == ins.op1_register();
                written(ins.op0_register(), if zero { Value::Const(0) } else { Value::Unknown }, &mut regs);
            }
            _ => {
                return Err(format!(
                    "instruction at {at:#x} ({:?}) is outside a metadata callback's shape",
                    ins.mnemonic()
                ))
            }
        }
    }
    Err(format!("the callback has more than {MAX_INSTRUCTIONS} instructions"))
}

fn sign_extend(value: u64, bits: u32) -> i64 {
    ((value << (64 - bits)) as i64) >> (64 - bits)
}

/// One AArch64 instruction's effect on the abstract machine; `Ok(true)` at `ret`.
fn arm64_step(
    w: u32,
    pc: u64,
    regs: &mut [Value; 32],
    stores: &mut Vec<Store>,
    code: &Code<'_>,
) -> Result<bool, String> {
    let rd = (w & 31) as usize;
    let rn = ((w >> 5) & 31) as usize;
    let sf = w >> 31 == 1;
    // Register 31 is the stack pointer or the zero register depending on the instruction; writes to it (frame
    // set-up) and to x29/x30 (frame record) are not tracked.
    let set = |regs: &mut [Value; 32], r: usize, v: Value| {
        if r < 31 {
            regs[r] = match (sf, v) {
                (false, Value::Const(c)) => Value::Const(c & 0xffff_ffff),
                (false, _) => Value::Unknown,
                (true, v) => v,
            };
        }
    };
    let unsupported = || format!("instruction {w:#010x} at {pc:#x} is outside a metadata callback's shape");
    match w {
        0xd65f_03c0 => return Ok(true),
        // NOP and the other hints (PACIASP, AUTIASP, BTI).
        _ if w & 0xffff_f01f == 0xd503_201f => {}
        // MOVZ / MOVN / MOVK (wide immediate).
        _ if w & 0x1f80_0000 == 0x1280_0000 => {
            let opc = (w >> 29) & 3;
            let shift = 16 * ((w >> 21) & 3);
            let imm = u64::from((w >> 5) & 0xffff) << shift;
            let v = match (opc, regs[rd]) {
                (0b10, _) => Value::Const(imm),
                (0b00, _) => Value::Const(!imm),
                (0b11, Value::Const(old)) => Value::Const((old & !(0xffffu64 << shift)) | imm),
                (0b11, _) => Value::Unknown,
                _ => return Err(unsupported()),
            };
            set(regs, rd, v);
        }
        // ADR / ADRP.
        _ if w & 0x1f00_0000 == 0x1000_0000 => {
            let imm = u64::from(((w >> 5) & 0x7ffff) << 2 | ((w >> 29) & 3));
            let v = if w >> 31 == 1 {
                (pc & !0xfff).wrapping_add(sign_extend(imm << 12, 33) as u64)
            } else {
                pc.wrapping_add(sign_extend(imm, 21) as u64)
            };
            if rd < 31 {
                regs[rd] = Value::Const(v);
            }
        }
        // ADD / SUB (immediate), without flags.
        _ if w & 0x3f80_0000 == 0x1100_0000 => {
            let imm = u64::from((w >> 10) & 0xfff) << if w & (1 << 22) != 0 { 12 } else { 0 };
            let sub = w & (1 << 30) != 0;
            let delta = if sub { (imm as i64).wrapping_neg() } else { imm as i64 };
            let v = match if rn == 31 { Value::Unknown } else { regs[rn] } {
                Value::Const(c) => Value::Const(c.wrapping_add(delta as u64)),
                Value::Arg(a, o) => Value::Arg(a, o + delta),
                Value::Unknown => Value::Unknown,
            };
            set(regs, rd, v);
        }
        // ORR (shifted register) with the zero register and no shift: MOV.
        _ if w & 0x7fe0_fc00 == 0x2a00_0000 && rn == 31 => {
            let rm = ((w >> 16) & 31) as usize;
            set(regs, rd, if rm == 31 { Value::Const(0) } else { regs[rm] });
        }
        // LDR (literal), 64-bit: a constant the loader relocates.
        _ if w & 0xff00_0000 == 0x5800_0000 => {
            let at = pc.wrapping_add(sign_extend(u64::from((w >> 5) & 0x7ffff) << 2, 21) as u64);
            let v = (code.load64)(at).ok_or_else(|| format!("literal at {at:#x} is outside the image"))?;
            set(regs, rd, Value::Const(v));
        }
        // STR (immediate, unsigned offset) and STUR, general registers.
        _ if w & 0x3fc0_0000 == 0x3900_0000 || w & 0x3fe0_0c00 == 0x3800_0000 => {
            let size = 1u8 << (w >> 30);
            let disp = if w & 0x0100_0000 != 0 {
                i64::from((w >> 10) & 0xfff) * i64::from(size)
            } else {
                sign_extend(u64::from((w >> 12) & 0x1ff), 9)
            };
            let value = if rd == 31 { Value::Const(0) } else { regs[rd] };
            if rn == 31 {
                return Ok(false); // a spill to the stack
            }
            store(stores, regs[rn], disp, size, value, pc)?;
        }
        // STP / LDP on the stack or the frame pointer (frame record set-up and tear-down).
        _ if w & 0x3a00_0000 == 0x2800_0000 && (rn == 31 || rn == 29) => {
            if w & (1 << 22) != 0 {
                for r in [rd, ((w >> 10) & 31) as usize] {
                    if r < 31 {
                        regs[r] = Value::Unknown;
                    }
                }
            }
        }
        // Pre/post-indexed STR/LDR on the stack.
        _ if w & 0x3b20_0400 == 0x3800_0400 && rn == 31 => {
            if w & (1 << 22) != 0 && rd < 31 {
                regs[rd] = Value::Unknown;
            }
        }
        _ => return Err(unsupported()),
    }
    Ok(false)
}

fn arm64(code: &Code<'_>) -> Result<Vec<Store>, String> {
    let mut regs = [Value::Unknown; 32];
    for (i, r) in regs.iter_mut().enumerate().take(8) {
        *r = Value::Arg(i as u8, 0);
    }
    let mut stores = Vec::new();
    for i in 0..MAX_INSTRUCTIONS {
        let at = i * 4;
        let word = code.code.get(at..at + 4).ok_or("the callback runs past the end of its section")?;
        let w = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        if arm64_step(w, code.va + at as u64, &mut regs, &mut stores, code)? {
            return Ok(stores);
        }
    }
    Err(format!("the callback has more than {MAX_INSTRUCTIONS} instructions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(machine: u16, bytes: &[u8]) -> Result<Vec<Store>, String> {
        let no_memory = |_: u64| None;
        evaluate(machine, &Code { va: 0x1_4000_1000, code: bytes, load64: &no_memory })
    }

    #[test]
    fn x64_array_callback_stores_an_address_and_a_count() {
        // lea rax, [rip+0x10]; mov [rcx], rax; mov qword [rdx], 3; ret
        let code = [0x48, 0x8d, 0x05, 0x10, 0, 0, 0, 0x48, 0x89, 0x01, 0x48, 0xc7, 0x02, 3, 0, 0, 0, 0xc3];
        let s = run(object::pe::IMAGE_FILE_MACHINE_AMD64, &code).unwrap();
        assert_eq!(stored(&s, 0, 0, 8), Some(0x1_4000_1000 + 7 + 0x10));
        assert_eq!(stored(&s, 1, 0, 8), Some(3));
    }

    #[test]
    fn x64_version_callback_stores_three_numbers() {
        // mov dword [rcx], 1; mov dword [rcx+4], 5; mov dword [rcx+8], 0; ret
        let code = [0xc7, 0x01, 1, 0, 0, 0, 0xc7, 0x41, 4, 5, 0, 0, 0, 0xc7, 0x41, 8, 0, 0, 0, 0, 0xc3];
        let s = run(object::pe::IMAGE_FILE_MACHINE_AMD64, &code).unwrap();
        assert_eq!([0, 4, 8].map(|o| stored(&s, 0, o, 4)), [Some(1), Some(5), Some(0)]);
    }

    #[test]
    fn x64_callbacks_that_load_or_branch_are_refused() {
        // mov rax, [rcx]; ret
        assert!(run(object::pe::IMAGE_FILE_MACHINE_AMD64, &[0x48, 0x8b, 0x01, 0xc3]).is_err());
        // jmp $; (never returns)
        assert!(run(object::pe::IMAGE_FILE_MACHINE_AMD64, &[0xeb, 0xfe]).is_err());
        // falls off the end
        assert!(run(object::pe::IMAGE_FILE_MACHINE_AMD64, &[0x90]).is_err());
    }

    #[test]
    fn arm64_array_callback_with_a_frame_record() {
        let words: [u32; 9] = [
            0xa9bf_7bfd, // stp x29, x30, [sp, #-16]!
            0x9100_03fd, // mov x29, sp
            0x9000_0008, // adrp x8, page
            0x9104_0108, // add x8, x8, #0x100
            0xf900_0008, // str x8, [x0]
            0xd280_0049, // mov x9, #2
            0xf900_0029, // str x9, [x1]
            0xa8c1_7bfd, // ldp x29, x30, [sp], #16
            0xd65f_03c0, // ret
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let s = run(object::pe::IMAGE_FILE_MACHINE_ARM64, &bytes).unwrap();
        assert_eq!(stored(&s, 0, 0, 8), Some(0x1_4000_1000 + 0x100));
        assert_eq!(stored(&s, 1, 0, 8), Some(2));
    }

    #[test]
    fn arm64_version_callback_with_wide_immediates() {
        let words: [u32; 5] = [
            0x5280_0028, // mov w8, #1
            0xb900_0008, // str w8, [x0]
            0x5280_00a8, // mov w8, #5
            0x2900_7c08, // stp w8, wzr, [x0, #4]: refused (not a frame record)
            0xd65f_03c0,
        ];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert!(run(object::pe::IMAGE_FILE_MACHINE_ARM64, &bytes).is_err());
        let words: [u32; 7] =
            [0x5280_0028, 0xb900_0008, 0x5280_00a8, 0xb900_0408, 0xb900_081f, 0xd503_201f, 0xd65f_03c0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let s = run(object::pe::IMAGE_FILE_MACHINE_ARM64, &bytes).unwrap();
        assert_eq!([0, 4, 8].map(|o| stored(&s, 0, o, 4)), [Some(1), Some(5), Some(0)]);
    }
}
