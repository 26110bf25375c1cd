//! PREVAIL's YAML test suite (../shared/docs/test-corpora.md §2) run against our verifier.
//!
//! Each case's assembly is translated to bytecode, its `pre` constraints become the entry state, and the
//! verdict (accept or reject) is compared with PREVAIL's: a case is a "reject" if it expects any message
//! other than a "Code becomes unreachable" warning. PREVAIL's `assume` becomes a conditional jump that our
//! verifier treats as an assumption ([`bpf2sys::verifier::Env::assumptions`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bpf2sys::isa::{AluOp, AtomicOp, ByteOrder, Imm64Kind, Instruction, JumpCond, MemSize, Operand, Reg, Width};
use bpf2sys::platform::{linux, ContextDescriptor, HelperPrototype, Platform, ProgramType};
use bpf2sys::program::{MapDefinition, MapType, Pinning};
use bpf2sys::verifier::num::Num;
use bpf2sys::verifier::state::{ty, MapSet, State, Value, STACK_FRAME_SIZE};
use bpf2sys::verifier::{analyze, Env, VerifierOptions};
use yaml_rust2::{Yaml, YamlLoader};

/// One test case.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub options: Vec<String>,
    pub pre: Vec<String>,
    /// Blocks in order: (label, text).
    pub code: Vec<(String, String)>,
    pub messages: Vec<String>,
    pub expected_exception: bool,
    /// The case checks PREVAIL-internal `observe` invariants.
    pub observe: bool,
}

impl Case {
    /// PREVAIL rejects the case for safety.
    pub fn expects_reject(&self) -> bool {
        self.messages.iter().any(|m| !m.contains("Code becomes unreachable"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Verdicts differ; `unsound` when PREVAIL rejects and we accept.
    Fail {
        unsound: bool,
        detail: String,
    },
    Skip(String),
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|v| match v {
                Yaml::String(s) => Some(s.clone()),
                Yaml::Integer(i) => Some(i.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses one YAML file into cases.
pub fn load(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // yaml-rust2 rejects a flow sequence whose closing bracket sits at column 0 inside a block mapping
    // (PyYAML accepts it); indent such lines.
    let text: String =
        text.lines().map(|l| if l.starts_with(']') { format!("  {l}\n") } else { format!("{l}\n") }).collect();
    let docs = YamlLoader::load_from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cases = Vec::new();
    for d in docs {
        let Yaml::Hash(h) = &d else { continue };
        let get = |k: &str| h.get(&Yaml::String(k.into()));
        let Some(Yaml::String(name)) = get("test-case") else { continue };
        let mut code = Vec::new();
        if let Some(Yaml::Hash(c)) = get("code") {
            for (k, v) in c {
                if let (Yaml::String(k), Yaml::String(v)) = (k, v) {
                    code.push((k.clone(), v.clone()));
                }
            }
        }
        cases.push(Case {
            name: name.clone(),
            options: get("options").map(strings).unwrap_or_default(),
            pre: get("pre").map(strings).unwrap_or_default(),
            code,
            messages: get("messages").map(strings).unwrap_or_default(),
            expected_exception: get("expected-exception").is_some(),
            observe: get("observe").is_some(),
        });
    }
    Ok(cases)
}

/// Maps used by a case: (kind, PREVAIL fd) -> module index.
#[derive(Default)]
struct Maps {
    defs: Vec<MapDefinition>,
    index: HashMap<(bool, i64), usize>,
}

impl Maps {
    fn get(&mut self, programs: bool, fd: i64) -> usize {
        let n = self.defs.len();
        *self.index.entry((programs, fd)).or_insert_with(|| {
            // PREVAIL's test platform: every map has 4-byte keys and values and 4 entries.
            self.defs.push(MapDefinition {
                name: format!("map{fd}"),
                map_type: if programs { MapType::PROG_ARRAY } else { MapType::HASH },
                key_size: 4,
                value_size: 4,
                max_entries: 4,
                inner_map_index: None,
                pinning: Pinning::None,
                id: 0,
                inner_id: 0,
            });
            n
        })
    }
}

enum Pending {
    Ready(Instruction),
    Jump {
        cond: Option<(Width, JumpCond, Reg, Operand)>,
        label: String,
    },
    Call(String),
    /// `if a &!= b goto L` (no such opcode): `if a & b goto +1; goto L`.
    JumpNotSet {
        width: Width,
        dst: Reg,
        src: Operand,
        label: String,
    },
    Assume(Width, JumpCond, Reg, Operand),
}

fn reg(t: &str) -> Result<(Reg, Width), String> {
    let w = match t.as_bytes().first() {
        Some(b'r') => Width::W64,
        Some(b'w') => Width::W32,
        _ => return Err(format!("not a register: {t}")),
    };
    let n: u8 = t[1..].parse().map_err(|_| format!("not a register: {t}"))?;
    Ok((Reg::new(n).ok_or(format!("bad register {t}"))?, w))
}

fn imm(t: &str) -> Result<i128, String> {
    let t = t.trim().trim_end_matches("ll");
    let (neg, body) = t.strip_prefix('-').map_or((false, t), |b| (true, b));
    let v = if let Some(h) = body.strip_prefix("0x") { i128::from_str_radix(h, 16) } else { body.parse::<i128>() }
        .map_err(|_| format!("not a number: {t}"))?;
    Ok(if neg { -v } else { v })
}

fn imm32(t: &str) -> Result<i32, String> {
    Ok(imm(t)? as u64 as u32 as i32)
}

fn operand(t: &str) -> Result<(Operand, Option<Width>), String> {
    match reg(t) {
        Ok((r, w)) => Ok((Operand::Reg(r), Some(w))),
        Err(_) => Ok((Operand::Imm(imm32(t)?), None)),
    }
}

fn mem_size(t: &str) -> Result<(MemSize, bool), String> {
    let sign = t.starts_with('s');
    let bits: u32 = t[1..].parse().map_err(|_| format!("bad width {t}"))?;
    Ok((MemSize::from_bytes(bits / 8).ok_or(format!("bad width {t}"))?, sign))
}

/// Parses `*(u32 *)(r10 - 4)` into (size, sign, base, offset).
fn mem(t: &str) -> Result<(MemSize, bool, Reg, i16), String> {
    let t = t.trim();
    let inner = t.strip_prefix("*(").ok_or(format!("bad memory operand {t}"))?;
    let (sz, rest) = inner.split_once('*').ok_or(format!("bad memory operand {t}"))?;
    let (size, sign) = mem_size(sz.trim())?;
    let rest = rest.trim().trim_start_matches(')').trim();
    let addr = rest.trim_start_matches('(').trim_end_matches(')');
    let parts: Vec<&str> = addr.split_whitespace().collect();
    let base = reg(parts[0])?.0;
    let off = match parts.get(1..) {
        Some([op, n]) => {
            let v = imm(n)? as i64;
            if *op == "-" {
                -v
            } else {
                v
            }
        }
        _ => 0,
    };
    Ok((size, sign, base, off as i16))
}

fn cond(op: &str) -> Result<JumpCond, String> {
    Ok(match op {
        "==" => JumpCond::Eq,
        "!=" => JumpCond::Ne,
        "<" => JumpCond::Lt,
        "<=" => JumpCond::Le,
        ">" => JumpCond::Gt,
        ">=" => JumpCond::Ge,
        "s<" => JumpCond::Slt,
        "s<=" => JumpCond::Sle,
        "s>" => JumpCond::Sgt,
        "s>=" => JumpCond::Sge,
        "&==" => JumpCond::Set,
        other => return Err(format!("unsupported condition {other}")),
    })
}

fn parse_line(line: &str, maps: &mut Maps) -> Result<Pending, String> {
    let mut line = line.trim().to_string();
    if let Some(i) = line.find('=') {
        // `r5=r5`: no spaces.
        if !line.contains(" = ") && !line.contains("==") && line[..i].chars().all(|c| c.is_alphanumeric()) {
            line = format!("{} = {}", &line[..i], &line[i + 1..]);
        }
    }
    let toks: Vec<&str> = line.split_whitespace().collect();
    let ready = |i| Ok(Pending::Ready(i));
    match toks.as_slice() {
        ["exit"] => return ready(Instruction::Exit),
        ["goto", l] => return Ok(Pending::Jump { cond: None, label: l.to_string() }),
        ["call", l] if l.starts_with('<') => return Ok(Pending::Call(l.to_string())),
        ["call", n] => return ready(Instruction::CallHelper { id: imm32(n)? }),
        ["callx", r] => return ready(Instruction::CallReg { reg: reg(r)?.0 }),
        ["call_btf", n, ..] => return ready(Instruction::CallBtf { btf_id: imm32(n)?, module: 0 }),
        ["if", a, "&!=", b, "goto", l] => {
            let (ra, width) = reg(a)?;
            return Ok(Pending::JumpNotSet { width, dst: ra, src: operand(b)?.0, label: l.to_string() });
        }
        ["if", a, op, b, "goto", l] => {
            let (ra, w) = reg(a)?;
            return Ok(Pending::Jump { cond: Some((w, cond(op)?, ra, operand(b)?.0)), label: l.to_string() });
        }
        ["assume", a, op, b] => {
            let (ra, w) = reg(a)?;
            let c = cond(op)?;
            if c == JumpCond::Set {
                return Err("assume with a bit test has no bytecode form".into());
            }
            return Ok(Pending::Assume(w, c.negate(), ra, operand(b)?.0));
        }
        _ => {}
    }
    if line.starts_with("lock ") {
        let fetch = line.ends_with(" fetch");
        let body = line.trim_start_matches("lock ").trim_end_matches(" fetch");
        let close = body.rfind(')').ok_or("bad atomic")?;
        let (m, rest) = body.split_at(close + 1);
        let (size, _, dst, offset) = mem(m)?;
        let rt: Vec<&str> = rest.split_whitespace().collect();
        let [op, src] = rt.as_slice() else { return Err(format!("bad atomic {line}")) };
        let op = match *op {
            "+=" => AtomicOp::Add,
            "|=" => AtomicOp::Or,
            "&=" => AtomicOp::And,
            "^=" => AtomicOp::Xor,
            "x=" => AtomicOp::Xchg,
            "cx=" => AtomicOp::CmpXchg,
            o => return Err(format!("bad atomic op {o}")),
        };
        return ready(Instruction::Atomic { size, op, fetch, dst, src: reg(src)?.0, offset });
    }
    if line.starts_with("*(") {
        let (m, v) = line.split_once(" = ").ok_or("bad store")?;
        let (size, _, dst, offset) = mem(m)?;
        return ready(Instruction::Store { size, dst, offset, src: operand(v.trim())?.0 });
    }
    // Assignments and ALU: `rD OP rhs`.
    let (lhs, rest) = line.split_once(' ').ok_or(format!("cannot parse {line}"))?;
    let (dst, width) = reg(lhs)?;
    let (op, rhs) = rest.trim().split_once(' ').ok_or(format!("cannot parse {line}"))?;
    let rhs = rhs.trim();
    if op == "=" {
        if rhs.starts_with("*(") && rhs.contains("skb[") {
            let (sz, _) = rhs.trim_start_matches("*(").split_once('*').ok_or("bad skb load")?;
            let (size, _) = mem_size(sz.trim())?;
            let inside = rhs.split_once('[').and_then(|(_, r)| r.strip_suffix(']')).ok_or("bad skb load")?;
            let (mode, src, imm_v) = match reg(inside.split_whitespace().next().unwrap_or("")) {
                Ok((r, _)) => (bpf2sys::isa::PacketLoadMode::Ind, r, 0),
                Err(_) => (bpf2sys::isa::PacketLoadMode::Abs, Reg::R0, imm32(inside)?),
            };
            return ready(Instruction::LegacyPacketLoad { mode, size, src, imm: imm_v });
        }
        if rhs.starts_with("*(") {
            let (size, sign_extend, src, offset) = mem(rhs)?;
            return ready(Instruction::Load { size, sign_extend, dst, src, offset });
        }
        let lddw = |kind: Imm64Kind, imm: i32, next_imm: i32| {
            Ok(Pending::Ready(Instruction::LoadImm64 { dst, kind, imm, next_imm }))
        };
        let words: Vec<&str> = rhs.split_whitespace().collect();
        match words.as_slice() {
            ["map_fd", n] => return lddw(Imm64Kind::MapIndex, maps.get(false, imm(n)? as i64) as i32, 0),
            ["map_fd_programs", n] => return lddw(Imm64Kind::MapIndex, maps.get(true, imm(n)? as i64) as i32, 0),
            [neg, r] if *neg == "-" && reg(r).is_ok() => {
                return ready(Instruction::Alu { width, op: AluOp::Neg, dst, src: Operand::Imm(0) });
            }
            [e, r] if reg(r).is_ok() => {
                let (order, bits) = if let Some(b) = e.strip_prefix("be") {
                    (ByteOrder::ToBe, b)
                } else if let Some(b) = e.strip_prefix("le") {
                    (ByteOrder::ToLe, b)
                } else if let Some(b) = e.strip_prefix("swap") {
                    (ByteOrder::Swap, b)
                } else {
                    return Err(format!("cannot parse {line}"));
                };
                return ready(Instruction::Endian { order, bits: bits.parse().map_err(|_| "bad width")?, dst });
            }
            _ => {}
        }
        if let Some(r) = rhs.strip_prefix('-').filter(|r| reg(r).is_ok()) {
            let _ = r;
            return ready(Instruction::Alu { width, op: AluOp::Neg, dst, src: Operand::Imm(0) });
        }
        for (prefix, kind, by_index) in [
            ("map_val(", Imm64Kind::MapIndexValue, false),
            ("mva(map_by_idx(", Imm64Kind::MapIndexValue, true),
            ("map_by_idx(", Imm64Kind::MapIndex, true),
        ] {
            if let Some(r) = rhs.strip_prefix(prefix) {
                let (n, after) = r.split_once(')').ok_or("bad pseudo load")?;
                let off = after.trim_start_matches(')').trim().trim_start_matches('+').trim();
                let off = if off.is_empty() { 0 } else { imm32(off)? };
                let n = imm(n)? as i64;
                // PREVAIL's test platform has exactly one map by index; other indices stay unresolved.
                let index = if !by_index {
                    maps.get(false, n) as i32
                } else if n == 0 {
                    maps.get(false, -1) as i32
                } else {
                    i32::MAX
                };
                return lddw(kind, index, off);
            }
        }
        if rhs.starts_with("variable_addr(") || rhs.starts_with("code_addr(") {
            return lddw(if rhs.starts_with('v') { Imm64Kind::VariableAddr } else { Imm64Kind::CodeAddr }, 0, 0);
        }
        if rhs.ends_with("ll") || reg(rhs).is_err() && !(i32::MIN as i128..=i32::MAX as i128).contains(&imm(rhs)?) {
            let v = imm(rhs)? as u64;
            return lddw(Imm64Kind::Imm, v as u32 as i32, (v >> 32) as u32 as i32);
        }
        return ready(Instruction::Alu { width, op: AluOp::Mov, dst, src: operand(rhs)?.0 });
    }
    let alu = match op {
        "+=" => AluOp::Add,
        "-=" => AluOp::Sub,
        "*=" => AluOp::Mul,
        "/=" => AluOp::Div,
        "%=" => AluOp::Mod,
        "|=" => AluOp::Or,
        "&=" => AluOp::And,
        "<<=" => AluOp::Lsh,
        ">>=" => AluOp::Rsh,
        "s>>=" => AluOp::Arsh,
        "^=" => AluOp::Xor,
        "s/=" => AluOp::SDiv,
        "s%=" => AluOp::SMod,
        "s8=" => AluOp::MovSx(8),
        "s16=" => AluOp::MovSx(16),
        "s32=" => AluOp::MovSx(32),
        other => return Err(format!("unsupported operator {other} in {line}")),
    };
    ready(Instruction::Alu { width, op: alu, dst, src: operand(rhs)?.0 })
}

/// A translated case: bytecode, assumption slots, maps.
pub struct Translated {
    pub program: Vec<Instruction>,
    pub assumptions: Vec<usize>,
    pub maps: Vec<MapDefinition>,
    maps_index: HashMap<(bool, i64), usize>,
}

pub fn translate(case: &Case) -> Result<Translated, String> {
    let mut maps = Maps::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut labels: HashMap<String, usize> = HashMap::new();
    for (label, block) in &case.code {
        labels.insert(label.clone(), pending.len());
        for line in block.lines() {
            let line = line.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            pending.push(parse_line(line, &mut maps)?);
        }
    }
    // Falling off the end ends the program without checks (PREVAIL: must_have_exit off): r0 = 0; exit.
    let end = pending.len();
    pending.push(Pending::Ready(Instruction::Alu {
        width: Width::W64,
        op: AluOp::Mov,
        dst: Reg::R0,
        src: Operand::Imm(0),
    }));
    pending.push(Pending::Ready(Instruction::Exit));
    for v in labels.values_mut() {
        *v = (*v).min(end);
    }
    // Slots: lddw takes two.
    let mut slot_of = Vec::with_capacity(pending.len() + 1);
    let mut s = 0;
    for p in &pending {
        slot_of.push(s);
        s += match p {
            Pending::Ready(Instruction::LoadImm64 { .. }) | Pending::JumpNotSet { .. } => 2,
            _ => 1,
        };
    }
    slot_of.push(s);
    let target = |l: &str, here: usize| -> Result<i64, String> {
        let i = labels.get(l).ok_or(format!("unknown label {l}"))?;
        Ok(slot_of[*i] as i64 - slot_of[here] as i64 - 1)
    };
    let mut program = Vec::new();
    let mut assumptions = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        match p {
            Pending::Ready(insn) => {
                program.push(*insn);
                if let Instruction::LoadImm64 { .. } = insn {
                    program.push(Instruction::LoadImm64Continuation);
                }
            }
            Pending::Jump { cond: None, label } => {
                program.push(Instruction::Jump { offset: target(label, i)? as i32, long: false })
            }
            Pending::Jump { cond: Some((width, cond, dst, src)), label } => program.push(Instruction::JumpIf {
                width: *width,
                cond: *cond,
                dst: *dst,
                src: *src,
                offset: target(label, i)? as i16,
            }),
            Pending::Call(label) => program.push(Instruction::CallLocal { offset: target(label, i)? as i32 }),
            Pending::JumpNotSet { width, dst, src, label } => {
                program.push(Instruction::JumpIf {
                    width: *width,
                    cond: JumpCond::Set,
                    dst: *dst,
                    src: *src,
                    offset: 1,
                });
                program.push(Instruction::Jump { offset: (target(label, i)? - 1) as i32, long: false });
            }
            Pending::Assume(width, cond, dst, src) => {
                assumptions.push(program.len());
                program.push(Instruction::JumpIf { width: *width, cond: *cond, dst: *dst, src: *src, offset: 0 });
            }
        }
    }
    Ok(Translated { program, assumptions, maps: maps.defs, maps_index: maps.index })
}

/// The upper bound of the case's `packet_size` precondition (PREVAIL's model of the packet length), if stated.
fn max_packet_size(case: &Case) -> Option<u64> {
    let v = case.pre.iter().find_map(|c| c.trim().strip_prefix("packet_size="))?;
    let (_, hi) = range(v).ok()?;
    u64::try_from(hi).ok()
}

fn range(v: &str) -> Result<(i128, i128), String> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let (a, b) = inner.split_once(',').ok_or(format!("bad range {v}"))?;
        let p = |s: &str| -> Result<i128, String> {
            match s.trim() {
                "-oo" => Ok(i64::MIN as i128),
                "+oo" | "oo" => Ok(u64::MAX as i128),
                s => imm(s),
            }
        };
        Ok((p(a)?, p(b)?))
    } else {
        let x = imm(v)?;
        Ok((x, x))
    }
}

fn type_bits(name: &str) -> Result<u16, String> {
    Ok(match name.trim() {
        "number" => ty::NUMBER,
        "ctx" => ty::CTX,
        "stack" => ty::STACK,
        "packet" => ty::PACKET,
        "shared" => ty::SHARED,
        "map_fd" => ty::MAP_FD,
        "map_fd_programs" => ty::MAP_FD_PROGRAMS,
        other => return Err(format!("unsupported type {other}")),
    })
}

/// Builds the entry state from `pre` constraints.
pub fn entry_state(case: &Case, t: &mut Translated) -> Result<State, String> {
    let mut st = State::empty();
    #[derive(Default, Clone)]
    struct R {
        types: u16,
        s: Option<(i128, i128)>,
        u: Option<(i128, i128)>,
        off: Option<(i128, i128)>,
        end: bool,
        size: Option<i128>,
        map: Option<(bool, i64)>,
    }
    let mut regs: BTreeMap<usize, R> = BTreeMap::new();
    let mut stack_types: Vec<(i64, i64)> = Vec::new();
    type Bounds = Option<(i128, i128)>;
    let mut stack_vals: BTreeMap<(i64, i64), (Bounds, Bounds)> = BTreeMap::new();
    for c in &case.pre {
        let c = c.trim();
        if let Some(v) = c.strip_prefix("packet_size=") {
            if let Ok((lo, _)) = range(v) {
                st.packet_ranges.insert(0, lo as i64);
            }
            continue;
        }
        if let Some(v) = c.strip_prefix("meta_offset=") {
            // PREVAIL's `data_meta - data`: an upper bound `hi <= 0` is `-hi` bytes of metadata before `data`
            // (a relational form such as `meta_offset=r2.packet_offset` is not a range and is ignored).
            if let Ok((_, hi)) = range(v) {
                if hi <= 0 {
                    st.learn_meta_room(-hi as i64);
                }
            }
            continue;
        }
        if let Some(rest) = c.strip_prefix("s[") {
            let (span, prop) = rest.split_once("].").ok_or(format!("bad stack constraint {c}"))?;
            let (a, b) = span.split_once("...").unwrap_or((span, span));
            let (a, b) = (imm(a)? as i64, imm(b)? as i64);
            if a < 0 || b >= STACK_FRAME_SIZE {
                return Err(format!("stack constraint outside the frame: {c}"));
            }
            let (lo, hi) = (a - STACK_FRAME_SIZE, b - STACK_FRAME_SIZE + 1);
            let (k, v) = prop.split_once('=').ok_or(format!("bad constraint {c}"))?;
            match k {
                "type" if v == "number" => stack_types.push((lo, hi)),
                "type" => return Err(format!("unsupported stack cell type {v}")),
                "svalue" => stack_vals.entry((lo, hi)).or_default().0 = range(v).ok(),
                "uvalue" => stack_vals.entry((lo, hi)).or_default().1 = range(v).ok(),
                _ => {}
            }
            continue;
        }
        let Some(rest) = c.strip_prefix('r') else { return Err(format!("unsupported constraint {c}")) };
        let (n, prop) = rest.split_once('.').ok_or(format!("bad constraint {c}"))?;
        let n: usize = n.parse().map_err(|_| format!("bad constraint {c}"))?;
        let r = regs.entry(n).or_default();
        if let Some(set) = prop.strip_prefix("type in {") {
            for t in set.trim_end_matches('}').split(',') {
                r.types |= type_bits(t)?;
            }
            continue;
        }
        let (k, v) = prop.split_once('=').ok_or(format!("bad constraint {c}"))?;
        match k {
            "type" if v.starts_with('r') => return Err(format!("relational type constraint {c}")),
            "type" => r.types |= type_bits(v)?,
            "svalue" | "uvalue" if v.starts_with('r') => {}
            "svalue" => r.s = Some(range(v)?),
            "uvalue" => r.u = Some(range(v)?),
            "packet_offset" if v == "packet_size" => r.end = true,
            "ctx_offset" | "packet_offset" | "shared_offset" => {
                let x = range(v)?;
                r.off = Some(r.off.map_or(x, |o| (o.0.min(x.0), o.1.max(x.1))));
            }
            "stack_offset" => {
                let (a, b) = range(v)?;
                if b > STACK_FRAME_SIZE as i128 || a < 0 {
                    return Err(format!("stack offset outside one 512-byte frame: {c}"));
                }
                let x = (a - STACK_FRAME_SIZE as i128, b - STACK_FRAME_SIZE as i128);
                r.off = Some(r.off.map_or(x, |o| (o.0.min(x.0), o.1.max(x.1))));
            }
            "shared_region_size" => r.size = Some(range(v)?.0),
            "map_fd" => r.map = Some((false, imm(v)? as i64)),
            "map_fd_programs" => r.map = Some((true, imm(v)? as i64)),
            _ => {}
        }
    }
    let mut maps = Maps { defs: std::mem::take(&mut t.maps), index: std::mem::take(&mut t.maps_index) };
    for (n, r) in regs {
        if n > 10 {
            return Err(format!("bad register r{n}"));
        }
        if r.types == 0 {
            continue;
        }
        let num_of = |s: Option<(i128, i128)>, u: Option<(i128, i128)>| -> Num {
            let mut x = Num::TOP;
            if let Some((lo, hi)) = s {
                x.smin = lo.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
                x.smax = hi.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            }
            if let Some((lo, hi)) = u {
                x.umin = lo.clamp(0, u64::MAX as i128) as u64;
                x.umax = hi.clamp(0, u64::MAX as i128) as u64;
            }
            x.reduce().unwrap_or(x)
        };
        let mut v = Value::uninit();
        v.types = r.types;
        if r.end && r.types == ty::PACKET {
            v.types = ty::PACKET_END;
        }
        if r.types & ty::NUMBER != 0 {
            v.num = num_of(r.s, r.u);
        }
        if r.types & ty::POINTERS != 0 {
            v.off = match r.off {
                Some((lo, hi)) => Num::signed(lo as i64, hi as i64).unwrap_or(Num::TOP),
                None => Num::TOP,
            };
            // PREVAIL's svalue of a pointer is its address: 0 in range means "maybe null".
            if r.types & (ty::SHARED | ty::PACKET | ty::STACK | ty::CTX) != 0
                && r.s.is_some_and(|(lo, _)| lo <= 0)
                && r.types & ty::NUMBER == 0
            {
                v.types |= ty::NUMBER;
                v.num = Num::constant(0);
            }
            if v.types == ty::PACKET && v.off.smin == v.off.smax {
                v.pkt = Some((0, v.off.smin));
            }
        }
        v.shared_size = r.size.unwrap_or(0).max(0) as u64;
        if let Some((programs, fd)) = r.map {
            v.maps = MapSet::one(maps.get(programs, fd) as u32);
        } else if r.types & ty::MAP_FD_PROGRAMS != 0 {
            v.maps = MapSet::one(maps.get(true, 0) as u32);
        }
        st.regs[n] = v;
    }
    for (lo, hi) in stack_types {
        for o in lo..hi {
            st.stack.set_init(o, true);
        }
        if hi - lo == 8 && lo % 8 == 0 {
            let (s, u) = stack_vals.get(&(lo, hi)).cloned().unwrap_or_default();
            let mut x = Num::TOP;
            if let Some((a, b)) = s {
                x.smin = a as i64;
                x.smax = b as i64;
            }
            if let Some((a, b)) = u {
                x.umin = a as u64;
                x.umax = b as u64;
            }
            st.stack.spills_mut().insert(lo, Value::number(x.reduce().unwrap_or(Num::TOP)));
        }
    }
    t.maps = maps.defs;
    Ok(st)
}

/// PREVAIL's test platform: Linux helpers (all program types' helpers merged) and a 64-byte context with
/// 4-byte packet pointer fields at 0 and 4.
pub fn test_platform() -> (&'static Platform, &'static ProgramType) {
    use std::sync::OnceLock;
    static P: OnceLock<(&'static Platform, &'static ProgramType)> = OnceLock::new();
    *P.get_or_init(|| {
        let mut helpers: Vec<HelperPrototype> = linux::GLOBAL_HELPERS.to_vec();
        for pt in linux::PROGRAM_TYPES {
            for h in pt.specific_helpers {
                if !helpers.iter().any(|g| g.id == h.id) {
                    helpers.push(*h);
                }
            }
        }
        let helpers: &'static [HelperPrototype] = Box::leak(helpers.into_boxed_slice());
        let pt: &'static ProgramType = Box::leak(Box::new(ProgramType {
            name: "prevail_test",
            guid: bpf2sys::platform::Guid::NULL,
            bpf_prog_type: 0,
            is_privileged: false,
            context: ContextDescriptor { size: 64, data: 0, end: 4, meta: -1 },
            context_fields: &[],
            section_prefixes: &[],
            specific_helpers: &[],
        }));
        let platform: &'static Platform = Box::leak(Box::new(Platform {
            name: "prevail_test",
            program_types: std::slice::from_ref(pt),
            global_helpers: helpers,
            map_helper_rules: &[],
            map_types: &[],
            kfuncs: &[],
            data_meta_is_metadata: true,
            sock_common_fields: linux::LINUX.sock_common_fields,
            conventions: bpf2sys::platform::ObjectConventions::Windows,
        }));
        (platform, pt)
    })
}

/// Runs one case.
pub fn run_case(case: &Case) -> Outcome {
    if case.expected_exception {
        return Outcome::Skip("expects a PREVAIL parse-time exception".into());
    }
    if case.observe {
        return Outcome::Skip("checks PREVAIL-internal invariants (observe), not safety".into());
    }
    let expect_reject = case.expects_reject();
    let ours_reject: Result<Option<String>, String> = (|| {
        if case.pre.iter().any(|c| c.trim() == "_|_") {
            return Ok(None); // unreachable entry: nothing to check
        }
        let mut t = translate(case)?;
        let entry = entry_state(case, &mut t)?;
        let (platform, pt) = test_platform();
        let options = VerifierOptions {
            allow_division_by_zero: !case.options.iter().any(|o| o == "!allow_division_by_zero"),
            check_termination: case.options.iter().any(|o| o == "termination"),
            ctx_pointer_size: 4,
            max_packet_len: max_packet_size(case).unwrap_or(VerifierOptions::default().max_packet_len),
            // PREVAIL tracks no references: its cases end holding sockets and records (docs/verifier.md §5).
            check_reference_leaks: false,
            ..VerifierOptions::default()
        };
        let env = Env {
            program: &t.program,
            platform,
            program_type: pt,
            maps: &t.maps,
            kfuncs: &[],
            globals: &[],
            options: &options,
            assumptions: &t.assumptions,
        };
        Ok(analyze(&env, entry, &case.name).err().map(|f| format!("{}: {}", f.pc, f.message)))
    })();
    match ours_reject {
        Err(reason) => Outcome::Skip(reason),
        Ok(r) if r.is_some() == expect_reject => Outcome::Pass,
        Ok(r) => Outcome::Fail {
            unsound: expect_reject && r.is_none(),
            detail: match r {
                Some(why) => format!("we reject ({why}), PREVAIL accepts"),
                None => format!("we accept, PREVAIL rejects: {:?}", case.messages),
            },
        },
    }
}

/// Results for one file.
pub struct FileResult {
    pub file: String,
    pub cases: Vec<(String, Outcome)>,
}

impl FileResult {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|(_, o)| f(o)).count()
    }
}

/// Runs every `*.yaml` suite in `dir` (except the schema).
pub fn run_dir(dir: &Path) -> Result<Vec<FileResult>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("test-schema.yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let cases = load(&f)?;
        out.push(FileResult {
            file: f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            cases: cases.iter().map(|c| (c.name.clone(), run_case(c))).collect(),
        });
    }
    Ok(out)
}
