//! Assembler for the bpf_conformance text syntax ("ubpf-style", ../shared/docs/test-corpora.md §1.3).
//!
//! In: assembly text, one instruction or label per line. Out: [`Instruction`]s indexed by slot, exactly as
//! [`super::decode`] would return them for the encoded bytes (a `lddw` is followed by its
//! [`Instruction::LoadImm64Continuation`]).
//!
//! The syntax, as the conformance suite's own assembler (`lib/src/bpf_assembler.cc`) reads it:
//! - the mnemonic comes first, then operands separated by whitespace, each with one trailing `,` removed;
//! - registers are `%r0`..`%r10`; memory operands are `[%rN]`, `[%rN+off]` or `[%rN-off]` without spaces;
//! - `label:` on its own line names the next instruction's slot; `exit` is an implicit label for the slot of the
//!   first `exit` instruction; jump targets are labels or explicitly signed slot counts (`+1`, `-3`) relative to
//!   the next slot, and a `lddw` counts as two slots;
//! - immediates containing `0x` are hexadecimal and at most `0xffffffff` (the raw 32 bits), otherwise decimal in
//!   the `i32` range; `lddw` takes any 64-bit value; offsets are `i16` decimals or hexadecimals up to `0xffff`.
//!
//! Extensions (so that every decodable instruction has a text form and [`super::disasm`] round-trips): the
//! `lddw` pseudo sources of RFC 9669 §5.4 as `KIND(imm)` with an optional `+next_imm`/`-next_imm`, where `KIND`
//! is one of `map_by_fd`, `map_val_by_fd`, `var_addr`, `code_addr`, `map_by_idx`, `map_val_by_idx`; the legacy
//! packet loads `ldabs{b,h,w} imm` and `ldind{b,h,w} %rS, imm` (RFC 9669 §5.5); `call runtime id, module` for
//! a BTF call into a module other than 0; `gotol` as a synonym of `ja32`; uBPF's `ldx{b,h,w}sx` as synonyms of
//! `ldxs{b,h,w}`; a `#` starts a comment.

use std::collections::HashMap;

use super::{
    AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, PacketLoadMode, Reg, Width,
};

/// An assembly error: the 1-based line number, the line's text and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message} (in `{text}`)")]
pub struct AsmError {
    pub line: usize,
    pub text: String,
    pub message: String,
}

/// Assembles a whole text. Line numbers in errors count from 1 at the first line of `text`.
pub fn assemble(text: &str) -> Result<Vec<Instruction>, AsmError> {
    assemble_lines(text.lines().enumerate().map(|(i, l)| (i + 1, l)))
}

/// Assembles numbered lines (the conformance harness passes the file's own line numbers).
pub fn assemble_lines<'a>(lines: impl IntoIterator<Item = (usize, &'a str)>) -> Result<Vec<Instruction>, AsmError> {
    // Pass 1: split lines into statements, assign slots, collect labels.
    let mut statements: Vec<Statement<'a>> = Vec::new();
    let mut labels: HashMap<&'a str, usize> = HashMap::new();
    let mut slot = 0usize;
    let mut seen_exit = false;
    for (line, raw_text) in lines {
        let text = raw_text.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let err = |message: String| AsmError { line, text: text.to_string(), message };
        let mut tokens = text.split_whitespace();
        let mnemonic = tokens.next().expect("non-empty line has a token");
        if let Some(label) = mnemonic.strip_suffix(':') {
            if tokens.next().is_some() {
                return Err(err("a label must be alone on its line".into()));
            }
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                return Err(err(format!("invalid label name `{label}`")));
            }
            if labels.insert(label, slot).is_some() {
                return Err(err(format!("label `{label}` is defined twice")));
            }
            continue;
        }
        let operands: Vec<&'a str> = tokens.map(|t| t.strip_suffix(',').unwrap_or(t)).collect();
        if mnemonic == "exit" && !seen_exit {
            // The implicit label: like upstream, it replaces an `exit:` defined earlier, and an `exit:` defined
            // later is a duplicate.
            seen_exit = true;
            labels.insert("exit", slot);
        }
        let slots = if mnemonic == "lddw" { 2 } else { 1 };
        statements.push(Statement { line, text, mnemonic, operands, slot });
        slot += slots;
    }

    // Pass 2: encode.
    let mut out = Vec::with_capacity(slot);
    for statement in &statements {
        let ctx = Context { statement, labels: &labels };
        let insn = ctx.instruction().map_err(|message| AsmError {
            line: statement.line,
            text: statement.text.to_string(),
            message,
        })?;
        out.push(insn);
        if matches!(insn, Instruction::LoadImm64 { .. }) {
            out.push(Instruction::LoadImm64Continuation);
        }
    }
    Ok(out)
}

struct Statement<'a> {
    line: usize,
    text: &'a str,
    mnemonic: &'a str,
    operands: Vec<&'a str>,
    slot: usize,
}

struct Context<'s, 'a> {
    statement: &'s Statement<'a>,
    labels: &'s HashMap<&'a str, usize>,
}

type Res<T> = Result<T, String>;

const ALU_OPS: [(&str, AluOp); 14] = [
    ("add", AluOp::Add),
    ("sub", AluOp::Sub),
    ("mul", AluOp::Mul),
    ("div", AluOp::Div),
    ("sdiv", AluOp::SDiv),
    ("or", AluOp::Or),
    ("and", AluOp::And),
    ("lsh", AluOp::Lsh),
    ("rsh", AluOp::Rsh),
    ("mod", AluOp::Mod),
    ("smod", AluOp::SMod),
    ("xor", AluOp::Xor),
    ("mov", AluOp::Mov),
    ("arsh", AluOp::Arsh),
];

const JUMP_CONDS: [(&str, JumpCond); 11] = [
    ("jeq", JumpCond::Eq),
    ("jgt", JumpCond::Gt),
    ("jge", JumpCond::Ge),
    ("jset", JumpCond::Set),
    ("jne", JumpCond::Ne),
    ("jsgt", JumpCond::Sgt),
    ("jsge", JumpCond::Sge),
    ("jlt", JumpCond::Lt),
    ("jle", JumpCond::Le),
    ("jslt", JumpCond::Slt),
    ("jsle", JumpCond::Sle),
];

const IMM64_KINDS: [(&str, Imm64Kind); 6] = [
    ("map_by_fd", Imm64Kind::MapFd),
    ("map_val_by_fd", Imm64Kind::MapValue),
    ("var_addr", Imm64Kind::VariableAddr),
    ("code_addr", Imm64Kind::CodeAddr),
    ("map_by_idx", Imm64Kind::MapIndex),
    ("map_val_by_idx", Imm64Kind::MapIndexValue),
];

/// The text name of a `lddw` pseudo source (the assembler extension above); `None` for a plain immediate.
pub(crate) fn imm64_kind_mnemonic(kind: Imm64Kind) -> Option<&'static str> {
    IMM64_KINDS.iter().find(|(_, k)| *k == kind).map(|(name, _)| *name)
}

pub(crate) fn alu_mnemonic(op: AluOp) -> &'static str {
    ALU_OPS.iter().find(|(_, o)| *o == op).map(|(name, _)| *name).expect("every ALU op but neg/movsx has a name")
}

pub(crate) fn jump_mnemonic(cond: JumpCond) -> &'static str {
    JUMP_CONDS.iter().find(|(_, c)| *c == cond).map(|(name, _)| *name).expect("every condition has a name")
}

fn size_suffix(s: &str) -> Option<MemSize> {
    Some(match s {
        "b" => MemSize::B,
        "h" => MemSize::H,
        "w" => MemSize::W,
        "dw" => MemSize::DW,
        _ => return None,
    })
}

impl Context<'_, '_> {
    fn operands(&self, n: usize) -> Res<&[&str]> {
        let ops = &self.statement.operands;
        if ops.len() != n {
            return Err(format!(
                "invalid number of operands for {}: expected {n}, found {}",
                self.statement.mnemonic,
                ops.len()
            ));
        }
        Ok(ops)
    }

    fn instruction(&self) -> Res<Instruction> {
        let m = self.statement.mnemonic;
        if m == "exit" {
            self.operands(0)?;
            return Ok(Instruction::Exit);
        }
        if m == "neg" || m == "neg64" || m == "neg32" {
            let ops = self.operands(1)?;
            let width = if m == "neg32" { Width::W32 } else { Width::W64 };
            return Ok(Instruction::Alu { width, op: AluOp::Neg, dst: register(ops[0])?, src: Operand::Imm(0) });
        }
        if let Some(rest) = m.strip_prefix("movsx") {
            return self.movsx(rest);
        }
        if let Some((op, width)) = split_width(m, &ALU_OPS) {
            let ops = self.operands(2)?;
            return Ok(Instruction::Alu { width, op, dst: register(ops[0])?, src: operand(ops[1])? });
        }
        if let Some(insn) = self.endian(m)? {
            return Ok(insn);
        }
        if m == "ja" {
            let ops = self.operands(1)?;
            let offset = self.target(ops[0])?;
            let offset = i16::try_from(offset).map_err(|_| format!("jump offset {offset} does not fit in 16 bits"))?;
            return Ok(Instruction::Jump { offset: offset as i32, long: false });
        }
        if m == "ja32" || m == "gotol" {
            let ops = self.operands(1)?;
            return Ok(Instruction::Jump { offset: self.target(ops[0])?, long: true });
        }
        if let Some((cond, width)) = split_width(m, &JUMP_CONDS) {
            let ops = self.operands(3)?;
            let offset = self.target(ops[2])?;
            let offset = i16::try_from(offset).map_err(|_| format!("jump offset {offset} does not fit in 16 bits"))?;
            return Ok(Instruction::JumpIf { width, cond, dst: register(ops[0])?, src: operand(ops[1])?, offset });
        }
        if m == "call" {
            return self.call();
        }
        if m == "lddw" {
            return self.lddw();
        }
        if m == "lock" {
            return self.atomic();
        }
        // `ldxs{b,h,w}` (bpf_conformance) or `ldx{b,h,w}sx` (uBPF's tests): sign-extending loads.
        let sign_extending =
            m.strip_prefix("ldxs").or_else(|| m.strip_prefix("ldx").and_then(|r| r.strip_suffix("sx")));
        if let Some(rest) = sign_extending {
            let size = size_suffix(rest).filter(|s| *s != MemSize::DW).ok_or_else(|| unknown(m))?;
            let ops = self.operands(2)?;
            let (src, offset) = memory(ops[1])?;
            return Ok(Instruction::Load { size, sign_extend: true, dst: register(ops[0])?, src, offset });
        }
        if let Some(rest) = m.strip_prefix("ldx") {
            let size = size_suffix(rest).ok_or_else(|| unknown(m))?;
            let ops = self.operands(2)?;
            let (src, offset) = memory(ops[1])?;
            return Ok(Instruction::Load { size, sign_extend: false, dst: register(ops[0])?, src, offset });
        }
        if let Some(rest) = m.strip_prefix("stx") {
            let size = size_suffix(rest).ok_or_else(|| unknown(m))?;
            let ops = self.operands(2)?;
            let (dst, offset) = memory(ops[0])?;
            return Ok(Instruction::Store { size, dst, offset, src: Operand::Reg(register(ops[1])?) });
        }
        if let Some(rest) = m.strip_prefix("st") {
            let size = size_suffix(rest).ok_or_else(|| unknown(m))?;
            let ops = self.operands(2)?;
            let (dst, offset) = memory(ops[0])?;
            return Ok(Instruction::Store { size, dst, offset, src: Operand::Imm(imm32(ops[1])?) });
        }
        if let Some(rest) = m.strip_prefix("ldabs") {
            let size = size_suffix(rest).filter(|s| *s != MemSize::DW).ok_or_else(|| unknown(m))?;
            let ops = self.operands(1)?;
            return Ok(Instruction::LegacyPacketLoad {
                mode: PacketLoadMode::Abs,
                size,
                src: Reg::R0,
                imm: imm32(ops[0])?,
            });
        }
        if let Some(rest) = m.strip_prefix("ldind") {
            let size = size_suffix(rest).filter(|s| *s != MemSize::DW).ok_or_else(|| unknown(m))?;
            let ops = self.operands(2)?;
            return Ok(Instruction::LegacyPacketLoad {
                mode: PacketLoadMode::Ind,
                size,
                src: register(ops[0])?,
                imm: imm32(ops[1])?,
            });
        }
        Err(unknown(m))
    }

    fn movsx(&self, rest: &str) -> Res<Instruction> {
        // movsx{8,16,32}{32,64}: source width, then operation width.
        let m = self.statement.mnemonic;
        let (bits, width) = match rest {
            "832" => (8, Width::W32),
            "1632" => (16, Width::W32),
            "864" => (8, Width::W64),
            "1664" => (16, Width::W64),
            "3264" => (32, Width::W64),
            _ => return Err(unknown(m)),
        };
        let ops = self.operands(2)?;
        let src = register(ops[1]).map_err(|e| format!("{e} (movsx takes a register source)"))?;
        Ok(Instruction::Alu { width, op: AluOp::MovSx(bits), dst: register(ops[0])?, src: Operand::Reg(src) })
    }

    fn endian(&self, m: &str) -> Res<Option<Instruction>> {
        let (order, bits) = if let Some(b) = m.strip_prefix("le") {
            (ByteOrder::ToLe, b)
        } else if let Some(b) = m.strip_prefix("be") {
            (ByteOrder::ToBe, b)
        } else if let Some(b) = m.strip_prefix("bswap").or_else(|| m.strip_prefix("swap")) {
            (ByteOrder::Swap, b)
        } else {
            return Ok(None);
        };
        let bits = match bits {
            "16" => 16,
            "32" => 32,
            "64" => 64,
            _ => return Ok(None),
        };
        let ops = self.operands(1)?;
        Ok(Some(Instruction::Endian { order, bits, dst: register(ops[0])? }))
    }

    fn call(&self) -> Res<Instruction> {
        let ops = &self.statement.operands;
        match ops.as_slice() {
            [target] | ["helper", target] if target.starts_with('%') => {
                Ok(Instruction::CallReg { reg: register(target)? })
            }
            [id] | ["helper", id] => Ok(Instruction::CallHelper { id: imm32(id)? }),
            ["local", target] => Ok(Instruction::CallLocal { offset: self.target(target)? }),
            ["runtime", id] => Ok(Instruction::CallBtf { btf_id: imm32(id)?, module: 0 }),
            ["runtime", id, module] => Ok(Instruction::CallBtf { btf_id: imm32(id)?, module: offset16(module)? }),
            _ => Err(format!(
                "invalid operands for call: expected `N`, `helper N`, `local TARGET`, `runtime N` or `%rN`, found {} \
                 operand(s)",
                ops.len()
            )),
        }
    }

    fn lddw(&self) -> Res<Instruction> {
        let ops = self.operands(2)?;
        let dst = register(ops[0])?;
        let value = ops[1];
        for (name, kind) in IMM64_KINDS {
            if let Some(rest) = value.strip_prefix(name).and_then(|r| r.strip_prefix('(')) {
                let (imm, tail) = rest.split_once(')').ok_or_else(|| format!("missing `)` in `{value}`"))?;
                let imm = imm32(imm)?;
                let next_imm = match tail {
                    "" => 0,
                    t if t.starts_with('+') || t.starts_with('-') => parse_decimal_i32(t)?,
                    t => return Err(format!("expected `+N` or `-N` after `{name}(...)`, found `{t}`")),
                };
                return Ok(Instruction::LoadImm64 { dst, kind, imm, next_imm });
            }
        }
        let v = imm64(value)?;
        Ok(Instruction::LoadImm64 {
            dst,
            kind: Imm64Kind::Imm,
            imm: v as u32 as i32,
            next_imm: (v >> 32) as u32 as i32,
        })
    }

    fn atomic(&self) -> Res<Instruction> {
        // lock [fetch] OP[32] [%rD±off], %rS
        let ops = &self.statement.operands;
        let (fetch, rest) = match ops.first() {
            Some(&"fetch") => (true, &ops[1..]),
            _ => (false, &ops[..]),
        };
        let [op_name, mem, src] = rest else {
            return Err(format!(
                "invalid number of operands for lock: expected `lock [fetch] OP [%rD+off], %rS`, found {} operand(s)",
                ops.len()
            ));
        };
        let (name, size) = match op_name.strip_suffix("32") {
            Some(n) => (n, MemSize::W),
            None => (*op_name, MemSize::DW),
        };
        let op = match name {
            "add" => AtomicOp::Add,
            "or" => AtomicOp::Or,
            "and" => AtomicOp::And,
            "xor" => AtomicOp::Xor,
            "xchg" => AtomicOp::Xchg,
            "cmpxchg" => AtomicOp::CmpXchg,
            _ => return Err(format!("unknown atomic operation `{op_name}`")),
        };
        // xchg and cmpxchg always fetch (RFC 9669 §5.3); `fetch` is accepted but redundant for them.
        let fetch = fetch || matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg);
        let (dst, offset) = memory(mem)?;
        Ok(Instruction::Atomic { size, op, fetch, dst, src: register(src)?, offset })
    }

    /// A jump or local-call target, as the offset relative to the next slot.
    fn target(&self, token: &str) -> Res<i32> {
        if token.starts_with('+') || token.starts_with('-') {
            return parse_decimal_i32(token);
        }
        let Some(&target) = self.labels.get(token) else {
            return Err(format!("unknown label `{token}` (targets are labels or signed slot counts like +1)"));
        };
        let offset = target as i64 - self.statement.slot as i64 - 1;
        i32::try_from(offset).map_err(|_| format!("jump to `{token}` is too far"))
    }
}

fn unknown(mnemonic: &str) -> String {
    format!("unknown mnemonic `{mnemonic}`")
}

/// Splits `add32` into (Add, W32) and `add`/`add64` into (Add, W64) given a name table.
fn split_width<T: Copy>(mnemonic: &str, table: &[(&str, T)]) -> Option<(T, Width)> {
    let (base, width) = if let Some(b) = mnemonic.strip_suffix("32") {
        (b, Width::W32)
    } else if let Some(b) = mnemonic.strip_suffix("64") {
        (b, Width::W64)
    } else {
        (mnemonic, Width::W64)
    };
    table.iter().find(|(name, _)| *name == base).map(|(_, v)| (*v, width))
}

fn register(token: &str) -> Res<Reg> {
    let n = token
        .strip_prefix("%r")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("invalid register `{token}` (expected %r0..%r10)"))?;
    n.parse::<u8>().ok().and_then(Reg::new).ok_or_else(|| format!("invalid register `{token}` (expected %r0..%r10)"))
}

fn operand(token: &str) -> Res<Operand> {
    if token.starts_with('%') {
        Ok(Operand::Reg(register(token)?))
    } else {
        Ok(Operand::Imm(imm32(token)?))
    }
}

/// A 32-bit immediate: hex (raw bits, at most 0xffffffff) or a decimal in the `i32` range.
fn imm32(token: &str) -> Res<i32> {
    if let Some(hex) = token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")) {
        let v = u64::from_str_radix(hex, 16).map_err(|_| format!("invalid hexadecimal immediate `{token}`"))?;
        let v = u32::try_from(v).map_err(|_| format!("immediate `{token}` is out of the 32-bit range"))?;
        return Ok(v as i32);
    }
    if token.contains("0x") {
        return Err(format!("invalid immediate `{token}` (hexadecimal immediates are unsigned)"));
    }
    parse_decimal_i32(token)
}

fn parse_decimal_i32(token: &str) -> Res<i32> {
    let v: i64 = parse_decimal(token)?;
    i32::try_from(v).map_err(|_| format!("immediate `{token}` is out of the 32-bit signed range"))
}

fn parse_decimal(token: &str) -> Res<i64> {
    let digits = token.strip_prefix('+').or_else(|| token.strip_prefix('-')).unwrap_or(token);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid number `{token}`"));
    }
    token.parse::<i64>().map_err(|_| format!("number `{token}` is out of range"))
}

/// A `lddw` immediate: any 64-bit hex value, or a decimal in the `i64` or `u64` range.
fn imm64(token: &str) -> Res<u64> {
    if let Some(hex) = token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| format!("invalid 64-bit hexadecimal immediate `{token}`"));
    }
    if let Ok(v) = token.parse::<u64>() {
        return Ok(v);
    }
    parse_decimal(token).map(|v| v as u64)
}

/// A 16-bit offset: decimal `i16`, or hexadecimal up to 0xffff (raw bits).
fn offset16(token: &str) -> Res<i16> {
    let (negative, body) = match token.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, token.strip_prefix('+').unwrap_or(token)),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        let v = u32::from_str_radix(hex, 16).map_err(|_| format!("invalid hexadecimal offset `{token}`"))?;
        let v = u16::try_from(v).map_err(|_| format!("offset `{token}` is out of the 16-bit range"))?;
        let v = v as i16;
        return Ok(if negative { v.wrapping_neg() } else { v });
    }
    let v = parse_decimal(token)?;
    i16::try_from(v).map_err(|_| format!("offset `{token}` is out of the 16-bit signed range"))
}

/// A memory operand `[%rN]`, `[%rN+off]` or `[%rN-off]`.
fn memory(token: &str) -> Res<(Reg, i16)> {
    let inner = token
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("invalid memory operand `{token}` (expected [%rN+offset])"))?;
    match inner.find(['+', '-']) {
        None => Ok((register(inner)?, 0)),
        Some(at) => {
            let reg = register(&inner[..at])?;
            let off = &inner[at..];
            let off = offset16(off).map_err(|e| format!("{e} in memory operand `{token}`"))?;
            Ok((reg, off))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_the_suite_example() {
        let p = assemble("mov32 %r0, 0\nadd32 %r0, -3\nexit").unwrap();
        assert_eq!(
            p,
            vec![
                Instruction::Alu { width: Width::W32, op: AluOp::Mov, dst: Reg::R0, src: Operand::Imm(0) },
                Instruction::Alu { width: Width::W32, op: AluOp::Add, dst: Reg::R0, src: Operand::Imm(-3) },
                Instruction::Exit,
            ]
        );
    }

    #[test]
    fn lddw_matches_the_raw_encoding_of_the_suite() {
        // lddw.data: its `-- raw` section and its `-- asm` section describe the same bytes.
        let p = assemble("lddw %r0, 0x1122334455667788\nexit").unwrap();
        let words: Vec<u64> = super::super::encode(&p).iter().map(|s| u64::from_le_bytes(s.to_bytes())).collect();
        assert_eq!(words, vec![0x5566778800000018, 0x1122334400000000, 0x0000000000000095]);
    }

    #[test]
    fn labels_count_lddw_as_two_slots_and_exit_is_implicit() {
        let p = assemble("ja done\nlddw %r0, 1\ndone:\njeq %r0, 0, exit\nexit").unwrap();
        assert_eq!(p[0], Instruction::Jump { offset: 2, long: false });
        assert_eq!(
            p[3],
            Instruction::JumpIf {
                width: Width::W64,
                cond: JumpCond::Eq,
                dst: Reg::R0,
                src: Operand::Imm(0),
                offset: 0
            }
        );
    }

    #[test]
    fn the_implicit_exit_label_is_the_first_exit_as_upstream() {
        let p = assemble("exit:\nja exit\nexit\nexit").unwrap();
        assert_eq!(p[0], Instruction::Jump { offset: 0, long: false });
        let e = assemble("exit\nexit:\nexit").unwrap_err();
        assert!(e.message.contains("defined twice"), "{e}");
        assert_eq!(assemble("call helper %r3").unwrap()[0], Instruction::CallReg { reg: Reg::R3 });
    }

    #[test]
    fn hex_immediates_are_raw_bits_and_bounded() {
        let p = assemble("mov %r0, 0xffffffff").unwrap();
        assert_eq!(p[0], Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: Reg::R0, src: Operand::Imm(-1) });
        let e = assemble("mov32 %r0, 0x100000000").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("out of the 32-bit range"), "{e}");
        assert!(assemble("mov32 %r0, 2147483648").unwrap_err().message.contains("32-bit"));
    }

    #[test]
    fn v4_forms_encode_per_the_suite() {
        let bytes = |t: &str| super::super::encode(&assemble(t).unwrap())[0].to_bytes();
        assert_eq!(bytes("sdiv32 %r0, %r1")[..4], [0x3c, 0x10, 1, 0]);
        assert_eq!(bytes("movsx832 %r0, %r1")[..4], [0xbc, 0x10, 8, 0]);
        assert_eq!(bytes("movsx3264 %r0, %r1")[..4], [0xbf, 0x10, 32, 0]);
        assert_eq!(bytes("ldxsb %r0, [%r1+2]")[..4], [0x91, 0x10, 2, 0]);
        assert_eq!(bytes("ldxhsx %r0, [%r1+2]")[..4], [0x89, 0x10, 2, 0]);
        assert_eq!(bytes("bswap16 %r3"), [0xd7, 0x03, 0, 0, 16, 0, 0, 0]);
        assert_eq!(bytes("call %r2"), [0x8d, 0x02, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes("ja32 +3"), [0x06, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(bytes("lock fetch add32 [%r10-8], %r1"), [0xc3, 0x1a, 0xf8, 0xff, 0x01, 0, 0, 0]);
        assert_eq!(bytes("lock cmpxchg [%r10-8], %r1"), [0xdb, 0x1a, 0xf8, 0xff, 0xf1, 0, 0, 0]);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("mov %r0, 0\nja NOT_A_LABEL", 2, "unknown label"),
            ("lock or [%r10-8]", 1, "invalid number of operands for lock"),
            ("lock", 1, "invalid number of operands for lock"),
            ("ldxq %r0, %r1", 1, "unknown mnemonic"),
            ("ldxb %r0, %r1", 1, "invalid memory operand"),
            ("ldxb %r0, [%r1+0x10000]", 1, "16-bit"),
            ("lddw %r0", 1, "invalid number of operands"),
            ("or %r0, %r50", 1, "invalid register"),
            ("or %r0, %r11", 1, "invalid register"),
        ];
        for (text, line, needle) in cases {
            let e = assemble(text).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any text is either assembled or rejected with an error naming a line of the input.
            #[test]
            fn arbitrary_text_is_assembled_or_rejected(
                text in concat!(
                    "(((lock|fetch|call|local|lddw|ldx[bhw]|stx?[bhw]|j[a-z]{1,4}(32)?|mov(sx[0-9]{3,4})?|[a-z]{2,6})",
                    "[ ,]{1,2})?((%r[0-9]{1,2}|\\[%r[0-9]{1,2}[-+][0-9a-fx]{1,6}\\]|[-+]?(0x)?[0-9a-f]{1,17}",
                    "|[a-z]{1,5}:?)[ ,]{0,2}){0,4}\n){0,8}"
                ),
                noise in "\\PC{0,80}",
            ) {
                for input in [text.as_str(), noise.as_str()] {
                    if let Err(e) = assemble(input) {
                        prop_assert!(e.line >= 1 && e.line <= input.lines().count(), "{e}");
                    }
                }
            }
        }
    }
}
