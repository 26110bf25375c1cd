//! The ARM64 virtual unwinder (`.pdata`/`.xdata` as Microsoft documents them in "ARM64 exception handling") and
//! the every-offset check of an ARM64 image, with the machine states computed in Unicorn.
//!
//! The unwinder follows the documented algorithm: a PC in the prologue skips the codes of the prologue
//! instructions not yet executed (codes are in reverse order, one per instruction, counted up to `end` or
//! `end_c`); a PC in an epilogue scope skips the codes of the epilogue instructions already executed (an
//! epilogue's size counts its `ret`); anywhere else every code from index 0 runs until `end`. `end_c` ends the
//! count but not the execution (the "phantom prologue" of function fragments); the E bit (a single epilogue at
//! the end) is honoured. Packed `.pdata` (Flag 1 or 2) is refused: bpf2sys never writes it, and the checker does
//! not guess at its expansion.

use unicorn_engine::unicorn_const::{Arch, Mode, Prot};
use unicorn_engine::{RegisterARM64, Unicorn};

use super::{clobbered, sentinel, MappedImage, UnwindError, UnwindReport, RETURN_ADDRESS};
use crate::arm64::X_REGISTERS as X;

/// The registers a virtual unwind reads and restores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arm64Context {
    /// x0..x30 (x29 = fp, x30 = lr).
    pub x: [u64; 31],
    pub sp: u64,
    pub pc: u64,
    /// d8..d15 (the callee-saved low halves of v8..v15).
    pub d: [u64; 8],
}

/// One `.pdata` entry: the function (fragment) start and its unwind data.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeFunction {
    pub begin: u32,
    /// Second word: an `.xdata` RVA (low two bits 0) or packed unwind data (Flag 1 or 2).
    pub unwind: u32,
}

/// A decoded `.xdata` record.
#[derive(Clone, Debug)]
pub struct Xdata {
    /// Function (fragment) length in bytes.
    pub length: u32,
    /// Single epilogue at the end using codes from this index (E bit set).
    pub packed_epilogue: Option<usize>,
    /// Epilogue scopes: (start offset in instructions, code index).
    pub scopes: Vec<(u32, usize)>,
    pub codes: Vec<u8>,
}

fn malformed(rva: u32, what: impl Into<String>) -> UnwindError {
    UnwindError::Malformed { rva, what: what.into() }
}

impl Xdata {
    pub fn parse(image: &MappedImage, rf: &RuntimeFunction) -> Result<Xdata, UnwindError> {
        if rf.unwind & 3 != 0 {
            return packed(rf);
        }
        let rva = rf.unwind;
        let word = |i: u32| image.read_u32(rva + 4 * i).ok_or_else(|| malformed(rf.begin, ".xdata outside the image"));
        let header = word(0)?;
        let length = (header & 0x3ffff) * 4;
        if (header >> 18) & 3 != 0 {
            return Err(malformed(rf.begin, "version is not 0"));
        }
        let has_handler = header & (1 << 20) != 0;
        let e = header & (1 << 21) != 0;
        let (mut epilogues, mut code_words, mut next) = ((header >> 22) & 0x1f, header >> 27, 1);
        if epilogues == 0 && code_words == 0 {
            let ext = word(1)?;
            epilogues = ext & 0xffff;
            code_words = (ext >> 16) & 0xff;
            next = 2;
        }
        let mut scopes = Vec::new();
        let packed_epilogue = if e {
            Some(epilogues as usize)
        } else {
            for i in 0..epilogues {
                let s = word(next + i)?;
                scopes.push((s & 0x3ffff, (s >> 22) as usize));
            }
            next += epilogues;
            None
        };
        let mut codes = Vec::with_capacity(4 * code_words as usize);
        for i in 0..code_words {
            codes.extend_from_slice(&word(next + i)?.to_le_bytes());
        }
        if has_handler {
            return Err(malformed(rf.begin, "exception handlers are not expected in driver code"));
        }
        Ok(Xdata { length, packed_epilogue, scopes, codes })
    }

    /// True for a fragment that continues another function: its codes contain `end_c` (a phantom prologue).
    pub fn is_continuation(&self) -> bool {
        let mut i = 0;
        while i < self.codes.len() {
            match self.codes[i] {
                0xe4 => return false,
                0xe5 => return true,
                c => i += code_len(c),
            }
        }
        false
    }
}

/// Packed unwind data (Flag 1 or 2) is not used by bpf2sys images; the checker refuses it rather than guess.
fn packed(rf: &RuntimeFunction) -> Result<Xdata, UnwindError> {
    Err(malformed(
        rf.begin,
        format!("packed unwind data {:#010x} (flag {}) is not supported", rf.unwind, rf.unwind & 3),
    ))
}

/// Length in bytes of the unwind code starting with `first`.
pub fn code_len(first: u8) -> usize {
    match first {
        0x00..=0xbf => 1,
        0xc0..=0xdf => 2,
        0xe0 => 4,
        0xe2 => 2,
        0xe7 => 3,
        0xf8 => 2,
        0xf9 => 3,
        0xfa => 4,
        0xfb => 5,
        _ => 1,
    }
}

fn is_end(code: u8) -> bool {
    code & 0xfe == 0xe4
}

/// Instructions a code sequence describes (up to `end`/`end_c`; an epilogue also counts its `ret`).
fn scope_size(codes: &[u8], start: usize, epilogue: bool) -> u32 {
    let mut i = start;
    let mut size = 0;
    while i < codes.len() && !is_end(codes[i]) {
        i += code_len(codes[i]);
        size += 1;
    }
    size + u32::from(epilogue)
}

/// Memory the unwinder reads saved registers from.
pub trait Memory {
    fn read_u64(&self, address: u64) -> Option<u64>;
}

/// Unwinds `ctx` (PC inside the function `rf` describes, whose fragment starts at `begin_address`) one frame:
/// afterwards `ctx` is the caller's state, as `RtlVirtualUnwind` leaves it.
pub fn virtual_unwind(
    xdata: &Xdata,
    begin_address: u64,
    ctx: &mut Arm64Context,
    memory: &dyn Memory,
) -> Result<(), String> {
    let offset = u32::try_from((ctx.pc.wrapping_sub(begin_address)) / 4).map_err(|_| "pc before function")?;
    let codes = &xdata.codes;
    let words = codes.len() as u32 / 4;
    let mut start = 0usize;
    let mut skip = 0u32;
    let mut in_prologue = false;
    if offset < 4 * words {
        let prologue = scope_size(codes, 0, false);
        if offset < prologue {
            skip = prologue - offset;
            in_prologue = true;
        }
    }
    if !in_prologue {
        if let Some(index) = xdata.packed_epilogue {
            let function_words = xdata.length / 4;
            if offset + (4 * words).saturating_sub(index as u32) >= function_words {
                let size = scope_size(codes, index, true);
                let epilogue_start = function_words.saturating_sub(size);
                if offset >= epilogue_start {
                    start = index;
                    skip = offset - epilogue_start;
                }
            }
        } else {
            for &(epilogue_start, index) in &xdata.scopes {
                if offset < epilogue_start {
                    break;
                }
                if offset - epilogue_start < (4 * words).saturating_sub(index as u32) {
                    let size = scope_size(codes, index, true);
                    if offset < epilogue_start + size {
                        start = index;
                        skip = offset - epilogue_start;
                        break;
                    }
                }
            }
        }
    }
    let mut i = start;
    while i < codes.len() && skip > 0 {
        if is_end(codes[i]) {
            break;
        }
        i += code_len(codes[i]);
        skip -= 1;
    }
    execute(&codes[i..], ctx, memory)?;
    ctx.pc = ctx.x[30];
    Ok(())
}

/// Restores `count` registers from consecutive slots; a negative `offset` is a pre-indexed save (the slots are at
/// SP and SP grows by `-offset` afterwards).
fn restore(
    ctx: &mut Arm64Context,
    memory: &dyn Memory,
    offset: i64,
    first: u32,
    count: u32,
    fp: bool,
) -> Result<(), String> {
    let mut at = if offset < 0 { ctx.sp } else { ctx.sp.wrapping_add(offset as u64) };
    for r in first..first + count {
        let v = memory.read_u64(at).ok_or_else(|| format!("unreadable save slot {at:#x}"))?;
        if fp {
            let k = r.checked_sub(8).filter(|k| *k < 8).ok_or_else(|| format!("d{r} is not callee-saved"))?;
            ctx.d[k as usize] = v;
        } else {
            *ctx.x.get_mut(r as usize).ok_or_else(|| format!("x{r} out of range"))? = v;
        }
        at = at.wrapping_add(8);
    }
    if offset < 0 {
        ctx.sp = ctx.sp.wrapping_add(offset.unsigned_abs());
    }
    Ok(())
}

fn execute(codes: &[u8], ctx: &mut Arm64Context, memory: &dyn Memory) -> Result<(), String> {
    let mut i = 0;
    let mut save_next = 0u32;
    while i < codes.len() {
        let c = codes[i];
        let b = |k: usize| codes.get(i + k).copied().ok_or_else(|| "truncated unwind code".to_string());
        let b1 = if code_len(c) > 1 { b(1)? } else { 0 };
        match c {
            0x00..=0x1f => ctx.sp = ctx.sp.wrapping_add(16 * u64::from(c & 0x1f)),
            0x20..=0x3f => restore(ctx, memory, -8 * i64::from(c & 0x1f), 19, 2, false)?,
            0x40..=0x7f => restore(ctx, memory, 8 * i64::from(c & 0x3f), 29, 2, false)?,
            0x80..=0xbf => restore(ctx, memory, -8 * (i64::from(c & 0x3f) + 1), 29, 2, false)?,
            0xc0..=0xc7 => ctx.sp = ctx.sp.wrapping_add(16 * ((u64::from(c & 7) << 8) | u64::from(b1))),
            // save_regp / save_regp_x: x(19+X), x(20+X) at [sp + Z*8] / [sp - (Z+1)*8]!.
            0xc8..=0xcf => {
                let reg = 19 + ((u32::from(c & 3) << 2) | u32::from(b1 >> 6));
                let z = i64::from(b1 & 0x3f);
                let offset = if c < 0xcc { 8 * z } else { -8 * (z + 1) };
                restore(ctx, memory, offset, reg, 2 + 2 * save_next, false)?;
                save_next = 0;
            }
            // save_reg: x(19+X) at [sp + Z*8].
            0xd0..=0xd3 => {
                let reg = 19 + ((u32::from(c & 3) << 2) | u32::from(b1 >> 6));
                restore(ctx, memory, 8 * i64::from(b1 & 0x3f), reg, 1, false)?;
            }
            // save_reg_x: x(19+X) at [sp - (Z+1)*8]!.
            0xd4 | 0xd5 => {
                let reg = 19 + ((u32::from(c & 1) << 3) | u32::from(b1 >> 5));
                restore(ctx, memory, -8 * (i64::from(b1 & 0x1f) + 1), reg, 1, false)?;
            }
            // save_lrpair: x(19+2X) and lr at [sp + Z*8].
            0xd6 | 0xd7 => {
                let reg = 19 + 2 * ((u32::from(c & 1) << 2) | u32::from(b1 >> 6));
                restore(ctx, memory, 8 * i64::from(b1 & 0x3f), reg, 1, false)?;
                restore(ctx, memory, 8 * i64::from(b1 & 0x3f) + 8, 30, 1, false)?;
            }
            // save_fregp / save_fregp_x: d(8+X), d(9+X).
            0xd8..=0xdb => {
                let reg = 8 + ((u32::from(c & 1) << 2) | u32::from(b1 >> 6));
                let z = i64::from(b1 & 0x3f);
                let offset = if c < 0xda { 8 * z } else { -8 * (z + 1) };
                restore(ctx, memory, offset, reg, 2 + 2 * save_next, true)?;
                save_next = 0;
            }
            // save_freg: d(8+X) at [sp + Z*8].
            0xdc | 0xdd => {
                let reg = 8 + ((u32::from(c & 1) << 2) | u32::from(b1 >> 6));
                restore(ctx, memory, 8 * i64::from(b1 & 0x3f), reg, 1, true)?;
            }
            // save_freg_x: d(8+X) at [sp - (Z+1)*8]!.
            0xde => restore(ctx, memory, -8 * (i64::from(b1 & 0x1f) + 1), 8 + u32::from(b1 >> 5), 1, true)?,
            0xe0 => {
                let size = (u64::from(b(1)?) << 16) | (u64::from(b(2)?) << 8) | u64::from(b(3)?);
                ctx.sp = ctx.sp.wrapping_add(16 * size);
            }
            0xe1 => ctx.sp = ctx.x[29],
            0xe2 => ctx.sp = ctx.x[29].wrapping_sub(8 * u64::from(b1)),
            0xe3 | 0xe5 => {}
            0xe4 => return Ok(()),
            0xe6 => save_next += 1,
            other => return Err(format!("unsupported unwind code {other:#04x}")),
        }
        i += code_len(c);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The every-offset check.

const IMAGE_BASE: u64 = 0x1_4000_0000;
const STACK_BASE: u64 = 0x7f00_0000;
const STACK_SIZE: u64 = 4 << 20;
/// The SP every function is entered with (16-byte aligned, with room above for nothing: ARM64 passes the return
/// address in lr).
const ENTRY_SP: u64 = STACK_BASE + STACK_SIZE - 0x1000;

/// One function: its fragments (`.pdata` entries) in address order.
struct Function {
    begin: u32,
    end: u32,
    fragments: Vec<(RuntimeFunction, Xdata)>,
}

/// Groups the `.pdata` entries of `image` into functions (a fragment with a phantom prologue continues the
/// function before it).
fn functions(image: &MappedImage) -> Result<Vec<Function>, UnwindError> {
    let (rva, size) = image.pdata;
    let mut out: Vec<Function> = Vec::new();
    for i in 0..size / 8 {
        let at = rva + 8 * i;
        let begin = image.read_u32(at).ok_or_else(|| malformed(at, ".pdata outside the image"))?;
        let unwind = image.read_u32(at + 4).ok_or_else(|| malformed(at, ".pdata outside the image"))?;
        let rf = RuntimeFunction { begin, unwind };
        let xdata = Xdata::parse(image, &rf)?;
        let end = begin + xdata.length;
        match out.last_mut() {
            Some(f) if xdata.is_continuation() && f.end == begin => {
                f.end = end;
                f.fragments.push((rf, xdata));
            }
            _ if xdata.is_continuation() => {
                return Err(malformed(begin, "a continuation fragment does not follow its function"));
            }
            _ => out.push(Function { begin, end, fragments: vec![(rf, xdata)] }),
        }
    }
    Ok(out)
}

/// Checks every function of an ARM64 image at every instruction offset.
pub fn check_image(image: &MappedImage) -> Result<UnwindReport, UnwindError> {
    let functions = functions(image)?;
    let mut machine = Machine::new(image)?;
    let mut report = UnwindReport::default();
    for f in &functions {
        report.functions += 1;
        machine.check_function(image, f, &mut report)?;
    }
    Ok(report)
}

struct Machine {
    cpu: Unicorn<'static, ()>,
}

fn emu(what: &str) -> impl Fn(unicorn_engine::unicorn_const::uc_error) -> UnwindError + '_ {
    move |e| UnwindError::Emulator(format!("{what}: {e:?}"))
}

const D: [RegisterARM64; 8] = [
    RegisterARM64::D8,
    RegisterARM64::D9,
    RegisterARM64::D10,
    RegisterARM64::D11,
    RegisterARM64::D12,
    RegisterARM64::D13,
    RegisterARM64::D14,
    RegisterARM64::D15,
];

/// The d registers' sentinels are numbered after the x registers'.
const D_SENTINEL_BASE: u64 = 40;

/// The caller's state every function is entered with.
fn entry_context(begin: u64) -> Arm64Context {
    let mut x = [0u64; 31];
    for (n, v) in x.iter_mut().enumerate() {
        *v = sentinel(n as u64);
    }
    x[30] = RETURN_ADDRESS;
    let mut d = [0u64; 8];
    for (k, v) in d.iter_mut().enumerate() {
        *v = sentinel(D_SENTINEL_BASE + k as u64);
    }
    Arm64Context { x, sp: ENTRY_SP, pc: begin, d }
}

impl Memory for Unicorn<'static, ()> {
    fn read_u64(&self, address: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.mem_read(address, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

impl Machine {
    fn new(image: &MappedImage) -> Result<Machine, UnwindError> {
        let mut cpu = Unicorn::new(Arch::ARM64, Mode::LITTLE_ENDIAN).map_err(emu("creating the emulator"))?;
        let size = (image.bytes.len() as u64).div_ceil(0x1000) * 0x1000;
        cpu.mem_map(IMAGE_BASE, size, Prot::READ | Prot::EXEC).map_err(emu("mapping the image"))?;
        cpu.mem_write(IMAGE_BASE, &image.bytes).map_err(emu("writing the image"))?;
        cpu.mem_map(STACK_BASE, STACK_SIZE, Prot::READ | Prot::WRITE).map_err(emu("mapping the stack"))?;
        Ok(Machine { cpu })
    }

    fn set(&mut self, ctx: &Arm64Context) -> Result<(), UnwindError> {
        for (n, &r) in X.iter().enumerate() {
            self.cpu.reg_write(r, ctx.x[n]).map_err(emu("writing x"))?;
        }
        for (k, &r) in D.iter().enumerate() {
            self.cpu.reg_write(r, ctx.d[k]).map_err(emu("writing d"))?;
        }
        self.cpu.reg_write(RegisterARM64::SP, ctx.sp).map_err(emu("writing sp"))?;
        self.cpu.reg_write(RegisterARM64::PC, ctx.pc).map_err(emu("writing pc"))
    }

    fn get(&self) -> Result<Arm64Context, UnwindError> {
        let mut x = [0u64; 31];
        for (n, &r) in X.iter().enumerate() {
            x[n] = self.cpu.reg_read(r).map_err(emu("reading x"))?;
        }
        let mut d = [0u64; 8];
        for (k, &r) in D.iter().enumerate() {
            d[k] = self.cpu.reg_read(r).map_err(emu("reading d"))?;
        }
        let sp = self.cpu.reg_read(RegisterARM64::SP).map_err(emu("reading sp"))?;
        let pc = self.cpu.reg_read(RegisterARM64::PC).map_err(emu("reading pc"))?;
        Ok(Arm64Context { x, sp, pc, d })
    }

    /// Runs from `from` (state `ctx`) until the PC first reaches `to`.
    fn run_to(&mut self, ctx: &Arm64Context, to: u64) -> Result<Arm64Context, UnwindError> {
        let mut ctx = ctx.clone();
        if ctx.pc == to {
            return Ok(ctx);
        }
        self.set(&ctx)?;
        self.cpu.emu_start(ctx.pc, to, 0, 1 << 20).map_err(emu("running the prologue/epilogue"))?;
        ctx = self.get()?;
        if ctx.pc != to {
            return Err(UnwindError::Emulator(format!("did not reach {to:#x} (stopped at {:#x})", ctx.pc)));
        }
        Ok(ctx)
    }

    fn check_function(
        &mut self,
        image: &MappedImage,
        f: &Function,
        report: &mut UnwindReport,
    ) -> Result<(), UnwindError> {
        let words: Vec<u32> = (f.begin..f.end).step_by(4).map(|rva| image.read_u32(rva).unwrap_or(0)).collect();
        let base = IMAGE_BASE + u64::from(f.begin);
        // Fresh, zeroed stack so no earlier function's saves look like this one's.
        self.cpu.mem_write(STACK_BASE, &vec![0u8; STACK_SIZE as usize]).map_err(emu("clearing the stack"))?;
        let entry = entry_context(base);
        let prologue = prologue_length(&words);
        let mut states: Vec<Option<Arm64Context>> = vec![None; words.len()];
        for (o, state) in states.iter_mut().enumerate().take(prologue + 1).take(words.len()) {
            *state = Some(self.run_to(&entry, base + 4 * o as u64)?);
        }
        let mut body = if prologue < words.len() {
            states[prologue].clone().expect("set above")
        } else {
            self.run_to(&entry, base + 4 * prologue as u64)?
        };
        // A register whose entry value the prologue stored in the frame may hold anything in the body.
        // x29 stays the frame pointer the prologue set.
        for n in (19..=28).chain([30]) {
            if self.saved(&body, sentinel_of_x(n)) {
                body.x[n] = clobbered(n as u64);
            }
        }
        for k in 0..8 {
            if self.saved(&body, sentinel(D_SENTINEL_BASE + k as u64)) {
                body.d[k] = clobbered(D_SENTINEL_BASE + k as u64);
            }
        }
        for (start, ret) in epilogues(&words) {
            if ret <= prologue {
                continue;
            }
            let start = start.max(prologue);
            let mut from = body.clone();
            from.pc = base + 4 * start as u64;
            for (o, state) in states.iter_mut().enumerate().take(ret + 1).skip(start) {
                *state = Some(self.run_to(&from, base + 4 * o as u64)?);
            }
        }
        for (o, state) in states.into_iter().enumerate() {
            let mut ctx = state.unwrap_or_else(|| {
                let mut b = body.clone();
                b.pc = base + 4 * o as u64;
                b
            });
            report.offsets += 1;
            if let Some(what) = self.unwind_and_compare(f, &mut ctx, &entry) {
                report.mismatches.push(format!("function at rva {:#x} + {:#x}: {what}", f.begin, 4 * o));
            }
        }
        Ok(())
    }

    fn saved(&self, body: &Arm64Context, value: u64) -> bool {
        let mut at = body.sp;
        while at < ENTRY_SP {
            if self.cpu.read_u64(at) == Some(value) {
                return true;
            }
            at += 8;
        }
        false
    }

    fn unwind_and_compare(&self, f: &Function, ctx: &mut Arm64Context, entry: &Arm64Context) -> Option<String> {
        let rva = (ctx.pc - IMAGE_BASE) as u32;
        let Some((rf, xdata)) = f.fragments.iter().find(|(rf, x)| rf.begin <= rva && rva < rf.begin + x.length) else {
            return Some("no .pdata entry covers the pc".into());
        };
        if let Err(e) = virtual_unwind(xdata, IMAGE_BASE + u64::from(rf.begin), ctx, &self.cpu) {
            return Some(format!("unwind failed: {e}"));
        }
        let mut wrong = Vec::new();
        if ctx.sp != entry.sp {
            wrong.push(format!("sp {:#x} (caller {:#x})", ctx.sp, entry.sp));
        }
        if ctx.pc != RETURN_ADDRESS {
            wrong.push(format!("return address {:#x}", ctx.pc));
        }
        for n in 19..=29 {
            if ctx.x[n] != entry.x[n] {
                wrong.push(format!("x{n} {:#x}", ctx.x[n]));
            }
        }
        for k in 0..8 {
            if ctx.d[k] != entry.d[k] {
                wrong.push(format!("d{} {:#x}", k + 8, ctx.d[k]));
            }
        }
        (!wrong.is_empty()).then(|| wrong.join(", "))
    }
}

fn sentinel_of_x(n: usize) -> u64 {
    if n == 30 {
        RETURN_ADDRESS
    } else {
        sentinel(n as u64)
    }
}

// Instruction classes of prologues and epilogues (Arm A64 encodings). Register 31 is sp as a base.
fn rn(w: u32) -> u32 {
    (w >> 5) & 31
}
fn rd(w: u32) -> u32 {
    w & 31
}

/// A store of any size and addressing mode whose base is sp (register saves, probes, spills).
fn is_store_to_sp(w: u32) -> bool {
    let pair = matches!(w & 0x3bc0_0000, 0x2880_0000 | 0x2900_0000 | 0x2980_0000); // STP post/offset/pre, x or d
                                                                                   // STR/STUR (imm9, register offset) or STR (unsigned offset), opc 00.
    let single = matches!(w & 0x3b00_0000, 0x3800_0000 | 0x3900_0000) && (w >> 22) & 3 == 0;
    (pair || single) && rn(w) == 31
}

/// A load of any size whose base is sp, not pre-indexed.
fn is_load_from_sp(w: u32) -> bool {
    let pair = matches!(w & 0x3bc0_0000, 0x28c0_0000 | 0x2940_0000); // LDP post/offset, x or d
    let single = (w & 0x3b00_0000) == 0x3800_0000 && (w >> 22) & 3 == 1 && (w >> 10) & 3 != 3
        || (w & 0x3b00_0000) == 0x3900_0000 && (w >> 22) & 3 == 1;
    (pair || single) && rn(w) == 31
}

fn is_add_sub_imm(w: u32) -> bool {
    w & 0x9f00_0000 == 0x9100_0000 // 64-bit ADD/ADDS/SUB/SUBS (immediate)
}

fn is_add_sub_ext(w: u32) -> bool {
    w & 0x9f20_0000 == 0x8b20_0000 // 64-bit ADD/SUB (extended register), with or without S
}

fn is_add_sub_shifted(w: u32) -> bool {
    w & 0x9f20_0000 == 0x8b00_0000
}

fn is_move_wide(w: u32) -> bool {
    matches!(w & 0xff80_0000, 0xd280_0000 | 0xf280_0000 | 0x9280_0000 | 0x5280_0000 | 0x7280_0000 | 0x1280_0000)
}

fn is_scratch(r: u32) -> bool {
    r == 16 || r == 17
}

/// The prologue: the longest prefix of frame instructions (stores to the stack, sp and fp arithmetic, the probe
/// loop and its scratch registers x16/x17). Body instructions of the same forms may extend it; that only makes
/// those offsets' states real executions instead of synthesised body states.
fn prologue_length(words: &[u32]) -> usize {
    let mut n = 0;
    while let Some(&w) = words.get(n) {
        let frame = is_store_to_sp(w)
            || is_add_sub_imm(w)
                && (rd(w) == 31 || rd(w) == 29 || is_scratch(rd(w)))
                && (rn(w) == 31 || is_scratch(rn(w)))
            || (is_add_sub_ext(w) || is_add_sub_shifted(w))
                && (rd(w) == 31 || is_scratch(rd(w)))
                && (rn(w) == 31 || is_scratch(rn(w)))
            || is_move_wide(w) && is_scratch(rd(w))
            || w & 0xff00_0010 == 0x5400_0000 && {
                // b.cond backwards inside the prefix (the probe loop).
                let imm = ((w >> 5) & 0x7ffff) as i32;
                let delta = (imm << 13) >> 13;
                delta < 0 && (n as i64 + delta as i64) >= 0
            };
        if !frame {
            break;
        }
        n += 1;
    }
    n
}

/// Every epilogue: `(first instruction, ret)` — the instructions before a `ret` that reload from the stack, free
/// it or compute its size in x16/x17.
fn epilogues(words: &[u32]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (r, &w) in words.iter().enumerate() {
        if w != 0xd65f_03c0 {
            continue;
        }
        let mut s = r;
        while s > 0 {
            let p = words[s - 1];
            let frame = is_load_from_sp(p)
                || (p & 0xff00_0000 == 0x9100_0000 || p & 0xffe0_0000 == 0x8b20_0000)
                    && rd(p) == 31
                    && (rn(p) == 31 || rn(p) == 29) // add sp, sp|fp, #imm | xN
                || is_move_wide(p) && is_scratch(rd(p));
            if !frame {
                break;
            }
            s -= 1;
        }
        out.push((s, r));
    }
    out
}
