//! Rendering of rejections: rustc-style text (annotate-snippets) and JSON, plus a small disassembler for
//! naming the failing instruction.

use annotate_snippets::{Level, Renderer, Snippet};

use crate::isa::{AluOp, AtomicOp, Instruction, JumpCond, MemSize, Operand, Width};

use super::Rejection;

fn size_name(s: MemSize) -> &'static str {
    match s {
        MemSize::B => "u8",
        MemSize::H => "u16",
        MemSize::W => "u32",
        MemSize::DW => "u64",
    }
}

fn operand(o: Operand) -> String {
    match o {
        Operand::Reg(r) => r.to_string(),
        Operand::Imm(i) => i.to_string(),
    }
}

/// One instruction in the PREVAIL/clang assembly style.
pub fn disassemble(insn: &Instruction) -> String {
    let reg = |r: crate::isa::Reg, w: Width| if w == Width::W32 { format!("w{}", r.number()) } else { r.to_string() };
    match *insn {
        Instruction::Alu { width, op, dst, src } => {
            let d = reg(dst, width);
            let s = match src {
                Operand::Reg(r) => reg(r, width),
                Operand::Imm(i) => i.to_string(),
            };
            let sym = match op {
                AluOp::Add => "+=",
                AluOp::Sub => "-=",
                AluOp::Mul => "*=",
                AluOp::Div => "/=",
                AluOp::SDiv => "s/=",
                AluOp::Or => "|=",
                AluOp::And => "&=",
                AluOp::Lsh => "<<=",
                AluOp::Rsh => ">>=",
                AluOp::Mod => "%=",
                AluOp::SMod => "s%=",
                AluOp::Xor => "^=",
                AluOp::Mov => "=",
                AluOp::Arsh => "s>>=",
                AluOp::Neg => return format!("{d} = -{d}"),
                AluOp::MovSx(n) => return format!("{d} = (s{n}){s}"),
            };
            format!("{d} {sym} {s}")
        }
        Instruction::Endian { order, bits, dst } => format!("{dst} = {order:?}{bits} {dst}").to_lowercase(),
        Instruction::LoadImm64 { dst, kind, imm, next_imm } => match kind {
            crate::isa::Imm64Kind::Imm => format!("{dst} = {} ll", Instruction::imm64(imm, next_imm) as i64),
            k => format!("{dst} = {}({imm}) + {next_imm}", k.name()),
        },
        Instruction::LoadImm64Continuation => "(lddw second slot)".into(),
        Instruction::Load { size, sign_extend, dst, src, offset } => {
            let t = if sign_extend { size_name(size).replace('u', "s") } else { size_name(size).to_string() };
            format!("{dst} = *({t} *)({src} {offset:+})")
        }
        Instruction::Store { size, dst, offset, src } => {
            format!("*({} *)({dst} {offset:+}) = {}", size_name(size), operand(src))
        }
        Instruction::Atomic { size, op, fetch, dst, src, offset } => {
            let sym = match op {
                AtomicOp::Add => "+=",
                AtomicOp::Or => "|=",
                AtomicOp::And => "&=",
                AtomicOp::Xor => "^=",
                AtomicOp::Xchg => "x=",
                AtomicOp::CmpXchg => "cx=",
            };
            format!("lock *({} *)({dst} {offset:+}) {sym} {src}{}", size_name(size), if fetch { " fetch" } else { "" })
        }
        Instruction::LegacyPacketLoad { mode, size, src, imm } => {
            format!("r0 = *({} *)skb[{mode:?} {src} + {imm}]", size_name(size))
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

/// Renders a rejection in the style of rustc's diagnostics.
pub fn render(r: &Rejection, color: bool) -> String {
    let renderer = if color { Renderer::styled() } else { Renderer::plain() };
    let title = format!("{}: {}", r.property.description(), r.message);
    let origin = r.file.clone().unwrap_or_default();
    let mut footers: Vec<String> =
        vec![format!("in program `{}`, instruction {}: `{}`", r.program, r.pc, r.instruction)];
    for (name, v) in &r.values {
        footers.push(format!("{name} = {v}"));
    }
    let source = r.source_line.clone().unwrap_or_default();
    let mut msg = Level::Error.title(&title);
    if let (Some(line), false) = (r.line, source.is_empty()) {
        let col = r.column.unwrap_or(1).max(1) as usize - 1;
        // Underline from the reported column to the end of the line (the statement BTF points at).
        let start = col.min(source.len().saturating_sub(1));
        let end = source.trim_end().len().max(start + 1);
        msg = msg.snippet(
            Snippet::source(&source)
                .line_start(line as usize)
                .origin(&origin)
                .annotation(Level::Error.span(start..end).label(r.property.description())),
        );
    }
    for f in &footers {
        msg = msg.footer(Level::Note.title(f));
    }
    let out = renderer.render(msg).to_string();
    out
}

/// Renders a rejection as one JSON object.
pub fn to_json(r: &Rejection) -> String {
    serde_json::to_string(r).expect("serialisable")
}
