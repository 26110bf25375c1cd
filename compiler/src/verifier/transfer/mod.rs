//! eBPF semantics over the abstract domain: one `match` over all instructions, grouped like RFC 9669
//! (ALU §4.1–4.2, jumps and calls §4.3, memory §5). Each arm checks the instruction's safety conditions on
//! the incoming state and produces the outgoing states of its edges.

mod alu;
mod branch;
mod helpers;
mod legacy;
mod memory;

use crate::isa::{Imm64Kind, Instruction, MemSize, Operand, Reg, Width};
use crate::program::{GlobalSectionKind, MapType};

use super::num::Num;
use super::state::{
    ty, Change, CopyHolder, Loc, LoopDeltas, MapSet, State, Value, COPY_ID_LINKS, FRAME_STRIDE, STACK_FRAME_SIZE,
};
use super::{Env, Failure, Property};

/// Where control goes after an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// To slot `pc` in the same function activation.
    Local(usize),
    /// Into a local function starting at `target`, from the call at `call_pc`.
    Call { target: usize },
    /// Return from the current function.
    Return,
}

/// What an instruction leaves behind.
pub enum Successors {
    /// One edge, taken with the state [`step`] updated in place (no copy for straight-line code).
    One(Edge),
    /// A conditional jump: the feasible edges, each with its own refined state (the input state is spent).
    Split(Vec<(Edge, State)>),
}

fn fail(pc: usize, property: Property, message: impl Into<String>, values: Vec<(String, String)>) -> Failure {
    Failure { pc, property, message: message.into(), values }
}

fn show(name: impl Into<String>, v: &Value) -> (String, String) {
    (name.into(), v.to_string())
}

fn read(st: &State, r: Reg, pc: usize) -> Result<Value, Failure> {
    let v = &st.regs[r.index()];
    if let Some(f) = super::refs::released(pc, r.to_string(), v) {
        return Err(f);
    }
    if v.may_be(ty::UNINIT) {
        return Err(fail(
            pc,
            Property::Uninitialized,
            format!("{r} may be read before it is written"),
            vec![show(r.to_string(), v)],
        ));
    }
    Ok(v.clone())
}

fn operand(st: &State, src: Operand, width: Width, pc: usize) -> Result<Value, Failure> {
    match src {
        Operand::Reg(r) => read(st, r, pc),
        Operand::Imm(i) => Ok(Value::number(Num::constant(match width {
            Width::W64 => i as i64 as u64,
            Width::W32 => i as u32 as u64,
        }))),
    }
}

/// Writes a register; `change` says how it relates to its previous value or another location (loop deltas).
fn set_reg(st: &mut State, r: Reg, v: Value, change: Change) {
    st.regs[r.index()] = v;
    st.record_change(Loc::Reg(r.index() as u8), change);
    let copy_of = match change {
        Change::CopyOf(Loc::Reg(src)) => Some(src as usize),
        _ => None,
    };
    st.same_kind.written(r.index(), copy_of);
}

fn full(size: MemSize, sign_extend: bool) -> Num {
    let bits = size.bytes() * 8;
    if bits == 64 {
        Num::TOP
    } else if sign_extend {
        let h = 1i64 << (bits - 1);
        Num::signed(-h, h - 1).expect("non-empty")
    } else {
        Num::full_width(bits)
    }
}

/// Whether an access reads or writes memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

use alu::alu;
use branch::branch;
use helpers::helper_call;
pub(crate) use legacy::packet_fields;
pub(super) use memory::check_atomic_alignment;
use memory::{load, reloaded_spill, store};

/// `lddw` (RFC 9669 §5.4): a 64-bit number, a map handle or the address of a map value / global section.
#[allow(clippy::too_many_arguments)] // the instruction's fields
fn load_imm64(
    env: &Env,
    s: &mut State,
    pc: usize,
    dst: Reg,
    kind: Imm64Kind,
    imm: i32,
    next_imm: i32,
) -> Result<(), Failure> {
    if dst == Reg::FP {
        return Err(fail(pc, Property::InvalidInstruction, "r10 (the frame pointer) is read-only", vec![]));
    }
    let map_def = |i: i32| {
        env.maps.get(i as usize).ok_or_else(|| {
            fail(
                pc,
                Property::InvalidInstruction,
                format!("lddw references map index {i}, but the module has {} maps", env.maps.len()),
                vec![],
            )
        })
    };
    let v = match kind {
        Imm64Kind::Imm => Value::number(Num::constant(Instruction::imm64(imm, next_imm))),
        Imm64Kind::MapIndex | Imm64Kind::MapFd => {
            let d = map_def(imm)?;
            let t = if d.map_type == MapType::PROG_ARRAY { ty::MAP_FD_PROGRAMS } else { ty::MAP_FD };
            Value { maps: MapSet::one(imm as u32), ..Value::pointer(t, Num::constant(0)) }
        }
        Imm64Kind::MapIndexValue | Imm64Kind::MapValue => {
            let d = map_def(imm)?;
            let readonly =
                env.globals.iter().any(|g| g.map_index == imm as usize && g.kind == GlobalSectionKind::Rodata);
            Value {
                shared_size: d.value_size as u64,
                shared_readonly: readonly,
                maps: MapSet::one(imm as u32),
                ..Value::pointer(ty::SHARED, Num::constant(next_imm as u32 as u64))
            }
        }
        Imm64Kind::VariableAddr | Imm64Kind::CodeAddr => {
            return Err(fail(
                pc,
                Property::InvalidInstruction,
                format!("lddw with pseudo source {} is not supported", kind.name()),
                vec![],
            ));
        }
    };
    set_reg(s, dst, v, Change::Unknown);
    Ok(())
}

/// The transfer function of the instruction at `pc`.
/// Updates `s` in place: the fixpoint keeps one state per path instead of copying it per instruction.
pub fn step(env: &Env, pc: usize, s: &mut State) -> Result<Successors, Failure> {
    let insn = env.program[pc];
    let next = || Ok(Successors::One(Edge::Local(pc + 1)));
    match insn {
        // ---- ALU (RFC 9669 §4.1, §4.2) ----
        Instruction::Alu { width, op, dst, src } => {
            alu(env, s, pc, width, op, dst, src)?;
            next()
        }
        Instruction::Endian { order, bits, dst } => {
            let a = read(s, dst, pc)?;
            if !a.is_number() {
                return Err(fail(pc, Property::PointerLeak, "byte swap of a pointer", vec![show(dst.to_string(), &a)]));
            }
            set_reg(s, dst, Value::number(Num::endian(order, bits, &a.num)), Change::Unknown);
            next()
        }
        // ---- 64-bit immediates (RFC 9669 §5.4; program.rs for map references) ----
        Instruction::LoadImm64 { dst, kind, imm, next_imm } => {
            load_imm64(env, s, pc, dst, kind, imm, next_imm)?;
            Ok(Successors::One(Edge::Local(pc + 2)))
        }
        Instruction::LoadImm64Continuation => {
            Err(fail(pc, Property::ControlFlow, "jump into the middle of a lddw instruction", vec![]))
        }
        // ---- Memory (RFC 9669 §5) ----
        Instruction::Load { size, sign_extend, dst, src, offset } => {
            if dst == Reg::FP {
                return Err(fail(pc, Property::InvalidInstruction, "r10 (the frame pointer) is read-only", vec![]));
            }
            let mut v = load(env, s, pc, src, offset, size, sign_extend)?;
            let mut change = Change::Unknown;
            if let Some(slot) = reloaded_spill(s, src, offset, size, sign_extend) {
                // A reload equals its slot: a branch on the register refines the spilled copy too.
                v.copy_id = Some(s.link_copy(CopyHolder::Spill(slot), COPY_ID_LINKS | pc as u32));
                change = Change::CopyOf(Loc::Slot(slot));
            }
            set_reg(s, dst, v, change);
            next()
        }
        Instruction::Store { size, dst, offset, src: Operand::Reg(r) } if s.regs[r.index()].may_be(ty::UNINIT) => {
            memory::store_undefined(env, s, pc, dst, offset, size, r)?;
            next()
        }
        Instruction::Store { size, dst, offset, src } => {
            let v = match src {
                Operand::Reg(r) => read(s, r, pc)?,
                Operand::Imm(i) => Value::number(Num::constant(i as i64 as u64)),
            };
            let src_reg = match src {
                Operand::Reg(r) => Some(r),
                Operand::Imm(_) => None,
            };
            store(env, s, pc, dst, offset, size, v, src_reg)?;
            next()
        }
        Instruction::Atomic { size, op, fetch, dst, src, offset } => {
            memory::atomic(env, s, pc, size, op, fetch, dst, src, offset)?;
            next()
        }
        Instruction::LegacyPacketLoad { mode, size, src, .. } => {
            legacy::legacy_packet_load(env, s, pc, mode, size, src)?;
            next()
        }
        // ---- Jumps (RFC 9669 §4.3) ----
        Instruction::Jump { offset, .. } => Ok(Successors::One(Edge::Local((pc as i64 + 1 + offset as i64) as usize))),
        Instruction::JumpIf { width, cond, dst, src, offset } => {
            let target = (pc as i64 + 1 + offset as i64) as usize;
            let mut out = Vec::with_capacity(2);
            let assumption = env.assumptions.binary_search(&pc).is_ok();
            if assumption {
                // A verifier-internal assumption (test suites): only the edge where the condition fails exists.
            } else if let Some(t) = branch(s.clone(), pc, width, cond, dst, src, true)? {
                out.push((Edge::Local(target), t));
            }
            // The fall-through side refines the input state itself (it is spent): one copy per jump, not two.
            if let Some(f) = branch(std::mem::replace(s, State::spent()), pc, width, cond, dst, src, false)? {
                out.push((Edge::Local(pc + 1), f));
            }
            Ok(Successors::Split(out))
        }
        // ---- Calls and exit ----
        Instruction::CallHelper { id } => {
            helper_call(env, s, pc, id as i64)?;
            next()
        }
        Instruction::CallReg { reg } => {
            let v = read(s, reg, pc)?;
            match (v.is_number(), v.num.singleton()) {
                (true, Some(id)) => {
                    helper_call(env, s, pc, id as i64)?;
                    next()
                }
                _ => Err(fail(
                    pc,
                    Property::UnknownHelper,
                    format!("callx {reg}: the helper id is not a known constant"),
                    vec![show(reg.to_string(), &v)],
                )),
            }
        }
        Instruction::CallBtf { btf_id, module: 0 } => {
            helpers::kfunc_call(env, s, pc, btf_id)?;
            next()
        }
        Instruction::CallBtf { btf_id, module } => Err(fail(
            pc,
            Property::InvalidInstruction,
            format!("kfunc call {btf_id} names module BTF {module}; objects name kfuncs by extern symbol (module 0)"),
            vec![],
        )),
        Instruction::CallLocal { offset } => {
            let target = (pc as i64 + 1 + offset as i64) as usize;
            Ok(Successors::One(Edge::Call { target }))
        }
        Instruction::Exit => Ok(Successors::One(Edge::Return)),
    }
}

/// State at the callee's entry for a local call.
pub fn enter_call(st: &State) -> State {
    let mut s = st.clone();
    let saved = super::state::SavedFrame {
        regs: std::array::from_fn(|i| s.regs[6 + i].clone()),
        deltas: s.deltas.iter().map(|(k, d)| (*k, std::array::from_fn(|i| d.regs[6 + i]))).collect(),
    };
    s.frames.push(saved);
    s.stack.push_frame();
    let depth = s.frames.len() as i64;
    for r in [0usize, 6, 7, 8, 9] {
        s.regs[r] = Value::uninit();
    }
    s.regs[10] = Value::pointer(ty::STACK, Num::signed(-FRAME_STRIDE * depth, -FRAME_STRIDE * depth).expect("point"));
    s.deltas.clear();
    s.same_kind.clear();
    s
}

/// State after a local function returns to its caller; checks that no pointer to the dying frame escapes.
pub fn leave_call(st: &State, pc: usize) -> Result<State, Failure> {
    let mut s = st.clone();
    let frame_top = -FRAME_STRIDE * s.frames.len() as i64;
    let dangling = |v: &Value| v.may_be(ty::STACK) && v.off_of(ty::STACK).smin < frame_top;
    if dangling(&s.regs[0]) {
        return Err(fail(
            pc,
            Property::PointerLeak,
            "a function returns a pointer to its own stack frame",
            vec![show("r0", &s.regs[0])],
        ));
    }
    let saved = s.frames.pop().expect("inside a call");
    s.stack.pop_frame();
    // Initialised extents in the dying frame (or the bytes of the pointers to it erased below) are gone.
    s.forget_init_extents(i64::MIN / 2, frame_top + FRAME_STRIDE - STACK_FRAME_SIZE);
    let bad: Vec<i64> = s.stack.spills.iter().filter(|(_, v)| dangling(v)).map(|(k, _)| *k).collect();
    for k in bad {
        s.forget_init_extents(k, k + 8);
        s.stack.spills_mut().remove(&k);
        for b in k..k + 8 {
            s.stack.set_init(b, false);
        }
    }
    for r in 1..=5 {
        s.regs[r] = Value::uninit();
    }
    for (i, v) in saved.regs.into_iter().enumerate() {
        s.regs[6 + i] = v;
    }
    s.same_kind.clear();
    s.regs[10] =
        Value::pointer(ty::STACK, Num::signed(frame_top + FRAME_STRIDE, frame_top + FRAME_STRIDE).expect("point"));
    // Slot deltas are not restored: the callee may have rewritten the caller's slots through a pointer.
    s.deltas = saved
        .deltas
        .iter()
        .map(|(k, d)| {
            let regs = std::array::from_fn(|i| if (6..=9).contains(&i) { d[i - 6] } else { None });
            (*k, LoopDeltas { regs, slots: Default::default() })
        })
        .collect();
    Ok(s)
}
