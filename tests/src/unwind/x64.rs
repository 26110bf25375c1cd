//! The x64 virtual unwinder (`RUNTIME_FUNCTION`/`UNWIND_INFO` as Microsoft documents them in "x64 exception
//! handling") and the every-offset check of an x64 image, with the machine states computed by emulating the
//! prologue and epilogue instructions.
//!
//! The unwinder does what `RtlVirtualUnwind` does: if the code at the PC is an epilogue (`add rsp, imm` or
//! `lea rsp, [frame register + disp]`, then pops, then `ret` or a jump out of the function), it emulates the rest
//! of the epilogue; otherwise it applies the unwind codes whose instruction has executed (all of them outside the
//! prologue), with save offsets relative to the establisher frame (RSP, or the frame register minus
//! `FrameOffset * 16` once `UWOP_SET_FPREG` has executed), follows chained info, and pops the return address.

use iced_x86::{Decoder, DecoderOptions, Instruction, MemorySize, Mnemonic, OpKind, Register};

use super::{clobbered, sentinel, MappedImage, UnwindError, UnwindReport, RETURN_ADDRESS};

/// The general-purpose registers in x64 encoding order (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15).
pub type Gprs = [u64; 16];

const RSP: usize = 4;
const RBP: usize = 5;
/// Callee-saved in the Windows x64 convention (rbx, rbp, rsi, rdi, r12..r15).
const NONVOLATILE: [usize; 8] = [3, 5, 6, 7, 12, 13, 14, 15];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X64Context {
    pub r: Gprs,
    pub rip: u64,
}

/// Memory the unwinder reads.
pub trait Memory {
    fn read_u64(&self, address: u64) -> Option<u64>;
}

#[derive(Clone, Copy, Debug)]
pub struct RuntimeFunction {
    pub begin: u32,
    pub end: u32,
    pub unwind: u32,
}

fn malformed(rva: u32, what: impl Into<String>) -> UnwindError {
    UnwindError::Malformed { rva, what: what.into() }
}

/// Unwinds one frame: `image` gives the unwind data and the code bytes at the PC (for the epilogue test); `base`
/// is the image base the context's addresses use.
pub fn virtual_unwind(
    image: &MappedImage,
    base: u64,
    rf: &RuntimeFunction,
    ctx: &mut X64Context,
    memory: &dyn Memory,
) -> Result<(), String> {
    let pc_rva = (ctx.rip - base) as u32;
    let info_rva = rf.unwind;
    let byte = |rva: u32| image.read_u8(rva).ok_or_else(|| format!("unwind info at {rva:#x} outside the image"));
    let prolog_size = u32::from(byte(info_rva + 1)?);
    let offset = pc_rva - rf.begin;
    let in_prolog = offset < prolog_size;
    if !in_prolog && inside_epilogue(image, pc_rva, rf, byte(info_rva + 3)? & 0xf) {
        return interpret_epilogue(image, pc_rva, ctx, memory);
    }
    let mut info_rva = info_rva;
    let mut prolog_offset = if in_prolog { Some(offset) } else { None };
    loop {
        let version_flags = byte(info_rva)?;
        if version_flags & 7 != 1 && version_flags & 7 != 2 {
            return Err(format!("UNWIND_INFO version {}", version_flags & 7));
        }
        let flags = version_flags >> 3;
        let count = usize::from(byte(info_rva + 2)?);
        let frame = byte(info_rva + 3)?;
        let (frame_reg, frame_offset) = (usize::from(frame & 0xf), u64::from(frame >> 4) * 16);
        let slot = |i: usize| -> Result<(u8, u8, u16), String> {
            let at = info_rva + 4 + 2 * i as u32;
            Ok((byte(at)?, byte(at + 1)?, u16::from_le_bytes([byte(at)?, byte(at + 1)?])))
        };
        // The establisher frame: the frame register once UWOP_SET_FPREG has executed, else RSP.
        let mut establisher = ctx.r[RSP];
        if frame_reg != 0 {
            let mut fp_set = prolog_offset.is_none();
            let mut i = 0;
            while i < count {
                let (op_offset, op, _) = slot(i)?;
                if op & 0xf == 3 && prolog_offset.is_none_or(|p| u32::from(op_offset) <= p) {
                    fp_set = true;
                }
                i += op_slots(op)?;
            }
            if fp_set {
                establisher = ctx.r[frame_reg].wrapping_sub(frame_offset);
            }
        }
        let mut i = 0;
        while i < count {
            let (op_offset, op, _) = slot(i)?;
            let (code, info) = (op & 0xf, usize::from(op >> 4));
            let n = op_slots(op)?;
            let applies = prolog_offset.is_none_or(|p| u32::from(op_offset) <= p);
            let extra = |k: usize| slot(i + k).map(|s| s.2);
            if applies {
                let read = |a: u64| memory.read_u64(a).ok_or_else(|| format!("unreadable stack at {a:#x}"));
                match code {
                    0 => {
                        ctx.r[info] = read(ctx.r[RSP])?;
                        ctx.r[RSP] = ctx.r[RSP].wrapping_add(8);
                    }
                    1 if info == 0 => ctx.r[RSP] = ctx.r[RSP].wrapping_add(u64::from(extra(1)?) * 8),
                    1 => {
                        let size = u64::from(extra(1)?) | (u64::from(extra(2)?) << 16);
                        ctx.r[RSP] = ctx.r[RSP].wrapping_add(size);
                    }
                    2 => ctx.r[RSP] = ctx.r[RSP].wrapping_add((info as u64 + 1) * 8),
                    3 => ctx.r[RSP] = establisher,
                    4 => ctx.r[info] = read(establisher.wrapping_add(u64::from(extra(1)?) * 8))?,
                    5 => {
                        let off = u64::from(extra(1)?) | (u64::from(extra(2)?) << 16);
                        ctx.r[info] = read(establisher.wrapping_add(off))?;
                    }
                    8 | 9 => {} // xmm saves: the check does not track xmm registers (none are saved)
                    other => return Err(format!("unsupported unwind op {other}")),
                }
            }
            i += if code == 1 && info != 0 { 3 } else { n };
        }
        if flags & 4 == 0 {
            break;
        }
        // Chained: a RUNTIME_FUNCTION follows the (even-padded) code array; all of its codes apply.
        let chain = info_rva + 4 + 2 * ((count + 1) & !1) as u32;
        let read32 = |rva: u32| image.read_u32(rva).ok_or_else(|| "chained entry outside the image".to_string());
        info_rva = read32(chain + 8)?;
        prolog_offset = None;
    }
    let rsp = ctx.r[RSP];
    ctx.rip = memory.read_u64(rsp).ok_or("unreadable return address")?;
    ctx.r[RSP] = rsp.wrapping_add(8);
    Ok(())
}

/// Slots an unwind code takes (`UWOP_ALLOC_LARGE` with info 1 takes 3).
fn op_slots(op: u8) -> Result<usize, String> {
    Ok(match op & 0xf {
        0 | 2 | 3 | 10 => 1,
        1 => {
            if op >> 4 == 0 {
                2
            } else {
                3
            }
        }
        4 | 8 => 2,
        5 | 9 => 3,
        6 => 2,
        other => return Err(format!("unknown unwind op {other}")),
    })
}

/// The epilogue test of `RtlVirtualUnwind`: an optional `add rsp, imm` / `lea rsp, [frame reg + disp]`, then pops,
/// then `ret` or a tail-call jump (`jmp` out of this `.pdata` entry or to its start, `jmp [rip + disp]`, a REX.W
/// indirect `jmp`). The unwinder matches a jump target against the entry it found, and against other entries of
/// the same function only through chained unwind info, which bpf2sys does not write: a body jump into another
/// fragment would count as a tail call, which the check then reports.
fn inside_epilogue(image: &MappedImage, pc: u32, rf: &RuntimeFunction, frame_reg: u8) -> bool {
    let b = |k: u32| image.read_u8(pc + k).unwrap_or(0);
    let mut k = 0;
    if b(0) & 0xf8 == 0x48 {
        match b(1) {
            0x81 if b(0) == 0x48 && b(2) == 0xc4 => k = 7,
            0x83 if b(0) == 0x48 && b(2) == 0xc4 => k = 4,
            0x8d => {
                let modrm = b(2);
                let base = (modrm & 7) | ((b(0) & 1) << 3);
                if b(0) & 6 != 0 || (modrm >> 3) & 7 != 4 || modrm & 7 == 4 || frame_reg == 0 || base != frame_reg {
                    return false;
                }
                k = match modrm >> 6 {
                    1 => 4,
                    2 => 7,
                    _ => return false,
                };
            }
            _ => {}
        }
    }
    let outside = |target: u32| target <= rf.begin || target >= rf.end;
    loop {
        match b(k) {
            0x58..=0x5f => k += 1,
            0x41 if (0x58..=0x5f).contains(&b(k + 1)) => k += 2,
            0xc2 | 0xc3 => return true,
            0xf3 if b(k + 1) == 0xc3 => return true,
            // A jump is a tail call (so an epilogue) if it leaves the function or goes to its start.
            0xe9 => {
                let rel = i32::from_le_bytes([b(k + 1), b(k + 2), b(k + 3), b(k + 4)]);
                return outside((pc + k + 5).wrapping_add(rel as u32));
            }
            0xeb => return outside((pc + k + 2).wrapping_add(b(k + 1) as i8 as i32 as u32)),
            // jmp [rip + disp32], and any REX.W jmp indirect.
            0xff if b(k + 1) == 0x25 => return true,
            0x48..=0x4f if b(k + 1) == 0xff && (b(k + 2) & 0x38) == 0x20 => return true,
            _ => return false,
        }
    }
}

fn interpret_epilogue(image: &MappedImage, pc: u32, ctx: &mut X64Context, memory: &dyn Memory) -> Result<(), String> {
    let b = |k: u32| image.read_u8(pc + k).unwrap_or(0);
    let read = |a: u64| memory.read_u64(a).ok_or_else(|| format!("unreadable stack at {a:#x}"));
    let mut k = 0;
    loop {
        let mut rex = 0;
        if b(k) & 0xf0 == 0x40 {
            rex = b(k) & 0xf;
            k += 1;
        }
        match b(k) {
            0x58..=0x5f => {
                let reg = usize::from((b(k) - 0x58) | ((rex & 1) << 3));
                ctx.r[reg] = read(ctx.r[RSP])?;
                ctx.r[RSP] = ctx.r[RSP].wrapping_add(8);
                k += 1;
            }
            0x81 => {
                let imm = i32::from_le_bytes([b(k + 2), b(k + 3), b(k + 4), b(k + 5)]);
                ctx.r[RSP] = ctx.r[RSP].wrapping_add(imm as i64 as u64);
                k += 6;
            }
            0x83 => {
                ctx.r[RSP] = ctx.r[RSP].wrapping_add(b(k + 2) as i8 as i64 as u64);
                k += 3;
            }
            0x8d => {
                let modrm = b(k + 1);
                let base = usize::from((modrm & 7) | ((rex & 1) << 3));
                let (disp, len) = match modrm >> 6 {
                    1 => (b(k + 2) as i8 as i64, 3),
                    _ => (i32::from_le_bytes([b(k + 2), b(k + 3), b(k + 4), b(k + 5)]) as i64, 6),
                };
                ctx.r[RSP] = ctx.r[base].wrapping_add(disp as u64);
                k += len;
            }
            0xc3 | 0xc2 | 0xe9 | 0xeb | 0xf3 | 0xff => {
                ctx.rip = read(ctx.r[RSP])?;
                ctx.r[RSP] = ctx.r[RSP].wrapping_add(8);
                return Ok(());
            }
            other => return Err(format!("epilogue byte {other:#04x} not understood")),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The every-offset check.

const IMAGE_BASE: u64 = 0x1_4000_0000;
const STACK_TOP: u64 = 0x7fff_0000;
const STACK_SIZE: u64 = 4 << 20;
/// RSP at entry: the return address is at [RSP]; RSP + 8 is 16-byte aligned.
const ENTRY_RSP: u64 = STACK_TOP - 0x1000 - 8;

/// The emulated stack.
struct Stack {
    bytes: Vec<u8>,
}

impl Stack {
    fn base() -> u64 {
        STACK_TOP - STACK_SIZE
    }
    fn index(&self, a: u64, len: usize) -> Option<usize> {
        let i = a.checked_sub(Self::base())? as usize;
        (i + len <= self.bytes.len()).then_some(i)
    }
    fn write(&mut self, a: u64, v: u64, len: usize) -> Result<(), String> {
        let i = self.index(a, len).ok_or_else(|| format!("write outside the stack at {a:#x}"))?;
        self.bytes[i..i + len].copy_from_slice(&v.to_le_bytes()[..len]);
        Ok(())
    }
}

impl Memory for Stack {
    fn read_u64(&self, a: u64) -> Option<u64> {
        let i = self.index(a, 8)?;
        Some(u64::from_le_bytes(self.bytes[i..i + 8].try_into().unwrap()))
    }
}

fn gpr(r: Register) -> Option<usize> {
    let full = r.full_register();
    (full.is_gpr64() && r.is_gpr64()).then(|| full.number())
}

/// Executes one prologue/epilogue instruction; `None` if it is not one the check emulates.
fn step(i: &Instruction, ctx: &mut X64Context, stack: &mut Stack) -> Option<Result<(), String>> {
    let next = i.next_ip();
    let mem_addr = |ctx: &X64Context| -> Option<u64> {
        let base = gpr(i.memory_base())?;
        (i.memory_index() == Register::None).then(|| ctx.r[base].wrapping_add(i.memory_displacement64()))
    };
    let result = match (i.mnemonic(), i.op_count()) {
        (Mnemonic::Push, 1) if i.op0_kind() == OpKind::Register => {
            let r = gpr(i.op0_register())?;
            let v = ctx.r[r];
            ctx.r[RSP] = ctx.r[RSP].wrapping_sub(8);
            stack.write(ctx.r[RSP], v, 8)
        }
        (Mnemonic::Pop, 1) if i.op0_kind() == OpKind::Register => {
            let r = gpr(i.op0_register())?;
            let v = stack.read_u64(ctx.r[RSP]).unwrap_or(0);
            ctx.r[RSP] = ctx.r[RSP].wrapping_add(8);
            ctx.r[r] = v;
            Ok(())
        }
        (Mnemonic::Mov, 2) => match (i.op0_kind(), i.op1_kind()) {
            (OpKind::Register, OpKind::Register) => {
                let (d, s) = (gpr(i.op0_register())?, gpr(i.op1_register())?);
                ctx.r[d] = ctx.r[s];
                Ok(())
            }
            (OpKind::Memory, OpKind::Register) if i.memory_size() == MemorySize::UInt64 => {
                let a = mem_addr(ctx)?;
                let v = ctx.r[gpr(i.op1_register())?];
                stack.write(a, v, 8)
            }
            (OpKind::Memory, OpKind::Immediate32to64 | OpKind::Immediate32) => {
                let a = mem_addr(ctx)?;
                let len = i.memory_size().size();
                stack.write(a, i.immediate(1), len)
            }
            (OpKind::Register, OpKind::Memory) => {
                let d = gpr(i.op0_register())?;
                let a = mem_addr(ctx)?;
                ctx.r[d] = stack.read_u64(a).unwrap_or(0);
                Ok(())
            }
            _ => return None,
        },
        (Mnemonic::Sub | Mnemonic::Add, 2) if i.op0_kind() == OpKind::Register => {
            let d = gpr(i.op0_register())?;
            if !matches!(i.op1_kind(), OpKind::Immediate8to64 | OpKind::Immediate32to64) {
                return None;
            }
            let imm = i.immediate(1);
            ctx.r[d] =
                if i.mnemonic() == Mnemonic::Sub { ctx.r[d].wrapping_sub(imm) } else { ctx.r[d].wrapping_add(imm) };
            Ok(())
        }
        (Mnemonic::Cmp, 2) | (Mnemonic::Nop, _) => Ok(()),
        (Mnemonic::Jne, 1) => {
            // Only the probe loop's backward branch: taken while rsp has not reached the bound in r11.
            return None;
        }
        (Mnemonic::Ret, _) => Ok(()),
        _ => return None,
    };
    ctx.rip = next;
    Some(result)
}

struct Function {
    begin: u32,
    end: u32,
    fragments: Vec<RuntimeFunction>,
}

/// Groups `.pdata` entries into functions. A chained entry (`UNW_FLAG_CHAININFO`) continues the function before
/// it, and so does an entry whose earliest described instruction has code offset 0 (it happened before the
/// fragment: bpf2sys's records after a function's first describe `push rbp` so, see `lower::unwind::x64`).
fn functions(image: &MappedImage) -> Result<Vec<Function>, UnwindError> {
    let (rva, size) = image.pdata;
    let mut out: Vec<Function> = Vec::new();
    for i in 0..size / 12 {
        let at = rva + 12 * i;
        let word = |k: u32| image.read_u32(at + 4 * k).ok_or_else(|| malformed(at, ".pdata outside the image"));
        let rf = RuntimeFunction { begin: word(0)?, end: word(1)?, unwind: word(2)? };
        let byte = |k: u32| image.read_u8(rf.unwind + k).ok_or_else(|| malformed(rf.begin, "UNWIND_INFO outside"));
        let flags = byte(0)? >> 3;
        let count = usize::from(byte(2)?);
        let mut last_offset = None;
        let mut k = 0;
        while k < count {
            let op = byte(4 + 2 * k as u32 + 1)?;
            last_offset = Some(byte(4 + 2 * k as u32)?);
            k += op_slots(op).map_err(|e| malformed(rf.begin, e))?;
        }
        let continuation = flags & 4 != 0 || last_offset == Some(0);
        match out.last_mut() {
            Some(f) if continuation && f.end == rf.begin => {
                f.end = rf.end;
                f.fragments.push(rf);
            }
            _ => out.push(Function { begin: rf.begin, end: rf.end, fragments: vec![rf] }),
        }
    }
    Ok(out)
}

/// Checks every function of an x64 image at every instruction offset.
pub fn check_image(image: &MappedImage) -> Result<UnwindReport, UnwindError> {
    let mut report = UnwindReport::default();
    for f in functions(image)? {
        report.functions += 1;
        check_function(image, &f, &mut report)?;
    }
    Ok(report)
}

fn entry_context(rip: u64) -> X64Context {
    let mut r = [0u64; 16];
    for (n, v) in r.iter_mut().enumerate() {
        *v = sentinel(n as u64);
    }
    r[RSP] = ENTRY_RSP;
    X64Context { r, rip }
}

/// The probe loop (`sub rsp, page; mov [rsp], 0; cmp rsp, r11; jne loop`) runs to its end in one step.
fn run(insts: &[Instruction], from: usize, to: usize, ctx: &mut X64Context, stack: &mut Stack) -> Result<(), String> {
    let mut k = from;
    let mut guard = 0;
    while k < to {
        guard += 1;
        if guard > 1 << 20 {
            return Err("the prologue does not terminate".into());
        }
        let i = &insts[k];
        if i.mnemonic() == Mnemonic::Jne {
            // cmp rsp, r11 ; jne back: loop while rsp != r11.
            let target = i.near_branch_target();
            if ctx.r[RSP] != ctx.r[11] {
                k = insts.iter().position(|x| x.ip() == target).ok_or("probe loop target not an instruction")?;
                ctx.rip = target;
            } else {
                k += 1;
                ctx.rip = i.next_ip();
            }
            continue;
        }
        match step(i, ctx, stack) {
            Some(r) => r?,
            None => return Err(format!("cannot emulate `{i}`")),
        }
        k += 1;
    }
    Ok(())
}

fn is_frame_instruction(i: &Instruction, prologue: bool) -> bool {
    let reg0 = if i.op_count() > 0 && i.op0_kind() == OpKind::Register { gpr(i.op0_register()) } else { None };
    let mem_on_stack = i.op_count() > 0
        && (i.op0_kind() == OpKind::Memory || i.op1_kind() == OpKind::Memory)
        && i.memory_base() == Register::RSP
        && i.memory_index() == Register::None;
    match i.mnemonic() {
        Mnemonic::Push | Mnemonic::Pop => reg0.is_some() && (i.mnemonic() == Mnemonic::Push) == prologue,
        Mnemonic::Mov => {
            if i.op0_kind() == OpKind::Register && i.op1_kind() == OpKind::Register {
                matches!(
                    (reg0, gpr(i.op1_register())),
                    (Some(RBP), Some(RSP)) | (Some(11), Some(RSP)) | (Some(RSP), Some(RBP))
                )
            } else if prologue {
                i.op0_kind() == OpKind::Memory && mem_on_stack
            } else {
                i.op1_kind() == OpKind::Memory && mem_on_stack && reg0.is_some()
            }
        }
        Mnemonic::Sub => prologue && matches!(reg0, Some(RSP) | Some(11)) && i.op1_kind() != OpKind::Register,
        Mnemonic::Add => matches!(reg0, Some(RSP)) && i.op1_kind() != OpKind::Register,
        Mnemonic::Cmp => prologue && matches!(reg0, Some(RSP) | Some(11)),
        Mnemonic::Jne => prologue,
        // The NOP that stands in an epilogue for the `add rsp` that `mov rsp, rbp` makes redundant.
        Mnemonic::Nop => !prologue,
        _ => false,
    }
}

fn check_function(image: &MappedImage, f: &Function, report: &mut UnwindReport) -> Result<(), UnwindError> {
    let code = &image.bytes[f.begin as usize..f.end as usize];
    let base = IMAGE_BASE + u64::from(f.begin);
    let insts = reachable_instructions(code, base);
    if insts.is_empty() {
        return Err(UnwindError::Emulator(format!("function at rva {:#x} decodes to nothing", f.begin)));
    }
    let mut stack = Stack { bytes: vec![0; STACK_SIZE as usize] };
    let entry = entry_context(base);
    stack.write(ENTRY_RSP, RETURN_ADDRESS, 8).map_err(UnwindError::Emulator)?;
    let prologue = insts.iter().take_while(|i| is_frame_instruction(i, true)).count();
    let mut states: Vec<Option<X64Context>> = vec![None; insts.len()];
    let emulation = |e: String| UnwindError::Emulator(format!("function at rva {:#x}: {e}", f.begin));
    // Prologue states by running from the entry (the stack keeps the last run's stores; reruns write the same).
    for (o, state) in states.iter_mut().enumerate().take(prologue + 1) {
        let mut ctx = entry.clone();
        run(&insts, 0, o, &mut ctx, &mut stack).map_err(emulation)?;
        *state = Some(ctx);
    }
    let mut body = states[prologue.min(insts.len() - 1)].clone().expect("set above");
    if prologue >= insts.len() {
        return Err(emulation("no body".into()));
    }
    for &n in &NONVOLATILE {
        if n != RBP && saved(&stack, &body, sentinel(n as u64)) {
            body.r[n] = clobbered(n as u64);
        }
    }
    for (r, i) in insts.iter().enumerate() {
        if i.mnemonic() != Mnemonic::Ret {
            continue;
        }
        let mut s = r;
        while s > prologue && is_frame_instruction(&insts[s - 1], false) {
            s -= 1;
        }
        for (o, state) in states.iter_mut().enumerate().take(r + 1).skip(s) {
            let mut ctx = body.clone();
            ctx.rip = insts[s].ip();
            run(&insts, s, o, &mut ctx, &mut stack).map_err(emulation)?;
            *state = Some(ctx);
        }
    }
    for (o, state) in states.into_iter().enumerate() {
        let mut ctx = state.unwrap_or_else(|| {
            let mut b = body.clone();
            b.rip = insts[o].ip();
            b
        });
        report.offsets += 1;
        let rva = (ctx.rip - IMAGE_BASE) as u32;
        let Some(rf) = f.fragments.iter().find(|rf| rf.begin <= rva && rva < rf.end) else {
            report.mismatches.push(format!("function at rva {:#x} + {:#x}: no .pdata entry", f.begin, rva - f.begin));
            continue;
        };
        let what = match virtual_unwind(image, IMAGE_BASE, rf, &mut ctx, &stack) {
            Err(e) => Some(format!("unwind failed: {e}")),
            Ok(()) => {
                let mut wrong = Vec::new();
                if ctx.r[RSP] != ENTRY_RSP + 8 {
                    wrong.push(format!("rsp {:#x} (caller {:#x})", ctx.r[RSP], ENTRY_RSP + 8));
                }
                if ctx.rip != RETURN_ADDRESS {
                    wrong.push(format!("return address {:#x}", ctx.rip));
                }
                for &n in &NONVOLATILE {
                    if ctx.r[n] != entry.r[n] {
                        wrong.push(format!("{:?} {:#x}", REG_NAMES[n], ctx.r[n]));
                    }
                }
                (!wrong.is_empty()).then(|| wrong.join(", "))
            }
        };
        if let Some(what) = what {
            report.mismatches.push(format!(
                "function at rva {:#x} + {:#x} (`{}`): {what}",
                f.begin,
                rva - f.begin,
                insts[o]
            ));
        }
    }
    Ok(())
}

/// The function's instructions, found by following control flow from the entry (jump tables, which Cranelift
/// places inline after their `jmp`, are read as data: entries are 32-bit offsets from the table, which a
/// RIP-relative `lea` addresses), in address order. Offsets inside data are not instruction offsets.
fn reachable_instructions(code: &[u8], base: u64) -> Vec<Instruction> {
    use iced_x86::FlowControl;
    use std::collections::{BTreeMap, BTreeSet};
    let mut decoded: BTreeMap<usize, Instruction> = BTreeMap::new();
    let mut tables: BTreeSet<usize> = BTreeSet::new();
    let mut work = vec![0usize];
    let mut seen: BTreeSet<usize> = BTreeSet::new();
    let inside = |a: u64| a.checked_sub(base).map(|o| o as usize).filter(|o| *o < code.len());
    loop {
        while let Some(off) = work.pop() {
            if off >= code.len() || !seen.insert(off) {
                continue;
            }
            let i = Decoder::with_ip(64, &code[off..], base + off as u64, DecoderOptions::NONE).decode();
            if i.is_invalid() {
                continue;
            }
            let next = off + i.len();
            if i.mnemonic() == Mnemonic::Lea && i.is_ip_rel_memory_operand() {
                tables.extend(inside(i.ip_rel_memory_address()));
            }
            match i.flow_control() {
                FlowControl::Next | FlowControl::Call | FlowControl::IndirectCall => work.push(next),
                FlowControl::ConditionalBranch => {
                    work.push(next);
                    work.extend(inside(i.near_branch_target()));
                }
                FlowControl::UnconditionalBranch => work.extend(inside(i.near_branch_target())),
                _ => {}
            }
            decoded.insert(off, i);
        }
        // Jump tables: entries until the first case target or the end of the function.
        for &t in &tables {
            if decoded.contains_key(&t) {
                continue;
            }
            let mut end = code.len();
            let mut k = t;
            while k + 4 <= end {
                let entry = i32::from_le_bytes(code[k..k + 4].try_into().unwrap());
                let Some(target) = (t as i64).checked_add(entry as i64).filter(|x| (0..code.len() as i64).contains(x))
                else {
                    break;
                };
                if target as usize > t {
                    end = end.min(target as usize);
                }
                if !seen.contains(&(target as usize)) {
                    work.push(target as usize);
                }
                k += 4;
            }
        }
        if work.is_empty() {
            break;
        }
    }
    decoded.into_values().collect()
}

const REG_NAMES: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

fn saved(stack: &Stack, body: &X64Context, value: u64) -> bool {
    let mut a = body.r[RSP];
    while a < ENTRY_RSP {
        if stack.read_u64(a) == Some(value) {
            return true;
        }
        a += 8;
    }
    false
}
