//! Legacy packet loads `LD_ABS` / `LD_IND` (RFC 9669 §5.5): `r0 = ntoh(*(size *)(packet + offset))` with the
//! packet found through the context in r6. The instruction checks its own bounds at run time (an out-of-bounds
//! offset ends the program with r0 = 0, `isa::semantics::legacy_packet_in_bounds`), so the verifier needs no packet
//! range; it proves what the run-time check relies on:
//! - r6 is exactly the context pointer at offset 0 of a program type whose context has `data` and `data_end`
//!   fields (lowering and the interpreter read those two fields through r6);
//! - the instruction is in the entry function: its failure path returns 0 from the machine function it is
//!   compiled into, which ends the program only there (Linux forbids it in subprograms for the same reason);
//! - an `LD_IND` offset register is a number (a pointer would make the loaded value depend on an address).
//!
//! Effects, as PREVAIL's `Packet` transfer: r0 is a number of `size` bytes (zero-extended), r1–r5 become
//! undefined (Linux implements the load as a helper call), r6–r10 and the stack are unchanged. The early exit
//! returns the number 0, which is a valid program result, so it needs no edge of its own.

use crate::isa::{MemSize, PacketLoadMode, Reg};

use crate::verifier::state::{ty, Change, State, Value};
use crate::verifier::{Env, Failure, Property};

use super::{fail, full, read, set_reg, show};

pub(super) fn legacy_packet_load(
    env: &Env,
    s: &mut State,
    pc: usize,
    mode: PacketLoadMode,
    size: MemSize,
    src: Reg,
) -> Result<(), Failure> {
    let name = match mode {
        PacketLoadMode::Abs => "LD_ABS",
        PacketLoadMode::Ind => "LD_IND",
    };
    let context = &env.program_type.context;
    if context.data < 0 || context.end < 0 {
        return Err(fail(
            pc,
            Property::InvalidInstruction,
            format!(
                "legacy packet load {name} needs packet data, but the context of program type {} has no data/data_end fields",
                env.program_type.name
            ),
            vec![],
        ));
    }
    if !s.frames.is_empty() {
        return Err(fail(
            pc,
            Property::InvalidInstruction,
            format!("legacy packet load {name} inside a local function: its failure path must end the whole program"),
            vec![],
        ));
    }
    // Its failure path ends the program: no reference may be held (Linux: "BPF_LD_[ABS|IND] cannot be mixed
    // with socket references").
    crate::verifier::refs::check_no_references(env, s, pc, &format!("{name}, which may end the program"))?;
    let r6 = read(s, Reg::R6, pc)?;
    if !r6.is(ty::CTX) || r6.off.singleton() != Some(0) {
        return Err(fail(
            pc,
            Property::TypeMismatch,
            format!("legacy packet load {name} reads the packet through r6, which must be the context pointer"),
            vec![show("r6", &r6)],
        ));
    }
    if mode == PacketLoadMode::Ind {
        let offset = read(s, src, pc)?;
        if !offset.is_number() {
            return Err(fail(
                pc,
                Property::PointerLeak,
                format!("the offset register {src} of {name} may be a pointer"),
                vec![show(src.to_string(), &offset)],
            ));
        }
    }
    for r in 1..=5 {
        set_reg(s, Reg::new(r).expect("r1..r5"), Value::uninit(), Change::Unknown);
    }
    set_reg(s, Reg::R0, Value::number(full(size, false)), Change::Unknown);
    Ok(())
}

/// Where the program type's context keeps the packet, for lowering and the interpreter, when it has packet
/// fields: the verifier proved every legacy load's r6 is this context.
pub(crate) fn packet_fields(env: &Env) -> Option<crate::isa::semantics::PacketFields> {
    let c = &env.program_type.context;
    let width = match env.options.ctx_pointer_size {
        4 => MemSize::W,
        _ => MemSize::DW,
    };
    (c.data >= 0 && c.end >= 0).then_some(crate::isa::semantics::PacketFields {
        data: c.data as u32,
        data_end: c.end as u32,
        width,
    })
}
